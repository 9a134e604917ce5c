// Quantised dot products and matmuls against the scalar dequantise-then-dot reference
// (kernels/quant.h, an independent implementation of ggml's formats), on every code path this
// CPU supports.
//
// Tolerances. Against the dequantised weights and the *dequantised 8-bit activations* the
// kernels differ only by float rounding: integer block sums are exact, then one float
// multiply-add per block, so |error| <= ~(blocks + 3) * 2^-24 * sum|w_i x_i|; we allow
// 1e-5 * sum|w_i x_i| (K up to 4096: 128 blocks -> 8e-6 worst case, typically far less).
// Against the float activations the 8-bit rounding of x adds at most 1/254 of each block's
// absmax per element: we allow 1/127 * sum_i |w_i| * absmax(block of x_i).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/cpu_features.h"
#include "kernels/qmatmul.h"
#include "io/checkpoint.h"
#include "model/transformer.h"

using namespace whale;

namespace {

std::vector<KernelPath> supported_paths() {
  std::vector<KernelPath> out;
  for (KernelPath p : {KernelPath::Scalar, KernelPath::Avx2, KernelPath::Avx512, KernelPath::Avx512Vnni})
    if (cpu_supports(p)) out.push_back(p);
  return out;
}

std::vector<float> random_values(int64_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = float(rng.normal() * scale);
  // A few outliers, as real weights and activations have.
  for (int64_t i = 0; i < n; i += 97) v[size_t(i)] *= 6.0f;
  return v;
}

std::vector<uint8_t> quantize(GgmlType t, const std::vector<float>& x, int64_t rows, int64_t k) {
  std::vector<uint8_t> q(ggml_row_size(t, k) * size_t(rows));
  for (int64_t r = 0; r < rows; ++r) quantize_row(t, x.data() + r * k, q.data() + size_t(r) * ggml_row_size(t, k), k);
  return q;
}

std::vector<float> dequantize(GgmlType t, const std::vector<uint8_t>& q, int64_t rows, int64_t k) {
  std::vector<float> x(size_t(rows * k));
  for (int64_t r = 0; r < rows; ++r) dequantize_row(t, q.data() + size_t(r) * ggml_row_size(t, k), x.data() + r * k, k);
  return x;
}

float kernel_dot(GgmlType t, int64_t k, const uint8_t* w, const uint8_t* x, KernelPath p) {
  switch (t) {
    case GgmlType::Q8_0: return vec_dot_q8_0_q8_0(k, (const block_q8_0*)w, (const block_q8_0*)x, p);
    case GgmlType::Q4_0: return vec_dot_q4_0_q8_0(k, (const block_q4_0*)w, (const block_q8_0*)x, p);
    case GgmlType::Q4_K: return vec_dot_q4_K_q8_K(k, (const block_q4_K*)w, (const block_q8_K*)x, p);
    default: return vec_dot_q6_K_q8_K(k, (const block_q6_K*)w, (const block_q8_K*)x, p);
  }
}

class QuantDot : public ::testing::TestWithParam<GgmlType> {};

TEST_P(QuantDot, MatchesDequantisedReferenceOnEveryPath) {
  const GgmlType t = GetParam(), at = qmatmul_activation_type(t);
  for (int64_t k : {256, 512, 4096, 1280 + 256}) {  // 1536: odd number of 512-bit block pairs for Q8_0
    const auto w = random_values(k, 11 + uint64_t(k), 0.02);
    const auto x = random_values(k, 99 + uint64_t(k));
    const auto wq = quantize(t, w, 1, k), xq = quantize(at, x, 1, k);
    const auto wd = dequantize(t, wq, 1, k), xd = dequantize(at, xq, 1, k);
    double ref = 0, mag = 0, ref_float = 0, xq_bound = 0;
    const int64_t xb = ggml_block_size(at);
    for (int64_t i = 0; i < k; ++i) {
      ref += double(wd[size_t(i)]) * xd[size_t(i)];
      mag += std::fabs(double(wd[size_t(i)]) * xd[size_t(i)]);
      ref_float += double(wd[size_t(i)]) * x[size_t(i)];
    }
    for (int64_t b = 0; b < k; b += xb) {
      double amax = 0, wsum = 0;
      for (int64_t i = b; i < b + xb; ++i) {
        amax = std::max(amax, double(std::fabs(x[size_t(i)])));
        wsum += std::fabs(wd[size_t(i)]);
      }
      xq_bound += wsum * amax / 127.0;
    }
    for (KernelPath p : supported_paths()) {
      const double got = kernel_dot(t, k, wq.data(), xq.data(), p);
      EXPECT_NEAR(got, ref, 1e-5 * mag) << ggml_type_name(t) << " k=" << k << " path " << kernel_path_name(p);
      EXPECT_NEAR(got, ref_float, xq_bound + 1e-5 * mag) << ggml_type_name(t) << " k=" << k << " path " << kernel_path_name(p);
    }
  }
}

TEST_P(QuantDot, ExtremeBlocksDoNotOverflow) {
  // Largest magnitudes in both operands: the int16 pair sums of maddubs must not saturate.
  const GgmlType t = GetParam(), at = qmatmul_activation_type(t);
  const int64_t k = 512;
  std::vector<float> w(static_cast<size_t>(k)), x(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) {
    w[size_t(i)] = (i % 3 == 0 ? -1.0f : 1.0f) * (i % 32 == 5 ? 1.0f : 0.999f);
    x[size_t(i)] = (i % 3 == 0 ? -1.0f : 1.0f);
  }
  const auto wq = quantize(t, w, 1, k), xq = quantize(at, x, 1, k);
  const auto wd = dequantize(t, wq, 1, k), xd = dequantize(at, xq, 1, k);
  double ref = 0, mag = 0;
  for (int64_t i = 0; i < k; ++i) {
    ref += double(wd[size_t(i)]) * xd[size_t(i)];
    mag += std::fabs(double(wd[size_t(i)]) * xd[size_t(i)]);
  }
  for (KernelPath p : supported_paths())
    EXPECT_NEAR(kernel_dot(t, k, wq.data(), xq.data(), p), ref, 1e-5 * mag) << kernel_path_name(p);
}

TEST_P(QuantDot, MatmulMatchesDotsForAnyRowCount) {
  const GgmlType t = GetParam(), at = qmatmul_activation_type(t);
  const int64_t N = 37, K = 512;  // N not a multiple of the 16-row tile
  const auto w = random_values(N * K, 5, 0.05);
  const auto wq = quantize(t, w, N, K);
  const auto wd = dequantize(t, wq, N, K);
  for (int64_t M : {1, 2, 7}) {
    const auto x = random_values(M * K, 17 + uint64_t(M));
    const auto xd = dequantize(at, quantize(at, x, M, K), M, K);
    for (KernelPath p : supported_paths()) {
      std::vector<float> y(size_t(M * N), 0.5f), y_acc(size_t(M * N), 0.5f);
      qmatmul(t, wq.data(), N, K, x.data(), M, y.data(), false, p);
      qmatmul(t, wq.data(), N, K, x.data(), M, y_acc.data(), true, p);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double ref = 0, mag = 0;
          for (int64_t i = 0; i < K; ++i) {
            ref += double(wd[size_t(n * K + i)]) * xd[size_t(m * K + i)];
            mag += std::fabs(double(wd[size_t(n * K + i)]) * xd[size_t(m * K + i)]);
          }
          ASSERT_NEAR(y[size_t(m * N + n)], ref, 1e-5 * mag) << kernel_path_name(p) << " m=" << m << " n=" << n;
          ASSERT_NEAR(y_acc[size_t(m * N + n)], ref + 0.5, 1e-5 * mag + 1e-6) << kernel_path_name(p);
        }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, QuantDot, ::testing::Values(GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K),
                         [](const auto& info) { return std::string(ggml_type_name(info.param)); });

}  // namespace

TEST(QuantMatmul, RejectsBadShapesAndTypes) {
  std::vector<uint8_t> w(1024);
  std::vector<float> x(100), y(4);
  EXPECT_THROW(qmatmul(GgmlType::Q8_0, w.data(), 1, 40, x.data(), 1, y.data()), Error);  // 40 % 32 != 0
  EXPECT_THROW(qmatmul(GgmlType::F16, w.data(), 1, 32, x.data(), 1, y.data()), Error);
  EXPECT_THROW(qmatmul(GgmlType::Q4_K, w.data(), 1, 128, x.data(), 1, y.data()), Error);  // 128 % 256 != 0
}

TEST(QuantMatmul, KernelPathSelection) {
  EXPECT_TRUE(cpu_supports(KernelPath::Scalar));
  EXPECT_TRUE(cpu_supports(best_kernel_path()));
  EXPECT_EQ(kernel_path_from_name("avx2"), KernelPath::Avx2);
  EXPECT_THROW(kernel_path_from_name("sse9"), Error);
  const KernelPath before = kernel_path();
  set_kernel_path(KernelPath::Scalar);
  EXPECT_EQ(kernel_path(), KernelPath::Scalar);
  set_kernel_path(before);
}

namespace {

// Logits of the last position after `tokens`, optionally with the projections requantised.
std::vector<float> model_logits(const Model& m, const std::vector<int32_t>& tokens, GgmlType* quant) {
  Transformer tf(m);
  if (quant) EXPECT_GT(tf.quantize_weights(*quant), 0u);
  const ModelConfig& c = m.config;
  KVCache cache(c, int64_t(tokens.size()));
  std::vector<float> hidden(tokens.size() * size_t(c.hidden_size)), out(size_t(c.vocab_size));
  // Prefill all but the last token, then one decode step: both the matmul and matvec paths.
  const int64_t n = int64_t(tokens.size());
  tf.forward(tokens.data(), {SeqSpan{&cache, 0, n - 1, 0}}, hidden.data());
  tf.forward(tokens.data() + n - 1, {SeqSpan{&cache, 0, 1, n - 1}}, hidden.data());
  tf.logits(hidden.data(), {0}, out.data());
  return out;
}

}  // namespace

TEST(QuantisedModel, RequantisedForwardMatchesDequantisedWeights) {
  // Reference: the same model with every requantised projection replaced in place by its
  // dequantised values, run in float. The quantised forward then differs only by the 8-bit
  // rounding of the activations (~0.4% per value, growing through 3 layers + MTP-free head):
  // bound 3% of the largest logit. The plain float model must differ more than that for Q4_0,
  // so the test sees that the kernels ran on quantised weights.
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = 4;
  init.std = 0.05;
  const std::vector<int32_t> tokens{5, 9, 300, 17, 2, 88, 41};
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0}) {
    auto m = init_model(c, init);
    const std::vector<float> plain = model_logits(*m, tokens, nullptr);
    GgmlType t = type;
    const std::vector<float> got = model_logits(*m, tokens, &t);
    visit_weights(c, m->weights, [&](Tensor& w, const TensorSpec& spec) {
      const bool projection = spec.linear && spec.name.find("kv_b_proj") == std::string::npos &&
                              spec.name.find("mlp.gate.weight") == std::string::npos;
      if (!projection || w.shape.size() != 2 || w.cols() % ggml_block_size(type) != 0) return;
      std::vector<uint8_t> row(ggml_row_size(type, w.cols()));
      for (int64_t r = 0; r < w.rows(); ++r) {
        quantize_row(type, w.f32() + r * w.cols(), row.data(), w.cols());
        dequantize_row(type, row.data(), w.f32() + r * w.cols(), w.cols());
      }
    });
    const std::vector<float> ref = model_logits(*m, tokens, nullptr);
    double scale = 0, worst = 0, plain_diff = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      scale = std::max(scale, double(std::fabs(ref[i])));
      worst = std::max(worst, double(std::fabs(got[i] - ref[i])));
      plain_diff = std::max(plain_diff, double(std::fabs(plain[i] - ref[i])));
    }
    EXPECT_LT(worst, 0.03 * scale) << ggml_type_name(type);
    if (type == GgmlType::Q4_0) EXPECT_GT(plain_diff, 0.03 * scale);
  }
  auto m = init_model(c, init);
  Transformer tf(*m);
  EXPECT_THROW(tf.quantize_weights(GgmlType::F16), Error);
  EXPECT_EQ(qmatmul_type_from_name("Q4_K", "--quantize"), GgmlType::Q4_K);
  EXPECT_THROW(qmatmul_type_from_name("q5_1", "--quantize"), Error);
}
