// GEMM with BF16 operands and FP32 accumulation and output, on oneDNN's matmul primitive
// (AMX or AVX512-BF16 kernels, chosen by oneDNN at run time; Debian's OpenBLAS has no BF16
// GEMM). Used by training's BF16 compute mode: it computes exactly what that mode's simulation
// defines (operands rounded to BF16, products accumulated in FP32), about 10x faster than the
// FP32 SGEMM on a CPU with AMX.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace whale {

// y[i] = x[i] rounded to BF16 (nearest, ties to even; NaN stays NaN), as core/dtype.h's
// f32_to_bf16 does it. Parallel over large n.
void round_to_bf16(const float* x, uint16_t* y, int64_t n);
// The same over a row-major [rows, cols] block with row stride ld; y is dense [rows, cols].
void round_to_bf16(const float* x, int64_t rows, int64_t cols, int64_t ld, uint16_t* y);

// Owns one oneDNN engine and stream, the primitives it created (one per shape, transposes,
// alpha and beta: a training step repeats the same few dozen shapes) and the scratch buffers of
// the FP32 -> BF16 conversion. Not thread-safe: one per training graph.
class GemmBf16 {
 public:
  GemmBf16();
  ~GemmBf16();
  GemmBf16(const GemmBf16&) = delete;
  GemmBf16& operator=(const GemmBf16&) = delete;

  // Row-major C[M, N] = alpha * op(A) op(B) + beta * C, where op(A) is [M, K] (A stored [M, K]
  // with row stride lda, or [K, M] when trans_a) and op(B) is [K, N] (B stored [K, N] with
  // row stride ldb, or [N, K] when trans_b). beta = 0 ignores C's old contents (NaN included).
  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
            const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
  // Same with FP32 operands, rounded to BF16 on the way in (into buffers this object reuses).
  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

  // Whether oneDNN has a kernel on BF16 hardware here (AMX or AVX512-BF16). Without one, gemm()
  // computes the same products on OpenBLAS SGEMM (operands widened from BF16, which is exact), and
  // training uses its simulation, both faster than oneDNN's emulation.
  bool native() const { return native_; }
  // oneDNN's name for the kernel it picked (e.g. "brg:avx512_core_amx_bf16"; "none" if it has none).
  const std::string& kernel() const { return kernel_; }
  // Primitives created so far (a repeated shape must not add one).
  size_t cached_primitives() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  // One primitive call with exactly this shape (no padding), on a run-time-M or -K primitive if asked.
  void run(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
           const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc, bool runtime_m, bool runtime_k);
  std::vector<uint16_t> a16_, b16_, apad_, bpad_;
  std::vector<float> a32_, b32_;  // without a BF16 kernel: operands widened for SGEMM
  std::vector<float> c32_;        // dense output for a padded or strided C
  bool native_ = false;
  std::string kernel_;
};

}  // namespace whale
