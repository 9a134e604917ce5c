#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <vector>

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

namespace {

// Reference nucleus: the full descending sort (ties by id), then the smallest prefix whose mass
// reaches top_p, after min_p's floor.
std::vector<int> reference_keep(const std::vector<float>& logits, float temperature, float top_p, float min_p) {
  std::vector<std::pair<double, int>> c;
  double mx = -INFINITY;
  for (float l : logits) mx = std::max(mx, double(l));
  for (size_t i = 0; i < logits.size(); ++i) c.push_back({std::exp((logits[i] - mx) / temperature), int(i)});
  std::sort(c.begin(), c.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  size_t keep = c.size();
  if (min_p > 0) {
    size_t n = 1;
    while (n < keep && c[n].first >= min_p * c[0].first) ++n;
    keep = n;
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += c[i].first;
  double cum = 0;
  size_t n = 0;
  while (n < keep) {
    cum += c[n].first / total;
    ++n;
    if (cum >= top_p) break;
  }
  std::vector<int> ids;
  for (size_t i = 0; i < n; ++i) ids.push_back(c[i].second);
  return ids;
}

}  // namespace

// A 2000-token vocabulary with a flat-ish distribution: the nucleus holds hundreds of tokens, so
// the sampler's on-demand partial sort must grow several times. Every draw must fall in the
// reference nucleus, and the draws must cover it with the right mass.
TEST(Sampler, WideNucleusMatchesFullSortReference) {
  std::vector<float> logits(2000);
  uint64_t x = 12345;
  for (float& l : logits) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    l = float((x >> 40) % 1000) / 1000.0f;  // values in [0, 1): many near-ties, 1000 distinct
  }
  for (float top_p : {0.3f, 0.9f, 0.999f}) {
    const std::vector<int> nucleus = reference_keep(logits, 1.0f, top_p, 0.0f);
    ASSERT_GT(nucleus.size(), 64u) << top_p;
    std::vector<char> in(logits.size(), 0);
    for (int id : nucleus) in[size_t(id)] = 1;
    SamplingParams p;
    p.temperature = 1.0f;
    p.top_p = top_p;
    p.seed = 7;
    Sampler s(p);
    for (int i = 0; i < 3000; ++i) {
      auto l = logits;
      const int32_t t = s.sample(l.data(), int64_t(l.size()), {});
      ASSERT_TRUE(in[size_t(t)]) << "top_p " << top_p << ": token " << t << " is outside the nucleus";
    }
  }
  // min_p 0.3 at temperature 0.5 keeps the tokens with l >= max + ln(0.3) / 2: about 60% of them.
  const std::vector<int> kept = reference_keep(logits, 0.5f, 1.0f, 0.3f);
  ASSERT_GT(kept.size(), 64u);
  std::vector<char> in(logits.size(), 0);
  for (int id : kept) in[size_t(id)] = 1;
  SamplingParams p;
  p.temperature = 0.5f;
  p.min_p = 0.3f;
  Sampler s(p);
  for (int i = 0; i < 3000; ++i) {
    auto l = logits;
    ASSERT_TRUE(in[size_t(s.sample(l.data(), int64_t(l.size()), {}))]);
  }
}

// No truncation: the draw is over the whole vocabulary. Frequencies of 8 coarse buckets of a
// 1000-token vocabulary follow the softmax mass of each bucket.
TEST(Sampler, UntruncatedFrequenciesOverLargeVocabulary) {
  const int V = 1000;
  std::vector<float> logits(V);
  for (int i = 0; i < V; ++i) logits[size_t(i)] = 3.0f * std::sin(0.037f * float(i));
  std::vector<double> mass(8, 0.0);
  double z = 0;
  for (int i = 0; i < V; ++i) {
    const double e = std::exp(double(logits[size_t(i)]) / 0.8);
    mass[size_t(i * 8 / V)] += e;
    z += e;
  }
  SamplingParams p;
  p.temperature = 0.8f;
  p.seed = 3;
  Sampler s(p);
  std::vector<int> count(8, 0);
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    auto l = logits;
    count[size_t(s.sample(l.data(), V, {}) * 8 / V)]++;
  }
  for (int b = 0; b < 8; ++b) EXPECT_NEAR(count[size_t(b)] / double(n), mass[size_t(b)] / z, 0.01) << b;
}
