// Machine ceilings and timing shared by the benchmarks, so every figure is read against the same
// probe.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <omp.h>

namespace whale::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Best-of-5 parallel read of a 1 GiB buffer, in GB/s: the machine's read bandwidth as a kernel
// that streams weights can reach it. Each thread reads its own contiguous slice as 8
// interleaved streams with wide integer loads, independent accumulators and a software prefetch,
// since one stream per core, or a chain of dependent float adds (the first version of this
// probe: 12.3 GB/s here, where these loops read 22-27 GB/s), measures the core's latency, not
// the memory's bandwidth. Compiled for AVX-512, AVX2 and baseline x86-64; the loader picks one.
__attribute__((target_clones("avx512f", "avx2", "default"))) static double read_bandwidth_once(
    const uint64_t* buf, size_t n) {
  constexpr int kStreams = 8, kLanes = 8;
  const auto t = Clock::now();
  uint64_t total = 0, bytes = 0;
#pragma omp parallel reduction(+ : total, bytes)
  {
    const size_t nt = size_t(omp_get_num_threads()), id = size_t(omp_get_thread_num());
    const size_t len = n / nt / kStreams / kLanes * kLanes;  // each stream's length, whole vectors
    const uint64_t* base = buf + n / nt * id;
    uint64_t acc[kStreams][kLanes] = {};
    for (size_t i = 0; i < len; i += kLanes)
      for (int s = 0; s < kStreams; ++s) {
        const uint64_t* p = base + size_t(s) * len + i;
        __builtin_prefetch(p + 64);
#pragma omp simd
        for (int j = 0; j < kLanes; ++j) acc[s][j] += p[j];
      }
    for (int s = 0; s < kStreams; ++s)
      for (int j = 0; j < kLanes; ++j) total += acc[s][j];
    bytes += kStreams * len * sizeof(uint64_t);
  }
  const double dt = seconds_since(t);
  if (total == 0) std::printf("impossible\n");  // keeps the reads from being optimised away
  return double(bytes) / dt / 1e9;
}

inline double read_bandwidth_gbs() {
  const size_t n = (size_t(1) << 30) / sizeof(uint64_t);
  std::vector<uint64_t> buf(n, 1);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) best = std::max(best, read_bandwidth_once(buf.data(), n));
  return best;
}

}  // namespace whale::bench
