// Matrix-vector and matrix-matrix products with ggml block-quantised weights (kernels/quant.h).
// Activations are quantised on the fly to 8 bits (Q8_0 for Q8_0/Q4_0 weights, Q8_K for
// Q4_K/Q6_K), so each block's dot product is an integer dot product scaled once (ggml's
// vec_dot_q8_0_q8_0 idea); the weights are read exactly once per call, however many rows x has.
// Code paths: portable scalar, AVX2+FMA, AVX-512 and AVX-512 VNNI, chosen at run time
// (kernels/cpu_features.h).
#pragma once
#include <cstdint>
#include <string>

#include "kernels/cpu_features.h"
#include "kernels/quant.h"

namespace whale {

// Dot product of one quantised weight row of n values with activations in the matching
// 8-bit format; n must be a multiple of the block size.
float vec_dot_q8_0_q8_0(int64_t n, const block_q8_0* w, const block_q8_0* x, KernelPath path);
float vec_dot_q4_0_q8_0(int64_t n, const block_q4_0* w, const block_q8_0* x, KernelPath path);
float vec_dot_q4_K_q8_K(int64_t n, const block_q4_K* w, const block_q8_K* x, KernelPath path);
float vec_dot_q6_K_q8_K(int64_t n, const block_q6_K* w, const block_q8_K* x, KernelPath path);

// Whether qmatmul handles weights of type t, and the activation format it quantises x to.
bool qmatmul_supported(GgmlType t);
GgmlType qmatmul_activation_type(GgmlType t);
// q8_0, q4_0, q4_K or q6_K (case-insensitive) -> type; throws whale::Error naming `option`.
GgmlType qmatmul_type_from_name(const std::string& name, const std::string& option);

// y[M, N] = x[M, K] · W[N, K]^T (or y += ... when accumulate), with W's N rows stored one after
// another in type t (ggml_row_size(t, K) bytes each; a GGUF tensor with ne = {K, N}).
// OpenMP over weight rows; the quantised activations live in a per-thread buffer that only
// grows, so repeated calls of the same size allocate nothing. Throws whale::Error for an
// unsupported type or a K that is not a multiple of the block size.
void qmatmul(GgmlType t, const void* W, int64_t N, int64_t K, const float* x, int64_t M, float* y, bool accumulate,
             KernelPath path);
inline void qmatmul(GgmlType t, const void* W, int64_t N, int64_t K, const float* x, int64_t M, float* y,
                    bool accumulate = false) {
  qmatmul(t, W, N, K, x, M, y, accumulate, kernel_path());
}

// Q8_0 weights repacked for the AVX-512 VNNI kernels: per tile of 16 rows and 32-value block,
// the quants in the layout the kernel multiplies (transposed, +128) and the 16 fp16 scales, 544
// bytes, one contiguous stream per tile (kernels/qgemm_x86.cpp). Same bytes per row as the rows
// when N is a multiple of 16. Products from it are bit-identical to those from the rows, but a
// decode step reads it at 90-100% of the memory bandwidth instead of 70-80% (the rows are 16
// streams 2 KB apart, transposed and their scales gathered per block). Only on the VNNI path.
bool q8_0_x16_available(KernelPath path = kernel_path());
size_t q8_0_x16_bytes(int64_t N, int64_t K);
// W's N rows of Q8_0 (K values each) into out (q8_0_x16_bytes(N, K)); OpenMP over tiles. Throws
// whale::Error when the x16 kernels are not available or K is not a multiple of 32.
void repack_q8_0_x16(const void* W, int64_t N, int64_t K, void* out);
// qmatmul with W in that layout.
void qmatmul_x16(const void* W, int64_t N, int64_t K, const float* x, int64_t M, float* y, bool accumulate = false);

// y[m * ldy + n] (+)= x[m * ldx, K] · W row n for n < N, m < M, on the calling thread only (no
// OpenMP: for callers already inside a parallel region, e.g. one attention head per worker).
// x's rows may be strided (a head's slice of each token's row). Activations are quantised as
// qmatmul does into a per-thread buffer that only grows, and each output is the same chain of
// operations as qmatmul's, so the two agree bit for bit and a row's result does not depend on M.
void qmatmul_rows(GgmlType t, const void* W, int64_t N, int64_t K, const float* x, int64_t ldx, int64_t M, float* y,
                  int64_t ldy, bool accumulate, KernelPath path);

// qmatmul_rows with W in repack_q8_0_x16's layout (W: a tile's start, i.e. a row that is a
// multiple of 16 in the matrix repacked).
void qmatmul_rows_x16(const void* W, int64_t N, int64_t K, const float* x, int64_t ldx, int64_t M, float* y,
                      int64_t ldy, bool accumulate);

// One product of a qmatvec_batch: y[M, N] (+)= x[M, K] W[N, K]^T, W as in qmatmul; M is small
// (the tokens routed to one expert in a decode or verify step).
struct QMatvec {
  GgmlType type;
  const void* W;
  int64_t N, K;
  const float* x;
  float* y;
  bool accumulate = false;
  int64_t M = 1;
  bool x16 = false;  // W is Q8_0 repacked by repack_q8_0_x16 (type Q8_0, VNNI path only)
};
// Every job's product in one parallel region: the weight rows of all jobs are split into
// contiguous shares per thread, so independent small products (a MoE layer's chosen experts at
// decode: 7 matrices of ~3 MB) pay one fork/join instead of one each, and a thread whose share
// ends inside a matrix goes straight on to the next one. In decode and verify steps (every
// M <= 2) the last quarter is shared out in chunks claimed in order instead, so the thread whose
// memory runs faster that moment takes more of it (qmatvec_split). Each y is bit-identical to
// qmatmul's (same activation quantisation, same dot kernel per output), whoever computes it.
void qmatvec_batch(const QMatvec* jobs, int64_t count, KernelPath path);
inline void qmatvec_batch(const QMatvec* jobs, int64_t count) { qmatvec_batch(jobs, count, kernel_path()); }
// How qmatvec_batch shares a decode step's work among the threads: the first static_percent of
// it (rows weighted by M) in equal contiguous shares, the rest claimed in order in chunks of
// chunk_units by whichever thread is free first; 100: all static. The default, 75% and 64,
// measured 4-7% faster V2-Lite decode than all static on 2 cores (docs/results-inference.md);
// 50% and 32 was 8% slower. WHALE_SPLIT_STATIC / WHALE_SPLIT_CHUNK set it for a run.
struct QmatvecSplit {
  int static_percent = 75;
  int64_t chunk_units = 64;
};
void set_qmatvec_split(QmatvecSplit split);
QmatvecSplit qmatvec_split();
// qmatmul with up to max_rows activation rows (default 2: decode and MTP verify steps; 0: none)
// runs as one qmatvec_batch job, otherwise 16-row tiles are shared by an OpenMP loop, which stops
// the decode kernel's prefetch at every tile. Same bits. WHALE_QMATMUL_BATCH sets it for a run.
void set_qmatmul_batch_rows(int64_t max_rows);

}  // namespace whale
