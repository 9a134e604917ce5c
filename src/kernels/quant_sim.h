// FP8 (E4M3) quantise-then-dequantise, as DeepSeek-V3's fine-grained scaling does it
// (paper section 3.3.2): each 1 x tile group of a row, or each br x bc block of a weight,
// gets its own scale amax / 448, so one outlier only coarsens its own group.
#pragma once
#include <cstdint>

namespace whale {

// x rounded to the E4M3 grid scaled by `scale` (x / scale rounded, saturated at 448, times scale).
float fp8_round(float x, float scale);

// in, out: row-major [rows, cols]; out may equal in.
// 1 x tile groups along each row (activations and gradients entering Fprop / Dgrad: per token,
// per `tile` channels).
void fake_quant_fp8_tiles(const float* in, float* out, int64_t rows, int64_t cols, int64_t tile);
// tile x 1 groups down each column (the operands of Wgrad, whose contraction runs over tokens:
// V3 section 3.5.2 re-quantises the stored 1x128 activations into 128x1 tiles for it).
void fake_quant_fp8_column_tiles(const float* in, float* out, int64_t rows, int64_t cols, int64_t tile);
// br x bc blocks (weights).
void fake_quant_fp8_blocks(const float* in, float* out, int64_t rows, int64_t cols, int64_t br, int64_t bc);

}  // namespace whale
