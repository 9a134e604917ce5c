// whale sft: supervised fine-tuning on chat JSONL; whale sft-data: a task's reference traces as chat JSONL.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "rl/distill.h"
#include "train/sft.h"

namespace whale::cli {

// The SFT options shared by `sft` and `distill`.
void add_sft_options(CLI::App* cmd, SftOptions& o) {
  cmd->add_option("--steps", o.steps, "Optimizer steps (0: from --epochs)")->capture_default_str();
  cmd->add_option("--epochs", o.epochs, "Passes over the conversations when --steps is 0")->capture_default_str();
  cmd->add_option("--batch", o.batch, "Packed rows per step")->capture_default_str();
  cmd->add_option("--seq-len", o.seq_len, "Tokens per packed row")->capture_default_str();
  cmd->add_option("--lr", o.lr, "Peak learning rate (cosine schedule)")->capture_default_str();
  cmd->add_option("--min-lr-ratio", o.min_lr_ratio, "Final learning rate / peak")->capture_default_str();
  cmd->add_option("--warmup", o.warmup, "Warmup steps (-1: 5% of the steps)")->capture_default_str();
  cmd->add_option("--weight-decay", o.adamw.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  cmd->add_option("--grad-clip", o.grad_clip, "Clip the global gradient norm (0: off)")->capture_default_str();
  cmd->add_option("--mtp-lambda", o.mtp_lambda, "Weight of the MTP loss")->capture_default_str();
  cmd->add_option("--save-every", o.save_every, "Checkpoint every N steps (0: only at the end)")->capture_default_str();
  cmd->add_option("--chat-format", o.chat_format, "deepseek-v3 (keeps <think> in assistant turns) or deepseek-r1")
      ->check(CLI::IsMember({"deepseek-v3", "deepseek-r1"}))
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed for the data order")->capture_default_str();
}

void register_sft(CLI::App& app) {
  auto o = std::make_shared<SftOptions>();
  CLI::App* cmd = app.add_subcommand("sft", "Fine-tune on chat JSONL ({\"messages\": [...]}), loss on assistant tokens");
  cmd->add_option("--model", o->model_dir, "Checkpoint or run directory (with tokenizer.json)")->required();
  cmd->add_option("--data", o->data_path, "Chat JSONL, one {\"messages\": [...]} per line")->required();
  cmd->add_option("--out", o->out_dir, "Run directory (checkpoints, metrics.jsonl)")->required();
  add_sft_options(cmd, *o);
  cmd->callback([o] {
    TerminalProgress progress;
    const SftResult r = sft(*o, &progress);
    std::printf("conversations: %lld (%lld cut to --seq-len), %lld packed rows per epoch\n", (long long)r.conversations,
                (long long)r.truncated, (long long)r.rows_per_epoch);
    std::printf("loss: %.4f -> %.4f over %lld steps, %.0f tokens/s\n", r.first_loss, r.final_loss, (long long)r.steps,
                r.tokens_per_second);
    std::printf("checkpoint: %s\n", r.final_checkpoint.c_str());
  });

  struct DataOptions {
    std::string task = "arith", out, split = "train";
    int64_t count = 500;
    uint64_t seed = 0;
  };
  auto d = std::make_shared<DataOptions>();
  CLI::App* data = app.add_subcommand("sft-data", "Write a task's reference <think> traces as chat JSONL for `whale sft`");
  data->add_option("--task", d->task, "Task spec: arith[:digits=N,ops=+-*], countdown[:numbers=N], gsm8k[:path=P]")
      ->capture_default_str();
  data->add_option("--count", d->count, "Conversations to write (0: a whole fixed-size split)")->capture_default_str();
  data->add_option("--split", d->split, "train or test")->check(CLI::IsMember({"train", "test"}))->capture_default_str();
  data->add_option("--seed", d->seed, "Which problems")->capture_default_str();
  data->add_option("--out", d->out, "Output FILE.jsonl (written atomically)")->required();
  data->callback([d] {
    auto task = rl::make_task(d->task);
    const auto convs =
        rl::reference_conversations(*task, d->split == "test" ? rl::Split::Test : rl::Split::Train, d->count, d->seed);
    rl::write_chat_jsonl(d->out, convs);
    std::printf("%zu conversations -> %s\n", convs.size(), d->out.c_str());
  });
}

}  // namespace whale::cli
