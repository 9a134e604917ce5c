// whale grpo: reasoning RL with GRPO on a verifiable task; whale grpo-grad: the gradient of the
// GRPO objective for given completions (so an outside reference can check it).
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "core/mmap.h"
#include "core/progress.h"
#include "io/checkpoint.h"
#include "rl/grpo.h"
#include "rl/task.h"

namespace whale::cli {

namespace {

void register_grpo_grad(CLI::App& app) {
  struct Options {
    std::string model, input, out;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "grpo-grad", "Write d(GRPO loss)/d(parameter) for given completions as F32 safetensors (for reference checks)");
  cmd->add_option("--model", opt->model, "Checkpoint directory")->required();
  cmd->add_option("--input", opt->input,
                  "JSON: {samples: [{prompt, completion, advantage, old_logp, ref_logp}], loss_norm, max_tokens, "
                  "clip_low, clip_high, kl_beta}")
      ->required();
  cmd->add_option("--out", opt->out, "Output .safetensors file")->required();
  cmd->callback([opt] {
    using json = nlohmann::json;
    json in;
    try {
      in = json::parse(read_text_file(opt->input));
    } catch (const json::exception& e) {
      throw Error(opt->input, std::string("is not valid JSON: ") + e.what());
    }
    LoadOptions lo;
    lo.keep_bf16 = false;
    auto model = load_model(opt->model, lo);
    std::vector<rl::PolicySample> samples;
    std::vector<int64_t> lengths;
    rl::ObjectiveOptions oo;
    rl::LossNorm norm;
    int64_t max_tokens = 0;
    try {
      for (const auto& s : in.at("samples")) {
        rl::PolicySample p;
        p.prompt = s.at("prompt").get<std::vector<int32_t>>();
        p.completion = s.at("completion").get<std::vector<int32_t>>();
        p.advantage = s.at("advantage").get<double>();
        if (s.contains("old_logp")) p.old_logp = s["old_logp"].get<std::vector<float>>();
        if (s.contains("ref_logp")) p.ref_logp = s["ref_logp"].get<std::vector<float>>();
        lengths.push_back(int64_t(p.completion.size()));
        samples.push_back(std::move(p));
      }
      norm = rl::parse_loss_norm(in.at("loss_norm").get<std::string>());
      max_tokens = in.at("max_tokens").get<int64_t>();
      oo.clip_low = in.at("clip_low").get<double>();
      oo.clip_high = in.at("clip_high").get<double>();
      oo.kl_beta = in.at("kl_beta").get<double>();
    } catch (const json::exception& e) {
      throw Error(opt->input, std::string("bad field: ") + e.what());
    }
    const std::vector<double> w = rl::sequence_token_weights(lengths, norm, max_tokens);
    for (size_t i = 0; i < samples.size(); ++i) samples[i].token_weight = w[i];
    TrainGraph graph(*model);
    Gradients grads(*model);
    const rl::GradientReport rep = rl::grpo_gradient(graph, samples, oo, 0, grads);
    std::vector<TensorToWrite> out;
    visit_weights(model->config, grads.weights, [&](Tensor& t, const TensorSpec& spec) {
      if (spec.name.find("e_score_correction_bias") != std::string::npos) return;  // not trained by gradient
      if (spec.name == "lm_head.weight" && model->config.tie_word_embeddings) return;
      out.push_back({spec.name, DType::F32, spec.shape, t.data});
    });
    write_safetensors(opt->out, out, {{"loss", std::to_string(rep.objective.loss)}});
    std::fprintf(stderr, "loss %.6f, %lld tokens, %lld clipped -> %s\n", rep.objective.loss,
                 (long long)rep.objective.tokens, (long long)rep.objective.clipped, opt->out.c_str());
  });
}

}  // namespace

void register_grpo(CLI::App& app) {
  auto o = std::make_shared<rl::GrpoOptions>();
  auto task_spec = std::make_shared<std::string>();
  auto loss_norm = std::make_shared<std::string>("sequence");
  auto no_std = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "grpo", "Reasoning RL: GRPO (group-normalised advantages, clipped ratio, k3 KL to the starting model)");
  cmd->add_option("--model", o->model, "Starting checkpoint or run directory (also the frozen KL reference)")
      ->required();
  cmd->add_option("--task", *task_spec, "Task spec, e.g. arith:digits=2,ops=+ or countdown:numbers=3")->required();
  cmd->add_option("--out", o->out_dir, "Run directory (checkpoints, metrics.jsonl)")->required();
  cmd->add_option("--resume", o->resume, "Continue from a GRPO run directory or checkpoint");
  cmd->add_option("--steps", o->steps, "Steps (one batch of rollouts each)")->capture_default_str();
  cmd->add_option("--prompts", o->prompts_per_step, "Problems per step")->capture_default_str();
  cmd->add_option("--group-size", o->group_size, "Completions sampled per problem (G)")->capture_default_str();
  cmd->add_option("--updates", o->updates_per_batch, "Gradient updates per batch of rollouts (mu)")
      ->capture_default_str();
  cmd->add_option("--micro-batch", o->micro_batch, "Sequences per forward/backward (0: all)")->capture_default_str();
  cmd->add_option("--max-tokens", o->max_tokens, "Completion budget in tokens")->capture_default_str();
  cmd->add_option("--temperature", o->temperature, "Sampling temperature of the rollouts")->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "Nucleus sampling of the rollouts")->capture_default_str();
  cmd->add_option("--lr", o->lr, "Learning rate (AdamW)")->capture_default_str();
  cmd->add_option("--min-lr-ratio", o->min_lr_ratio, "Cosine decay to lr * ratio (1: constant)")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Warmup steps")->capture_default_str();
  cmd->add_option("--grad-clip", o->grad_clip, "Clip the global gradient norm (0: off)")->capture_default_str();
  cmd->add_option("--weight-decay", o->weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  cmd->add_option("--adam-eps", o->adam_eps, "AdamW epsilon (larger damps parameters whose gradients are tiny noise)")
      ->capture_default_str();
  cmd->add_option("--clip-low", o->objective.clip_low, "epsilon_low of the ratio clip")->capture_default_str();
  cmd->add_option("--clip-high", o->objective.clip_high, "epsilon_high (DAPO clip-higher: above clip-low)")
      ->capture_default_str();
  cmd->add_option("--kl-beta", o->objective.kl_beta, "Weight of the k3 KL penalty to the starting model")
      ->capture_default_str();
  cmd->add_option("--loss-norm", *loss_norm,
                  "sequence (GRPO), token (DAPO token-level) or constant (Dr. GRPO: / (completions * max-tokens))")
      ->check(CLI::IsMember({"sequence", "token", "constant"}))
      ->capture_default_str();
  cmd->add_flag("--no-std", *no_std, "Do not divide advantages by the group's std (Dr. GRPO)");
  cmd->add_option("--format-weight", o->format_weight, "reward = accuracy + w * format")->capture_default_str();
  cmd->add_option("--chat-format", o->chat_format, "Prompt template: deepseek-v3 or deepseek-r1")
      ->check(CLI::IsMember({"deepseek-v3", "deepseek-r1"}))
      ->capture_default_str();
  cmd->add_option("--save-every", o->save_every, "Checkpoint every N steps (0: only at the end)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed for problems and sampling")->capture_default_str();
  cmd->callback([o, task_spec, loss_norm, no_std] {
    o->loss_norm = rl::parse_loss_norm(*loss_norm);
    o->scale_std = !*no_std;
    const auto task = rl::make_task(*task_spec);
    TerminalProgress progress;
    const rl::GrpoResult r = rl::grpo(*o, *task, &progress);
    if (!r.steps.empty()) {
      const auto& f = r.steps.front();
      const auto& l = r.steps.back();
      std::printf("reward %.3f -> %.3f, train accuracy %.3f -> %.3f, response length %.1f -> %.1f tokens\n", f.reward,
                  l.reward, f.accuracy, l.accuracy, f.response_length, l.response_length);
    }
    std::printf("checkpoint: %s\n", r.final_checkpoint.c_str());
  });
  register_grpo_grad(app);
}

}  // namespace whale::cli
