// Training forward and hand-written backward of the whole architecture (llm.c's model:
// explicit per-layer forward and backward, activations kept for the backward, no autograd).
// Inference (src/model/transformer) keeps its own cache-based forward; tests check the two
// give the same loss.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "model/rope.h"

namespace whale {

// B sequences of T + 1 tokens each (row-major [B, T + 1]). The main head predicts token t + 1
// at positions 0..T-1; the MTP head predicts token t + 2 at positions 0..T-2.
struct TrainBatch {
  int64_t B = 0, T = 0;
  const int32_t* tokens = nullptr;
  const float* loss_mask = nullptr;  // optional [B, T]: weight of the target at position t (SFT masks)
  // optional [B, T]: packed sequences (SFT). A run of equal ids is one segment: attention stays
  // inside it and RoPE positions restart at its first token. Mask the target that crosses a
  // boundary (the last position of a segment) with loss_mask.
  const int32_t* segment_ids = nullptr;
};

struct LossOptions {
  double mtp_lambda = 0.0;     // weight of the MTP loss (DeepSeek-V3 eq. 25)
  double balance_alpha = 0.0;  // weight of the complementary sequence-wise balance loss (eq. 17-20)
  // Policy-gradient losses (GRPO): when set, replaces the main head's cross-entropy. Called with
  // the log-probability of every target [B, T]; returns the loss and writes dL/dlogp [B, T]. The
  // logits then get dL/dlogp * (onehot - softmax), with raw per-token weights (no division by a
  // mask sum: the callback normalises). loss_mask is ignored by it.
  std::function<double(const float* logp, float* dlogp)> token_loss;
  bool token_stats = false;  // fill LossReport::target_logprobs and ::entropy (also on with token_loss)
};

struct LossReport {
  double loss = 0, main_loss = 0, mtp_loss = 0, balance_loss = 0;
  int64_t main_targets = 0, mtp_targets = 0;
  std::vector<std::vector<int64_t>> expert_load;  // per decoder layer slot: tokens per routed expert
  // With token_stats or token_loss, per main-head position [B, T]: log p(target) and the entropy
  // (nats) of the predicted distribution.
  std::vector<float> target_logprobs, entropy;
};

// Gradients with the model's own tensor layout (owned F32 buffers, zeroed on construction).
// Where two model tensors share memory (tied embeddings, an MTP head sharing the main one),
// their gradients share a buffer too, so both uses accumulate into one parameter.
struct Gradients {
  ModelWeights weights;  // same visit order and names as the model
  std::vector<std::vector<float>> storage;
  explicit Gradients(const Model& model);
  void zero();
};

struct LayerActivations;  // defined in train_layer.h
struct Bf16State;         // oneDNN BF16 GEMM and its operand buffers (train_layer.h)
struct TrainScratch;      // per-layer temporaries reused across layers and steps (train_layer.h)

enum class TrainPrecision { FP32, BF16, FP8 };

// An experiment knob for FP8 mode (bench and tests only; it changes nothing when unset): the
// environment variable WHALE_FP8_FP32 lists parts of the FP8 recipe to keep in FP32, comma-separated:
// by role, x (activations entering Fprop), w (weights, in Fprop and Dgrad), dy (output gradients
// entering Dgrad), wgrad (both Wgrad operands); by module, attn (MLA projections and o_proj),
// experts (routed experts), mlp (shared experts and dense MLPs). Used to find which part of the
// rounding moves a training run.
enum : unsigned {
  kFp8Activations = 1, kFp8Weights = 2, kFp8OutputGrads = 4, kFp8Wgrad = 8,
  kFp8Attention = 16, kFp8Experts = 32, kFp8Mlp = 64,
};
// Parses such a list ("" = none); an unknown name is an Error naming it.
unsigned parse_fp8_fp32_parts(const std::string& list);
// parse_fp8_fp32_parts(getenv("WHALE_FP8_FP32")), 0 when unset.
unsigned fp8_fp32_parts_from_env();

class TrainGraph {
 public:
  explicit TrainGraph(const Model& model);
  ~TrainGraph();
  // fp32, bf16 or fp8: the simulated compute precision of the decoder layers' projections.
  // For fp8 it also reads WHALE_FP8_FP32 (above), once.
  void set_precision(const std::string& name);
  // BF16 mode runs on oneDNN's BF16 GEMM where the CPU has a BF16 kernel; true forces the
  // simulation (operands rounded to BF16, then FP32 SGEMM), the definition it is tested against.
  void set_bf16_simulated(bool simulated) { simulate_bf16_ = simulated; }
  // Bytes of the activations kept for the backward (all layer slots), as last sized.
  size_t activation_bytes() const;
  // Forward only (loss and load statistics).
  LossReport forward(const TrainBatch& batch, const LossOptions& options);
  // Forward and backward; gradients are accumulated into grads (scaled by grad_scale,
  // e.g. 1 / accumulation_steps).
  LossReport forward_backward(const TrainBatch& batch, const LossOptions& options, Gradients& grads,
                              float grad_scale = 1.0f);

 private:
  LossReport run(const TrainBatch& batch, const LossOptions& options, Gradients* grads, float grad_scale);
  const Model& model_;
  const ModelConfig& c_;
  Rope rope_;
  std::vector<LayerActivations*> acts_;
  TrainPrecision precision_ = TrainPrecision::FP32;
  unsigned fp8_fp32_parts_ = 0;  // WHALE_FP8_FP32 as read by set_precision (FP8 only)
  bool simulate_bf16_ = false;
  std::unique_ptr<Bf16State> bf16_;  // created on the first BF16 step
  std::unique_ptr<TrainScratch> scratch_;
  std::vector<float> logits_, mtp_logits_;  // head outputs [rows, vocab], reused across steps
};

}  // namespace whale
