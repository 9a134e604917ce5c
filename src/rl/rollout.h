// Rollouts for policy-gradient training: G sampled completions per problem from the current
// weights, through the batched inference engine (src/infer/generate.h), scored by the task.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "infer/sampler.h"
#include "io/checkpoint.h"
#include "rl/task.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace whale::rl {

// Token ids of a one-turn chat prompt that asks `question`, ending with the generation prompt
// (BOS included when the tokenizer has one and the template text does not already start with it).
std::vector<int32_t> encode_prompt(const tokenizer::Tokenizer& tok, const std::string& question,
                                   tokenizer::ChatFormat format);

// The assistant text a task scores: R1's template opens the reasoning in the prompt, so its
// "<think>\n" is put back in front of the generated text.
std::string completion_for_scoring(const std::string& generated, tokenizer::ChatFormat format);

struct Rollout {
  int64_t problem = 0;               // index into the problems given
  std::vector<int32_t> prompt, completion;  // completion includes the EOS when one was sampled
  std::string text;                  // decoded completion (without special tokens)
  RewardResult result;
  double reward = 0;                 // accuracy + format_weight * format
  bool finished = false;             // ended with EOS (not cut at max_tokens)
};

struct RolloutOptions {
  int64_t group_size = 8;
  int64_t max_tokens = 96;
  SamplingParams sampling;  // seed: first stream; rollout i uses seed + i
  tokenizer::ChatFormat format = tokenizer::ChatFormat::DeepSeekV3;
  double format_weight = 0.1;
};

// group_size rollouts per problem, consecutive (problem 0's group first).
std::vector<Rollout> sample_rollouts(const Model& policy, const tokenizer::Tokenizer& tok, const Task& task,
                                     const std::vector<Problem>& problems, const RolloutOptions& options);

}  // namespace whale::rl
