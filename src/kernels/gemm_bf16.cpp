#include "kernels/gemm_bf16.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <dnnl.hpp>
#include <unordered_map>

#include "core/dtype.h"
#include "core/error.h"

namespace whale {

namespace {

// core/dtype.h's f32_to_bf16, written branch-free so the loop vectorises.
inline uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan = (bits >> 16) | 0x40u;  // quiet NaN, sign and payload top kept
  return uint16_t((bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

constexpr int64_t kParallelElements = 1 << 16;  // below this a conversion is not worth waking threads

}  // namespace

void round_to_bf16(const float* x, uint16_t* y, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelElements)
  for (int64_t i = 0; i < n; ++i) y[i] = to_bf16(x[i]);
}

void round_to_bf16(const float* x, int64_t rows, int64_t cols, int64_t ld, uint16_t* y) {
  if (ld == cols) return round_to_bf16(x, y, rows * cols);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelElements)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = to_bf16(x[r * ld + c]);
}

namespace {

struct Key {
  int64_t M, N, K, lda, ldb, ldc;
  float alpha, beta;
  bool ta, tb;
  int threads;
  bool operator==(const Key&) const = default;
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    uint64_t h = 1469598103934665603ull;
    const auto mix = [&](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    for (int64_t v : {k.M, k.N, k.K, k.lda, k.ldb, k.ldc}) mix(uint64_t(v));
    uint32_t a, b;
    std::memcpy(&a, &k.alpha, 4);
    std::memcpy(&b, &k.beta, 4);
    mix(a);
    mix(b);
    mix(uint64_t(k.ta) | uint64_t(k.tb) << 1 | uint64_t(k.threads) << 2);
    return size_t(h);
  }
};

// One matmul primitive and, for a fixed shape, its memory objects, whose data handles are set
// per call. A primitive with a run-time M or K gets its memory descriptors per call.
struct Entry {
  dnnl::matmul primitive;
  dnnl::memory a, b, c;
  bool runtime = false;
};

// A dimension that varies from call to call (the rows an expert receives) counts as varying once
// this many values of it were seen for otherwise the same GEMM. It is then padded to a multiple
// of kRowBucket (a bounded set of AMX primitives; one primitive per exact size grew memory by
// ~100 MB per training step), or, where padding does not apply, left to run time (one
// primitive, but oneDNN's slower AVX512 gemm:jit instead of AMX).
constexpr size_t kSizesBeforeRuntime = 3;
constexpr int64_t kRowBucket = 32;
constexpr int64_t kRuntime = DNNL_RUNTIME_DIM_VAL;

// op(A) [M, K]: stored [M, K] (strides lda, 1) or, transposed, [K, M] (strides 1, lda).
dnnl::memory::desc operand_desc(int64_t rows, int64_t cols, bool trans, int64_t ld, dnnl::memory::data_type dt) {
  const dnnl::memory::dims strides = trans ? dnnl::memory::dims{1, ld} : dnnl::memory::dims{ld, 1};
  return dnnl::memory::desc({rows, cols}, dt, strides);
}

void check_strides(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
  WHALE_CHECK(lda >= std::max<int64_t>(ta ? M : K, 1) && ldb >= std::max<int64_t>(tb ? K : N, 1) && ldc >= N,
              "gemm_bf16",
              "a leading dimension is shorter than its row (M " + std::to_string(M) + ", N " + std::to_string(N) +
                  ", K " + std::to_string(K) + ", lda " + std::to_string(lda) + ", ldb " + std::to_string(ldb) +
                  ", ldc " + std::to_string(ldc) + ")");
}

}  // namespace

struct GemmBf16::Impl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::unordered_map<Key, Entry, KeyHash> cache;  // M or K may be kRuntime
  std::unordered_map<Key, std::vector<int64_t>, KeyHash> sizes_m, sizes_k;  // M (or K) zeroed: sizes seen

  dnnl::matmul::primitive_desc describe(const Key& k) const {
    using dt = dnnl::memory::data_type;
    const auto a = operand_desc(k.M, k.K, k.ta, k.lda, dt::bf16);
    const auto b = operand_desc(k.K, k.N, k.tb, k.ldb, dt::bf16);
    const dnnl::memory::desc c({k.M, k.N}, dt::f32, dnnl::memory::dims{k.ldc, 1});
    dnnl::primitive_attr attr;
    if (k.alpha != 1.0f) attr.set_output_scales(0, {k.alpha});  // applied before the sum post-op
    if (k.beta != 0.0f) {
      dnnl::post_ops ops;
      ops.append_sum(k.beta);
      attr.set_post_ops(ops);
    }
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, engine);
  }

  // Whether `size` is one of many seen for this class of GEMM (and records it).
  static bool varies(std::unordered_map<Key, std::vector<int64_t>, KeyHash>& seen, const Key& cls, int64_t size) {
    std::vector<int64_t>& v = seen[cls];
    if (std::find(v.begin(), v.end(), size) == v.end() && v.size() < kSizesBeforeRuntime) v.push_back(size);
    return v.size() >= kSizesBeforeRuntime;
  }

  // The primitive for k, made on first use; with runtime_m or runtime_k one primitive with that
  // dimension left to run time serves every size of it.
  Entry& get(const Key& k, bool runtime_m, bool runtime_k) {
    Key make = k;
    if (runtime_m) make.M = kRuntime;
    else if (runtime_k) make.K = kRuntime;
    auto it = cache.find(make);
    if (it != cache.end()) return it->second;
    const auto pd = describe(make);
    Entry e{dnnl::matmul(pd), {}, {}, {}, runtime_m || runtime_k};
    if (!e.runtime) {
      e.a = dnnl::memory(pd.src_desc(), engine, DNNL_MEMORY_NONE);
      e.b = dnnl::memory(pd.weights_desc(), engine, DNNL_MEMORY_NONE);
      e.c = dnnl::memory(pd.dst_desc(), engine, DNNL_MEMORY_NONE);
    }
    return cache.emplace(make, std::move(e)).first->second;
  }
};

GemmBf16::GemmBf16() : impl_(std::make_unique<Impl>()) {
  // Probe the kernel oneDNN picks for a typical projection shape. Only kernels on BF16 hardware
  // (AMX, AVX512-BF16: "brg:avx512_core_amx_bf16", "brg:avx512_core_bf16") beat SGEMM; without
  // them oneDNN emulates BF16 (gemm:jit, measured 10-17 GFLOP/s on 2 threads with AVX512 alone,
  // below OpenBLAS SGEMM) or, below AVX512, has no BF16 matmul at all.
  const Key probe{256, 256, 256, 256, 256, 256, 1.0f, 0.0f, false, true, omp_get_max_threads()};
  try {
    kernel_ = impl_->describe(probe).impl_info_str();
  } catch (const dnnl::error&) {
    kernel_ = "none";
  }
  native_ = kernel_.find("bf16") != std::string::npos;
}

GemmBf16::~GemmBf16() = default;

size_t GemmBf16::cached_primitives() const { return impl_->cache.size(); }

void GemmBf16::gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                    int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // empty contraction: C = beta C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  check_strides(trans_a, trans_b, M, N, K, lda, ldb, ldc);
  if (!native_) {  // the same arithmetic on SGEMM: BF16 values are exact in FP32
    const int64_t a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
    const int64_t b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
    a32_.resize(size_t(a_rows * a_cols));
    b32_.resize(size_t(b_rows * b_cols));
    for (int64_t r = 0; r < a_rows; ++r)
      for (int64_t c = 0; c < a_cols; ++c) a32_[size_t(r * a_cols + c)] = bf16_to_f32(A[r * lda + c]);
    for (int64_t r = 0; r < b_rows; ++r)
      for (int64_t c = 0; c < b_cols; ++c) b32_[size_t(r * b_cols + c)] = bf16_to_f32(B[r * ldb + c]);
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(M),
                int(N), int(K), alpha, a32_.data(), int(a_cols), b32_.data(), int(b_cols), beta, C, int(ldc));
    return;
  }
  // A dimension that varies per call (an expert's rows: M in Fprop and Dgrad, the contraction K
  // in Wgrad) is padded with zero rows up to a multiple of kRowBucket, so a few fixed-shape
  // primitives (AMX) serve every size; a run-time-dimension primitive would run oneDNN's
  // AVX512 gemm:jit instead, which took ~2/3 of the BF16 GEMM time of a train-50m step.
  // A strided C (an attention head's slice of a wider row) is likewise computed into a dense
  // buffer: oneDNN 2.6 picks gemm:jit, not AMX, for a C whose row stride is not N.
  Key cls_m{0, N, K, lda, ldb, ldc, alpha, beta, trans_a, trans_b, 0}, cls_k{M, N, 0, lda, ldb, ldc, alpha, beta,
                                                                             trans_a, trans_b, 0};
  const bool vary_m = Impl::varies(impl_->sizes_m, cls_m, M);
  const bool vary_k = !vary_m && Impl::varies(impl_->sizes_k, cls_k, K);
  const bool pad_m = vary_m && !trans_a, pad_k = vary_k && trans_a && !trans_b;
  // Other varying cases (none in training) keep a run-time-dimension primitive.
  const bool runtime_m = vary_m && !pad_m, runtime_k = vary_k && !pad_k;
  const auto round_up = [](int64_t n) { return (n + kRowBucket - 1) / kRowBucket * kRowBucket; };
  if (pad_k) {  // Wgrad: A stored [K, M], B stored [K, N]; zero rows add nothing
    const int64_t Kp = round_up(K);
    apad_.resize(size_t(Kp * M));
    bpad_.resize(size_t(Kp * N));
    for (int64_t k = 0; k < K; ++k) {
      std::memcpy(apad_.data() + k * M, A + k * lda, size_t(M) * 2);
      std::memcpy(bpad_.data() + k * N, B + k * ldb, size_t(N) * 2);
    }
    std::memset(apad_.data() + K * M, 0, size_t((Kp - K) * M) * 2);
    std::memset(bpad_.data() + K * N, 0, size_t((Kp - K) * N) * 2);
    A = apad_.data(), lda = M, B = bpad_.data(), ldb = N, K = Kp;
  }
  const int64_t Mp = pad_m ? round_up(M) : M;
  if (Mp != M) {  // A stored [M, K]: padded rows give output rows nobody reads
    apad_.resize(size_t(Mp * K));
    for (int64_t i = 0; i < M; ++i) std::memcpy(apad_.data() + i * K, A + i * lda, size_t(K) * 2);
    std::memset(apad_.data() + M * K, 0, size_t((Mp - M) * K) * 2);
    A = apad_.data(), lda = K;
  }
  if (Mp == M && (ldc == N || runtime_m || runtime_k))
    return run(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, runtime_m, runtime_k);
  c32_.resize(size_t(Mp * N));
  if (beta != 0.0f) {
    for (int64_t i = 0; i < M; ++i) std::memcpy(c32_.data() + i * N, C + i * ldc, size_t(N) * 4);
    std::memset(c32_.data() + M * N, 0, size_t((Mp - M) * N) * 4);
  }
  run(trans_a, trans_b, Mp, N, K, alpha, A, lda, B, ldb, beta, c32_.data(), N, false, false);
  for (int64_t i = 0; i < M; ++i) std::memcpy(C + i * ldc, c32_.data() + i * N, size_t(N) * 4);
}

void GemmBf16::run(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                   int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc, bool runtime_m,
                   bool runtime_k) {
  const Key key{M, N, K, lda, ldb, ldc, alpha, beta, trans_a, trans_b, omp_get_max_threads()};
  try {
    Entry& e = impl_->get(key, runtime_m, runtime_k);
    if (e.runtime) {
      using dt = dnnl::memory::data_type;
      const dnnl::engine& eng = impl_->engine;
      dnnl::memory a(operand_desc(M, K, trans_a, lda, dt::bf16), eng, const_cast<uint16_t*>(A));
      dnnl::memory b(operand_desc(K, N, trans_b, ldb, dt::bf16), eng, const_cast<uint16_t*>(B));
      dnnl::memory c(dnnl::memory::desc({M, N}, dt::f32, dnnl::memory::dims{ldc, 1}), eng, C);
      e.primitive.execute(impl_->stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    } else {
      e.a.set_data_handle(const_cast<uint16_t*>(A));
      e.b.set_data_handle(const_cast<uint16_t*>(B));
      e.c.set_data_handle(C);
      e.primitive.execute(impl_->stream, {{DNNL_ARG_SRC, e.a}, {DNNL_ARG_WEIGHTS, e.b}, {DNNL_ARG_DST, e.c}});
    }
    impl_->stream.wait();
  } catch (const dnnl::error& err) {
    throw Error("gemm_bf16", "oneDNN matmul " + std::to_string(M) + "x" + std::to_string(N) + "x" +
                                 std::to_string(K) + " failed: " + err.what());
  }
}

void GemmBf16::gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  check_strides(trans_a, trans_b, M, N, K, lda, ldb, ldc);
  const int64_t a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
  const int64_t b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
  a16_.resize(size_t(std::max<int64_t>(a_rows * a_cols, 1)));
  b16_.resize(size_t(std::max<int64_t>(b_rows * b_cols, 1)));
  round_to_bf16(A, a_rows, a_cols, lda, a16_.data());
  round_to_bf16(B, b_rows, b_cols, ldb, b16_.data());
  gemm(trans_a, trans_b, M, N, K, alpha, a16_.data(), a_cols, b16_.data(), b_cols, beta, C, ldc);
}

}  // namespace whale
