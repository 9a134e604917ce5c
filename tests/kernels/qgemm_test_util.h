// Helpers shared by the Q8_0 kernel tests: random inputs with outliers, plain Q8_0 rows, and the
// kernels' defined arithmetic written as a scalar loop.
#pragma once
#include <cmath>
#include <vector>

#include "core/dtype.h"
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

}  // namespace whale::testing
