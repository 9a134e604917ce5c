// The hand-written backward pass against central finite differences of the training loss,
// and the training forward against the inference forward. (Agreement with PyTorch autograd on
// an independent implementation: tests/reference/compare_grads.py.)
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"
#include "io/checkpoint.h"
#include "model/train_graph.h"
#include "model/transformer.h"

using namespace whale;

namespace {

std::unique_ptr<Model> tiny(uint64_t seed) {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = seed;
  init.std = 0.05;
  init.norm_jitter = 0.1;
  init.router_bias_std = 0.05;
  return init_model(c, init);
}

std::vector<int32_t> tokens(int64_t n, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng.next() % uint64_t(vocab));
  return t;
}

}  // namespace

TEST(TrainGraph, LossEqualsInferenceCrossEntropy) {
  auto m = tiny(3);
  const ModelConfig& c = m->config;
  auto tok = tokens(17, c.vocab_size, 9);
  TrainGraph graph(*m);
  TrainBatch batch{1, 16, tok.data(), nullptr};
  LossReport rep = graph.forward(batch, {});
  Transformer tf(*m, AttentionMode::Naive);
  KVCache cache(c, 16);
  std::vector<float> hidden(size_t(16 * c.hidden_size)), logits(size_t(16 * c.vocab_size));
  tf.forward(tok.data(), {SeqSpan{&cache, 0, 16, 0}}, hidden.data());
  std::vector<int64_t> rows(16);
  for (int i = 0; i < 16; ++i) rows[size_t(i)] = i;
  tf.logits(hidden.data(), rows, logits.data());
  double ce = 0;
  for (int t = 0; t < 16; ++t) {
    const float* l = logits.data() + t * c.vocab_size;
    double mx = l[0], z = 0;
    for (int64_t j = 0; j < c.vocab_size; ++j) mx = std::max(mx, double(l[j]));
    for (int64_t j = 0; j < c.vocab_size; ++j) z += std::exp(l[j] - mx);
    ce += std::log(z) + mx - l[tok[size_t(t + 1)]];
  }
  EXPECT_NEAR(rep.main_loss, ce / 16, 1e-5);
}

// Central differences in float32 on single weights. h is small so that no routing decision flips
// between the two probes (top-k selection makes the loss piecewise smooth); float32 rounding of
// the loss (~1e-6) then limits agreement to about 1e-3 absolute.
TEST(TrainGraph, GradientsMatchFiniteDifferences) {
  auto m = tiny(4);
  const ModelConfig& c = m->config;
  auto tok = tokens(2 * 13, c.vocab_size, 10);
  TrainGraph graph(*m);
  TrainBatch batch{2, 12, tok.data(), nullptr};
  LossOptions opt;
  opt.mtp_lambda = 0.3;
  opt.balance_alpha = 0.01;
  Gradients g(*m);
  graph.forward_backward(batch, opt, g);
  struct Probe {
    Tensor param, grad;
    const char* name;
  };
  const LayerWeights& l1 = m->weights.layers[1];
  const LayerWeights& gl1 = g.weights.layers[1];
  const LayerWeights& mt = m->weights.mtp[0];
  const LayerWeights& gmt = g.weights.mtp[0];
  std::vector<Probe> probes{
      {m->weights.embed_tokens, g.weights.embed_tokens, "embed"},
      {l1.attn.q_a_proj, gl1.attn.q_a_proj, "q_a_proj"},
      {l1.attn.q_b_proj, gl1.attn.q_b_proj, "q_b_proj"},
      {l1.attn.kv_a_proj_with_mqa, gl1.attn.kv_a_proj_with_mqa, "kv_a_proj_with_mqa"},
      {l1.attn.kv_b_proj, gl1.attn.kv_b_proj, "kv_b_proj"},
      {l1.attn.o_proj, gl1.attn.o_proj, "o_proj"},
      {l1.input_layernorm, gl1.input_layernorm, "input_layernorm"},
      {l1.moe.gate, gl1.moe.gate, "router"},
      {l1.moe.shared.up_proj, gl1.moe.shared.up_proj, "shared up_proj"},
      {m->weights.layers[0].mlp.down_proj, g.weights.layers[0].mlp.down_proj, "dense down_proj"},
      {mt.eh_proj, gmt.eh_proj, "mtp eh_proj"},
      {mt.hnorm, gmt.hnorm, "mtp hnorm"},
      {m->weights.lm_head, g.weights.lm_head, "lm_head"},
  };
  Rng rng(77);
  for (const Probe& p : probes) {
    // the largest-gradient entry of the tensor, plus one random entry
    int64_t best = 0;
    for (int64_t i = 0; i < p.grad.numel(); ++i)
      if (std::fabs(p.grad.f32()[i]) > std::fabs(p.grad.f32()[best])) best = i;
    for (int64_t i : {best, int64_t(rng.next() % uint64_t(p.param.numel()))}) {
      float* w = p.param.f32() + i;
      const float saved = *w, h = 1e-3f;
      *w = saved + h;
      const double up = graph.forward(batch, opt).loss;
      *w = saved - h;
      const double down = graph.forward(batch, opt).loss;
      *w = saved;
      const double numeric = (up - down) / (2 * h), analytic = p.grad.f32()[i];
      // Second-order error O(h^2) plus float32 noise; routing must not flip between the probes.
      EXPECT_NEAR(analytic, numeric, 1e-2 * std::fabs(numeric) + 1e-3)
          << p.name << "[" << i << "]";
    }
  }
}

TEST(TrainGraph, GradientAccumulationScales) {
  auto m = tiny(5);
  auto tok = tokens(13, m->config.vocab_size, 11);
  TrainGraph graph(*m);
  TrainBatch batch{1, 12, tok.data(), nullptr};
  Gradients once(*m), twice(*m);
  graph.forward_backward(batch, {}, once);
  graph.forward_backward(batch, {}, twice, 0.5f);
  graph.forward_backward(batch, {}, twice, 0.5f);
  const float* a = once.weights.layers[1].attn.o_proj.f32();
  const float* b = twice.weights.layers[1].attn.o_proj.f32();
  for (int64_t i = 0; i < once.weights.layers[1].attn.o_proj.numel(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6f);
}
