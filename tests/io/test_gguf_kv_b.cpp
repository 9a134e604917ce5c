// A block-quantised kv_b_proj (GGUF attn_kv_b in Q8_0, kept as mapped) is read by attention
// through per-head dequantisation instead of an F32 copy made at construction: the same float
// values, so the hidden states must be bit-identical to the same model whose kv_b_proj is
// replaced by its dequantised F32 values, for prefill and decode, absorbed and naive attention.
#include <gtest/gtest.h>

#include <vector>

#include "io/checkpoint.h"
#include "io/gguf_model.h"
#include "kernels/ops.h"
#include "io_test_util.h"
#include "model/transformer.h"

using namespace whale;
using whale::testing::TempDir;

namespace {

// Hidden states of a 7-token prefill followed by two decode steps.
std::vector<float> hidden_states(const Model& m, AttentionMode mode) {
  const std::vector<int32_t> tokens{5, 9, 300, 17, 42, 8, 77, 3, 11};
  const int64_t H = m.config.hidden_size, n = int64_t(tokens.size());
  Transformer tf(m, mode);
  KVCache cache(m.config, n);
  std::vector<float> hidden(size_t(n * H)), all;
  tf.forward(tokens.data(), {SeqSpan{&cache, 0, 7, 0}}, hidden.data());
  all.insert(all.end(), hidden.begin(), hidden.begin() + 7 * H);
  for (int64_t t = 7; t < n; ++t) {
    tf.forward(tokens.data() + t, {SeqSpan{&cache, 0, 1, t}}, hidden.data());
    all.insert(all.end(), hidden.begin(), hidden.begin() + H);
  }
  return all;
}

}  // namespace

TEST(GgufKvB, QuantisedKvBMatchesItsDequantisedValuesExactly) {
  TempDir dir;
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = 4;
  init.std = 0.05;
  auto original = init_model(c, init);
  GgufExportOptions options;
  options.type = GgmlType::Q8_0;
  options.split_kv_b = false;  // attn_kv_b: rows of kv_lora_rank values, kept as mapped
  export_gguf(*original, dir / "q.gguf", options);
  auto kept = load_model(dir / "q.gguf");
  const Tensor& kv_b = kept->weights.layers[0].attn.kv_b_proj;
  ASSERT_EQ(kv_b.dtype, dtype_of(GgmlType::Q8_0));
  // The reference: the same file, every kv_b_proj replaced by its dequantised values in F32.
  auto widened = load_model(dir / "q.gguf");
  std::vector<std::vector<float>> f32;
  auto widen = [&](Tensor& t) {
    f32.emplace_back(size_t(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r) copy_row(t, r, f32.back().data() + r * t.cols());
    t.dtype = DType::F32;
    t.data = f32.back().data();
  };
  for (LayerWeights& l : widened->weights.layers) widen(l.attn.kv_b_proj);
  for (LayerWeights& l : widened->weights.mtp) widen(l.attn.kv_b_proj);
  for (AttentionMode mode : {AttentionMode::Auto, AttentionMode::Absorbed, AttentionMode::Naive}) {
    const auto want = hidden_states(*widened, mode), got = hidden_states(*kept, mode);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(got, want) << "attention mode " << int(mode);
  }
}
