// Consistency of the inference paths against each other: absorbed vs naive attention,
// incremental decode vs full recompute, batched vs separate sequences. (Agreement with an
// independent implementation is tests/reference/compare_whale.py.)
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "infer/generate.h"
#include "io/checkpoint.h"
#include "model/transformer.h"

using namespace whale;

namespace {

std::unique_ptr<Model> tiny_model(uint64_t seed = 7) {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = seed;
  init.std = 0.05;  // larger than usual so attention is far from uniform
  init.norm_jitter = 0.1;
  init.router_bias_std = 0.05;
  return init_model(c, init);
}

std::vector<int32_t> some_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng.next() % uint64_t(vocab));
  return t;
}

// Logits for every position, feeding `chunk` tokens per forward pass.
std::vector<float> run_logits(const Model& m, AttentionMode mode, const std::vector<int32_t>& tokens, int64_t chunk) {
  const ModelConfig& c = m.config;
  const int64_t n = int64_t(tokens.size());
  Transformer tf(m, mode);
  KVCache cache(c, n);
  std::vector<float> hidden(size_t(n * c.hidden_size));
  for (int64_t p = 0; p < n; p += chunk) {
    const int64_t rows = std::min(chunk, n - p);
    tf.forward(tokens.data() + p, {SeqSpan{&cache, 0, rows, p}}, hidden.data() + p * c.hidden_size);
  }
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[size_t(i)] = i;
  std::vector<float> logits(size_t(n * c.vocab_size));
  tf.logits(hidden.data(), all, logits.data());
  return logits;
}

// Worst over rows of max|a - b| / max|b|.
double worst_row_error(const std::vector<float>& a, const std::vector<float>& b, int64_t width) {
  double worst = 0;
  for (size_t r = 0; r < a.size() / size_t(width); ++r) {
    double diff = 0, scale = 0;
    for (int64_t j = 0; j < width; ++j) {
      diff = std::max(diff, double(std::fabs(a[r * width + j] - b[r * width + j])));
      scale = std::max(scale, double(std::fabs(b[r * width + j])));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

}  // namespace

TEST(Forward, AbsorbedEqualsNaiveAttention) {
  auto m = tiny_model();
  auto tokens = some_tokens(40, m->config.vocab_size, 1);
  auto naive = run_logits(*m, AttentionMode::Naive, tokens, 40);
  auto absorbed = run_logits(*m, AttentionMode::Absorbed, tokens, 40);
  // Same math in another association order: float32 rounding only.
  EXPECT_LT(worst_row_error(absorbed, naive, m->config.vocab_size), 1e-5);
}

TEST(Forward, IncrementalDecodeEqualsFullRecompute) {
  auto m = tiny_model();
  auto tokens = some_tokens(48, m->config.vocab_size, 2);
  auto full = run_logits(*m, AttentionMode::Naive, tokens, 48);
  for (int64_t chunk : {1, 5, 16}) {
    auto inc = run_logits(*m, AttentionMode::Auto, tokens, chunk);
    EXPECT_LT(worst_row_error(inc, full, m->config.vocab_size), 1e-5) << "chunk " << chunk;
  }
}

TEST(Forward, BatchedSequencesEqualSeparateOnes) {
  auto m = tiny_model();
  const ModelConfig& c = m->config;
  auto a = some_tokens(9, c.vocab_size, 3), b = some_tokens(23, c.vocab_size, 4);
  Transformer tf(*m);
  KVCache ca(c, 64), cb(c, 64);
  std::vector<int32_t> both(a);
  both.insert(both.end(), b.begin(), b.end());
  std::vector<float> hidden(both.size() * size_t(c.hidden_size));
  tf.forward(both.data(), {SeqSpan{&ca, 0, 9, 0}, SeqSpan{&cb, 9, 23, 0}}, hidden.data());
  std::vector<float> batched(2 * size_t(c.vocab_size));
  tf.logits(hidden.data(), {8, 31}, batched.data());
  // Then one decode step for both sequences in one batch, against separate runs.
  std::vector<int32_t> next{5, 6};
  tf.forward(next.data(), {SeqSpan{&ca, 0, 1, 9}, SeqSpan{&cb, 1, 1, 23}}, hidden.data());
  std::vector<float> step(2 * size_t(c.vocab_size));
  tf.logits(hidden.data(), {0, 1}, step.data());

  auto alone_a = a;
  alone_a.push_back(5);
  auto alone_b = b;
  alone_b.push_back(6);
  auto la = run_logits(*m, AttentionMode::Auto, alone_a, 1);
  auto lb = run_logits(*m, AttentionMode::Auto, alone_b, 1);
  const size_t V = size_t(c.vocab_size);
  std::vector<float> ref{la.begin() + 8 * V, la.begin() + 9 * V};
  ref.insert(ref.end(), lb.begin() + 22 * V, lb.begin() + 23 * V);
  EXPECT_LT(worst_row_error(batched, ref, c.vocab_size), 1e-5);
  std::vector<float> ref_step{la.begin() + 9 * V, la.end()};
  ref_step.insert(ref_step.end(), lb.begin() + 23 * V, lb.end());
  EXPECT_LT(worst_row_error(step, ref_step, c.vocab_size), 1e-5);
}

TEST(Forward, MtpIncrementalEqualsFull) {
  auto m = tiny_model();
  const ModelConfig& c = m->config;
  auto tokens = some_tokens(20, c.vocab_size, 5);
  const int64_t n = 20, H = c.hidden_size, V = c.vocab_size;
  auto mtp_run = [&](int64_t chunk) {
    Transformer tf(*m, AttentionMode::Auto);
    KVCache cache(c, n);
    std::vector<float> hidden(size_t(n * H)), out(size_t((n - 1) * V));
    tf.forward(tokens.data(), {SeqSpan{&cache, 0, n, 0}}, hidden.data());
    for (int64_t p = 0; p < n - 1; p += chunk) {
      const int64_t rows = std::min(chunk, n - 1 - p);
      tf.mtp_logits(hidden.data() + p * H, tokens.data() + p + 1, {SeqSpan{&cache, 0, rows, p}}, out.data() + p * V);
    }
    return out;
  };
  auto full = mtp_run(n), inc = mtp_run(1);
  EXPECT_LT(worst_row_error(inc, full, V), 1e-5);
  // MTP logits differ from the main head's (it predicts one token further).
  auto main_logits = run_logits(*m, AttentionMode::Auto, tokens, n);
  EXPECT_GT(worst_row_error(std::vector<float>(main_logits.begin(), main_logits.begin() + (n - 1) * V), full, V), 1e-3);
}

TEST(Forward, RejectsBadTokensAndOverflow) {
  auto m = tiny_model();
  Transformer tf(*m);
  KVCache cache(m->config, 4);
  std::vector<float> hidden(size_t(8 * m->config.hidden_size));
  std::vector<int32_t> bad{1, int32_t(m->config.vocab_size)};
  EXPECT_THROW(tf.forward(bad.data(), {SeqSpan{&cache, 0, 2, 0}}, hidden.data()), Error);
  std::vector<int32_t> many(5, 3);
  EXPECT_THROW(tf.forward(many.data(), {SeqSpan{&cache, 0, 5, 0}}, hidden.data()), Error);
  std::vector<int32_t> two{1, 2};
  EXPECT_THROW(tf.forward(two.data(), {SeqSpan{&cache, 0, 2, 3}}, hidden.data()), Error);  // wrong pos0
}

TEST(Generate, BatchedGreedyEqualsSeparate) {
  auto m = tiny_model();
  Generator gen(*m);
  GenerateOptions o;
  o.max_tokens = 12;
  o.stop_at_eos = false;
  std::vector<std::vector<int32_t>> prompts{{3, 4, 5}, {9, 8, 7, 6, 5, 4, 3}, {42}};
  auto batched = gen.generate(prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) {
    Generator g1(*m);
    auto alone = g1.generate({prompts[i]}, o);
    EXPECT_EQ(batched[i], alone[0]) << "sequence " << i;
    EXPECT_EQ(batched[i].size(), 12u);
  }
}

TEST(Generate, SeededSamplingIsReproducible) {
  auto m = tiny_model();
  GenerateOptions o;
  o.max_tokens = 16;
  o.stop_at_eos = false;
  o.sampling.temperature = 1.0f;
  o.sampling.top_p = 0.95f;
  o.sampling.seed = 11;
  Generator g1(*m), g2(*m);
  auto a = g1.generate({{1, 2, 3}}, o), b = g2.generate({{1, 2, 3}}, o);
  EXPECT_EQ(a, b);
  o.sampling.seed = 12;
  Generator g3(*m);
  EXPECT_NE(g3.generate({{1, 2, 3}}, o), a);
}
