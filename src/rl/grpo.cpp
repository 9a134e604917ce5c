#include "rl/grpo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mmap.h"
#include "io/checkpoint.h"
#include "model/train_graph.h"
#include "rl/rollout.h"
#include "train/optimizer.h"
#include "train/pretrain.h"

namespace whale::rl {

namespace fs = std::filesystem;
using json = nlohmann::json;

LossNorm parse_loss_norm(const std::string& name) {
  if (name == "sequence") return LossNorm::Sequence;
  if (name == "token") return LossNorm::Token;
  if (name == "constant") return LossNorm::Constant;
  throw Error("--loss-norm", "'" + name + "' is not a normalisation (expected sequence, token or constant)");
}

std::vector<double> group_advantages(const std::vector<double>& rewards, int64_t group_size, bool scale_std) {
  if (group_size <= 0 || rewards.size() % size_t(group_size) != 0)
    throw Error("group_size", std::to_string(rewards.size()) + " rewards do not split into groups of " +
                                  std::to_string(group_size));
  std::vector<double> adv(rewards.size());
  const size_t G = size_t(group_size);
  for (size_t g0 = 0; g0 < rewards.size(); g0 += G) {
    double mean = 0.0, var = 0.0, lo = rewards[g0], hi = rewards[g0];
    for (size_t i = 0; i < G; ++i) {
      mean += rewards[g0 + i];
      lo = std::min(lo, rewards[g0 + i]);
      hi = std::max(hi, rewards[g0 + i]);
    }
    mean /= double(G);
    // Equal rewards carry no signal: exact zeros, not the rounding error of the mean (1e-17)
    // divided by the 1e-4 floor, which would keep every such completion in the backward pass.
    if (hi == lo) {
      std::fill(adv.begin() + std::ptrdiff_t(g0), adv.begin() + std::ptrdiff_t(g0 + G), 0.0);
      continue;
    }
    for (size_t i = 0; i < G; ++i) var += (rewards[g0 + i] - mean) * (rewards[g0 + i] - mean);
    const double denom = scale_std ? std::sqrt(var / double(G)) + 1e-4 : 1.0;
    for (size_t i = 0; i < G; ++i) adv[g0 + i] = (rewards[g0 + i] - mean) / denom;
  }
  return adv;
}

double k3_kl(double logp, double ref_logp) {
  const double d = ref_logp - logp;
  return std::exp(d) - d - 1.0;
}

std::vector<double> sequence_token_weights(const std::vector<int64_t>& lengths, LossNorm norm, int64_t max_tokens) {
  std::vector<double> w(lengths.size(), 0.0);
  const double S = double(lengths.size());
  int64_t total = 0;
  for (int64_t n : lengths) total += n;
  for (size_t i = 0; i < lengths.size(); ++i) {
    if (lengths[i] <= 0) continue;
    switch (norm) {
      case LossNorm::Sequence: w[i] = 1.0 / (S * double(lengths[i])); break;
      case LossNorm::Token: w[i] = 1.0 / double(total); break;
      case LossNorm::Constant: w[i] = 1.0 / (S * double(std::max<int64_t>(max_tokens, 1))); break;
    }
  }
  return w;
}

void ObjectiveStats::add(const ObjectiveStats& o) {
  loss += o.loss;
  policy_loss += o.policy_loss;
  kl_loss += o.kl_loss;
  kl_sum += o.kl_sum;
  ratio_sum += o.ratio_sum;
  tokens += o.tokens;
  clipped += o.clipped;
}

double clipped_objective(int64_t n, const float* weight, const float* advantage, const float* old_logp,
                         const float* ref_logp, const float* logp, float* dlogp, const ObjectiveOptions& o,
                         ObjectiveStats* stats) {
  if (o.kl_beta != 0.0 && ref_logp == nullptr)
    throw Error("kl_beta", "a KL penalty needs the reference model's log-probabilities");
  ObjectiveStats s;
  for (int64_t t = 0; t < n; ++t) {
    dlogp[t] = 0.0f;
    const double w = weight[t];
    if (w == 0.0) continue;
    const double lp = logp[t], A = advantage[t];
    const double old = old_logp ? double(old_logp[t]) : lp;
    const double r = std::exp(lp - old);
    const double rc = std::clamp(r, 1.0 - o.clip_low, 1.0 + o.clip_high);
    // -min(r A, clip(r) A): the clipped branch wins (and is flat) exactly in these two cases.
    const bool clipped = (A > 0 && r > 1.0 + o.clip_high) || (A < 0 && r < 1.0 - o.clip_low);
    const double policy = -std::min(r * A, rc * A);
    double grad = clipped ? 0.0 : -A * r;
    double kl = 0.0;
    if (ref_logp) {
      kl = k3_kl(lp, ref_logp[t]);
      grad += o.kl_beta * (1.0 - std::exp(double(ref_logp[t]) - lp));  // d k3 / d logp
    }
    dlogp[t] = float(w * grad);
    s.policy_loss += w * policy;
    s.kl_loss += w * o.kl_beta * kl;
    s.kl_sum += kl;
    s.ratio_sum += r;
    s.tokens += 1;
    s.clipped += clipped ? 1 : 0;
  }
  s.loss = s.policy_loss + s.kl_loss;
  if (stats) stats->add(s);
  return s.loss;
}

namespace {

// Samples laid out as TrainBatch rows: prompt + completion, padded to a common length.
struct PolicyBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;  // [B, T + 1]
  std::vector<float> weight, advantage, old_logp, ref_logp;  // [B, T]; old/ref empty when absent
};

// Position t of row i predicts token t + 1, so completion token j is the target at prompt + j - 1.
int64_t first_target(const PolicySample& s) { return int64_t(s.prompt.size()) - 1; }

// Padding (id `pad`) only follows a row's real tokens, so causal attention never sees it.
PolicyBatch make_batch(const std::vector<PolicySample>& ss, int64_t b0, int64_t n, int32_t pad) {
  PolicyBatch b;
  b.B = n;
  int64_t len = 2;
  bool old = false, ref = false;
  for (int64_t i = 0; i < n; ++i) {
    const PolicySample& s = ss[size_t(b0 + i)];
    if (s.prompt.empty()) throw Error("prompt", "a policy sample needs at least one prompt token");
    len = std::max<int64_t>(len, int64_t(s.prompt.size() + s.completion.size()));
    old = old || !s.old_logp.empty();
    ref = ref || !s.ref_logp.empty();
  }
  b.T = len - 1;
  b.tokens.assign(size_t(b.B * (b.T + 1)), pad);
  b.weight.assign(size_t(b.B * b.T), 0.0f);
  b.advantage.assign(size_t(b.B * b.T), 0.0f);
  if (old) b.old_logp.assign(size_t(b.B * b.T), 0.0f);
  if (ref) b.ref_logp.assign(size_t(b.B * b.T), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    const PolicySample& s = ss[size_t(b0 + i)];
    const size_t C = s.completion.size();
    if ((old && s.old_logp.size() != C) || (ref && s.ref_logp.size() != C))
      throw Error("old_logp/ref_logp", "sample " + std::to_string(b0 + i) + " needs one value per completion token (" +
                                           std::to_string(C) + ")");
    int32_t* row = b.tokens.data() + i * (b.T + 1);
    std::copy(s.prompt.begin(), s.prompt.end(), row);
    std::copy(s.completion.begin(), s.completion.end(), row + s.prompt.size());
    for (size_t j = 0; j < C; ++j) {
      const size_t t = size_t(i * b.T + first_target(s) + int64_t(j));
      b.weight[t] = float(s.token_weight);
      b.advantage[t] = float(s.advantage);
      if (old) b.old_logp[t] = s.old_logp[j];
      if (ref) b.ref_logp[t] = s.ref_logp[j];
    }
  }
  return b;
}

// Runs fn(begin, count) over micro-batches of whole rows.
template <class Fn>
void for_micro_batches(int64_t B, int64_t micro, Fn fn) {
  const int64_t m = micro > 0 ? micro : B;
  for (int64_t b0 = 0; b0 < B; b0 += m) fn(b0, std::min(m, B - b0));
}

}  // namespace

GradientReport grpo_gradient(TrainGraph& graph, const std::vector<PolicySample>& samples, const ObjectiveOptions& o,
                             int64_t micro_batch, Gradients& grads) {
  GradientReport out;
  for_micro_batches(int64_t(samples.size()), micro_batch, [&](int64_t b0, int64_t n) {
    const PolicyBatch pb = make_batch(samples, b0, n, 0);
    TrainBatch tb{pb.B, pb.T, pb.tokens.data(), nullptr};
    LossOptions lopt;
    lopt.token_loss = [&](const float* logp, float* dlogp) {
      return clipped_objective(pb.B * pb.T, pb.weight.data(), pb.advantage.data(),
                               pb.old_logp.empty() ? nullptr : pb.old_logp.data(),
                               pb.ref_logp.empty() ? nullptr : pb.ref_logp.data(), logp, dlogp, o, &out.objective);
    };
    const LossReport rep = graph.forward_backward(tb, lopt, grads);
    for (int64_t t = 0; t < pb.B * pb.T; ++t)
      if (pb.weight[size_t(t)] != 0.0f) {
        out.entropy_sum += rep.entropy[size_t(t)];
        out.logp_sum += rep.target_logprobs[size_t(t)];
      }
  });
  return out;
}

std::vector<std::vector<float>> completion_logprobs(TrainGraph& graph, const std::vector<PolicySample>& samples,
                                                    int64_t micro_batch) {
  std::vector<std::vector<float>> out(samples.size());
  for_micro_batches(int64_t(samples.size()), micro_batch, [&](int64_t b0, int64_t n) {
    const PolicyBatch pb = make_batch(samples, b0, n, 0);
    TrainBatch tb{pb.B, pb.T, pb.tokens.data(), nullptr};
    LossOptions lo;
    lo.token_stats = true;
    const LossReport rep = graph.forward(tb, lo);
    for (int64_t i = 0; i < n; ++i) {
      const PolicySample& s = samples[size_t(b0 + i)];
      const float* lp = rep.target_logprobs.data() + i * pb.T + first_target(s);
      out[size_t(b0 + i)].assign(lp, lp + s.completion.size());
    }
  });
  return out;
}

namespace {

std::string two_digits(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

}  // namespace

GrpoResult grpo(const GrpoOptions& o, const Task& task, Progress* progress) {
  if (o.steps <= 0) throw Error("--steps", "must be positive");
  if (o.prompts_per_step <= 0) throw Error("--prompts", "must be positive");
  if (o.group_size < 2) throw Error("--group-size", "must be at least 2 (advantages compare completions of a group)");
  if (o.updates_per_batch <= 0) throw Error("--updates", "must be positive");
  if (o.max_tokens <= 0) throw Error("--max-tokens", "must be positive");
  if (o.objective.clip_low < 0 || o.objective.clip_low >= 1 || o.objective.clip_high < 0)
    throw Error("--clip-low/--clip-high", "need 0 <= clip_low < 1 and clip_high >= 0");
  if (o.objective.kl_beta < 0) throw Error("--kl-beta", "must be >= 0");
  if (!(o.adam_eps > 0)) throw Error("--adam-eps", "must be positive");
  const tokenizer::ChatFormat format = tokenizer::parse_chat_format(o.chat_format);

  LoadOptions lo;
  lo.keep_bf16 = false;
  const std::string ref_dir = resolve_checkpoint(o.model);
  const std::string start_dir = o.resume.empty() ? ref_dir : resolve_checkpoint(o.resume);
  auto policy = load_model(start_dir, lo);
  const std::string tok_path = (fs::path(start_dir) / "tokenizer.json").string();
  if (!fs::exists(tok_path)) throw Error(tok_path, "GRPO needs the checkpoint's tokenizer to render prompts");
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(tok_path);
  std::unique_ptr<Model> reference;
  if (o.objective.kl_beta > 0) reference = load_model(ref_dir, lo);

  fs::create_directories(o.out_dir);
  for (const auto& e : fs::directory_iterator(o.out_dir))  // leftovers of a killed save
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) fs::remove_all(e.path());
  TrainGraph graph(*policy);
  std::unique_ptr<TrainGraph> ref_graph;
  if (reference) ref_graph = std::make_unique<TrainGraph>(*reference);
  Gradients grads(*policy);
  AdamWOptions ao;
  ao.weight_decay = o.weight_decay;
  ao.eps = o.adam_eps;
  AdamW adamw(*policy, grads, ao);
  int64_t start_step = 0;
  if (!o.resume.empty()) {
    const json state = json::parse(read_text_file((fs::path(start_dir) / "trainer_state.json").string()));
    start_step = state.at("step").get<int64_t>();
    adamw.load((fs::path(start_dir) / "optimizer.safetensors").string());
  }
  LrSchedule sched;
  sched.kind = o.min_lr_ratio == 1.0 ? ScheduleKind::Constant : ScheduleKind::Cosine;
  sched.lr = o.lr;
  sched.min_lr = o.lr * o.min_lr_ratio;
  sched.warmup = o.warmup;
  sched.total = o.steps;

  json run_config = {{"model", o.model}, {"task", task.name()}, {"steps", o.steps},
                     {"prompts_per_step", o.prompts_per_step}, {"group_size", o.group_size},
                     {"updates_per_batch", o.updates_per_batch}, {"max_tokens", o.max_tokens},
                     {"temperature", o.temperature}, {"top_p", o.top_p}, {"lr", o.lr}, {"min_lr_ratio", o.min_lr_ratio},
                     {"warmup", o.warmup}, {"grad_clip", o.grad_clip}, {"weight_decay", o.weight_decay},
                     {"adam_eps", o.adam_eps},
                     {"clip_low", o.objective.clip_low}, {"clip_high", o.objective.clip_high},
                     {"kl_beta", o.objective.kl_beta}, {"scale_std", o.scale_std},
                     {"loss_norm", o.loss_norm == LossNorm::Sequence ? "sequence"
                                   : o.loss_norm == LossNorm::Token  ? "token"
                                                                     : "constant"},
                     {"format_weight", o.format_weight}, {"chat_format", o.chat_format}, {"seed", o.seed}};
  {
    const std::string text = run_config.dump(2) + "\n";
    write_file_atomic((fs::path(o.out_dir) / "run_config.json").string(), text.data(), text.size());
  }
  // metrics.jsonl: on resume keep the steps up to the checkpoint.
  const fs::path metrics_path = fs::path(o.out_dir) / "metrics.jsonl";
  truncate_metrics(metrics_path.string(), start_step);
  std::ofstream metrics(metrics_path, std::ios::app);

  const std::vector<Problem> train = task.problems(Split::Train, o.steps * o.prompts_per_step, o.seed);
  if (train.empty()) throw Error("--task", "task '" + task.name() + "' has no training problems");
  GrpoResult result;
  if (progress) progress->start("grpo", o.steps);
  if (progress) progress->update(start_step);
  for (int64_t step = start_step; step < o.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Problem> batch_problems;
    for (int64_t p = 0; p < o.prompts_per_step; ++p)
      batch_problems.push_back(train[size_t((step * o.prompts_per_step + p) % int64_t(train.size()))]);
    RolloutOptions ro;
    ro.group_size = o.group_size;
    ro.max_tokens = o.max_tokens;
    ro.sampling.temperature = float(o.temperature);
    ro.sampling.top_p = float(o.top_p);
    ro.sampling.seed = o.seed * 1000003ull + uint64_t(step) * 7919ull;
    ro.format = format;
    ro.format_weight = o.format_weight;
    const std::vector<Rollout> rollouts = sample_rollouts(*policy, tok, task, batch_problems, ro);

    std::vector<double> rewards;
    std::vector<int64_t> lengths;
    GrpoStepMetrics m;
    m.step = step + 1;
    for (const Rollout& r : rollouts) {
      rewards.push_back(r.reward);
      lengths.push_back(int64_t(r.completion.size()));
      m.reward += r.reward;
      m.accuracy += r.result.accuracy;
      m.format += r.result.format;
      m.response_length += double(r.completion.size());
    }
    const double S = double(rollouts.size());
    m.reward /= S;
    m.accuracy /= S;
    m.format /= S;
    m.response_length /= S;
    for (size_t g0 = 0; g0 < rollouts.size(); g0 += size_t(o.group_size)) {
      bool mixed = false;
      for (size_t i = 1; i < size_t(o.group_size); ++i)
        mixed = mixed || rollouts[g0 + i].result.accuracy != rollouts[g0].result.accuracy;
      m.mixed_groups += mixed ? 1.0 : 0.0;
    }
    m.mixed_groups /= double(o.prompts_per_step);
    const std::vector<double> adv = group_advantages(rewards, o.group_size, o.scale_std);
    const std::vector<double> seq_w = sequence_token_weights(lengths, o.loss_norm, o.max_tokens);
    // Completions with zero advantage and no KL term contribute nothing: leave them out.
    std::vector<PolicySample> samples;
    for (size_t i = 0; i < rollouts.size(); ++i) {
      if (rollouts[i].completion.empty() || (adv[i] == 0.0 && o.objective.kl_beta == 0.0)) continue;
      PolicySample s;
      s.prompt = rollouts[i].prompt;
      s.completion = rollouts[i].completion;
      s.advantage = adv[i];
      s.token_weight = seq_w[i];
      samples.push_back(std::move(s));
    }
    const double lr = sched.at(step);
    m.lr = lr;
    if (!samples.empty()) {
      if (ref_graph) {
        auto ref = completion_logprobs(*ref_graph, samples, o.micro_batch);
        for (size_t i = 0; i < samples.size(); ++i) samples[i].ref_logp = std::move(ref[i]);
      }
      // With one update per batch the sampling policy is the current one: old = logp detached.
      if (o.updates_per_batch > 1) {
        auto old = completion_logprobs(graph, samples, o.micro_batch);
        for (size_t i = 0; i < samples.size(); ++i) samples[i].old_logp = std::move(old[i]);
      }
      ObjectiveStats all;
      for (int64_t u = 0; u < o.updates_per_batch; ++u) {
        grads.zero();
        const GradientReport gr = grpo_gradient(graph, samples, o.objective, o.micro_batch, grads);
        const ObjectiveStats& st = gr.objective;
        if (!std::isfinite(st.loss))
          throw Error("training", "GRPO loss became " + std::to_string(st.loss) + " at step " +
                                      std::to_string(step + 1) + "; lower --lr");
        const double gnorm = adamw.clip_and_step(o.grad_clip, lr);
        if (u == 0) {
          m.grad_norm = gnorm;
          m.loss = st.loss;
          m.kl = st.tokens ? st.kl_sum / double(st.tokens) : 0.0;
          m.entropy = st.tokens ? gr.entropy_sum / double(st.tokens) : 0.0;
          m.sampled_nll = st.tokens ? -gr.logp_sum / double(st.tokens) : 0.0;
        }
        all.add(st);
        m.last_objective = st.loss;
        m.last_ratio = st.tokens ? st.ratio_sum / double(st.tokens) : 1.0;
      }
      m.clip_fraction = all.tokens ? double(all.clipped) / double(all.tokens) : 0.0;
    }
    m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json j = {{"step", m.step}, {"reward", m.reward}, {"accuracy", m.accuracy}, {"format_reward", m.format},
              {"response_length", m.response_length}, {"kl", m.kl}, {"clip_fraction", m.clip_fraction},
              {"entropy", m.entropy}, {"sampled_nll", m.sampled_nll},
              {"mixed_groups", m.mixed_groups}, {"objective", m.loss}, {"last_objective", m.last_objective},
              {"last_ratio", m.last_ratio}, {"lr", m.lr}, {"grad_norm", m.grad_norm},
              {"seconds", m.seconds}, {"trained_completions", int64_t(samples.size())}};
    metrics << j.dump() << "\n";
    metrics.flush();
    result.steps.push_back(m);
    const bool last = step + 1 == o.steps;
    if (last || (o.save_every > 0 && (step + 1) % o.save_every == 0)) {
      json state = {{"step", step + 1}, {"format", "whale-grpo-1"}, {"reward", m.reward}, {"accuracy", m.accuracy},
                    {"run_config", run_config}};
      // The tokenizer comes from --model: a resumed checkpoint may be pruned while this run saves.
      result.final_checkpoint = save_checkpoint(o.out_dir, step + 1, *policy, adamw, state, ref_dir);
    }
    if (progress)
      progress->update(step + 1, "reward " + two_digits(m.reward) + " acc " + two_digits(m.accuracy) + " len " +
                                     two_digits(m.response_length) + " kl " + two_digits(m.kl));
  }
  if (progress) progress->finish();
  if (result.final_checkpoint.empty()) result.final_checkpoint = resolve_checkpoint(o.out_dir);
  return result;
}

}  // namespace whale::rl
