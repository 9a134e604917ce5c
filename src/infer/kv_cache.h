// MLA's latent KV cache: per token and layer, only the normalised compressed KV
// (kv_lora_rank values) and the shared, already-rotated rope key (qk_rope_head_dim values).
// Full per-head keys and values are never stored (DeepSeek-V2 paper, section 2.1.3).
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace whale {

class KVCache {
 public:
  KVCache(const ModelConfig& config, int64_t capacity);

  int64_t capacity() const { return capacity_; }
  int64_t width() const { return width_; }  // kv_lora_rank + qk_rope_head_dim
  int64_t layers() const { return layers_; }  // decoder layers + MTP layers
  // Tokens cached in the main decoder layers / in the MTP layer.
  int64_t length = 0;
  int64_t mtp_length = 0;

  float* row(int64_t layer, int64_t pos) { return data_.data() + (layer * capacity_ + pos) * width_; }
  const float* row(int64_t layer, int64_t pos) const { return data_.data() + (layer * capacity_ + pos) * width_; }
  void clear() { length = mtp_length = 0; }
  // Bytes one token occupies across all main layers (float32).
  static int64_t bytes_per_token(const ModelConfig& config);

 private:
  int64_t capacity_, width_, layers_;
  std::vector<float> data_;
};

}  // namespace whale
