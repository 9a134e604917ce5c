// The SIMD dot products behind kernels/qmatmul.h (x86 only; each compiled for its own target
// with function attributes, so the library runs on CPUs without them). nb: blocks per row.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/quant.h"

namespace whale::simd {

float dot_q8_0_avx2(int64_t nb, const block_q8_0* w, const block_q8_0* x);
float dot_q8_0_avx512(int64_t nb, const block_q8_0* w, const block_q8_0* x);
float dot_q8_0_vnni(int64_t nb, const block_q8_0* w, const block_q8_0* x);

float dot_q4_0_avx2(int64_t nb, const block_q4_0* w, const block_q8_0* x);
float dot_q4_0_avx512(int64_t nb, const block_q4_0* w, const block_q8_0* x);
float dot_q4_0_vnni(int64_t nb, const block_q4_0* w, const block_q8_0* x);

float dot_q4_K_avx2(int64_t nb, const block_q4_K* w, const block_q8_K* x);
float dot_q4_K_vnni(int64_t nb, const block_q4_K* w, const block_q8_K* x);

float dot_q6_K_avx2(int64_t nb, const block_q6_K* w, const block_q8_K* x);
float dot_q6_K_vnni(int64_t nb, const block_q6_K* w, const block_q8_K* x);

// Q8_0 x Q8_0 matrix-matrix product on AVX-512 VNNI (qgemm_x86.cpp). Activations are packed
// per row of nb blocks as nb * 32 signed quants, then nb float scales, then nb int32
// corrections (-128 * the block's quant sum); packed rows must start 64-byte aligned. Each
// output is dot_q8_0_scalar's chain with fmaf (per block: exact integer dot, then
// acc = fma(dot, d_w * d_x, acc)), whatever M.
// y[m * ldy + n] (+)= W row n · X row m for n < rows, m < M; W rows w_stride bytes apart.
inline size_t q8_0_packed_row_bytes(int64_t nb) { return size_t(nb) * (QK8_0 + 8); }
void pack_q8_0(const block_q8_0* x, int64_t nb, uint8_t* out);
// Quantises nb blocks of floats as quantize_row_q8_0 does (same bits) straight into that layout.
void quantize_pack_q8_0(const float* x, int64_t nb, uint8_t* out);
void gemm_q8_0_vnni(int64_t nb, const uint8_t* W, size_t w_stride, int64_t rows, const uint8_t* X, size_t x_stride,
                    int64_t M, float* y, int64_t ldy, bool accumulate);
// Q8_0 weights repacked for these kernels ("x16"): per tile of 16 rows and block, the quants
// (+128) in the VNNI layout and then the 16 fp16 scales, 544 bytes, tile after tile
// (qgemm_x86.cpp). The products from it are the same bits as gemm_q8_0_vnni's on the rows.
constexpr size_t kQ8_0X16BlockBytes = 544;  // per 16 rows and block: 512 bytes of quants, 32 of scales
inline size_t q8_0_x16_bytes(int64_t rows, int64_t nb) {
  return size_t((rows + 15) / 16) * size_t(nb) * kQ8_0X16BlockBytes;
}
// Rows [0, rows) of W (rows w_stride bytes apart) into out (q8_0_x16_bytes(rows, nb) bytes).
void repack_q8_0_x16(int64_t nb, const uint8_t* W, size_t w_stride, int64_t rows, uint8_t* out);
// gemm_q8_0_vnni on repacked weights: P is the first tile of the rows (a row index that is a
// multiple of 16), rows of them from there.
void gemm_q8_0x16_vnni(int64_t nb, const uint8_t* P, int64_t rows, const uint8_t* X, size_t x_stride, int64_t M,
                       float* y, int64_t ldy, bool accumulate);
// From how many activation rows the AMX tiles take over where the CPU has them (default 8, or
// WHALE_QGEMM_AMX_MIN); tests set it to reach both kernels on one machine. Same bits either way.
void set_qgemm_amx_min_rows(int64_t rows);
int64_t qgemm_amx_min_rows();
// How far ahead (bytes) the one-activation-row (decode) kernels prefetch the weights; 0 turns it
// off. Defaults: WHALE_QGEMM_PREFETCH_KB (KiB) for both, else 48 KiB for the rows kernel and
// qgemm_x16_prefetch_default() for the repacked one (0 on AMD, 48 KiB elsewhere). The setter
// sets both, for same-process A/B measurements.
size_t qgemm_x16_prefetch_default();
void set_qgemm_prefetch_bytes(size_t bytes);

}  // namespace whale::simd
