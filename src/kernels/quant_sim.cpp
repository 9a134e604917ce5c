#include "kernels/quant_sim.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/dtype.h"

namespace whale {

// E4M3 rounding of x / scale, back in x's units: the same value as
// fp8_e4m3_to_f32(f32_to_fp8_e4m3(x / scale)) * scale (the test checks every case), but
// branch-free float arithmetic the compiler vectorises; the codec's frexp/ldexp made FP8
// training several times slower than FP32.
float fp8_round(float x, float scale) {
  const float v = x / scale;
  const float a = std::min(std::fabs(v), 448.0f);  // saturate, as the codec does
  // Normal range: keep 3 mantissa bits, round to nearest even (a carry moves into the exponent).
  uint32_t bits;
  std::memcpy(&bits, &a, 4);
  bits = (bits + 0x7ffffu + ((bits >> 20) & 1u)) & 0xfff00000u;
  float normal;
  std::memcpy(&normal, &bits, 4);
  // Below 2^-6: subnormals with quantum 2^-9; adding 2^23 rounds to an integer (nearest even).
  const float sub = ((a * 512.0f + 8388608.0f) - 8388608.0f) * (1.0f / 512.0f);
  return std::copysign(a < 0.015625f ? sub : normal, v) * scale;
}

void fake_quant_fp8_tiles(const float* in, float* out, int64_t rows, int64_t cols, int64_t tile) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c0 = 0; c0 < cols; c0 += tile) {
      const int64_t c1 = std::min(cols, c0 + tile);
      float amax = 0.0f;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(in[r * cols + c]));
      const float scale = amax > 0 ? amax / 448.0f : 1.0f;
      for (int64_t c = c0; c < c1; ++c) out[r * cols + c] = fp8_round(in[r * cols + c], scale);
    }
  }
}

void fake_quant_fp8_column_tiles(const float* in, float* out, int64_t rows, int64_t cols, int64_t tile) {
  const int64_t groups = (rows + tile - 1) / tile;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t r0 = g * tile, r1 = std::min(rows, r0 + tile);
    std::vector<float> amax(size_t(cols), 0.0f);  // row-wise sweep: contiguous reads
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < cols; ++c) amax[size_t(c)] = std::max(amax[size_t(c)], std::fabs(in[r * cols + c]));
    for (int64_t c = 0; c < cols; ++c) amax[size_t(c)] = amax[size_t(c)] > 0 ? amax[size_t(c)] / 448.0f : 1.0f;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = fp8_round(in[r * cols + c], amax[size_t(c)]);
  }
}

void fake_quant_fp8_blocks(const float* in, float* out, int64_t rows, int64_t cols, int64_t br, int64_t bc) {
  const int64_t nbr = (rows + br - 1) / br, nbc = (cols + bc - 1) / bc;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t bi = 0; bi < nbr; ++bi) {
    for (int64_t bj = 0; bj < nbc; ++bj) {
      const int64_t r1 = std::min(rows, (bi + 1) * br), c1 = std::min(cols, (bj + 1) * bc);
      float amax = 0.0f;
      for (int64_t r = bi * br; r < r1; ++r)
        for (int64_t c = bj * bc; c < c1; ++c) amax = std::max(amax, std::fabs(in[r * cols + c]));
      const float scale = amax > 0 ? amax / 448.0f : 1.0f;
      for (int64_t r = bi * br; r < r1; ++r)
        for (int64_t c = bj * bc; c < c1; ++c) out[r * cols + c] = fp8_round(in[r * cols + c], scale);
    }
  }
}

}  // namespace whale
