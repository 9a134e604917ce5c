#include "kernels/qmatmul.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/qmatmul_simd.h"

namespace whale {

namespace {

// ---- portable scalar dot products: integer sums per block, one float scale per block ----

float dot_q8_0_scalar(int64_t nb, const block_q8_0* w, const block_q8_0* x) {
  float sum = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t s = 0;
    for (int j = 0; j < QK8_0; ++j) s += int32_t(w[i].qs[j]) * int32_t(x[i].qs[j]);
    sum += float(s) * (f16_to_f32(w[i].d) * f16_to_f32(x[i].d));
  }
  return sum;
}

float dot_q4_0_scalar(int64_t nb, const block_q4_0* w, const block_q8_0* x) {
  float sum = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t s = 0;
    for (int j = 0; j < QK4_0 / 2; ++j) {
      s += ((w[i].qs[j] & 0xF) - 8) * int32_t(x[i].qs[j]);
      s += ((w[i].qs[j] >> 4) - 8) * int32_t(x[i].qs[j + QK4_0 / 2]);
    }
    sum += float(s) * (f16_to_f32(w[i].d) * f16_to_f32(x[i].d));
  }
  return sum;
}

float dot_q4_K_scalar(int64_t nb, const block_q4_K* w, const block_q8_K* x) {
  float sum = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* q = w[i].qs;
    const int8_t* y = x[i].qs;
    int32_t scaled = 0, mins = 0;
    for (int j = 0; j < QK_K / 64; ++j, q += 32, y += 64) {
      uint8_t sc_lo, m_lo, sc_hi, m_hi;
      q4_K_scale_min(2 * j, w[i].scales, &sc_lo, &m_lo);
      q4_K_scale_min(2 * j + 1, w[i].scales, &sc_hi, &m_hi);
      int32_t lo = 0, hi = 0;
      for (int l = 0; l < 32; ++l) {
        lo += (q[l] & 0xF) * int32_t(y[l]);
        hi += (q[l] >> 4) * int32_t(y[l + 32]);
      }
      scaled += sc_lo * lo + sc_hi * hi;
      mins += m_lo * (x[i].bsums[4 * j] + x[i].bsums[4 * j + 1]) + m_hi * (x[i].bsums[4 * j + 2] + x[i].bsums[4 * j + 3]);
    }
    sum += x[i].d * (f16_to_f32(w[i].d) * float(scaled) - f16_to_f32(w[i].dmin) * float(mins));
  }
  return sum;
}

float dot_q6_K_scalar(int64_t nb, const block_q6_K* w, const block_q8_K* x) {
  float sum = 0.0f;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t group[QK_K / 16] = {};
    for (int n = 0; n < 2; ++n) {
      const uint8_t* ql = w[i].ql + 64 * n;
      const uint8_t* qh = w[i].qh + 32 * n;
      const int8_t* y = x[i].qs + 128 * n;
      for (int l = 0; l < 32; ++l) {
        const int is = 8 * n + l / 16;
        group[is + 0] += ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) * int32_t(y[l]);
        group[is + 2] += ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) * int32_t(y[l + 32]);
        group[is + 4] += ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) * int32_t(y[l + 64]);
        group[is + 6] += ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) * int32_t(y[l + 96]);
      }
    }
    int32_t s = 0;
    for (int g = 0; g < QK_K / 16; ++g) s += w[i].scales[g] * (group[g] - 32 * x[i].bsums[g]);
    sum += x[i].d * f16_to_f32(w[i].d) * float(s);
  }
  return sum;
}

void check_blocks(int64_t n, int64_t block, const char* what) {
  if (n % block != 0)
    throw Error(what, "row length " + std::to_string(n) + " is not a multiple of the block size " + std::to_string(block));
}

}  // namespace

float vec_dot_q8_0_q8_0(int64_t n, const block_q8_0* w, const block_q8_0* x, KernelPath path) {
  check_blocks(n, QK8_0, "q8_0 dot");
  const int64_t nb = n / QK8_0;
  switch (path) {
    case KernelPath::Avx2: return simd::dot_q8_0_avx2(nb, w, x);
    case KernelPath::Avx512: return simd::dot_q8_0_avx512(nb, w, x);
    case KernelPath::Avx512Vnni: return simd::dot_q8_0_vnni(nb, w, x);
    default: return dot_q8_0_scalar(nb, w, x);
  }
}

float vec_dot_q4_0_q8_0(int64_t n, const block_q4_0* w, const block_q8_0* x, KernelPath path) {
  check_blocks(n, QK4_0, "q4_0 dot");
  const int64_t nb = n / QK4_0;
  switch (path) {
    case KernelPath::Avx2: return simd::dot_q4_0_avx2(nb, w, x);
    case KernelPath::Avx512: return simd::dot_q4_0_avx512(nb, w, x);
    case KernelPath::Avx512Vnni: return simd::dot_q4_0_vnni(nb, w, x);
    default: return dot_q4_0_scalar(nb, w, x);
  }
}

// The K-quants' AVX-512 path (without VNNI) uses the AVX2 kernels: their sub-block scales
// make 512-bit maddubs no faster in practice, and decode is bandwidth-bound anyway.
float vec_dot_q4_K_q8_K(int64_t n, const block_q4_K* w, const block_q8_K* x, KernelPath path) {
  check_blocks(n, QK_K, "q4_K dot");
  const int64_t nb = n / QK_K;
  switch (path) {
    case KernelPath::Avx2:
    case KernelPath::Avx512: return simd::dot_q4_K_avx2(nb, w, x);
    case KernelPath::Avx512Vnni: return simd::dot_q4_K_vnni(nb, w, x);
    default: return dot_q4_K_scalar(nb, w, x);
  }
}

float vec_dot_q6_K_q8_K(int64_t n, const block_q6_K* w, const block_q8_K* x, KernelPath path) {
  check_blocks(n, QK_K, "q6_K dot");
  const int64_t nb = n / QK_K;
  switch (path) {
    case KernelPath::Avx2:
    case KernelPath::Avx512: return simd::dot_q6_K_avx2(nb, w, x);
    case KernelPath::Avx512Vnni: return simd::dot_q6_K_vnni(nb, w, x);
    default: return dot_q6_K_scalar(nb, w, x);
  }
}

namespace {

// One weight row (type t, K values) against one activation row in qmatmul_activation_type(t).
inline float row_dot(GgmlType t, int64_t K, const uint8_t* wr, const uint8_t* xr, KernelPath path) {
  switch (t) {
    case GgmlType::Q8_0:
      return vec_dot_q8_0_q8_0(K, reinterpret_cast<const block_q8_0*>(wr), reinterpret_cast<const block_q8_0*>(xr), path);
    case GgmlType::Q4_0:
      return vec_dot_q4_0_q8_0(K, reinterpret_cast<const block_q4_0*>(wr), reinterpret_cast<const block_q8_0*>(xr), path);
    case GgmlType::Q4_K:
      return vec_dot_q4_K_q8_K(K, reinterpret_cast<const block_q4_K*>(wr), reinterpret_cast<const block_q8_K*>(xr), path);
    default:
      return vec_dot_q6_K_q8_K(K, reinterpret_cast<const block_q6_K*>(wr), reinterpret_cast<const block_q8_K*>(xr), path);
  }
}

}  // namespace

bool qmatmul_supported(GgmlType t) {
  return t == GgmlType::Q8_0 || t == GgmlType::Q4_0 || t == GgmlType::Q4_K || t == GgmlType::Q6_K;
}

GgmlType qmatmul_activation_type(GgmlType t) {
  if (t == GgmlType::Q8_0 || t == GgmlType::Q4_0) return GgmlType::Q8_0;
  if (t == GgmlType::Q4_K || t == GgmlType::Q6_K) return GgmlType::Q8_K;
  throw Error("qmatmul", std::string("no quantised kernel for weight type ") + ggml_type_name(t) +
                             "; expected q8_0, q4_0, q4_K or q6_K");
}

GgmlType qmatmul_type_from_name(const std::string& name, const std::string& option) {
  std::string lower;
  for (char ch : name) lower += char(std::tolower(static_cast<unsigned char>(ch)));
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
    std::string n = ggml_type_name(t);
    for (char& ch : n) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    if (lower == n) return t;
  }
  throw Error(option, "is '" + name + "'; expected q8_0, q4_0, q4_k or q6_k");
}

namespace {

// Q8_0 weights on the VNNI path take the register-blocked matrix-matrix kernel for any number
// of rows (qgemm_x86.cpp), so a row's result is the same in a decode, verify or prefill batch.
bool use_gemm(GgmlType t, KernelPath path) { return t == GgmlType::Q8_0 && path == KernelPath::Avx512Vnni; }

// Bytes of one quantised activation row as the product for (t, path) reads it.
size_t activation_row_bytes(GgmlType t, int64_t K, KernelPath path) {
  if (use_gemm(t, path)) return simd::q8_0_packed_row_bytes(K / QK8_0);
  return ggml_row_size(qmatmul_activation_type(t), K);
}

// Quantises one activation row for (t, path) into out (activation_row_bytes of it).
void quantize_activation(GgmlType t, const float* x, int64_t K, KernelPath path, uint8_t* out) {
  if (!use_gemm(t, path)) return quantize_row(qmatmul_activation_type(t), x, out, K);
  simd::quantize_pack_q8_0(x, K / QK8_0, out);
}

// Rows [n0, n1) of W against all M quantised activation rows (x_row bytes apart). x16: W is
// repacked (repack_q8_0_x16) and n0 a multiple of 16.
void product_rows(GgmlType t, const uint8_t* w, int64_t K, int64_t n0, int64_t n1, const uint8_t* xq, size_t x_row,
                  int64_t M, float* y, int64_t ldy, bool accumulate, KernelPath path, bool x16 = false) {
  if (x16)
    return simd::gemm_q8_0x16_vnni(K / QK8_0, w + simd::q8_0_x16_bytes(n0, K / QK8_0), n1 - n0, xq, x_row, M, y + n0,
                                   ldy, accumulate);
  const size_t w_row = ggml_row_size(t, K);
  if (use_gemm(t, path))
    return simd::gemm_q8_0_vnni(K / QK8_0, w + size_t(n0) * w_row, w_row, n1 - n0, xq, x_row, M, y + n0, ldy,
                                accumulate);
  for (int64_t m = 0; m < M; ++m) {
    const uint8_t* xr = xq + size_t(m) * x_row;
    float* yr = y + m * ldy;
    for (int64_t n = n0; n < n1; ++n) {
      const float v = row_dot(t, K, w + size_t(n) * w_row, xr, path);
      yr[n] = accumulate ? yr[n] + v : v;
    }
  }
}

// Grown-only byte buffer whose data starts 64-byte aligned (the packed rows are read with
// aligned loads).
uint8_t* aligned_scratch(std::vector<uint8_t>& v, size_t bytes) {
  if (v.size() < bytes + 64) v.resize(bytes + 64);
  const uintptr_t p = reinterpret_cast<uintptr_t>(v.data());
  return v.data() + ((64 - p % 64) % 64);
}

}  // namespace

namespace {
// The knobs below are for same-process A/B measurements (bench_inference --ab-split,
// --ab-qmatmul); the environment variables set them for a whole run.
int64_t batch_max_rows = [] {
  const char* env = std::getenv("WHALE_QMATMUL_BATCH");
  return env ? std::max<int64_t>(0, std::atoll(env)) : 2;
}();
QmatvecSplit split = [] {
  QmatvecSplit s;
  if (const char* env = std::getenv("WHALE_SPLIT_STATIC")) s.static_percent = std::clamp(std::atoi(env), 0, 100);
  if (const char* env = std::getenv("WHALE_SPLIT_CHUNK")) s.chunk_units = std::max<int64_t>(1, std::atoll(env));
  return s;
}();
}  // namespace

namespace {
void check_x16(KernelPath path, int64_t K, const char* what) {
  if (!q8_0_x16_available(path))
    throw Error(what, "repacked Q8_0 weights need the AVX-512 VNNI kernels, which this CPU (or WHALE_KERNEL_PATH) does not use");
  check_blocks(K, QK8_0, what);
}

void qmatmul_impl(GgmlType t, const void* W, int64_t N, int64_t K, const float* x, int64_t M, float* y, bool accumulate,
                  KernelPath path, bool x16) {
  qmatmul_activation_type(t);  // throws for unsupported types
  check_blocks(K, ggml_block_size(t), "qmatmul");
  if (M <= 0 || N <= 0) return;
  if (M <= batch_max_rows) {
    // A decode or verify step's product: contiguous row ranges per thread (qmatvec_batch), so
    // the kernel's linear prefetch runs through a thread's whole share instead of stopping at
    // each 16-row tile (same kernel per row: the same bits).
    const QMatvec job{t, W, N, K, x, y, accumulate, M, x16};
    return qmatvec_batch(&job, 1, path);
  }
  const size_t x_row = (activation_row_bytes(t, K, path) + 63) / 64 * 64;
  // Quantised activations: per calling thread, grown only (decode reuses it without allocating).
  thread_local std::vector<uint8_t> xq;
  uint8_t* xq_data = aligned_scratch(xq, size_t(M) * x_row);
#pragma omp parallel for schedule(static) if (M > 1)
  for (int64_t m = 0; m < M; ++m) quantize_activation(t, x + m * K, K, path, xq_data + size_t(m) * x_row);
  const uint8_t* w = static_cast<const uint8_t*>(W);
  // Tiles of weight rows stay in cache while every activation row passes over them (larger
  // tiles for long batches, so the activations stream from L2/L3 fewer times).
  const int64_t tile_rows = M > 64 ? 64 : 16;
  const int64_t tiles = (N + tile_rows - 1) / tile_rows;
#pragma omp parallel for schedule(static)
  for (int64_t tile = 0; tile < tiles; ++tile) {
    const int64_t n0 = tile * tile_rows, n1 = std::min(N, n0 + tile_rows);
    product_rows(t, w, K, n0, n1, xq_data, x_row, M, y, N, accumulate, path, x16);
  }
}
}  // namespace

void qmatmul(GgmlType t, const void* W, int64_t N, int64_t K, const float* x, int64_t M, float* y, bool accumulate,
             KernelPath path) {
  qmatmul_impl(t, W, N, K, x, M, y, accumulate, path, false);
}

bool q8_0_x16_available(KernelPath path) { return use_gemm(GgmlType::Q8_0, path); }

size_t q8_0_x16_bytes(int64_t N, int64_t K) { return simd::q8_0_x16_bytes(N, K / QK8_0); }

void repack_q8_0_x16(const void* W, int64_t N, int64_t K, void* out) {
  check_x16(kernel_path(), K, "repack_q8_0_x16");
  const int64_t nb = K / QK8_0, tiles = (N + 15) / 16;
  const size_t w_row = ggml_row_size(GgmlType::Q8_0, K);
  const uint8_t* w = static_cast<const uint8_t*>(W);
  uint8_t* o = static_cast<uint8_t*>(out);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; ++t)
    simd::repack_q8_0_x16(nb, w + size_t(t * 16) * w_row, w_row, std::min<int64_t>(16, N - t * 16),
                          o + simd::q8_0_x16_bytes(t * 16, nb));
}

void qmatmul_x16(const void* W, int64_t N, int64_t K, const float* x, int64_t M, float* y, bool accumulate) {
  const KernelPath path = kernel_path();
  check_x16(path, K, "qmatmul_x16");
  qmatmul_impl(GgmlType::Q8_0, W, N, K, x, M, y, accumulate, path, true);
}

namespace {
void qmatmul_rows_impl(GgmlType t, const void* W, int64_t N, int64_t K, const float* x, int64_t ldx, int64_t M, float* y,
                       int64_t ldy, bool accumulate, KernelPath path, bool x16) {
  qmatmul_activation_type(t);
  check_blocks(K, ggml_block_size(t), "qmatmul_rows");
  if (M <= 0 || N <= 0) return;
  const size_t x_row = (activation_row_bytes(t, K, path) + 63) / 64 * 64;
  thread_local std::vector<uint8_t> xq;  // per worker; grows only
  uint8_t* xq_data = aligned_scratch(xq, size_t(M) * x_row);
  for (int64_t m = 0; m < M; ++m) quantize_activation(t, x + m * ldx, K, path, xq_data + size_t(m) * x_row);
  product_rows(t, static_cast<const uint8_t*>(W), K, 0, N, xq_data, x_row, M, y, ldy, accumulate, path, x16);
}
}  // namespace

void qmatmul_rows(GgmlType t, const void* W, int64_t N, int64_t K, const float* x, int64_t ldx, int64_t M, float* y,
                  int64_t ldy, bool accumulate, KernelPath path) {
  qmatmul_rows_impl(t, W, N, K, x, ldx, M, y, ldy, accumulate, path, false);
}

void qmatmul_rows_x16(const void* W, int64_t N, int64_t K, const float* x, int64_t ldx, int64_t M, float* y,
                      int64_t ldy, bool accumulate) {
  const KernelPath path = kernel_path();
  check_x16(path, K, "qmatmul_rows_x16");
  qmatmul_rows_impl(GgmlType::Q8_0, W, N, K, x, ldx, M, y, ldy, accumulate, path, true);
}

void set_qmatvec_split(QmatvecSplit s) {
  s.static_percent = std::clamp(s.static_percent, 0, 100);
  s.chunk_units = std::max<int64_t>(1, s.chunk_units);
  split = s;
}
QmatvecSplit qmatvec_split() { return split; }
void set_qmatmul_batch_rows(int64_t max_rows) { batch_max_rows = std::max<int64_t>(0, max_rows); }

void qmatvec_batch(const QMatvec* jobs, int64_t count, KernelPath path) {
  // Per calling thread, grown only: job j's quantised activation at xq[x_at[j]]; its weight
  // rows weigh M each in the work split, job j's first at cost_at[j].
  thread_local std::vector<uint8_t> xq;
  thread_local std::vector<size_t> x_at;
  thread_local std::vector<int64_t> cost_at;
  x_at.resize(size_t(count) + 1);
  cost_at.resize(size_t(count) + 1);
  x_at[0] = 0;
  cost_at[0] = 0;
  int64_t max_m = 0;
  for (int64_t j = 0; j < count; ++j) {
    const QMatvec& q = jobs[j];
    qmatmul_activation_type(q.type);
    check_blocks(q.K, ggml_block_size(q.type), "qmatvec_batch");
    if (q.x16 && (q.type != GgmlType::Q8_0 || !q8_0_x16_available(path)))
      throw Error("qmatvec_batch", "a repacked (x16) job needs Q8_0 weights and the AVX-512 VNNI kernels");
    // Each job's rows start 64-byte aligned: a Q8_0 job (34-byte blocks) may precede a Q8_K one,
    // whose float scale needs 4-byte alignment (UBSan caught the misaligned access).
    const int64_t M = std::max<int64_t>(q.M, 0);
    max_m = std::max(max_m, M);
    const size_t x_row = (activation_row_bytes(q.type, q.K, path) + 63) / 64 * 64;
    x_at[size_t(j) + 1] = x_at[size_t(j)] + size_t(M) * x_row;
    cost_at[size_t(j) + 1] = cost_at[size_t(j)] + M * std::max<int64_t>(q.N, 0);
  }
  uint8_t* xq_data = aligned_scratch(xq, x_at[size_t(count)]);
  for (int64_t j = 0; j < count; ++j) {
    const QMatvec& q = jobs[j];
    const size_t x_row = (activation_row_bytes(q.type, q.K, path) + 63) / 64 * 64;
    for (int64_t m = 0; m < q.M; ++m)
      quantize_activation(q.type, q.x + m * q.K, q.K, path, xq_data + x_at[size_t(j)] + size_t(m) * x_row);
  }
  const int64_t total = cost_at[size_t(count)];
  const size_t* xa = x_at.data();
  const int64_t* ca = cost_at.data();
  // Work units [begin, end): row n of job j is unit cost_at[j] + n * M; a range takes the rows
  // whose first unit falls in it.
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t j = 0; j < count; ++j) {
      const QMatvec& q = jobs[j];
      if (q.M <= 0 || q.N <= 0 || ca[j + 1] <= begin || ca[j] >= end) continue;
      // Repacked weights go in whole tiles of 16 rows: a tile is taken by the range its first
      // row's first unit falls in.
      const int64_t align = q.x16 ? 16 : 1;
      auto first_row_at = [&](int64_t c) {
        const int64_t row = (std::max<int64_t>(c - ca[j], 0) + q.M - 1) / q.M;
        return std::min(q.N, (row + align - 1) / align * align);
      };
      const int64_t n0 = first_row_at(begin), n1 = first_row_at(end);
      if (n1 <= n0) continue;
      const size_t x_row = (activation_row_bytes(q.type, q.K, path) + 63) / 64 * 64;
      product_rows(q.type, static_cast<const uint8_t*>(q.W), q.K, n0, n1, xq_data + xa[j], x_row, q.M, q.y, q.N,
                   q.accumulate, path, q.x16);
    }
  };
  // The dynamic tail only for decode and verify steps (M <= 2): prefill jobs keep whole
  // contiguous shares, whose 16-row tiles and packed panels small chunks would cut up.
  const QmatvecSplit sp = split;
  const bool dynamic = sp.static_percent < 100 && max_m <= 2;
  const int64_t static_units = dynamic ? total * sp.static_percent / 100 : total, chunk_units = sp.chunk_units;
  std::atomic<int64_t> next{static_units};
#pragma omp parallel
  {
    // Contiguous equal shares of the (static part of the) work, rows weighted by their
    // activation rows; then, with the dynamic split, the rest in chunks claimed in order, so a
    // thread whose memory runs slower does less of it instead of holding the other at the join.
    const int threads = omp_get_num_threads(), id = omp_get_thread_num();
    run(static_units * id / threads, static_units * (id + 1) / threads);
    if (dynamic)
      for (;;) {
        const int64_t c = next.fetch_add(chunk_units, std::memory_order_relaxed);
        if (c >= total) break;
        run(c, std::min(total, c + chunk_units));
      }
  }
}

}  // namespace whale
