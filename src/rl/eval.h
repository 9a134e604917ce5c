// Held-out evaluation of a task (pass@1 over K samples, maj@K by majority vote over the
// extracted answers) and token-level perplexity over a text.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "core/progress.h"
#include "infer/generate.h"
#include "io/checkpoint.h"
#include "rl/task.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace whale::rl {

// Completions for `problems`, `samples` per problem, problem-major (all of problem 0's first).
using CompletionFn = std::function<std::vector<std::string>(const std::vector<Problem>& problems, int64_t samples)>;

struct ProblemResult {
  std::string id, question, answer;
  int64_t correct = 0;           // samples with accuracy 1
  int64_t formatted = 0;         // samples with format 1
  std::string majority;          // the most common extracted answer ("" when none voted)
  bool majority_correct = false;
  std::vector<std::string> completions, extracted;
};

struct EvalReport {
  std::string task;
  int64_t problems = 0, samples = 0;
  double pass_at_1 = 0;    // mean over problems of correct / samples (unbiased pass@1)
  double maj_at_k = 0;     // share of problems whose majority answer is correct
  double pass_at_k = 0;    // share of problems with at least one correct sample
  double format_rate = 0;  // share of samples with the <think>...</think> answer format
  double mean_chars = 0;   // mean completion length in characters
  std::vector<ProblemResult> results;
  nlohmann::json to_json(int64_t max_completions_per_problem = 1) const;
};

// Scores `samples` completions per problem. Never throws on model output.
EvalReport evaluate_task(const Task& task, const std::vector<Problem>& problems, int64_t samples,
                         const CompletionFn& complete);

struct SampleOptions {
  int64_t max_tokens = 128;
  SamplingParams sampling;  // sample i of a batch uses seed + i
  int64_t batch = 64;       // sequences per generate() call
  tokenizer::ChatFormat format = tokenizer::ChatFormat::DeepSeekV3;
};

// A CompletionFn that samples from a model with the batched Generator: each question as a one-turn
// chat (rollout.h's encode_prompt, the prefix SFT trains after), stopping at EOS; each text is
// completion_for_scoring of the sample.
CompletionFn model_completions(const Model& model, const tokenizer::Tokenizer& tok, const SampleOptions& options,
                               Progress* progress = nullptr);

struct PerplexityReport {
  int64_t tokens = 0, windows = 0, window = 0;
  double mean_nll = 0, perplexity = 0;
};

// exp(mean next-token negative log-likelihood) over consecutive windows of `window` + 1 tokens
// (each window's first token is context only; window <= 0: the model's context - 1).
// Needs F32 weights (load with keep_bf16 = false).
PerplexityReport perplexity(const Model& model, const std::vector<int32_t>& tokens, int64_t window,
                            Progress* progress = nullptr);

}  // namespace whale::rl
