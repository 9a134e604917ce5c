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
  int64_t steps() const { return step_; }
  // Moments and step count, under the parameter names (m.NAME, v.NAME).
  void save(const std::string& path) const;
  void load(const std::string& path);
  const std::vector<ParamSlot>& params() const { return params_; }
  size_t state_bytes() const;

 private:
  AdamWOptions options_;
  std::vector<ParamSlot> params_;
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
