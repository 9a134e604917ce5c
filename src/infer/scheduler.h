// The KV-cache pool of the serving engine: a token budget shared by the running sequences'
// caches and by finished conversations kept for prompt-prefix reuse. A follow-up turn whose
// prompt starts with a kept conversation's tokens takes that cache over and prefills only the
// new tokens. Kept prefixes are evicted least recently used first when a running request needs
// room; a request that does not fit waits (the engine keeps it queued) rather than failing.
// Not thread-safe: the engine's thread owns it.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "infer/kv_cache.h"
#include "model/config.h"

namespace whale {

struct KVLease {
  std::unique_ptr<KVCache> cache;  // cache->length tokens of the prompt are already cached
  int64_t reused_tokens = 0;
};

struct KVPoolStats {
  int64_t budget_tokens = 0;
  int64_t active_tokens = 0;   // capacity held by running sequences
  int64_t cached_tokens = 0;   // capacity held by kept prefixes
  int64_t cached_prefixes = 0;
  int64_t lookups = 0, hits = 0;      // acquire calls, and those that reused a prefix
  int64_t prompt_tokens = 0, reused_tokens = 0;  // over all acquire calls
};

class KVPool {
 public:
  // budget_tokens: capacity (tokens) all caches together may hold. prefix_reuse off frees every
  // released cache at once.
  KVPool(const ModelConfig& config, int64_t budget_tokens, bool prefix_reuse = true,
         int64_t max_prefixes = 64);

  // A cache with room for `capacity` tokens (capacity >= prompt.size()), seeded with the longest
  // kept prefix of `prompt` (at most prompt.size() - 1 tokens, so one row is left to prefill and
  // give logits). nullopt when the budget cannot hold it even after evicting every kept prefix.
  std::optional<KVLease> acquire(const std::vector<int32_t>& prompt, int64_t capacity);
  // Returns a cache; `tokens` are the ids at positions 0 .. cache->length - 1. Kept for reuse
  // (when enabled) or freed.
  void release(std::unique_ptr<KVCache> cache, std::vector<int32_t> tokens);
  // Frees a cache without keeping it (a failed or cancelled sequence's cache is still valid, but
  // callers may prefer not to keep it).
  void discard(std::unique_ptr<KVCache> cache);

  // True when a request of this capacity could ever be admitted.
  bool fits(int64_t capacity) const { return capacity <= budget_tokens_; }
  const KVPoolStats& stats() const { return stats_; }
  static int64_t bytes_per_token(const ModelConfig& config);  // all layers, MTP included

 private:
  struct Prefix {
    std::vector<int32_t> tokens;
    std::unique_ptr<KVCache> cache;
    uint64_t last_use = 0;
  };
  void evict_oldest();

  const ModelConfig& config_;
  int64_t budget_tokens_;
  bool prefix_reuse_;
  int64_t max_prefixes_;
  uint64_t clock_ = 0;
  std::vector<Prefix> prefixes_;
  KVPoolStats stats_;
};

// Length of the common prefix of a and b.
int64_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

}  // namespace whale
