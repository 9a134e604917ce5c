// Verifiable reasoning tasks (DeepSeek-R1's rule-checked rewards): generators with held-out
// splits, prompts, and rewards that a rule can check. Shared by SFT data generation, GRPO,
// eval and distillation. Rewards never throw, crash or hang on arbitrary model output.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace whale::rl {

enum class Split { Train, Test };

struct Problem {
  std::string id;                // stable within a task and split, e.g. "arith-test-17"
  std::string question;          // the user message
  std::string answer;            // canonical answer text (a number, or for countdown the target)
  std::vector<int64_t> numbers;  // countdown: the numbers to use, each exactly once
  int64_t target = 0;            // countdown: the value to reach
  std::string reference_trace;   // a worked solution "<think>...</think>\n\nANSWER" for SFT traces
                                 // (empty when the task has none)
};

// What a completion scored. accuracy and format are each 0 or 1.
struct RewardResult {
  double accuracy = 0;
  double format = 0;
  std::string extracted;  // the answer that was checked (after </think>), for reports
};

class Task {
 public:
  virtual ~Task() = default;
  virtual std::string name() const = 0;
  // The first `count` problems of a split, deterministic for (split, seed). Train and Test never
  // share a problem. count <= 0 means all of a fixed-size split (GSM8K).
  virtual std::vector<Problem> problems(Split split, int64_t count, uint64_t seed) const = 0;
  // Accuracy and format of one completion (the assistant text after the prompt, which may
  // include "<think>...</think>").
  virtual RewardResult score(const Problem& problem, std::string_view completion) const = 0;
};

// "arith" (options digits=N, ops=+-*), "countdown" (numbers=N), "gsm8k" (path=FILE.jsonl).
// Spec syntax: NAME[:key=value,key=value]. Throws whale::Error naming the bad part.
std::unique_ptr<Task> make_task(const std::string& spec);

// 1 when the completion is "<think>...</think>" followed by a non-empty answer, else 0.
double format_reward(std::string_view completion);

}  // namespace whale::rl
