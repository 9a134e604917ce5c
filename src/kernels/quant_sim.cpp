#include "kernels/quant_sim.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.h"

namespace whale {

namespace {
inline float fp8_round(float x, float scale) { return fp8_e4m3_to_f32(f32_to_fp8_e4m3(x / scale)) * scale; }
}  // namespace

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
