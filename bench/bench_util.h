// Machine ceilings and timing shared by the benchmarks, so every figure is read against the same
// probe.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

namespace whale::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Best-of-5 parallel read of a 1 GiB buffer, in GB/s.
inline double read_bandwidth_gbs() {
  const size_t n = (size_t(1) << 30) / sizeof(float);
  std::vector<float> buf(n, 1.0f);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    auto t = Clock::now();
    double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (size_t i = 0; i < n; i += 16) {
      float s = 0;
      for (size_t j = 0; j < 16; ++j) s += buf[i + j];
      total += s;
    }
    const double dt = seconds_since(t);
    if (total < 0) std::printf("impossible\n");  // keeps the reads from being optimised away
    best = std::max(best, double(n * sizeof(float)) / dt / 1e9);
  }
  return best;
}

}  // namespace whale::bench
