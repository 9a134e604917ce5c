// GRPO: group advantages, k3, the clipped objective and its gradient on hand-derived cases;
// the training graph's log-prob/entropy outputs and policy-gradient backward against the
// inference forward and the cross-entropy path. (Whole-model gradients of the GRPO loss against
// PyTorch autograd: tests/rl/test_grpo_ref.py.)
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "model/train_graph.h"
#include "model/transformer.h"
#include "rl/grpo.h"

using namespace whale;
using namespace whale::rl;

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

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng.next() % uint64_t(vocab));
  return t;
}

}  // namespace

TEST(Grpo, GroupAdvantagesWithAndWithoutStd) {
  // Group 1: rewards 1, 0, 0, 1: mean 0.5, population std 0.5. Group 2: all equal -> 0.
  const std::vector<double> r = {1, 0, 0, 1, 0.3, 0.3, 0.3, 0.3};
  auto a = group_advantages(r, 4, true);
  const double k = 0.5 / (0.5 + 1e-4);
  EXPECT_NEAR(a[0], k, 1e-12);
  EXPECT_NEAR(a[1], -k, 1e-12);
  EXPECT_NEAR(a[3], k, 1e-12);
  for (int i = 4; i < 8; ++i) EXPECT_EQ(a[size_t(i)], 0.0);
  auto d = group_advantages(r, 4, false);  // Dr. GRPO: r - mean only
  EXPECT_NEAR(d[0], 0.5, 1e-12);
  EXPECT_NEAR(d[2], -0.5, 1e-12);
  // rewards 3, 1 (G = 2): mean 2, std 1 -> +-1/(1 + 1e-4)
  auto e = group_advantages({3, 1}, 2, true);
  EXPECT_NEAR(e[0], 1.0 / (1.0 + 1e-4), 1e-12);
  EXPECT_THROW(group_advantages({1, 2, 3}, 2, true), Error);
}

TEST(Grpo, EqualRewardsGiveExactlyZeroAdvantage) {
  // Eight completions that are all wrong but well formatted score 0.1 each (format weight 0.1).
  // Their float mean is 0.09999999999999999, so without the equal-rewards case the advantage was
  // 1.4e-17 / 1e-4 = 1.4e-13: not zero, and GRPO trained every such completion for nothing.
  const std::vector<double> r(8, 0.1);
  double sum = 0;
  for (double v : r) sum += v;
  ASSERT_NE(r[0] - sum / 8, 0.0);  // the rounding the equal-rewards case guards against
  for (bool scale : {true, false})
    for (double a : group_advantages(r, 8, scale)) EXPECT_EQ(a, 0.0);
  const std::vector<double> mixed = {1.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1};
  const auto a = group_advantages(mixed, 8, true);
  EXPECT_GT(a[0], 2.0);
  for (size_t i = 8; i < 16; ++i) EXPECT_EQ(a[i], 0.0);
}

TEST(Grpo, K3Values) {
  EXPECT_EQ(k3_kl(-1.3, -1.3), 0.0);
  // policy p = 0.5, reference q = 0.25: q/p - log(q/p) - 1 = 0.5 + log 2 - 1
  EXPECT_NEAR(k3_kl(std::log(0.5), std::log(0.25)), 0.5 + std::log(2.0) - 1.0, 1e-12);
  // q/p = 2: 2 - log 2 - 1
  EXPECT_NEAR(k3_kl(std::log(0.25), std::log(0.5)), 1.0 - std::log(2.0), 1e-12);
  EXPECT_GT(k3_kl(-5.0, -0.1), 0.0);
}

TEST(Grpo, SequenceTokenWeights) {
  auto s = sequence_token_weights({2, 4, 0}, LossNorm::Sequence, 8);
  EXPECT_DOUBLE_EQ(s[0], 1.0 / 6.0);  // 1 / (3 sequences * 2 tokens)
  EXPECT_DOUBLE_EQ(s[1], 1.0 / 12.0);
  EXPECT_EQ(s[2], 0.0);
  auto t = sequence_token_weights({2, 4, 0}, LossNorm::Token, 8);
  EXPECT_DOUBLE_EQ(t[0], 1.0 / 6.0);  // 1 / (2 + 4 tokens)
  EXPECT_DOUBLE_EQ(t[1], 1.0 / 6.0);
  auto c = sequence_token_weights({2, 4, 0}, LossNorm::Constant, 8);
  EXPECT_DOUBLE_EQ(c[0], 1.0 / 24.0);  // 1 / (3 * 8)
  EXPECT_DOUBLE_EQ(c[1], 1.0 / 24.0);
  EXPECT_THROW(parse_loss_norm("mean"), Error);
}

TEST(Grpo, ClippedObjectiveHandCases) {
  // Five tokens, eps_low = 0.2, eps_high = 0.28 (clip-higher), no KL. r = exp(logp - old).
  const float old[5] = {0, 0, 0, 0, 0};
  const float logp[5] = {float(std::log(1.5)), float(std::log(0.5)), float(std::log(1.5)), float(std::log(0.5)),
                         float(std::log(1.25))};
  const float A[5] = {1, -1, -1, 1, 1};
  const float w[5] = {1, 1, 1, 1, 1};
  float g[5];
  ObjectiveOptions o;
  o.clip_low = 0.2;
  o.clip_high = 0.28;
  o.kl_beta = 0.0;
  ObjectiveStats st;
  const double loss = clipped_objective(5, w, A, old, nullptr, logp, g, o, &st);
  // token 0: A>0, r=1.5 > 1.28: clipped, -1.28, no gradient
  // token 1: A<0, r=0.5 < 0.8: clipped, -min(-0.5, -0.8) = 0.8, no gradient
  // token 2: A<0, r=1.5: -min(-1.5, -1.28) = 1.5, d/dlogp = -A r = 1.5
  // token 3: A>0, r=0.5: -min(0.5, 0.8) = -0.5, d/dlogp = -0.5
  // token 4: A>0, r=1.25 inside [0.8, 1.28]: -1.25, d/dlogp = -1.25
  EXPECT_NEAR(loss, -1.28 + 0.8 + 1.5 - 0.5 - 1.25, 1e-6);
  EXPECT_EQ(g[0], 0.0f);
  EXPECT_EQ(g[1], 0.0f);
  EXPECT_NEAR(g[2], 1.5, 1e-6);
  EXPECT_NEAR(g[3], -0.5, 1e-6);
  EXPECT_NEAR(g[4], -1.25, 1e-6);
  EXPECT_EQ(st.tokens, 5);
  EXPECT_EQ(st.clipped, 2);  // clip fraction 2/5
  // With symmetric eps = 0.2, token 4 (r = 1.25) clips too.
  o.clip_high = 0.2;
  ObjectiveStats st2;
  clipped_objective(5, w, A, old, nullptr, logp, g, o, &st2);
  EXPECT_EQ(st2.clipped, 3);
  EXPECT_EQ(g[4], 0.0f);
}

TEST(Grpo, ObjectiveGradientMatchesFiniteDifferences) {
  // Weighted tokens with KL: central differences of the loss in float64 on random inputs.
  Rng rng(5);
  const int n = 32;
  std::vector<float> w(n), A(n), old(n), ref(n), lp(n), g(n), g2(n);
  for (int t = 0; t < n; ++t) {
    w[size_t(t)] = t % 7 == 0 ? 0.0f : float(0.1 + rng.uniform());
    A[size_t(t)] = float(rng.uniform() * 2 - 1);
    old[size_t(t)] = float(-3 * rng.uniform());
    lp[size_t(t)] = old[size_t(t)] + float(rng.uniform() * 0.6 - 0.3);
    ref[size_t(t)] = float(-3 * rng.uniform());
  }
  ObjectiveOptions o;
  o.kl_beta = 0.1;
  clipped_objective(n, w.data(), A.data(), old.data(), ref.data(), lp.data(), g.data(), o, nullptr);
  for (int t = 0; t < n; ++t) {
    const float h = 1e-3f;
    auto at = [&](float v) {
      std::vector<float> x = lp;
      x[size_t(t)] = v;
      return clipped_objective(n, w.data(), A.data(), old.data(), ref.data(), x.data(), g2.data(), o, nullptr);
    };
    const double fd = (at(lp[size_t(t)] + h) - at(lp[size_t(t)] - h)) / (2 * double(h));
    // float inputs: the step is exact to ~1e-7 relative; 2e-3 absolute covers the rounding
    // of the loss difference.
    EXPECT_NEAR(g[size_t(t)], fd, 2e-3) << "token " << t;
  }
}

TEST(Grpo, GraphLogprobsAndEntropyMatchInference) {
  auto m = tiny(3);
  const ModelConfig& c = m->config;
  auto tok = random_tokens(13, c.vocab_size, 9);
  TrainGraph graph(*m);
  TrainBatch batch{1, 12, tok.data(), nullptr};
  LossOptions lo;
  lo.token_stats = true;
  LossReport rep = graph.forward(batch, lo);
  ASSERT_EQ(rep.target_logprobs.size(), 12u);
  Transformer tf(*m, AttentionMode::Naive);
  KVCache cache(c, 12);
  std::vector<float> hidden(size_t(12 * c.hidden_size)), logits(size_t(12 * c.vocab_size));
  tf.forward(tok.data(), {SeqSpan{&cache, 0, 12, 0}}, hidden.data());
  std::vector<int64_t> rows(12);
  for (int i = 0; i < 12; ++i) rows[size_t(i)] = i;
  tf.logits(hidden.data(), rows, logits.data());
  for (int t = 0; t < 12; ++t) {
    const float* l = logits.data() + t * c.vocab_size;
    double mx = l[0], z = 0, h = 0;
    for (int64_t j = 0; j < c.vocab_size; ++j) mx = std::max(mx, double(l[j]));
    for (int64_t j = 0; j < c.vocab_size; ++j) z += std::exp(l[j] - mx);
    for (int64_t j = 0; j < c.vocab_size; ++j) {
      const double lp = l[j] - mx - std::log(z);
      h -= std::exp(lp) * lp;
    }
    EXPECT_NEAR(rep.target_logprobs[size_t(t)], l[tok[size_t(t + 1)]] - mx - std::log(z), 2e-5);
    EXPECT_NEAR(rep.entropy[size_t(t)], h, 2e-5);
  }
}

TEST(Grpo, TokenLossBackwardEqualsMaskedCrossEntropy) {
  // token_loss = -sum_t m_t logp_t / sum m is the masked cross-entropy, so both paths must give
  // the same gradients (the cross-entropy path is checked against autograd by reference_grads).
  auto m = tiny(4);
  const ModelConfig& c = m->config;
  const int64_t B = 2, T = 9;
  auto tok = random_tokens(B * (T + 1), c.vocab_size, 11);
  std::vector<float> mask(size_t(B * T));
  for (int64_t i = 0; i < B * T; ++i) mask[size_t(i)] = float((i * 7) % 5) * 0.25f;
  double denom = 0;
  for (float v : mask) denom += v;
  TrainGraph graph(*m);
  TrainBatch batch{B, T, tok.data(), mask.data()};
  Gradients ce(*m), pg(*m);
  LossReport a = graph.forward_backward(batch, {}, ce);
  LossOptions lo;
  lo.token_loss = [&](const float* logp, float* dlogp) {
    double loss = 0;
    for (int64_t i = 0; i < B * T; ++i) {
      loss -= mask[size_t(i)] * double(logp[i]) / denom;
      dlogp[i] = float(-mask[size_t(i)] / denom);
    }
    return loss;
  };
  TrainBatch plain{B, T, tok.data(), nullptr};
  LossReport b = graph.forward_backward(plain, lo, pg);
  EXPECT_NEAR(a.main_loss, b.main_loss, 1e-5);
  double worst = 0, gmax = 0;
  for (size_t s = 0; s < ce.storage.size(); ++s)
    for (size_t i = 0; i < ce.storage[s].size(); ++i) {
      worst = std::max(worst, double(std::fabs(ce.storage[s][i] - pg.storage[s][i])));
      gmax = std::max(gmax, double(std::fabs(ce.storage[s][i])));
    }
  ASSERT_GT(gmax, 0.0);
  EXPECT_LT(worst / gmax, 1e-4);
}
