#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace whale {

namespace {
// The dimension at which a frequency completes num_rotations turns over max_pos positions.
double correction_dim(double num_rotations, double dim, double base, double max_pos) {
  return dim * std::log(max_pos / (num_rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
}
}  // namespace

Rope::Rope(const ModelConfig& c) {
  const int64_t dim = c.qk_rope_head_dim;
  const double base = c.rope_theta;
  inv_freq.resize(size_t(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) inv_freq[size_t(i)] = 1.0 / std::pow(base, double(2 * i) / double(dim));
  if (!c.rope_scaling.yarn) return;
  const RopeScaling& s = c.rope_scaling;
  const double orig = double(s.original_max_position_embeddings);
  double low = std::floor(correction_dim(s.beta_fast, double(dim), base, orig));
  double high = std::ceil(correction_dim(s.beta_slow, double(dim), base, orig));
  low = std::max(low, 0.0);
  high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < dim / 2; ++i) {
    const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
    const double extrapolate = 1.0 - ramp;  // high frequencies keep their original value
    const double extra = inv_freq[size_t(i)], inter = inv_freq[size_t(i)] / s.factor;
    inv_freq[size_t(i)] = inter * (1.0 - extrapolate) + extra * extrapolate;
  }
  mscale = yarn_get_mscale(s.factor, s.mscale) / yarn_get_mscale(s.factor, s.mscale_all_dim);
}

void Rope::apply(float* x, int64_t pos) const { rotate(x, pos, 1, 0, 1.0f); }
void Rope::apply(float* x, int64_t pos, int64_t count, int64_t stride) const { rotate(x, pos, count, stride, 1.0f); }
void Rope::apply_backward(float* g, int64_t pos) const { rotate(g, pos, 1, 0, -1.0f); }
void Rope::apply_backward(float* g, int64_t pos, int64_t count, int64_t stride) const {
  rotate(g, pos, count, stride, -1.0f);
}

void Rope::rotate(float* x, int64_t pos, int64_t count, int64_t stride, float sign) const {
  thread_local std::vector<float> cs, sn;  // per thread; grows only
  const size_t n = inv_freq.size();
  if (cs.size() < n) {
    cs.resize(n);
    sn.resize(n);
  }
  for (size_t i = 0; i < n; ++i) {
    const double angle = double(pos) * inv_freq[i];
    cs[i] = float(std::cos(angle) * mscale);
    sn[i] = sign * float(std::sin(angle) * mscale);  // the transpose: the angle's negative
  }
  for (int64_t v = 0; v < count; ++v) {
    float* y = x + v * stride;
    for (size_t i = 0; i < n; ++i) {
      const float x0 = y[2 * i], x1 = y[2 * i + 1];
      y[2 * i] = x0 * cs[i] - x1 * sn[i];
      y[2 * i + 1] = x1 * cs[i] + x0 * sn[i];
    }
  }
}

}  // namespace whale
