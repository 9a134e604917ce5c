// Quantised matvec / matmul benchmark: for each weight format and each code path the CPU
// supports, decode-shaped products (one activation row: bandwidth-bound) as GB/s of weights
// read and as a fraction of the read bandwidth measured in the same run, and prefill-shaped
// products (64 rows) as GFLOP/s beside OpenBLAS SGEMM's.
//   bench_qmatmul [--rows 65536] [--cols 2048] [--batch 64]
#include <cblas.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/cpu_features.h"
#include "kernels/qmatmul.h"

#include "bench_util.h"

using namespace whale;
using bench::Clock;
using bench::read_bandwidth_gbs;
using bench::seconds_since;

template <class F>
static double best_seconds(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t = Clock::now();
    f();
    best = std::min(best, seconds_since(t));
  }
  return best;
}

int main(int argc, char** argv) {
  CLI::App app{"whale quantised matmul benchmark"};
  int64_t N = 65536, K = 2048, batch = 64;
  app.add_option("--rows", N, "Weight rows (large enough to defeat the caches)")->capture_default_str();
  app.add_option("--cols", K, "Weight columns (V2-Lite's hidden size by default)")->capture_default_str();
  app.add_option("--batch", batch, "Activation rows of the prefill-shaped product")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    std::printf("threads: %d, best kernel path: %s\n", omp_get_max_threads(), kernel_path_name(best_kernel_path()));
    const double bw = read_bandwidth_gbs();
    std::printf("machine: read bandwidth %.1f GB/s (1 GiB, best of 5)\n", bw);
    Rng rng(1);
    const int64_t chunk = std::min<int64_t>(N, 1024);  // quantise a chunk, replicate it (speed)
    std::vector<float> w(size_t(chunk * K)), x(size_t(batch * K)), y(size_t(batch * N));
    for (auto& v : w) v = float(rng.normal() * 0.02);
    for (auto& v : x) v = float(rng.normal());
    {
      std::vector<float> wf(size_t(N) * size_t(K));
      for (int64_t r = 0; r < N; ++r) std::memcpy(wf.data() + r * K, w.data() + (r % chunk) * K, size_t(K) * 4);
      const double t1 = best_seconds(5, [&] {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, int(N), int(K), 1.0f, wf.data(), int(K), x.data(), 1, 0.0f, y.data(), 1);
      });
      const double tb = best_seconds(3, [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(batch), int(N), int(K), 1.0f, x.data(), int(K),
                    wf.data(), int(K), 0.0f, y.data(), int(N));
      });
      std::printf("%-5s %-7s matvec %7.2f ms  %6.1f GB/s (%5.1f%% of read bw) | %lld rows: %7.1f GFLOP/s\n", "f32",
                  "sgemv", t1 * 1e3, double(N * K * 4) / t1 / 1e9, 100.0 * double(N * K * 4) / t1 / 1e9 / bw,
                  (long long)batch, 2.0 * double(batch * N * K) / tb / 1e9);
    }
    for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
      const size_t row = ggml_row_size(t, K);
      std::vector<uint8_t> q(row * size_t(N));
      for (int64_t r = 0; r < chunk; ++r) quantize_row(t, w.data() + r * K, q.data() + size_t(r) * row, K);
      for (int64_t r = chunk; r < N; ++r) std::memcpy(q.data() + size_t(r) * row, q.data() + size_t(r % chunk) * row, row);
      const double bytes = double(row) * double(N);
      for (KernelPath p : {KernelPath::Scalar, KernelPath::Avx2, KernelPath::Avx512, KernelPath::Avx512Vnni}) {
        if (!cpu_supports(p)) continue;
        const double t1 = best_seconds(5, [&] { qmatmul(t, q.data(), N, K, x.data(), 1, y.data(), false, p); });
        const double tb = best_seconds(p == KernelPath::Scalar ? 1 : 3,
                                       [&] { qmatmul(t, q.data(), N, K, x.data(), batch, y.data(), false, p); });
        std::printf("%-5s %-7s matvec %7.2f ms  %6.1f GB/s (%5.1f%% of read bw) | %lld rows: %7.1f GFLOP/s\n",
                    ggml_type_name(t), kernel_path_name(p), t1 * 1e3, bytes / t1 / 1e9, 100.0 * bytes / t1 / 1e9 / bw,
                    (long long)batch, 2.0 * double(batch * N * K) / tb / 1e9);
      }
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_qmatmul: %s\n", e.what());
    return 1;
  }
  return 0;
}
