// Quantised MLA absorption (Transformer::set_quantised_absorption): with a GGUF's Q8_0 split
// k_b/v_b, q_nope · W_UK and W_UV · ctx run as quantised matvecs on the blocks (qmatmul_rows)
// instead of on dequantised F32 rows. The kernel agrees bit for bit with qmatmul on strided
// rows; the model's hidden states move from the F32 path's by a fraction of the
// error the Q8_0 file itself carries, and greedy tokens keep their argmax wherever the margin
// allows.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../io/io_test_util.h"
#include "model_test_util.h"
#include "infer/generate.h"
#include "io/checkpoint.h"
#include "io/gguf_model.h"
#include "kernels/qmatmul.h"
#include "model/transformer.h"

using namespace whale;
using whale::testing::prefill_and_decode_hidden;
using whale::testing::random_values;
using whale::testing::TempDir;

namespace {

// Hidden states of a 7-token prefill followed by two decode steps (absorbed decode rows).
std::vector<float> hidden_states(const Model& m, AttentionMode mode, bool quantised, bool fused = true) {
  Transformer tf(m, mode);
  tf.set_quantised_absorption(quantised);
  tf.set_fused_absorption(fused);
  return prefill_and_decode_hidden(tf, m.config);
}

double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

// A random tiny-v3 model as a Q8_0 GGUF with the split attn_k_b / attn_v_b (kept as mapped views).
// All layers dense when `dense`: a random router's top-k choice flips under any perturbation
// of its input, a jump that would swamp the rounding this file measures.
std::unique_ptr<Model> split_q8_0_model(const TempDir& dir, uint64_t seed, bool dense = true,
                                        std::unique_ptr<Model>* source = nullptr) {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  if (dense) c.first_k_dense_replace = c.num_hidden_layers;
  InitOptions init;
  init.seed = seed;
  init.std = 0.05;
  GgufExportOptions options;
  options.type = GgmlType::Q8_0;
  options.split_kv_b = true;
  auto f32 = init_model(c, init);
  export_gguf(*f32, dir / "s.gguf", options);
  if (source) *source = std::move(f32);
  auto m = load_model(dir / "s.gguf");
  for (const LayerWeights& l : m->weights.layers) EXPECT_EQ(l.attn.k_b.dtype, dtype_of(GgmlType::Q8_0));
  return m;
}

}  // namespace

TEST(QuantisedAbsorption, RowsMatchQmatmulBitForBit) {
  struct Shape {
    GgmlType type;
    int64_t N, K, M;
  };
  for (KernelPath path : {KernelPath::Scalar, KernelPath::Avx2, KernelPath::Avx512, KernelPath::Avx512Vnni}) {
    if (!cpu_supports(path)) continue;
    for (Shape s : {Shape{GgmlType::Q8_0, 64, 128, 1}, Shape{GgmlType::Q8_0, 37, 512, 3}, Shape{GgmlType::Q8_0, 13, 32, 2},
                    Shape{GgmlType::Q8_0, 6, 96, 1}, Shape{GgmlType::Q4_0, 19, 96, 2},
                    Shape{GgmlType::Q4_K, 9, 256, 2}, Shape{GgmlType::Q6_K, 5, 256, 1}}) {
      const size_t row = ggml_row_size(s.type, s.K);
      std::vector<uint8_t> W(row * size_t(s.N));
      const std::vector<float> wf = random_values(s.N * s.K, 1);
      for (int64_t n = 0; n < s.N; ++n) quantize_row(s.type, wf.data() + n * s.K, W.data() + size_t(n) * row, s.K);
      // Rows of x are a slice of wider rows (one head of each token), y strided likewise.
      const int64_t ldx = s.K * 3 + 5, ldy = s.N * 2 + 1;
      const std::vector<float> wide = random_values(s.M * ldx, 2);
      std::vector<float> x(size_t(s.M * s.K));
      for (int64_t m = 0; m < s.M; ++m)
        std::copy_n(wide.data() + m * ldx + s.K, s.K, x.data() + m * s.K);
      std::vector<float> want(size_t(s.M * s.N)), got(size_t(s.M * ldy), -7.0f);
      qmatmul(s.type, W.data(), s.N, s.K, x.data(), s.M, want.data(), false, path);
      qmatmul_rows(s.type, W.data(), s.N, s.K, wide.data() + s.K, ldx, s.M, got.data(), ldy, false, path);
      for (int64_t m = 0; m < s.M; ++m) {
        for (int64_t n = 0; n < s.N; ++n)
          ASSERT_EQ(got[size_t(m * ldy + n)], want[size_t(m * s.N + n)])
              << ggml_type_name(s.type) << " path " << kernel_path_name(path) << " m " << m << " n " << n;
        for (int64_t n = s.N; n < ldy; ++n) ASSERT_EQ(got[size_t(m * ldy + n)], -7.0f) << "wrote past row " << m;
      }
      // accumulate adds onto y
      std::vector<float> acc(got);
      qmatmul_rows(s.type, W.data(), s.N, s.K, wide.data() + s.K, ldx, s.M, acc.data(), ldy, true, path);
      for (int64_t n = 0; n < s.N; ++n) ASSERT_EQ(acc[size_t(n)], got[size_t(n)] + got[size_t(n)]);
    }
  }
  std::vector<uint8_t> W(ggml_row_size(GgmlType::Q8_0, 64));
  std::vector<float> x(40), y(1);
  EXPECT_THROW(qmatmul_rows(GgmlType::Q8_0, W.data(), 1, 40, x.data(), 40, 1, y.data(), 1, false, kernel_path()),
               Error);
}

// Tolerance: q_nope and ctx are rounded to 8 bits per block of 32, as every quantised
// projection's input already is. The yardstick is the error the Q8_0 file itself carries: its
// hidden states against the F32 model it was exported from (same tokens, F32 kernels). The
// quantised absorption must move them by less than that (measured: 2.2e-2 against 3.2e-2 on
// this random model, whose sharp attention amplifies any rounding of q or ctx; llama.cpp's
// Q8_0 k_b product rounds q_nope the same way); reading the wrong tensor (k_b pointed at v_b's
// bytes) must move them by more.
TEST(QuantisedAbsorption, HiddenStatesWithinTheQ8FilesOwnError) {
  TempDir dir;
  std::unique_ptr<Model> source;
  auto m = split_q8_0_model(dir, 5, true, &source);
  const auto reference = hidden_states(*source, AttentionMode::Absorbed, false);
  const auto file_f32 = hidden_states(*m, AttentionMode::Absorbed, false);
  const double file_error = relative_l2(file_f32, reference);
  for (AttentionMode mode : {AttentionMode::Auto, AttentionMode::Absorbed}) {
    const auto f32 = hidden_states(*m, mode, false), q8 = hidden_states(*m, mode, true);
    ASSERT_EQ(f32.size(), q8.size());
    const double err = relative_l2(q8, f32);
    std::printf("mode %d: relative L2 int8 vs F32 absorption %.2e; the Q8_0 file vs its F32 source %.2e\n", int(mode),
                err, file_error);
    EXPECT_LT(err, file_error) << "mode " << int(mode);
    EXPECT_GT(err, 0.0) << "the quantised path was not taken (mode " << int(mode) << ")";
    EXPECT_LT(relative_l2(q8, reference), 1.5 * file_error) << "mode " << int(mode);
  }
  auto wrong = load_model(dir / "s.gguf");
  for (LayerWeights& l : wrong->weights.layers) l.attn.k_b.data = l.attn.v_b.data;
  EXPECT_GT(relative_l2(hidden_states(*wrong, AttentionMode::Absorbed, true), file_f32), file_error);
}

// Greedy decoding on a random model: its logits are nearly flat (top-2 gaps of a few hundredths
// are common), so any change of rounding may flip a near tie. Teacher-forced over the F32 path's
// own greedy continuation, every position whose F32 top-2 gap exceeds twice the largest logit
// change must keep its argmax, and most positions must keep it.
TEST(QuantisedAbsorption, GreedyTokensKeptWhereTheMarginAllows) {
  TempDir dir;
  auto m = split_q8_0_model(dir, 7);
  GenerateOptions o;
  o.max_tokens = 24;
  o.stop_at_eos = false;
  Generator gen(*m);
  gen.transformer().set_quantised_absorption(false);
  std::vector<int32_t> seq{3, 14, 15, 92, 65};
  const auto out = gen.generate({seq}, o);
  seq.insert(seq.end(), out[0].begin(), out[0].end());
  const int64_t T = int64_t(seq.size()), V = m->config.vocab_size, H = m->config.hidden_size;
  std::vector<int64_t> rows(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) rows[size_t(t)] = t;
  auto logits_of = [&](bool quantised) {
    Transformer tf(*m, AttentionMode::Absorbed);
    tf.set_quantised_absorption(quantised);
    KVCache cache(m->config, T);
    std::vector<float> hidden(size_t(T * H)), logits(size_t(T * V));
    tf.forward(seq.data(), {SeqSpan{&cache, 0, T, 0}}, hidden.data());
    tf.logits(hidden.data(), rows, logits.data());
    return logits;
  };
  const auto f32 = logits_of(false), q8 = logits_of(true);
  float max_change = 0;
  for (size_t i = 0; i < f32.size(); ++i) max_change = std::max(max_change, std::fabs(f32[i] - q8[i]));
  int64_t kept = 0, decided = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float* a = f32.data() + t * V;
    const float* b = q8.data() + t * V;
    const int64_t top = std::max_element(a, a + V) - a;
    float second = -INFINITY;
    for (int64_t v = 0; v < V; ++v)
      if (v != top) second = std::max(second, a[v]);
    const bool same = std::max_element(b, b + V) - b == top;
    kept += same;
    if (a[top] - second > 2 * max_change) {
      ++decided;
      EXPECT_TRUE(same) << "position " << t << ": gap " << a[top] - second << " > 2 x " << max_change;
    }
  }
  std::printf("greedy argmax kept at %lld of %lld positions; %lld had a gap above twice the largest logit change %.3g\n",
              (long long)kept, (long long)T, (long long)decided, max_change);
  EXPECT_GE(kept * 4, T * 3);
}

// A decode step's W_UK and W_UV inside latent_attention's items (one parallel region) against
// the separate per-head regions: the same qmatmul_rows on the same rows, so the same bits, for
// single decode steps and a step of two sequences (2 rows: still fused) or three (not fused).
TEST(QuantisedAbsorption, FusedItemsGiveTheSameBitsAsSeparateRegions) {
  TempDir dir;
  auto m = split_q8_0_model(dir, 3);
  const int threads_before = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    EXPECT_EQ(hidden_states(*m, AttentionMode::Absorbed, true, true), hidden_states(*m, AttentionMode::Absorbed, true, false))
        << threads << " threads";
  }
  omp_set_num_threads(threads_before);
  const int64_t H = m->config.hidden_size;
  auto batch_step = [&](bool fused, int n_seqs) {
    Transformer tf(*m);
    tf.set_quantised_absorption(true);
    tf.set_fused_absorption(fused);
    std::vector<KVCache> caches;
    for (int i = 0; i < n_seqs; ++i) caches.emplace_back(m->config, 8);
    const std::vector<int32_t> prompt{4, 8, 15, 16};
    std::vector<float> h(size_t(4 * H)), all;
    for (auto& c : caches) tf.forward(prompt.data(), {SeqSpan{&c, 0, 4, 0}}, h.data());
    std::vector<SeqSpan> spans;
    std::vector<int32_t> next;
    for (int i = 0; i < n_seqs; ++i) {
      spans.push_back(SeqSpan{&caches[size_t(i)], i, 1, 4});
      next.push_back(int32_t(23 + i));
    }
    for (int step = 0; step < 2; ++step) {
      tf.forward(next.data(), spans, h.data());
      all.insert(all.end(), h.begin(), h.begin() + n_seqs * H);
      for (auto& sp : spans) ++sp.pos0;
    }
    return all;
  };
  for (int n : {2, 3}) EXPECT_EQ(batch_step(true, n), batch_step(false, n)) << n << " sequences";
  omp_set_num_threads(threads_before);
}
