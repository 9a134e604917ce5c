// whale distill: rejection-sample correct reasoning traces from a teacher, then SFT a student on them.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "rl/distill.h"

namespace whale::cli {

void add_sft_options(CLI::App* cmd, SftOptions& o);  // cmd_sft.cpp

void register_distill(CLI::App& app) {
  auto o = std::make_shared<rl::DistillOptions>();
  o->sampling.sampling.temperature = 0.7f;
  CLI::App* cmd = app.add_subcommand("distill", "Sample a teacher's correct traces on a task and fine-tune a student");
  cmd->add_option("--teacher", o->teacher_dir, "Teacher checkpoint or run directory")->required();
  cmd->add_option("--student", o->student_dir, "Student checkpoint or run directory")->required();
  cmd->add_option("--task", o->task, "arith[:digits=N,ops=+-*], countdown[:numbers=N], gsm8k[:path=P]")->required();
  cmd->add_option("--out", o->out_dir, "Output: traces.jsonl and the student run in OUT/student")->required();
  cmd->add_option("--problems", o->problems, "Training problems to sample")->capture_default_str();
  cmd->add_option("--samples", o->samples, "Teacher samples per problem")->capture_default_str();
  cmd->add_option("--keep-per-problem", o->max_per_problem, "Distinct correct traces kept per problem")
      ->capture_default_str();
  cmd->add_option("--temperature", o->sampling.sampling.temperature, "Teacher sampling temperature")
      ->capture_default_str();
  cmd->add_option("--max-tokens", o->sampling.max_tokens, "Tokens per teacher sample")->capture_default_str();
  cmd->add_option("--sample-seed", o->sampling.sampling.seed, "Teacher sampling seed")->capture_default_str();
  add_sft_options(cmd, o->sft);
  cmd->callback([o] {
    TerminalProgress progress;
    const rl::DistillResult r = rl::distill(*o, &progress);
    std::printf("teacher: %lld problems, %lld samples, kept %lld correct traces -> %s\n", (long long)r.problems,
                (long long)r.sampled, (long long)r.kept, r.data_path.c_str());
    std::printf("student: loss %.4f -> %.4f over %lld steps\ncheckpoint: %s\n", r.sft.first_loss, r.sft.final_loss,
                (long long)r.sft.steps, r.sft.final_checkpoint.c_str());
  });
}

}  // namespace whale::cli
