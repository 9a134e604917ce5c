// ModelConfig from the published config.json of DeepSeek-V2, V2-Lite, V3, V3.1 and R1
// (copies in tests/model/configs/), and the errors a broken config produces: every message
// names the field.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/kv_cache.h"
#include "model/config.h"

using namespace whale;
using json = nlohmann::json;

namespace {

std::string config_path(const std::string& name) {
  return std::string(WHALE_SOURCE_DIR) + "/tests/model/configs/" + name;
}

json read_json(const std::string& name) {
  std::ifstream in(config_path(name));
  EXPECT_TRUE(in.good()) << config_path(name);
  return json::parse(in);
}

std::string parse_error(const json& j) {
  try {
    parse_model_config(j, "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a whale::Error for " << j.dump();
  return "";
}

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "expected \"" << (part) << "\" in: " << (text)

// Relative distance of a count from a published figure.
double relative(int64_t count, double published) {
  return std::fabs(double(count) - published) / published;
}

}  // namespace

TEST(ModelConfig, ParsesDeepSeekV3AndItsSuccessors) {
  // V3.1 and R1 keep V3's architecture; their config.json differ only in bookkeeping fields.
  for (const char* name : {"deepseek-v3.json", "deepseek-v3.1.json", "deepseek-r1.json"}) {
    SCOPED_TRACE(name);
    const ModelConfig c = load_model_config(config_path(name));
    EXPECT_EQ(c.model_type, "deepseek_v3");
    EXPECT_EQ(c.vocab_size, 129280);
    EXPECT_EQ(c.hidden_size, 7168);
    EXPECT_EQ(c.intermediate_size, 18432);
    EXPECT_EQ(c.moe_intermediate_size, 2048);
    EXPECT_EQ(c.num_hidden_layers, 61);
    EXPECT_EQ(c.first_k_dense_replace, 3);
    EXPECT_EQ(c.moe_layer_freq, 1);
    EXPECT_EQ(c.num_attention_heads, 128);
    EXPECT_EQ(c.n_routed_experts, 256);
    EXPECT_EQ(c.n_shared_experts, 1);
    EXPECT_EQ(c.num_experts_per_tok, 8);
    EXPECT_EQ(c.n_group, 8);
    EXPECT_EQ(c.topk_group, 4);
    EXPECT_EQ(c.topk_method, TopkMethod::NoauxTc);
    EXPECT_EQ(c.scoring_func, ScoringFunc::Sigmoid);
    EXPECT_TRUE(c.norm_topk_prob);
    EXPECT_EQ(c.routed_scaling_factor, 2.5);
    EXPECT_EQ(c.q_lora_rank, 1536);
    EXPECT_EQ(c.kv_lora_rank, 512);
    EXPECT_EQ(c.qk_nope_head_dim, 128);
    EXPECT_EQ(c.qk_rope_head_dim, 64);
    EXPECT_EQ(c.v_head_dim, 128);
    EXPECT_EQ(c.qk_head_dim(), 192);
    EXPECT_EQ(c.rope_theta, 10000.0);
    EXPECT_TRUE(c.rope_scaling.yarn);
    EXPECT_EQ(c.rope_scaling.factor, 40.0);
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 4096);
    EXPECT_EQ(c.rope_scaling.beta_fast, 32.0);
    EXPECT_EQ(c.rope_scaling.beta_slow, 1.0);
    EXPECT_EQ(c.rope_scaling.mscale, 1.0);
    EXPECT_EQ(c.rope_scaling.mscale_all_dim, 1.0);
    EXPECT_EQ(c.num_nextn_predict_layers, 1);
    EXPECT_EQ(c.rms_norm_eps, 1e-6);
    EXPECT_EQ(c.max_position_embeddings, 163840);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_EQ(c.bos_token_id, 0);
    EXPECT_EQ(c.eos_token_id, 1);
    EXPECT_TRUE(c.fp8);
    EXPECT_EQ(c.fp8_block_rows, 128);
    EXPECT_EQ(c.fp8_block_cols, 128);
    EXPECT_FALSE(c.is_moe_layer(2));
    EXPECT_TRUE(c.is_moe_layer(3));
    EXPECT_TRUE(c.is_moe_layer(60));
  }
}

TEST(ModelConfig, ParsesDeepSeekV2) {
  const ModelConfig c = load_model_config(config_path("deepseek-v2.json"));
  EXPECT_EQ(c.model_type, "deepseek_v2");
  EXPECT_EQ(c.vocab_size, 102400);
  EXPECT_EQ(c.hidden_size, 5120);
  EXPECT_EQ(c.intermediate_size, 12288);
  EXPECT_EQ(c.moe_intermediate_size, 1536);
  EXPECT_EQ(c.num_hidden_layers, 60);
  EXPECT_EQ(c.first_k_dense_replace, 1);
  EXPECT_EQ(c.num_attention_heads, 128);
  EXPECT_EQ(c.n_routed_experts, 160);
  EXPECT_EQ(c.n_shared_experts, 2);
  EXPECT_EQ(c.num_experts_per_tok, 6);
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 3);
  EXPECT_EQ(c.topk_method, TopkMethod::GroupLimitedGreedy);
  EXPECT_EQ(c.scoring_func, ScoringFunc::Softmax);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.routed_scaling_factor, 16.0);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.kv_lora_rank, 512);
  EXPECT_EQ(c.rope_scaling.factor, 40.0);
  EXPECT_EQ(c.rope_scaling.mscale, 0.707);
  EXPECT_EQ(c.rope_scaling.mscale_all_dim, 0.707);
  EXPECT_EQ(c.num_nextn_predict_layers, 0);
  EXPECT_EQ(c.bos_token_id, 100000);
  EXPECT_EQ(c.eos_token_id, 100001);
  EXPECT_FALSE(c.fp8);
}

TEST(ModelConfig, ParsesDeepSeekV2Lite) {
  const ModelConfig c = load_model_config(config_path("deepseek-v2-lite.json"));
  EXPECT_EQ(c.model_type, "deepseek_v2");
  EXPECT_EQ(c.vocab_size, 102400);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 10944);
  EXPECT_EQ(c.moe_intermediate_size, 1408);
  EXPECT_EQ(c.num_hidden_layers, 27);
  EXPECT_EQ(c.first_k_dense_replace, 1);
  EXPECT_EQ(c.num_attention_heads, 16);
  EXPECT_EQ(c.n_routed_experts, 64);
  EXPECT_EQ(c.n_shared_experts, 2);
  EXPECT_EQ(c.num_experts_per_tok, 6);
  EXPECT_EQ(c.n_group, 1);
  EXPECT_EQ(c.topk_group, 1);
  EXPECT_EQ(c.topk_method, TopkMethod::Greedy);
  EXPECT_EQ(c.scoring_func, ScoringFunc::Softmax);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.routed_scaling_factor, 1.0);
  EXPECT_EQ(c.q_lora_rank, 0) << "q_lora_rank null means a direct q_proj";
  EXPECT_EQ(c.kv_lora_rank, 512);
  EXPECT_EQ(c.qk_nope_head_dim, 128);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.v_head_dim, 128);
  EXPECT_TRUE(c.rope_scaling.yarn);
  EXPECT_EQ(c.rope_scaling.factor, 40.0);
  EXPECT_EQ(c.rope_scaling.mscale, 0.707);
  EXPECT_EQ(c.rope_scaling.mscale_all_dim, 0.707);
  EXPECT_EQ(c.num_nextn_predict_layers, 0);
}

// Published totals: V3 671B main model + 11.5B unique MTP parameters, 36.6B activated
// including the 0.9B output head (DeepSeek-V3's README_WEIGHTS.md; the Hugging Face card
// rounds the whole to 685B); V2 236B total, 21B activated; V2-Lite 15.7B total, 2.4B
// activated (DeepSeek-V2 paper and model cards). DeepSeek's activated figures leave out the
// input embedding (a table lookup), so it is subtracted here; whale counts V3 at 36.63B.
// Totals are rounded to 3 significant digits: 1% tolerance. whale's MTP count is 11.61B, so
// the "11.5B" gets 2%; the 2-digit "21B" and "2.4B" get 3%.
TEST(ModelConfig, ParameterCountsMatchPublishedTotals) {
  auto activated = [](const ModelConfig& c) {
    return c.active_parameter_count() - c.vocab_size * c.hidden_size;
  };
  const ModelConfig v3 = load_model_config(config_path("deepseek-v3.json"));
  EXPECT_LT(relative(v3.parameter_count(false), 671e9), 0.01) << v3.parameter_count(false);
  const int64_t mtp = v3.parameter_count(true) - v3.parameter_count(false);
  EXPECT_LT(relative(mtp, 11.5e9), 0.02) << mtp;
  EXPECT_GT(v3.parameter_count(true), int64_t(671e9));
  EXPECT_LT(v3.parameter_count(true), int64_t(686e9));
  EXPECT_LT(relative(activated(v3), 36.6e9), 0.01) << activated(v3);

  const ModelConfig v2 = load_model_config(config_path("deepseek-v2.json"));
  EXPECT_EQ(v2.parameter_count(true), v2.parameter_count(false)) << "V2 has no MTP module";
  EXPECT_LT(relative(v2.parameter_count(), 236e9), 0.01) << v2.parameter_count();
  EXPECT_LT(relative(activated(v2), 21e9), 0.03) << activated(v2);

  const ModelConfig lite = load_model_config(config_path("deepseek-v2-lite.json"));
  EXPECT_LT(relative(lite.parameter_count(), 15.7e9), 0.01) << lite.parameter_count();
  EXPECT_LT(relative(activated(lite), 2.4e9), 0.03) << activated(lite);
}

// softmax_scale = qk_head_dim^-1/2 * mscale^2 with mscale = 0.1 * mscale_all_dim * ln(factor) + 1
// (DeepSeek-V2's modeling code, yarn_get_mscale). By hand, factor 40, qk_head_dim 192:
//   V3 (mscale_all_dim 1):       mscale = 1.3688879454113936, scale = 0.1352337788608801
//   V2-Lite (mscale_all_dim .707): mscale = 1.2608037774058554, scale = 0.1147213867929261
TEST(ModelConfig, SoftmaxScaleMatchesHandComputation) {
  const ModelConfig v3 = load_model_config(config_path("deepseek-v3.json"));
  EXPECT_NEAR(yarn_get_mscale(40.0, 1.0), 1.3688879454113936, 1e-15);
  EXPECT_NEAR(v3.softmax_scale(), 0.1352337788608801, 1e-15);
  const ModelConfig lite = load_model_config(config_path("deepseek-v2-lite.json"));
  EXPECT_NEAR(lite.softmax_scale(), 0.1147213867929261, 1e-15);
  json plain = read_json("deepseek-v3.json");
  plain["rope_scaling"] = nullptr;  // no YaRN: plain 1/sqrt(192)
  EXPECT_NEAR(parse_model_config(plain, "cfg.json").softmax_scale(), 0.07216878364870322, 1e-15);
  EXPECT_EQ(yarn_get_mscale(1.0, 1.0), 1.0);
}

TEST(ModelConfig, KvCacheWidthFromV3) {
  const ModelConfig v3 = load_model_config(config_path("deepseek-v3.json"));
  // 61 layers * (512 + 64) floats * 4 bytes: MLA's compressed cache.
  EXPECT_EQ(KVCache::bytes_per_token(v3), 61 * 576 * 4);
}

TEST(ModelConfig, RoundTripsThroughJson) {
  for (const char* name : {"deepseek-v2.json", "deepseek-v2-lite.json", "deepseek-v3.json",
                           "deepseek-v3.1.json", "deepseek-r1.json"}) {
    SCOPED_TRACE(name);
    const ModelConfig c = load_model_config(config_path(name));
    const json once = model_config_to_json(c);
    const json twice = model_config_to_json(parse_model_config(once, "roundtrip"));
    EXPECT_EQ(once, twice);
    EXPECT_EQ(parse_model_config(once, "roundtrip").parameter_count(), c.parameter_count());
  }
}

TEST(ModelConfig, DefaultsFollowModelType) {
  json v2 = read_json("deepseek-v2.json");
  for (const char* f : {"topk_method", "scoring_func", "norm_topk_prob", "n_group", "topk_group"})
    v2.erase(f);
  ModelConfig c = parse_model_config(v2, "cfg.json");
  EXPECT_EQ(c.topk_method, TopkMethod::Greedy);
  EXPECT_EQ(c.scoring_func, ScoringFunc::Softmax);
  EXPECT_FALSE(c.norm_topk_prob);
  json v3 = read_json("deepseek-v3.json");
  for (const char* f : {"topk_method", "scoring_func", "norm_topk_prob"}) v3.erase(f);
  c = parse_model_config(v3, "cfg.json");
  EXPECT_EQ(c.topk_method, TopkMethod::NoauxTc);
  EXPECT_EQ(c.scoring_func, ScoringFunc::Sigmoid);
  EXPECT_TRUE(c.norm_topk_prob);
}

TEST(ModelConfig, AcceptsDenseModelsAndTokenIdLists) {
  json j = read_json("deepseek-v3.json");
  j["n_routed_experts"] = nullptr;
  j.erase("moe_intermediate_size");
  j.erase("num_experts_per_tok");
  ModelConfig c = parse_model_config(j, "cfg.json");
  EXPECT_EQ(c.n_routed_experts, 0);
  EXPECT_FALSE(c.is_moe_layer(10));
  j = read_json("deepseek-v3.json");
  j["eos_token_id"] = {1, 128001};
  EXPECT_EQ(parse_model_config(j, "cfg.json").eos_token_id, 1);
  j.erase("quantization_config");
  EXPECT_FALSE(parse_model_config(j, "cfg.json").fp8);
}

TEST(ModelConfigErrors, EachMissingRequiredFieldIsNamed) {
  const json base = read_json("deepseek-v3.json");
  for (const char* field : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                            "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                            "intermediate_size",  // V3's first three layers are dense
                            "moe_intermediate_size", "num_experts_per_tok"}) {
    SCOPED_TRACE(field);
    json j = base;
    j.erase(field);
    const std::string message = parse_error(j);
    EXPECT_CONTAINS(message, "cfg.json: field '" + std::string(field) + "'");
    EXPECT_CONTAINS(message, "is missing");
    j = base;
    j[field] = nullptr;  // null means absent
    EXPECT_CONTAINS(parse_error(j), "field '" + std::string(field) + "': is missing");
  }
  json j = base;
  j["rope_scaling"].erase("factor");
  EXPECT_CONTAINS(parse_error(j), "field 'rope_scaling': field 'factor': is missing");
  // A pure-MoE model needs no intermediate_size.
  j = base;
  j.erase("intermediate_size");
  j["first_k_dense_replace"] = 0;
  EXPECT_EQ(parse_model_config(j, "cfg.json").intermediate_size, 0);
}

TEST(ModelConfigErrors, WrongTypesAreNamed) {
  const json base = read_json("deepseek-v3.json");
  struct Case {
    std::string field;
    json value;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"hidden_size", "7168", "field 'hidden_size': is \"7168\"; expected an integer"},
      {"hidden_size", 7168.5, "field 'hidden_size': is 7168.5; expected an integer"},
      {"hidden_size", json::array({7168}), "field 'hidden_size': is [7168]; expected an integer"},
      {"num_hidden_layers", true, "field 'num_hidden_layers': is true; expected an integer"},
      {"vocab_size", json::object(), "field 'vocab_size'"},
      {"eos_token_id", json::array(), "field 'eos_token_id': is []; expected an integer"},
      {"q_lora_rank", "1536", "field 'q_lora_rank'"},
      {"n_routed_experts", 256.0, "field 'n_routed_experts'"},
      {"rms_norm_eps", "1e-6", "field 'rms_norm_eps': is \"1e-6\"; expected a number"},
      {"routed_scaling_factor", json::array({2.5}), "field 'routed_scaling_factor'"},
      {"norm_topk_prob", "true", "field 'norm_topk_prob': is \"true\"; expected true or false"},
      {"tie_word_embeddings", 0, "field 'tie_word_embeddings'"},
      {"topk_method", 3, "field 'topk_method': is 3; expected a string"},
      {"scoring_func", false, "field 'scoring_func'"},
      {"model_type", 3, "field 'model_type'"},
      {"rope_scaling", "yarn", "field 'rope_scaling': must be an object or null"},
      {"quantization_config", "fp8", "field 'quantization_config': must be an object"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.field + " = " + c.value.dump());
    json j = base;
    j[c.field] = c.value;
    EXPECT_CONTAINS(parse_error(j), c.expected);
  }
  json j = base;
  j["rope_scaling"]["factor"] = "40";
  EXPECT_CONTAINS(parse_error(j),
                  "field 'rope_scaling': field 'factor': is \"40\"; expected a number");
  j = base;
  j["quantization_config"]["weight_block_size"] = {128};
  EXPECT_CONTAINS(parse_error(j), "field 'quantization_config'.weight_block_size");
  j = base;
  j["quantization_config"]["weight_block_size"] = {128, 0};
  EXPECT_CONTAINS(parse_error(j), "must be [rows, cols] of positive integers");
  EXPECT_CONTAINS(parse_error(json::array()), "cfg.json: config must be a JSON object");
}

TEST(ModelConfigErrors, InconsistentValuesAreNamed) {
  const json base = read_json("deepseek-v3.json");
  struct Case {
    std::string field;
    json value;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"num_experts_per_tok", 257,
       "field 'num_experts_per_tok': is 257; expected at most n_routed_experts = 256"},
      {"n_group", 7, "field 'n_group': is 7; it must divide n_routed_experts = 256"},
      {"topk_group", 9, "field 'topk_group': is 9; expected at most n_group = 8"},
      {"qk_rope_head_dim", 63, "field 'qk_rope_head_dim': is 63; RoPE needs an even dimension"},
      {"topk_method", "top2",
       "field 'topk_method': is 'top2'; expected greedy, group_limited_greedy or noaux_tc"},
      {"scoring_func", "tanh", "field 'scoring_func': is 'tanh'; expected softmax or sigmoid"},
      {"hidden_size", 0, "field 'hidden_size': is 0; expected a positive integer"},
      {"num_attention_heads", -128,
       "field 'num_attention_heads': is -128; expected a positive integer"},
      {"v_head_dim", 0, "field 'v_head_dim'"},
      {"moe_intermediate_size", 0, "field 'moe_intermediate_size'"},
      {"num_experts_per_tok", 0, "field 'num_experts_per_tok'"},
      {"n_group", 0, "field 'n_group'"},
      {"topk_group", 0, "field 'topk_group'"},
      {"moe_layer_freq", 0, "field 'moe_layer_freq'"},
      {"max_position_embeddings", 0, "field 'max_position_embeddings'"},
      {"q_lora_rank", -1, "field 'q_lora_rank': must be null or a positive integer"},
      {"first_k_dense_replace", -1,
       "field 'first_k_dense_replace': is -1; expected a non-negative integer"},
      {"num_nextn_predict_layers", -1, "field 'num_nextn_predict_layers': is -1"},
      {"num_nextn_predict_layers", 2,
       "field 'num_nextn_predict_layers': is 2; whale supports 0 or 1"},
      {"n_routed_experts", -256, "field 'n_routed_experts': is -256"},
      {"n_shared_experts", -1, "field 'n_shared_experts': is -1; expected a non-negative integer"},
      {"rms_norm_eps", 0, "field 'rms_norm_eps': must be positive"},
      {"rope_theta", -1.0, "field 'rope_theta': must be positive"},
      {"bos_token_id", 129280,
       "field 'bos_token_id': is 129280; expected an id below vocab_size 129280"},
      {"eos_token_id", -1, "field 'eos_token_id'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.field + " = " + c.value.dump());
    json j = base;
    j[c.field] = c.value;
    EXPECT_CONTAINS(parse_error(j), c.expected);
  }
  // Group-limited routing must leave enough experts to choose from: groups of 32 experts here.
  json j = base;
  j["num_experts_per_tok"] = 65;
  j["topk_group"] = 2;
  EXPECT_CONTAINS(parse_error(j),
                  "field 'topk_group': selects 64 experts, fewer than num_experts_per_tok = 65");
  j["num_experts_per_tok"] = 64;
  EXPECT_EQ(parse_model_config(j, "cfg.json").topk_group, 2);
  // noaux_tc scores each group by its top two experts.
  j = base;
  j["n_group"] = 256;
  j["topk_group"] = 8;
  EXPECT_CONTAINS(parse_error(j),
                  "field 'n_group': noaux_tc scores each group by its top-2 experts");
  // RoPE scaling and quantisation sub-objects.
  j = base;
  j["rope_scaling"]["type"] = "linear";
  EXPECT_CONTAINS(parse_error(j), "field 'rope_scaling'.type: is 'linear'; whale supports 'yarn'");
  j = base;
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  EXPECT_CONTAINS(parse_error(j), "is 'dynamic'");
  j = base;
  j["rope_scaling"]["factor"] = 0;
  EXPECT_CONTAINS(parse_error(j), "field 'rope_scaling'.factor: must be positive");
  j = base;
  j["rope_scaling"]["original_max_position_embeddings"] = -4096;
  EXPECT_CONTAINS(parse_error(j),
                  "field 'rope_scaling'.original_max_position_embeddings: must be positive");
  j = base;
  j["quantization_config"]["quant_method"] = "awq";
  EXPECT_CONTAINS(parse_error(j), "field 'quantization_config'.quant_method: is 'awq'");
  j = base;
  j["quantization_config"]["fmt"] = "e5m2";
  EXPECT_CONTAINS(parse_error(j), "field 'quantization_config'.fmt: is 'e5m2'; expected e4m3");
}

// Found by fuzz_config: a huge qk_nope_head_dim was accepted, then qk_head_dim() overflowed
// int64 in softmax_scale() (UBSan). Sizes are now bounded to 2^50 parameters in all.
TEST(ModelConfigErrors, AbsurdSizesAreRejectedBeforeTheyOverflow) {
  const json base = read_json("deepseek-v3.json");
  for (const char* field :
       {"qk_nope_head_dim", "hidden_size", "vocab_size", "num_hidden_layers", "n_routed_experts",
        "moe_intermediate_size", "kv_lora_rank", "num_attention_heads", "q_lora_rank"}) {
    SCOPED_TRACE(field);
    json j = base;
    // (2^56 experts keeps n_group = 8 dividing them.)
    j[field] = field == std::string("n_routed_experts") ? int64_t(1) << 56 : INT64_MAX;
    EXPECT_CONTAINS(parse_error(j), "parameters; whale supports at most 2^50");
  }
  json j = base;
  j["quantization_config"]["weight_block_size"] = {INT64_MAX, 128};
  EXPECT_CONTAINS(parse_error(j),
                  "weight_block_size: must be [rows, cols] of positive integers up to 2^30");
  // A model 100x DeepSeek-V3's hidden size is still accepted.
  j = base;
  j["hidden_size"] = 716800;
  EXPECT_NO_THROW(parse_model_config(j, "cfg.json"));
}

TEST(ModelConfigErrors, LoadNamesTheFile) {
  const std::string missing = config_path("no-such-config.json");
  try {
    load_model_config(missing);
    ADD_FAILURE() << "expected a whale::Error";
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), missing + ": cannot open");
  }
  // A directory is not a config; a JSON syntax error names the file.
  const std::string dir = std::string(WHALE_SOURCE_DIR) + "/tests/model/configs";
  try {
    load_model_config(dir);
    ADD_FAILURE() << "expected a whale::Error";
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), dir);
  }
}
