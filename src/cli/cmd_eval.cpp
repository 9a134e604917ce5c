// whale eval: pass@1 and maj@k of a model on a task's held-out split, or perplexity over a text.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "core/mmap.h"
#include "core/progress.h"
#include "rl/eval.h"
#include "train/pretrain.h"

namespace whale::cli {

void register_eval(CLI::App& app) {
  struct Options {
    std::string model, task, perplexity_file, out, chat_format = "deepseek-v3";
    int64_t limit = 0, samples = 1, max_tokens = 128, batch = 64, window = 0, show = 3;
    float temperature = 0.0f, top_p = 1.0f;
    uint64_t seed = 0, problem_seed = 0;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("eval", "Accuracy on a task's held-out split, or perplexity of a text");
  cmd->add_option("--model", o->model, "Checkpoint or run directory (with tokenizer.json)")->required();
  auto* task_opt = cmd->add_option("--task", o->task, "arith[:digits=N,ops=+-*], countdown[:numbers=N], gsm8k[:path=P]");
  auto* ppl_opt = cmd->add_option("--perplexity", o->perplexity_file, "Text file: report token-level perplexity");
  task_opt->excludes(ppl_opt);
  cmd->add_option("--limit", o->limit, "First N held-out problems (0: 500 for generated tasks, all for GSM8K)")
      ->capture_default_str();
  cmd->add_option("--samples", o->samples, "Completions per problem (k of maj@k)")->capture_default_str();
  cmd->add_option("--temperature", o->temperature, "Sampling temperature (0: greedy)")->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--max-tokens", o->max_tokens, "Tokens per completion")->capture_default_str();
  cmd->add_option("--batch", o->batch, "Sequences per generation batch")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--problem-seed", o->problem_seed, "Which held-out problems (GSM8K: 0 keeps file order)")
      ->capture_default_str();
  cmd->add_option("--chat-format", o->chat_format, "Prompt template: deepseek-v3 or deepseek-r1")
      ->check(CLI::IsMember({"deepseek-v3", "deepseek-r1"}))
      ->capture_default_str();
  cmd->add_option("--window", o->window, "Perplexity window in tokens (0: the model's context)")->capture_default_str();
  cmd->add_option("--show", o->show, "Sample completions to print")->capture_default_str();
  cmd->add_option("--out", o->out, "Write the report as JSON (atomically)");
  cmd->callback([o] {
    if (o->task.empty() && o->perplexity_file.empty()) throw Error("eval", "give --task T or --perplexity FILE");
    const std::string dir = resolve_checkpoint(o->model);
    const std::string tok_path = (std::filesystem::path(dir) / "tokenizer.json").string();
    if (!std::filesystem::exists(tok_path)) throw Error(tok_path, "eval needs the model's tokenizer.json");
    const auto tok = tokenizer::Tokenizer::from_file(tok_path);
    TerminalProgress progress;
    nlohmann::json report;
    if (!o->perplexity_file.empty()) {
      LoadOptions lo;
      lo.keep_bf16 = false;
      auto model = load_model(dir, lo);
      std::vector<int32_t> ids;
      for (int id : tok.encode(read_text_file(o->perplexity_file), false)) ids.push_back(int32_t(id));
      const rl::PerplexityReport r = rl::perplexity(*model, ids, o->window, &progress);
      std::printf("%-12s %10s %8s %10s %12s\n", "file", "tokens", "window", "nll", "perplexity");
      std::printf("%-12s %10lld %8lld %10.4f %12.3f\n", std::filesystem::path(o->perplexity_file).filename().c_str(),
                  (long long)r.tokens, (long long)r.window, r.mean_nll, r.perplexity);
      report = {{"model", dir}, {"file", o->perplexity_file}, {"tokens", r.tokens}, {"windows", r.windows},
                {"window", r.window}, {"mean_nll", r.mean_nll}, {"perplexity", r.perplexity}};
    } else {
      auto task = rl::make_task(o->task);
      const int64_t count = o->limit > 0 ? o->limit : (task->name() == "gsm8k" ? 0 : 500);
      const auto problems = task->problems(rl::Split::Test, count, o->problem_seed);
      auto model = load_model(dir);
      rl::SampleOptions so;
      so.max_tokens = o->max_tokens;
      so.batch = o->batch;
      so.sampling.temperature = o->temperature;
      so.sampling.top_p = o->top_p;
      so.sampling.seed = o->seed;
      so.format = tokenizer::parse_chat_format(o->chat_format);
      if (o->samples > 1 && o->temperature <= 0)
        std::fprintf(stderr, "note: --samples %lld with greedy decoding gives identical samples; set --temperature\n",
                     (long long)o->samples);
      const rl::EvalReport r =
          rl::evaluate_task(*task, problems, o->samples, rl::model_completions(*model, tok, so, &progress));
      for (int64_t i = 0; i < o->show && i < int64_t(r.results.size()); ++i) {
        const auto& p = r.results[size_t(i)];
        std::printf("--- %s: %s (answer %s)\n%s\n", p.id.c_str(), p.question.c_str(), p.answer.c_str(),
                    p.completions.front().c_str());
      }
      std::printf("%-28s %9s %8s %8s %8s %8s %8s\n", "task", "problems", "samples", "pass@1", "maj@k", "pass@k",
                  "format");
      std::printf("%-28s %9lld %8lld %8.3f %8.3f %8.3f %8.3f\n", o->task.c_str(), (long long)r.problems,
                  (long long)r.samples, r.pass_at_1, r.maj_at_k, r.pass_at_k, r.format_rate);
      report = r.to_json(o->samples);
      report["model"] = dir;
      report["spec"] = o->task;
      report["temperature"] = o->temperature;
      report["max_tokens"] = o->max_tokens;
    }
    if (!o->out.empty()) {
      const std::string text = report.dump(2) + "\n";
      write_file_atomic(o->out, text.data(), text.size());
    }
  });
}

}  // namespace whale::cli
