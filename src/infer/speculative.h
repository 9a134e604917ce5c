// Self-speculative decoding with the model's own MTP module as the draft (DeepSeek-V3 paper,
// section 5.4.3): the MTP head proposes token t+2 while the main model samples t+1; one forward
// pass over [t+1, draft] (two rows of one span) then verifies the draft. Acceptance follows
// speculative sampling (Leviathan et al. 2023, Chen et al. 2023): accept with min(1, p/q),
// otherwise sample from norm(max(0, p - q)), so every token is distributed exactly as plain
// sampling would give it. Greedy decoding accepts iff the main model's argmax is the draft, and
// produces the same tokens as Generator.
#pragma once
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "infer/generate.h"
#include "infer/sampler.h"
#include "model/transformer.h"

namespace whale {

struct SpeculativeStats : GenerateStats {
  int64_t drafted = 0;   // draft tokens proposed and verified
  int64_t accepted = 0;  // drafts the main model accepted
  int64_t steps = 0;     // verification forward passes (each advances a sequence by 1 or 2 tokens)
  double acceptance_rate() const { return drafted > 0 ? double(accepted) / double(drafted) : 0.0; }
};

// The distribution Sampler::sample draws from for these logits (repetition penalty, temperature,
// top-k, min-p, top-p; one-hot at the argmax when greedy), written densely into probs[vocab].
// logits is modified in place (penalty), as Sampler does.
void sampling_distribution(float* logits, int64_t vocab, const SamplingParams& params,
                           const std::vector<int32_t>& history, std::vector<std::pair<float, int32_t>>& scratch,
                           float* probs);

class SpeculativeGenerator {
 public:
  explicit SpeculativeGenerator(const Model& model, AttentionMode mode = AttentionMode::Auto);
  // Same contract as Generator::generate (stop rules, callback, seeds seed + b per sequence).
  // Throws whale::Error when the model has no MTP layer.
  std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& prompts,
                                             const GenerateOptions& options, const TokenCallback& on_token = {},
                                             SpeculativeStats* stats = nullptr);
  Transformer& transformer() { return transformer_; }

 private:
  const Model& model_;
  Transformer transformer_;
};

}  // namespace whale
