// BF16 linear layers (kernels/linear_bf16.h), every path this CPU has, against a float64
// reference that widens the same BF16 values exactly (and, for the amx and avx512bf16 paths,
// rounds the activations to BF16 first, as those paths do). Every batch size from one decode row
// to past AMX's four groups of 16 runs, with odd N (AMX blocks of 16 plus a tail of rows for the
// vdpbf16ps kernel) and K not a multiple of 32 (masked / zero-padded tails), with and without
// accumulation. Then the property batched serving relies on: in the amx and avx512bf16 paths a
// row's result is bit-identical whatever else is in the batch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/linear_bf16.h"
#include "kernels/ops.h"
#include "model/weights.h"

using namespace whale;

namespace {

std::vector<Bf16Path> supported_paths() {
  std::vector<Bf16Path> out;
  for (Bf16Path p : {Bf16Path::Widen, Bf16Path::Avx512Bf16, Bf16Path::Amx})
    if (cpu_supports(p)) out.push_back(p);
  return out;
}

// Restores the process-wide path after a test forces one.
struct PathGuard {
  Bf16Path before = bf16_path();
  ~PathGuard() { set_bf16_path(before); }
};

struct Problem {
  int64_t N, K;
  std::vector<uint16_t> w;
  Tensor W;
  Problem(int64_t n, int64_t k, uint32_t seed) : N(n), K(k), w(size_t(n * k)) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& v : w) v = f32_to_bf16(normal(rng));
    W.dtype = DType::BF16;
    W.shape = {N, K};
    W.data = w.data();
  }
};

std::vector<float> random_vector(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

}  // namespace

TEST(LinearBf16, EveryPathAndBatchSizeMatchesFloat64) {
  PathGuard guard;
  for (Bf16Path path : supported_paths()) {
    set_bf16_path(path);
    const bool rounds = path != Bf16Path::Widen;
    for (auto [N, K] : {std::pair<int64_t, int64_t>{37, 67}, {53, 96}, {16, 31}}) {
      Problem p(N, K, 7);
      std::mt19937 rng(11);
      for (int64_t M : {1, 2, 3, 4, 5, 7, 8, 9, 13, 15, 16, 17, 31, 32, 33, 40, 64, 65, 70}) {
        const std::vector<float> x = random_vector(size_t(M * K), rng), y0 = random_vector(size_t(M * N), rng);
        for (bool accumulate : {false, true}) {
          std::vector<float> y = y0;
          if (accumulate)
            linear_accumulate(x.data(), M, p.W, y.data());
          else
            linear(x.data(), M, p.W, y.data());
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
              double want = accumulate ? y0[size_t(m * N + n)] : 0.0, magnitude = 0;
              for (int64_t k = 0; k < K; ++k) {
                const float xv = x[size_t(m * K + k)];
                const double prod = double(bf16_to_f32(p.w[size_t(n * K + k)])) *
                                    (rounds ? double(bf16_to_f32(f32_to_bf16(xv))) : double(xv));
                want += prod;
                magnitude += std::abs(prod);
              }
              // float32 accumulation of K <= 96 exact products: a few ulps of the sum of
              // magnitudes (1e-5 is ~80 ulps; a wrong element or a dropped tail is off by O(1)).
              ASSERT_NEAR(y[size_t(m * N + n)], want, 1e-5 * (magnitude + std::abs(want) + 1))
                  << bf16_path_name(path) << " N=" << N << " K=" << K << " M=" << M << " m=" << m << " n=" << n
                  << " accumulate=" << accumulate;
            }
        }
      }
    }
  }
}

TEST(LinearBf16, RoundedPathsDoNotDependOnTheBatch) {
  PathGuard guard;
  Problem p(53, 75, 3);
  std::mt19937 rng(5);
  const int64_t rows = 70;
  const std::vector<float> x = random_vector(size_t(rows * p.K), rng);
  int tested = 0;
  for (Bf16Path path : supported_paths()) {
    if (path == Bf16Path::Widen) continue;  // SGEMM beyond 32 rows: batch-dependent by design
    set_bf16_path(path);
    ++tested;
    std::vector<float> alone(size_t(rows * p.N));
    for (int64_t m = 0; m < rows; ++m) linear(x.data() + m * p.K, 1, p.W, alone.data() + m * p.N);
    // The same rows inside batches of every size and offset.
    for (int64_t M : {2, 4, 5, 16, 17, 33, 64, 70}) {
      for (int64_t start : {int64_t(0), rows - M}) {
        std::vector<float> y(size_t(M * p.N));
        linear(x.data() + start * p.K, M, p.W, y.data());
        EXPECT_EQ(0, std::memcmp(y.data(), alone.data() + start * p.N, y.size() * sizeof(float)))
            << bf16_path_name(path) << " M=" << M << " start=" << start;
      }
    }
    // Serial ranges (as the MoE layer runs them) agree with the parallel call bit for bit.
    Bf16Activations a;
    a.pack(x.data(), rows, p.K);
    std::vector<float> y(size_t(rows * p.N), -1.0f);
    const int64_t block = linear_bf16_block_rows();
    for (int64_t n = 0; n < p.N; n += 2 * block) linear_bf16_range(a, p.w.data(), n, std::min(p.N, n + 2 * block), y.data(), p.N, false);
    EXPECT_EQ(0, std::memcmp(y.data(), alone.data(), y.size() * sizeof(float))) << bf16_path_name(path);
  }
  if (tested == 0) GTEST_SKIP() << "this CPU has neither AVX512-BF16 nor AMX";
}

TEST(LinearBf16, NonFiniteWeightsPastTheRowDoNotLeakIn) {
  // K % 32 != 0: the AMX path must not read the next row's (here NaN) weights into the tail.
  PathGuard guard;
  const int64_t N = 32, K = 40;
  std::vector<uint16_t> w(size_t(N * K) + 64, f32_to_bf16(NAN));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) w[size_t(n * K + k)] = f32_to_bf16(float((n + k) % 5) - 2.0f);
  Tensor W{DType::BF16, {N, K}, w.data()};
  std::vector<float> x(static_cast<size_t>(K), 1.0f), y(static_cast<size_t>(N));
  for (Bf16Path path : supported_paths()) {
    set_bf16_path(path);
    linear(x.data(), 1, W, y.data());
    for (int64_t n = 0; n < N; ++n) {
      double want = 0;
      for (int64_t k = 0; k < K; ++k) want += double((n + k) % 5) - 2.0;
      EXPECT_EQ(y[size_t(n)], float(want)) << bf16_path_name(path) << " n=" << n;
    }
  }
}
