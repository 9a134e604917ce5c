// Scalar reference code for ggml's block formats (layouts and formulas: ggml-quants.c).
// Dequantisation follows the format's definition exactly; quantisation is plain
// round-to-nearest with per-block absolute-max (Q8_0, Q4_0, Q6_K, Q8_K) or min/max
// (Q4_K) scales. It writes valid blocks of the same format, but not byte-identical to
// llama-quantize, whose K-quant search for scales is iterative.
#include "kernels/quant.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace whale {

namespace {

int nearest_int(float v) { return int(std::lrintf(v)); }

// The value of largest magnitude, with its sign (ggml quantisers scale by it so that
// the extreme value lands exactly on the most negative code).
float signed_absmax(const float* x, int64_t n) {
  float amax = 0.0f, max = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  return max;
}

}  // namespace

// ---- dequantisation -------------------------------------------------------------------

void dequantize_row_q8_0(const block_q8_0* x, float* y, int64_t k) {
  assert(k % QK8_0 == 0);
  for (int64_t i = 0; i < k / QK8_0; ++i) {
    const float d = f16_to_f32(x[i].d);
    for (int j = 0; j < QK8_0; ++j) y[i * QK8_0 + j] = float(x[i].qs[j]) * d;
  }
}

void dequantize_row_q4_0(const block_q4_0* x, float* y, int64_t k) {
  assert(k % QK4_0 == 0);
  for (int64_t i = 0; i < k / QK4_0; ++i) {
    const float d = f16_to_f32(x[i].d);
    for (int j = 0; j < QK4_0 / 2; ++j) {
      y[i * QK4_0 + j] = float((x[i].qs[j] & 0x0F) - 8) * d;
      y[i * QK4_0 + j + QK4_0 / 2] = float((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_row_q4_K(const block_q4_K* x, float* y, int64_t k) {
  assert(k % QK_K == 0);
  for (int64_t i = 0; i < k / QK_K; ++i) {
    const float d = f16_to_f32(x[i].d), dmin = f16_to_f32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    int is = 0;
    for (int j = 0; j < QK_K; j += 64) {
      uint8_t sc, m;
      q4_K_scale_min(is, x[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      q4_K_scale_min(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
      q += 32;
      is += 2;
    }
  }
}

void dequantize_row_q6_K(const block_q6_K* x, float* y, int64_t k) {
  assert(k % QK_K == 0);
  for (int64_t i = 0; i < k / QK_K; ++i) {
    const float d = f16_to_f32(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int n = 0; n < QK_K; n += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = int((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = int((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * float(sc[is + 0]) * float(q1);
        y[l + 32] = d * float(sc[is + 2]) * float(q2);
        y[l + 64] = d * float(sc[is + 4]) * float(q3);
        y[l + 96] = d * float(sc[is + 6]) * float(q4);
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

void dequantize_row_q8_K(const block_q8_K* x, float* y, int64_t k) {
  assert(k % QK_K == 0);
  for (int64_t i = 0; i < k / QK_K; ++i)
    for (int j = 0; j < QK_K; ++j) y[i * QK_K + j] = x[i].d * float(x[i].qs[j]);
}

// ---- reference quantisation -----------------------------------------------------------

void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t k) {
  assert(k % QK8_0 == 0);
  for (int64_t i = 0; i < k / QK8_0; ++i, x += QK8_0) {
    float amax = 0.0f;
    for (int j = 0; j < QK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < QK8_0; ++j) y[i].qs[j] = int8_t(std::roundf(x[j] * id));
  }
}

void quantize_row_q4_0(const float* x, block_q4_0* y, int64_t k) {
  assert(k % QK4_0 == 0);
  for (int64_t i = 0; i < k / QK4_0; ++i, x += QK4_0) {
    const float max = signed_absmax(x, QK4_0);
    const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < QK4_0 / 2; ++j) {
      const int q0 = std::min(15, int(x[j] * id + 8.5f));
      const int q1 = std::min(15, int(x[j + QK4_0 / 2] * id + 8.5f));
      y[i].qs[j] = uint8_t(q0 | (q1 << 4));
    }
  }
}

void quantize_row_q4_K(const float* x, block_q4_K* y, int64_t k) {
  assert(k % QK_K == 0);
  for (int64_t i = 0; i < k / QK_K; ++i, x += QK_K) {
    // Per sub-block of 32: y = scale * q - min with q in 0..15 and min >= 0 (the range
    // always includes zero, as ggml's make_qkx2_quants forces).
    float scales[8], mins[8];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; ++j) {
      const float* xs = x + 32 * j;
      float lo = 0.0f, hi = 0.0f;
      for (int l = 0; l < 32; ++l) {
        lo = std::min(lo, xs[l]);
        hi = std::max(hi, xs[l]);
      }
      scales[j] = (hi - lo) / 15.0f;
      mins[j] = -lo;
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
      ls[j] = uint8_t(std::min(63, nearest_int(inv_scale * scales[j])));
      lm[j] = uint8_t(std::min(63, nearest_int(inv_min * mins[j])));
    }
    block_q4_K& b = y[i];
    std::memset(b.scales, 0, sizeof(b.scales));
    for (int j = 0; j < 8; ++j) {
      if (j < 4) {
        b.scales[j] = ls[j];
        b.scales[j + 4] = lm[j];
      } else {
        b.scales[j + 4] = uint8_t((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
        b.scales[j - 4] |= uint8_t((ls[j] >> 4) << 6);
        b.scales[j] |= uint8_t((lm[j] >> 4) << 6);
      }
    }
    b.d = f32_to_f16(max_scale / 63.0f);
    b.dmin = f32_to_f16(max_min / 63.0f);
    // Quantise against the scales as they will be decoded (fp16 d, 6-bit sc).
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    uint8_t L[QK_K];
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      q4_K_scale_min(j, b.scales, &sc, &m);
      const float ds = d * sc, dm = dmin * m;
      for (int l = 0; l < 32; ++l) {
        const int q = ds != 0.0f ? nearest_int((x[32 * j + l] + dm) / ds) : 0;
        L[32 * j + l] = uint8_t(std::clamp(q, 0, 15));
      }
    }
    uint8_t* q = b.qs;
    for (int j = 0; j < QK_K; j += 64, q += 32)
      for (int l = 0; l < 32; ++l) q[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
  }
}

void quantize_row_q6_K(const float* x, block_q6_K* y, int64_t k) {
  assert(k % QK_K == 0);
  for (int64_t i = 0; i < k / QK_K; ++i, x += QK_K) {
    // Sub-block scale maps the extreme value to -32; the 16 scales share one fp16 d.
    float scales[16];
    float max_scale = 0.0f, amax_scale = 0.0f;
    for (int ib = 0; ib < 16; ++ib) {
      scales[ib] = signed_absmax(x + 16 * ib, 16) / -32.0f;
      if (std::fabs(scales[ib]) > amax_scale) {
        amax_scale = std::fabs(scales[ib]);
        max_scale = scales[ib];
      }
    }
    block_q6_K& b = y[i];
    uint8_t L[QK_K];
    if (amax_scale == 0.0f) {
      std::memset(&b, 0, sizeof(b));
      std::fill(L, L + QK_K, uint8_t(32));
    } else {
      const float iscale = -128.0f / max_scale;
      b.d = f32_to_f16(1.0f / iscale);
      for (int ib = 0; ib < 16; ++ib)
        b.scales[ib] = int8_t(std::clamp(nearest_int(iscale * scales[ib]), -128, 127));
      const float d = f16_to_f32(b.d);
      for (int ib = 0; ib < 16; ++ib) {
        const float ds = d * b.scales[ib];
        for (int l = 0; l < 16; ++l) {
          const int q = ds != 0.0f ? nearest_int(x[16 * ib + l] / ds) : 0;
          L[16 * ib + l] = uint8_t(std::clamp(q, -32, 31) + 32);
        }
      }
    }
    uint8_t* ql = b.ql;
    uint8_t* qh = b.qh;
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
        ql[l] = uint8_t((q1 & 0xF) | ((q3 & 0xF) << 4));
        ql[l + 32] = uint8_t((q2 & 0xF) | ((q4 & 0xF) << 4));
        qh[l] = uint8_t((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
      }
    }
  }
}

void quantize_row_q8_K(const float* x, block_q8_K* y, int64_t k) {
  assert(k % QK_K == 0);
  for (int64_t i = 0; i < k / QK_K; ++i, x += QK_K) {
    const float max = signed_absmax(x, QK_K);
    if (max == 0.0f) {
      std::memset(&y[i], 0, sizeof(block_q8_K));
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < QK_K; ++j) y[i].qs[j] = int8_t(std::min(127, nearest_int(iscale * x[j])));
    for (int j = 0; j < QK_K / 16; ++j) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += y[i].qs[16 * j + l];
      y[i].bsums[j] = int16_t(sum);
    }
    y[i].d = 1.0f / iscale;
  }
}

// ---- by type id -----------------------------------------------------------------------

int64_t ggml_block_size(GgmlType t) {
  switch (t) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: return 1;
    case GgmlType::Q8_0: return QK8_0;
    case GgmlType::Q4_0: return QK4_0;
    case GgmlType::Q4_K: case GgmlType::Q6_K: case GgmlType::Q8_K: return QK_K;
  }
  return 0;
}

size_t ggml_type_size(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return 4;
    case GgmlType::F16: case GgmlType::BF16: return 2;
    case GgmlType::Q8_0: return sizeof(block_q8_0);
    case GgmlType::Q4_0: return sizeof(block_q4_0);
    case GgmlType::Q4_K: return sizeof(block_q4_K);
    case GgmlType::Q6_K: return sizeof(block_q6_K);
    case GgmlType::Q8_K: return sizeof(block_q8_K);
  }
  return 0;
}

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return "f32";
    case GgmlType::F16: return "f16";
    case GgmlType::BF16: return "bf16";
    case GgmlType::Q8_0: return "q8_0";
    case GgmlType::Q4_0: return "q4_0";
    case GgmlType::Q4_K: return "q4_K";
    case GgmlType::Q6_K: return "q6_K";
    case GgmlType::Q8_K: return "q8_K";
  }
  return "?";
}

size_t ggml_row_size(GgmlType t, int64_t n) {
  const int64_t block = ggml_block_size(t);
  WHALE_CHECK(block > 0, "ggml type", "unknown type id " + std::to_string(uint32_t(t)));
  WHALE_CHECK(n % block == 0, std::string("ggml type ") + ggml_type_name(t),
              "row of " + std::to_string(n) + " values is not a multiple of the block size " +
                  std::to_string(block));
  return size_t(n / block) * ggml_type_size(t);
}

bool ggml_type_of(DType d, GgmlType* t) {
  switch (d) {
    case DType::F32: *t = GgmlType::F32; return true;
    case DType::F16: *t = GgmlType::F16; return true;
    case DType::BF16: *t = GgmlType::BF16; return true;
    case DType::Q8_0: *t = GgmlType::Q8_0; return true;
    case DType::Q4_0: *t = GgmlType::Q4_0; return true;
    case DType::Q4_K: *t = GgmlType::Q4_K; return true;
    case DType::Q6_K: *t = GgmlType::Q6_K; return true;
    default: return false;
  }
}

DType dtype_of(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return DType::F32;
    case GgmlType::F16: return DType::F16;
    case GgmlType::BF16: return DType::BF16;
    case GgmlType::Q8_0: return DType::Q8_0;
    case GgmlType::Q4_0: return DType::Q4_0;
    case GgmlType::Q4_K: return DType::Q4_K;
    case GgmlType::Q6_K: return DType::Q6_K;
    case GgmlType::Q8_K: break;
  }
  throw Error("ggml type", std::string("no whale dtype for ") + ggml_type_name(t));
}

void dequantize_row(GgmlType t, const void* src, float* y, int64_t k) {
  switch (t) {
    case GgmlType::F32: std::memcpy(y, src, size_t(k) * 4); return;
    case GgmlType::F16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < k; ++i) y[i] = f16_to_f32(h[i]);
      return;
    }
    case GgmlType::BF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < k; ++i) y[i] = bf16_to_f32(h[i]);
      return;
    }
    case GgmlType::Q8_0: dequantize_row_q8_0(static_cast<const block_q8_0*>(src), y, k); return;
    case GgmlType::Q4_0: dequantize_row_q4_0(static_cast<const block_q4_0*>(src), y, k); return;
    case GgmlType::Q4_K: dequantize_row_q4_K(static_cast<const block_q4_K*>(src), y, k); return;
    case GgmlType::Q6_K: dequantize_row_q6_K(static_cast<const block_q6_K*>(src), y, k); return;
    case GgmlType::Q8_K: dequantize_row_q8_K(static_cast<const block_q8_K*>(src), y, k); return;
  }
  throw Error("ggml type", "cannot dequantise type id " + std::to_string(uint32_t(t)));
}

void quantize_row(GgmlType t, const float* x, void* dst, int64_t k) {
  switch (t) {
    case GgmlType::F32: std::memcpy(dst, x, size_t(k) * 4); return;
    case GgmlType::F16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < k; ++i) h[i] = f32_to_f16(x[i]);
      return;
    }
    case GgmlType::BF16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < k; ++i) h[i] = f32_to_bf16(x[i]);
      return;
    }
    case GgmlType::Q8_0: quantize_row_q8_0(x, static_cast<block_q8_0*>(dst), k); return;
    case GgmlType::Q4_0: quantize_row_q4_0(x, static_cast<block_q4_0*>(dst), k); return;
    case GgmlType::Q4_K: quantize_row_q4_K(x, static_cast<block_q4_K*>(dst), k); return;
    case GgmlType::Q6_K: quantize_row_q6_K(x, static_cast<block_q6_K*>(dst), k); return;
    case GgmlType::Q8_K: quantize_row_q8_K(x, static_cast<block_q8_K*>(dst), k); return;
  }
  throw Error("ggml type", "cannot quantise to type id " + std::to_string(uint32_t(t)));
}

}  // namespace whale
