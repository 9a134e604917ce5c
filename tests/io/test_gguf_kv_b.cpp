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
#include "../model/model_test_util.h"
#include "model/transformer.h"

using namespace whale;
using whale::testing::read_bytes;
using whale::testing::prefill_and_decode_hidden;
using whale::testing::TempDir;

namespace {

// Hidden states of a 7-token prefill followed by two decode steps.
// With F32 absorption (the int8 one, the default, rounds q_nope and ctx to 8 bits: its own
// tests are in tests/model/test_quantised_absorption.cpp), so that the split views and the
// loader's F32 join must agree bit for bit.
std::vector<float> hidden_states(const Model& m, AttentionMode mode) {
  Transformer tf(m, mode);
  tf.set_quantised_absorption(false);
  return prefill_and_decode_hidden(tf, m.config);
}

// A random tiny-v3 model exported as a Q8_0 GGUF at path: the config, and the export options.
ModelConfig write_q8_0(const std::string& path, uint64_t seed, bool split_kv_b, GgufExportOptions* options) {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = seed;
  init.std = 0.05;
  options->type = GgmlType::Q8_0;
  options->split_kv_b = split_kv_b;
  export_gguf(*init_model(c, init), path, *options);
  return c;
}

}  // namespace

TEST(GgufKvB, QuantisedKvBMatchesItsDequantisedValuesExactly) {
  TempDir dir;
  GgufExportOptions options;
  write_q8_0(dir / "q.gguf", 4, /*split_kv_b=*/false, &options);  // attn_kv_b: rows of kv_lora_rank values, kept as mapped
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

// The split layout (attn_k_b, stored per head transposed, + attn_v_b; what `whale init --gguf`
// and llama.cpp write) in Q8_0: the loader keeps both as mapped views (AttentionWeights::k_b /
// v_b) for the absorbed attention. The reference is the same file with those views dropped,
// so attention reads the loader's F32 join of their dequantised values: bit-identical hidden
// states in every mode, and exporting the loaded model again gives the file's bytes.
TEST(GgufKvB, QuantisedSplitKbVbMatchesItsDequantisedJoinExactly) {
  TempDir dir;
  GgufExportOptions options;
  const ModelConfig c = write_q8_0(dir / "s.gguf", 5, /*split_kv_b=*/true, &options);
  auto kept = load_model(dir / "s.gguf");
  for (const auto* layers : {&kept->weights.layers, &kept->weights.mtp})
    for (const LayerWeights& l : *layers) {
      ASSERT_EQ(l.attn.k_b.dtype, dtype_of(GgmlType::Q8_0));
      ASSERT_EQ(l.attn.v_b.dtype, dtype_of(GgmlType::Q8_0));
      ASSERT_EQ(l.attn.k_b.shape, (std::vector<int64_t>{c.num_attention_heads * c.kv_lora_rank, c.qk_nope_head_dim}));
      ASSERT_EQ(l.attn.v_b.shape, (std::vector<int64_t>{c.num_attention_heads * c.v_head_dim, c.kv_lora_rank}));
    }
  auto joined = load_model(dir / "s.gguf");
  for (auto* layers : {&joined->weights.layers, &joined->weights.mtp})
    for (LayerWeights& l : *layers) l.attn.k_b = l.attn.v_b = Tensor{};
  for (AttentionMode mode : {AttentionMode::Auto, AttentionMode::Absorbed, AttentionMode::Naive}) {
    const auto want = hidden_states(*joined, mode), got = hidden_states(*kept, mode);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(got, want) << "attention mode " << int(mode);
  }
  // Absorbed attention does read the views: k_b pointed at v_b's bytes (the same size here,
  // qk_nope == v_head_dim) changes its hidden states.
  ASSERT_EQ(c.qk_nope_head_dim, c.v_head_dim);
  auto wrong = load_model(dir / "s.gguf");
  for (LayerWeights& l : wrong->weights.layers) l.attn.k_b.data = l.attn.v_b.data;
  EXPECT_NE(hidden_states(*wrong, AttentionMode::Absorbed), hidden_states(*joined, AttentionMode::Absorbed));
  export_gguf(*kept, dir / "again.gguf", options);
  EXPECT_TRUE(read_bytes(dir / "s.gguf") == read_bytes(dir / "again.gguf"));
}
