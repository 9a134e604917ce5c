#include "train/sft.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/mmap.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "model/train_graph.h"
#include "train/pretrain.h"

namespace whale {

namespace fs = std::filesystem;
using json = nlohmann::json;
using tokenizer::ChatMessage;

SftExample tokenize_conversation(const std::vector<ChatMessage>& messages, const tokenizer::Tokenizer& tok,
                                 tokenizer::ChatFormat format) {
  tokenizer::ChatOptions co;
  co.add_generation_prompt = false;
  // Each message's text is what it adds to the rendering of the messages before it; an
  // assistant message's part after its opening marker is what the model learns to write.
  std::vector<std::pair<std::string, float>> pieces;
  std::string prev = tokenizer::render_chat({}, format, co);
  pieces.push_back({prev, 0.0f});
  std::vector<ChatMessage> prefix;
  for (const ChatMessage& m : messages) {
    prefix.push_back(m);
    std::string cur = tokenizer::render_chat(prefix, format, co);
    if (cur.compare(0, prev.size(), prev) != 0)
      throw Error("conversation", "a " + m.role + " message changes the text rendered before it (system "
                                  "messages must come first)");
    std::string delta = cur.substr(prev.size());
    float w = 0.0f;
    if (m.role == "assistant") {
      w = 1.0f;
      for (const char* marker : {"<｜Assistant｜>", "<｜tool▁outputs▁end｜>"}) {
        const std::string mk = marker;
        if (delta.compare(0, mk.size(), mk) == 0) {
          pieces.push_back({mk, 0.0f});
          delta = delta.substr(mk.size());
          break;
        }
      }
    }
    pieces.push_back({delta, w});
    prev = std::move(cur);
  }
  // Encode runs of equal weight; the runs meet at special tokens, so no BPE merge crosses them.
  SftExample ex;
  for (size_t i = 0; i < pieces.size();) {
    std::string text;
    const float w = pieces[i].second;
    for (; i < pieces.size() && pieces[i].second == w; ++i) text += pieces[i].first;
    for (int id : tok.encode(text, false)) {
      ex.tokens.push_back(int32_t(id));
      ex.weights.push_back(w);
    }
  }
  if (tok.bos_id() >= 0 && (ex.tokens.empty() || ex.tokens.front() != tok.bos_id())) {
    ex.tokens.insert(ex.tokens.begin(), int32_t(tok.bos_id()));
    ex.weights.insert(ex.weights.begin(), 0.0f);
  }
  return ex;
}

std::vector<SftExample> load_chat_jsonl(const std::string& path, const tokenizer::Tokenizer& tok,
                                        tokenizer::ChatFormat format) {
  std::istringstream in(read_text_file(path));
  std::vector<SftExample> out;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    json j;
    try {
      j = json::parse(line);
    } catch (const std::exception& e) {
      throw Error(where, std::string("not valid JSON (") + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("messages")) throw Error(where, "expected {\"messages\": [...]}");
    SftExample ex;
    try {
      ex = tokenize_conversation(tokenizer::chat_messages_from_json(j["messages"], "messages"), tok, format);
    } catch (const Error& e) {
      throw Error(where, e.what());
    }
    bool any = false;
    for (float w : ex.weights) any = any || w > 0;
    if (!any) throw Error(where, "has no assistant text to learn from");
    out.push_back(std::move(ex));
  }
  if (out.empty()) throw Error(path, "holds no conversations");
  return out;
}

std::vector<std::vector<size_t>> pack_rows(const std::vector<SftExample>& examples, const std::vector<size_t>& order,
                                           int64_t row_tokens) {
  std::vector<std::vector<size_t>> rows;
  int64_t used = 0;
  for (size_t idx : order) {
    const int64_t n = std::min<int64_t>(int64_t(examples[idx].tokens.size()), row_tokens);
    if (rows.empty() || used + n > row_tokens) {
      rows.emplace_back();
      used = 0;
    }
    rows.back().push_back(idx);
    used += n;
  }
  return rows;
}

PackedBatch make_packed_batch(const std::vector<SftExample>& examples, const std::vector<std::vector<size_t>>& rows,
                              int64_t T, int32_t pad_id) {
  PackedBatch pb;
  pb.B = int64_t(rows.size());
  pb.T = T;
  pb.tokens.assign(size_t(pb.B * (T + 1)), pad_id);
  pb.segment_ids.assign(size_t(pb.B * T), -1);  // padding: a segment of its own, never a target
  pb.loss_mask.assign(size_t(pb.B * T), 0.0f);
  for (int64_t b = 0; b < pb.B; ++b) {
    int64_t o = 0;
    for (size_t k = 0; k < rows[size_t(b)].size(); ++k) {
      const SftExample& ex = examples[rows[size_t(b)][k]];
      const int64_t n = std::min<int64_t>(int64_t(ex.tokens.size()), T + 1 - o);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t t = o + i;
        pb.tokens[size_t(b * (T + 1) + t)] = ex.tokens[size_t(i)];
        if (t >= T) continue;
        pb.segment_ids[size_t(b * T + t)] = int32_t(k);
        // The target of position t is token t + 1, inside this conversation only.
        if (i + 1 < n) pb.loss_mask[size_t(b * T + t)] = ex.weights[size_t(i + 1)];
      }
      o += n;
    }
  }
  return pb;
}

namespace {

// Rows of the packed data, epoch after epoch, each epoch in its own seeded order.
class RowStream {
 public:
  RowStream(const std::vector<SftExample>& examples, int64_t row_tokens, uint64_t seed)
      : examples_(examples), row_tokens_(row_tokens), seed_(seed) {
    load(0);
  }
  int64_t rows_per_epoch() const { return first_epoch_rows_; }
  int64_t epoch() const { return epoch_; }
  std::vector<size_t> next() {
    if (pos_ >= rows_.size()) load(epoch_ + 1);
    return rows_[pos_++];
  }

 private:
  void load(int64_t epoch) {
    std::vector<size_t> order(examples_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    Rng rng(seed_ * 0x9e3779b97f4a7c15ull + uint64_t(epoch) + 1);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng.next() % i)]);
    rows_ = pack_rows(examples_, order, row_tokens_);
    if (epoch == 0) first_epoch_rows_ = int64_t(rows_.size());
    epoch_ = epoch;
    pos_ = 0;
  }
  const std::vector<SftExample>& examples_;
  int64_t row_tokens_;
  uint64_t seed_;
  std::vector<std::vector<size_t>> rows_;
  size_t pos_ = 0;
  int64_t epoch_ = 0, first_epoch_rows_ = 0;
};

}  // namespace

SftResult sft(const SftOptions& o, Progress* progress) {
  if (o.batch <= 0 || o.seq_len <= 1) throw Error("--batch/--seq-len", "must be positive (seq-len > 1)");
  if (o.steps < 0 || (o.steps == 0 && !(o.epochs > 0))) throw Error("--steps/--epochs", "give a positive count");
  const std::string model_dir = resolve_checkpoint(o.model_dir);
  const std::string tok_path = (fs::path(model_dir) / "tokenizer.json").string();
  if (!fs::exists(tok_path)) throw Error(tok_path, "SFT renders chats with the model's tokenizer; none found");
  const auto tok = tokenizer::Tokenizer::from_file(tok_path);
  const tokenizer::ChatFormat format = tokenizer::parse_chat_format(o.chat_format);
  const std::vector<SftExample> examples = load_chat_jsonl(o.data_path, tok, format);

  LoadOptions lo;
  lo.keep_bf16 = false;
  auto model = load_model(model_dir, lo);
  for (auto& l : model->weights.mtp) {  // shared with the main model, as pretraining trains them
    l.embed_tokens = model->weights.embed_tokens;
    l.shared_head_head = model->weights.lm_head;
  }
  const ModelConfig& c = model->config;
  if (tok.vocab_size() > c.vocab_size)
    throw Error(tok_path, "has " + std::to_string(tok.vocab_size()) + " ids but the model's vocab_size is " +
                              std::to_string(c.vocab_size));
  const int64_t B = o.batch, T = o.seq_len;
  if (T + 1 > c.max_position_embeddings)
    throw Error("--seq-len", "exceeds max_position_embeddings " + std::to_string(c.max_position_embeddings));
  SftResult result;
  result.conversations = int64_t(examples.size());
  for (const auto& ex : examples) result.truncated += int64_t(ex.tokens.size()) > T + 1;

  RowStream stream(examples, T + 1, o.seed);
  result.rows_per_epoch = stream.rows_per_epoch();
  const int64_t steps =
      o.steps > 0 ? o.steps
                  : std::max<int64_t>(1, int64_t(std::ceil(o.epochs * double(result.rows_per_epoch) / double(B))));
  TrainGraph graph(*model);
  Gradients grads(*model);
  AdamW adamw(*model, grads, o.adamw);
  LrSchedule sched;
  sched.lr = o.lr;
  sched.min_lr = o.lr * o.min_lr_ratio;
  sched.total = steps;
  sched.warmup = o.warmup >= 0 ? o.warmup : std::max<int64_t>(1, steps / 20);
  LossOptions lopt;
  lopt.mtp_lambda = o.mtp_lambda;

  fs::create_directories(o.out_dir);
  const json run_config = {{"model", model_dir}, {"data", o.data_path}, {"chat_format", o.chat_format},
                           {"steps", steps}, {"epochs", o.epochs}, {"batch", B}, {"seq_len", T}, {"lr", o.lr},
                           {"min_lr", sched.min_lr}, {"warmup", sched.warmup}, {"weight_decay", o.adamw.weight_decay},
                           {"grad_clip", o.grad_clip}, {"mtp_lambda", o.mtp_lambda}, {"seed", o.seed},
                           {"conversations", result.conversations}, {"truncated", result.truncated},
                           {"rows_per_epoch", result.rows_per_epoch}};
  const std::string rc_text = run_config.dump(2) + "\n";
  write_file_atomic((fs::path(o.out_dir) / "run_config.json").string(), rc_text.data(), rc_text.size());
  const fs::path metrics_path = fs::path(o.out_dir) / "metrics.jsonl";
  write_file_atomic(metrics_path.string(), "", 0);
  std::ofstream metrics(metrics_path, std::ios::app);

  const int32_t pad = int32_t(tok.eos_id() >= 0 ? tok.eos_id() : c.eos_token_id);
  if (progress) progress->start("sft", steps);
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens_run = 0;
  for (int64_t step = 0; step < steps; ++step) {
    std::vector<std::vector<size_t>> rows;
    for (int64_t b = 0; b < B; ++b) rows.push_back(stream.next());
    const PackedBatch pb = make_packed_batch(examples, rows, T, pad);
    double targets = 0;
    for (float w : pb.loss_mask) targets += w;
    // Rows whose assistant parts were all cut off by truncation leave nothing to learn.
    LossReport rep;
    grads.zero();
    if (targets > 0) {
      TrainBatch batch{pb.B, pb.T, pb.tokens.data(), pb.loss_mask.data(), pb.segment_ids.data()};
      rep = graph.forward_backward(batch, lopt, grads);
    }
    if (!std::isfinite(rep.loss)) throw Error("sft", "loss became " + std::to_string(rep.loss) + " at step " +
                                                         std::to_string(step) + "; lower --lr");
    const double lr = sched.at(step);
    const double gnorm = adamw.clip_and_step(o.grad_clip, lr);
    tokens_run += B * T;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (step == 0) result.first_loss = rep.main_loss;
    result.final_loss = rep.main_loss;
    json m = {{"step", step + 1}, {"loss", rep.main_loss}, {"lr", lr}, {"grad_norm", gnorm},
              {"targets", int64_t(targets)}, {"epoch", stream.epoch()},
              {"tokens_per_sec", secs > 0 ? double(tokens_run) / secs : 0.0}};
    if (o.mtp_lambda > 0) m["mtp_loss"] = rep.mtp_loss;
    metrics << m.dump() << "\n";
    metrics.flush();
    const bool last = step + 1 == steps;
    if (last || (o.save_every > 0 && (step + 1) % o.save_every == 0)) {
      const json state = {{"step", step + 1}, {"loss", rep.main_loss}, {"format", "whale-trainer-1"},
                          {"stage", "sft"}, {"run_config", run_config}};
      result.final_checkpoint = save_checkpoint(o.out_dir, step + 1, *model, adamw, state, model_dir);
    }
    if (progress) {
      char note[96];
      std::snprintf(note, sizeof note, "loss %.3f lr %.1e epoch %lld", rep.main_loss, lr, (long long)stream.epoch());
      progress->update(step + 1, note);
    }
  }
  if (progress) progress->finish();
  result.steps = steps;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.tokens_per_second = secs > 0 ? double(tokens_run) / secs : 0;
  return result;
}

}  // namespace whale
