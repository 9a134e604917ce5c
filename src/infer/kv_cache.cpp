#include "infer/kv_cache.h"

#include "core/error.h"

namespace whale {

KVCache::KVCache(const ModelConfig& config, int64_t capacity)
    : capacity_(capacity),
      width_(config.kv_lora_rank + config.qk_rope_head_dim),
      layers_(config.num_hidden_layers + config.num_nextn_predict_layers) {
  if (capacity <= 0) throw Error("kv cache", "capacity must be positive, got " + std::to_string(capacity));
  data_.assign(size_t(layers_ * capacity_ * width_), 0.0f);
}

int64_t KVCache::bytes_per_token(const ModelConfig& config) {
  return config.num_hidden_layers * (config.kv_lora_rank + config.qk_rope_head_dim) * int64_t(sizeof(float));
}

}  // namespace whale
