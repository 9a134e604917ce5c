// The DeepSeek-V2/V3 forward pass over a batch of sequence spans, with MLA's latent cache.
// Rows of all spans are stacked, so projections run as one GEMM; attention runs per span.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <unordered_map>
#include <vector>

#include "infer/kv_cache.h"
#include "io/checkpoint.h"
#include "kernels/quant.h"
#include "model/rope.h"

namespace whale {

enum class AttentionMode {
  Auto,      // absorbed for short spans (decode), expanded K/V for long prefills
  Absorbed,  // W_UK folded into the query, W_UV into the output: K/V never materialised
  Naive,     // reference: expand per-head K and V from the cached latent
};

// rows [row_begin, row_begin + rows) of the batch belong to one sequence whose cache gets
// positions pos0 .. pos0 + rows - 1 (pos0 must equal the cache's current length).
struct SeqSpan {
  KVCache* cache;
  int64_t row_begin, rows, pos0;
};

// Router decisions of one MoE layer, for load statistics and balancing.
struct RouterStats {
  std::vector<int64_t> expert_tokens;  // per expert: tokens routed to it
};

class Transformer {
 public:
  // repack (io/checkpoint.h): Auto defers to model.repack_policy, then to WHALE_REPACK.
  Transformer(const Model& model, AttentionMode mode = AttentionMode::Auto, WeightRepack repack = WeightRepack::Auto);

  // Runs the decoder layers over tokens (one per row of all spans) and appends to the caches.
  // hidden_out receives the last layer's output before the final norm: [rows, hidden].
  void forward(const int32_t* tokens, const std::vector<SeqSpan>& spans, float* hidden_out);
  // out[i, vocab] = lm_head(norm(hidden[rows[i]])).
  void logits(const float* hidden, const std::vector<int64_t>& rows, float* out);

  // MTP module k (DeepSeek-V3 paper, section 2.2): row r combines the main model's hidden state
  // h_r (pre-norm) with the embedding of the following token next_tokens[r]; spans index the
  // MTP cache (pos0 must equal cache->mtp_length). Writes logits predicting two tokens ahead.
  void mtp_logits(const float* hidden, const int32_t* next_tokens, const std::vector<SeqSpan>& spans,
                  float* out, int64_t k = 0);
  // Same, writing logits only for the listed rows (out[i] for row out_rows[i]); the MTP cache
  // is still filled for every row. Speculative decoding needs only each span's last row.
  void mtp_logits(const float* hidden, const int32_t* next_tokens, const std::vector<SeqSpan>& spans,
                  const std::vector<int64_t>& out_rows, float* out, int64_t k = 0);

  // Quantises the projections (attention except kv_b_proj, which absorption reads as F32;
  // dense and expert MLPs; MTP eh_proj and head; lm_head; not the router) to type t in owned
  // buffers, as llama.cpp's run-time requantisation does; later forwards run them through the
  // quantised kernels (kernels/qmatmul.h). Matrices whose row length is not a multiple of t's
  // block stay as they are. Returns the bytes of quantised weights.
  size_t quantize_weights(GgmlType t);
  // Batches of any size run a MoE layer's quantised experts in two parallel regions
  // (moe.cpp); off, they take the per-expert loop, which gives the same bits (tests compare).
  void set_fused_moe(bool on) { fused_moe_ = on; }
  // Absorbed decode with a GGUF's block-quantised split k_b/v_b (mla.cpp): on, q_nope · W_UK and
  // W_UV · ctx run as quantised matrix-vector products straight on k_b's and v_b's blocks (q_nope
  // and ctx quantised to 8 bits per block like any activation); off, their rows are dequantised
  // to F32 per step (bit-identical to the loader's F32 join). On changes the sums' order and adds
  // the activations' rounding, within the Q8_0 tolerance (tests/model/test_quantised_absorption.cpp).
  // The default comes from WHALE_ABSORB (int8 or f32; int8 when unset).
  void set_quantised_absorption(bool on) { quantised_absorption_ = on; }
  bool quantised_absorption() const { return quantised_absorption_; }
  // With quantised absorption, a step of one or two absorbed rows runs W_UK, the attention and
  // W_UV in one parallel region (latent_attention's item hooks) instead of three: same bits.
  // On by default; off for A/B (WHALE_ABSORB_FUSE=0).
  void set_fused_absorption(bool on) { fuse_absorption_ = on; }
  // Bytes of weights held repacked (WeightRepack), 0 when none are.
  size_t repacked_bytes() const { return repacked_ ? repacked_->arena.size() : 0; }
  // Bytes a forward reads for W: its quantised or repacked copy when there is one, else as stored.
  double weight_bytes(const Tensor& W) const;
  // Their sum for the phase timer (core/phase_timer.h); 0 without a lookup while it is off, so
  // the decode path pays nothing for it.
  double phase_bytes(std::initializer_list<const Tensor*> weights) const;

  const ModelConfig& config() const { return config_; }
  const std::vector<RouterStats>& router_stats() const { return router_stats_; }
  void reset_router_stats();

 private:
  void decoder_layer(const LayerWeights& w, int64_t layer_index, float* x, int64_t T,
                     const std::vector<SeqSpan>& spans, bool mtp);
  void attention(const LayerWeights& w, int64_t layer_index, const float* xn, int64_t T,
                 const std::vector<SeqSpan>& spans, bool mtp, float* out);
  void attend_span(int64_t layer_index, const SeqSpan& span, int64_t pos0, float* out);  // naive (expanded K/V)
  void mlp(const MlpWeights& w, const float* xn, int64_t T, float* x_accumulate);
  void moe(const LayerWeights& w, int64_t layer_index, const float* xn, int64_t T, float* x_accumulate);
  bool moe_fused_quantised(const LayerWeights& w, const float* xn, int64_t T, const float* gate_w, float* x_accumulate);
  std::vector<float>& buffer(int slot, size_t n);
  // The quantised form project() runs W on: quantize_weights' copy, else W's own blocks when it
  // is stored block-quantised in a type qmatmul covers. False: W takes the float kernels.
  // x16: set to whether data is in repack_q8_0_x16's layout.
  bool quantised_form(const Tensor& W, GgmlType* type, const void** data, bool* x16) const;
  // The matrices quantize_weights and the repacking cover.
  std::vector<const Tensor*> projection_targets() const;
  // Uses the model's repacked weights, making them first (every stored Q8_0 target) when the
  // CPU has the kernels and, with check_memory, the copy fits in memory.
  void repack_weights(bool check_memory);
  // y (+)= x W^T through the quantised copy of W when quantize_weights made one.
  void project(const float* x, int64_t M, const Tensor& W, float* y, bool accumulate = false);

  const Model& model_;
  const ModelConfig& config_;
  AttentionMode mode_;
  Rope rope_;
  float softmax_scale_;
  std::vector<std::vector<float>> kv_b_f32_;  // per layer slot: kv_b_proj as F32; empty when block-quantised or read through the split k_b/v_b views
  std::vector<std::vector<float>> buffers_;   // reused scratch; grows only
  std::vector<float> q_scratch_, kv_scratch_;
  std::vector<RouterStats> router_stats_;     // per layer slot
  bool fused_moe_ = true;
  bool quantised_absorption_ = true;
  bool fuse_absorption_ = true;
  // MoE scratch (grown only): chosen experts [T, k], assignments grouped by expert.
  std::vector<int32_t> moe_chosen_;
  std::vector<int64_t> moe_offsets_, moe_fill_, moe_rows_;
  struct QuantisedWeight {
    GgmlType type;
    std::vector<uint8_t> data;        // quantize_weights' copy: rows of ggml_row_size(type, cols) bytes, or x16
    const uint8_t* arena = nullptr;   // instead: in the model's RepackedWeights, arena_bytes of it
    size_t arena_bytes = 0;
    bool x16 = false;                 // Q8_0 in repack_q8_0_x16's layout
    const uint8_t* bytes() const { return arena ? arena : data.data(); }
    size_t size() const { return arena ? arena_bytes : data.size(); }
  };
  std::unordered_map<const void*, QuantisedWeight> quantised_;  // by the source tensor's data
  WeightRepack repack_;
  std::shared_ptr<const RepackedWeights> repacked_;  // the model's, when this Transformer uses them
};

}  // namespace whale
