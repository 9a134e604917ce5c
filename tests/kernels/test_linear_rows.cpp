// linear_rows_f32, the F32 product the MoE router runs through: a row's outputs must be the same
// bits whatever the number of rows (an MTP verify pass routes its 2 rows as the 1-row decode
// steps they replace), at any thread count, and right against a float64 reference.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/ops.h"

namespace whale {
namespace {

std::vector<float> normal(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

TEST(LinearRowsF32, MatchesFloat64Reference) {
  for (const auto& [N, K] : {std::pair<int64_t, int64_t>{64, 2048}, {8, 128}, {7, 37}, {160, 7168}}) {
    const int64_t M = 3;
    const auto W = normal(size_t(N * K), 1), x = normal(size_t(M * K), 2);
    std::vector<float> y(size_t(M * N));
    linear_rows_f32(x.data(), M, W.data(), N, K, y.data());
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double want = 0, magnitude = 0;
        for (int64_t k = 0; k < K; ++k) {
          want += double(x[size_t(m * K + k)]) * double(W[size_t(n * K + k)]);
          magnitude += std::fabs(double(x[size_t(m * K + k)]) * double(W[size_t(n * K + k)]));
        }
        // Float sums of K products: error within a few K-scaled ulps of the magnitude.
        EXPECT_NEAR(y[size_t(m * N + n)], want, 4e-7 * magnitude + 1e-6) << "N " << N << " K " << K;
      }
  }
}

TEST(LinearRowsF32, ARowsBitsDoNotDependOnTheBatchOrThreads) {
  // V2-Lite's router (64 experts x 2048) and V3's (256 x 7168): each of 5 rows alone, then all
  // 5 together, on 1 and 2 threads. (Through linear(), SGEMV and SGEMM differ here in most of
  // the outputs.)
  for (const auto& [N, K] : {std::pair<int64_t, int64_t>{64, 2048}, {256, 7168}}) {
    const int64_t M = 5;
    const auto W = normal(size_t(N * K), 3), x = normal(size_t(M * K), 4);
    const int threads = omp_get_max_threads();
    for (int t : {1, 2}) {
      omp_set_num_threads(t);
      std::vector<float> together(static_cast<size_t>(M * N)), alone(static_cast<size_t>(N));
      linear_rows_f32(x.data(), M, W.data(), N, K, together.data());
      for (int64_t m = 0; m < M; ++m) {
        linear_rows_f32(x.data() + m * K, 1, W.data(), N, K, alone.data());
        EXPECT_EQ(std::memcmp(alone.data(), together.data() + m * N, size_t(N) * sizeof(float)), 0)
            << "row " << m << " of " << N << " x " << K << " on " << t << " threads";
      }
    }
    omp_set_num_threads(threads);
  }
}

}  // namespace
}  // namespace whale
