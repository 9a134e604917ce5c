// The serving engine: continuous batching over one model. A background thread runs steps; each
// step is one Transformer::forward over every running sequence (one decode row each, plus chunks
// of newly admitted prompts), so a request joins the batch at the next step instead of waiting
// for the others to finish. Caches come from a KVPool with a token budget; requests that do not
// fit wait in a FIFO queue. Clients read tokens from their Sequence and may cancel it at any
// time: the engine frees its batch slot and cache at the next step.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "infer/sampler.h"
#include "infer/scheduler.h"
#include "model/transformer.h"

namespace whale {

struct SequenceRequest {
  std::vector<int32_t> prompt;
  int64_t max_tokens = 16;
  SamplingParams sampling;
  float presence_penalty = 0, frequency_penalty = 0;  // OpenAI's, over the generated tokens
  std::vector<int32_t> stop_tokens;                   // end the sequence (not included in output)
  int64_t min_tokens = 0;  // EOS and stop tokens are masked until this many were generated
};

enum class FinishReason { None, Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason reason);  // "stop", "length", ...

// One generated sequence, shared by the engine thread (producer) and a client (consumer).
class Sequence {
 public:
  // Moves newly generated tokens into `out` (appending), waiting up to `timeout` for some.
  // Returns true once the sequence has finished and every token was handed out.
  bool wait(std::vector<int32_t>& out, std::chrono::milliseconds timeout);
  // Asks the engine to stop this sequence and free its slot and cache (idempotent).
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }
  FinishReason finish_reason() const;
  std::string error() const;
  int64_t prompt_tokens() const { return prompt_tokens_; }
  int64_t cached_tokens() const;     // prompt tokens served from a reused prefix
  int64_t generated_tokens() const;  // tokens produced so far

 private:
  friend class Engine;
  void push(int32_t token);
  void finish(FinishReason reason, const std::string& error = {});

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<int32_t> pending_;
  bool finished_ = false;
  FinishReason reason_ = FinishReason::None;
  std::string error_;
  int64_t cached_ = 0, generated_ = 0;
  int64_t prompt_tokens_ = 0;
  std::atomic<bool> cancelled_{false};
};

struct EngineOptions {
  int64_t kv_budget_tokens = 65536;
  int64_t max_batch = 64;        // sequences decoding at once
  int64_t prefill_chunk = 256;   // prompt rows per step, shared by all admitted prompts
  bool prefix_reuse = true;
  int64_t max_prefixes = 64;
  AttentionMode attention = AttentionMode::Auto;
};

struct EngineMetrics {
  int64_t submitted = 0, finished = 0, cancelled = 0, rejected = 0;
  int64_t prompt_tokens = 0, generated_tokens = 0, prefill_tokens = 0;  // prefill: rows run
  int64_t queued = 0, running = 0, steps = 0;
  double busy_seconds = 0;          // time spent in forward passes and sampling
  double recent_tokens_per_second = 0;  // generated tokens per second over the last few seconds
  KVPoolStats kv;
  int64_t kv_bytes_per_token = 0;
};

class Engine {
 public:
  Engine(const Model& model, const EngineOptions& options, std::vector<int32_t> eos_tokens);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a sequence. Throws whale::Error when it can never run: empty prompt, prompt plus
  // max_tokens beyond the context or beyond the whole KV budget, bad sampling values.
  std::shared_ptr<Sequence> submit(SequenceRequest request);
  EngineMetrics metrics() const;
  const ModelConfig& config() const { return model_.config; }
  int64_t context_length() const { return model_.config.max_position_embeddings; }

 private:
  struct Running;
  void loop();
  void admit();
  void step();
  void finish(Running& r, FinishReason reason, const std::string& error = {});

  const Model& model_;
  EngineOptions options_;
  std::vector<int32_t> eos_tokens_;
  Transformer transformer_;
  KVPool pool_;  // engine thread only, except the stats copy below

  mutable std::mutex mutex_;  // guards queue_, stop_, metrics_, kv_stats_
  std::condition_variable cv_;
  std::deque<std::pair<std::shared_ptr<Sequence>, SequenceRequest>> queue_;
  bool stop_ = false;
  EngineMetrics metrics_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, int64_t>> recent_;  // (time, tokens)

  std::vector<std::unique_ptr<Running>> running_;  // engine thread only
  std::vector<float> hidden_, logits_;
  std::vector<int32_t> sampled_;  // this step's token per sampled sequence
  std::thread thread_;
};

}  // namespace whale
