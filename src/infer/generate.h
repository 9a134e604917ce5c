// Batched generation: one prefill over all prompts (stacked as spans), then decode steps in
// which every unfinished sequence contributes one row to a shared forward pass.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "infer/sampler.h"
#include "model/transformer.h"

namespace whale {

struct GenerateOptions {
  int64_t max_tokens = 32;
  SamplingParams sampling;
  bool stop_at_eos = true;
  std::vector<int32_t> stop_tokens;  // besides eos
};

struct GenerateStats {
  int64_t prompt_tokens = 0, generated_tokens = 0;
  int64_t decode_tokens = 0;  // rows run through decode forward passes
  double prefill_seconds = 0, decode_seconds = 0;
  double prefill_tokens_per_second() const { return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0; }
  double decode_tokens_per_second() const { return decode_seconds > 0 ? decode_tokens / decode_seconds : 0; }
};

// Called for each generated token: (sequence index, token id). Return false to stop that sequence.
using TokenCallback = std::function<bool(int64_t, int32_t)>;

// Positions one sequence needs (prompt plus max_tokens); throws naming sequence b when the prompt
// is empty or does not fit the model's context.
int64_t checked_sequence_length(const ModelConfig& c, const std::vector<int32_t>& prompt, int64_t b,
                                int64_t max_tokens);

class Generator {
 public:
  explicit Generator(const Model& model, AttentionMode mode = AttentionMode::Auto);
  std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& prompts,
                                             const GenerateOptions& options, const TokenCallback& on_token = {},
                                             GenerateStats* stats = nullptr);
  Transformer& transformer() { return transformer_; }

 private:
  const Model& model_;
  Transformer transformer_;
};

}  // namespace whale
