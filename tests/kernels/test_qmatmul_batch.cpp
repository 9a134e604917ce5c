// qmatvec_batch (several matrix-vector products in one parallel region) against qmatmul one
// product at a time: bit-identical on every kernel path and thread count, including thread
// shares that start and end inside a matrix. And the fused MoE decode step built on it
// (Transformer::moe_fused_quantised, used for batches of up to 8 rows) against the per-expert
// loop (set_fused_moe(false)): the same bits for prefill, decode and a two-sequence step.
#include <gtest/gtest.h>
#include <omp.h>

#include <vector>

#include "core/error.h"
#include "io/checkpoint.h"
#include "kernels/qmatmul.h"
#include "../model/model_test_util.h"
#include "model/transformer.h"

using namespace whale;
using whale::testing::random_values;

namespace {

std::vector<uint8_t> quantize(GgmlType t, const std::vector<float>& x, int64_t rows, int64_t k) {
  std::vector<uint8_t> q(ggml_row_size(t, k) * size_t(rows));
  for (int64_t r = 0; r < rows; ++r) quantize_row(t, x.data() + r * k, q.data() + size_t(r) * ggml_row_size(t, k), k);
  return q;
}

}  // namespace

TEST(QuantMatvecBatch, BitIdenticalToOneProductAtATime) {
  struct Shape {
    GgmlType type;
    int64_t N, K;
    bool accumulate;
  };
  // Odd row counts so that thread shares split matrices mid-way; mixed types and widths.
  const std::vector<Shape> shapes{{GgmlType::Q8_0, 37, 256, false}, {GgmlType::Q4_0, 5, 64, true},
                                  {GgmlType::Q4_K, 19, 512, false}, {GgmlType::Q8_0, 1, 32, true},
                                  {GgmlType::Q6_K, 23, 256, true},  {GgmlType::Q8_0, 0, 64, false}};
  std::vector<std::vector<uint8_t>> weights;
  std::vector<std::vector<float>> inputs;
  for (size_t i = 0; i < shapes.size(); ++i) {
    weights.push_back(quantize(shapes[i].type, random_values(shapes[i].N * shapes[i].K, 10 + i), shapes[i].N, shapes[i].K));
    inputs.push_back(random_values(shapes[i].K, 50 + i));
  }
  const int threads = omp_get_max_threads();
  for (KernelPath p : {KernelPath::Scalar, KernelPath::Avx2, KernelPath::Avx512, KernelPath::Avx512Vnni}) {
    if (!cpu_supports(p)) continue;
    for (int nt : {1, 2, 3}) {
      omp_set_num_threads(nt);
      std::vector<std::vector<float>> want, got;
      std::vector<QMatvec> jobs;
      for (size_t i = 0; i < shapes.size(); ++i) {
        const Shape& s = shapes[i];
        want.emplace_back(size_t(s.N), 0.25f);
        got.emplace_back(size_t(s.N), 0.25f);
        qmatmul(s.type, weights[i].data(), s.N, s.K, inputs[i].data(), 1, want.back().data(), s.accumulate, p);
      }
      for (size_t i = 0; i < shapes.size(); ++i)
        jobs.push_back({shapes[i].type, weights[i].data(), shapes[i].N, shapes[i].K, inputs[i].data(), got[i].data(),
                        shapes[i].accumulate});
      qmatvec_batch(jobs.data(), int64_t(jobs.size()), p);
      for (size_t i = 0; i < shapes.size(); ++i) EXPECT_EQ(got[i], want[i]) << kernel_path_name(p) << " threads " << nt << " job " << i;
    }
  }
  omp_set_num_threads(threads);
  std::vector<uint8_t> w(1024);
  std::vector<float> x(64), y(4);
  QMatvec bad{GgmlType::Q8_0, w.data(), 1, 40, x.data(), y.data()};  // 40 is not whole blocks
  EXPECT_THROW(qmatvec_batch(&bad, 1), Error);
  bad = {GgmlType::F16, w.data(), 1, 32, x.data(), y.data()};
  EXPECT_THROW(qmatvec_batch(&bad, 1), Error);
}

TEST(QuantMatvecBatch, FusedMoeEqualsPerExpertLoop) {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = 9;
  init.std = 0.05;
  init.router_bias_std = 0.05;
  auto m = init_model(c, init);
  const int64_t H = c.hidden_size;
  const std::vector<int32_t> prompt{5, 9, 300, 17, 42};
  const int64_t n = int64_t(prompt.size());
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0}) {
    // Prefill 4 rows, one decode row, then a 2-sequence step with different tokens (experts
    // with one row and with two): every hidden state the same bits with and without fusion.
    std::vector<std::vector<float>> runs;
    for (bool fused : {true, false}) {
      Transformer tf(*m);
      tf.quantize_weights(type);
      tf.set_fused_moe(fused);
      KVCache a(c, n + 1), b(c, n + 1);
      std::vector<float> hidden(size_t(2 * n * H)), all;
      tf.forward(prompt.data(), {SeqSpan{&a, 0, n - 1, 0}}, hidden.data());
      all.insert(all.end(), hidden.begin(), hidden.begin() + (n - 1) * H);
      tf.forward(prompt.data() + n - 1, {SeqSpan{&a, 0, 1, n - 1}}, hidden.data());
      all.insert(all.end(), hidden.begin(), hidden.begin() + H);
      tf.forward(prompt.data() + 1, {SeqSpan{&b, 0, n - 1, 0}}, hidden.data());
      const int32_t next[2] = {300, 7};
      tf.forward(next, {SeqSpan{&a, 0, 1, n}, SeqSpan{&b, 1, 1, n - 1}}, hidden.data());
      all.insert(all.end(), hidden.begin(), hidden.begin() + 2 * H);
      runs.push_back(all);
    }
    EXPECT_EQ(runs[0], runs[1]) << ggml_type_name(type);
  }
}
