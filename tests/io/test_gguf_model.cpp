// deepseek2 GGUF export and load: a whale checkpoint -> GGUF -> whale gives bit-identical
// weights and logits in F32 (both kv_b layouts, MTP included), the quantised exports stay
// within stated logit bounds, the tokenizer travels inside the file, and the metadata keys
// are llama.cpp's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "io/checkpoint.h"
#include "io/gguf_model.h"
#include "io/gguf_tokenizer.h"
#include "io_test_util.h"
#include "model/transformer.h"
#include "tokenizer/trainer.h"

using namespace whale;
using whale::testing::error_of;
using whale::testing::TempDir;
using whale::testing::write_bytes;

namespace {

ModelConfig tiny_config() { return load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json"); }

// Widths that are multiples of 256, so Q4_K and Q6_K apply to every projection.
ModelConfig k_quant_config() {
  ModelConfig c = tiny_config();
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.moe_intermediate_size = 256;
  c.q_lora_rank = 256;
  c.kv_lora_rank = 256;
  c.num_hidden_layers = 2;
  c.num_nextn_predict_layers = 0;
  c.n_routed_experts = 8;
  return c;
}

std::unique_ptr<Model> make_model(const ModelConfig& c, uint64_t seed = 7) {
  InitOptions init;
  init.seed = seed;
  init.std = 0.05;
  init.norm_jitter = 0.1;
  init.router_bias_std = 0.05;
  return init_model(c, init);
}

const std::vector<std::string>& texts() {
  static const std::vector<std::string> t = {
      "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
      "However little known the feelings or views of such a man may be on his first entering a neighbourhood, 1234567 times.",
      "数字 12 and ÜNÏCÖDE — \"quotes\", tabs\tand\nnew lines!"};
  return t;
}

// A checkpoint directory with a small trained tokenizer whose vocab fits the tiny config.
std::unique_ptr<Model> saved_model(const ModelConfig& c, const std::string& dir) {
  auto model = make_model(c);
  save_model(*model, dir);
  tokenizer::TrainOptions options;
  options.vocab_size = int(c.vocab_size) - 20;
  options.min_frequency = 1;
  options.threads = 1;
  std::vector<std::string> corpus;
  for (int k = 0; k < 20; ++k)
    for (const auto& t : texts()) corpus.push_back(t);
  write_bytes(dir + "/tokenizer.json", tokenizer::train_bpe_from_texts(corpus, options));
  write_bytes(dir + "/tokenizer_config.json",
              R"({"add_bos_token": true, "bos_token": "<｜begin▁of▁sentence｜>", "chat_template": "{{ messages }}"})");
  return load_model(dir);
}

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& tokens) {
  const int64_t n = int64_t(tokens.size());
  Transformer tf(m);
  KVCache cache(m.config, n);
  std::vector<float> hidden(size_t(n * m.config.hidden_size));
  tf.forward(tokens.data(), {SeqSpan{&cache, 0, n, 0}}, hidden.data());
  std::vector<int64_t> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rows[size_t(i)] = i;
  std::vector<float> out(size_t(n * m.config.vocab_size));
  tf.logits(hidden.data(), rows, out.data());
  return out;
}

std::vector<float> values(const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  GgmlType type;
  if (t.dtype != DType::F32 && t.dtype != DType::BF16 && ggml_type_of(t.dtype, &type)) {
    const int64_t cols = t.shape.back();
    for (int64_t r = 0; r < t.numel() / cols; ++r)
      dequantize_row(type, static_cast<const uint8_t*>(t.data) + size_t(r) * ggml_row_size(type, cols),
                     v.data() + r * cols, cols);
  } else if (t.dtype == DType::BF16)
    for (size_t i = 0; i < v.size(); ++i) v[i] = bf16_to_f32(static_cast<const uint16_t*>(t.data)[i]);
  else
    std::memcpy(v.data(), t.data, v.size() * 4);
  return v;
}

std::map<std::string, const Tensor*> tensors_of(Model& m) {
  std::map<std::string, const Tensor*> out;
  visit_weights(m.config, m.weights, [&](Tensor& t, const TensorSpec& s) { out[s.name] = &t; });
  return out;
}

const std::vector<int32_t> kTokens = {0, 5, 17, 300, 42, 42, 7, 511, 99, 3, 250, 1};

void check_f32_round_trip(bool split_kv_b) {
  TempDir dir;
  auto original = saved_model(tiny_config(), dir / "ckpt");
  GgufExportOptions options;
  options.split_kv_b = split_kv_b;
  export_gguf(*original, dir / "m.gguf", options);
  auto loaded = load_model(dir / "m.gguf");
  ASSERT_NE(loaded->gguf, nullptr);
  EXPECT_EQ(model_config_to_json(loaded->config), model_config_to_json(original->config));
  auto a = tensors_of(*original), b = tensors_of(*loaded);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    SCOPED_TRACE(name);
    EXPECT_EQ(b.at(name)->shape, t->shape);
    EXPECT_TRUE(values(*b.at(name)) == values(*t));
  }
  EXPECT_EQ(logits_of(*loaded, kTokens), logits_of(*original, kTokens));
  // Exporting the loaded GGUF again gives the same bytes.
  export_gguf(*loaded, dir / "again.gguf", options);
  EXPECT_TRUE(whale::testing::read_bytes(dir / "m.gguf") == whale::testing::read_bytes(dir / "again.gguf"));
}

}  // namespace

TEST(GgufModel, F32RoundTripIsExactWithSplitKvB) { check_f32_round_trip(true); }
TEST(GgufModel, F32RoundTripIsExactWithJoinedKvB) { check_f32_round_trip(false); }

TEST(GgufModel, MetadataAndTensorNamesFollowLlamaCpp) {
  TempDir dir;
  auto model = saved_model(tiny_config(), dir / "ckpt");
  export_gguf(*model, dir / "m.gguf", {});
  GgufFile f(dir / "m.gguf");
  const ModelConfig& c = model->config;
  EXPECT_EQ(f.get_string("general.architecture"), "deepseek2");
  EXPECT_EQ(f.get_int("deepseek2.block_count"), c.num_hidden_layers + 1);  // + the MTP block
  EXPECT_EQ(f.get_int("deepseek2.nextn_predict_layers"), 1);
  EXPECT_EQ(f.get_int("deepseek2.embedding_length"), 128);
  EXPECT_EQ(f.get_int("deepseek2.leading_dense_block_count"), 1);
  EXPECT_EQ(f.get_int("deepseek2.attention.head_count_kv"), 1);
  EXPECT_EQ(f.get_int("deepseek2.attention.key_length"), 64 + 16);
  EXPECT_EQ(f.get_int("deepseek2.attention.value_length"), 64);
  EXPECT_EQ(f.get_int("deepseek2.attention.key_length_mla"), 48);
  EXPECT_EQ(f.get_int("deepseek2.attention.value_length_mla"), 32);
  EXPECT_EQ(f.get_int("deepseek2.expert_gating_func"), 2);
  EXPECT_EQ(f.get_float("deepseek2.expert_weights_scale"), 2.5);
  EXPECT_TRUE(f.get_bool("deepseek2.expert_weights_norm", false));
  EXPECT_EQ(f.get_string("deepseek2.rope.scaling.type"), "yarn");
  EXPECT_NEAR(f.get_float("deepseek2.rope.scaling.yarn_log_multiplier"), 0.1, 1e-7);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "deepseek-v3");
  EXPECT_EQ(f.get("tokenizer.ggml.tokens").strings.size(), size_t(c.vocab_size));
  EXPECT_EQ(f.get_string("tokenizer.chat_template"), "{{ messages }}");
  for (const char* name : {"token_embd.weight", "output_norm.weight", "output.weight", "blk.0.attn_norm.weight",
                           "blk.0.attn_q_a.weight", "blk.0.attn_q_a_norm.weight", "blk.0.attn_q_b.weight",
                           "blk.0.attn_kv_a_mqa.weight", "blk.0.attn_kv_a_norm.weight", "blk.0.attn_k_b.weight",
                           "blk.0.attn_v_b.weight", "blk.0.attn_output.weight", "blk.0.ffn_norm.weight",
                           "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight",
                           "blk.1.ffn_gate_inp.weight", "blk.1.exp_probs_b.bias", "blk.1.ffn_gate_exps.weight",
                           "blk.1.ffn_up_exps.weight", "blk.1.ffn_down_exps.weight", "blk.1.ffn_gate_shexp.weight",
                           "blk.1.ffn_up_shexp.weight", "blk.1.ffn_down_shexp.weight", "blk.3.nextn.eh_proj.weight",
                           "blk.3.nextn.enorm.weight", "blk.3.nextn.hnorm.weight", "blk.3.nextn.shared_head_norm.weight"})
    EXPECT_NE(f.find(name), nullptr) << name;
  EXPECT_EQ(f.find("blk.0.attn_kv_b.weight"), nullptr);
  // ggml order: ne[0] is the input dimension; experts stacked last.
  EXPECT_EQ(f.tensor("blk.1.ffn_gate_exps.weight").ne, (std::vector<int64_t>{128, 64, 16}));
  EXPECT_EQ(f.tensor("blk.1.ffn_down_exps.weight").ne, (std::vector<int64_t>{64, 128, 16}));
  EXPECT_EQ(f.tensor("blk.0.attn_k_b.weight").ne, (std::vector<int64_t>{32, 64, 4}));
  EXPECT_EQ(f.tensor("blk.0.attn_v_b.weight").ne, (std::vector<int64_t>{64, 32, 4}));
  EXPECT_EQ(f.tensor("token_embd.weight").ne, (std::vector<int64_t>{128, 512}));
}

TEST(GgufModel, WithoutMtpLoadsAsPlainModel) {
  TempDir dir;
  auto model = saved_model(tiny_config(), dir / "ckpt");
  GgufExportOptions options;
  options.mtp = false;
  export_gguf(*model, dir / "m.gguf", options);
  auto loaded = load_model(dir / "m.gguf");
  EXPECT_EQ(loaded->config.num_nextn_predict_layers, 0);
  EXPECT_EQ(loaded->config.num_hidden_layers, 3);
  EXPECT_EQ(logits_of(*loaded, kTokens), logits_of(*model, kTokens));
}

namespace {

double rel_rmse(const std::vector<float>& x, const std::vector<float>& y) {
  double e = 0, n = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += double(x[i] - y[i]) * (x[i] - y[i]);
    n += double(x[i]) * x[i];
  }
  return std::sqrt(e / n);
}

struct QuantCase {
  GgmlType type;
  double logit_bound, weight_bound;
  GgmlType projection, output;
};
const QuantCase kQuantCases[] = {{GgmlType::Q8_0, 0.04, 0.01, GgmlType::Q8_0, GgmlType::Q8_0},
                                 {GgmlType::Q4_0, 0.6, 0.15, GgmlType::Q4_0, GgmlType::Q4_0},
                                 {GgmlType::Q4_K, 0.5, 0.15, GgmlType::Q4_K, GgmlType::Q6_K},
                                 {GgmlType::Q6_K, 0.12, 0.04, GgmlType::Q6_K, GgmlType::Q6_K},
                                 {GgmlType::BF16, 0.012, 0.004, GgmlType::BF16, GgmlType::BF16},
                                 {GgmlType::F16, 0.002, 0.0005, GgmlType::F16, GgmlType::F16}};

}  // namespace

// Stated bounds on the relative RMS error of all logits, on a dense random model (an MoE
// router's top-k can flip under any perturbation: a discontinuity, not quantisation error).
// This random model amplifies weight error about 7x (BF16 rounding, ~0.11% RMS per weight,
// moves its logits by 0.8%), so the bounds are the formats' weight errors times that, with
// margin: Q8_0 4% (measured 2.4%), Q6_K 12% (8.1%), Q4_K 50% (34%), Q4_0 60% (41%), BF16 1.2%
// (0.78%), F16 0.2% (0.10%). The ordering of the formats is checked too.
TEST(GgufModel, QuantisedExportsStayWithinLogitBounds) {
  TempDir dir;
  ModelConfig c = k_quant_config();
  c.n_routed_experts = 0;
  auto model = saved_model(c, dir / "ckpt");
  const std::vector<float> want = logits_of(*model, kTokens);
  std::map<GgmlType, double> errors;
  for (const QuantCase& k : kQuantCases) {
    SCOPED_TRACE(ggml_type_name(k.type));
    GgufExportOptions options;
    options.type = k.type;
    const std::string path = dir / (std::string(ggml_type_name(k.type)) + ".gguf");
    export_gguf(*model, path, options);
    LoadOptions dequantised;  // the bounds are for the stored weights; qmatmul's own rounding is checked apart
    dequantised.keep_quantized = false;
    auto loaded = load_model(path, dequantised);
    GgufFile& f = *loaded->gguf;
    EXPECT_EQ(f.tensor("blk.0.attn_q_b.weight").type, k.projection);
    EXPECT_EQ(f.tensor("blk.1.ffn_up.weight").type, k.projection);
    EXPECT_EQ(f.tensor("output.weight").type, k.output);
    EXPECT_EQ(f.tensor("output_norm.weight").type, GgmlType::F32);
    const double err = rel_rmse(want, logits_of(*loaded, kTokens));
    errors[k.type] = err;
    RecordProperty(std::string("logit_error_") + ggml_type_name(k.type), std::to_string(err));
    EXPECT_LT(err, k.logit_bound);
    EXPECT_GT(err, 0.0);
  }
  EXPECT_LT(errors[GgmlType::F16], errors[GgmlType::BF16]);
  EXPECT_LT(errors[GgmlType::BF16], errors[GgmlType::Q8_0]);
  EXPECT_LT(errors[GgmlType::Q8_0], errors[GgmlType::Q6_K]);
  EXPECT_LT(errors[GgmlType::Q6_K], errors[GgmlType::Q4_K]);
  EXPECT_LT(errors[GgmlType::Q4_K], errors[GgmlType::Q4_0]);
}

// MoE layers: the stacked experts and shared experts take the requested type, the router
// stays F32, and each dequantised tensor is within the format's relative RMS error.
TEST(GgufModel, QuantisedExpertsWithinWeightBounds) {
  TempDir dir;
  auto model = saved_model(k_quant_config(), dir / "ckpt");
  auto original = tensors_of(*model);
  for (const QuantCase& k : kQuantCases) {
    SCOPED_TRACE(ggml_type_name(k.type));
    GgufExportOptions options;
    options.type = k.type;
    const std::string path = dir / (std::string(ggml_type_name(k.type)) + ".gguf");
    export_gguf(*model, path, options);
    auto loaded = load_model(path);  // projections stay quantised (checked below)
    GgufFile& f = *loaded->gguf;
    if (ggml_block_size(k.type) > 1) {
      EXPECT_EQ(loaded->weights.layers[1].moe.experts[3].down_proj.dtype, dtype_of(k.projection));
      EXPECT_EQ(loaded->weights.layers[1].attn.q_b_proj.dtype, dtype_of(k.projection));
      EXPECT_EQ(loaded->weights.layers[1].moe.gate.dtype, DType::F32);
    }
    for (const char* name : {"blk.1.ffn_gate_exps.weight", "blk.1.ffn_down_exps.weight", "blk.1.ffn_up_shexp.weight",
                             "blk.1.attn_kv_a_mqa.weight", "blk.1.attn_v_b.weight", "token_embd.weight"})
      EXPECT_EQ(f.tensor(name).type, k.projection) << name;
    EXPECT_EQ(f.tensor("blk.1.ffn_gate_inp.weight").type, GgmlType::F32);
    EXPECT_EQ(f.tensor("blk.1.exp_probs_b.bias").type, GgmlType::F32);
    for (const auto& [name, t] : tensors_of(*loaded)) {
      const std::vector<float> a = values(*original.at(name)), b = values(*t);
      if (t->shape.size() == 1 || name.find("mlp.gate.weight") != std::string::npos) {
        EXPECT_TRUE(a == b) << name;  // F32 in every export
      } else {
        EXPECT_LT(rel_rmse(a, b), k.weight_bound) << name;
      }
    }
  }
}

// Kept-quantised projections go through qmatmul, which also rounds the activations to 8 bits
// (Q8_0 per 32 values, Q8_K per 256), against the weights dequantised at load: the two agree
// within that rounding: relative RMS of the logits below 4% (measured 2.0% for Q8_0 to 2.8%
// for Q6_K on this model, which amplifies per-matmul error about 7x).
TEST(GgufModel, KeptQuantisedMatchesDequantisedAtLoad) {
  TempDir dir;
  ModelConfig c = k_quant_config();
  c.n_routed_experts = 0;  // no router flips (see QuantisedExportsStayWithinLogitBounds)
  auto model = saved_model(c, dir / "ckpt");
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
    SCOPED_TRACE(ggml_type_name(type));
    GgufExportOptions options;
    options.type = type;
    export_gguf(*model, dir / "q.gguf", options);
    LoadOptions dequantised;
    dequantised.keep_quantized = false;
    auto kept = load_model(dir / "q.gguf"), widened = load_model(dir / "q.gguf", dequantised);
    EXPECT_EQ(kept->weights.layers[0].mlp.up_proj.dtype, dtype_of(type));
    EXPECT_EQ(widened->weights.layers[0].mlp.up_proj.dtype, DType::F32);
    const double err = rel_rmse(logits_of(*widened, kTokens), logits_of(*kept, kTokens));
    RecordProperty(std::string("kept_vs_dequantised_") + ggml_type_name(type), std::to_string(err));
    EXPECT_LT(err, 0.04);
    // Exporting the kept-quantised model again re-quantises its dequantised values.
    export_gguf(*kept, dir / "again.gguf", options);
    EXPECT_EQ(logits_of(*load_model(dir / "again.gguf", dequantised), kTokens).size(), kTokens.size() * 512);
  }
}

TEST(GgufModel, QuantizeBetweenFormatsKeepsTokenizerAndConfig) {
  TempDir dir;
  auto model = saved_model(tiny_config(), dir / "ckpt");
  export_gguf(*model, dir / "f32.gguf", {});
  LoadOptions load;
  load.keep_bf16 = false;
  auto from_gguf = load_model(dir / "f32.gguf", load);
  GgufExportOptions q8;
  q8.type = GgmlType::Q8_0;
  export_gguf(*from_gguf, dir / "q8.gguf", q8);
  export_gguf(*model, dir / "direct_q8.gguf", q8);
  // Quantising the F32 GGUF equals quantising the checkpoint directly, byte for byte
  // (apart from general.name, which names the source).
  auto a = load_model(dir / "q8.gguf"), b = load_model(dir / "direct_q8.gguf");
  EXPECT_EQ(logits_of(*a, kTokens), logits_of(*b, kTokens));
  ASSERT_NE(a->tokenizer, nullptr);
  EXPECT_EQ(model_config_to_json(a->config), model_config_to_json(model->config));
  EXPECT_EQ(a->tokenizer->encode(texts()[0]), b->tokenizer->encode(texts()[0]));
}

TEST(GgufTokenizer, StoredTokenizerEncodesLikeTheOriginal) {
  TempDir dir;
  auto model = saved_model(tiny_config(), dir / "ckpt");
  export_gguf(*model, dir / "m.gguf", {});
  auto original = tokenizer::Tokenizer::from_file(dir / "ckpt/tokenizer.json");
  auto loaded = load_model(dir / "m.gguf");
  ASSERT_NE(loaded->tokenizer, nullptr);
  EXPECT_TRUE(loaded->tokenizer->config().add_bos_token);
  EXPECT_EQ(loaded->tokenizer->config().chat_template, "{{ messages }}");
  // Also the tokenizer rebuilt from tokenizer.ggml.* alone (what llama.cpp's converter writes,
  // without tokenizer.huggingface.json): same ids for every text.
  auto rebuilt = tokenizer::Tokenizer::from_json(gguf_tokenizer_json(*loaded->gguf), "rebuilt");
  for (const auto& t : texts()) {
    SCOPED_TRACE(t);
    const auto ids = original.encode(t);
    EXPECT_EQ(loaded->tokenizer->encode(t), ids);
    EXPECT_EQ(rebuilt.encode(t), ids);
    EXPECT_EQ(rebuilt.decode(ids), t);
  }
  const std::string special = "<｜begin▁of▁sentence｜>hello<｜end▁of▁sentence｜>";
  EXPECT_EQ(rebuilt.encode(special), original.encode(special));
}

TEST(GgufModelErrors, WrongArchitectureAndShapes) {
  TempDir dir;
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.write(dir / "llama.gguf");
  std::string message = error_of([&] { load_model(dir / "llama.gguf"); });
  EXPECT_NE(message.find("general.architecture is 'llama'"), std::string::npos) << message;

  auto model = make_model(tiny_config());
  model->source = dir / "none";
  export_gguf(*model, dir / "m.gguf", {});
  // Same metadata but one tensor of the wrong shape: rewrite the file through the writer.
  GgufFile f(dir / "m.gguf");
  GgufWriter bad;
  for (const auto& [k, v] : f.header().kv) bad.add(k, v);
  for (const auto& t : f.tensors()) {
    std::vector<int64_t> ne = t.ne;
    if (t.name == "blk.0.attn_q_a.weight") ne[1] /= 2;
    const uint8_t* data = f.data(t);
    const size_t n = ggml_row_size(t.type, ne[0]) * size_t(ne.size() > 1 ? ne[1] : 1) * size_t(ne.size() > 2 ? ne[2] : 1);
    bad.add_tensor(t.name, t.type, ne, [data, n](std::vector<uint8_t>& out) { out.insert(out.end(), data, data + n); });
  }
  bad.write(dir / "bad.gguf");
  message = error_of([&] { load_model(dir / "bad.gguf"); });
  EXPECT_NE(message.find("blk.0.attn_q_a.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("[48, 128]"), std::string::npos) << message;
}
