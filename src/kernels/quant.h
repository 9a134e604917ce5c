// ggml's block-quantised tensor formats, bit-exact with ggml-common.h / ggml-quants.c:
// the structs below are the bytes of a GGUF tensor of that type, block after block.
// Scalar reference code only: exact dequantisation and round-to-nearest quantisation.
// Fast (AVX2/AVX-512) dot products are built on these structs in other files.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace whale {

constexpr int64_t QK8_0 = 32;   // values per Q8_0 block
constexpr int64_t QK4_0 = 32;   // values per Q4_0 block
constexpr int64_t QK_K = 256;   // values per K-quant super-block
constexpr int K_SCALE_SIZE = 12;

// fp16 fields are IEEE binary16 bit patterns; convert with f16_to_f32 (core/dtype.h).

// y[i] = d * qs[i]
struct block_q8_0 {
  uint16_t d;         // fp16 scale
  int8_t qs[QK8_0];   // quants
};
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 must match ggml");

// y[j] = d * ((qs[j] & 0xF) - 8), y[j + 16] = d * ((qs[j] >> 4) - 8), j < 16
struct block_q4_0 {
  uint16_t d;              // fp16 scale
  uint8_t qs[QK4_0 / 2];   // nibbles: low nibble = first half, high = second half
};
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 must match ggml");

// 8 sub-blocks of 32 values, each with a 6-bit scale and a 6-bit min packed in scales[12]
// (see q4_K_scale_min): y = d * sc * q - dmin * m, q in 0..15.
struct block_q4_K {
  uint16_t d;                  // fp16 super-block scale for the 6-bit scales
  uint16_t dmin;               // fp16 super-block scale for the 6-bit mins
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qs[QK_K / 2];        // 4-bit quants; each 64 values: 32 low nibbles then 32 high
};
static_assert(sizeof(block_q4_K) == 144, "block_q4_K must match ggml");

// 16 sub-blocks of 16 values with int8 scales: y = d * scales[s] * (q - 32), q in 0..63
// (low 4 bits in ql, high 2 bits in qh).
struct block_q6_K {
  uint8_t ql[QK_K / 2];    // low 4 bits
  uint8_t qh[QK_K / 4];    // high 2 bits
  int8_t scales[QK_K / 16];
  uint16_t d;              // fp16 super-block scale
};
static_assert(sizeof(block_q6_K) == 210, "block_q6_K must match ggml");

// Activation format for K-quant dot products (ggml's block_q8_K): float scale,
// and bsums[i] = sum of qs[16 i .. 16 i + 15] to fold the mins in cheaply.
struct block_q8_K {
  float d;
  int8_t qs[QK_K];
  int16_t bsums[QK_K / 16];
};
static_assert(sizeof(block_q8_K) == 292, "block_q8_K must match ggml");

// Scale and min of sub-block j (0..7) of a Q4_K block (ggml's get_scale_min_k4).
inline void q4_K_scale_min(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *min = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// k is the number of values; it must be a multiple of the block size (asserted).
void dequantize_row_q8_0(const block_q8_0* x, float* y, int64_t k);
void dequantize_row_q4_0(const block_q4_0* x, float* y, int64_t k);
void dequantize_row_q4_K(const block_q4_K* x, float* y, int64_t k);
void dequantize_row_q6_K(const block_q6_K* x, float* y, int64_t k);
void dequantize_row_q8_K(const block_q8_K* x, float* y, int64_t k);

// Reference quantisation (what ggml's quantize_row_*_ref does, without importance weights).
void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t k);
void quantize_row_q4_0(const float* x, block_q4_0* y, int64_t k);
void quantize_row_q4_K(const float* x, block_q4_K* y, int64_t k);
void quantize_row_q6_K(const float* x, block_q6_K* y, int64_t k);
void quantize_row_q8_K(const float* x, block_q8_K* y, int64_t k);

// Block geometry of the quantised formats, by ggml type id (ggml_type enum values).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8, Q4_K = 12, Q6_K = 14, Q8_K = 15, BF16 = 30,
};
int64_t ggml_block_size(GgmlType t);    // values per block (1 for plain floats)
size_t ggml_type_size(GgmlType t);      // bytes per block
// Bytes of a row of n values; throws whale::Error if n is not a multiple of the block size.
size_t ggml_row_size(GgmlType t, int64_t n);
const char* ggml_type_name(GgmlType t);  // "q4_K" etc.
// The block-quantised DType of a ggml type and back (F32/F16/BF16 map to their DType too).
bool ggml_type_of(DType d, GgmlType* t);  // false for F8_E4M3 and the integer types
DType dtype_of(GgmlType t);               // Q8_K has none (throws)
// Dequantise k values of type t starting at the beginning of src (plain floats included).
void dequantize_row(GgmlType t, const void* src, float* y, int64_t k);
// Quantise k floats to type t (all types above except Q8_K's callers may use this too).
void quantize_row(GgmlType t, const float* x, void* dst, int64_t k);

}  // namespace whale
