// Pretraining of DeepSeek-V3-architecture models: data windows -> forward/backward ->
// AdamW, with DeepSeek-V3's auxiliary-loss-free balancing, MTP loss, checkpoints and resume.
#pragma once
#include <cmath>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "core/progress.h"
#include "model/config.h"
#include "train/optimizer.h"

namespace whale {

struct PretrainOptions {
  std::string config;  // config.json of the model to train (unused when resuming)
  std::string preset;  // tiny | small | base when no config is given
  std::string data_dir, out_dir, resume;
  int64_t steps = 100;
  int64_t batch = 8, seq_len = 128, grad_accum = 1;
  AdamWOptions adamw;
  LrSchedule schedule;  // total/lr/min_lr/warmup filled from the fields below when unset
  double lr = 3e-3, min_lr_ratio = 0.1, grad_clip = 1.0;
  int64_t warmup = -1;  // -1: 5% of the steps
  std::string schedule_kind = "cosine";  // cosine | wsd | constant
  double mtp_lambda = 0.3;       // DeepSeek-V3 uses 0.3 early in training
  double balance_alpha = 1e-4;   // complementary sequence-wise balance loss weight
  double bias_gamma = 1e-3;      // auxiliary-loss-free bias update speed
  int64_t eval_every = 50, eval_windows = 16, save_every = 0, log_every = 1;
  uint64_t seed = 0;
  std::string precision = "fp32";  // fp32 | bf16 | fp8 (simulated)
  double init_std = 0.02;
};

struct PretrainResult {
  int64_t steps = 0;
  double final_loss = 0, final_val_loss = 0;
  // bf16 / fp8 runs: the final validation loss of the same weights with an FP32 forward (NaN otherwise).
  double final_val_loss_fp32 = NAN;
  double tokens_per_second = 0;
  std::string final_checkpoint;
  size_t weight_bytes = 0, optimizer_bytes = 0, gradient_bytes = 0;
};

// Hugging Face style config of a named preset, sized for the given vocabulary.
// tiny: minutes on 2 cores; small: about an hour; base: about a day.
ModelConfig preset_config(const std::string& name, int64_t vocab_size, int64_t bos_id, int64_t eos_id);

PretrainResult pretrain(const PretrainOptions& options, Progress* progress);

// Reads the checkpoint directory named in RUN_DIR/latest (or RUN_DIR itself if it is one).
std::string resolve_checkpoint(const std::string& path);

// Writes OUT_DIR/step-NNNNNN (F32 weights, the tokenizer files found in tokenizer_dir, optimizer
// state, trainer_state.json from `state`) atomically, then points OUT_DIR/latest at it and keeps
// only the one before it. Returns the new directory. Shared by pretraining and RL training.
// Rewrites a metrics.jsonl keeping the lines with step <= last_step (none when last_step is 0),
// so a resumed run continues a clean log.
void truncate_metrics(const std::string& path, int64_t last_step);

std::string save_checkpoint(const std::string& out_dir, int64_t step, const Model& model, const AdamW& adamw,
                            const nlohmann::json& state, const std::string& tokenizer_dir);

}  // namespace whale
