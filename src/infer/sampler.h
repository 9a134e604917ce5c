// Token sampling: greedy, temperature, top-k, top-p (nucleus), min-p and repetition penalty.
// Each sampler owns its seeded generator, so a given seed reproduces the same tokens.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.h"

namespace whale {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax)
  int64_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off; keep tokens with p >= min_p * p_max
  float repetition_penalty = 1.0f;  // CTRL-style: divide positive logits, multiply negative ones
  uint64_t seed = 0;
};

// Throws whale::Error naming the parameter when a value is out of range.
void validate(const SamplingParams& params);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // logits is modified in place. history: tokens the repetition penalty applies to.
  int32_t sample(float* logits, int64_t vocab, const std::vector<int32_t>& history);

 private:
  SamplingParams params_;
  Rng rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace whale
