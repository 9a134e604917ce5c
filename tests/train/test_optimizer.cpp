#include <gtest/gtest.h>

#include <cmath>

#include "io/checkpoint.h"
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
