// Q8_0 weights x Q8_0 activations as a register-blocked matrix-matrix product with AVX-512
// VNNI (declared in kernels/qmatmul_simd.h). Each output is the scalar definition's chain
// (dot_q8_0_scalar, ggml's vec_dot_q8_0_q8_0): per block b in order, the exact integer dot
// s_b of the 32 weight and activation quants, then acc = fma(float(s_b), d_w * d_x, acc). The
// chain does not depend on M or on the tile an output falls in, so a row's result is the same
// in a decode, verify or prefill batch (bit for bit), and it equals a scalar loop with fmaf.
//
// Layout: 16 weight rows are one tile; a block of the tile is transposed into 8 registers
// (register k, lane n = quant bytes 4k..4k+3 of row n, plus 128 so that vpdpbusd can take them
// as its unsigned operand) and each activation row's 4-byte group k is broadcast as the signed
// operand: 8 vpdpbusd give the 16 rows' block dots of one activation row at once, with no
// horizontal reduction, and the float work (convert, scale product, fma) is one instruction each
// per 16 outputs and block. The +128 is removed by starting each dot at -128 * sum(x quants),
// stored with the packed activations. Few activation rows (decode, a prefill's routed expert):
// the tile is transposed block by block in registers; more than 16: once per tile into a panel
// in L1/L2 that every group of 16 activation rows then reads. From 8 activation rows, on a CPU
// with AMX-INT8, the block dots come from tile products instead (same integers, same float
// steps: the same bits).
#include <immintrin.h>

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstddef>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "kernels/qmatmul_simd.h"

#define WHALE_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

namespace whale::simd {

namespace {

constexpr int kTile = 16;  // weight rows per tile: one per float lane
// Activation rows from which the AMX tiles (when usable) beat the VNNI registers: measured on
// one Sapphire Rapids core with the weights in cache, AMX runs at ~13.5 GB/s of weights for any
// M <= 16 (bound by its per-block loads and stores), VNNI at ~22 GB/s at M = 1 falling to ~11
// at M = 8. WHALE_QGEMM_AMX_MIN overrides it (for such measurements; same bits either way).
int64_t amx_min_rows = [] {
  const char* env = std::getenv("WHALE_QGEMM_AMX_MIN");
  return env ? std::max<int64_t>(1, std::atoll(env)) : 8;
}();

// Offsets inside one packed activation row of nb blocks.
inline const int8_t* x_quants(const uint8_t* row) { return reinterpret_cast<const int8_t*>(row); }
inline const float* x_scales(const uint8_t* row, int64_t nb) {
  return reinterpret_cast<const float*>(row + size_t(nb) * QK8_0);
}
inline const int32_t* x_corrections(const uint8_t* row, int64_t nb) {
  return reinterpret_cast<const int32_t*>(row + size_t(nb) * (QK8_0 + 4));
}

// 16 rows of 32 bytes (rows base + n * stride; rows < 16: the missing ones read as zero)
// transposed: t[k] lane n = bytes 4k..4k+3 of row n. An 8x8 transpose of 32-bit groups in each
// 256-bit half (rows 0-7 in the low half, 8-15 in the high one).
WHALE_VNNI inline void transpose16x8(const uint8_t* base, size_t stride, int64_t rows, __m512i t[8]) {
  auto row = [&](int n) {
    return n < rows ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + size_t(n) * stride))
                    : _mm256_setzero_si256();
  };
  __m512i a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm512_inserti64x4(_mm512_castsi256_si512(row(j)), row(j + 8), 1);
  const __m512i t0 = _mm512_unpacklo_epi32(a[0], a[1]), t1 = _mm512_unpackhi_epi32(a[0], a[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(a[2], a[3]), t3 = _mm512_unpackhi_epi32(a[2], a[3]);
  const __m512i t4 = _mm512_unpacklo_epi32(a[4], a[5]), t5 = _mm512_unpackhi_epi32(a[4], a[5]);
  const __m512i t6 = _mm512_unpacklo_epi32(a[6], a[7]), t7 = _mm512_unpackhi_epi32(a[6], a[7]);
  const __m512i s0 = _mm512_unpacklo_epi64(t0, t2), s1 = _mm512_unpackhi_epi64(t0, t2);
  const __m512i s2 = _mm512_unpacklo_epi64(t1, t3), s3 = _mm512_unpackhi_epi64(t1, t3);
  const __m512i s4 = _mm512_unpacklo_epi64(t4, t6), s5 = _mm512_unpackhi_epi64(t4, t6);
  const __m512i s6 = _mm512_unpacklo_epi64(t5, t7), s7 = _mm512_unpackhi_epi64(t5, t7);
  const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
  t[0] = _mm512_permutex2var_epi64(s0, lo, s4);
  t[1] = _mm512_permutex2var_epi64(s1, lo, s5);
  t[2] = _mm512_permutex2var_epi64(s2, lo, s6);
  t[3] = _mm512_permutex2var_epi64(s3, lo, s7);
  t[4] = _mm512_permutex2var_epi64(s0, hi, s4);
  t[5] = _mm512_permutex2var_epi64(s1, hi, s5);
  t[6] = _mm512_permutex2var_epi64(s2, hi, s6);
  t[7] = _mm512_permutex2var_epi64(s3, hi, s7);
}

// Block b of the tile's weight rows transposed, each byte plus 128 (vpdpbusd's unsigned operand).
WHALE_VNNI inline void transpose_block(const uint8_t* W, size_t w_stride, int64_t rows, int64_t b, __m512i t[8]) {
  transpose16x8(W + size_t(b) * sizeof(block_q8_0) + offsetof(block_q8_0, qs), w_stride, rows, t);
  const __m512i offset = _mm512_set1_epi8(char(0x80));
  for (int k = 0; k < 8; ++k) t[k] = _mm512_xor_si512(t[k], offset);
}

// Software prefetch of block b of the tile's rows (about a pair of blocks per cache line):
// without it the 16 row streams leave the loads waiting on memory (several activation rows:
// tile_direct<C >= 2>, AMX).
const int64_t kAhead = [] {
  const char* env = std::getenv("WHALE_QGEMM_AHEAD");
  return env ? std::atoll(env) : 8;
}();

// The decode kernel (one activation row, tile_row1) prefetches linearly instead: a tile's 16
// rows are one contiguous region read block by block (16 strided streams), and consecutive
// tiles are consecutive regions, so per block it prefetches the next 576 bytes (>= the 544 of
// a tile's block) prefetch_bytes ahead into L2, up to the end of the call's rows: one front
// moving through the weights ahead of the 16 streams. On the full V2-Lite Q8_0 file (2 cores,
// many 1-6 MB matrices per token) decode went from 5.3-5.8 to 5.9-7.1 tok/s in alternating
// runs; on one 142 MB matrix, where the hardware prefetchers have long runs to lock on, it
// changed nothing measurable, and for several activation rows the per-row prefetch above did
// better there (17 against 14 GB/s at M = 2). WHALE_QGEMM_PREFETCH_KB sets the distance in KiB
// (default 48; 0 turns it off).
size_t env_prefetch_bytes(size_t fallback) {
  const char* env = std::getenv("WHALE_QGEMM_PREFETCH_KB");
  return env ? size_t(std::max<long long>(0, std::atoll(env))) * 1024 : fallback;
}

size_t prefetch_bytes = env_prefetch_bytes(size_t(48) << 10);

// The repacked (x16) kernel's prefetch, whose default depends on the vendor:
// - On an Intel Sapphire Rapids VM (2 cores, 14-31 GB/s), 48 KiB ahead read a 1 GB set of
//   expert matrices at 90-104% of the probe, against 64-82% without it.
// - On an AMD Zen 5 VM (EPYC, family 26; 2 cores, 55-62 GB/s), every software prefetch made
//   repacked V2-Lite decode slower: 8, 16, 48, 96 and 192 KiB ahead, with the T0, T1 and NTA
//   hints, gave 1.01-1.42x the step time of none (same-process A/Bs, bench_inference
//   --ab-prefetch --prefetch-kb). Its hardware prefetchers follow a tile's one stream alone.
// - The rows kernel above keeps its prefetch on both: on the Zen 5, its 16 row streams 2 KB
//   apart decoded in 0.72x the step time with 48 KiB ahead than without (WHALE_REPACK=0).
size_t qgemm_x16_prefetch_default() { return __builtin_cpu_is("amd") ? 0 : size_t(48) << 10; }

size_t x16_prefetch_bytes = env_prefetch_bytes(qgemm_x16_prefetch_default());

inline void prefetch_ahead(const uint8_t* tile, int64_t b, const uint8_t* end) {
  const uint8_t* p = tile + prefetch_bytes + size_t(b) * (kTile * sizeof(block_q8_0));
  for (int l = 0; l < 9 * 64; l += 64)
    if (p + l < end) _mm_prefetch(reinterpret_cast<const char*>(p + l), _MM_HINT_T1);
}

inline void prefetch_rows(const uint8_t* W, size_t w_stride, int64_t rows, int64_t b) {
  const int64_t n_end = std::min<int64_t>(rows, kTile);
  for (int64_t n = 0; n < n_end; ++n)
    _mm_prefetch(reinterpret_cast<const char*>(W + size_t(n) * w_stride + size_t(b) * sizeof(block_q8_0)), _MM_HINT_T0);
}

// The fp16 scales of block b of the tile's rows as stored (0 for missing rows): one masked
// gather of the 4 bytes at each block's start (the scale, then two quants), narrowed.
WHALE_VNNI inline __m256i raw_scales(const uint8_t* W, size_t w_stride, int64_t rows, int64_t b) {
  const __m512i index = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(int32_t(w_stride)));
  const __mmask16 valid = rows >= kTile ? __mmask16(0xffff) : __mmask16((1u << rows) - 1);
  const __m512i words = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, index,
                                                    W + size_t(b) * sizeof(block_q8_0), 1);
  return _mm512_cvtepi32_epi16(words);
}

// The same as 16 floats.
WHALE_VNNI inline __m512 weight_scales(const uint8_t* W, size_t w_stride, int64_t rows, int64_t b) {
  return _mm512_cvtph_ps(raw_scales(W, w_stride, rows, b));
}

// One block of the tile against C activation rows: acc[c] lane n = the chain for (row c, row n).
template <int C>
WHALE_VNNI inline void block_step(const __m512i t[8], __m512 ws, int64_t b, int64_t nb, const uint8_t* X,
                                  size_t x_stride, __m512 acc[C]) {
#pragma GCC unroll 16
  for (int c = 0; c < C; ++c) {
    const uint8_t* xr = X + size_t(c) * x_stride;
    const int32_t* q = reinterpret_cast<const int32_t*>(x_quants(xr) + b * QK8_0);
    __m512i dot = _mm512_set1_epi32(x_corrections(xr, nb)[b]);
    if constexpr (C >= 6) {  // enough independent rows to hide vpdpbusd's latency
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) dot = _mm512_dpbusd_epi32(dot, t[k], _mm512_set1_epi32(q[k]));
    } else {  // two chains per row (integer sums: the same value)
      __m512i other = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int k = 0; k < 8; k += 2) {
        dot = _mm512_dpbusd_epi32(dot, t[k], _mm512_set1_epi32(q[k]));
        other = _mm512_dpbusd_epi32(other, t[k + 1], _mm512_set1_epi32(q[k + 1]));
      }
      dot = _mm512_add_epi32(dot, other);
    }
    const __m512 scale = _mm512_mul_ps(ws, _mm512_set1_ps(x_scales(xr, nb)[b]));
    acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[c]);
  }
}

template <int C>
WHALE_VNNI inline void store(const __m512 acc[C], int64_t rows, float* y, int64_t ldy, bool accumulate) {
  const __mmask16 valid = rows >= kTile ? __mmask16(0xffff) : __mmask16((1u << rows) - 1);
#pragma GCC unroll 16
  for (int c = 0; c < C; ++c) {
    float* out = y + c * ldy;
    __m512 v = acc[c];
    if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(valid, out), v);
    _mm512_mask_storeu_ps(out, valid, v);
  }
}

// Up to 16 weight rows x C (2-16) activation rows, transposing each block in registers.
template <int C>
WHALE_VNNI void tile_direct(int64_t nb, const uint8_t* W, size_t w_stride, int64_t rows, const uint8_t* X,
                            size_t x_stride, float* y, int64_t ldy, bool accumulate) {
  __m512 acc[C];
#pragma GCC unroll 16
  for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    if (kAhead > 0 && b % 2 == 0 && b + kAhead < nb) prefetch_rows(W, w_stride, rows, b + kAhead);
    __m512i t[8];
    transpose_block(W, w_stride, rows, b, t);
    block_step<C>(t, weight_scales(W, w_stride, rows, b), b, nb, X, x_stride, acc);
  }
  store<C>(acc, rows, y, ldy, accumulate);
}

// One activation row (decode) without the transpose: register j holds rows j and j + 8's 32
// quants of block b (+128), and vpdpbusd against the activation block in both halves leaves 8
// partial sums per row; three unpack/add levels reduce them to one lane per row. The integer
// dots are the same as the transposed kernel's, so are the bits; 14 shuffles per block instead
// of 24 (with the weights in L2, one core: 32-35 instead of 30-32 GB/s).
WHALE_VNNI void tile_row1(int64_t nb, const uint8_t* W, size_t w_stride, int64_t rows, const uint8_t* X, float* y,
                          bool accumulate, const uint8_t* prefetch_end) {
  const __m512i offset = _mm512_set1_epi8(char(0x80));
  const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    if (prefetch_bytes > 0) prefetch_ahead(W, b, prefetch_end);
    const uint8_t* q = W + size_t(b) * sizeof(block_q8_0) + offsetof(block_q8_0, qs);
    auto row = [&](int n) {
      return n < rows ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + size_t(n) * w_stride))
                      : _mm256_setzero_si256();
    };
    const __m512i xb = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x_quants(X) + b * QK8_0)));
    __m512i d[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m512i a = _mm512_inserti64x4(_mm512_castsi256_si512(row(j)), row(j + 8), 1);
      d[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_xor_si512(a, offset), xb);
    }
    __m512i s[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j)
      s[j] = _mm512_add_epi32(_mm512_unpacklo_epi32(d[2 * j], d[2 * j + 1]), _mm512_unpackhi_epi32(d[2 * j], d[2 * j + 1]));
    const __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi64(s[0], s[1]), _mm512_unpackhi_epi64(s[0], s[1]));
    const __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi64(s[2], s[3]), _mm512_unpackhi_epi64(s[2], s[3]));
    const __m512i dot = _mm512_add_epi32(
        _mm512_add_epi32(_mm512_permutex2var_epi64(t0, lo, t1), _mm512_permutex2var_epi64(t0, hi, t1)),
        _mm512_set1_epi32(x_corrections(X, nb)[b]));
    const __m512 scale = _mm512_mul_ps(weight_scales(W, w_stride, rows, b), _mm512_set1_ps(x_scales(X, nb)[b]));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc);
  }
  store<1>(&acc, rows, y, 0, accumulate);
}

// The same from a panel: per block, the 8 transposed registers and then the 16 scales.
constexpr size_t kPanelBlockBytes = 9 * 64;

WHALE_VNNI void fill_panel(int64_t nb, const uint8_t* W, size_t w_stride, int64_t rows, uint8_t* panel) {
  for (int64_t b = 0; b < nb; ++b) {
    __m512i t[8];
    transpose_block(W, w_stride, rows, b, t);
    uint8_t* p = panel + size_t(b) * kPanelBlockBytes;
    for (int k = 0; k < 8; ++k) _mm512_store_si512(p + 64 * k, t[k]);
    _mm512_store_ps(p + 512, weight_scales(W, w_stride, rows, b));
  }
}

// ---- Q8_0 repacked in tiles of 16 rows (repack_q8_0_x16) ----
// Per tile of 16 weight rows and block b, kX16BlockBytes at (tile * nb + b) * 544: the 8
// registers transpose_block makes (quants + 128 in the VNNI layout, 512 bytes), then the 16
// rows' fp16 scales (0 for rows past the matrix's last). Same bytes per block as 16 rows of
// block_q8_0, but one contiguous stream instead of 16 rows 2 KB apart, and no transpose, +128
// or scale gather per block: on a 1 GB set of decode matrices (2 cores) the one-row kernel read
// 90-104% of the probe's bandwidth from this layout, against 66-75% for tile_row1 on the rows.
// The integer dots and float steps are tile_direct's, so are the bits.
constexpr size_t kX16BlockBytes = kQ8_0X16BlockBytes;  // 512 bytes of quants, 32 of scales

WHALE_VNNI inline __m512 x16_scales(const uint8_t* block) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 512)));
}

// The one-stream prefetch: the 576 bytes x16_prefetch_bytes past this block, up to end.
inline void prefetch_x16(const uint8_t* block, const uint8_t* end) {
  const uint8_t* p = block + x16_prefetch_bytes;
  for (int l = 0; l < 9 * 64; l += 64)
    if (p + l < end) _mm_prefetch(reinterpret_cast<const char*>(p + l), _MM_HINT_T1);
}

// Up to 16 weight rows x C (1-16) activation rows from blocks laid out for vpdpbusd: a panel
// (kX16 false: fill_panel's, float scales) or a repacked tile (kX16: fp16 scales, with the
// linear prefetch up to prefetch_end, as it streams from memory).
template <int C, bool kX16>
WHALE_VNNI void tile_blocks(int64_t nb, const uint8_t* P, int64_t rows, const uint8_t* X, size_t x_stride, float* y,
                            int64_t ldy, bool accumulate, const uint8_t* prefetch_end) {
  constexpr size_t kBlock = kX16 ? kX16BlockBytes : kPanelBlockBytes;
  __m512 acc[C];
#pragma GCC unroll 16
  for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* p = P + size_t(b) * kBlock;
    if (kX16 && x16_prefetch_bytes > 0) prefetch_x16(p, prefetch_end);
    __m512i t[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) t[k] = _mm512_loadu_si512(p + 64 * k);
    block_step<C>(t, kX16 ? x16_scales(p) : _mm512_load_ps(p + 512), b, nb, X, x_stride, acc);
  }
  store<C>(acc, rows, y, ldy, accumulate);
}

using DirectFn = void (*)(int64_t, const uint8_t*, size_t, int64_t, const uint8_t*, size_t, float*, int64_t, bool);
using BlocksFn = void (*)(int64_t, const uint8_t*, int64_t, const uint8_t*, size_t, float*, int64_t, bool, const uint8_t*);

template <int... C>
constexpr DirectFn direct_table[] = {tile_direct<C>...};
template <bool kX16, int... C>
constexpr BlocksFn blocks_table[] = {tile_blocks<C, kX16>...};

constexpr const DirectFn* kDirect = direct_table<2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16>;
constexpr const BlocksFn* kPanel = blocks_table<false, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16>;
constexpr const BlocksFn* kX16 = blocks_table<true, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16>;


// ---- AMX-INT8 (Sapphire Rapids and later): the same chain, the integer dots from tiles ----
// Per block b, one tdpbssd of A = 16 weight rows' 32 quants (read in place from the mapped
// weights: tile rows may be any stride apart) by B = 16 activation rows' quants in the VNNI
// layout (B row k, column c = bytes 4k..4k+3 of activation row c, packed once per call) gives
// the 16 x 16 exact block dots C[n][c]; the float steps are then the vector ones above with the
// lanes over activation rows: acc[n] = fma(float(C[n]), d_w[n] * d_x, acc[n]).

#define WHALE_AMX \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8")))

// Whether the CPU has AMX-INT8 and Linux lets this process use the tile data (arch_prctl
// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, once per process). WHALE_QGEMM_AMX=0 turns the
// tiles off (A/B comparisons; results are the same bits either way).
bool amx_usable() {
  static const bool usable = [] {
    const char* env = std::getenv("WHALE_QGEMM_AMX");
    if (env && std::strcmp(env, "0") == 0) return false;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!((d >> 24) & 1) || !((d >> 25) & 1)) return false;  // AMX-TILE, AMX-INT8
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return usable;
}

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0 and 3: C (16 x 16 int32); 1 and 4: A (16 rows x 32 bytes); 2 and 5: B (8 x 64 bytes).
// Two sets, so one block's products run while the previous block's dots are scaled.
// a_rows: the rows of A and C (16, or an activation group's count when A holds activations).
WHALE_AMX void configure_tiles(int a_rows = kTile) {
  TileConfig config;
  for (int set = 0; set < 2; ++set) {
    config.rows[3 * set] = uint8_t(a_rows), config.colsb[3 * set] = 64;
    config.rows[3 * set + 1] = uint8_t(a_rows), config.colsb[3 * set + 1] = 32;
    config.rows[3 * set + 2] = 8, config.colsb[3 * set + 2] = 64;
  }
  // GCC 12 does not see ldtilecfg read the struct and drops the stores above without this.
  asm volatile("" : : "r"(&config) : "memory");
  _tile_loadconfig(&config);
}

constexpr size_t kPackedBBytes = 9 * 64;  // per (16 activation rows, block): B, then 16 scales

// Activation rows [m0, m0 + 16) (cm of them) of every block in the VNNI layout, each block's
// 16 activation scales after it (0 past cm).
WHALE_VNNI void pack_activations(int64_t nb, const uint8_t* X, size_t x_stride, int64_t cm, uint8_t* out) {
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* o = out + size_t(b) * kPackedBBytes;
    __m512i t[8];
    transpose16x8(X + size_t(b) * QK8_0, x_stride, cm, t);
    for (int k = 0; k < 8; ++k) _mm512_store_si512(o + 64 * k, t[k]);
    float* xs = reinterpret_cast<float*>(o + 512);
    for (int c = 0; c < kTile; ++c) xs[c] = c < cm ? x_scales(X + size_t(c) * x_stride, nb)[b] : 0.0f;
  }
}

// One block's scaling: acc[n] (lanes c) += C[n][c] * (d_w[n] * d_x[c]).
WHALE_AMX inline void scale_block(const int32_t* dots, const float* ws, const float* xs, __m512 acc[kTile]) {
  const __m512 xv = _mm512_load_ps(xs);
#pragma GCC unroll 16
  for (int n = 0; n < kTile; ++n) {
    const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(ws[n]), xv);
    acc[n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(dots + kTile * n)), scale, acc[n]);
  }
}

// 16 weight rows (A rows a_stride apart, quants at a + b * 34 + 2) x the packed activations of
// one group of 16 rows, over all blocks; acc[n] lane c = the output for (activation c, row n).
WHALE_AMX void tile_amx(int64_t nb, const uint8_t* a, size_t a_stride, const uint8_t* packed, __m512 acc[kTile]) {
  alignas(64) int32_t dots[2][kTile * kTile];
  alignas(64) float ws[2][kTile];
  for (int n = 0; n < kTile; ++n) acc[n] = _mm512_setzero_ps();
  const uint8_t* quants = a + offsetof(block_q8_0, qs);
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    if (kAhead > 0 && b + kAhead < nb) prefetch_rows(a, a_stride, kTile, b + kAhead);
    const uint8_t* p0 = packed + size_t(b) * kPackedBBytes;
    const uint8_t* p1 = p0 + kPackedBBytes;
    _tile_zero(0);
    _tile_loadd(1, quants + size_t(b) * sizeof(block_q8_0), a_stride);
    _tile_loadd(2, p0, 64);
    _tile_dpbssd(0, 1, 2);
    _tile_zero(3);
    _tile_loadd(4, quants + size_t(b + 1) * sizeof(block_q8_0), a_stride);
    _tile_loadd(5, p1, 64);
    _tile_dpbssd(3, 4, 5);
    _mm512_store_ps(ws[0], weight_scales(a, a_stride, kTile, b));
    _mm512_store_ps(ws[1], weight_scales(a, a_stride, kTile, b + 1));
    _tile_stored(0, dots[0], 64);
    _tile_stored(3, dots[1], 64);
    scale_block(dots[0], ws[0], reinterpret_cast<const float*>(p0 + 512), acc);
    scale_block(dots[1], ws[1], reinterpret_cast<const float*>(p1 + 512), acc);
  }
  if (b < nb) {
    const uint8_t* p0 = packed + size_t(b) * kPackedBBytes;
    _tile_zero(0);
    _tile_loadd(1, quants + size_t(b) * sizeof(block_q8_0), a_stride);
    _tile_loadd(2, p0, 64);
    _tile_dpbssd(0, 1, 2);
    _mm512_store_ps(ws[0], weight_scales(a, a_stride, kTile, b));
    _tile_stored(0, dots[0], 64);
    scale_block(dots[0], ws[0], reinterpret_cast<const float*>(p0 + 512), acc);
  }
}

// The other way round, for calls with fewer weight rows than activation rows (qmatmul hands the
// kernel 16 weight rows at a time): A = cm activation rows' quants read in place from the packed
// rows, B = the weight tile transposed once into a panel (transpose16x8 without the +128, the
// VNNI layout of B), so nothing is packed per activation group. acc[c] lane n, as in the VNNI
// kernel: acc[c] = fma(float(C[c][n]), d_w[n] * d_x[c], acc[c]).
WHALE_VNNI void fill_panel_signed(int64_t nb, const uint8_t* W, size_t w_stride, int64_t rows, uint8_t* panel) {
  for (int64_t b = 0; b < nb; ++b) {
    __m512i t[8];
    transpose16x8(W + size_t(b) * sizeof(block_q8_0) + offsetof(block_q8_0, qs), w_stride, rows, t);
    uint8_t* p = panel + size_t(b) * kPanelBlockBytes;
    for (int k = 0; k < 8; ++k) _mm512_store_si512(p + 64 * k, t[k]);
    _mm512_store_ps(p + 512, weight_scales(W, w_stride, rows, b));
  }
}

WHALE_AMX inline void scale_block_t(const int32_t* dots, const float* ws, const uint8_t* const* xs_rows, int64_t nb,
                                    int64_t b, __m512 acc[kTile]) {
  const __m512 wv = _mm512_load_ps(ws);
#pragma GCC unroll 16
  for (int c = 0; c < kTile; ++c) {
    const __m512 scale = _mm512_mul_ps(wv, _mm512_set1_ps(x_scales(xs_rows[c], nb)[b]));
    acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(dots + kTile * c)), scale, acc[c]);
  }
}

// From a repacked tile (kX16): A = cm activation rows read in place, B = block b's 512 bytes as
// stored (the weights + 128, so tdpbsud: signed A, unsigned B), and each activation row's
// correction (-128 * its block quant sum) added to the dots before the float steps, as the
// VNNI chain starts from it: the same integers, the same bits.
WHALE_AMX inline void scale_block_x16(const int32_t* dots, const uint8_t* block, const uint8_t* const* xs_rows,
                                      int64_t nb, int64_t b, __m512 acc[kTile]) {
  const __m512 wv = x16_scales(block);
#pragma GCC unroll 16
  for (int c = 0; c < kTile; ++c) {
    const __m512 scale = _mm512_mul_ps(wv, _mm512_set1_ps(x_scales(xs_rows[c], nb)[b]));
    const __m512i dot =
        _mm512_add_epi32(_mm512_load_si512(dots + kTile * c), _mm512_set1_epi32(x_corrections(xs_rows[c], nb)[b]));
    acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[c]);
  }
}

// Activation rows X (cm <= 16 of them, the tiles configured for cm rows) x the panel's 16
// weight rows over all blocks (kX16: a repacked tile instead, its B bytes + 128). Rows c >= cm
// of acc hold nothing meaningful.
template <bool kX16>
WHALE_AMX void tile_amx_t(int64_t nb, const uint8_t* panel, const uint8_t* X, size_t x_stride, int64_t cm,
                          __m512 acc[kTile]) {
  constexpr size_t kBlock = kX16 ? kX16BlockBytes : kPanelBlockBytes;
  alignas(64) int32_t dots[2][kTile * kTile] = {};
  const uint8_t* rows[kTile];
  for (int c = 0; c < kTile; ++c) rows[c] = X + size_t(std::min<int64_t>(c, cm - 1)) * x_stride;
  for (int c = 0; c < kTile; ++c) acc[c] = _mm512_setzero_ps();
  auto scale = [&](const int32_t* d, const uint8_t* p, int64_t b) {
    if constexpr (kX16) scale_block_x16(d, p, rows, nb, b, acc);
    else scale_block_t(d, reinterpret_cast<const float*>(p + 512), rows, nb, b, acc);
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    const uint8_t* p0 = panel + size_t(b) * kBlock;
    const uint8_t* p1 = p0 + kBlock;
    _tile_zero(0);
    _tile_loadd(1, X + size_t(b) * QK8_0, x_stride);
    _tile_loadd(2, p0, 64);
    if constexpr (kX16) _tile_dpbsud(0, 1, 2);
    else _tile_dpbssd(0, 1, 2);
    _tile_zero(3);
    _tile_loadd(4, X + size_t(b + 1) * QK8_0, x_stride);
    _tile_loadd(5, p1, 64);
    if constexpr (kX16) _tile_dpbsud(3, 4, 5);
    else _tile_dpbssd(3, 4, 5);
    _tile_stored(0, dots[0], 64);
    _tile_stored(3, dots[1], 64);
    scale(dots[0], p0, b);
    scale(dots[1], p1, b + 1);
  }
  if (b < nb) {
    const uint8_t* p0 = panel + size_t(b) * kBlock;
    _tile_zero(0);
    _tile_loadd(1, X + size_t(b) * QK8_0, x_stride);
    _tile_loadd(2, p0, 64);
    if constexpr (kX16) _tile_dpbsud(0, 1, 2);
    else _tile_dpbssd(0, 1, 2);
    _tile_stored(0, dots[0], 64);
    scale(dots[0], p0, b);
  }
}

// Every 16-row weight tile (tile_at(n0, rows): its panel, or its repacked tile with kX16) x
// every group of 16 activation rows.
template <bool kX16, class TileAt>
WHALE_AMX void amx_t_tiles(int64_t nb, int64_t rows, TileAt tile_at, const uint8_t* X, size_t x_stride, int64_t M,
                           float* y, int64_t ldy, bool accumulate) {
  int configured = 0;
  for (int64_t n0 = 0; n0 < rows; n0 += kTile) {
    const int64_t r = std::min<int64_t>(kTile, rows - n0);
    const __mmask16 valid = r >= kTile ? __mmask16(0xffff) : __mmask16((1u << r) - 1);
    const uint8_t* panel = tile_at(n0, r);
    for (int64_t m = 0; m < M; m += kTile) {
      const int cm = int(std::min<int64_t>(kTile, M - m));
      if (cm != configured) configure_tiles(cm), configured = cm;
      __m512 acc[kTile];
      tile_amx_t<kX16>(nb, panel, X + size_t(m) * x_stride, x_stride, cm, acc);
      for (int c = 0; c < cm; ++c) {
        float* out = y + (m + c) * ldy + n0;
        __m512 v = acc[c];
        if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(valid, out), v);
        _mm512_mask_storeu_ps(out, valid, v);
      }
    }
  }
  _tile_release();
}

WHALE_AMX void gemm_amx_t(int64_t nb, const uint8_t* W, size_t w_stride, int64_t rows, const uint8_t* X,
                          size_t x_stride, int64_t M, float* y, int64_t ldy, bool accumulate) {
  thread_local std::vector<uint8_t> panel_scratch;
  if (panel_scratch.size() < size_t(nb) * kPanelBlockBytes + 64) panel_scratch.resize(size_t(nb) * kPanelBlockBytes + 64);
  uint8_t* panel = panel_scratch.data() + (64 - reinterpret_cast<uintptr_t>(panel_scratch.data()) % 64) % 64;
  auto tile_at = [&](int64_t n0, int64_t r) {
    fill_panel_signed(nb, W + size_t(n0) * w_stride, w_stride, r, panel);
    return static_cast<const uint8_t*>(panel);
  };
  amx_t_tiles<false>(nb, rows, tile_at, X, x_stride, M, y, ldy, accumulate);
}

WHALE_AMX void gemm_amx_x16(int64_t nb, const uint8_t* P, int64_t rows, const uint8_t* X, size_t x_stride, int64_t M,
                            float* y, int64_t ldy, bool accumulate) {
  auto tile_at = [&](int64_t n0, int64_t) { return P + size_t(n0 / kTile) * size_t(nb) * kX16BlockBytes; };
  amx_t_tiles<true>(nb, rows, tile_at, X, x_stride, M, y, ldy, accumulate);
}

WHALE_AMX void gemm_amx(int64_t nb, const uint8_t* W, size_t w_stride, int64_t rows, const uint8_t* X, size_t x_stride,
                        int64_t M, float* y, int64_t ldy, bool accumulate) {
  // Per thread, grown only: the packed activations, and a zero-padded copy of a last tile of
  // fewer than 16 weight rows (the tile loads read 16).
  thread_local std::vector<uint8_t> packed_scratch, tail_scratch;
  const int64_t groups = (M + kTile - 1) / kTile;
  const size_t group_bytes = size_t(nb) * kPackedBBytes;
  if (packed_scratch.size() < size_t(groups) * group_bytes + 64) packed_scratch.resize(size_t(groups) * group_bytes + 64);
  uint8_t* packed = packed_scratch.data() + (64 - reinterpret_cast<uintptr_t>(packed_scratch.data()) % 64) % 64;
  for (int64_t g = 0; g < groups; ++g)
    pack_activations(nb, X + size_t(g * kTile) * x_stride, x_stride, std::min<int64_t>(kTile, M - g * kTile),
                     packed + size_t(g) * group_bytes);
  configure_tiles();
  for (int64_t n0 = 0; n0 < rows; n0 += kTile) {
    const int64_t r = std::min<int64_t>(kTile, rows - n0);
    const uint8_t* a = W + size_t(n0) * w_stride;
    if (r < kTile) {
      const size_t row_bytes = size_t(nb) * sizeof(block_q8_0);
      if (tail_scratch.size() < kTile * row_bytes) tail_scratch.resize(kTile * row_bytes);
      std::memset(tail_scratch.data(), 0, kTile * row_bytes);
      for (int64_t n = 0; n < r; ++n) std::memcpy(tail_scratch.data() + size_t(n) * row_bytes, a + size_t(n) * w_stride, row_bytes);
      a = tail_scratch.data();
    }
    const size_t a_stride = r < kTile ? size_t(nb) * sizeof(block_q8_0) : w_stride;
    for (int64_t g = 0; g < groups; ++g) {
      __m512 acc[kTile];
      tile_amx(nb, a, a_stride, packed + size_t(g) * group_bytes, acc);
      alignas(64) float out[kTile][kTile];
      for (int n = 0; n < kTile; ++n) _mm512_store_ps(out[n], acc[n]);
      const int64_t cm = std::min<int64_t>(kTile, M - g * kTile);
      for (int64_t c = 0; c < cm; ++c) {
        float* yr = y + (g * kTile + c) * ldy + n0;
        for (int64_t n = 0; n < r; ++n) yr[n] = accumulate ? yr[n] + out[n][c] : out[n][c];
      }
    }
  }
  _tile_release();
}


}  // namespace

WHALE_VNNI void repack_q8_0_x16(int64_t nb, const uint8_t* W, size_t w_stride, int64_t rows, uint8_t* out) {
  const size_t tile_bytes = size_t(nb) * kX16BlockBytes;
  for (int64_t n0 = 0; n0 < rows; n0 += kTile) {
    const int64_t r = std::min<int64_t>(kTile, rows - n0);
    const uint8_t* base = W + size_t(n0) * w_stride;
    uint8_t* o = out + size_t(n0 / kTile) * tile_bytes;
    for (int64_t b = 0; b < nb; ++b, o += kX16BlockBytes) {
      __m512i t[8];
      transpose_block(base, w_stride, r, b, t);
      for (int k = 0; k < 8; ++k) _mm512_storeu_si512(o + 64 * k, t[k]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 512), raw_scales(base, w_stride, r, b));
    }
  }
}

WHALE_VNNI void gemm_q8_0x16_vnni(int64_t nb, const uint8_t* P, int64_t rows, const uint8_t* X, size_t x_stride,
                                  int64_t M, float* y, int64_t ldy, bool accumulate) {
  if (M <= 0 || rows <= 0) return;
  if (M >= amx_min_rows && amx_usable()) return gemm_amx_x16(nb, P, rows, X, x_stride, M, y, ldy, accumulate);
  const size_t tile_bytes = size_t(nb) * kX16BlockBytes;
  const int64_t tiles = (rows + kTile - 1) / kTile;
  const uint8_t* end = P + size_t(tiles) * tile_bytes;
  // Per tile, every group of up to 16 activation rows while the tile is in L1/L2.
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t r = std::min<int64_t>(kTile, rows - t * kTile);
    for (int64_t m = 0; m < M; m += kTile)
      kX16[std::min<int64_t>(kTile, M - m) - 1](nb, P + size_t(t) * tile_bytes, r, X + size_t(m) * x_stride, x_stride,
                                                y + m * ldy + t * kTile, ldy, accumulate, end);
  }
}

void set_qgemm_amx_min_rows(int64_t rows) { amx_min_rows = std::max<int64_t>(1, rows); }
int64_t qgemm_amx_min_rows() { return amx_min_rows; }
void set_qgemm_prefetch_bytes(size_t bytes) { prefetch_bytes = x16_prefetch_bytes = bytes; }

void pack_q8_0(const block_q8_0* x, int64_t nb, uint8_t* out) {
  float* scales = reinterpret_cast<float*>(out + size_t(nb) * QK8_0);
  int32_t* corrections = reinterpret_cast<int32_t*>(out + size_t(nb) * (QK8_0 + 4));
  for (int64_t i = 0; i < nb; ++i) {
    std::memcpy(out + size_t(i) * QK8_0, x[i].qs, QK8_0);
    int32_t sum = 0;
    for (int j = 0; j < QK8_0; ++j) sum += x[i].qs[j];
    scales[i] = f16_to_f32(x[i].d);
    corrections[i] = -128 * sum;
  }
}

WHALE_VNNI void quantize_pack_q8_0(const float* x, int64_t nb, uint8_t* out) {
  const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
  float* scales = reinterpret_cast<float*>(out + size_t(nb) * QK8_0);
  int32_t* corrections = reinterpret_cast<int32_t*>(out + size_t(nb) * (QK8_0 + 4));
  for (int64_t i = 0; i < nb; ++i) {
    const __m512 v[2] = {_mm512_loadu_ps(x + 32 * i), _mm512_loadu_ps(x + 32 * i + 16)};
    // quantize_row_q8_0's arithmetic: amax / 127 rounded to fp16, q = roundf(x * (1 / d)).
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    __m512i sum = _mm512_setzero_si512();
    for (int k = 0; k < 2; ++k) {
      // roundf (half away from zero), exactly: trunc, then one step away from zero when the
      // (exact) remainder is at least one half.
      const __m512 m = _mm512_mul_ps(v[k], _mm512_set1_ps(id));
      const __m512 t = _mm512_roundscale_ps(m, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
      const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(m, t)), half, _CMP_GE_OQ);
      const __m512 step = _mm512_or_ps(one, _mm512_and_ps(m, _mm512_set1_ps(-0.0f)));  // +-1 with m's sign
      const __m512i q = _mm512_cvttps_epi32(_mm512_mask_add_ps(t, up, t, step));
      sum = _mm512_add_epi32(sum, q);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + size_t(i) * QK8_0 + 16 * k), _mm512_cvtepi32_epi8(q));
    }
    scales[i] = _cvtsh_ss(f32_to_f16(d));
    corrections[i] = -128 * _mm512_reduce_add_epi32(sum);
  }
}

WHALE_VNNI void gemm_q8_0_vnni(int64_t nb, const uint8_t* W, size_t w_stride, int64_t rows, const uint8_t* X,
                               size_t x_stride, int64_t M, float* y, int64_t ldy, bool accumulate) {
  if (M <= 0 || rows <= 0) return;
  if (M >= amx_min_rows && amx_usable()) {
    // Packing cost: a transpose per 16 weight rows one way, per 16 activation rows the other.
    if (rows < M) return gemm_amx_t(nb, W, w_stride, rows, X, x_stride, M, y, ldy, accumulate);
    return gemm_amx(nb, W, w_stride, rows, X, x_stride, M, y, ldy, accumulate);
  }
  if (M <= kTile) {
    if (M == 1) {
      const uint8_t* end = W + size_t(rows - 1) * w_stride + size_t(nb) * sizeof(block_q8_0);
      for (int64_t n = 0; n < rows; n += kTile)
        tile_row1(nb, W + size_t(n) * w_stride, w_stride, std::min<int64_t>(kTile, rows - n), X, y + n, accumulate, end);
      return;
    }
    const DirectFn f = kDirect[M - 2];
    for (int64_t n = 0; n < rows; n += kTile)
      f(nb, W + size_t(n) * w_stride, w_stride, std::min<int64_t>(kTile, rows - n), X, x_stride, y + n, ldy, accumulate);
    return;
  }
  // Per thread, grown only: the transposed tile (nb * 576 bytes: 36 KB at K = 2048).
  thread_local std::vector<uint8_t> panel_scratch;
  if (panel_scratch.size() < size_t(nb) * kPanelBlockBytes + 64) panel_scratch.resize(size_t(nb) * kPanelBlockBytes + 64);
  uint8_t* panel = panel_scratch.data() + (64 - reinterpret_cast<uintptr_t>(panel_scratch.data()) % 64) % 64;
  for (int64_t n = 0; n < rows; n += kTile) {
    const int64_t r = std::min<int64_t>(kTile, rows - n);
    fill_panel(nb, W + size_t(n) * w_stride, w_stride, r, panel);
    for (int64_t m = 0; m < M; m += kTile) {
      const int64_t c = std::min<int64_t>(kTile, M - m);
      kPanel[c - 1](nb, panel, r, X + size_t(m) * x_stride, x_stride, y + m * ldy + n, ldy, accumulate, nullptr);
    }
  }
}

}  // namespace whale::simd
