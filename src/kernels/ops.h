// Elementwise and reduction kernels of the forward pass, on row-major float buffers.
#pragma once
#include <cstdint>

#include "model/weights.h"

namespace whale {

// y[M, N] = x[M, K] · W[N, K]^T   (W is F32, BF16 (kernels/linear_bf16.h) or block-quantised;
// accumulation in F32)
void linear(const float* x, int64_t M, const Tensor& W, float* y);
// Same, accumulating into y (y += x W^T).
void linear_accumulate(const float* x, int64_t M, const Tensor& W, float* y);

// y = x / sqrt(mean(x^2) + eps) * weight, for each of M rows of length n (x may equal y).
void rmsnorm(const float* x, const float* weight, float* y, int64_t M, int64_t n, float eps, int64_t x_stride,
             int64_t y_stride);
inline void rmsnorm(const float* x, const float* weight, float* y, int64_t M, int64_t n, float eps) {
  rmsnorm(x, weight, y, M, n, eps, n, n);
}

// out[i] = silu(gate[i]) * up[i], the SwiGLU of DeepSeek's MLPs.
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

// In-place softmax over n values (max-subtracted, exact expf).
void softmax(float* x, int64_t n);

float dot(const float* a, const float* b, int64_t n);
// out[j] = w[j, 0:n] · x for j < J: four rows at a time, each a 16-lane partial sum over n
// then a fixed tree, so four independent chains hide the multiply-add latency (a plain dot is
// one chain and a serial reduction per output).
void dot_rows(const float* w, int64_t J, const float* x, int64_t n, float* out);
// y[M, N] = x[M, K] · W[N, K]^T for F32 W, each output one dot_rows chain: a row's outputs are
// the same bits whatever M is (SGEMV for one row and SGEMM for more sum in different orders).
// For small matrices read at decode and verify alike: MoE routers (GGUF keeps them F32).
void linear_rows_f32(const float* x, int64_t M, const float* W, int64_t N, int64_t K, float* y);
// y += a * x
void axpy(float a, const float* x, float* y, int64_t n);

// Row `row` of an embedding-like matrix (F32 or BF16) as floats.
void copy_row(const Tensor& t, int64_t row, float* out);

}  // namespace whale

namespace whale {

// Backward of y[M, N] = x[M, K] · W[N, K]^T with F32 W: dx (+)= dy · W (dx may be null),
// dW += dy^T · x.
void linear_backward(const float* x, int64_t M, const Tensor& W, const float* dy, float* dx, bool accumulate_dx,
                     float* dW);

// Backward of y = rmsnorm(x) * w with saved inverse rms r (per row): dx (+)= ..., dw += ...
void rmsnorm_backward(const float* x, const float* weight, const float* inv_rms, const float* dy, float* dx,
                      float* dweight, int64_t M, int64_t n, bool accumulate_dx);
// Forward that also saves the inverse rms per row.
void rmsnorm_save(const float* x, const float* weight, float* y, float* inv_rms, int64_t M, int64_t n, float eps);

// Backward of out = silu(gate) * up: dgate, dup (overwritten).
void silu_mul_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup, int64_t n);

}  // namespace whale
