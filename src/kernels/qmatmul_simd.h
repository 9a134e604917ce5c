// The SIMD dot products behind kernels/qmatmul.h (x86 only; each compiled for its own target
// with function attributes, so the library runs on CPUs without them). nb: blocks per row.
#pragma once
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

}  // namespace whale::simd
