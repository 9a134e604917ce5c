// x86 SIMD dot products of quantised weights with 8-bit activations (declared in
// kernels/qmatmul_simd.h). Signed x signed byte products use ggml's trick: maddubs takes an
// unsigned first operand, so multiply |w| by sign(w) * x. VNNI's vpdpbusd does the same u8 x s8
// multiply-add into int32 in one instruction. Scales are applied once per (sub-)block.
#include <immintrin.h>

// GCC 12's 256->512-bit casts start from _mm512_undefined_*, which -Wuninitialized reports
// although the upper half is always overwritten (inserti64x4 / insertf64x4).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstring>

#include "kernels/qmatmul_simd.h"

#define WHALE_AVX2 __attribute__((target("avx2,fma,f16c")))
#define WHALE_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#define WHALE_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

namespace whale::simd {

namespace {

WHALE_AVX2 inline float fp16(uint16_t h) { return _cvtsh_ss(h); }

WHALE_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Eight int32 sums of four products each: a (signed) · b (signed), 32 bytes.
WHALE_AVX2 inline __m256i dot_i8(__m256i a, __m256i b) {
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

// Two blocks' worth (64 bytes) of a (signed) · b (signed): 16 int32 sums; lanes 0-7 are the
// first 32 bytes.
WHALE_AVX512 inline __m512i dot_i8_512(__m512i a, __m512i b) {
  const __mmask64 neg = _mm512_movepi8_mask(a);
  const __m512i abs_a = _mm512_abs_epi8(a);
  const __m512i b_signed = _mm512_mask_sub_epi8(b, neg, _mm512_setzero_si512(), b);
  return _mm512_madd_epi16(_mm512_maddubs_epi16(abs_a, b_signed), _mm512_set1_epi16(1));
}

WHALE_VNNI inline __m512i dot_i8_vnni(__m512i a, __m512i b) {
  const __mmask64 neg = _mm512_movepi8_mask(a);
  const __m512i abs_a = _mm512_abs_epi8(a);
  const __m512i b_signed = _mm512_mask_sub_epi8(b, neg, _mm512_setzero_si512(), b);
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), abs_a, b_signed);
}

// Scale vector: lanes 0-7 = s0, lanes 8-15 = s1.
WHALE_AVX512 inline __m512 two_scales(float s0, float s1) {
  return _mm512_castpd_ps(
      _mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(s0)), _mm256_castps_pd(_mm256_set1_ps(s1)), 1));
}

WHALE_AVX512 inline __m512i join(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// Q4_0's 32 values of one block as signed bytes in order: low nibbles (values 0-15), then high.
WHALE_AVX2 inline __m256i q4_0_values(const uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
  return _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
}

WHALE_AVX2 inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

}  // namespace

// ---- Q8_0 x Q8_0 ----

WHALE_AVX2 float dot_q8_0_avx2(int64_t nb, const block_q8_0* w, const block_q8_0* x) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i p = dot_i8(load32(w[i].qs), load32(x[i].qs));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16(w[i].d) * fp16(x[i].d)), _mm256_cvtepi32_ps(p), acc);
  }
  return hsum(acc);
}

WHALE_AVX512 float dot_q8_0_avx512(int64_t nb, const block_q8_0* w, const block_q8_0* x) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const __m512i p = dot_i8_512(join(load32(w[i].qs), load32(w[i + 1].qs)), join(load32(x[i].qs), load32(x[i + 1].qs)));
    const __m512 d = two_scales(fp16(w[i].d) * fp16(x[i].d), fp16(w[i + 1].d) * fp16(x[i + 1].d));
    acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  if (i < nb) sum += dot_q8_0_avx2(nb - i, w + i, x + i);
  return sum;
}

WHALE_VNNI float dot_q8_0_vnni(int64_t nb, const block_q8_0* w, const block_q8_0* x) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const __m512i p = dot_i8_vnni(join(load32(w[i].qs), load32(w[i + 1].qs)), join(load32(x[i].qs), load32(x[i + 1].qs)));
    const __m512 d = two_scales(fp16(w[i].d) * fp16(x[i].d), fp16(w[i + 1].d) * fp16(x[i + 1].d));
    acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  if (i < nb) sum += dot_q8_0_avx2(nb - i, w + i, x + i);
  return sum;
}

// ---- Q4_0 x Q8_0 ----

WHALE_AVX2 float dot_q4_0_avx2(int64_t nb, const block_q4_0* w, const block_q8_0* x) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i p = dot_i8(q4_0_values(w[i].qs), load32(x[i].qs));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16(w[i].d) * fp16(x[i].d)), _mm256_cvtepi32_ps(p), acc);
  }
  return hsum(acc);
}

WHALE_AVX512 float dot_q4_0_avx512(int64_t nb, const block_q4_0* w, const block_q8_0* x) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const __m512i p =
        dot_i8_512(join(q4_0_values(w[i].qs), q4_0_values(w[i + 1].qs)), join(load32(x[i].qs), load32(x[i + 1].qs)));
    const __m512 d = two_scales(fp16(w[i].d) * fp16(x[i].d), fp16(w[i + 1].d) * fp16(x[i + 1].d));
    acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  if (i < nb) sum += dot_q4_0_avx2(nb - i, w + i, x + i);
  return sum;
}

WHALE_VNNI float dot_q4_0_vnni(int64_t nb, const block_q4_0* w, const block_q8_0* x) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const __m512i p =
        dot_i8_vnni(join(q4_0_values(w[i].qs), q4_0_values(w[i + 1].qs)), join(load32(x[i].qs), load32(x[i + 1].qs)));
    const __m512 d = two_scales(fp16(w[i].d) * fp16(x[i].d), fp16(w[i + 1].d) * fp16(x[i + 1].d));
    acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  if (i < nb) sum += dot_q4_0_avx2(nb - i, w + i, x + i);
  return sum;
}

// ---- Q4_K x Q8_K: y = d * sc * q - dmin * m per 32-value sub-block ----

namespace {
// The 8 scales and 8 mins of a Q4_K block, unpacked (scalar: 16 bytes per 256 values).
inline void q4_K_unpack(const block_q4_K& b, uint8_t* sc, uint8_t* m) {
  for (int j = 0; j < 8; ++j) q4_K_scale_min(j, b.scales, sc + j, m + j);
}
inline int32_t q4_K_min_term(const uint8_t* m, const int16_t* bsums) {
  int32_t s = 0;
  for (int j = 0; j < 8; ++j) s += m[j] * (bsums[2 * j] + bsums[2 * j + 1]);
  return s;
}
}  // namespace

WHALE_AVX2 float dot_q4_K_avx2(int64_t nb, const block_q4_K* w, const block_q8_K* x) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  float sum = 0.0f;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t sc[8], m[8];
    q4_K_unpack(w[i], sc, m);
    const uint8_t* q = w[i].qs;
    const int8_t* y = x[i].qs;
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j, q += 32, y += 64) {
      const __m256i bits = load32(q);
      const __m256i lo = _mm256_and_si256(bits, low4), hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
      const __m256i p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load32(y)), _mm256_set1_epi16(sc[2 * j]));
      const __m256i p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load32(y + 32)), _mm256_set1_epi16(sc[2 * j + 1]));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(x[i].d * fp16(w[i].d)), _mm256_cvtepi32_ps(sumi), acc);
    sum -= x[i].d * fp16(w[i].dmin) * float(q4_K_min_term(m, x[i].bsums));
  }
  return sum + hsum(acc);
}

WHALE_VNNI float dot_q4_K_vnni(int64_t nb, const block_q4_K* w, const block_q8_K* x) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  float sum = 0.0f;
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    uint8_t sc[8], m[8];
    q4_K_unpack(w[i], sc, m);
    const uint8_t* q = w[i].qs;
    const int8_t* y = x[i].qs;
    __m512i sumi = _mm512_setzero_si512();
    for (int j = 0; j < 4; ++j, q += 32, y += 64) {
      // 64 values in order (low nibbles, then high): unsigned 0..15, so no sign trick.
      const __m256i bits = load32(q);
      const __m512i v = join(_mm256_and_si256(bits, low4), _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4));
      const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, _mm512_loadu_si512(y));
      const __m512i s = join(_mm256_set1_epi32(sc[2 * j]), _mm256_set1_epi32(sc[2 * j + 1]));
      sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p, s));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(x[i].d * fp16(w[i].d)), _mm512_cvtepi32_ps(sumi), acc);
    sum -= x[i].d * fp16(w[i].dmin) * float(q4_K_min_term(m, x[i].bsums));
  }
  return sum + _mm512_reduce_add_ps(acc);
}

// ---- Q6_K x Q8_K: y = d * scales[g] * (q - 32) per 16-value group ----

namespace {
// The four 32-byte vectors of 6-bit values (0..63) of one 128-value half, in value order.
WHALE_AVX2 inline void q6_K_values(const uint8_t* ql, const uint8_t* qh, __m256i out[4]) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), two = _mm256_set1_epi8(0x03);
  const __m256i l0 = load32(ql), l1 = load32(ql + 32), h = load32(qh);
  auto high = [&](int shift) {
    return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, shift), two), 4);
  };
  out[0] = _mm256_or_si256(_mm256_and_si256(l0, low4), high(0));
  out[1] = _mm256_or_si256(_mm256_and_si256(l1, low4), high(2));
  out[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), high(4));
  out[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4), high(6));
}
inline int32_t q6_K_offset_term(const int8_t* scales, const int16_t* bsums) {
  int32_t s = 0;
  for (int g = 0; g < QK_K / 16; ++g) s += scales[g] * bsums[g];
  return 32 * s;
}
}  // namespace

WHALE_AVX2 float dot_q6_K_avx2(int64_t nb, const block_q6_K* w, const block_q8_K* x) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    __m256i sumi = _mm256_setzero_si256();
    for (int n = 0; n < 2; ++n) {
      __m256i v[4];
      q6_K_values(w[i].ql + 64 * n, w[i].qh + 32 * n, v);
      const int8_t* sc = w[i].scales + 8 * n;
      const int8_t* y = x[i].qs + 128 * n;
      for (int k = 0; k < 4; ++k) {
        // bytes 0-15 belong to group 2k, 16-31 to group 2k+1 (after maddubs: int16 lanes 0-7, 8-15)
        const __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(v[k], load32(y + 32 * k)), s));
      }
    }
    const float d = x[i].d * fp16(w[i].d);
    const __m256 total = _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi, _mm256_setr_epi32(q6_K_offset_term(w[i].scales, x[i].bsums), 0, 0, 0, 0, 0, 0, 0)));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), total, acc);
  }
  return hsum(acc);
}

WHALE_VNNI float dot_q6_K_vnni(int64_t nb, const block_q6_K* w, const block_q8_K* x) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    __m512i sumi = _mm512_setzero_si512();
    for (int n = 0; n < 2; ++n) {
      __m256i v[4];
      q6_K_values(w[i].ql + 64 * n, w[i].qh + 32 * n, v);
      const int8_t* sc = w[i].scales + 8 * n;
      const int8_t* y = x[i].qs + 128 * n;
      for (int k = 0; k < 4; k += 2) {
        // 64 values = groups 2k .. 2k+3, four int32 lanes each after vpdpbusd.
        const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), join(v[k], v[k + 1]), _mm512_loadu_si512(y + 32 * k));
        const __m512i s = _mm512_setr_epi32(sc[2 * k], sc[2 * k], sc[2 * k], sc[2 * k], sc[2 * k + 1], sc[2 * k + 1],
                                            sc[2 * k + 1], sc[2 * k + 1], sc[2 * k + 2], sc[2 * k + 2], sc[2 * k + 2],
                                            sc[2 * k + 2], sc[2 * k + 3], sc[2 * k + 3], sc[2 * k + 3], sc[2 * k + 3]);
        sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p, s));
      }
    }
    const int32_t offset = q6_K_offset_term(w[i].scales, x[i].bsums);
    const float d = x[i].d * fp16(w[i].d);
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    acc = _mm512_mask_add_ps(acc, 1, acc, _mm512_set1_ps(-d * float(offset)));
  }
  return _mm512_reduce_add_ps(acc);
}

}  // namespace whale::simd
