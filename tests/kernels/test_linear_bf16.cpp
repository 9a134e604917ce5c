// BF16 linear layers (weights as stored in checkpoints) against a float64 reference that widens
// the same BF16 values exactly. Every batch size from one decode row to a prefill block runs,
// so each code path (single rows, blocks of four rows, the SGEMM path) and their remainders
// are covered, with and without accumulation into y.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/ops.h"
#include "model/weights.h"

using namespace whale;

TEST(LinearBf16, EveryBatchSizeMatchesFloat64) {
  const int64_t N = 37, K = 67;  // odd sizes: the SIMD loops' remainders run too
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> w(size_t(N * K));
  for (auto& v : w) v = f32_to_bf16(normal(rng));
  Tensor W;
  W.dtype = DType::BF16;
  W.shape = {N, K};
  W.data = w.data();
  for (int64_t M : {1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 31, 32, 33, 40}) {
    std::vector<float> x(size_t(M * K)), y0(size_t(M * N));
    for (auto& v : x) v = normal(rng);
    for (auto& v : y0) v = normal(rng);
    for (bool accumulate : {false, true}) {
      std::vector<float> y = y0;
      if (accumulate)
        linear_accumulate(x.data(), M, W, y.data());
      else
        linear(x.data(), M, W, y.data());
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double want = accumulate ? y0[size_t(m * N + n)] : 0.0, magnitude = 0;
          for (int64_t k = 0; k < K; ++k) {
            const double p = double(bf16_to_f32(w[size_t(n * K + k)])) * x[size_t(m * K + k)];
            want += p;
            magnitude += std::abs(p);
          }
          // float32 accumulation of K products: a few ulps of the sum of magnitudes.
          ASSERT_NEAR(y[size_t(m * N + n)], want, 1e-5 * (magnitude + 1))
              << "M=" << M << " m=" << m << " n=" << n << " accumulate=" << accumulate;
        }
    }
  }
}
