// Distillation by rejection sampling (DeepSeek-R1 section 2.3.3 / 2.4): sample reasoning traces
// from a teacher, keep only the correct, well-formed ones, write them as chat JSONL and
// fine-tune a student on them. Also writes a task's reference traces as SFT data.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/progress.h"
#include "rl/eval.h"
#include "rl/task.h"
#include "train/sft.h"

namespace whale::rl {

struct Conversation {
  std::string user, assistant;
};

// One {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]} per line, written atomically.
void write_chat_jsonl(const std::string& path, const std::vector<Conversation>& conversations);

// The first `count` problems of a split as (question, reference trace) conversations.
std::vector<Conversation> reference_conversations(const Task& task, Split split, int64_t count, uint64_t seed);

// Rejection sampling: `samples` completions per problem; keeps those with accuracy 1 and
// format 1, at most `max_per_problem` distinct ones per problem.
std::vector<Conversation> keep_correct(const Task& task, const std::vector<Problem>& problems, int64_t samples,
                                       const CompletionFn& complete, int64_t max_per_problem,
                                       int64_t* sampled = nullptr);

struct DistillOptions {
  std::string teacher_dir, student_dir, task, out_dir;
  int64_t problems = 256, samples = 4, max_per_problem = 1;
  uint64_t problem_seed = 0;  // which training problems
  SampleOptions sampling;     // teacher sampling (temperature, max tokens, seed)
  SftOptions sft;             // student training; model_dir, data_path and out_dir are filled in
};

struct DistillResult {
  int64_t problems = 0, sampled = 0, kept = 0;
  std::string data_path;
  SftResult sft;
};

// Writes OUT/traces.jsonl, then trains the student into OUT/student (a run directory).
DistillResult distill(const DistillOptions& options, Progress* progress);

}  // namespace whale::rl
