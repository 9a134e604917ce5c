#include "train/optimizer.h"

#include <cmath>
#include <cstring>
#include <map>

#include "core/error.h"
#include "io/safetensors.h"

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

double AdamW::clip_grad_norm(double max_norm) {
  double sum = 0.0;
  for (const ParamSlot& p : params_) {
    const float* g = p.grad.f32();
    double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (int64_t i = 0; i < p.grad.numel(); ++i) s += double(g[i]) * g[i];
    sum += s;
  }
  const double norm = std::sqrt(sum);
  if (max_norm > 0 && norm > max_norm) {
    const float k = float(max_norm / (norm + 1e-12));
    for (ParamSlot& p : params_) {
      float* g = p.grad.f32();
      for (int64_t i = 0; i < p.grad.numel(); ++i) g[i] *= k;
    }
  }
  return norm;
}

void AdamW::step(double lr) {
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double c1 = 1.0 - std::pow(b1, double(step_)), c2 = 1.0 - std::pow(b2, double(step_));
  for (ParamSlot& p : params_) {
    float* w = p.weight.f32();
    const float* g = p.grad.f32();
    float* m = p.m.data();
    float* v = p.v.data();
    const float decay = p.decay ? float(lr * options_.weight_decay) : 0.0f;
    const float step_size = float(lr / c1), inv_c2 = float(1.0 / c2), eps = float(options_.eps);
    const float fb1 = float(b1), fb2 = float(b2);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < p.weight.numel(); ++i) {
      m[i] = fb1 * m[i] + (1.0f - fb1) * g[i];
      v[i] = fb2 * v[i] + (1.0f - fb2) * g[i] * g[i];
      w[i] -= decay * w[i];  // decoupled weight decay
      w[i] -= step_size * m[i] / (std::sqrt(v[i] * inv_c2) + eps);
    }
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
