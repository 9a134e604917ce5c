#include "rl/distill.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/mmap.h"
#include "train/pretrain.h"

namespace whale::rl {

namespace fs = std::filesystem;

void write_chat_jsonl(const std::string& path, const std::vector<Conversation>& conversations) {
  AtomicWriter out(path);
  for (const auto& c : conversations) {
    const nlohmann::json j = {
        {"messages", {{{"role", "user"}, {"content", c.user}}, {{"role", "assistant"}, {"content", c.assistant}}}}};
    const std::string line = j.dump() + "\n";
    out.write(line.data(), line.size());
  }
  out.commit();
}

std::vector<Conversation> reference_conversations(const Task& task, Split split, int64_t count, uint64_t seed) {
  std::vector<Conversation> out;
  for (const auto& p : task.problems(split, count, seed)) {
    if (p.reference_trace.empty()) throw Error("task " + task.name(), "problem " + p.id + " has no reference trace");
    out.push_back({p.question, p.reference_trace});
  }
  return out;
}

std::vector<Conversation> keep_correct(const Task& task, const std::vector<Problem>& problems, int64_t samples,
                                       const CompletionFn& complete, int64_t max_per_problem, int64_t* sampled) {
  const EvalReport rep = evaluate_task(task, problems, samples, complete);
  if (sampled) *sampled = rep.problems * rep.samples;
  std::vector<Conversation> out;
  for (size_t p = 0; p < problems.size(); ++p) {
    std::set<std::string> kept;
    for (const std::string& text : rep.results[p].completions) {
      if (int64_t(kept.size()) >= max_per_problem) break;
      const RewardResult r = task.score(problems[p], text);
      if (r.accuracy < 1.0 || r.format < 1.0 || !kept.insert(text).second) continue;
      out.push_back({problems[p].question, text});
    }
  }
  return out;
}

DistillResult distill(const DistillOptions& o, Progress* progress) {
  auto task = make_task(o.task);
  const std::string teacher_dir = resolve_checkpoint(o.teacher_dir);
  const std::string tok_path = (fs::path(teacher_dir) / "tokenizer.json").string();
  if (!fs::exists(tok_path)) throw Error(tok_path, "the teacher needs its tokenizer.json to read its output");
  const auto tok = tokenizer::Tokenizer::from_file(tok_path);
  const auto problems = task->problems(Split::Train, o.problems, o.problem_seed);
  DistillResult result;
  result.problems = int64_t(problems.size());
  std::vector<Conversation> kept;
  {
    auto teacher = load_model(teacher_dir);
    kept = keep_correct(*task, problems, o.samples, model_completions(*teacher, tok, o.sampling, progress),
                        o.max_per_problem, &result.sampled);
  }
  result.kept = int64_t(kept.size());
  if (kept.empty())
    throw Error("distill", "the teacher solved none of " + std::to_string(result.problems) + " problems in " +
                               std::to_string(result.sampled) + " samples; nothing to distil");
  fs::create_directories(o.out_dir);
  result.data_path = (fs::path(o.out_dir) / "traces.jsonl").string();
  write_chat_jsonl(result.data_path, kept);
  SftOptions so = o.sft;
  so.model_dir = o.student_dir;
  so.data_path = result.data_path;
  so.out_dir = (fs::path(o.out_dir) / "student").string();
  result.sft = sft(so, progress);
  return result;
}

}  // namespace whale::rl
