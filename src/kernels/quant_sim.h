// FP8 (E4M3) quantise-then-dequantise, as DeepSeek-V3's fine-grained scaling does it
// (paper section 3.3.2): each 1 x tile group of a row, or each br x bc block of a weight,
// gets its own scale amax / 448, so one outlier only coarsens its own group.
#pragma once
#include <cstdint>

namespace whale {

void fake_quant_fp8_tiles(const float* in, float* out, int64_t rows, int64_t cols, int64_t tile);
void fake_quant_fp8_blocks(const float* in, float* out, int64_t rows, int64_t cols, int64_t br, int64_t bc);

}  // namespace whale
