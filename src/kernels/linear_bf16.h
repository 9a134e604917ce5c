// Linear layers with BF16 weights, y = x · W^T (x float32, W bfloat16 as stored in checkpoints).
//
// Three paths, chosen once at run time (the best the CPU has):
//  - amx: activations rounded to BF16 (round to nearest even) once per call; AMX tiles multiply
//    16 weight rows by 16 activation rows per TDPBF16PS (weights as the A tile, straight from
//    their row-major layout; activations packed in pairs as the B tile). Weight rows beyond a
//    multiple of 16 take the avx512bf16 kernel.
//  - avx512bf16: the same rounding; vdpbf16ps over 4 weight rows x 4 activation rows per tile.
//  - widen: weights widened to F32 (AVX2 FMA up to 32 rows, SGEMM on widened blocks beyond);
//    activations stay F32.
// In the amx and avx512bf16 paths every output element takes the same instructions whatever M
// is and wherever its row sits in the batch, so a sequence's result does not depend on what
// else is decoded with it: decode, batched decode and prefill agree bit for bit. In the widen
// path a row's result can change with M (SGEMM beyond 32 rows).
// WHALE_BF16_PATH=widen|avx512bf16|amx picks one (tests, comparisons); asking for a path the
// CPU (or, for AMX, the kernel: arch_prctl XTILEDATA) lacks is an error.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace whale {

enum class Bf16Path { Widen, Avx512Bf16, Amx };

const char* bf16_path_name(Bf16Path p);
bool cpu_supports(Bf16Path p);
Bf16Path bf16_path();            // the path in use (best, WHALE_BF16_PATH, or the last set)
void set_bf16_path(Bf16Path p);  // throws whale::Error when the CPU lacks it

// y[M, N] (+)= x[M, K] · W[N, K]^T, parallel over N (OpenMP).
void linear_bf16(const float* x, int64_t M, const uint16_t* w, int64_t N, int64_t K, float* y, bool accumulate);

// For callers that run many small products in one parallel region (MoE experts): activations
// rounded and laid out once for the current path (amx or avx512bf16), then serial products
// over ranges of weight rows. Buffers only grow, so reuse one Bf16Activations per caller.
struct Bf16Activations {
  int64_t M = 0, K = 0;
  std::vector<uint16_t> rows;    // [M, stride] row-major, zero-padded to a multiple of 32
  std::vector<uint16_t> packed;  // amx: [ceil(M/16)][stride/2][16][2] pairs per column
  void pack(const float* x, int64_t M, int64_t K);
};
// Weight rows are processed in blocks of this many (a range that starts on a multiple of it
// and ends on one or at N takes the fast kernel throughout).
int64_t linear_bf16_block_rows();
// Serial, inside or outside a parallel region: y[m * ldy + n] (+)= x[m] · W[n] for n in
// [n_begin, n_end). bf16_path() must be amx or avx512bf16.
void linear_bf16_range(const Bf16Activations& x, const uint16_t* w, int64_t n_begin, int64_t n_end, float* y,
                       int64_t ldy, bool accumulate);

}  // namespace whale
