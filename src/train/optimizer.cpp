#include "train/optimizer.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/cpu_features.h"

namespace whale {

AdamW::AdamW(Model& model, Gradients& grads, const AdamWOptions& options) : options_(options) {
  std::vector<std::pair<Tensor, TensorSpec>> weights, gradients;
  visit_weights(model.config, model.weights, [&](Tensor& t, const TensorSpec& s) { weights.push_back({t, s}); });
  visit_weights(model.config, grads.weights, [&](Tensor& t, const TensorSpec& s) { gradients.push_back({t, s}); });
  std::map<const void*, bool> seen;
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto& [w, spec] = weights[i];
    if (spec.name.find("e_score_correction_bias") != std::string::npos) continue;
    if (seen.count(w.data)) continue;  // an alias (tied embedding, shared MTP head)
    seen[w.data] = true;
    if (w.dtype != DType::F32) throw Error(spec.name, "AdamW needs F32 master weights");
    ParamSlot p;
    p.name = spec.name;
    p.weight = w;
    p.grad = gradients[i].first;
    p.decay = spec.shape.size() >= 2;
    p.m.assign(size_t(w.numel()), 0.0f);
    p.v.assign(size_t(w.numel()), 0.0f);
    params_.push_back(std::move(p));
  }
}

namespace {

constexpr int64_t kChunk = 1 << 15;  // elements per work item (128 KiB of each stream)

struct UpdateConstants {
  float grad_factor, b1, one_minus_b1, b2, one_minus_b2, decay, step_size, inv_c2, eps;
};

// AdamW on elements [0, n), written with explicit fused multiply-adds so the AVX-512 path and
// this portable one round identically (the compiler's own contraction would differ between them):
//   g' = k g;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2
//   w = w - decay w;  w = w - step_size m / (sqrt(v / c2) + eps)
void update_scalar(float* w, const float* g, float* m, float* v, int64_t n, const UpdateConstants& u) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * u.grad_factor;
    const float mi = std::fma(u.b1, m[i], u.one_minus_b1 * gi);
    const float vi = std::fma(u.b2, v[i], (u.one_minus_b2 * gi) * gi);
    m[i] = mi;
    v[i] = vi;
    const float wi = std::fma(-u.decay, w[i], w[i]);
    w[i] = std::fma(-u.step_size, mi / (std::sqrt(vi * u.inv_c2) + u.eps), wi);
  }
}

#if defined(__x86_64__)
// The same, 16 lanes at a time (GCC does not vectorise sqrtf while -fmath-errno is on).
__attribute__((target("avx512f"))) void update_avx512(float* w, const float* g, float* m, float* v, int64_t n,
                                                       const UpdateConstants& u) {
  const __m512 k = _mm512_set1_ps(u.grad_factor), b1 = _mm512_set1_ps(u.b1), nb1 = _mm512_set1_ps(u.one_minus_b1);
  const __m512 b2 = _mm512_set1_ps(u.b2), nb2 = _mm512_set1_ps(u.one_minus_b2), decay = _mm512_set1_ps(-u.decay);
  const __m512 step = _mm512_set1_ps(-u.step_size), inv_c2 = _mm512_set1_ps(u.inv_c2), eps = _mm512_set1_ps(u.eps);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512 gi = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, g + i), k);
    const __m512 mi = _mm512_fmadd_ps(b1, _mm512_maskz_loadu_ps(mask, m + i), _mm512_mul_ps(nb1, gi));
    const __m512 vi = _mm512_fmadd_ps(b2, _mm512_maskz_loadu_ps(mask, v + i), _mm512_mul_ps(_mm512_mul_ps(nb2, gi), gi));
    _mm512_mask_storeu_ps(m + i, mask, mi);
    _mm512_mask_storeu_ps(v + i, mask, vi);
    const __m512 w0 = _mm512_maskz_loadu_ps(mask, w + i);
    const __m512 wi = _mm512_fmadd_ps(decay, w0, w0);
    const __m512 den = _mm512_add_ps(_mm512_sqrt_ps(_mm512_mul_ps(vi, inv_c2)), eps);
    _mm512_mask_storeu_ps(w + i, mask, _mm512_fmadd_ps(step, _mm512_div_ps(mi, den), wi));
  }
}
#endif

}  // namespace

double AdamW::grad_norm() {
  if (chunks_.empty()) {  // built on first use: params_ does not change after construction
    for (size_t p = 0; p < params_.size(); ++p)
      for (int64_t b = 0; b < params_[p].grad.numel(); b += kChunk)
        chunks_.push_back({p, b, std::min(b + kChunk, params_[p].grad.numel())});
    partial_.resize(chunks_.size());
  }
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < chunks_.size(); ++c) {
    const float* g = params_[chunks_[c].param].grad.f32();
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = chunks_[c].begin; i < chunks_[c].end; ++i) s += double(g[i]) * double(g[i]);
    partial_[c] = s;
  }
  double sum = 0.0;  // in chunk order: the same for any thread count
  for (double s : partial_) sum += s;
  return std::sqrt(sum);
}

double AdamW::clip_factor(double norm, double max_norm) const {
  return max_norm > 0 && norm > max_norm ? double(float(max_norm / (norm + 1e-12))) : 1.0;
}

double AdamW::clip_grad_norm(double max_norm) {
  const double norm = grad_norm();
  const float k = float(clip_factor(norm, max_norm));
  if (k != 1.0f) {
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks_.size(); ++c) {
      float* g = params_[chunks_[c].param].grad.f32();
#pragma omp simd
      for (int64_t i = chunks_[c].begin; i < chunks_[c].end; ++i) g[i] *= k;
    }
  }
  return norm;
}

void AdamW::step(double lr) {
  if (chunks_.empty()) grad_norm();  // sizes the chunks
  update(lr, 1.0f);
}

double AdamW::clip_and_step(double max_norm, double lr) {
  const double norm = grad_norm();
  update(lr, float(clip_factor(norm, max_norm)));
  return norm;
}

void AdamW::update(double lr, float grad_factor) {
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double c1 = 1.0 - std::pow(b1, double(step_)), c2 = 1.0 - std::pow(b2, double(step_));
  UpdateConstants base{grad_factor, float(b1), 1.0f - float(b1), float(b2), 1.0f - float(b2), 0.0f,
                       float(lr / c1),  float(1.0 / c2), float(options_.eps)};
  const float decay = float(lr * options_.weight_decay);
#if defined(__x86_64__)
  const bool avx512 = kernel_path() >= KernelPath::Avx512;
#endif
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < chunks_.size(); ++c) {
    ParamSlot& p = params_[chunks_[c].param];
    UpdateConstants u = base;
    u.decay = p.decay ? decay : 0.0f;
    const int64_t b = chunks_[c].begin, n = chunks_[c].end - b;
    float *w = p.weight.f32() + b, *m = p.m.data() + b, *v = p.v.data() + b;
    const float* g = p.grad.f32() + b;
#if defined(__x86_64__)
    if (avx512) {
      update_avx512(w, g, m, v, n, u);
      continue;
    }
#endif
    update_scalar(w, g, m, v, n, u);
  }
}

size_t AdamW::state_bytes() const {
  size_t n = 0;
  for (const ParamSlot& p : params_) n += (p.m.size() + p.v.size()) * sizeof(float);
  return n;
}

void AdamW::save(const std::string& path) const {
  std::vector<TensorToWrite> out;
  for (const ParamSlot& p : params_) {
    out.push_back({"m." + p.name, DType::F32, p.weight.shape, p.m.data()});
    out.push_back({"v." + p.name, DType::F32, p.weight.shape, p.v.data()});
  }
  write_safetensors(path, out, {{"step", std::to_string(step_)}, {"format", "whale-adamw-1"}});
}

void AdamW::load(const std::string& path) {
  SafetensorsFile f(path);
  auto it = f.metadata().find("step");
  if (it == f.metadata().end()) throw Error(path, "missing metadata 'step' (not a whale optimizer state)");
  step_ = std::stoll(it->second);
  for (ParamSlot& p : params_) {
    for (auto [prefix, buf] : {std::pair<const char*, std::vector<float>*>{"m.", &p.m}, {"v.", &p.v}}) {
      const TensorInfo* info = f.find(prefix + p.name);
      if (!info) throw Error(path, "missing optimizer tensor '" + std::string(prefix) + p.name + "'");
      if (info->dtype != DType::F32 || info->numel() != int64_t(buf->size()))
        throw Error(path, "optimizer tensor '" + std::string(prefix) + p.name + "' has the wrong dtype or size");
      std::memcpy(buf->data(), f.data(*info), buf->size() * sizeof(float));
    }
  }
}

double LrSchedule::at(int64_t step) const {
  if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
  switch (kind) {
    case ScheduleKind::Constant:
      return lr;
    case ScheduleKind::Cosine: {
      const double span = double(std::max<int64_t>(1, total - warmup));
      const double p = std::min(1.0, double(step - warmup) / span);
      return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * p));
    }
    case ScheduleKind::WarmupStableDecay: {
      const int64_t decay_steps = std::max<int64_t>(1, int64_t(std::llround(decay_fraction * double(total))));
      const int64_t decay_start = std::max(warmup, total - decay_steps);
      if (step < decay_start) return lr;
      const double p = std::min(1.0, double(step - decay_start) / double(std::max<int64_t>(1, total - decay_start)));
      return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * p));
    }
  }
  return lr;
}

}  // namespace whale
