#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_set>

#include "core/error.h"

namespace whale {

void validate(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
    throw Error("temperature", "is " + std::to_string(p.temperature) + "; expected a finite value >= 0");
  if (p.top_k < 0) throw Error("top_k", "is " + std::to_string(p.top_k) + "; expected >= 0");
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) throw Error("top_p", "is " + std::to_string(p.top_p) + "; expected (0, 1]");
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) throw Error("min_p", "is " + std::to_string(p.min_p) + "; expected [0, 1]");
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty))
    throw Error("repetition_penalty", "is " + std::to_string(p.repetition_penalty) + "; expected > 0");
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) { validate(params); }

int32_t Sampler::sample(float* logits, int64_t vocab, const std::vector<int32_t>& history) {
  if (params_.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen(history.begin(), history.end());
    for (int32_t t : seen) {
      if (t < 0 || t >= vocab) continue;
      logits[t] = logits[t] > 0 ? logits[t] / params_.repetition_penalty : logits[t] * params_.repetition_penalty;
    }
  }
  if (params_.temperature == 0.0f) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return int32_t(best);
  }
  candidates_.resize(size_t(vocab));
  float mx = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, logits[i]);
  const float inv_t = 1.0f / params_.temperature;
  for (int64_t i = 0; i < vocab; ++i) candidates_[size_t(i)] = {std::exp((logits[i] - mx) * inv_t), int32_t(i)};
  const bool truncates = (params_.top_k > 0 && params_.top_k < vocab) || params_.min_p > 0.0f || params_.top_p < 1.0f;
  if (!truncates) {
    // Nothing is cut: draw from the whole distribution in id order. Sorting 32k+ candidates
    // per token was ~20% of a batch-16 decode step; the distribution is the same.
    double total = 0.0;
    for (int64_t i = 0; i < vocab; ++i) total += candidates_[size_t(i)].first;
    double r = rng_.uniform() * total;
    int64_t last = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (candidates_[size_t(i)].first <= 0.0f) continue;
      last = i;
      r -= candidates_[size_t(i)].first;
      if (r < 0) return int32_t(i);
    }
    return int32_t(last);  // rounding left r >= 0: the last token with nonzero probability
  }
  // Sorted by probability, highest first (ties by id, so the order is deterministic); only the
  // head that top-k, min-p and top-p look at gets sorted, growing geometrically on demand.
  auto by_prob = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  int64_t sorted = 0;
  auto ensure_sorted = [&](int64_t n) {
    if (n <= sorted) return;
    const int64_t target = std::min(vocab, std::max({n, 2 * sorted, int64_t(64)}));
    std::partial_sort(candidates_.begin() + sorted, candidates_.begin() + target, candidates_.end(), by_prob);
    sorted = target;
  };
  int64_t keep = vocab;
  double total = 0.0;
  if (params_.top_k > 0 && params_.top_k < vocab) {
    keep = params_.top_k;
    ensure_sorted(keep);
    for (int64_t i = 0; i < keep; ++i) total += candidates_[size_t(i)].first;
  } else {
    for (int64_t i = 0; i < vocab; ++i) total += candidates_[size_t(i)].first;
  }
  if (params_.min_p > 0.0f) {
    ensure_sorted(1);
    const float floor = params_.min_p * candidates_[0].first;
    int64_t n = 1;
    for (; n < keep; ++n) {
      ensure_sorted(n + 1);
      if (candidates_[size_t(n)].first < floor) break;
    }
    keep = n;
    total = 0.0;
    for (int64_t i = 0; i < keep; ++i) total += candidates_[size_t(i)].first;
  }
  if (params_.top_p < 1.0f) {
    double cumulative = 0.0;
    int64_t n = 0;
    while (n < keep) {
      ensure_sorted(n + 1);
      cumulative += candidates_[size_t(n)].first / total;
      ++n;
      if (cumulative >= params_.top_p) break;
    }
    keep = n;
    total = 0.0;
    for (int64_t i = 0; i < keep; ++i) total += candidates_[size_t(i)].first;
  }
  ensure_sorted(keep);
  double r = rng_.uniform() * total;
  for (int64_t i = 0; i < keep; ++i) {
    r -= candidates_[size_t(i)].first;
    if (r < 0) return candidates_[size_t(i)].second;
  }
  return candidates_[size_t(keep - 1)].second;
}

}  // namespace whale
