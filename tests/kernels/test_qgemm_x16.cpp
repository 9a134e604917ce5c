// Q8_0 weights repacked in tiles of 16 rows (qmatmul.h: repack_q8_0_x16, qmatmul_x16, x16
// jobs in qmatvec_batch). The layout is checked byte by byte on a hand-built matrix; products
// are checked bit for bit against the kernels' defined chain written as a scalar loop (per
// block in order: the exact integer dot, then acc = fmaf(dot, d_w * d_x, acc)) for every M on
// both the VNNI registers and the AMX tiles, and against the row-layout kernels through every
// work split of qmatvec_batch.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "kernels/cpu_features.h"
#include "kernels/qmatmul.h"
#include "kernels/qmatmul_simd.h"
#include "qgemm_test_util.h"

using namespace whale;
using whale::testing::fma_chain;
using whale::testing::quantize_q8_0;
using whale::testing::values_with_outliers;

namespace {

std::vector<uint8_t> repacked(const std::vector<block_q8_0>& w, int64_t N, int64_t K) {
  std::vector<uint8_t> out(q8_0_x16_bytes(N, K), 0xee);
  repack_q8_0_x16(w.data(), N, K, out.data());
  return out;
}

// Restores the AMX threshold when a test ends.
struct AmxThreshold {
  int64_t saved = simd::qgemm_amx_min_rows();
  ~AmxThreshold() { simd::set_qgemm_amx_min_rows(saved); }
};

}  // namespace

TEST(QuantGemmX16, LayoutIsTheTransposedQuantsPlus128ThenTheScales) {
  if (!q8_0_x16_available(KernelPath::Avx512Vnni) || !cpu_supports(KernelPath::Avx512Vnni))
    GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  // 17 rows of 2 blocks: row n's quant j of block b is (n + 3j + 5b) mod 256 - 128, its scale
  // 0x3c00 + n + b (fp16 1.0 and up). Two tiles, the second with 1 row.
  const int64_t N = 17, nb = 2, K = nb * QK8_0;
  std::vector<block_q8_0> w(size_t(N * nb));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t b = 0; b < nb; ++b) {
      block_q8_0& blk = w[size_t(n * nb + b)];
      blk.d = uint16_t(0x3c00 + n + b);
      for (int j = 0; j < QK8_0; ++j) blk.qs[j] = int8_t(int((n + 3 * j + 5 * b) % 256) - 128);
    }
  const auto p = repacked(w, N, K);
  ASSERT_EQ(p.size(), size_t(2 * nb * 544));
  for (int64_t tile = 0; tile < 2; ++tile)
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = p.data() + size_t((tile * nb + b) * 544);
      for (int k = 0; k < 8; ++k)
        for (int lane = 0; lane < 16; ++lane)
          for (int byte = 0; byte < 4; ++byte) {
            const int64_t n = tile * 16 + lane;
            // Register k, lane n: quants 4k..4k+3 of row n, each + 128 (a missing row: 0 + 128).
            const int want = n < N ? (int(n) + 3 * (4 * k + byte) + 5 * int(b)) % 256 : 128;
            ASSERT_EQ(int(blk[64 * k + 4 * lane + byte]), want) << "tile " << tile << " block " << b << " k " << k;
          }
      for (int lane = 0; lane < 16; ++lane) {
        uint16_t d;
        std::memcpy(&d, blk + 512 + 2 * lane, 2);
        const int64_t n = tile * 16 + lane;
        EXPECT_EQ(d, n < N ? uint16_t(0x3c00 + n + b) : 0) << "tile " << tile << " block " << b << " lane " << lane;
      }
    }
}

TEST(QuantGemmX16, ProductIsTheScalarFmaChainBitForBitOnRegistersAndTiles) {
  if (!cpu_supports(KernelPath::Avx512Vnni)) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  AmxThreshold restore;
  // Rows around the 16-row tile, M on both sides of 16 (17 and 40: several groups per tile),
  // K with 1, 5 and 70 blocks; each shape with the AMX tiles off and, where the CPU has them,
  // taking every M from 1 (the threshold forced down).
  for (int64_t amx_from : {int64_t(1) << 30, int64_t(1)})
    for (int64_t nb : {1, 5, 70}) {
      simd::set_qgemm_amx_min_rows(amx_from);
      const int64_t K = nb * QK8_0;
      for (int64_t N : {1, 15, 16, 17, 33}) {
        const auto wq = quantize_q8_0(values_with_outliers(N * K, 700 + uint64_t(nb * 13 + N)), N, K);
        const auto p = repacked(wq, N, K);
        for (int64_t M : {1, 2, 5, 6, 8, 16, 17, 40}) {
          const auto xf = values_with_outliers(M * K, 800 + uint64_t(nb * 5 + M));
          const auto xq = quantize_q8_0(xf, M, K);
          std::vector<float> y(size_t(M * N), -1.0f);
          qmatmul_x16(p.data(), N, K, xf.data(), M, y.data());
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n)
              ASSERT_EQ(y[size_t(m * N + n)], fma_chain(wq.data() + n * nb, xq.data() + m * nb, nb))
                  << "AMX from " << amx_from << " nb " << nb << " N " << N << " M " << M << " m " << m << " n " << n;
        }
      }
    }
}

TEST(QuantGemmX16, ExtremeQuantsAndAccumulateAreExact) {
  if (!cpu_supports(KernelPath::Avx512Vnni)) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  AmxThreshold restore;
  // Weights of only -128 and 127 against +-127 activations (the +128 offset and the AMX
  // correction must still give the exact dot), accumulating into what y held.
  const int64_t nb = 9, K = nb * QK8_0, N = 19;
  std::vector<block_q8_0> wq(size_t(N * nb));
  for (size_t i = 0; i < wq.size(); ++i) {
    wq[i].d = f32_to_f16(0.01f * float(1 + i % 7));
    for (int j = 0; j < QK8_0; ++j) wq[i].qs[j] = int8_t((i + size_t(j)) % 3 == 0 ? 127 : -128);
  }
  const auto p = repacked(wq, N, K);
  for (int64_t amx_from : {int64_t(1) << 30, int64_t(1)})
    for (int64_t M : {1, 2, 8, 20}) {
      simd::set_qgemm_amx_min_rows(amx_from);
      std::vector<float> xf(size_t(M * K));
      for (size_t i = 0; i < xf.size(); ++i) xf[i] = i % 5 == 0 ? -1.0f : 1.0f;
      const auto xq = quantize_q8_0(xf, M, K);
      std::vector<float> y(size_t(M * N), 0.5f);
      qmatmul_x16(p.data(), N, K, xf.data(), M, y.data(), true);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n)
          ASSERT_EQ(y[size_t(m * N + n)], 0.5f + fma_chain(wq.data() + n * nb, xq.data() + m * nb, nb))
              << "AMX from " << amx_from << " M " << M << " n " << n;
    }
}

TEST(QuantGemmX16, BatchJobsEqualTheRowLayoutThroughEveryWorkSplit) {
  if (!cpu_supports(KernelPath::Avx512Vnni)) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  // Repacked jobs go to threads in whole 16-row tiles. Mixed with row-layout jobs, accumulating
  // into 0.25 (a row done twice or skipped changes its value), every split and thread count
  // must give the row layout's bits.
  struct Shape {
    int64_t N, K, M;
    bool x16;
  };
  const std::vector<Shape> shapes{{37, 96, 1, true}, {300, 64, 1, true}, {129, 160, 2, true},
                                  {5, 32, 1, true},  {64, 64, 1, false}, {100, 64, 3, true}};
  std::vector<std::vector<block_q8_0>> rows;
  std::vector<std::vector<uint8_t>> tiles;
  std::vector<std::vector<float>> inputs;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    rows.push_back(quantize_q8_0(values_with_outliers(s.N * s.K, 900 + i), s.N, s.K));
    tiles.push_back(repacked(rows.back(), s.N, s.K));
    inputs.push_back(values_with_outliers(s.M * s.K, 950 + i));
  }
  auto run = [&](bool use_x16) {
    std::vector<std::vector<float>> out;
    std::vector<QMatvec> jobs;
    for (const Shape& s : shapes) out.emplace_back(size_t(s.M * s.N), 0.25f);
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Shape& s = shapes[i];
      const bool x16 = use_x16 && s.x16;
      jobs.push_back({GgmlType::Q8_0, x16 ? static_cast<const void*>(tiles[i].data()) : rows[i].data(), s.N, s.K,
                      inputs[i].data(), out[i].data(), true, s.M, x16});
    }
    qmatvec_batch(jobs.data(), int64_t(jobs.size()), KernelPath::Avx512Vnni);
    return out;
  };
  std::vector<std::vector<float>> want;
  whale::testing::for_each_work_split([&] { want = run(false); }, [&](const QmatvecSplit& sp, int nt) {
    const auto got = run(true);
    for (size_t i = 0; i < shapes.size(); ++i)
      EXPECT_EQ(got[i], want[i]) << "split " << sp.static_percent << "% / " << sp.chunk_units << " threads " << nt
                                 << " job " << i;
  });
}

TEST(QuantGemmX16, BadUseIsAClearError) {
  if (!cpu_supports(KernelPath::Avx512Vnni)) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  std::vector<uint8_t> buf(4096);
  std::vector<float> x(64), y(64);
  // K not a multiple of the 32-value block.
  EXPECT_THROW(repack_q8_0_x16(buf.data(), 2, 40, buf.data()), Error);
  EXPECT_THROW(qmatmul_x16(buf.data(), 2, 40, x.data(), 1, y.data()), Error);
  // A repacked job of another type, or on a path without the x16 kernels.
  QMatvec job{GgmlType::Q4_0, buf.data(), 2, 32, x.data(), y.data(), false, 1, true};
  EXPECT_THROW(qmatvec_batch(&job, 1, KernelPath::Avx512Vnni), Error);
  job.type = GgmlType::Q8_0;
  EXPECT_THROW(qmatvec_batch(&job, 1, KernelPath::Avx2), Error);
}
