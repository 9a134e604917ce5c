// AdamW (Loshchilov & Hutter: decoupled weight decay) over the model's F32 master weights,
// global-norm gradient clipping, and the learning-rate schedules.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "model/train_graph.h"

namespace whale {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;  // not applied to norms and biases (1-D tensors)
};

// One trainable tensor: the weight, its gradient and the two moment buffers.
struct ParamSlot {
  std::string name;
  Tensor weight, grad;
  bool decay = true;
  std::vector<float> m, v;
};

class AdamW {
 public:
  // Collects every distinct trainable tensor (aliases such as tied embeddings appear once;
  // e_score_correction_bias is excluded: it moves by the balancing rule, not by gradient).
  AdamW(Model& model, Gradients& grads, const AdamWOptions& options);
  // Scales gradients so their global L2 norm is at most max_norm (0: no clipping); returns the
  // norm before clipping.
  double clip_grad_norm(double max_norm);
  void step(double lr);
  // clip_grad_norm(max_norm) then step(lr), fused: one read of the gradients for the norm, one
  // pass that scales each gradient in registers and updates weight and moments (the gradients
  // themselves are left unscaled). The same arithmetic as the two calls, bit for bit.
  double clip_and_step(double max_norm, double lr);
  int64_t steps() const { return step_; }
  // Moments and step count, under the parameter names (m.NAME, v.NAME).
  void save(const std::string& path) const;
  void load(const std::string& path);
  const std::vector<ParamSlot>& params() const { return params_; }
  size_t state_bytes() const;

 private:
  // Work is split into fixed chunks of one tensor each, so the norm's partial sums add up in the
  // same order for any thread count, and one parallel loop covers every tensor.
  struct Chunk {
    size_t param;
    int64_t begin, end;
  };
  double grad_norm();
  double clip_factor(double norm, double max_norm) const;
  void update(double lr, float grad_factor);
  AdamWOptions options_;
  std::vector<ParamSlot> params_;
  std::vector<Chunk> chunks_;
  std::vector<double> partial_;
  int64_t step_ = 0;
};

enum class ScheduleKind { Cosine, WarmupStableDecay, Constant };

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::Cosine;
  double lr = 3e-3, min_lr = 3e-4;
  int64_t warmup = 0, total = 1;
  double decay_fraction = 0.2;  // WSD: share of the steps spent decaying (cosine) to min_lr
  double at(int64_t step) const;
};

}  // namespace whale
