#include "model/config.h"

#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/mmap.h"

namespace whale {

using json = nlohmann::json;

double yarn_get_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(double(qk_head_dim()));
  if (rope_scaling.yarn && rope_scaling.mscale_all_dim != 0.0) {
    const double m = yarn_get_mscale(rope_scaling.factor, rope_scaling.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

namespace {

struct Reader {
  const json& j;
  const std::string& source;

  std::string where(const std::string& field) const { return source + ": field '" + field + "'"; }
  bool present(const std::string& field) const { return j.contains(field) && !j[field].is_null(); }

  int64_t integer(const std::string& field, std::optional<int64_t> fallback = std::nullopt) const {
    if (!present(field)) {
      if (fallback) return *fallback;
      throw Error(where(field), "is missing; expected an integer");
    }
    const json& v = j[field];
    // Token ids may be lists (generation configs list several eos ids); whale uses the first.
    const bool token_id = field.ends_with("_token_id");
    if (token_id && v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
    if (!v.is_number_integer()) throw Error(where(field), "is " + v.dump() + "; expected an integer");
    return v.get<int64_t>();
  }
  double number(const std::string& field, std::optional<double> fallback = std::nullopt) const {
    if (!present(field)) {
      if (fallback) return *fallback;
      throw Error(where(field), "is missing; expected a number");
    }
    const json& v = j[field];
    if (!v.is_number()) throw Error(where(field), "is " + v.dump() + "; expected a number");
    return v.get<double>();
  }
  bool boolean(const std::string& field, bool fallback) const {
    if (!present(field)) return fallback;
    const json& v = j[field];
    if (!v.is_boolean()) throw Error(where(field), "is " + v.dump() + "; expected true or false");
    return v.get<bool>();
  }
  std::string string(const std::string& field, const std::string& fallback) const {
    if (!present(field)) return fallback;
    const json& v = j[field];
    if (!v.is_string()) throw Error(where(field), "is " + v.dump() + "; expected a string");
    return v.get<std::string>();
  }
  void positive(const std::string& field, int64_t value) const {
    if (value <= 0) throw Error(where(field), "is " + std::to_string(value) + "; expected a positive integer");
  }
};

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source, "config must be a JSON object");
  Reader r{j, source};
  ModelConfig c;
  c.model_type = r.string("model_type", "deepseek_v3");
  const bool v3 = c.model_type != "deepseek_v2";
  c.vocab_size = r.integer("vocab_size");
  c.hidden_size = r.integer("hidden_size");
  c.num_hidden_layers = r.integer("num_hidden_layers");
  c.num_attention_heads = r.integer("num_attention_heads");
  c.kv_lora_rank = r.integer("kv_lora_rank");
  c.qk_nope_head_dim = r.integer("qk_nope_head_dim");
  c.qk_rope_head_dim = r.integer("qk_rope_head_dim");
  c.v_head_dim = r.integer("v_head_dim");
  c.q_lora_rank = r.integer("q_lora_rank", 0);
  c.n_routed_experts = r.integer("n_routed_experts", 0);
  c.first_k_dense_replace = r.integer("first_k_dense_replace", 0);
  c.moe_layer_freq = r.integer("moe_layer_freq", 1);
  // intermediate_size is needed only when some layer is dense.
  bool any_dense = c.n_routed_experts == 0 || c.first_k_dense_replace > 0 || c.moe_layer_freq > 1;
  c.intermediate_size = r.integer("intermediate_size", any_dense ? std::nullopt : std::optional<int64_t>(0));
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  c.rope_theta = r.number("rope_theta", 10000.0);
  c.max_position_embeddings = r.integer("max_position_embeddings", 4096);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.bos_token_id = r.integer("bos_token_id", 0);
  c.eos_token_id = r.integer("eos_token_id", 1);
  c.num_nextn_predict_layers = r.integer("num_nextn_predict_layers", 0);

  for (auto [name, value] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size},
                             {"hidden_size", c.hidden_size},
                             {"num_hidden_layers", c.num_hidden_layers},
                             {"num_attention_heads", c.num_attention_heads},
                             {"kv_lora_rank", c.kv_lora_rank},
                             {"qk_nope_head_dim", c.qk_nope_head_dim},
                             {"qk_rope_head_dim", c.qk_rope_head_dim},
                             {"v_head_dim", c.v_head_dim},
                             {"moe_layer_freq", c.moe_layer_freq},
                             {"max_position_embeddings", c.max_position_embeddings}})
    r.positive(name, value);
  if (any_dense) r.positive("intermediate_size", c.intermediate_size);
  if (c.q_lora_rank < 0) throw Error(r.where("q_lora_rank"), "must be null or a positive integer");
  if (c.qk_rope_head_dim % 2 != 0)
    throw Error(r.where("qk_rope_head_dim"), "is " + std::to_string(c.qk_rope_head_dim) + "; RoPE needs an even dimension");
  if (c.rms_norm_eps <= 0) throw Error(r.where("rms_norm_eps"), "must be positive");
  if (c.rope_theta <= 0) throw Error(r.where("rope_theta"), "must be positive");
  for (auto [name, value] : {std::pair<const char*, int64_t>{"first_k_dense_replace", c.first_k_dense_replace},
                             {"num_nextn_predict_layers", c.num_nextn_predict_layers},
                             {"n_routed_experts", c.n_routed_experts}})
    if (value < 0) throw Error(r.where(name), "is " + std::to_string(value) + "; expected a non-negative integer");
  if (c.num_nextn_predict_layers > 1)
    throw Error(r.where("num_nextn_predict_layers"), "is " + std::to_string(c.num_nextn_predict_layers) +
                                                         "; whale supports 0 or 1 MTP layer (as V3/R1 ship)");
  if (c.bos_token_id < 0 || c.bos_token_id >= c.vocab_size)
    throw Error(r.where("bos_token_id"), "is " + std::to_string(c.bos_token_id) + "; expected an id below vocab_size " + std::to_string(c.vocab_size));
  if (c.eos_token_id < 0 || c.eos_token_id >= c.vocab_size)
    throw Error(r.where("eos_token_id"), "is " + std::to_string(c.eos_token_id) + "; expected an id below vocab_size " + std::to_string(c.vocab_size));

  if (c.n_routed_experts > 0) {
    c.moe_intermediate_size = r.integer("moe_intermediate_size");
    r.positive("moe_intermediate_size", c.moe_intermediate_size);
    c.n_shared_experts = r.integer("n_shared_experts", 0);
    if (c.n_shared_experts < 0)
      throw Error(r.where("n_shared_experts"), "is " + std::to_string(c.n_shared_experts) +
                                                   "; expected a non-negative integer or null");
    c.num_experts_per_tok = r.integer("num_experts_per_tok");
    r.positive("num_experts_per_tok", c.num_experts_per_tok);
    if (c.num_experts_per_tok > c.n_routed_experts)
      throw Error(r.where("num_experts_per_tok"), "is " + std::to_string(c.num_experts_per_tok) +
                                                      "; expected at most n_routed_experts = " + std::to_string(c.n_routed_experts));
    c.n_group = r.integer("n_group", 1);
    c.topk_group = r.integer("topk_group", 1);
    r.positive("n_group", c.n_group);
    r.positive("topk_group", c.topk_group);
    if (c.n_routed_experts % c.n_group != 0)
      throw Error(r.where("n_group"), "is " + std::to_string(c.n_group) + "; it must divide n_routed_experts = " + std::to_string(c.n_routed_experts));
    if (c.topk_group > c.n_group)
      throw Error(r.where("topk_group"), "is " + std::to_string(c.topk_group) + "; expected at most n_group = " + std::to_string(c.n_group));
    const std::string method = r.string("topk_method", v3 ? "noaux_tc" : "greedy");
    if (method == "greedy") c.topk_method = TopkMethod::Greedy;
    else if (method == "group_limited_greedy") c.topk_method = TopkMethod::GroupLimitedGreedy;
    else if (method == "noaux_tc") c.topk_method = TopkMethod::NoauxTc;
    else throw Error(r.where("topk_method"), "is '" + method + "'; expected greedy, group_limited_greedy or noaux_tc");
    const std::string scoring = r.string("scoring_func", v3 ? "sigmoid" : "softmax");
    if (scoring == "softmax") c.scoring_func = ScoringFunc::Softmax;
    else if (scoring == "sigmoid") c.scoring_func = ScoringFunc::Sigmoid;
    else throw Error(r.where("scoring_func"), "is '" + scoring + "'; expected softmax or sigmoid");
    const int64_t group_size = c.n_routed_experts / c.n_group;
    if (c.topk_method != TopkMethod::Greedy && c.topk_group * group_size < c.num_experts_per_tok)
      throw Error(r.where("topk_group"), "selects " + std::to_string(c.topk_group * group_size) +
                                             " experts, fewer than num_experts_per_tok = " + std::to_string(c.num_experts_per_tok));
    if (c.topk_method == TopkMethod::NoauxTc && group_size < 2)
      throw Error(r.where("n_group"), "noaux_tc scores each group by its top-2 experts; groups need at least 2 experts");
    c.norm_topk_prob = r.boolean("norm_topk_prob", v3);
    c.routed_scaling_factor = r.number("routed_scaling_factor", 1.0);
  }

  if (r.present("rope_scaling")) {
    const json& rs = j["rope_scaling"];
    const std::string where = source + ": field 'rope_scaling'";
    if (!rs.is_object()) throw Error(where, "must be an object or null");
    Reader sr{rs, where};
    std::string type = sr.string("type", sr.string("rope_type", ""));
    if (type != "yarn")
      throw Error(where + ".type", "is '" + type + "'; whale supports 'yarn' (as DeepSeek-V2/V3 use) or null");
    c.rope_scaling.yarn = true;
    c.rope_scaling.factor = sr.number("factor");
    c.rope_scaling.original_max_position_embeddings = sr.integer("original_max_position_embeddings", 4096);
    c.rope_scaling.beta_fast = sr.number("beta_fast", 32.0);
    c.rope_scaling.beta_slow = sr.number("beta_slow", 1.0);
    c.rope_scaling.mscale = sr.number("mscale", 1.0);
    c.rope_scaling.mscale_all_dim = sr.number("mscale_all_dim", 0.0);
    if (c.rope_scaling.factor <= 0) throw Error(where + ".factor", "must be positive");
    if (c.rope_scaling.original_max_position_embeddings <= 0)
      throw Error(where + ".original_max_position_embeddings", "must be positive");
  }

  if (r.present("quantization_config")) {
    const json& q = j["quantization_config"];
    const std::string where = source + ": field 'quantization_config'";
    if (!q.is_object()) throw Error(where, "must be an object");
    Reader qr{q, where};
    const std::string method = qr.string("quant_method", "");
    if (method != "fp8") throw Error(where + ".quant_method", "is '" + method + "'; whale reads 'fp8' (block-scaled E4M3)");
    const std::string fmt = qr.string("fmt", "e4m3");
    if (fmt != "e4m3") throw Error(where + ".fmt", "is '" + fmt + "'; expected e4m3");
    c.fp8 = true;
    if (q.contains("weight_block_size")) {
      const json& b = q["weight_block_size"];
      if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer() ||
          b[0].get<int64_t>() <= 0 || b[1].get<int64_t>() <= 0 || b[0].get<int64_t>() > (1 << 30) ||
          b[1].get<int64_t>() > (1 << 30))  // bounded so rows + block - 1 cannot overflow
        throw Error(where + ".weight_block_size", "must be [rows, cols] of positive integers up to 2^30");
      c.fp8_block_rows = b[0].get<int64_t>();
      c.fp8_block_cols = b[1].get<int64_t>();
    }
  }

  // Tensor shapes, parameter_count() and the KV cache multiply these fields in int64. Bound the
  // model's size (estimated in double, generously) so that no such product can overflow; 2^50
  // parameters is over a thousand times DeepSeek-V3.
  const double h = double(c.hidden_size), heads = double(c.num_attention_heads);
  const double qk = double(c.qk_nope_head_dim) + double(c.qk_rope_head_dim);
  const double attention =
      (c.q_lora_rank > 0 ? double(c.q_lora_rank) * (h + 1 + heads * qk) : heads * qk * h) +
      (double(c.kv_lora_rank) + double(c.qk_rope_head_dim)) * h +
      double(c.kv_lora_rank) * (1 + heads * (double(c.qk_nope_head_dim) + double(c.v_head_dim))) +
      h * heads * double(c.v_head_dim);
  const double mlp = 3 * h * (double(c.intermediate_size) +
                              (double(c.n_routed_experts) + double(c.n_shared_experts)) * double(c.moe_intermediate_size)) +
                     double(c.n_routed_experts) * (h + 1);
  const double layers = double(c.num_hidden_layers) + double(c.num_nextn_predict_layers);
  const double total = layers * (attention + mlp + 4 * h + 2 * h * h) + 2 * double(c.vocab_size) * h;
  if (total > 0x1p50) {
    char count[32];
    std::snprintf(count, sizeof count, "%.3g", total);
    throw Error(source, std::string("the sizes (hidden_size, num_hidden_layers, n_routed_experts, ...) describe about ") +
                            count + " parameters; whale supports at most 2^50");
  }
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  json j;
  try {
    j = json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    throw Error(path, std::string("not valid JSON: ") + e.what());
  }
  return parse_model_config(j, path);
}

json model_config_to_json(const ModelConfig& c) {
  json j;
  j["architectures"] = {c.model_type == "deepseek_v2" ? "DeepseekV2ForCausalLM" : "DeepseekV3ForCausalLM"};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["first_k_dense_replace"] = c.first_k_dense_replace;
  j["moe_layer_freq"] = c.moe_layer_freq;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_attention_heads;
  j["n_routed_experts"] = c.n_routed_experts > 0 ? json(c.n_routed_experts) : json(nullptr);
  j["n_shared_experts"] = c.n_shared_experts;
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["n_group"] = c.n_group;
  j["topk_group"] = c.topk_group;
  j["topk_method"] = c.topk_method == TopkMethod::Greedy ? "greedy"
                     : c.topk_method == TopkMethod::GroupLimitedGreedy ? "group_limited_greedy"
                                                                       : "noaux_tc";
  j["scoring_func"] = c.scoring_func == ScoringFunc::Softmax ? "softmax" : "sigmoid";
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  j["q_lora_rank"] = c.q_lora_rank > 0 ? json(c.q_lora_rank) : json(nullptr);
  j["kv_lora_rank"] = c.kv_lora_rank;
  j["qk_nope_head_dim"] = c.qk_nope_head_dim;
  j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  j["v_head_dim"] = c.v_head_dim;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.yarn) {
    j["rope_scaling"] = {{"type", "yarn"},
                         {"factor", c.rope_scaling.factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings},
                         {"beta_fast", c.rope_scaling.beta_fast},
                         {"beta_slow", c.rope_scaling.beta_slow},
                         {"mscale", c.rope_scaling.mscale},
                         {"mscale_all_dim", c.rope_scaling.mscale_all_dim}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["torch_dtype"] = "float32";
  if (c.fp8)
    j["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                                {"weight_block_size", {c.fp8_block_rows, c.fp8_block_cols}}};
  return j;
}

}  // namespace whale
