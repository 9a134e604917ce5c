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
#include "kernels/qmatmul.h"
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

TEST(RandomGguf, RepackedWeightsGiveTheMappedRowsBitsInEveryStep) {
  // WeightRepack::On against Off on the same mapped Q8_0 file: a prefill of 5 tokens, two
  // decode steps, a verify-shaped step of 2 rows and the MTP module must give identical logits
  // (the repacked layout feeds the same integer dots and float chain). Also a BF16 model's
  // quantize_weights(Q8_0) copies, repacked or not.
  if (!q8_0_x16_available()) GTEST_SKIP() << "no AVX-512 VNNI kernels on this CPU";
  for (const ModelConfig& c : {v2lite_tiny(), tiny_config()}) {  // tiny-v3 has an MTP module
    TempDir dir;
    GgufExportOptions options;
    options.type = GgmlType::Q8_0;
    write_random_gguf(c, dir / "m.gguf", options, init(11));
    auto m = load_model(dir / "m.gguf");
    auto run = [&](WeightRepack repack, size_t* repacked) {
      Transformer tf(*m, AttentionMode::Auto, repack);
      *repacked = tf.repacked_bytes();
      KVCache cache(c, 16);
      std::vector<float> out, hidden(size_t(5 * c.hidden_size)), logits(size_t(2 * c.vocab_size));
      auto step = [&](const std::vector<int32_t>& tokens, int64_t pos) {
        const int64_t n = int64_t(tokens.size());
        tf.forward(tokens.data(), {SeqSpan{&cache, 0, n, pos}}, hidden.data());
        std::vector<int64_t> rows;
        for (int64_t i = 0; i < n && i < 2; ++i) rows.push_back(n - 1 - i);
        tf.logits(hidden.data(), rows, logits.data());
        out.insert(out.end(), logits.begin(), logits.begin() + int64_t(rows.size()) * c.vocab_size);
      };
      step({3, 9, 27, 81, 243}, 0);
      step({7}, 5);
      step({11}, 6);
      step({13, 17}, 7);
      if (c.num_nextn_predict_layers > 0) {
        KVCache mtp_cache(c, 16);
        const std::vector<int32_t> next{9, 27};
        tf.mtp_logits(hidden.data(), next.data(), {SeqSpan{&mtp_cache, 0, 2, 0}}, logits.data());
        out.insert(out.end(), logits.begin(), logits.begin() + 2 * c.vocab_size);
      }
      return out;
    };
    size_t off_bytes = 0, on_bytes = 0;
    const auto want = run(WeightRepack::Off, &off_bytes), got = run(WeightRepack::On, &on_bytes);
    EXPECT_EQ(off_bytes, 0u);
    EXPECT_GT(on_bytes, 0u);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << "logit " << i;
  }
  // Run-time quantisation of a BF16 model to Q8_0: repacked copies or row copies, same bits.
  const ModelConfig c = v2lite_tiny();
  const auto bf16 = init_model(c, init(5));
  auto quantised_logits = [&](WeightRepack repack) {
    Transformer tf(*bf16, AttentionMode::Auto, repack);
    tf.quantize_weights(GgmlType::Q8_0);
    KVCache cache(c, 8);
    const std::vector<int32_t> prompt{1, 2, 3};
    std::vector<float> hidden(size_t(3 * c.hidden_size)), logits(size_t(c.vocab_size));
    tf.forward(prompt.data(), {SeqSpan{&cache, 0, 3, 0}}, hidden.data());
    tf.logits(hidden.data(), {2}, logits.data());
    const int32_t next = 4;
    tf.forward(&next, {SeqSpan{&cache, 0, 1, 3}}, hidden.data());
    std::vector<float> more(size_t(c.vocab_size));
    tf.logits(hidden.data(), {0}, more.data());
    logits.insert(logits.end(), more.begin(), more.end());
    return logits;
  };
  EXPECT_EQ(quantised_logits(WeightRepack::On), quantised_logits(WeightRepack::Off));
}

TEST(RandomGguf, VerifyRowsGiveTheDecodeStepsBits) {
  // Speculative decoding's exactness: an MTP verify pass feeds [t, draft] as one 2-row step,
  // and greedy output is identical to plain decoding only if each of its rows gives the bits of
  // the 1-row step it replaces. A GGUF keeps the router (ffn_gate_inp) in F32, where SGEMV
  // (1 row) and SGEMM (2 rows) sum in different orders; the router must not. Twelve pairs of
  // steps after a prompt, on V2-Lite-tiny, tiny-v3, and V2-Lite's hidden size (2048) and depth
  // (27 layers) at tiny widths otherwise.
  ModelConfig wide = v2lite_tiny();
  wide.hidden_size = 2048;
  wide.num_hidden_layers = 2;
  wide.n_routed_experts = 64;
  ModelConfig deep = v2lite_tiny();
  deep.num_hidden_layers = 27;
  for (const ModelConfig& c : {v2lite_tiny(), tiny_config(), wide, deep}) {
    TempDir dir;
    GgufExportOptions options;
    options.type = GgmlType::Q8_0;
    write_random_gguf(c, dir / "m.gguf", options, init(13));
    auto m = load_model(dir / "m.gguf");
    ASSERT_EQ(m->weights.layers.back().moe.gate.dtype, DType::F32);
    Transformer tf(*m);
    constexpr int64_t kPairs = 12;
    const std::vector<int32_t> prompt{3, 9, 27, 81, 243};
    std::vector<float> hidden(size_t(5 * c.hidden_size));
    auto logits_of = [&](KVCache& cache, const std::vector<int32_t>& tokens, int64_t pos) {
      const int64_t n = int64_t(tokens.size());
      tf.forward(tokens.data(), {SeqSpan{&cache, 0, n, pos}}, hidden.data());
      std::vector<float> out(size_t(n * c.vocab_size));
      std::vector<int64_t> rows;
      for (int64_t i = 0; i < n; ++i) rows.push_back(i);
      tf.logits(hidden.data(), rows, out.data());
      return out;
    };
    KVCache plain(c, 5 + 2 * kPairs), verify(c, 5 + 2 * kPairs);
    logits_of(plain, prompt, 0);
    logits_of(verify, prompt, 0);
    for (int64_t i = 0; i < kPairs; ++i) {
      const int32_t a = int32_t(7 + 31 * i) % int32_t(c.vocab_size), b = int32_t(13 + 17 * i) % int32_t(c.vocab_size);
      std::vector<float> one = logits_of(plain, {a}, 5 + 2 * i);
      const std::vector<float> second = logits_of(plain, {b}, 6 + 2 * i);
      one.insert(one.end(), second.begin(), second.end());
      const std::vector<float> two = logits_of(verify, {a, b}, 5 + 2 * i);
      ASSERT_EQ(two.size(), one.size());
      for (size_t k = 0; k < one.size(); ++k)
        ASSERT_EQ(two[k], one[k]) << "pair " << i << ", row " << k / size_t(c.vocab_size) << ", logit "
                                  << k % size_t(c.vocab_size) << ", " << c.num_hidden_layers << " layers";
    }
  }
}
