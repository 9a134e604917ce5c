// Helpers shared by the Q8_0 kernel tests: random inputs with outliers, plain Q8_0 rows, and the
// kernels' defined arithmetic written as a scalar loop.
#pragma once
#include <omp.h>

#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "kernels/qmatmul.h"
#include "kernels/quant.h"
#include "../model/model_test_util.h"

namespace whale::testing {

// n standard-normal values, every 61st scaled by 8 (outliers that set a block's scale).
inline std::vector<float> values_with_outliers(int64_t n, uint64_t seed) {
  std::vector<float> v = random_values(n, seed);
  for (int64_t i = 0; i < n; i += 61) v[size_t(i)] *= 8.0f;
  return v;
}

inline std::vector<block_q8_0> quantize_q8_0(const std::vector<float>& x, int64_t rows, int64_t k) {
  std::vector<block_q8_0> q(size_t(rows * k / QK8_0));
  for (int64_t r = 0; r < rows; ++r) quantize_row_q8_0(x.data() + r * k, q.data() + r * (k / QK8_0), k);
  return q;
}

// Per block in order, the exact integer dot, then acc = fmaf(dot, d_w * d_x, acc).
inline float fma_chain(const block_q8_0* w, const block_q8_0* x, int64_t nb) {
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t s = 0;
    for (int j = 0; j < QK8_0; ++j) s += int32_t(w[b].qs[j]) * int32_t(x[b].qs[j]);
    acc = std::fmaf(float(s), f16_to_f32(w[b].d) * f16_to_f32(x[b].d), acc);
  }
  return acc;
}

// Runs f(reference) once with the static split on one thread, then check(split, threads) under
// each of seven qmatvec_batch work splits and 1-4 threads; restores the split and thread count.
// The splits: all static, the default, one-unit chunks, odd shares and chunk sizes, all dynamic.
template <class Reference, class Check>
void for_each_work_split(Reference reference, Check check) {
  const QmatvecSplit saved = qmatvec_split();
  const int threads = omp_get_max_threads();
  set_qmatvec_split({100, 1});
  omp_set_num_threads(1);
  reference();
  for (const QmatvecSplit& sp : {QmatvecSplit{100, 1}, {75, 64}, {75, 1}, {50, 7}, {0, 1}, {0, 5000}, {90, 3}})
    for (int nt : {1, 2, 3, 4}) {
      set_qmatvec_split(sp);
      omp_set_num_threads(nt);
      check(sp, nt);
    }
  set_qmatvec_split(saved);
  omp_set_num_threads(threads);
}

}  // namespace whale::testing
