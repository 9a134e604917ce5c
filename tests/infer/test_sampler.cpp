#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/error.h"
#include "infer/sampler.h"

using namespace whale;

TEST(Sampler, GreedyIsArgmax) {
  Sampler s({});
  std::vector<float> l{0.1f, 2.0f, -1.0f, 1.9f};
  EXPECT_EQ(s.sample(l.data(), 4, {}), 1);
}

TEST(Sampler, TopKOneAndTinyTopPAreArgmax) {
  SamplingParams p;
  p.temperature = 5.0f;
  p.top_k = 1;
  Sampler a(p);
  SamplingParams q;
  q.temperature = 5.0f;
  q.top_p = 1e-6f;
  Sampler b(q);
  SamplingParams r;
  r.temperature = 5.0f;
  r.min_p = 1.0f;
  Sampler c(r);
  for (int i = 0; i < 50; ++i) {
    std::vector<float> l{0.1f, 2.0f, -1.0f, 1.9f};
    auto l2 = l, l3 = l;
    EXPECT_EQ(a.sample(l.data(), 4, {}), 1);
    EXPECT_EQ(b.sample(l2.data(), 4, {}), 1);
    EXPECT_EQ(c.sample(l3.data(), 4, {}), 1);
  }
}

// With temperature T the empirical frequencies approach softmax(l / T).
TEST(Sampler, FrequenciesFollowTemperatureSoftmax) {
  SamplingParams p;
  p.temperature = 0.7f;
  p.seed = 5;
  Sampler s(p);
  const std::vector<float> logits{1.0f, 0.5f, 0.0f, -0.5f, 2.0f};
  std::vector<double> expect(5);
  double z = 0;
  for (int i = 0; i < 5; ++i) z += expect[size_t(i)] = std::exp(logits[size_t(i)] / 0.7);
  std::vector<int> count(5, 0);
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    auto l = logits;
    count[size_t(s.sample(l.data(), 5, {}))]++;
  }
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(count[size_t(i)] / double(n), expect[size_t(i)] / z, 0.01) << i;
}

// Hand case: p = softmax([3, 2, 1, 0]) = [.644, .237, .087, .032]; top_p 0.85 keeps {0, 1}.
TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.85f;
  p.seed = 1;
  Sampler s(p);
  std::map<int, int> seen;
  for (int i = 0; i < 2000; ++i) {
    std::vector<float> l{3, 2, 1, 0};
    seen[s.sample(l.data(), 4, {})]++;
  }
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_NEAR(seen[0] / 2000.0, 0.644 / (0.644 + 0.237), 0.04);
}

// min_p 0.2: p_max .644 -> floor .129 keeps tokens 0 and 1 only.
TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0.2f;
  Sampler s(p);
  for (int i = 0; i < 500; ++i) {
    std::vector<float> l{3, 2, 1, 0};
    EXPECT_LT(s.sample(l.data(), 4, {}), 2);
  }
}

TEST(Sampler, RepetitionPenaltyHandCase) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  // token 0: 3.0 / 2 = 1.5 < token 1's 2.0 -> greedy picks 1; negative logits are multiplied.
  std::vector<float> l{3.0f, 2.0f, -1.0f};
  EXPECT_EQ(s.sample(l.data(), 3, {0, 2, 0}), 1);
  EXPECT_FLOAT_EQ(l[0], 1.5f);
  EXPECT_FLOAT_EQ(l[2], -2.0f);
}

TEST(Sampler, SameSeedSameStream) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 99;
  Sampler a(p), b(p);
  for (int i = 0; i < 100; ++i) {
    std::vector<float> l1{0, 0.1f, 0.2f, 0.3f, 0.4f}, l2 = l1;
    EXPECT_EQ(a.sample(l1.data(), 5, {}), b.sample(l2.data(), 5, {}));
  }
}

TEST(Sampler, RejectsInvalidParameters) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.top_p = 0;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.min_p = 2;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.repetition_penalty = 0;
  EXPECT_THROW(Sampler{p}, Error);
}
