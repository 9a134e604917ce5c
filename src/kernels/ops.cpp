#include "kernels/ops.h"

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/qmatmul.h"
#include "kernels/quant.h"

namespace whale {

namespace {

// Dot product of a BF16 row with an F32 vector.
float dot_bf16(const uint16_t* w, const float* x, int64_t n) {
  int64_t i = 0;
  float sum = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    __m256i w0 = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(w + i))), 16);
    __m256i w1 = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(w + i + 8))), 16);
    acc0 = _mm256_fmadd_ps(_mm256_castsi256_ps(w0), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_castsi256_ps(w1), _mm256_loadu_ps(x + i + 8), acc1);
  }
  __m256 acc = _mm256_add_ps(acc0, acc1);
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  lo = _mm_hadd_ps(lo, lo);
  lo = _mm_hadd_ps(lo, lo);
  sum = _mm_cvtss_f32(lo);
#endif
  for (; i < n; ++i) sum += bf16_to_f32(w[i]) * x[i];
  return sum;
}

// Four activation rows against one BF16 weight row: each weight vector is widened once and
// used four times, so batched decode is not bound by the widening (about as costly as the FMA).
void dot_bf16_x4(const uint16_t* w, const float* x, int64_t K, float out[4]) {
  int64_t i = 0;
  float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (; i + 8 <= K; i += 8) {
    const __m256 wv = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(w + i))), 16));
    for (int r = 0; r < 4; ++r) acc[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * K + i), acc[r]);
  }
  for (int r = 0; r < 4; ++r) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
    lo = _mm_hadd_ps(lo, lo);
    lo = _mm_hadd_ps(lo, lo);
    sum[r] = _mm_cvtss_f32(lo);
  }
#endif
  for (; i < K; ++i) {
    const float wi = bf16_to_f32(w[i]);
    for (int r = 0; r < 4; ++r) sum[r] += wi * x[r * K + i];
  }
  for (int r = 0; r < 4; ++r) out[r] = sum[r];
}

void linear_bf16(const float* x, int64_t M, const Tensor& W, float* y, bool accumulate) {
  const int64_t N = W.rows(), K = W.cols();
  const uint16_t* w = static_cast<const uint16_t*>(W.data);
  if (M <= 32) {
    // Decode (one row per sequence): bandwidth-bound, read each weight row once for all M
    // activation rows, four rows per widened weight vector. Widening whole blocks for SGEMM
    // would move five times the bytes (measured: batch 16 slower than batch 8 before this).
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const uint16_t* row = w + n * K;
      int64_t m = 0;
      for (; m + 4 <= M; m += 4) {
        float v[4];
        dot_bf16_x4(row, x + m * K, K, v);
        for (int r = 0; r < 4; ++r) {
          float& out = y[(m + r) * N + n];
          out = accumulate ? out + v[r] : v[r];
        }
      }
      for (; m < M; ++m) {
        const float v = dot_bf16(row, x + m * K, K);
        y[m * N + n] = accumulate ? y[m * N + n] + v : v;
      }
    }
    return;
  }
  // Prefill: widen blocks of weight rows to F32 and let SGEMM do the arithmetic.
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(N, (1 << 22) / std::max<int64_t>(K, 1)));
  std::vector<float> wf(size_t(block * K));
  for (int64_t n0 = 0; n0 < N; n0 += block) {
    const int64_t nb = std::min(block, N - n0);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < nb * K; ++i) wf[size_t(i)] = bf16_to_f32(w[n0 * K + i]);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(nb), int(K), 1.0f, x, int(K), wf.data(),
                int(K), accumulate ? 1.0f : 0.0f, y + n0, int(N));
  }
}

// Block-quantised weights (kept as mapped from a GGUF file): qmatmul's integer kernels, or for
// a type they do not cover, each weight row dequantised once and dotted with every x row.
void linear_quantised(const float* x, int64_t M, const Tensor& W, GgmlType type, float* y, bool accumulate) {
  const int64_t N = W.rows(), K = W.cols();
  if (qmatmul_supported(type)) return qmatmul(type, W.data, N, K, x, M, y, accumulate);
  const size_t row_bytes = ggml_row_size(type, K);
#pragma omp parallel
  {
    std::vector<float> w(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      dequantize_row(type, static_cast<const uint8_t*>(W.data) + size_t(n) * row_bytes, w.data(), K);
      for (int64_t m = 0; m < M; ++m) {
        const float* xr = x + m * K;
        float sum = 0.0f;
        for (int64_t k = 0; k < K; ++k) sum += w[size_t(k)] * xr[k];
        y[m * N + n] = accumulate ? y[m * N + n] + sum : sum;
      }
    }
  }
}

void linear_impl(const float* x, int64_t M, const Tensor& W, float* y, bool accumulate) {
  const int64_t N = W.rows(), K = W.cols();
  if (M == 0 || N == 0) return;
  if (W.dtype == DType::BF16) return linear_bf16(x, M, W, y, accumulate);
  GgmlType type;
  if (W.dtype != DType::F32 && ggml_type_of(W.dtype, &type)) return linear_quantised(x, M, W, type, y, accumulate);
  if (M == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, int(N), int(K), 1.0f, W.f32(), int(K), x, 1, accumulate ? 1.0f : 0.0f,
                y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, x, int(K), W.f32(), int(K),
              accumulate ? 1.0f : 0.0f, y, int(N));
}

}  // namespace

void linear(const float* x, int64_t M, const Tensor& W, float* y) { linear_impl(x, M, W, y, false); }
void linear_accumulate(const float* x, int64_t M, const Tensor& W, float* y) { linear_impl(x, M, W, y, true); }

void rmsnorm(const float* x, const float* weight, float* y, int64_t M, int64_t n, float eps, int64_t x_stride,
             int64_t y_stride) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * x_stride;
    float* yr = y + m * y_stride;
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
    const float inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * inv * weight[i];
  }
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void softmax(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = float(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float a, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void copy_row(const Tensor& t, int64_t row, float* out) {
  const int64_t n = t.cols();
  GgmlType type;
  if (t.dtype == DType::F32) {
    std::memcpy(out, t.f32() + row * n, size_t(n) * 4);
  } else if (t.dtype != DType::BF16 && ggml_type_of(t.dtype, &type)) {
    dequantize_row(type, static_cast<const uint8_t*>(t.data) + size_t(row) * ggml_row_size(type, n), out, n);
  } else {
    const uint16_t* h = static_cast<const uint16_t*>(t.data) + row * n;
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(h[i]);
  }
}

}  // namespace whale

namespace whale {

void linear_backward(const float* x, int64_t M, const Tensor& W, const float* dy, float* dx, bool accumulate_dx,
                     float* dW) {
  const int64_t N = W.rows(), K = W.cols();
  if (M == 0) return;
  if (dx)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(K), int(N), 1.0f, dy, int(N), W.f32(), int(K),
                accumulate_dx ? 1.0f : 0.0f, dx, int(K));
  if (dW)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(N), int(K), int(M), 1.0f, dy, int(N), x, int(K), 1.0f, dW,
                int(K));
}

void rmsnorm_save(const float* x, const float* weight, float* y, float* inv_rms, int64_t M, int64_t n, float eps) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * n;
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
    const float inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    inv_rms[m] = inv;
    for (int64_t i = 0; i < n; ++i) y[m * n + i] = xr[i] * inv * weight[i];
  }
}

void rmsnorm_backward(const float* x, const float* weight, const float* inv_rms, const float* dy, float* dx,
                      float* dweight, int64_t M, int64_t n, bool accumulate_dx) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * n;
    const float* g = dy + m * n;
    const float r = inv_rms[m];
    double dot_gwx = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      dot_gwx += double(g[i]) * weight[i] * xr[i];
      if (dweight) dweight[i] += g[i] * xr[i] * r;
    }
    // d/dx_i of x_i r w_i: r w_i g_i - x_i r^3 / n * sum_j g_j w_j x_j
    const float c = float(dot_gwx * double(r) * r * r / double(n));
    float* d = dx + m * n;
    for (int64_t i = 0; i < n; ++i) {
      const float v = r * weight[i] * g[i] - xr[i] * c;
      d[i] = accumulate_dx ? d[i] + v : v;
    }
  }
}

void silu_mul_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float s = 1.0f / (1.0f + std::exp(-g));
    const float silu = g * s;
    dup[i] = dout[i] * silu;
    dgate[i] = dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
  }
}

}  // namespace whale
