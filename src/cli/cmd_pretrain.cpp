// whale pretrain: train a DeepSeek-V3-architecture model from token shards.
#include <cmath>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "train/pretrain.h"

namespace whale::cli {

void register_pretrain(CLI::App& app) {
  auto o = std::make_shared<PretrainOptions>();
  CLI::App* cmd = app.add_subcommand("pretrain", "Pretrain a model from `whale data prepare` shards");
  cmd->add_option("--config", o->config, "Model config.json (Hugging Face DeepSeek fields)");
  cmd->add_option("--preset", o->preset, "tiny (minutes), small (about an hour), base (about a day) on 2 cores")
      ->check(CLI::IsMember({"tiny", "small", "base"}));
  cmd->add_option("--data", o->data_dir, "Data directory from `whale data prepare`")->required();
  cmd->add_option("--out", o->out_dir, "Run directory (checkpoints, metrics.jsonl)")->required();
  cmd->add_option("--resume", o->resume, "Continue from a run directory or checkpoint");
  cmd->add_option("--steps", o->steps, "Total optimizer steps")->capture_default_str();
  cmd->add_option("--batch", o->batch, "Sequences per micro-batch")->capture_default_str();
  cmd->add_option("--seq-len", o->seq_len, "Tokens per sequence")->capture_default_str();
  cmd->add_option("--grad-accum", o->grad_accum, "Micro-batches per optimizer step")->capture_default_str();
  cmd->add_option("--lr", o->lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr-ratio", o->min_lr_ratio, "Final learning rate / peak")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Warmup steps (-1: 5% of the steps)")->capture_default_str();
  cmd->add_option("--schedule", o->schedule_kind, "cosine, wsd (warmup-stable-decay) or constant")
      ->capture_default_str();
  cmd->add_option("--weight-decay", o->adamw.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  cmd->add_option("--grad-clip", o->grad_clip, "Clip the global gradient norm (0: off)")->capture_default_str();
  cmd->add_option("--mtp-lambda", o->mtp_lambda, "Weight of the MTP loss")->capture_default_str();
  cmd->add_option("--balance-alpha", o->balance_alpha, "Weight of the sequence-wise balance loss")
      ->capture_default_str();
  cmd->add_option("--bias-gamma", o->bias_gamma, "Auxiliary-loss-free bias update speed")->capture_default_str();
  cmd->add_option("--eval-every", o->eval_every, "Validation every N steps (0: only at the end)")->capture_default_str();
  cmd->add_option("--eval-windows", o->eval_windows, "Validation windows per evaluation")->capture_default_str();
  cmd->add_option("--save-every", o->save_every, "Checkpoint every N steps (0: only at the end)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed for init and data sampling")->capture_default_str();
  cmd->add_option("--precision", o->precision, "Compute mode: fp32, bf16 or fp8 (simulated, FP32 master weights)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp8"}))
      ->capture_default_str();
  cmd->callback([o] {
    if (o->config.empty() && o->preset.empty() && o->resume.empty()) o->preset = "tiny";
    TerminalProgress progress;
    PretrainResult r = pretrain(*o, &progress);
    std::printf("final: loss %.4f, validation loss %.4f, %.0f tokens/s\n", r.final_loss, r.final_val_loss,
                r.tokens_per_second);
    if (std::isfinite(r.final_val_loss_fp32))
      std::printf("final: validation loss %.4f with an FP32 forward of the same weights\n", r.final_val_loss_fp32);
    std::printf("memory: weights %.1f MB, gradients %.1f MB, AdamW state %.1f MB (FP32 master, %s compute)\n",
                r.weight_bytes / 1e6, r.gradient_bytes / 1e6, r.optimizer_bytes / 1e6, o->precision.c_str());
    std::printf("checkpoint: %s\n", r.final_checkpoint.c_str());
  });
}

}  // namespace whale::cli
