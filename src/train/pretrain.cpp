#include "train/pretrain.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/mmap.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "model/train_graph.h"
#include "train/data.h"

namespace whale {

namespace fs = std::filesystem;
using json = nlohmann::json;

ModelConfig preset_config(const std::string& name, int64_t vocab_size, int64_t bos_id, int64_t eos_id) {
  json j = {{"model_type", "deepseek_v3"}, {"vocab_size", vocab_size}, {"first_k_dense_replace", 1},
            {"moe_layer_freq", 1}, {"n_shared_experts", 1}, {"topk_method", "noaux_tc"},
            {"scoring_func", "sigmoid"}, {"norm_topk_prob", true}, {"routed_scaling_factor", 2.5},
            {"rope_theta", 10000.0}, {"rms_norm_eps", 1e-6}, {"num_nextn_predict_layers", 1},
            {"tie_word_embeddings", false}, {"bos_token_id", std::max<int64_t>(bos_id, 0)},
            {"eos_token_id", std::max<int64_t>(eos_id, 0)}, {"max_position_embeddings", 4096}};
  // Shapes keep V3's proportions: q LoRA, kv_lora_rank = 4 x rope dim, many small experts.
  if (name == "tiny") {
    j.update({{"hidden_size", 128}, {"intermediate_size", 384}, {"moe_intermediate_size", 96}, {"num_hidden_layers", 4},
              {"num_attention_heads", 4}, {"n_routed_experts", 8}, {"num_experts_per_tok", 2}, {"n_group", 2},
              {"topk_group", 1}, {"q_lora_rank", 96}, {"kv_lora_rank", 64}, {"qk_nope_head_dim", 32},
              {"qk_rope_head_dim", 16}, {"v_head_dim", 32}});
  } else if (name == "small") {
    j.update({{"hidden_size", 256}, {"intermediate_size", 768}, {"moe_intermediate_size", 128}, {"num_hidden_layers", 6},
              {"num_attention_heads", 8}, {"n_routed_experts", 16}, {"num_experts_per_tok", 4}, {"n_group", 4},
              {"topk_group", 2}, {"q_lora_rank", 192}, {"kv_lora_rank", 128}, {"qk_nope_head_dim", 32},
              {"qk_rope_head_dim", 16}, {"v_head_dim", 32}});
  } else if (name == "base") {
    j.update({{"hidden_size", 512}, {"intermediate_size", 1536}, {"moe_intermediate_size", 256}, {"num_hidden_layers", 12},
              {"num_attention_heads", 8}, {"n_routed_experts", 32}, {"num_experts_per_tok", 6}, {"n_group", 8},
              {"topk_group", 4}, {"q_lora_rank", 384}, {"kv_lora_rank", 256}, {"qk_nope_head_dim", 64},
              {"qk_rope_head_dim", 32}, {"v_head_dim", 64}});
  } else {
    throw Error("--preset", "'" + name + "' is not a preset (expected tiny, small or base)");
  }
  return parse_model_config(j, "preset " + name);
}

std::string resolve_checkpoint(const std::string& path) {
  const fs::path latest = fs::path(path) / "latest";
  if (fs::exists(latest)) {
    std::string name = read_text_file(latest.string());
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    const fs::path dir = fs::path(path) / name;
    if (!fs::is_directory(dir)) throw Error(latest.string(), "names '" + name + "', which is not a directory");
    return dir.string();
  }
  if (fs::exists(fs::path(path) / "config.json")) return path;
  throw Error(path, "neither a run directory (with a 'latest' file) nor a checkpoint directory");
}

namespace {

// DeepSeek-V3 shares the embedding and the output head between the main model and MTP.
void share_mtp_embeddings(Model& m) {
  for (auto& l : m.weights.mtp) {
    l.embed_tokens = m.weights.embed_tokens;
    l.shared_head_head = m.weights.lm_head;
  }
}

void copy_tokenizer(const std::string& from_dir, const std::string& to_dir) {
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    const fs::path src = fs::path(from_dir) / f;
    if (fs::exists(src)) fs::copy_file(src, fs::path(to_dir) / f, fs::copy_options::overwrite_existing);
  }
}

json rng_to_json(const Rng& rng) {
  uint64_t s[4];
  rng.get_state(s);
  json a = json::array();
  for (uint64_t v : s) a.push_back(std::to_string(v));
  return a;
}

void rng_from_json(Rng& rng, const json& a, const std::string& where) {
  if (!a.is_array() || a.size() != 4) throw Error(where, "field 'rng' must hold 4 state words");
  uint64_t s[4];
  for (int i = 0; i < 4; ++i) s[i] = std::stoull(a[size_t(i)].get<std::string>());
  rng.set_state(s);
}

}  // namespace

// A checkpoint directory is complete before it gets its final name, and `latest` moves only
// after that, so a kill at any moment leaves the previous checkpoint intact.
std::string save_checkpoint(const std::string& out_dir, int64_t step, const Model& model, const AdamW& adamw,
                            const json& state, const std::string& data_dir) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%06lld", (long long)step);
  const fs::path final_dir = fs::path(out_dir) / name;
  const fs::path tmp = fs::path(out_dir) / (std::string(".tmp-") + name);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  save_model(model, tmp.string(), SaveDType::F32);
  copy_tokenizer(data_dir, tmp.string());
  adamw.save((tmp / "optimizer.safetensors").string());
  const std::string text = state.dump(2) + "\n";
  write_file_atomic((tmp / "trainer_state.json").string(), text.data(), text.size());
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  const std::string latest = std::string(name) + "\n";
  write_file_atomic((fs::path(out_dir) / "latest").string(), latest.data(), latest.size());
  // Keep this checkpoint and the one before it.
  std::vector<fs::path> old;
  for (const auto& e : fs::directory_iterator(out_dir)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0 && n < std::string(name)) old.push_back(e.path());
  }
  std::sort(old.begin(), old.end());
  for (size_t i = 0; i + 1 < old.size(); ++i) fs::remove_all(old[i]);
  return final_dir.string();
}

void truncate_metrics(const std::string& path, int64_t last_step) {
  std::string kept;
  if (last_step > 0 && fs::exists(path)) {
    std::istringstream in(read_text_file(path));
    std::string line;
    while (std::getline(in, line)) {
      try {
        if (json::parse(line).at("step").get<int64_t>() <= last_step) kept += line + "\n";
      } catch (const std::exception&) {
        break;  // a truncated last line of a killed run
      }
    }
  }
  write_file_atomic(path, kept.data(), kept.size());
}

namespace {

double evaluate(TrainGraph& graph, const TokenLoader& val, int64_t windows, int64_t B, int64_t T) {
  const int64_t n = std::min(windows, val.num_windows(T));
  if (n <= 0) return NAN;
  std::vector<int32_t> tokens(size_t(B * (T + 1)));
  double total = 0.0;
  int64_t done = 0;
  while (done < n) {
    const int64_t b = std::min(B, n - done);
    for (int64_t i = 0; i < b; ++i) val.window(done + i, T, tokens.data() + i * (T + 1));
    TrainBatch batch{b, T, tokens.data(), nullptr};
    total += graph.forward(batch, {}).main_loss * double(b);
    done += b;
  }
  return total / double(n);
}

}  // namespace

PretrainResult pretrain(const PretrainOptions& o, Progress* progress) {
  if (o.steps <= 0) throw Error("--steps", "must be positive");
  if (o.batch <= 0 || o.seq_len <= 1 || o.grad_accum <= 0) throw Error("--batch/--seq-len/--grad-accum", "must be positive (seq-len > 1)");
  TokenLoader train(o.data_dir, "train");
  std::unique_ptr<TokenLoader> val;
  try {
    val = std::make_unique<TokenLoader>(o.data_dir, "val");
  } catch (const Error&) {
    val.reset();  // no validation split: training still runs, val_loss is not reported
  }
  fs::create_directories(o.out_dir);
  for (const auto& e : fs::directory_iterator(o.out_dir))  // leftovers of a killed save
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) fs::remove_all(e.path());

  std::unique_ptr<Model> model;
  Rng rng(o.seed);
  int64_t start_step = 0;
  json resumed_state;
  std::string resume_dir;
  LoadOptions lo;
  lo.keep_bf16 = false;
  if (!o.resume.empty()) {
    resume_dir = resolve_checkpoint(o.resume);
    model = load_model(resume_dir, lo);
    resumed_state = json::parse(read_text_file((fs::path(resume_dir) / "trainer_state.json").string()));
    start_step = resumed_state.at("step").get<int64_t>();
    rng_from_json(rng, resumed_state.at("rng"), resume_dir + "/trainer_state.json");
  } else {
    ModelConfig cfg = !o.config.empty() ? load_model_config(o.config)
                                        : preset_config(o.preset.empty() ? "tiny" : o.preset, train.vocab_size(), 0,
                                                        train.eos_id());
    if (cfg.vocab_size < train.vocab_size())
      throw Error("vocab_size", "model has " + std::to_string(cfg.vocab_size) + " ids but the data's tokenizer has " +
                                    std::to_string(train.vocab_size()));
    InitOptions init;
    init.seed = o.seed;
    init.std = o.init_std;
    model = init_model(cfg, init);
  }
  share_mtp_embeddings(*model);
  const ModelConfig& c = model->config;
  if (o.seq_len + 1 > c.max_position_embeddings)
    throw Error("--seq-len", "exceeds max_position_embeddings " + std::to_string(c.max_position_embeddings));

  TrainGraph graph(*model);
  graph.set_precision(o.precision);
  Gradients grads(*model);
  AdamW adamw(*model, grads, o.adamw);
  if (!resume_dir.empty()) adamw.load((fs::path(resume_dir) / "optimizer.safetensors").string());
  LrSchedule sched = o.schedule;
  sched.lr = o.lr;
  sched.min_lr = o.lr * o.min_lr_ratio;
  sched.total = o.steps;
  sched.warmup = o.warmup >= 0 ? o.warmup : std::max<int64_t>(1, o.steps / 20);
  sched.kind = o.schedule_kind == "wsd" ? ScheduleKind::WarmupStableDecay
               : o.schedule_kind == "constant" ? ScheduleKind::Constant
                                               : ScheduleKind::Cosine;
  if (o.schedule_kind != "wsd" && o.schedule_kind != "constant" && o.schedule_kind != "cosine")
    throw Error("--schedule", "'" + o.schedule_kind + "' is not a schedule (expected cosine, wsd or constant)");

  // metrics.jsonl: on resume keep only the steps up to the checkpoint.
  const fs::path metrics_path = fs::path(o.out_dir) / "metrics.jsonl";
  truncate_metrics(metrics_path.string(), start_step);
  std::ofstream metrics(metrics_path, std::ios::app);

  json run_config = {{"data_dir", o.data_dir}, {"batch", o.batch}, {"seq_len", o.seq_len}, {"grad_accum", o.grad_accum},
                     {"steps", o.steps}, {"lr", o.lr}, {"min_lr", sched.min_lr}, {"warmup", sched.warmup},
                     {"schedule", o.schedule_kind}, {"weight_decay", o.adamw.weight_decay},
                     {"beta1", o.adamw.beta1}, {"beta2", o.adamw.beta2}, {"grad_clip", o.grad_clip},
                     {"mtp_lambda", o.mtp_lambda}, {"balance_alpha", o.balance_alpha}, {"bias_gamma", o.bias_gamma},
                     {"seed", o.seed}, {"precision", o.precision}, {"model", model_config_to_json(c)}};
  {
    const std::string text = run_config.dump(2) + "\n";
    write_file_atomic((fs::path(o.out_dir) / "run_config.json").string(), text.data(), text.size());
  }

  PretrainResult result;
  result.weight_bytes = size_t(c.parameter_count()) * 4;
  result.optimizer_bytes = adamw.state_bytes();
  for (const auto& s : grads.storage) result.gradient_bytes += s.size() * 4;
  const int64_t B = o.batch, T = o.seq_len;
  std::vector<int32_t> tokens(size_t(B * (T + 1)));
  LossOptions lopt;
  lopt.mtp_lambda = o.mtp_lambda;
  lopt.balance_alpha = o.balance_alpha;
  if (progress) progress->start("pretrain", o.steps);
  if (progress) progress->update(start_step);
  double last_val = resumed_state.contains("val_loss") ? resumed_state["val_loss"].get<double>() : NAN;
  double tok_per_s = 0.0, last_loss = NAN;
  auto tick = std::chrono::steady_clock::now();
  auto run_start = tick;
  int64_t tokens_run = 0;
  for (int64_t step = start_step; step < o.steps; ++step) {
    grads.zero();
    std::vector<std::vector<int64_t>> load(size_t(c.num_hidden_layers), std::vector<int64_t>(size_t(c.n_routed_experts), 0));
    double loss = 0.0, main_loss = 0.0, mtp_loss = 0.0, bal = 0.0;
    for (int64_t a = 0; a < o.grad_accum; ++a) {
      train.sample(B, T, rng, &tokens);
      TrainBatch batch{B, T, tokens.data(), nullptr};
      LossReport rep = graph.forward_backward(batch, lopt, grads, float(1.0 / double(o.grad_accum)));
      loss += rep.loss / double(o.grad_accum);
      main_loss += rep.main_loss / double(o.grad_accum);
      mtp_loss += rep.mtp_loss / double(o.grad_accum);
      bal += rep.balance_loss / double(o.grad_accum);
      for (int64_t l = 0; l < c.num_hidden_layers; ++l)
        for (int64_t e = 0; e < c.n_routed_experts; ++e) load[size_t(l)][size_t(e)] += rep.expert_load[size_t(l)][size_t(e)];
    }
    if (!std::isfinite(loss)) throw Error("training", "loss became " + std::to_string(loss) + " at step " + std::to_string(step) + "; lower --lr");
    const double lr = sched.at(step);
    const double gnorm = adamw.clip_and_step(o.grad_clip, lr);
    // Auxiliary-loss-free balancing (DeepSeek-V3 section 2.1.2): nudge each expert's bias
    // toward balance by gamma according to whether it was over- or under-loaded this step.
    json balance_per_layer = json::array(), expert_load = json::array();
    double balance_sum = 0.0;
    int64_t moe_layers = 0;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const LayerWeights& lw = model->weights.layers[size_t(l)];
      if (!lw.is_moe) continue;
      const auto& counts = load[size_t(l)];
      double total = 0.0, mx = 0.0;
      for (int64_t v : counts) {
        total += double(v);
        mx = std::max(mx, double(v));
      }
      const double mean = total / double(c.n_routed_experts);
      if (!lw.moe.e_score_correction_bias.empty() && o.bias_gamma > 0) {
        float* bias = lw.moe.e_score_correction_bias.f32();
        for (int64_t e = 0; e < c.n_routed_experts; ++e) {
          const double err = mean - double(counts[size_t(e)]);
          bias[e] += float(o.bias_gamma * (err > 0 ? 1.0 : err < 0 ? -1.0 : 0.0));
        }
      }
      const double b = mean > 0 ? mx / mean : 0.0;
      balance_per_layer.push_back(b);
      json fractions = json::array();
      for (int64_t v : counts) fractions.push_back(total > 0 ? double(v) / total : 0.0);
      expert_load.push_back(fractions);
      balance_sum += b;
      ++moe_layers;
    }
    const double balance = moe_layers ? balance_sum / double(moe_layers) : 1.0;
    auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - tick).count();
    tick = now;
    tok_per_s = double(B * T * o.grad_accum) / dt;
    tokens_run += B * T * o.grad_accum;
    last_loss = main_loss;
    json m = {{"step", step + 1}, {"loss", main_loss}, {"total_loss", loss}, {"lr", lr}, {"grad_norm", gnorm},
              {"tokens_per_sec", tok_per_s}, {"balance", balance}, {"balance_per_layer", balance_per_layer},
              {"expert_load", expert_load}};
    if (o.mtp_lambda > 0 && c.num_nextn_predict_layers > 0) m["mtp_loss"] = mtp_loss;
    if (o.balance_alpha > 0) m["balance_loss"] = bal;
    const bool last = step + 1 == o.steps;
    if (val && (last || (o.eval_every > 0 && (step + 1) % o.eval_every == 0))) {
      last_val = evaluate(graph, *val, o.eval_windows, B, T);
      m["val_loss"] = last_val;
    }
    metrics << m.dump() << "\n";
    metrics.flush();
    if (last || (o.save_every > 0 && (step + 1) % o.save_every == 0)) {
      json state = {{"step", step + 1}, {"rng", rng_to_json(rng)}, {"loss", main_loss}, {"format", "whale-trainer-1"}};
      if (std::isfinite(last_val)) state["val_loss"] = last_val;
      state["run_config"] = run_config;
      result.final_checkpoint = save_checkpoint(o.out_dir, step + 1, *model, adamw, state, o.data_dir);
    }
    if (progress) {
      char note[160];
      std::snprintf(note, sizeof note, "loss %.3f val %.3f lr %.1e %.0f tok/s bal %.2f", main_loss, last_val, lr, tok_per_s,
                    balance);
      progress->update(step + 1, note);
    }
  }
  if (progress) progress->finish();
  if (val && o.precision != "fp32") {  // the master weights' own quality, apart from the compute mode's forward
    graph.set_precision("fp32");
    result.final_val_loss_fp32 = evaluate(graph, *val, o.eval_windows, B, T);
    graph.set_precision(o.precision);
  }
  result.steps = o.steps;
  result.final_loss = last_loss;
  result.final_val_loss = last_val;
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  result.tokens_per_second = total_s > 0 ? double(tokens_run) / total_s : tok_per_s;
  if (result.final_checkpoint.empty()) result.final_checkpoint = resolve_checkpoint(o.out_dir);
  return result;
}

}  // namespace whale
