#include "kernels/linear_bf16.h"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 flags its own AVX-512 intrinsics
#pragma GCC diagnostic ignored "-Wuninitialized"        // (the _mm512_undefined operands of masked forms)

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unistd.h>
#include <sys/syscall.h>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/cpu_features.h"

namespace whale {

const char* bf16_path_name(Bf16Path p) {
  switch (p) {
    case Bf16Path::Widen: return "widen";
    case Bf16Path::Avx512Bf16: return "avx512bf16";
    case Bf16Path::Amx: return "amx";
  }
  return "?";
}

namespace {
// Linux hands out the AMX tile state only to processes that ask (arch_prctl XTILEDATA); without
// it the first tile instruction faults. Asked once per process.
bool amx_permitted() {
#if defined(__x86_64__) && defined(__linux__)
  static const bool ok = [] {
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}
}  // namespace

bool cpu_supports(Bf16Path p) {
  if (p == Bf16Path::Widen) return true;
#if defined(__x86_64__)
  const bool bf16 = cpu_supports(KernelPath::Avx512) && __builtin_cpu_supports("avx512bf16");
  if (p == Bf16Path::Avx512Bf16) return bf16;
  return bf16 && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") && amx_permitted();
#else
  return false;
#endif
}

namespace {
std::atomic<int> g_bf16_path{-1};  // process-wide, like kernel_path() in cpu_features.h
}  // namespace

Bf16Path bf16_path() {
  int p = g_bf16_path.load(std::memory_order_relaxed);
  if (p >= 0) return Bf16Path(p);
  Bf16Path chosen = Bf16Path::Widen;
  for (Bf16Path c : {Bf16Path::Amx, Bf16Path::Avx512Bf16})
    if (cpu_supports(c)) {
      chosen = c;
      break;
    }
  if (const char* env = std::getenv("WHALE_BF16_PATH"); env && *env) {
    const std::string name = env;
    bool known = false;
    for (Bf16Path c : {Bf16Path::Widen, Bf16Path::Avx512Bf16, Bf16Path::Amx})
      if (name == bf16_path_name(c)) {
        if (!cpu_supports(c)) throw Error("WHALE_BF16_PATH", "is '" + name + "' but this CPU does not support it");
        chosen = c;
        known = true;
      }
    if (!known) throw Error("WHALE_BF16_PATH", "is '" + name + "'; expected widen, avx512bf16 or amx");
  }
  g_bf16_path.store(int(chosen), std::memory_order_relaxed);
  return chosen;
}

void set_bf16_path(Bf16Path p) {
  if (!cpu_supports(p)) throw Error("BF16 path", std::string(bf16_path_name(p)) + " is not supported by this CPU");
  g_bf16_path.store(int(p), std::memory_order_relaxed);
}

namespace {

int64_t row_stride(int64_t K) { return (K + 31) / 32 * 32; }

// ---- avx512bf16 ----

#define WHALE_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

WHALE_BF16_TARGET inline float reduce_add(__m512 v) {
  // A fixed tree (GCC 12's _mm512_reduce_add_ps warns about an undefined operand).
  const __m256 a = _mm512_castps512_ps256(_mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xee)));
  __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  b = _mm_add_ps(b, _mm_movehl_ps(b, b));
  b = _mm_add_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}

// NR weight rows x MR activation rows: NR * MR accumulators of 16 F32 lanes, each lane summing
// BF16 pairs (vdpbf16ps). The K loop, its masked tail and the final lane reduction are the same
// for every tile shape, so each output is computed the same way whatever NR, MR and M are.
template <int NR, int MR>
WHALE_BF16_TARGET void tile(const uint16_t* x, int64_t x_stride, const uint16_t* w, int64_t K, float* y, int64_t ldy,
                            bool accumulate) {
  __m512 acc[NR][MR];
  for (int i = 0; i < NR; ++i)
    for (int r = 0; r < MR; ++r) acc[i][r] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512i wv[NR];
    for (int i = 0; i < NR; ++i) wv[i] = _mm512_loadu_si512(w + i * K + k);
    for (int r = 0; r < MR; ++r) {
      const __m512i xv = _mm512_loadu_si512(x + r * x_stride + k);
      for (int i = 0; i < NR; ++i) acc[i][r] = _mm512_dpbf16_ps(acc[i][r], (__m512bh)xv, (__m512bh)wv[i]);
    }
  }
  if (k < K) {
    // Weight rows are K long (masked load); activation rows are zero-padded to a multiple of 32.
    const __mmask32 mask = __mmask32((1u << unsigned(K - k)) - 1u);
    __m512i wv[NR];
    for (int i = 0; i < NR; ++i) wv[i] = _mm512_maskz_loadu_epi16(mask, w + i * K + k);
    for (int r = 0; r < MR; ++r) {
      const __m512i xv = _mm512_loadu_si512(x + r * x_stride + k);
      for (int i = 0; i < NR; ++i) acc[i][r] = _mm512_dpbf16_ps(acc[i][r], (__m512bh)xv, (__m512bh)wv[i]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int i = 0; i < NR; ++i) {
      const float v = reduce_add(acc[i][r]);
      float& out = y[r * ldy + i];
      out = accumulate ? out + v : v;
    }
}

using TileFn = void (*)(const uint16_t*, int64_t, const uint16_t*, int64_t, float*, int64_t, bool);

template <int NR>
constexpr TileFn tile_for(int mr) {
  return mr == 1 ? tile<NR, 1> : mr == 2 ? tile<NR, 2> : mr == 3 ? tile<NR, 3> : tile<NR, 4>;
}

void avx512_range(const Bf16Activations& x, const uint16_t* w, int64_t n_begin, int64_t n_end, float* y, int64_t ldy,
                  bool accumulate) {
  const int64_t K = x.K, stride = row_stride(K);
  for (int64_t n = n_begin; n < n_end; n += 4) {
    const int nr = int(std::min<int64_t>(4, n_end - n));
    for (int64_t m = 0; m < x.M; m += 4) {
      const int mr = int(std::min<int64_t>(4, x.M - m));
      const TileFn f = nr == 1 ? tile_for<1>(mr) : nr == 2 ? tile_for<2>(mr) : nr == 3 ? tile_for<3>(mr) : tile_for<4>(mr);
      f(x.rows.data() + m * stride, stride, w + n * K, K, y + m * ldy + n, ldy, accumulate);
    }
  }
}

// ---- amx ----

#define WHALE_AMX_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))

constexpr int64_t kAmxRows = 16;  // weight rows per A tile, activation rows per B tile
constexpr int64_t kPrefetchAhead = 512;  // weight columns (BF16) ahead of the A tile being loaded

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0 and 6: A (16 weight rows x 32 BF16), 1 and 7: B (16 pairs x `cols` activation
// columns), 2..5: C (16 x `cols` F32) for up to four groups of activation rows: 16 columns for
// whole groups of 16 rows, fewer for the last group of M % 16 rows, whose packed activations are
// then `cols` words wide instead of 16 (a lone row is its plain BF16 row: packing it writes
// 1/16 of the cache lines). TDPBF16PS computes each C element on its own (Intel SDM), so the
// column count does not change any result. Loaded at the start of every range: another library
// (oneDNN) may have configured this thread's tiles differently.
WHALE_AMX_TARGET void amx_configure(int64_t cols) {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = uint16_t(t == 0 || t == 6 ? 64 : 4 * cols);
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
}

// C[g] (16 x 16) = W[16 rows, K] · x_g^T for G groups of 16 activation rows. `tail` holds the
// last K % 32 columns of the 16 weight rows zero-padded to 32 (the A tile would otherwise read
// past the row; the activations are zero there, but weights past the end could be NaN).
// Tiles are not renamed, so steps alternate between two A/B tile pairs (0/1 and 6/7): the loads
// of one step need not wait for the products of the previous one.
// The tile intrinsics take their tile numbers as literal tokens (not template arguments).
#define WHALE_AMX_STEP(TA, TB, a, a_stride, b)           \
  do {                                                   \
    _tile_loadd(TA, a, a_stride);                        \
    _tile_loadd(TB, b, b_stride);                        \
    _tile_dpbf16ps(2, TA, TB);                           \
    if constexpr (G > 1) {                               \
      _tile_loadd(TB, (b) + group_stride, b_stride);     \
      _tile_dpbf16ps(3, TA, TB);                         \
    }                                                    \
    if constexpr (G > 2) {                               \
      _tile_loadd(TB, (b) + 2 * group_stride, b_stride); \
      _tile_dpbf16ps(4, TA, TB);                         \
    }                                                    \
    if constexpr (G > 3) {                               \
      _tile_loadd(TB, (b) + 3 * group_stride, b_stride); \
      _tile_dpbf16ps(5, TA, TB);                         \
    }                                                    \
  } while (0)

// b_stride: bytes per pair row of the packed activations (4 per column).
template <int G>
WHALE_AMX_TARGET void amx_block(const uint16_t* w, int64_t K, const uint16_t* packed, int64_t group_stride,
                                int64_t b_stride, const uint16_t* tail, float* c) {
  const int64_t pair_k = b_stride / 4;  // BF16 values of packed per weight column k
  if constexpr (G > 0) _tile_zero(2);
  if constexpr (G > 1) _tile_zero(3);
  if constexpr (G > 2) _tile_zero(4);
  if constexpr (G > 3) _tile_zero(5);
  // Weight rows are prefetched a few steps ahead: decode is memory-bound and the 16 rows of an
  // A tile are 16 separate streams.
  auto prefetch = [&](int64_t k) {
    if (k + kPrefetchAhead < K)
      for (int64_t i = 0; i < kAmxRows; ++i) _mm_prefetch((const char*)(w + i * K + k + kPrefetchAhead), _MM_HINT_T0);
  };
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {  // pair row k / 2 of the packed activations starts at k * 16
    prefetch(k);
    WHALE_AMX_STEP(0, 1, w + k, K * 2, packed + k * pair_k);
    prefetch(k + 32);
    WHALE_AMX_STEP(6, 7, w + k + 32, K * 2, packed + (k + 32) * pair_k);
  }
  if (k + 32 <= K) {
    WHALE_AMX_STEP(0, 1, w + k, K * 2, packed + k * pair_k);
    k += 32;
  }
  if (k < K) WHALE_AMX_STEP(6, 7, tail, 64, packed + k * pair_k);
  _tile_stored(2, c, 64);
  if constexpr (G > 1) _tile_stored(3, c + 256, 64);
  if constexpr (G > 2) _tile_stored(4, c + 512, 64);
  if constexpr (G > 3) _tile_stored(5, c + 768, 64);
}

WHALE_AMX_TARGET void amx_release() { _tile_release(); }

void amx_range(const Bf16Activations& x, const uint16_t* w, int64_t n_begin, int64_t n_end, float* y, int64_t ldy,
               bool accumulate) {
  const int64_t K = x.K, M = x.M, stride = row_stride(K);
  const int64_t full = M / kAmxRows, last_cols = M % kAmxRows, group_stride = stride * kAmxRows;
  // Whole 16-row blocks from the start of the range; the rest (N % 16 at the end) takes the
  // avx512bf16 kernel, which is M-invariant too.
  const int64_t amx_end = n_begin + (n_end - n_begin) / kAmxRows * kAmxRows;
  if (amx_end > n_begin) {
    alignas(64) float c[4 * 256];
    alignas(64) uint16_t tail[kAmxRows * 32];
    // Whole groups and the narrower last group need different tile shapes: both passes run
    // over chunks of weight rows small enough to stay in L2 between them.
    constexpr int64_t kChunk = 64;
    for (int64_t n0 = n_begin; n0 < amx_end; n0 += kChunk) {
      const int64_t n1 = std::min(amx_end, n0 + kChunk);
      for (int pass = 0; pass < 2; ++pass) {
        const int64_t cols = pass == 0 ? kAmxRows : last_cols;
        if ((pass == 0 && full == 0) || cols == 0) continue;
        amx_configure(cols);
        for (int64_t n = n0; n < n1; n += kAmxRows) {
          const uint16_t* wb = w + n * K;
          if (K % 32) {
            const int64_t k0 = K / 32 * 32;
            std::fill(tail, tail + kAmxRows * 32, uint16_t(0));
            for (int64_t i = 0; i < kAmxRows; ++i) std::copy(wb + i * K + k0, wb + i * K + K, tail + i * 32);
          }
          const int64_t g_begin = pass == 0 ? 0 : full, g_end = pass == 0 ? full : full + 1;
          for (int64_t g0 = g_begin; g0 < g_end; g0 += 4) {
            const int64_t G = std::min<int64_t>(4, g_end - g0);
            const uint16_t* p = x.packed.data() + g0 * group_stride;
            if (G == 1) amx_block<1>(wb, K, p, group_stride, 4 * cols, tail, c);
            else if (G == 2) amx_block<2>(wb, K, p, group_stride, 4 * cols, tail, c);
            else if (G == 3) amx_block<3>(wb, K, p, group_stride, 4 * cols, tail, c);
            else amx_block<4>(wb, K, p, group_stride, 4 * cols, tail, c);
            // c[g][i][j]: weight row n + i, activation row (g0 + g) * 16 + j.
            for (int64_t g = 0; g < G; ++g)
              for (int64_t j = 0; j < cols; ++j) {
                const int64_t m = (g0 + g) * kAmxRows + j;
                float* yr = y + m * ldy + n;
                for (int64_t i = 0; i < kAmxRows; ++i) {
                  const float v = c[g * 256 + i * 16 + j];
                  yr[i] = accumulate ? yr[i] + v : v;
                }
              }
          }
        }
      }
    }
    amx_release();
  }
  if (amx_end < n_end) avx512_range(x, w, amx_end, n_end, y, ldy, accumulate);
}

}  // namespace

namespace {
// core/dtype.h's f32_to_bf16 (round to nearest even, NaN stays NaN) without the branch, so the
// loop vectorises; the same bits for every input.
inline uint16_t round_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan = (bits >> 16) | 0x40u;
  return uint16_t((bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}
}  // namespace

void Bf16Activations::pack(const float* x, int64_t rows_in, int64_t K_in) {
  M = rows_in;
  K = K_in;
  const int64_t stride = row_stride(K);
  if (rows.size() < size_t(M * stride)) rows.resize(size_t(M * stride));
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    uint16_t* o = rows.data() + m * stride;
    for (int64_t k = 0; k < K; ++k) o[k] = round_bf16(xr[k]);
    std::fill(o + K, o + stride, uint16_t(0));
  }
  if (bf16_path() != Bf16Path::Amx) return;
  // B tiles: group g, pair row p holds (x[m][2p], x[m][2p + 1]) for the group's rows m, as one
  // 32-bit word per row: 16 words for whole groups, M % 16 for the last (see amx_configure).
  const int64_t groups = (M + kAmxRows - 1) / kAmxRows, pairs = stride / 2;
  if (packed.size() < size_t(groups * stride * kAmxRows)) packed.resize(size_t(groups * stride * kAmxRows));
  for (int64_t m = 0; m < M; ++m) {
    const int64_t g = m / kAmxRows, j = m % kAmxRows, cols = std::min(kAmxRows, M - g * kAmxRows);
    uint16_t* dst = packed.data() + g * stride * kAmxRows + 2 * j;
    const uint16_t* src = rows.data() + m * stride;
    if (cols == 1) {
      std::memcpy(dst, src, size_t(stride) * 2);
      continue;
    }
    for (int64_t p = 0; p < pairs; ++p) std::memcpy(dst + p * 2 * cols, src + 2 * p, 4);
  }
}

int64_t linear_bf16_block_rows() { return bf16_path() == Bf16Path::Amx ? kAmxRows : 4; }

void linear_bf16_range(const Bf16Activations& x, const uint16_t* w, int64_t n_begin, int64_t n_end, float* y,
                       int64_t ldy, bool accumulate) {
  if (n_end <= n_begin || x.M == 0) return;
  if (bf16_path() == Bf16Path::Amx) return amx_range(x, w, n_begin, n_end, y, ldy, accumulate);
  avx512_range(x, w, n_begin, n_end, y, ldy, accumulate);
}

// ---- widen (F32 arithmetic on widened weights) ----

namespace {

// R activation rows against one BF16 weight row; each widened weight vector is used R times.
// Two accumulators per row, 16 columns per step, then a scalar tail.
template <int R>
void dot_bf16_rows(const uint16_t* w, const float* x, int64_t K, float* out) {
  int64_t i = 0;
  float sum[R] = {};
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  for (; i + 16 <= K; i += 16) {
    const __m256 w0 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(w + i))), 16));
    const __m256 w1 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(w + i + 8))), 16));
    for (int r = 0; r < R; ++r) {
      acc0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + r * K + i), acc0[r]);
      acc1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + r * K + i + 8), acc1[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m256 acc = _mm256_add_ps(acc0[r], acc1[r]);
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    lo = _mm_hadd_ps(lo, lo);
    lo = _mm_hadd_ps(lo, lo);
    sum[r] = _mm_cvtss_f32(lo);
  }
#endif
  for (; i < K; ++i) {
    const float wi = bf16_to_f32(w[i]);
    for (int r = 0; r < R; ++r) sum[r] += wi * x[r * K + i];
  }
  for (int r = 0; r < R; ++r) out[r] = sum[r];
}

void linear_bf16_widen(const float* x, int64_t M, const uint16_t* w, int64_t N, int64_t K, float* y,
                       bool accumulate) {
  if (M <= 32) {
    // Decode: bandwidth-bound, read each weight row once for all M activation rows.
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const uint16_t* row = w + n * K;
      for (int64_t m = 0; m < M; m += 4) {
        float v[4];
        const int64_t r = std::min<int64_t>(4, M - m);
        if (r == 4) dot_bf16_rows<4>(row, x + m * K, K, v);
        else if (r == 3) dot_bf16_rows<3>(row, x + m * K, K, v);
        else if (r == 2) dot_bf16_rows<2>(row, x + m * K, K, v);
        else dot_bf16_rows<1>(row, x + m * K, K, v);
        for (int64_t i = 0; i < r; ++i) {
          float& out = y[(m + i) * N + n];
          out = accumulate ? out + v[i] : v[i];
        }
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

}  // namespace

void linear_bf16(const float* x, int64_t M, const uint16_t* w, int64_t N, int64_t K, float* y, bool accumulate) {
  if (M == 0 || N == 0) return;
  if (bf16_path() == Bf16Path::Widen) return linear_bf16_widen(x, M, w, N, K, y, accumulate);
  thread_local Bf16Activations scratch;  // only grows: decode steps allocate nothing here
  Bf16Activations& xb = scratch;         // the caller's, shared with the team (not per thread)
  xb.pack(x, M, K);
  const int64_t rows = linear_bf16_block_rows(), blocks = (N + rows - 1) / rows;
  const int threads = int(std::min<int64_t>(blocks, omp_get_max_threads()));
  // Contiguous ranges of whole blocks per thread: one tile configuration per thread and call.
#pragma omp parallel num_threads(threads) shared(xb)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
    linear_bf16_range(xb, w, std::min(N, b0 * rows), std::min(N, b1 * rows), y, N, accumulate);
  }
}

}  // namespace whale
