// Group Relative Policy Optimization (DeepSeekMath, eq. 3; DeepSeek-R1 section 2.2.1) with the
// DAPO (token-level normalisation, clip-higher) and Dr. GRPO (no length or std normalisation)
// variants. The objective's gradient w.r.t. each completion token's log-probability is formed
// here and handed to the training graph, which turns it into dlogits = g * (onehot - softmax).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/progress.h"
#include "model/train_graph.h"
#include "rl/task.h"

namespace whale::rl {

// How per-token losses are weighted into one number.
enum class LossNorm {
  Sequence,  // GRPO: mean over each completion's tokens, then mean over completions
  Token,     // DAPO: sum over all completion tokens / their count
  Constant,  // Dr. GRPO: sum / (completions * max_tokens), no length bias
};
LossNorm parse_loss_norm(const std::string& name);  // "sequence", "token" or "constant"

// Group-normalised advantages A_i = (r_i - mean(group)) / (std(group) + 1e-4), with the
// population std (divisor G); scale_std = false (Dr. GRPO) leaves out the division.
// rewards holds consecutive groups of group_size.
std::vector<double> group_advantages(const std::vector<double>& rewards, int64_t group_size, bool scale_std);

// Schulman's k3 estimator of KL(policy || reference) at one sampled token:
// exp(ref - logp) - (ref - logp) - 1 (unbiased, always >= 0).
double k3_kl(double logp, double ref_logp);

// Normalisation weight of each completion's tokens for the chosen LossNorm.
std::vector<double> sequence_token_weights(const std::vector<int64_t>& completion_lengths, LossNorm norm,
                                           int64_t max_tokens);

struct ObjectiveOptions {
  double clip_low = 0.2, clip_high = 0.2;  // epsilon_low, epsilon_high (DAPO clip-higher: high > low)
  double kl_beta = 0.04;                   // weight of the k3 KL penalty
};

struct ObjectiveStats {
  double loss = 0, policy_loss = 0, kl_loss = 0;  // weighted sums (what is minimised)
  double kl_sum = 0;                              // sum of k3 over tokens with weight != 0
  double ratio_sum = 0;                           // sum of r over the same tokens
  int64_t tokens = 0, clipped = 0;                // tokens with weight != 0; of these, clipped
  void add(const ObjectiveStats& o);
};

// Loss over n positions: sum_t w_t * (-min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t)
// + beta * k3_t), r_t = exp(logp_t - old_t). Writes dL/dlogp_t (0 where w_t = 0). old_logp may
// be null: then old = logp detached (one update per batch, r = 1). ref_logp may be null when
// beta = 0. A token counts as clipped when its clipped branch is the minimum and flat (A > 0,
// r > 1 + eps_high, or A < 0, r < 1 - eps_low): it then has no policy gradient.
double clipped_objective(int64_t n, const float* weight, const float* advantage, const float* old_logp,
                         const float* ref_logp, const float* logp, float* dlogp, const ObjectiveOptions& options,
                         ObjectiveStats* stats);

// One completion in a policy-gradient batch.
struct PolicySample {
  std::vector<int32_t> prompt, completion;  // completion: the trained tokens (EOS included if sampled)
  double advantage = 0;
  double token_weight = 0;  // normalisation weight of each of its tokens (sequence_token_weights)
  // Per completion token; empty old_logp: old = current, detached (r = 1); empty ref_logp: no
  // reference (kl_beta must be 0). Either all samples have them or none.
  std::vector<float> old_logp, ref_logp;
};

struct GradientReport {
  ObjectiveStats objective;
  double entropy_sum = 0;  // policy entropy summed over the completion tokens
  double logp_sum = 0;     // log p(token) summed over the same tokens (on-policy: -mean = entropy)
};

// Accumulates the gradient of clipped_objective over the samples into grads (one forward and
// backward per micro_batch sequences; 0: all at once) and returns the loss statistics.
GradientReport grpo_gradient(TrainGraph& graph, const std::vector<PolicySample>& samples,
                             const ObjectiveOptions& options, int64_t micro_batch, Gradients& grads);

// log p(token) of every completion token under graph's model (forward only).
std::vector<std::vector<float>> completion_logprobs(TrainGraph& graph, const std::vector<PolicySample>& samples,
                                                    int64_t micro_batch);

struct GrpoOptions {
  std::string model;         // checkpoint or run directory: initial policy and frozen reference
  std::string out_dir;
  std::string resume;        // a GRPO checkpoint (or run directory) to continue from
  int64_t steps = 50;
  int64_t prompts_per_step = 8;   // P problems per step
  int64_t group_size = 8;         // G completions per problem
  int64_t updates_per_batch = 1;  // mu: gradient updates on each batch of rollouts
  int64_t micro_batch = 16;       // sequences per forward/backward (memory; 0: all at once)
  int64_t max_tokens = 96;        // completion budget
  double temperature = 1.0, top_p = 1.0;
  double lr = 2e-5, min_lr_ratio = 1.0, grad_clip = 1.0, weight_decay = 0.0;
  // AdamW's epsilon. Policy-gradient noise reaches every LM-head row through the softmax with a
  // tiny, sign-flipping gradient, which eps = 1e-8 scales up to full lr-sized steps.
  double adam_eps = 1e-8;
  int64_t warmup = 0;
  ObjectiveOptions objective;
  bool scale_std = true;             // false: Dr. GRPO
  LossNorm loss_norm = LossNorm::Sequence;
  double format_weight = 0.1;        // reward = accuracy + format_weight * format
  std::string chat_format = "deepseek-v3";  // prompt template (as the SFT data used)
  int64_t save_every = 0;            // also saved at the end
  uint64_t seed = 0;
};

struct GrpoStepMetrics {
  int64_t step = 0;
  double reward = 0, accuracy = 0, format = 0, response_length = 0, kl = 0, clip_fraction = 0, entropy = 0;
  double loss = 0, lr = 0, grad_norm = 0, seconds = 0;
  // Groups whose accuracies differ (the only ones with an accuracy signal), and the training
  // forward's mean -log p of the sampled tokens: with on-policy samples (temperature 1, top-p 1)
  // it estimates the entropy, so a gap between the two flags a sampler/trainer mismatch.
  double mixed_groups = 0, sampled_nll = 0;
  // With mu > 1: the last update's objective and mean ratio (on the batch the first one saw).
  double last_objective = 0, last_ratio = 1;
};

struct GrpoResult {
  std::vector<GrpoStepMetrics> steps;
  std::string final_checkpoint;
};

// Trains with GRPO on task's training split; writes OUT/metrics.jsonl (one JSON object per step),
// run_config.json and checkpoints OUT/step-NNNNNN (self-contained: config, weights, tokenizer,
// optimizer, trainer_state.json) with OUT/latest naming the newest.
GrpoResult grpo(const GrpoOptions& options, const Task& task, Progress* progress);

}  // namespace whale::rl
