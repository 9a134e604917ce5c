#include "kernels/ops.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/linear_bf16.h"
#include "kernels/qmatmul.h"
#include "kernels/quant.h"

namespace whale {

namespace {

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
  if (W.dtype == DType::BF16)
    return linear_bf16(x, M, static_cast<const uint16_t*>(W.data), N, K, y, accumulate);
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

void dot_rows(const float* w, int64_t J, const float* x, int64_t n, float* out) {
  constexpr int64_t kLanes = 16;
  for (int64_t j0 = 0; j0 < J; j0 += 4) {
    const int64_t nj = std::min<int64_t>(4, J - j0);
    float acc[4][kLanes] = {};
    int64_t k0 = 0;
    for (; k0 + kLanes <= n; k0 += kLanes)
      for (int64_t j = 0; j < nj; ++j) {
        const float* wr = w + (j0 + j) * n + k0;
#pragma omp simd
        for (int64_t l = 0; l < kLanes; ++l) acc[j][l] += wr[l] * x[k0 + l];
      }
    for (int64_t j = 0; j < nj; ++j) {
      for (int64_t k = k0; k < n; ++k) acc[j][k - k0] += w[(j0 + j) * n + k] * x[k];
      for (int64_t half = kLanes / 2; half >= 1; half /= 2)
        for (int64_t l = 0; l < half; ++l) acc[j][l] += acc[j][l + half];
      out[j0 + j] = acc[j][0];
    }
  }
}

void linear_rows_f32(const float* x, int64_t M, const float* W, int64_t N, int64_t K, float* y) {
  constexpr int64_t kChunk = 16;  // weight rows per task: 4 tasks for a 64-expert router at decode
  const int64_t chunks = (N + kChunk - 1) / kChunk;
#pragma omp parallel for collapse(2) schedule(static) if (M * N * K >= (int64_t(1) << 16))
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t n0 = c * kChunk, nn = std::min(kChunk, N - n0);
      dot_rows(W + n0 * K, nn, x + m * K, K, y + m * N + n0);
    }
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
