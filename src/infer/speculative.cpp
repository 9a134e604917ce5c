#include "infer/speculative.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <unordered_set>

#include "core/error.h"
#include "core/rng.h"

namespace whale {

void sampling_distribution(float* logits, int64_t vocab, const SamplingParams& params,
                           const std::vector<int32_t>& history, std::vector<std::pair<float, int32_t>>& candidates,
                           float* probs) {
  // Mirrors Sampler::sample step by step, so the kept set and weights are the ones it draws from.
  if (params.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen(history.begin(), history.end());
    for (int32_t t : seen) {
      if (t < 0 || t >= vocab) continue;
      logits[t] = logits[t] > 0 ? logits[t] / params.repetition_penalty : logits[t] * params.repetition_penalty;
    }
  }
  std::fill(probs, probs + vocab, 0.0f);
  if (params.temperature == 0.0f) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    probs[best] = 1.0f;
    return;
  }
  candidates.resize(size_t(vocab));
  float mx = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, logits[i]);
  const float inv_t = 1.0f / params.temperature;
  for (int64_t i = 0; i < vocab; ++i) candidates[size_t(i)] = {std::exp((logits[i] - mx) * inv_t), int32_t(i)};
  auto by_prob = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  int64_t keep = vocab;
  if (params.top_k > 0 && params.top_k < vocab) {
    keep = params.top_k;
    std::partial_sort(candidates.begin(), candidates.begin() + keep, candidates.end(), by_prob);
  } else if (params.min_p > 0.0f || params.top_p < 1.0f) {
    std::sort(candidates.begin(), candidates.end(), by_prob);
  }
  double total = 0.0;
  for (int64_t i = 0; i < keep; ++i) total += candidates[size_t(i)].first;
  if (params.min_p > 0.0f) {
    const float floor = params.min_p * candidates[0].first;
    int64_t n = 1;
    while (n < keep && candidates[size_t(n)].first >= floor) ++n;
    keep = n;
    total = 0.0;
    for (int64_t i = 0; i < keep; ++i) total += candidates[size_t(i)].first;
  }
  if (params.top_p < 1.0f) {
    double cumulative = 0.0;
    int64_t n = 0;
    while (n < keep) {
      cumulative += candidates[size_t(n)].first / total;
      ++n;
      if (cumulative >= params.top_p) break;
    }
    keep = n;
    total = 0.0;
    for (int64_t i = 0; i < keep; ++i) total += candidates[size_t(i)].first;
  }
  for (int64_t i = 0; i < keep; ++i) probs[candidates[size_t(i)].second] = float(candidates[size_t(i)].first / total);
}

namespace {

// Draws an index with probability w[i] / sum(w).
int32_t draw(const float* w, int64_t n, Rng& rng) {
  double total = 0.0;
  int64_t last = 0;
  for (int64_t i = 0; i < n; ++i) {
    total += w[i];
    if (w[i] > 0) last = i;
  }
  double r = rng.uniform() * total;
  for (int64_t i = 0; i < n; ++i) {
    r -= w[i];
    if (r < 0 && w[i] > 0) return int32_t(i);
  }
  return int32_t(last);
}

struct Sequence {
  std::unique_ptr<KVCache> cache;
  Rng rng;
  std::vector<int32_t> history, output;
  std::vector<float> q;      // the MTP draft's distribution over the token after `pending`
  int32_t pending = 0;       // sampled, not yet run through the main model (sits at cache->length)
  bool active = true;
};

}  // namespace

SpeculativeGenerator::SpeculativeGenerator(const Model& model, AttentionMode mode)
    : model_(model), transformer_(model, mode) {}

std::vector<std::vector<int32_t>> SpeculativeGenerator::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                                 const GenerateOptions& options,
                                                                 const TokenCallback& on_token,
                                                                 SpeculativeStats* stats) {
  const ModelConfig& c = model_.config;
  const int64_t B = int64_t(prompts.size()), V = c.vocab_size, H = c.hidden_size;
  if (c.num_nextn_predict_layers < 1)
    throw Error("speculative", "the model has no MTP layer (num_nextn_predict_layers is 0); run without --speculative");
  if (options.max_tokens < 0) throw Error("max_tokens", "must be >= 0");
  validate(options.sampling);
  std::vector<Sequence> seqs(static_cast<size_t>(B));
  std::vector<SeqSpan> spans;
  std::vector<int32_t> tokens;
  int64_t row = 0;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[size_t(b)];
    const int64_t need = checked_sequence_length(c, p, b, options.max_tokens);
    Sequence& s = seqs[size_t(b)];
    s.cache = std::make_unique<KVCache>(c, need + 1);  // +1: a draft may sit one past the last token
    s.rng.reseed(options.sampling.seed + uint64_t(b));
    s.history.reserve(p.size() + size_t(options.max_tokens));  // no growth while decoding
    s.history = p;
    s.output.reserve(size_t(options.max_tokens));
    s.q.resize(size_t(V));
    s.active = options.max_tokens > 0;
    spans.push_back({s.cache.get(), row, int64_t(p.size()), 0});
    tokens.insert(tokens.end(), p.begin(), p.end());
    row += int64_t(p.size());
  }
  const SamplingParams& sp = options.sampling;
  std::vector<std::pair<float, int32_t>> scratch;
  std::vector<float> probs(static_cast<size_t>(V)), residual(static_cast<size_t>(V));
  // Records a generated token; returns whether the sequence continues (Generator's stop rules).
  auto emit = [&](int64_t b, int32_t tok) {
    Sequence& s = seqs[size_t(b)];
    s.output.push_back(tok);
    s.history.push_back(tok);
    bool keep = true;
    if (on_token) keep = on_token(b, tok);
    if (options.stop_at_eos && tok == c.eos_token_id) keep = false;
    for (int32_t st : options.stop_tokens)
      if (tok == st) keep = false;
    if (int64_t(s.output.size()) >= options.max_tokens) keep = false;
    s.active = keep;
    return keep;
  };
  auto clock = [] { return std::chrono::steady_clock::now(); };
  auto seconds = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };

  auto t0 = clock();
  std::vector<float> hidden(size_t(std::max<int64_t>(row, 2 * B) * H));
  transformer_.forward(tokens.data(), spans, hidden.data());
  std::vector<int64_t> last;
  for (const auto& s : spans) last.push_back(s.row_begin + s.rows - 1);
  std::vector<float> logits(size_t(2 * B * V));
  transformer_.logits(hidden.data(), last, logits.data());
  // The first token comes from the prefill; then the MTP module drafts the one after it.
  std::vector<SeqSpan> mtp_spans;
  std::vector<int32_t> mtp_next;
  std::vector<int64_t> mtp_last;
  std::vector<int64_t> mtp_seq;
  for (int64_t b = 0; b < B; ++b) {
    Sequence& s = seqs[size_t(b)];
    if (!s.active) continue;
    sampling_distribution(logits.data() + b * V, V, sp, s.history, scratch, probs.data());
    s.pending = draw(probs.data(), V, s.rng);
    if (!emit(b, s.pending)) continue;
    const SeqSpan& span = spans[size_t(b)];
    mtp_spans.push_back({s.cache.get(), span.row_begin, span.rows, 0});
    mtp_next.insert(mtp_next.end(), prompts[size_t(b)].begin() + 1, prompts[size_t(b)].end());
    mtp_next.push_back(s.pending);
    mtp_last.push_back(span.row_begin + span.rows - 1);
    mtp_seq.push_back(b);
  }
  // MTP spans must cover consecutive rows: compact the hidden rows of the active sequences.
  std::vector<float> mtp_hidden;
  auto run_mtp = [&]() {
    if (mtp_spans.empty()) return;
    int64_t r = 0;
    mtp_hidden.resize(size_t(mtp_next.size()) * size_t(H));
    for (size_t i = 0; i < mtp_spans.size(); ++i) {
      SeqSpan& s = mtp_spans[i];
      std::copy(hidden.data() + s.row_begin * H, hidden.data() + (s.row_begin + s.rows) * H, mtp_hidden.data() + r * H);
      mtp_last[i] = r + s.rows - 1;
      s.row_begin = r;
      r += s.rows;
    }
    transformer_.mtp_logits(mtp_hidden.data(), mtp_next.data(), mtp_spans, mtp_last, logits.data());
    for (size_t i = 0; i < mtp_seq.size(); ++i) {
      Sequence& s = seqs[size_t(mtp_seq[i])];
      // The draft's distribution uses the same sampling rules, with the pending token in the history.
      sampling_distribution(logits.data() + int64_t(i) * V, V, sp, s.history, scratch, s.q.data());
    }
  };
  run_mtp();
  auto t1 = clock();
  if (stats) {
    stats->prompt_tokens += row;
    stats->prefill_seconds += seconds(t0, t1);
  }

  std::vector<int64_t> order, rows;
  std::vector<int32_t> drafts;
  while (true) {
    order.clear();
    tokens.clear();
    spans.clear();
    drafts.clear();
    for (int64_t b = 0; b < B; ++b) {
      Sequence& s = seqs[size_t(b)];
      if (!s.active) continue;
      const int32_t d = draw(s.q.data(), V, s.rng);
      spans.push_back({s.cache.get(), int64_t(tokens.size()), 2, s.cache->length});
      tokens.push_back(s.pending);
      tokens.push_back(d);
      drafts.push_back(d);
      order.push_back(b);
    }
    if (order.empty()) break;
    auto d0 = clock();
    transformer_.forward(tokens.data(), spans, hidden.data());
    rows.resize(tokens.size());
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = int64_t(i);
    transformer_.logits(hidden.data(), rows, logits.data());
    mtp_spans.clear();
    mtp_next.clear();
    mtp_last.clear();
    mtp_seq.clear();
    int64_t produced = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      const int64_t b = order[i];
      Sequence& s = seqs[size_t(b)];
      const int32_t d = drafts[i];
      const int64_t pos = spans[i].pos0;  // where `pending` now sits in the cache
      sampling_distribution(logits.data() + int64_t(2 * i) * V, V, sp, s.history, scratch, probs.data());
      const float p = probs[size_t(d)], q = s.q[size_t(d)];
      const bool accept = p >= q || s.rng.uniform() * double(q) < double(p);
      if (stats) ++stats->drafted;
      if (accept) {
        if (stats) ++stats->accepted;
        ++produced;
        if (!emit(b, d)) continue;
        sampling_distribution(logits.data() + int64_t(2 * i + 1) * V, V, sp, s.history, scratch, probs.data());
        s.pending = draw(probs.data(), V, s.rng);
        ++produced;
        if (!emit(b, s.pending)) continue;
        mtp_spans.push_back({s.cache.get(), int64_t(2 * i), 2, s.cache->mtp_length});
        mtp_next.push_back(d);
        mtp_next.push_back(s.pending);
      } else {
        // Rejected: drop the draft's cache entry and sample from norm(max(0, p - q)).
        s.cache->length = pos + 1;
        for (int64_t v = 0; v < V; ++v) residual[size_t(v)] = std::max(0.0f, probs[size_t(v)] - s.q[size_t(v)]);
        double mass = 0.0;
        for (float r : residual) mass += r;
        s.pending = draw(mass > 0 ? residual.data() : probs.data(), V, s.rng);
        ++produced;
        if (!emit(b, s.pending)) continue;
        mtp_spans.push_back({s.cache.get(), int64_t(2 * i), 1, s.cache->mtp_length});
        mtp_next.push_back(s.pending);
      }
      mtp_last.push_back(0);
      mtp_seq.push_back(b);
    }
    run_mtp();
    if (stats) {
      stats->decode_seconds += seconds(d0, clock());
      stats->decode_tokens += produced;
      ++stats->steps;
    }
  }
  std::vector<std::vector<int32_t>> output(static_cast<size_t>(B));
  int64_t total = 0;
  for (int64_t b = 0; b < B; ++b) {
    output[size_t(b)] = std::move(seqs[size_t(b)].output);
    total += int64_t(output[size_t(b)].size());
  }
  if (stats) stats->generated_tokens = total;
  return output;
}

}  // namespace whale
