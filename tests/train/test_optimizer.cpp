#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <cstring>

#include "io/checkpoint.h"
#include "core/rng.h"
#include "kernels/cpu_features.h"
#include "train/optimizer.h"

using namespace whale;

namespace {
std::unique_ptr<Model> tiny() {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = 1;
  return init_model(c, init);
}
}  // namespace

// Two AdamW steps derived by hand: with constant gradient g, m_t/(1-b1^t) = g and
// v_t/(1-b2^t) = g^2, so each step moves w by -lr * (g / (|g| + eps) + wd * w).
TEST(AdamW, HandDerivedSteps) {
  auto m = tiny();
  Gradients g(*m);
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW opt(*m, g, o);
  Tensor w = m->weights.layers[0].attn.o_proj, gw = g.weights.layers[0].attn.o_proj;
  Tensor n = m->weights.layers[0].input_layernorm, gn = g.weights.layers[0].input_layernorm;
  const float w0 = w.f32()[3], n0 = n.f32()[2];
  gw.f32()[3] = 0.5f;
  gn.f32()[2] = -2.0f;
  const double lr = 0.01;
  opt.step(lr);
  double expect_w = w0 - lr * 0.1 * w0;
  expect_w -= lr * 0.5 / (0.5 + 1e-8);
  EXPECT_NEAR(w.f32()[3], expect_w, 1e-6);
  EXPECT_NEAR(n.f32()[2], n0 + lr * 2.0 / (2.0 + 1e-8), 1e-6);  // norms: no weight decay
  const float w1 = w.f32()[3];
  opt.step(lr);
  EXPECT_NEAR(w.f32()[3], w1 - lr * 0.1 * w1 - lr * 0.5 / (0.5 + 1e-8), 1e-6);
  // An entry with zero gradient only decays.
  EXPECT_EQ(opt.steps(), 2);
}

TEST(AdamW, ClipsByGlobalNorm) {
  auto m = tiny();
  Gradients g(*m);
  AdamW opt(*m, g, {});
  g.weights.layers[0].attn.o_proj.f32()[0] = 3.0f;
  g.weights.norm.f32()[0] = 4.0f;
  EXPECT_NEAR(opt.clip_grad_norm(1.0), 5.0, 1e-6);
  EXPECT_NEAR(g.weights.layers[0].attn.o_proj.f32()[0], 0.6f, 1e-6);
  EXPECT_NEAR(g.weights.norm.f32()[0], 0.8f, 1e-6);
  EXPECT_NEAR(opt.clip_grad_norm(1.0), 1.0, 1e-6);
}

TEST(AdamW, StateRoundTrips) {
  auto m = tiny();
  Gradients g(*m);
  AdamW a(*m, g, {});
  g.weights.embed_tokens.f32()[5] = 1.0f;
  a.step(1e-3);
  const std::string path = ::testing::TempDir() + "/opt.safetensors";
  a.save(path);
  auto m2 = tiny();
  Gradients g2(*m2);
  AdamW b(*m2, g2, {});
  b.load(path);
  EXPECT_EQ(b.steps(), 1);
  EXPECT_EQ(a.params()[0].m, b.params()[0].m);
  EXPECT_EQ(a.params()[0].v, b.params()[0].v);
}

namespace {
// Random weights and gradients on every trainable tensor (the same for a given seed).
void randomise(Model& m, Gradients& g, uint64_t seed) {
  Rng rng(seed);
  const auto fill = [&](Tensor& t, float scale) {
    float* d = t.f32();
    for (int64_t i = 0; i < t.numel(); ++i) d[i] = scale * (float(rng.next() % 2000001) / 1e6f - 1.0f);
  };
  visit_weights(m.config, m.weights, [&](Tensor& t, const TensorSpec&) { fill(t, 0.1f); });
  for (auto& s : g.storage) {
    Tensor t{DType::F32, {int64_t(s.size())}, s.data()};
    fill(t, 0.01f);
  }
}

std::vector<float> snapshot(const AdamW& a) {
  std::vector<float> out;
  for (const ParamSlot& p : a.params()) {
    out.insert(out.end(), p.weight.f32(), p.weight.f32() + p.weight.numel());
    out.insert(out.end(), p.m.begin(), p.m.end());
    out.insert(out.end(), p.v.begin(), p.v.end());
  }
  return out;
}

// The scalar AdamW this optimizer replaced (clip by scaling the gradients, then a plain loop),
// kept here as the reference for the fused, vectorised one.
struct ReferenceAdamW {
  std::vector<ParamSlot> params;
  int64_t steps = 0;
  void clip_and_step(double max_norm, double lr, const AdamWOptions& o) {
    double sum = 0.0;
    for (const ParamSlot& p : params)
      for (int64_t i = 0; i < p.grad.numel(); ++i) sum += double(p.grad.f32()[i]) * p.grad.f32()[i];
    const double norm = std::sqrt(sum);
    std::vector<std::vector<float>> g;
    for (const ParamSlot& p : params) {
      g.emplace_back(p.grad.f32(), p.grad.f32() + p.grad.numel());
      if (max_norm > 0 && norm > max_norm)
        for (float& x : g.back()) x *= float(max_norm / (norm + 1e-12));
    }
    ++steps;
    const double c1 = 1.0 - std::pow(o.beta1, double(steps)), c2 = 1.0 - std::pow(o.beta2, double(steps));
    for (size_t k = 0; k < params.size(); ++k) {
      ParamSlot& p = params[k];
      float* w = p.weight.f32();
      const float decay = p.decay ? float(lr * o.weight_decay) : 0.0f;
      const float step_size = float(lr / c1), inv_c2 = float(1.0 / c2), eps = float(o.eps);
      const float b1 = float(o.beta1), b2 = float(o.beta2);
      for (int64_t i = 0; i < p.weight.numel(); ++i) {
        const float gi = g[k][size_t(i)];
        p.m[size_t(i)] = b1 * p.m[size_t(i)] + (1.0f - b1) * gi;
        p.v[size_t(i)] = b2 * p.v[size_t(i)] + (1.0f - b2) * gi * gi;
        w[i] -= decay * w[i];
        w[i] -= step_size * p.m[size_t(i)] / (std::sqrt(p.v[size_t(i)] * inv_c2) + eps);
      }
    }
  }
};
}  // namespace

// The fused pass against the replaced scalar loop, three clipped steps on every tensor of tiny-v3:
// not bit-exact (the fused kernel uses FMAs, the old loop whatever the compiler contracted), so
// every weight and moment must agree within 4 ulp of the terms it was summed from.
TEST(AdamW, FusedMatchesScalarReference) {
  auto m = tiny(), mr = tiny();
  Gradients g(*m), gr(*mr);
  randomise(*m, g, 7);
  randomise(*mr, gr, 7);
  AdamWOptions o;
  AdamW opt(*m, g, o);
  ReferenceAdamW ref{AdamW(*mr, gr, o).params()};
  for (int s = 0; s < 3; ++s) {
    const double norm = opt.clip_and_step(0.5, 1e-2);
    EXPECT_GT(norm, 0.5);  // the clip is active
    ref.clip_and_step(0.5, 1e-2, o);
  }
  const std::vector<float> a = snapshot(opt);
  std::vector<float> b;
  for (const ParamSlot& p : ref.params) {
    b.insert(b.end(), p.weight.f32(), p.weight.f32() + p.weight.numel());
    b.insert(b.end(), p.m.begin(), p.m.end());
    b.insert(b.end(), p.v.begin(), p.v.end());
  }
  ASSERT_EQ(a.size(), b.size());
  // An ulp of what was added, not of the result: a weight (|w| <= 0.1) moves by up to 3 lr per
  // step, so a result near zero is a cancellation of terms about 0.1 in size; gradients are at
  // most 0.01, so m's terms are about 0.01 and v's about 1e-4.
  std::vector<float> floor;
  for (const ParamSlot& p : opt.params()) {
    floor.insert(floor.end(), size_t(p.weight.numel()), 0.2f);
    floor.insert(floor.end(), p.m.size(), 0.01f);
    floor.insert(floor.end(), p.v.size(), 1e-4f);
  }
  size_t bad = 0, moved = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const float mag = std::max(std::fabs(b[i]), floor[i]);
    const float tol = 4.0f * (std::nextafter(mag, INFINITY) - mag);
    if (!(std::fabs(a[i] - b[i]) <= tol) && bad++ < 8) std::printf("%zu: %.9g vs %.9g\n", i, a[i], b[i]);
    if (a[i] != b[i]) ++moved;
  }
  EXPECT_EQ(bad, 0u) << "of " << a.size();
  EXPECT_GT(a.size(), 100000u);
  std::printf("fused vs scalar reference: %zu of %zu values differ, all by at most 4 ulp of their terms\n", moved,
              a.size());
}

TEST(AdamW, FusedPathsAreBitIdentical) {
  const auto run = [](int mode, int threads) {
    auto m = tiny();
    Gradients g(*m);
    randomise(*m, g, 11);
    AdamW opt(*m, g, {});
    const KernelPath saved = kernel_path();
    if (mode == 2) set_kernel_path(KernelPath::Scalar);
    const int saved_threads = omp_get_max_threads();
    omp_set_num_threads(threads);
    for (int s = 0; s < 2; ++s) {
      if (mode == 1) {
        opt.clip_grad_norm(0.5);
        opt.step(1e-2);
      } else {
        opt.clip_and_step(0.5, 1e-2);
      }
    }
    omp_set_num_threads(saved_threads);
    set_kernel_path(saved);
    return snapshot(opt);
  };
  const std::vector<float> fused = run(0, 2);
  EXPECT_TRUE(fused == run(1, 2)) << "clip_grad_norm + step differs from clip_and_step";
  EXPECT_TRUE(fused == run(0, 1)) << "thread count changes the result";
  EXPECT_TRUE(fused == run(2, 2)) << "portable kernel differs from the " << kernel_path_name(kernel_path()) << " one";
}

TEST(LrSchedule, WarmupCosineAndWsd) {
  LrSchedule s;
  s.lr = 1.0;
  s.min_lr = 0.1;
  s.warmup = 10;
  s.total = 110;
  EXPECT_NEAR(s.at(0), 0.1, 1e-12);
  EXPECT_NEAR(s.at(9), 1.0, 1e-12);
  EXPECT_NEAR(s.at(10), 1.0, 1e-12);
  EXPECT_NEAR(s.at(60), 0.55, 1e-12);  // halfway through the cosine
  EXPECT_NEAR(s.at(110), 0.1, 1e-12);
  s.kind = ScheduleKind::WarmupStableDecay;
  s.decay_fraction = 0.2;  // decay over the last 22 steps
  EXPECT_NEAR(s.at(50), 1.0, 1e-12);
  EXPECT_NEAR(s.at(88), 1.0, 1e-12);
  EXPECT_NEAR(s.at(99), 0.55, 1e-12);
  EXPECT_NEAR(s.at(110), 0.1, 1e-12);
}
