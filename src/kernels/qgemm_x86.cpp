// Q8_0 weights x Q8_0 activations as a register-blocked matrix-matrix product with AVX-512
// VNNI (declared in kernels/qmatmul_simd.h). vpdpbusd multiplies unsigned by signed bytes, so
// the activations are stored offset by +128 (0..255) and each lane's accumulator starts at
// -128 * (sum of its four weight bytes), which one more vpdpbusd per weight register gives:
// the sign trick of the matrix-vector kernels (abs, mask, negate per weight and activation
// pair) is gone, and every weight register is reused across C activation rows and every
// activation register across R weight rows. Each output is the same chain of operations
// whatever the tile it falls in (per 64-value pair of blocks: integer dot, convert, times
// w_scale * x_scale, added into 16 float lanes; one fixed reduction at the end), so a row's
// result does not depend on M, R or C: prefill, verify and decode rows agree bit for bit.
#include <immintrin.h>

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstring>

#include "core/dtype.h"
#include "kernels/qmatmul_simd.h"

#define WHALE_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

namespace whale::simd {

namespace {

// The two blocks i and i + 1 of a weight row as one register (the second zero past the row's
// end: masked loads never touch memory outside the mask).
WHALE_VNNI inline __m512i weight_pair(const block_q8_0* w, int64_t i, int64_t nb) {
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i].qs));
  const __m256i hi = i + 1 < nb ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i + 1].qs)) : _mm256_setzero_si256();
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

WHALE_VNNI inline __m512 weight_scales(const block_q8_0* w, int64_t i, int64_t nb) {
  const float s0 = _cvtsh_ss(w[i].d), s1 = i + 1 < nb ? _cvtsh_ss(w[i + 1].d) : 0.0f;
  return _mm512_castpd_ps(
      _mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(s0)), _mm256_castps_pd(_mm256_set1_ps(s1)), 1));
}

// R weight rows x C activation rows over all block pairs.
template <int R, int C>
WHALE_VNNI void tile(int64_t nb, const uint8_t* W, size_t w_stride, const uint8_t* X, size_t x_stride, float* y,
                     int64_t ldy, bool accumulate) {
  __m512 acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  const __m512i offset = _mm512_set1_epi8(char(0x80));
  const int64_t pairs = (nb + 1) / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    __m512i w[R], neg[R];
    __m512 ws[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const block_q8_0* wr = reinterpret_cast<const block_q8_0*>(W + size_t(r) * w_stride);
      w[r] = weight_pair(wr, 2 * p, nb);
      ws[r] = weight_scales(wr, 2 * p, nb);
      neg[r] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, w[r]));
    }
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const uint8_t* xp = X + size_t(c) * x_stride + size_t(p) * kQ8PairBytes;
      const __m512i xu = _mm512_load_si512(xp);
      const __m512 xs = _mm512_load_ps(reinterpret_cast<const float*>(xp + 64));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512i dot = _mm512_dpbusd_epi32(neg[r], xu, w[r]);
        acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(ws[r], xs), acc[r][c]);
      }
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float v = _mm512_reduce_add_ps(acc[r][c]);
      float& out = y[c * ldy + r];
      out = accumulate ? out + v : v;
    }
}

using TileFn = void (*)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, int64_t, bool);

template <int R>
constexpr TileFn tile_for(int c) {
  switch (c) {
    case 1: return tile<R, 1>;
    case 2: return tile<R, 2>;
    case 3: return tile<R, 3>;
    case 4: return tile<R, 4>;
    case 5: return tile<R, 5>;
    case 6: return tile<R, 6>;
    case 7: return tile<R, 7>;
    default: return tile<R, 8>;
  }
}

}  // namespace

WHALE_VNNI void pack_q8_0_pairs(const block_q8_0* x, int64_t nb, uint8_t* out) {
  const __m256i offset = _mm256_set1_epi8(char(0x80));
  for (int64_t p = 0; p < (nb + 1) / 2; ++p) {
    uint8_t* o = out + size_t(p) * kQ8PairBytes;
    float* s = reinterpret_cast<float*>(o + 64);
    for (int64_t h = 0; h < 2; ++h) {
      const int64_t i = 2 * p + h;
      // Past the row's end: value 0 (stored 128) with scale 0.
      const __m256i q = i < nb ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs)) : _mm256_setzero_si256();
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 32 * h), _mm256_xor_si256(q, offset));
      const float d = i < nb ? _cvtsh_ss(x[i].d) : 0.0f;
      for (int l = 0; l < 8; ++l) s[8 * h + l] = d;
    }
  }
}

WHALE_VNNI void quantize_pack_q8_0(const float* x, int64_t nb, uint8_t* out) {
  const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
  const __m128i offset = _mm_set1_epi8(char(0x80));
  for (int64_t p = 0; p < (nb + 1) / 2; ++p) {
    uint8_t* o = out + size_t(p) * kQ8PairBytes;
    float* s = reinterpret_cast<float*>(o + 64);
    for (int64_t h = 0; h < 2; ++h) {
      const int64_t i = 2 * p + h;
      if (i >= nb) {  // past the row's end: value 0 (stored 128) with scale 0
        std::memset(o + 32 * h, 0x80, 32);
        for (int l = 0; l < 8; ++l) s[8 * h + l] = 0.0f;
        continue;
      }
      const __m512 v[2] = {_mm512_loadu_ps(x + 32 * i), _mm512_loadu_ps(x + 32 * i + 16)};
      // quantize_row_q8_0's arithmetic: amax / 127 rounded to fp16, q = roundf(x * (1 / d)).
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
      const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      for (int k = 0; k < 2; ++k) {
        // roundf (half away from zero), exactly: trunc, then one step away from zero when the
        // (exact) remainder is at least one half.
        const __m512 m = _mm512_mul_ps(v[k], _mm512_set1_ps(id));
        const __m512 t = _mm512_roundscale_ps(m, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(m, t)), half, _CMP_GE_OQ);
        const __m512 step = _mm512_or_ps(one, _mm512_and_ps(m, _mm512_set1_ps(-0.0f)));  // +-1 with m's sign
        const __m512 r = _mm512_mask_add_ps(t, up, t, step);
        const __m128i q = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(r));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 32 * h + 16 * k), _mm_xor_si128(q, offset));
      }
      const float scale = _cvtsh_ss(f32_to_f16(d));
      for (int l = 0; l < 8; ++l) s[8 * h + l] = scale;
    }
  }
}

WHALE_VNNI void gemm_q8_0_vnni(int64_t nb, const uint8_t* W, size_t w_stride, int64_t rows, const uint8_t* X,
                               size_t x_stride, int64_t M, float* y, int64_t ldy, bool accumulate) {
  // Few activation rows (decode, verify): four weight rows per tile for independent chains;
  // more: two weight rows against up to eight activation rows (R * C accumulators + R weight,
  // R correction and R scale registers fit the 32 zmm registers).
  if (M <= 2) {
    int64_t n = 0;
    const TileFn t4 = M == 1 ? tile<4, 1> : tile<4, 2>, t1 = M == 1 ? tile<1, 1> : tile<1, 2>;
    for (; n + 4 <= rows; n += 4) t4(nb, W + size_t(n) * w_stride, w_stride, X, x_stride, y + n, ldy, accumulate);
    for (; n < rows; ++n) t1(nb, W + size_t(n) * w_stride, w_stride, X, x_stride, y + n, ldy, accumulate);
    return;
  }
  for (int64_t m = 0; m < M; m += 8) {
    const int c = int(std::min<int64_t>(8, M - m));
    const TileFn t2 = tile_for<2>(c), t1 = tile_for<1>(c);
    const uint8_t* xm = X + size_t(m) * x_stride;
    float* ym = y + m * ldy;
    int64_t n = 0;
    for (; n + 2 <= rows; n += 2) t2(nb, W + size_t(n) * w_stride, w_stride, xm, x_stride, ym + n, ldy, accumulate);
    for (; n < rows; ++n) t1(nb, W + size_t(n) * w_stride, w_stride, xm, x_stride, ym + n, ldy, accumulate);
  }
}

}  // namespace whale::simd
