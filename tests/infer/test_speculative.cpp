// MTP speculative decoding: greedy output identical to plain decoding, and the sampled
// distribution of the first two tokens unchanged (chi-square against the exact distribution,
// computed independently from full forward passes).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "infer/generate.h"
#include "infer/speculative.h"
#include "io/checkpoint.h"

using namespace whale;

namespace {

ModelConfig tiny_config() { return load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json"); }

std::unique_ptr<Model> make_model(const ModelConfig& c, uint64_t seed, double std = 0.05) {
  InitOptions init;
  init.seed = seed;
  init.std = std;
  init.norm_jitter = 0.1;
  init.router_bias_std = 0.05;
  return init_model(c, init);
}

// Exact next-token distribution after `tokens` under temperature t and top-k k (k = 0: all),
// by a fresh forward over the whole sequence: an implementation independent of the sampler.
std::vector<double> next_distribution(const Model& m, const std::vector<int32_t>& tokens, double t, int64_t k) {
  const ModelConfig& c = m.config;
  Transformer tf(m);
  KVCache cache(c, int64_t(tokens.size()));
  std::vector<float> hidden(tokens.size() * size_t(c.hidden_size)), logits(size_t(c.vocab_size));
  tf.forward(tokens.data(), {SeqSpan{&cache, 0, int64_t(tokens.size()), 0}}, hidden.data());
  tf.logits(hidden.data(), {int64_t(tokens.size()) - 1}, logits.data());
  std::vector<double> p(size_t(c.vocab_size));
  std::vector<float> sorted(logits);
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  const float cut = k > 0 ? sorted[size_t(k - 1)] : -INFINITY;
  double total = 0;
  for (size_t v = 0; v < p.size(); ++v) {
    p[v] = logits[v] >= cut ? std::exp((double(logits[v]) - sorted[0]) / t) : 0.0;
    total += p[v];
  }
  for (double& x : p) x /= total;
  return p;
}

// Chi-square statistic of (first, second) token counts against the exact joint distribution,
// pooling cells whose expected count is below 5 into one.
double chi_square_first_two(const Model& m, const std::vector<int32_t>& prompt, double t, int64_t k, int64_t n,
                            const std::vector<std::vector<int32_t>>& out, int64_t* dof) {
  const int64_t V = m.config.vocab_size;
  std::vector<double> expected(size_t(V * V));
  const std::vector<double> p1 = next_distribution(m, prompt, t, k);
  for (int64_t a = 0; a < V; ++a) {
    if (p1[size_t(a)] == 0) continue;
    std::vector<int32_t> longer(prompt);
    longer.push_back(int32_t(a));
    const std::vector<double> p2 = next_distribution(m, longer, t, k);
    for (int64_t b = 0; b < V; ++b) expected[size_t(a * V + b)] = double(n) * p1[size_t(a)] * p2[size_t(b)];
  }
  std::vector<double> observed(size_t(V * V));
  for (const auto& seq : out) observed[size_t(seq.at(0) * V + seq.at(1))] += 1;
  double chi = 0, pooled_e = 0, pooled_o = 0;
  int64_t cells = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (expected[i] < 5) {
      pooled_e += expected[i];
      pooled_o += observed[i];
      continue;
    }
    chi += (observed[i] - expected[i]) * (observed[i] - expected[i]) / expected[i];
    ++cells;
  }
  if (pooled_e > 0) {
    chi += (pooled_o - pooled_e) * (pooled_o - pooled_e) / pooled_e;
    ++cells;
  }
  *dof = cells - 1;
  return chi;
}

// Upper 0.1% point of chi-square with d degrees of freedom (Wilson-Hilferty approximation).
double chi_square_critical_999(int64_t d) {
  const double z = 3.090232, a = 2.0 / (9.0 * double(d));
  return double(d) * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
}

}  // namespace

TEST(Speculative, GreedyMatchesPlainDecodingOnRandomModel) {
  auto m = make_model(tiny_config(), 3);
  GenerateOptions o;
  o.max_tokens = 40;
  o.stop_at_eos = false;
  const std::vector<std::vector<int32_t>> prompts{{5, 17, 200, 3}, {9}, {100, 101, 102, 103, 104, 105, 7}};
  Generator plain(*m);
  SpeculativeGenerator spec(*m);
  SpeculativeStats stats;
  const auto want = plain.generate(prompts, o);
  const auto got = spec.generate(prompts, o, {}, &stats);
  EXPECT_EQ(got, want);
  EXPECT_GT(stats.drafted, 0);
  EXPECT_EQ(stats.generated_tokens, 3 * o.max_tokens);
  // One sequence alone gives the same tokens as in the batch.
  const auto single = spec.generate({prompts[2]}, o);
  EXPECT_EQ(single[0], want[2]);
}

TEST(Speculative, AlwaysRightDraftGivesTwoTokensPerPass) {
  // Zero output heads give all-zero logits, so both heads pick token 0 (ties go to the lowest
  // id): every draft is accepted and each verify pass yields two tokens.
  ModelConfig c = tiny_config();
  auto m = make_model(c, 11);
  for (Tensor* head : {&m->weights.lm_head, &m->weights.mtp[0].shared_head_head})
    std::fill(head->f32(), head->f32() + head->numel(), 0.0f);
  GenerateOptions o;
  o.max_tokens = 21;
  o.stop_at_eos = false;
  Generator plain(*m);
  SpeculativeGenerator spec(*m);
  SpeculativeStats stats;
  const std::vector<std::vector<int32_t>> prompts{{1, 2, 3}, {4}};
  EXPECT_EQ(spec.generate(prompts, o, {}, &stats), plain.generate(prompts, o));
  EXPECT_EQ(stats.accepted, stats.drafted);
  EXPECT_EQ(stats.steps, 10);  // 1 token from the prefill, then 10 passes of 2
}

TEST(Speculative, StopsLikePlainDecoding) {
  auto m = make_model(tiny_config(), 5);
  Generator plain(*m);
  SpeculativeGenerator spec(*m);
  GenerateOptions o;
  o.max_tokens = 25;
  o.stop_at_eos = false;
  const std::vector<std::vector<int32_t>> prompts{{7, 8, 9}};
  const auto full = plain.generate(prompts, o);
  // Stop at the 6th generated token via stop_tokens, and via the callback at the 9th.
  o.stop_tokens = {full[0][5]};
  const auto first_stop = std::find(full[0].begin(), full[0].end(), full[0][5]) - full[0].begin();
  auto got = spec.generate(prompts, o);
  EXPECT_EQ(int64_t(got[0].size()), first_stop + 1);
  o.stop_tokens.clear();
  int64_t seen = 0;
  got = spec.generate(prompts, o, [&](int64_t, int32_t) { return ++seen < 9; });
  EXPECT_EQ(got[0], std::vector<int32_t>(full[0].begin(), full[0].begin() + 9));
  o.max_tokens = 0;
  EXPECT_TRUE(spec.generate(prompts, o)[0].empty());
}

// Speculative sampling keeps the distribution: the first two sampled tokens over many seeds
// follow the exact joint distribution of the main model (vocabulary of 6 tokens: 36 cells).
void check_distribution(double temperature, int64_t top_k) {
  ModelConfig c = tiny_config();
  c.vocab_size = 6;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  c.num_hidden_layers = 1;  // speed: 2000 sequences in one batch
  // std 0.1 gives logits of spread ~1.1 (hidden 128): distributions clearly non-uniform, and the
  // random MTP head's draft is accepted often but far from always.
  auto m = make_model(c, 21, 0.1);
  GenerateOptions o;
  o.max_tokens = 2;
  o.stop_at_eos = false;
  o.sampling.temperature = float(temperature);
  o.sampling.top_k = top_k;
  o.sampling.seed = 1000;
  const int64_t n = 2000;
  const std::vector<int32_t> prompt{2, 3, 4};
  SpeculativeGenerator spec(*m);
  SpeculativeStats stats;
  const auto out = spec.generate(std::vector<std::vector<int32_t>>(size_t(n), prompt), o, {}, &stats);
  // Both branches ran: some drafts accepted, some rejected (the MTP head is not the main head).
  EXPECT_GT(stats.accepted, n / 20) << "of " << stats.drafted;
  EXPECT_LT(stats.accepted, stats.drafted - n / 20);
  int64_t dof = 0;
  const double chi = chi_square_first_two(*m, prompt, temperature, top_k, n, out, &dof);
  EXPECT_LT(chi, chi_square_critical_999(dof)) << "dof " << dof;
  // The same test rejects the draft's own distribution: plain sampling of the first token
  // followed by always accepting the MTP draft.
  Transformer tf(*m);
  KVCache cache(c, 8);
  std::vector<float> hidden(size_t(3 * c.hidden_size)), logits(size_t(c.vocab_size)), q(size_t(c.vocab_size));
  std::vector<std::vector<int32_t>> draft_out(static_cast<size_t>(n));
  Rng rng(99);
  const std::vector<double> p1 = next_distribution(*m, prompt, temperature, top_k);
  std::vector<std::pair<float, int32_t>> scratch;
  for (int64_t a = 0; a < c.vocab_size; ++a) {
    cache.clear();
    tf.forward(prompt.data(), {SeqSpan{&cache, 0, 3, 0}}, hidden.data());
    std::vector<int32_t> next{3, 4, int32_t(a)};
    tf.mtp_logits(hidden.data(), next.data(), {SeqSpan{&cache, 0, 3, 0}}, {2}, logits.data());
    sampling_distribution(logits.data(), c.vocab_size, o.sampling, {}, scratch, q.data());
    for (int64_t i = 0; i < n; ++i) {
      double r = rng.uniform();
      int64_t first = 0;
      while (first < c.vocab_size - 1 && (r -= p1[size_t(first)]) >= 0) ++first;
      if (first != a) continue;
      double r2 = rng.uniform();
      int64_t second = 0;
      while (second < c.vocab_size - 1 && (r2 -= q[size_t(second)]) >= 0) ++second;
      draft_out[size_t(i)] = {int32_t(a), int32_t(second)};
    }
  }
  std::erase_if(draft_out, [](const auto& v) { return v.empty(); });
  const double wrong = chi_square_first_two(*m, prompt, temperature, top_k, int64_t(draft_out.size()), draft_out, &dof);
  EXPECT_GT(wrong, chi_square_critical_999(dof)) << "the test cannot tell the draft from the target";
}

TEST(Speculative, SampledDistributionUnchanged) { check_distribution(1.0, 0); }
TEST(Speculative, SampledDistributionUnchangedWithTopK) { check_distribution(0.7, 3); }

TEST(Speculative, SamplingDistributionMatchesSampler) {
  // The dense distribution is the one Sampler draws from: its top-k/top-p/min-p support and
  // the sampler's empirical frequencies agree.
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_p = 0.8f;
  p.min_p = 0.05f;
  p.repetition_penalty = 1.3f;
  p.seed = 4;
  std::vector<float> base{1.0f, 0.2f, -0.5f, 2.0f, 0.9f, -3.0f, 1.5f, 0.0f};
  const std::vector<int32_t> history{3, 6};
  std::vector<float> l(base), probs(base.size());
  std::vector<std::pair<float, int32_t>> scratch;
  sampling_distribution(l.data(), int64_t(l.size()), p, history, scratch, probs.data());
  double total = 0;
  for (float x : probs) total += x;
  EXPECT_NEAR(total, 1.0, 1e-6);
  Sampler s(p);
  const int n = 20000;
  std::vector<int> counts(base.size());
  for (int i = 0; i < n; ++i) {
    l = base;
    ++counts[size_t(s.sample(l.data(), int64_t(l.size()), history))];
  }
  for (size_t v = 0; v < base.size(); ++v) {
    if (probs[v] == 0) {
      EXPECT_EQ(counts[v], 0) << v;
    } else {
      // 5 standard deviations of a binomial count.
      EXPECT_NEAR(counts[v], n * probs[v], 5 * std::sqrt(n * probs[v] * (1 - probs[v])) + 1) << v;
    }
  }
}

TEST(Speculative, ModelWithoutMtpIsAnError) {
  ModelConfig c = tiny_config();
  c.num_nextn_predict_layers = 0;
  auto m = make_model(c, 1);
  SpeculativeGenerator spec(*m);
  GenerateOptions o;
  EXPECT_THROW(spec.generate({{1, 2}}, o), Error);
}
