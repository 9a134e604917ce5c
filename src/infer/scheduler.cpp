#include "infer/scheduler.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace whale {

int64_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return int64_t(i);
}

int64_t KVPool::bytes_per_token(const ModelConfig& config) {
  return (config.num_hidden_layers + config.num_nextn_predict_layers) *
         (config.kv_lora_rank + config.qk_rope_head_dim) * int64_t(sizeof(float));
}

KVPool::KVPool(const ModelConfig& config, int64_t budget_tokens, bool prefix_reuse, int64_t max_prefixes)
    : config_(config), budget_tokens_(budget_tokens), prefix_reuse_(prefix_reuse), max_prefixes_(max_prefixes) {
  if (budget_tokens <= 0)
    throw Error("kv budget", "must hold at least one token, got " + std::to_string(budget_tokens));
  stats_.budget_tokens = budget_tokens;
}

void KVPool::evict_oldest() {
  auto it = std::min_element(prefixes_.begin(), prefixes_.end(),
                             [](const Prefix& a, const Prefix& b) { return a.last_use < b.last_use; });
  stats_.cached_tokens -= it->cache->capacity();
  prefixes_.erase(it);
}

std::optional<KVLease> KVPool::acquire(const std::vector<int32_t>& prompt, int64_t capacity) {
  if (capacity < int64_t(prompt.size()) || capacity <= 0)
    throw Error("kv pool", "capacity " + std::to_string(capacity) + " is smaller than the prompt (" +
                               std::to_string(prompt.size()) + " tokens)");
  if (!fits(capacity)) return std::nullopt;
  // Best kept prefix: the longest match, leaving at least one prompt token to run.
  int64_t best = -1, best_len = 0;
  for (size_t i = 0; i < prefixes_.size(); ++i) {
    int64_t len = std::min(common_prefix(prefixes_[i].tokens, prompt), int64_t(prompt.size()) - 1);
    if (len > best_len) best = int64_t(i), best_len = len;
  }
  // Room: a reused cache that is large enough moves over as is; otherwise its rows are copied
  // into a new one, and the old one is freed only after the copy.
  const bool move_over = best >= 0 && prefixes_[size_t(best)].cache->capacity() >= capacity;
  auto room_needed = [&] {
    int64_t held = stats_.active_tokens + stats_.cached_tokens;
    if (move_over) held -= prefixes_[size_t(best)].cache->capacity();
    return held + capacity - budget_tokens_;
  };
  while (room_needed() > 0) {
    // Evict the oldest prefix other than the one we are about to reuse.
    int64_t victim = -1;
    for (size_t i = 0; i < prefixes_.size(); ++i)
      if (int64_t(i) != best && (victim < 0 || prefixes_[i].last_use < prefixes_[size_t(victim)].last_use))
        victim = int64_t(i);
    if (victim < 0) {
      if (best < 0) return std::nullopt;
      best = -1, best_len = 0;  // give up the reuse to make room
      continue;
    }
    stats_.cached_tokens -= prefixes_[size_t(victim)].cache->capacity();
    prefixes_.erase(prefixes_.begin() + victim);
    if (victim < best) --best;
  }
  if (best < 0) best_len = 0;
  KVLease lease;
  if (best >= 0 && prefixes_[size_t(best)].cache->capacity() >= capacity) {
    lease.cache = std::move(prefixes_[size_t(best)].cache);
  } else {
    lease.cache = std::make_unique<KVCache>(config_, capacity);
    if (best >= 0) {
      const KVCache& from = *prefixes_[size_t(best)].cache;
      for (int64_t layer = 0; layer < from.layers(); ++layer)
        std::memcpy(lease.cache->row(layer, 0), from.row(layer, 0), size_t(best_len * from.width()) * sizeof(float));
    }
  }
  if (best >= 0) {
    stats_.cached_tokens -= prefixes_[size_t(best)].cache ? prefixes_[size_t(best)].cache->capacity()
                                                          : lease.cache->capacity();
    prefixes_.erase(prefixes_.begin() + best);
  }
  lease.cache->length = best_len;
  lease.cache->mtp_length = 0;  // the MTP layer's rows are not kept in step with the main ones
  lease.reused_tokens = best_len;
  stats_.active_tokens += lease.cache->capacity();
  ++stats_.lookups;
  if (best_len > 0) ++stats_.hits;
  stats_.prompt_tokens += int64_t(prompt.size());
  stats_.reused_tokens += best_len;
  stats_.cached_prefixes = int64_t(prefixes_.size());
  return lease;
}

void KVPool::release(std::unique_ptr<KVCache> cache, std::vector<int32_t> tokens) {
  if (!cache) return;
  stats_.active_tokens -= cache->capacity();
  if (!prefix_reuse_ || tokens.empty() || int64_t(tokens.size()) != cache->length || max_prefixes_ <= 0) {
    stats_.cached_prefixes = int64_t(prefixes_.size());
    return;
  }
  // A kept prefix that the new one extends is now redundant.
  for (size_t i = 0; i < prefixes_.size();) {
    if (common_prefix(prefixes_[i].tokens, tokens) == int64_t(prefixes_[i].tokens.size())) {
      stats_.cached_tokens -= prefixes_[i].cache->capacity();
      prefixes_.erase(prefixes_.begin() + int64_t(i));
    } else {
      ++i;
    }
  }
  stats_.cached_tokens += cache->capacity();
  prefixes_.push_back({std::move(tokens), std::move(cache), ++clock_});
  while (!prefixes_.empty() &&
         (int64_t(prefixes_.size()) > max_prefixes_ || stats_.active_tokens + stats_.cached_tokens > budget_tokens_))
    evict_oldest();
  stats_.cached_prefixes = int64_t(prefixes_.size());
}

void KVPool::discard(std::unique_ptr<KVCache> cache) {
  if (cache) stats_.active_tokens -= cache->capacity();
}

}  // namespace whale
