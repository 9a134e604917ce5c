// write_random_gguf (whale init --gguf): a random model written straight into a GGUF, tensor by
// tensor. Checked against an independent path: loading the file and exporting it again with
// export_gguf gives the same bytes (so layout and metadata are export_gguf's); the numbers have
// the requested moments (mean 0, std, and the Irwin-Hall kurtosis 2.7, not a uniform's 1.8 or a
// normal's 3); the file does not depend on the thread count; logits are finite.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "core/phase_timer.h"
#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io_test_util.h"
#include "model/transformer.h"

using namespace whale;
using whale::testing::read_bytes;
using whale::testing::TempDir;

namespace {

ModelConfig tiny_config() { return load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json"); }

// DeepSeek-V2-Lite's structure (no q LoRA, softmax greedy routing, 2 shared experts, yarn)
// at tiny widths.
ModelConfig v2lite_tiny() {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/tests/model/configs/deepseek-v2-lite.json");
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.moe_intermediate_size = 64;
  c.num_hidden_layers = 3;
  c.n_routed_experts = 8;
  c.num_attention_heads = 2;
  c.kv_lora_rank = 64;
  c.qk_nope_head_dim = 32;
  c.qk_rope_head_dim = 32;
  c.v_head_dim = 32;
  c.vocab_size = 512;
  c.max_position_embeddings = 1024;
  c.bos_token_id = 0;  // a GGUF without a tokenizer has no token ids; the loader defaults to 0 / 1
  c.eos_token_id = 1;
  return c;
}

InitOptions init(uint64_t seed) {
  InitOptions o;
  o.seed = seed;
  o.std = 0.02;
  return o;
}

// The last position's logits of a prompt.
std::vector<float> last_logits(const Model& m, const std::vector<int32_t>& tokens) {
  const int64_t n = int64_t(tokens.size());
  Transformer tf(m);
  KVCache cache(m.config, n);
  std::vector<float> hidden(size_t(n * m.config.hidden_size)), out(size_t(m.config.vocab_size));
  tf.forward(tokens.data(), {SeqSpan{&cache, 0, n, 0}}, hidden.data());
  tf.logits(hidden.data(), {n - 1}, out.data());
  return out;
}

std::vector<float> floats(const GgufFile& f, const std::string& name) {
  const GgufTensorInfo& t = f.tensor(name);
  std::vector<float> v(size_t(t.numel()));
  const int64_t cols = t.ne[0];
  for (int64_t r = 0; r < t.numel() / cols; ++r)
    dequantize_row(t.type, f.data(t) + size_t(r) * ggml_row_size(t.type, cols), v.data() + r * cols, cols);
  return v;
}

}  // namespace

TEST(RandomGguf, ReexportGivesTheSameBytes) {
  for (const ModelConfig& c : {tiny_config(), v2lite_tiny()}) {
    TempDir dir;
    GgufExportOptions options;
    options.type = GgmlType::Q8_0;
    write_random_gguf(c, dir / "random.gguf", options, init(3));
    auto loaded = load_model(dir / "random.gguf");
    EXPECT_EQ(model_config_to_json(loaded->config), model_config_to_json(c));
    // Q8_0 of dequantised Q8_0 values is the same blocks (the fp16 scale times 127 is exact).
    export_gguf(*loaded, dir / "again.gguf", options);
    EXPECT_TRUE(read_bytes(dir / "random.gguf") == read_bytes(dir / "again.gguf"));
    for (float x : last_logits(*loaded, {0, 5, 17, 300, 42, 42, 7, 511})) ASSERT_TRUE(std::isfinite(x));
  }
}

TEST(RandomGguf, MomentsSeedsAndThreads) {
  const ModelConfig c = tiny_config();
  TempDir dir;
  GgufExportOptions options;  // F32: the generated numbers exactly
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  write_random_gguf(c, dir / "one.gguf", options, init(5));
  omp_set_num_threads(2);
  write_random_gguf(c, dir / "two.gguf", options, init(5));
  omp_set_num_threads(threads);
  write_random_gguf(c, dir / "other.gguf", options, init(6));
  EXPECT_TRUE(read_bytes(dir / "one.gguf") == read_bytes(dir / "two.gguf"));
  EXPECT_FALSE(read_bytes(dir / "one.gguf") == read_bytes(dir / "other.gguf"));

  GgufFile f(dir / "one.gguf");
  // 512 x 128 = 65536 values: the sample mean's std is 0.02 / 256, the sample std's relative
  // std is about sqrt((kurtosis - 1) / 4n) = 0.3%, the sample kurtosis's std about 0.02.
  const std::vector<float> e = floats(f, "token_embd.weight");
  double m1 = 0, m2 = 0, m4 = 0;
  for (float x : e) m1 += x;
  m1 /= double(e.size());
  for (float x : e) {
    const double d = x - m1;
    m2 += d * d;
    m4 += d * d * d * d;
  }
  m2 /= double(e.size());
  m4 /= double(e.size());
  EXPECT_LT(std::abs(m1), 5 * 0.02 / 256);
  EXPECT_NEAR(std::sqrt(m2), 0.02, 0.02 * 0.015);
  EXPECT_NEAR(m4 / (m2 * m2), 2.7, 0.1);  // Irwin-Hall of 4: 3 - 6/(5*4)
  // Different tensors get different numbers; the MTP module's embedding is a copy of the main one.
  EXPECT_NE(floats(f, "output.weight")[0], e[0]);
  const std::string mtp = "blk." + std::to_string(c.num_hidden_layers) + ".nextn.embed_tokens.weight";
  EXPECT_TRUE(floats(f, mtp) == e);
  for (float x : floats(f, "output_norm.weight")) ASSERT_EQ(x, 1.0f);
}

TEST(RandomGguf, DecodePhasesCountEachWeightTheStepReadsOnce) {
  // bench_inference --phases divides each phase's weight bytes by its time. One decode step of a
  // V2-Lite-shaped Q8_0 GGUF must count exactly the weights the step reads, here summed from the
  // file's own tensor sizes: per layer the q and kv_a projections, k_b and v_b (int8
  // absorption), o_proj, and the F32 router with top-k of the stacked experts plus the shared
  // ones (or the dense MLP of layer 0); then the output head.
  const ModelConfig c = v2lite_tiny();
  TempDir dir;
  GgufExportOptions options;
  options.type = GgmlType::Q8_0;
  write_random_gguf(c, dir / "v2.gguf", options, init(7));
  auto m = load_model(dir / "v2.gguf");
  GgufFile f(dir / "v2.gguf");
  auto bytes = [&](const std::string& name) { return double(f.tensor(name).nbytes); };
  double want = bytes("output.weight");
  int64_t moe_layers = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string blk = "blk." + std::to_string(l) + ".";
    for (const char* t : {"attn_q.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight", "attn_output.weight"})
      want += bytes(blk + t);
    if (f.find(blk + "ffn_gate_exps.weight")) {
      ++moe_layers;
      want += bytes(blk + "ffn_gate_inp.weight");
      for (const char* t : {"ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"})
        want += bytes(blk + t) / double(c.n_routed_experts) * double(c.num_experts_per_tok);
      for (const char* t : {"ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight"}) want += bytes(blk + t);
    } else {
      for (const char* t : {"ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"}) want += bytes(blk + t);
    }
  }
  ASSERT_EQ(moe_layers, c.num_hidden_layers - 1);
  Transformer tf(*m);
  KVCache cache(c, 8);
  const std::vector<int32_t> prompt{0, 5, 17, 300};
  std::vector<float> hidden(size_t(4 * c.hidden_size)), logits(size_t(c.vocab_size));
  tf.forward(prompt.data(), {SeqSpan{&cache, 0, 4, 0}}, hidden.data());
  phases::enabled = true;
  phases::reset();
  const int32_t next = 42;
  tf.forward(&next, {SeqSpan{&cache, 0, 1, 4}}, hidden.data());
  tf.logits(hidden.data(), {0}, logits.data());
  phases::enabled = false;
  const phases::Totals t = phases::totals();
  double counted = 0, seconds = 0;
  for (int i = 0; i < phases::kCount; ++i) {
    counted += t.bytes[i];
    seconds += t.seconds[i];
    EXPECT_GE(t.seconds[i], 0.0) << phases::name(phases::Phase(i));
  }
  EXPECT_EQ(counted, want);
  EXPECT_GT(seconds, 0.0);
  EXPECT_EQ(t.calls[phases::kAttnProj], c.num_hidden_layers);
  EXPECT_EQ(t.calls[phases::kOProj], c.num_hidden_layers);
  EXPECT_EQ(t.calls[phases::kMoeUp], moe_layers);
  EXPECT_EQ(t.calls[phases::kMoeDown], moe_layers);
  EXPECT_EQ(t.calls[phases::kDenseMlp], c.num_hidden_layers - moe_layers);
  EXPECT_EQ(t.calls[phases::kHead], 1);
  phases::reset();
}
