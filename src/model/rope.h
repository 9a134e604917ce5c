// Decoupled RoPE with YaRN (DeepSeek-V2 paper, section 2.1.3; YaRN, Peng et al. 2023).
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace whale {

struct Rope {
  std::vector<double> inv_freq;  // qk_rope_head_dim / 2 frequencies, YaRN-blended
  double mscale = 1.0;           // cos/sin amplitude: mscale(factor, mscale) / mscale(factor, mscale_all_dim)

  explicit Rope(const ModelConfig& config);
  // Rotates one vector of qk_rope_head_dim values in place at position pos.
  // DeepSeek's checkpoints pair interleaved elements (2i, 2i+1) with frequency i: Hugging Face's
  // modeling_deepseek de-interleaves before rotate_half, which is the same rotation.
  void apply(float* x, int64_t pos) const;
  // The same rotation of count vectors stride floats apart (a token's heads), with each angle's
  // cos and sin computed once instead of once per vector: the same bits as count apply calls.
  void apply(float* x, int64_t pos, int64_t count, int64_t stride) const;
  // The transpose rotation: maps the gradient w.r.t. the rotated vector to the unrotated one
  // (one vector, or count vectors stride floats apart).
  void apply_backward(float* dx, int64_t pos) const;
  void apply_backward(float* dx, int64_t pos, int64_t count, int64_t stride) const;

 private:
  // Rotates count vectors by sign * the angles of position pos, each angle's cos/sin once.
  void rotate(float* x, int64_t pos, int64_t count, int64_t stride, float sign) const;
};

}  // namespace whale
