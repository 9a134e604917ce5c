#include "infer/engine.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "core/error.h"

namespace whale {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
    case FinishReason::None: break;
  }
  return "none";
}

// ---- Sequence (client side) ----

bool Sequence::wait(std::vector<int32_t>& out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait_for(lock, timeout, [&] { return !pending_.empty() || finished_; });
  out.insert(out.end(), pending_.begin(), pending_.end());
  pending_.clear();
  return finished_;
}

FinishReason Sequence::finish_reason() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reason_;
}

std::string Sequence::error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}

int64_t Sequence::cached_tokens() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cached_;
}

int64_t Sequence::generated_tokens() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return generated_;
}

void Sequence::push(int32_t token) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.push_back(token);
  }
  cv_.notify_all();
}

void Sequence::finish(FinishReason reason, const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    finished_ = true;
    reason_ = reason;
    error_ = error;
  }
  cv_.notify_all();
}

// ---- Engine ----

struct Engine::Running {
  std::shared_ptr<Sequence> seq;
  SequenceRequest request;
  std::unique_ptr<KVCache> cache;
  Sampler sampler;
  std::vector<int32_t> cached_ids;  // ids at cache positions 0 .. length - 1
  std::vector<int32_t> generated;
  std::unordered_map<int32_t, int32_t> counts;  // generated token -> occurrences (penalties)
  int32_t last = -1;                            // sampled, not yet fed
  Running(std::shared_ptr<Sequence> s, SequenceRequest r, std::unique_ptr<KVCache> c)
      : seq(std::move(s)), request(std::move(r)), cache(std::move(c)), sampler(request.sampling) {}
  bool prefilling() const { return cache->length < int64_t(request.prompt.size()); }
};

Engine::Engine(const Model& model, const EngineOptions& options, std::vector<int32_t> eos_tokens)
    : model_(model),
      options_(options),
      eos_tokens_(std::move(eos_tokens)),
      transformer_(model, options.attention),
      pool_(model.config, options.kv_budget_tokens, options.prefix_reuse, options.max_prefixes) {
  if (options.max_batch < 1) throw Error("max batch", "must be at least 1");
  if (options.prefill_chunk < 1) throw Error("prefill chunk", "must be at least 1");
  for (int32_t t : eos_tokens_)
    if (t < 0 || t >= model.config.vocab_size) throw Error("eos token", std::to_string(t) + " is outside the vocabulary");
  metrics_.kv = pool_.stats();
  metrics_.kv_bytes_per_token = KVPool::bytes_per_token(model.config);
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  for (auto& r : running_) r->seq->finish(FinishReason::Cancelled, "server shutting down");
  for (auto& q : queue_) q.first->finish(FinishReason::Cancelled, "server shutting down");
}

std::shared_ptr<Sequence> Engine::submit(SequenceRequest request) {
  const int64_t n = int64_t(request.prompt.size());
  const int64_t V = model_.config.vocab_size;
  auto reject = [&](const std::string& where, const std::string& what) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++metrics_.rejected;
    throw Error(where, what);
  };
  if (n == 0) reject("prompt", "is empty; give at least one token");
  for (int32_t t : request.prompt)
    if (t < 0 || t >= V) reject("prompt", "token id " + std::to_string(t) + " is outside the vocabulary [0, " + std::to_string(V) + ")");
  for (int32_t t : request.stop_tokens)
    if (t < 0 || t >= V) reject("stop_tokens", "token id " + std::to_string(t) + " is outside the vocabulary");
  if (request.min_tokens < 0 || request.min_tokens > request.max_tokens)
    reject("min_tokens", "must be between 0 and max_tokens (" + std::to_string(request.max_tokens) + "), got " +
                             std::to_string(request.min_tokens));
  if (request.max_tokens < 1) reject("max_tokens", "must be at least 1, got " + std::to_string(request.max_tokens));
  if (n + request.max_tokens > context_length())
    reject("max_tokens", "prompt (" + std::to_string(n) + " tokens) plus max_tokens (" +
                             std::to_string(request.max_tokens) + ") exceeds the context length " +
                             std::to_string(context_length()));
  if (!pool_.fits(n + request.max_tokens))
    reject("max_tokens", "prompt (" + std::to_string(n) + " tokens) plus max_tokens (" +
                             std::to_string(request.max_tokens) + ") exceeds the whole KV-cache budget of " +
                             std::to_string(options_.kv_budget_tokens) + " tokens");
  try {
    validate(request.sampling);
  } catch (const Error&) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++metrics_.rejected;
    throw;
  }
  auto seq = std::make_shared<Sequence>();
  seq->prompt_tokens_ = n;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++metrics_.submitted;
    metrics_.prompt_tokens += n;
    queue_.emplace_back(seq, std::move(request));
  }
  cv_.notify_all();
  return seq;
}

EngineMetrics Engine::metrics() const {
  std::lock_guard<std::mutex> lock(mutex_);
  EngineMetrics m = metrics_;
  m.queued = int64_t(queue_.size());
  int64_t recent = 0;
  for (const auto& e : recent_) recent += e.second;
  m.recent_tokens_per_second = double(recent) / 5.0;
  return m;
}

void Engine::finish(Running& r, FinishReason reason, const std::string& error) {
  if (reason == FinishReason::Error) {
    pool_.discard(std::move(r.cache));
  } else {
    pool_.release(std::move(r.cache), std::move(r.cached_ids));
  }
  r.seq->finish(reason, error);
  std::lock_guard<std::mutex> lock(mutex_);
  ++metrics_.finished;
  if (reason == FinishReason::Cancelled) ++metrics_.cancelled;
}

void Engine::admit() {
  std::lock_guard<std::mutex> lock(mutex_);
  while (!queue_.empty()) {
    auto& [seq, request] = queue_.front();
    if (seq->cancelled()) {
      seq->finish(FinishReason::Cancelled);
      ++metrics_.finished;
      ++metrics_.cancelled;
      queue_.pop_front();
      continue;
    }
    if (int64_t(running_.size()) >= options_.max_batch) break;
    const int64_t capacity = int64_t(request.prompt.size()) + request.max_tokens;
    auto lease = pool_.acquire(request.prompt, capacity);
    if (!lease) break;  // FIFO: later requests wait behind this one, so none starves
    {
      std::lock_guard<std::mutex> seq_lock(seq->mutex_);
      seq->cached_ = lease->reused_tokens;
    }
    auto r = std::make_unique<Running>(seq, std::move(request), std::move(lease->cache));
    r->cached_ids.assign(r->request.prompt.begin(), r->request.prompt.begin() + r->cache->length);
    running_.push_back(std::move(r));
    queue_.pop_front();
  }
  metrics_.running = int64_t(running_.size());
  metrics_.kv = pool_.stats();
}

void Engine::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (stop_) return;
      if (running_.empty()) {
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (stop_) return;
      }
    }
    admit();
    try {
      step();
    } catch (const std::exception& e) {
      for (auto& r : running_) finish(*r, FinishReason::Error, e.what());
      running_.clear();
    }
  }
}

void Engine::step() {
  auto t0 = std::chrono::steady_clock::now();
  // Cancelled sequences leave the batch before it is built.
  for (auto& r : running_)
    if (r->seq->cancelled()) finish(*r, FinishReason::Cancelled);
  std::erase_if(running_, [](const std::unique_ptr<Running>& r) { return !r->cache; });
  if (running_.empty()) {
    std::lock_guard<std::mutex> lock(mutex_);
    metrics_.running = 0;
    metrics_.kv = pool_.stats();
    return;
  }
  const ModelConfig& c = model_.config;
  const int64_t H = c.hidden_size, V = c.vocab_size;
  std::vector<int32_t> tokens;
  std::vector<SeqSpan> spans;
  std::vector<int64_t> sample_rows;
  std::vector<Running*> sample_seqs;
  int64_t prefill_left = options_.prefill_chunk, row = 0, prefill_rows = 0;
  for (auto& rp : running_) {
    Running& r = *rp;
    if (r.prefilling()) {
      const int64_t at = r.cache->length, n = std::min(int64_t(r.request.prompt.size()) - at, prefill_left);
      if (n <= 0) continue;
      prefill_left -= n;
      prefill_rows += n;
      spans.push_back({r.cache.get(), row, n, at});
      tokens.insert(tokens.end(), r.request.prompt.begin() + at, r.request.prompt.begin() + at + n);
      r.cached_ids.insert(r.cached_ids.end(), r.request.prompt.begin() + at, r.request.prompt.begin() + at + n);
      row += n;
      if (at + n == int64_t(r.request.prompt.size())) {
        sample_rows.push_back(row - 1);
        sample_seqs.push_back(&r);
      }
    } else {
      spans.push_back({r.cache.get(), row, 1, r.cache->length});
      tokens.push_back(r.last);
      r.cached_ids.push_back(r.last);
      sample_rows.push_back(row);
      sample_seqs.push_back(&r);
      ++row;
    }
  }
  hidden_.resize(size_t(row * H));
  transformer_.forward(tokens.data(), spans, hidden_.data());
  logits_.resize(size_t(int64_t(sample_rows.size()) * V));
  if (!sample_rows.empty()) transformer_.logits(hidden_.data(), sample_rows, logits_.data());
  // Sampling is per sequence (its own sampler and seeded generator), so the sequences are
  // sampled in parallel: at batch 16 a full-vocabulary sort each was a fifth of the step.
  sampled_.resize(sample_seqs.size());
  const int64_t n_sample = int64_t(sample_seqs.size());
#pragma omp parallel for schedule(dynamic, 1) if (n_sample > 1)
  for (int64_t i = 0; i < n_sample; ++i) {
    Running& r = *sample_seqs[size_t(i)];
    float* lg = logits_.data() + i * V;
    // OpenAI's penalties: logit -= frequency * count + presence * [count > 0].
    if (r.request.presence_penalty != 0 || r.request.frequency_penalty != 0)
      for (const auto& [tok, count] : r.counts)
        lg[tok] -= r.request.frequency_penalty * float(count) + r.request.presence_penalty;
    if (int64_t(r.generated.size()) < r.request.min_tokens) {
      for (int32_t t : eos_tokens_) lg[t] = -INFINITY;
      for (int32_t t : r.request.stop_tokens) lg[t] = -INFINITY;
    }
    sampled_[size_t(i)] = r.sampler.sample(lg, V, r.generated);
  }
  int64_t produced = 0;
  for (size_t i = 0; i < sample_seqs.size(); ++i) {
    Running& r = *sample_seqs[i];
    const int32_t tok = sampled_[i];
    r.generated.push_back(tok);
    ++r.counts[tok];
    ++produced;
    {
      std::lock_guard<std::mutex> lock(r.seq->mutex_);
      ++r.seq->generated_;
    }
    const bool is_stop = std::find(eos_tokens_.begin(), eos_tokens_.end(), tok) != eos_tokens_.end() ||
                         std::find(r.request.stop_tokens.begin(), r.request.stop_tokens.end(), tok) !=
                             r.request.stop_tokens.end();
    if (is_stop) {
      finish(r, FinishReason::Stop);
      continue;
    }
    r.seq->push(tok);
    r.last = tok;
    if (int64_t(r.generated.size()) >= r.request.max_tokens) finish(r, FinishReason::Length);
  }
  std::erase_if(running_, [](const std::unique_ptr<Running>& r) { return !r->cache; });
  auto t1 = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  ++metrics_.steps;
  metrics_.generated_tokens += produced;
  metrics_.prefill_tokens += prefill_rows;
  metrics_.busy_seconds += std::chrono::duration<double>(t1 - t0).count();
  metrics_.running = int64_t(running_.size());
  metrics_.kv = pool_.stats();
  recent_.emplace_back(t1, produced);
  while (!recent_.empty() && t1 - recent_.front().first > std::chrono::seconds(5)) recent_.pop_front();
}

}  // namespace whale
