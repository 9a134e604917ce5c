// The register-blocked Q8_0 x Q8_0 matrix-matrix kernel (kernels/qgemm_x86.cpp, the VNNI
// path of qmatmul and qmatvec_batch) against a scalar reference built from the format alone:
// per block, the exact integer dot of the weight and activation quants times both fp16 scales,
// summed in double. Tolerance: the kernel rounds once per block (the scale product and one
// fused multiply-add), so |error| <= ~2 * blocks * 2^-24 * sum|w x| per output; we allow
// 1e-5 * sum_blocks |d_w d_x (w·x)| + 1e-6 (K up to 2080 here: 65 blocks).
// Shapes are odd on purpose: an odd number of blocks, row
// counts that leave tails after a 16-row tile, M on both sides of 16.
// Bit for bit, each output is dot_q8_0_scalar's chain with fmaf (a second, scalar
// implementation below), for every M, row count and tile tail.
// And row invariance: a row's output is bit-identical whatever M it is computed in (decode,
// verify and prefill agree), and qmatvec_batch's work split weighted by M gives the same bits
// as qmatmul for every thread count.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "core/dtype.h"
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

// Exact per block, then double: sum_b d_w d_x (w_b · x_b), and the magnitude sum_b |...|.
void reference(const block_q8_0* w, const block_q8_0* x, int64_t nb, double* value, double* magnitude) {
  *value = *magnitude = 0.0;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t s = 0;
    for (int j = 0; j < QK8_0; ++j) s += int32_t(w[b].qs[j]) * int32_t(x[b].qs[j]);
    const double v = double(f16_to_f32(w[b].d)) * double(f16_to_f32(x[b].d)) * double(s);
    *value += v;
    *magnitude += std::fabs(v);
  }
}

// Random weights quantised to each job's type, and M (at least 1) input rows per job.
struct JobShape {
  GgmlType type;
  int64_t N, K, M;
  bool accumulate = false;
};
struct JobData {
  std::vector<std::vector<uint8_t>> weights;
  std::vector<std::vector<float>> inputs;
};
JobData random_jobs(const std::vector<JobShape>& shapes, uint64_t weight_seed, uint64_t input_seed) {
  JobData d;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const JobShape& s = shapes[i];
    const auto w = values_with_outliers(s.N * s.K, weight_seed + i);
    d.weights.emplace_back(ggml_row_size(s.type, s.K) * size_t(s.N));
    for (int64_t r = 0; r < s.N; ++r)
      quantize_row(s.type, w.data() + r * s.K, d.weights.back().data() + size_t(r) * ggml_row_size(s.type, s.K), s.K);
    d.inputs.push_back(values_with_outliers(std::max<int64_t>(s.M, 1) * s.K, input_seed + i));
  }
  return d;
}

}  // namespace

TEST(QuantGemm, Q8_0IsTheScalarFmaChainBitForBit) {
  if (!cpu_supports(KernelPath::Avx512Vnni)) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  // Rows around the 16-row tile (tails of 1, 15 and 1 again), M on both sides of the 16-row
  // register limit (17 and 40 take the panel path, 40 with a tail of 8), K with 1 and 70 blocks.
  for (int64_t nb : {1, 5, 70}) {
    const int64_t K = nb * QK8_0;
    for (int64_t N : {1, 15, 16, 17, 33}) {
      for (int64_t M : {1, 2, 5, 6, 16, 17, 40}) {
        const auto wq = quantize_q8_0(values_with_outliers(N * K, 500 + uint64_t(nb * 13 + N)), N, K);
        const auto xf = values_with_outliers(M * K, 600 + uint64_t(nb * 5 + M));
        const auto xq = quantize_q8_0(xf, M, K);
        std::vector<float> y(size_t(M * N), -1.0f);
        qmatmul(GgmlType::Q8_0, wq.data(), N, K, xf.data(), M, y.data(), false, KernelPath::Avx512Vnni);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n)
            ASSERT_EQ(y[size_t(m * N + n)], fma_chain(wq.data() + n * nb, xq.data() + m * nb, nb))
                << "nb " << nb << " N " << N << " M " << M << " m " << m << " n " << n;
      }
    }
  }
}

TEST(QuantGemm, Q8_0ExtremeWeightQuantsAreExact) {
  if (!cpu_supports(KernelPath::Avx512Vnni)) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  // A file may hold -128 (quantize_row_q8_0 never writes it): the kernels' +128 offset must
  // still give the exact dot. Weights of only -128 and 127, activations at +-127 (all-ones
  // activations quantise to 127), for the decode kernel (M = 1), the transposed tiles and AMX.
  const int64_t nb = 9, K = nb * QK8_0, N = 19;
  std::vector<block_q8_0> wq(size_t(N * nb));
  for (size_t i = 0; i < wq.size(); ++i) {
    wq[i].d = f32_to_f16(0.01f * float(1 + i % 7));
    for (int j = 0; j < QK8_0; ++j) wq[i].qs[j] = int8_t((i + size_t(j)) % 3 == 0 ? 127 : -128);
  }
  for (int64_t M : {1, 2, 8}) {
    std::vector<float> xf(size_t(M * K));
    for (size_t i = 0; i < xf.size(); ++i) xf[i] = i % 5 == 0 ? -1.0f : 1.0f;
    const auto xq = quantize_q8_0(xf, M, K);
    ASSERT_EQ(std::abs(int(xq[0].qs[0])), 127);
    std::vector<float> y(size_t(M * N));
    qmatmul(GgmlType::Q8_0, wq.data(), N, K, xf.data(), M, y.data(), false, KernelPath::Avx512Vnni);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n)
        ASSERT_EQ(y[size_t(m * N + n)], fma_chain(wq.data() + n * nb, xq.data() + m * nb, nb)) << "M " << M << " n " << n;
  }
}

TEST(QuantGemm, Q8_0MatchesExactBlockReferenceForOddShapes) {
  if (!cpu_supports(KernelPath::Avx512Vnni)) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  for (int64_t nb : {1, 3, 8, 65}) {
    const int64_t K = nb * QK8_0;
    for (int64_t N : {1, 3, 6, 9}) {
      for (int64_t M : {1, 2, 3, 8, 11}) {
        const auto wf = values_with_outliers(N * K, 100 + uint64_t(nb * 31 + N));
        const auto xf = values_with_outliers(M * K, 200 + uint64_t(nb * 7 + M));
        const auto wq = quantize_q8_0(wf, N, K);
        const auto xq = quantize_q8_0(xf, M, K);  // what qmatmul quantises x to (same reference code)
        std::vector<float> y(size_t(M * N)), y_acc(size_t(M * N), 0.5f);
        qmatmul(GgmlType::Q8_0, wq.data(), N, K, xf.data(), M, y.data(), false, KernelPath::Avx512Vnni);
        qmatmul(GgmlType::Q8_0, wq.data(), N, K, xf.data(), M, y_acc.data(), true, KernelPath::Avx512Vnni);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            double ref, mag;
            reference(wq.data() + n * nb, xq.data() + m * nb, nb, &ref, &mag);
            ASSERT_NEAR(y[size_t(m * N + n)], ref, 1e-5 * mag + 1e-6) << "nb " << nb << " N " << N << " M " << M;
            ASSERT_NEAR(y_acc[size_t(m * N + n)], ref + 0.5, 1e-5 * mag + 1e-6) << "accumulate";
          }
      }
    }
  }
}

TEST(QuantGemm, RowResultDoesNotDependOnBatchSize) {
  if (!cpu_supports(KernelPath::Avx512Vnni)) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const int64_t N = 37, K = 9 * QK8_0, M = 70;  // > 64 rows: qmatmul's long-batch tiling too
  const auto wq = quantize_q8_0(values_with_outliers(N * K, 5), N, K);
  const auto xf = values_with_outliers(M * K, 6);
  std::vector<float> all(size_t(M * N));
  qmatmul(GgmlType::Q8_0, wq.data(), N, K, xf.data(), M, all.data(), false, KernelPath::Avx512Vnni);
  for (int64_t m = 0; m < M; m += 3) {
    std::vector<float> one(static_cast<size_t>(N)), two(static_cast<size_t>(2 * N));
    qmatmul(GgmlType::Q8_0, wq.data(), N, K, xf.data() + m * K, 1, one.data(), false, KernelPath::Avx512Vnni);
    for (int64_t n = 0; n < N; ++n) ASSERT_EQ(one[size_t(n)], all[size_t(m * N + n)]) << "row " << m << " of 1";
    if (m + 1 < M) {
      qmatmul(GgmlType::Q8_0, wq.data(), N, K, xf.data() + m * K, 2, two.data(), false, KernelPath::Avx512Vnni);
      for (int64_t n = 0; n < N; ++n) ASSERT_EQ(two[size_t(n)], all[size_t(m * N + n)]) << "row " << m << " of 2";
    }
  }
}

TEST(QuantGemm, BatchWithManyRowsPerJobEqualsQmatmulOnEveryPath) {
  using Shape = JobShape;
  // Jobs of different M (prefill-style expert groups) so the M-weighted split lands mid-job.
  const std::vector<Shape> shapes{{GgmlType::Q8_0, 37, 96, 5, false}, {GgmlType::Q4_0, 11, 64, 3, true},
                                  {GgmlType::Q8_0, 3, 32, 17, true},  {GgmlType::Q4_K, 7, 256, 2, false},
                                  {GgmlType::Q8_0, 29, 160, 1, false}, {GgmlType::Q8_0, 4, 64, 0, false}};
  const JobData data = random_jobs(shapes, 300, 400);
  const auto& weights = data.weights;
  const auto& inputs = data.inputs;
  const int threads = omp_get_max_threads();
  for (KernelPath p : {KernelPath::Scalar, KernelPath::Avx2, KernelPath::Avx512, KernelPath::Avx512Vnni}) {
    if (!cpu_supports(p)) continue;
    for (int nt : {1, 2, 3, 5}) {
      omp_set_num_threads(nt);
      std::vector<std::vector<float>> want, got;
      std::vector<QMatvec> jobs;
      for (const Shape& s : shapes) {
        want.emplace_back(size_t(s.M * s.N), 0.25f);
        got.emplace_back(size_t(s.M * s.N), 0.25f);
        qmatmul(s.type, weights[want.size() - 1].data(), s.N, s.K, inputs[want.size() - 1].data(), s.M,
                want.back().data(), s.accumulate, p);
      }
      for (size_t i = 0; i < shapes.size(); ++i) {
        const Shape& s = shapes[i];
        jobs.push_back({s.type, weights[i].data(), s.N, s.K, inputs[i].data(), got[i].data(), s.accumulate, s.M});
      }
      qmatvec_batch(jobs.data(), int64_t(jobs.size()), p);
      for (size_t i = 0; i < shapes.size(); ++i)
        EXPECT_EQ(got[i], want[i]) << kernel_path_name(p) << " threads " << nt << " job " << i;
    }
  }
  omp_set_num_threads(threads);
}

TEST(QuantGemm, FastActivationQuantisationIsBitExact) {
  if (!cpu_supports(KernelPath::Avx512Vnni)) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  // Random blocks of very different scales, an all-zero block, and exact ties: with amax 127
  // the scale is 1, so x.5 must round away from zero as roundf does.
  const int64_t nb = 7, K = nb * QK8_0;
  std::vector<float> x = values_with_outliers(K, 77);
  for (int64_t j = 0; j < QK8_0; ++j) x[size_t(j)] *= 1e-3f;
  for (int64_t j = 0; j < QK8_0; ++j) x[size_t(2 * QK8_0 + j)] = 0.0f;
  const float ties[] = {127.0f, 2.5f, -3.5f, 0.5f, -0.5f, 126.5f, -1.5f, 1.4999999f};
  for (int64_t j = 0; j < QK8_0; ++j) x[size_t(4 * QK8_0 + j)] = ties[j % 8] * (j % 3 == 0 ? 1.0f : -1.0f);
  for (int64_t j = 0; j < QK8_0; ++j) x[size_t(6 * QK8_0 + j)] *= 1e4f;
  std::vector<block_q8_0> blocks(static_cast<size_t>(nb));
  quantize_row_q8_0(x.data(), blocks.data(), K);
  alignas(64) uint8_t want[nb * (QK8_0 + 8)], got[nb * (QK8_0 + 8)];
  ASSERT_EQ(sizeof want, simd::q8_0_packed_row_bytes(nb));
  simd::pack_q8_0(blocks.data(), nb, want);
  simd::quantize_pack_q8_0(x.data(), nb, got);
  for (size_t i = 0; i < sizeof want; ++i) ASSERT_EQ(got[i], want[i]) << "byte " << i;
}

TEST(QuantGemm, EveryWorkSplitGivesTheSameBitsAndEachRowOnce) {
  // qmatvec_batch's split (a static share per thread, then chunks claimed in order) must cover
  // every row of every job exactly once, for any share, chunk size and thread count. Jobs
  // accumulate into 0.25, so a row done twice or skipped changes its value; the reference is
  // the scalar path (one row at a time, no work split at all), compared bit for bit on the
  // vector path too (each row is one kernel call's chain either way).
  // Every M is 1 or 2: the dynamic tail applies to decode and verify batches only.
  using Shape = JobShape;
  const std::vector<Shape> shapes{{GgmlType::Q8_0, 37, 96, 1}, {GgmlType::Q8_0, 300, 64, 1}, {GgmlType::Q4_0, 11, 64, 2},
                                  {GgmlType::Q8_0, 129, 160, 2}, {GgmlType::Q8_0, 5, 32, 1},  {GgmlType::Q4_K, 7, 256, 1}};
  const JobData data = random_jobs(shapes, 900, 950);
  const auto& weights = data.weights;
  const auto& inputs = data.inputs;
  auto run = [&](KernelPath p) {
    std::vector<std::vector<float>> out;
    std::vector<QMatvec> jobs;
    for (const Shape& s : shapes) out.emplace_back(size_t(s.M * s.N), 0.25f);
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Shape& s = shapes[i];
      jobs.push_back({s.type, weights[i].data(), s.N, s.K, inputs[i].data(), out[i].data(), true, s.M});
    }
    qmatvec_batch(jobs.data(), int64_t(jobs.size()), p);
    return out;
  };
  // The scalar path row by row, no qmatvec_batch: the reference for every split.
  std::vector<std::vector<float>> want;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    want.emplace_back(size_t(s.M * s.N), 0.25f);
    for (int64_t n = 0; n < s.N; ++n)
      qmatmul_rows(s.type, weights[i].data() + size_t(n) * ggml_row_size(s.type, s.K), 1, s.K, inputs[i].data(), s.K, s.M,
                   want.back().data() + n, s.N, true, KernelPath::Scalar);
  }
  for (KernelPath p : {KernelPath::Scalar, KernelPath::Avx512Vnni}) {
    if (!cpu_supports(p)) continue;
    std::vector<std::vector<float>> path_want;
    whale::testing::for_each_work_split([&] { path_want = p == KernelPath::Scalar ? want : run(p); },
                                        [&](const QmatvecSplit& sp, int nt) {
                                          const auto got = run(p);
                                          for (size_t i = 0; i < shapes.size(); ++i)
                                            EXPECT_EQ(got[i], path_want[i])
                                                << kernel_path_name(p) << " split " << sp.static_percent << "% / "
                                                << sp.chunk_units << " threads " << nt << " job " << i;
                                        });
  }
}
