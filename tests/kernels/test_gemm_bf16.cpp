// oneDNN BF16 GEMM (src/kernels/gemm_bf16) against a scalar reference: operands rounded to
// BF16 with core/dtype.h's codec, products summed in double. And one training step in BF16 mode
// through oneDNN against the simulation (round operands, then FP32 SGEMM).
#include "kernels/gemm_bf16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "model/train_graph.h"

using namespace whale;

namespace {

std::vector<float> random_matrix(Rng& rng, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = float(rng.uniform() * 2.0 - 1.0);
  return v;
}

float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

struct Case {
  int64_t M, N, K;
  bool ta, tb;
  float alpha, beta;
  int64_t pad;  // extra columns of every leading dimension (strided operands)
};

// Each product of two BF16 values is exact in FP32 (8 + 8 significant bits), so the FP32 sum
// differs from the double one only by accumulation rounding: at most about K * 2^-24 * sum|a b|
// for any summation order, and far less in practice (the bound is 2^-24 * K * sum |a b|, used
// here with K capped at 64: blocked kernels add partial sums of at most a few dozen terms).
void check(GemmBf16& g, const Case& c, Rng& rng) {
  const int64_t a_rows = c.ta ? c.K : c.M, a_cols = c.ta ? c.M : c.K;
  const int64_t b_rows = c.tb ? c.N : c.K, b_cols = c.tb ? c.K : c.N;
  const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.N + c.pad;
  const auto A = random_matrix(rng, a_rows * lda), B = random_matrix(rng, b_rows * ldb);
  auto C = random_matrix(rng, c.M * ldc);
  const auto C0 = C;
  g.gemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, C.data(), ldc);
  double worst = 0;
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double sum = 0, mag = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double a = round_bf16(c.ta ? A[size_t(k * lda + i)] : A[size_t(i * lda + k)]);
        const double b = round_bf16(c.tb ? B[size_t(j * ldb + k)] : B[size_t(k * ldb + j)]);
        sum += a * b;
        mag += std::fabs(a * b);
      }
      const double want = double(c.alpha) * sum + double(c.beta) * C0[size_t(i * ldc + j)];
      const double tol = 1e-6 + 4.0 * std::ldexp(1.0, -24) * double(std::min<int64_t>(c.K, 64)) *
                                    (std::fabs(double(c.alpha)) * mag + std::fabs(double(c.beta) * C0[size_t(i * ldc + j)]));
      const double err = std::fabs(double(C[size_t(i * ldc + j)]) - want);
      worst = std::max(worst, err / tol);
      ASSERT_LE(err, tol) << "M " << c.M << " N " << c.N << " K " << c.K << " ta " << c.ta << " tb " << c.tb
                          << " alpha " << c.alpha << " beta " << c.beta << " at (" << i << ", " << j << ")";
    }
  // The padding columns of C are never written.
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = c.N; j < ldc; ++j) ASSERT_EQ(C[size_t(i * ldc + j)], C0[size_t(i * ldc + j)]);
}

}  // namespace

TEST(GemmBf16, RoundingMatchesTheCodec) {
  Rng rng(3);
  std::vector<float> x = random_matrix(rng, 5000);
  for (auto& v : x) v *= 1e4f;
  // ties (low half exactly 0x8000) on both parities, denormals, infinities, NaN, max
  const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0xbf808000u, 0x00000001u, 0x00018000u, 0x7f800000u,
                              0xff800000u, 0x7fc00001u, 0x7f800001u, 0x7f7fffffu, 0x80000000u};
  for (uint32_t bits : special) {
    float f;
    std::memcpy(&f, &bits, 4);
    x.push_back(f);
  }
  std::vector<uint16_t> y(x.size());
  round_to_bf16(x.data(), y.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], f32_to_bf16(x[i])) << "element " << i;
  // strided form: 3 rows of 4 taken from rows of 7
  std::vector<uint16_t> z(12);
  round_to_bf16(x.data(), 3, 4, 7, z.data());
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) ASSERT_EQ(z[size_t(r * 4 + c)], f32_to_bf16(x[size_t(r * 7 + c)]));
}

TEST(GemmBf16, MatchesScalarReferenceForEveryTranspose) {
  GemmBf16 g;
  std::printf("oneDNN BF16 kernel: %s (native %d)\n", g.kernel().c_str(), int(g.native()));
  Rng rng(11);
  const Case shapes[] = {
      {37, 29, 53, false, false, 1.0f, 0.0f, 0},  // nothing a multiple of 16
      {64, 48, 96, false, false, 1.0f, 0.0f, 0},
      {33, 17, 1, false, false, 1.0f, 0.0f, 0},   // K = 1
      {1, 45, 70, false, false, 1.0f, 1.0f, 3},   // one row, accumulate, strided
      {45, 1, 70, false, false, 0.5f, 1.0f, 2},   // one column
      {130, 70, 257, false, false, 1.0f, 1.0f, 0},  // K past a 128/256 block edge
      {50, 40, 30, false, false, 0.125f, 0.0f, 5},  // attention-style alpha
  };
  for (Case c : shapes)
    for (int t = 0; t < 4; ++t) {
      c.ta = t & 1;
      c.tb = t & 2;
      check(g, c, rng);
      if (HasFatalFailure()) return;
    }
}

TEST(GemmBf16, BetaZeroIgnoresNanInOutputAndRepeatedShapesReusePrimitives) {
  GemmBf16 g;
  Rng rng(5);
  const auto A = random_matrix(rng, 20 * 24), B = random_matrix(rng, 24 * 12);
  std::vector<float> C(20 * 12, std::numeric_limits<float>::quiet_NaN());
  g.gemm(false, false, 20, 12, 24, 1.0f, A.data(), 24, B.data(), 12, 0.0f, C.data(), 12);
  for (float v : C) ASSERT_TRUE(std::isfinite(v));
  const size_t after_one = g.cached_primitives();
  for (int i = 0; i < 5; ++i) g.gemm(false, false, 20, 12, 24, 1.0f, A.data(), 24, B.data(), 12, 0.0f, C.data(), 12);
  EXPECT_EQ(g.cached_primitives(), after_one);
  g.gemm(false, false, 20, 12, 24, 1.0f, A.data(), 24, B.data(), 12, 1.0f, C.data(), 12);  // beta differs
  EXPECT_EQ(g.cached_primitives(), g.native() ? after_one + 1 : 0u);  // without a BF16 kernel: SGEMM, no primitives
  // empty contraction: C = beta C
  std::vector<float> D(6, 2.0f);
  g.gemm(false, false, 2, 3, 0, 1.0f, A.data(), 1, B.data(), 3, 0.5f, D.data(), 3);
  for (float v : D) EXPECT_EQ(v, 1.0f);
}

// An expert's GEMMs see a different number of rows every step: after a few sizes, one primitive
// with a run-time M (forward, Dgrad) or K (Wgrad) serves them all, and must stay exact.
TEST(GemmBf16, VaryingRowCountsShareOnePrimitive) {
  GemmBf16 g;
  Rng rng(9);
  for (int64_t rows : {5, 17, 64, 33, 91, 2, 128, 7}) {
    check(g, Case{rows, 24, 40, false, true, 1.0f, 0.0f, 0}, rng);   // forward y = x W^T
    check(g, Case{rows, 40, 24, false, false, 1.0f, 1.0f, 0}, rng);  // Dgrad dx += dy W
    check(g, Case{24, 40, rows, true, false, 1.0f, 1.0f, 0}, rng);   // Wgrad dW += dy^T x
    // strided operands and output (padded rows go through a dense copy of C)
    check(g, Case{rows, 40, 24, false, false, 1.0f, 1.0f, 3}, rng);
    check(g, Case{24, 40, rows, true, false, 1.0f, 1.0f, 5}, rng);
    if (HasFatalFailure()) return;
  }
  // Per kind: two exact-size primitives before the third size marks the rows as varying, then
  // one per 32-row bucket the sizes pad to (32, 64, 96, 128), not one per size.
  EXPECT_LE(g.cached_primitives(), 5u * 6u);
}

TEST(GemmBf16, RejectsLeadingDimensionShorterThanRow) {
  GemmBf16 g;
  std::vector<float> A(100), B(100), C(100);
  EXPECT_THROW(g.gemm(false, false, 4, 4, 8, 1.0f, A.data(), 4, B.data(), 4, 0.0f, C.data(), 4), Error);
}

// One tiny-v3 training step (MLA, MoE, MTP) in BF16 mode through oneDNN and through the
// simulation. Both multiply the same rounded operands and accumulate in FP32, in different
// orders: each GEMM's output agrees to ~2e-7 relative (measured per call on this step). But every
// output is rounded to BF16 again as the next GEMM's operand, and a 1-ulp FP32 difference flips
// that rounding for a few elements, each flip a 2^-9 change: the difference grows layer by layer
// toward BF16's own resolution (measured 3.4e-3 over the whole gradient, against 2.6e-2 between
// BF16 and FP32). So the step is checked against the size of the BF16 effect itself, and the GEMM
// against the scalar reference above; a wrong transpose, scale or operand would move the gradient
// by order 1.
TEST(GemmBf16, TrainingStepMatchesSimulatedBf16) {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = 5;
  auto model = init_model(c, init);
  Rng rng(7);
  const int64_t B = 2, T = 48;
  std::vector<int32_t> tokens(size_t(B * (T + 1)));
  for (auto& t : tokens) t = int32_t(rng.next() % uint64_t(c.vocab_size));
  LossOptions lo;
  lo.mtp_lambda = 0.3;
  lo.balance_alpha = 1e-4;
  auto run = [&](const std::string& precision, bool simulated, double& loss) {
    TrainGraph graph(*model);
    graph.set_precision(precision);
    graph.set_bf16_simulated(simulated);
    Gradients grads(*model);
    TrainBatch batch{B, T, tokens.data(), nullptr};
    loss = graph.forward_backward(batch, lo, grads).loss;
    grads.zero();  // a second step reuses the cached primitives and weight copies
    loss = graph.forward_backward(batch, lo, grads).loss;
    std::vector<float> all;
    for (const auto& s : grads.storage) all.insert(all.end(), s.begin(), s.end());
    return all;
  };
  double loss_fast = 0, loss_sim = 0, loss_fp32 = 0;
  const auto fast = run("bf16", false, loss_fast), sim = run("bf16", true, loss_sim), fp32 = run("fp32", false, loss_fp32);
  auto distance = [](const std::vector<float>& a, const std::vector<float>& b) {
    double d = 0, n = 0, na = 0, dot = 0;
    for (size_t i = 0; i < b.size(); ++i) {
      d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
      n += double(b[i]) * b[i];
      na += double(a[i]) * a[i];
      dot += double(a[i]) * b[i];
    }
    return std::pair{std::sqrt(d / n), dot / std::sqrt(n * na)};
  };
  const auto [rel, cosine] = distance(fast, sim);
  const auto [bf16_effect, unused] = distance(sim, fp32);
  std::printf("fast vs simulated BF16: gradient relative difference %.2e (cos %.8f), BF16 vs FP32 %.2e; "
              "loss %.7f vs %.7f (fp32 %.7f)\n",
              rel, cosine, bf16_effect, loss_fast, loss_sim, loss_fp32);
  EXPECT_GT(bf16_effect, 1e-3) << "BF16 rounding was not applied";
  EXPECT_LT(rel, 0.4 * bf16_effect);
  EXPECT_GT(cosine, 0.99999);
  EXPECT_NEAR(loss_fast, loss_sim, 1e-5 * loss_sim);  // measured 3.5e-6 relative
}
