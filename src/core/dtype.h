// Scalar storage types of checkpoints and their exact conversions to float.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace whale {

// Q8_0 .. Q6_K: ggml block-quantised rows (kernels/quant.h) kept as mapped from a GGUF file;
// they have no per-element size (dtype_size is 0): use ggml_row_size.
enum class DType { F32, F16, BF16, F8_E4M3, I64, I32, U8, Q8_0, Q4_0, Q4_K, Q6_K };

const char* dtype_name(DType t);           // safetensors spelling, e.g. "BF16"
bool dtype_from_name(const std::string& name, DType* out);
size_t dtype_size(DType t);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, as PyTorch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// OCP FP8 E4M3 ("e4m3fn"): bias 7, no infinities, S.1111.111 is NaN, max 448.
float fp8_e4m3_to_f32(uint8_t v);
// Round to nearest even with saturation to ±448 (the convention of DeepSeek-V3's kernels).
uint8_t f32_to_fp8_e4m3(float f);

}  // namespace whale
