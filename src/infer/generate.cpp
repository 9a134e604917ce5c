#include "infer/generate.h"

#include <chrono>

#include "core/error.h"

namespace whale {

// Positions one sequence needs (prompt plus max_tokens), after checking the prompt is not
// empty and fits the model's context.
int64_t checked_sequence_length(const ModelConfig& c, const std::vector<int32_t>& p, int64_t b, int64_t max_tokens) {
  if (p.empty()) throw Error("prompt", "sequence " + std::to_string(b) + " is empty; give at least one token");
  const int64_t need = int64_t(p.size()) + max_tokens;
  if (need > c.max_position_embeddings)
    throw Error("max_tokens", "prompt (" + std::to_string(p.size()) + ") plus max_tokens (" + std::to_string(max_tokens) +
                                  ") exceeds max_position_embeddings " + std::to_string(c.max_position_embeddings));
  return need;
}

Generator::Generator(const Model& model, AttentionMode mode) : model_(model), transformer_(model, mode) {}

std::vector<std::vector<int32_t>> Generator::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                      const GenerateOptions& options, const TokenCallback& on_token,
                                                      GenerateStats* stats) {
  const ModelConfig& c = model_.config;
  const int64_t B = int64_t(prompts.size()), V = c.vocab_size, H = c.hidden_size;
  if (options.max_tokens < 0) throw Error("max_tokens", "must be >= 0");
  std::vector<std::unique_ptr<KVCache>> caches;
  std::vector<Sampler> samplers;
  std::vector<std::vector<int32_t>> history(static_cast<size_t>(B)), output(static_cast<size_t>(B));
  std::vector<SeqSpan> spans;
  std::vector<int32_t> tokens;
  int64_t row = 0;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[size_t(b)];
    const int64_t need = checked_sequence_length(c, p, b, options.max_tokens);
    caches.push_back(std::make_unique<KVCache>(c, need));
    SamplingParams sp = options.sampling;
    sp.seed = options.sampling.seed + uint64_t(b);  // independent, reproducible streams
    samplers.emplace_back(sp);
    spans.push_back({caches.back().get(), row, int64_t(p.size()), 0});
    tokens.insert(tokens.end(), p.begin(), p.end());
    history[size_t(b)] = p;
    row += int64_t(p.size());
  }
  auto clock = [] { return std::chrono::steady_clock::now(); };
  auto t0 = clock();
  std::vector<float> hidden(size_t(row * H));
  transformer_.forward(tokens.data(), spans, hidden.data());
  std::vector<int64_t> last;
  for (const auto& s : spans) last.push_back(s.row_begin + s.rows - 1);
  std::vector<float> logits(size_t(B * V));
  transformer_.logits(hidden.data(), last, logits.data());
  auto t1 = clock();
  if (stats) {
    stats->prompt_tokens += row;
    stats->prefill_seconds += std::chrono::duration<double>(t1 - t0).count();
  }
  std::vector<bool> active(size_t(B), options.max_tokens > 0);
  std::vector<int64_t> order(static_cast<size_t>(B));  // batch row -> sequence
  for (int64_t b = 0; b < B; ++b) order[size_t(b)] = b;
  int64_t rows_now = B;
  for (int64_t step = 0; step < options.max_tokens; ++step) {
    std::vector<int32_t> next;
    std::vector<SeqSpan> step_spans;
    for (int64_t i = 0; i < rows_now; ++i) {
      const int64_t b = order[size_t(i)];
      int32_t tok = samplers[size_t(b)].sample(logits.data() + i * V, V, history[size_t(b)]);
      output[size_t(b)].push_back(tok);
      history[size_t(b)].push_back(tok);
      bool keep = true;
      if (on_token) keep = on_token(b, tok);
      if (options.stop_at_eos && tok == c.eos_token_id) keep = false;
      for (int32_t st : options.stop_tokens)
        if (tok == st) keep = false;
      if (int64_t(output[size_t(b)].size()) >= options.max_tokens) keep = false;
      active[size_t(b)] = keep;
      if (keep) {
        KVCache* cache = caches[size_t(b)].get();
        step_spans.push_back({cache, int64_t(next.size()), 1, cache->length});
        next.push_back(tok);
      }
    }
    if (next.empty()) break;
    std::vector<int64_t> new_order;
    for (int64_t i = 0; i < rows_now; ++i)
      if (active[size_t(order[size_t(i)])]) new_order.push_back(order[size_t(i)]);
    order = new_order;
    rows_now = int64_t(next.size());
    auto d0 = clock();
    transformer_.forward(next.data(), step_spans, hidden.data());
    std::vector<int64_t> rows(static_cast<size_t>(rows_now));
    for (int64_t i = 0; i < rows_now; ++i) rows[size_t(i)] = i;
    transformer_.logits(hidden.data(), rows, logits.data());
    if (stats) {
      stats->decode_seconds += std::chrono::duration<double>(clock() - d0).count();
      stats->decode_tokens += rows_now;
    }
  }
  if (stats) {
    int64_t total = 0;
    for (const auto& o : output) total += int64_t(o.size());
    stats->generated_tokens = total;
  }
  return output;
}

}  // namespace whale
