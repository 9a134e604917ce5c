// Eval metrics on completions we control, rejection sampling for distillation, perplexity
// against the inference forward, and sampling from a real (random) checkpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/rng.h"
#include "model/transformer.h"
#include "rl/distill.h"
#include "rl/eval.h"
#include "rl_test_util.h"

using namespace whale;
using namespace whale::rl;

namespace {

std::vector<Problem> three_problems() {
  std::vector<Problem> ps(3);
  for (int i = 0; i < 3; ++i) {
    const std::string n(1, char('0' + i));
    ps[size_t(i)].id = std::string("p").append(n);  // (operator+ on a literal trips GCC 12's -Wrestrict)
    ps[size_t(i)].question = std::string("q").append(n);
    ps[size_t(i)].target = 10 * (i + 1);
    ps[size_t(i)].answer = std::to_string(10 * (i + 1));
  }
  return ps;
}

// 3 samples per problem. Problem 0: 3/3 correct. Problem 1: 1/3 correct, majority wrong (two
// say 7). Problem 2: 2/3 correct ("30", and "30.0" without think tags), one wrong.
std::vector<std::string> fixed_completions(const std::vector<Problem>&, int64_t) {
  return {"<think>a</think>\n\n10", "<think>b</think>\n\n10", "<think>c</think>\n\n10",
          "<think>a</think>\n\n7",  "<think>b</think>\n\n20", "<think>c</think>\n\n7",
          "<think>a</think>\n\n30", "30.0",                   "<think>c</think>\n\n31"};
}

}  // namespace

TEST(Eval, PassAndMajorityOnControlledCompletions) {
  auto task = make_task("arith:digits=2,ops=+");
  const auto ps = three_problems();
  const EvalReport r = evaluate_task(*task, ps, 3, fixed_completions);
  EXPECT_EQ(r.problems, 3);
  EXPECT_NEAR(r.pass_at_1, (3.0 / 3 + 1.0 / 3 + 2.0 / 3) / 3, 1e-12);
  EXPECT_NEAR(r.maj_at_k, 2.0 / 3, 1e-12);  // problem 1's majority is 7
  EXPECT_NEAR(r.pass_at_k, 1.0, 1e-12);
  EXPECT_NEAR(r.format_rate, 8.0 / 9, 1e-12);
  EXPECT_EQ(r.results[1].majority, "7");
  EXPECT_FALSE(r.results[1].majority_correct);
  EXPECT_EQ(r.results[2].majority, "30");  // "30" and "30.0" are one vote key
  EXPECT_TRUE(r.results[2].majority_correct);
  const auto j = r.to_json(2);
  EXPECT_EQ(j["results"][0]["completions"].size(), 2u);
  EXPECT_NEAR(j["pass@1"].get<double>(), r.pass_at_1, 1e-12);
  // A completion function that returns the wrong count is an error, not a crash.
  EXPECT_THROW(evaluate_task(*task, ps, 2, fixed_completions), Error);
}

TEST(Distill, KeepsOnlyCorrectFormattedDistinctTraces) {
  auto task = make_task("arith:digits=2,ops=+");
  const auto ps = three_problems();
  int64_t sampled = 0;
  const auto kept = keep_correct(*task, ps, 3, fixed_completions, 5, &sampled);
  EXPECT_EQ(sampled, 9);
  // p0: three distinct correct; p1: one ("20"); p2: "30" (the "30.0" has no think tags: dropped).
  ASSERT_EQ(kept.size(), 5u);
  for (const auto& c : kept) {
    const Problem& p = ps[size_t(c.user[1] - '0')];
    const RewardResult r = task->score(p, c.assistant);
    EXPECT_EQ(r.accuracy, 1.0) << c.assistant;
    EXPECT_EQ(r.format, 1.0) << c.assistant;
  }
  EXPECT_EQ(kept[3].assistant, "<think>b</think>\n\n20");
  EXPECT_EQ(keep_correct(*task, ps, 3, fixed_completions, 1).size(), 3u);  // one per solved problem
  const auto dup = [](const std::vector<Problem>&, int64_t) {
    return std::vector<std::string>(9, "<think>x</think>\n\n10");
  };
  EXPECT_EQ(keep_correct(*task, ps, 3, dup, 5).size(), 1u);  // duplicates kept once
}

TEST(Eval, PerplexityMatchesInferenceForward) {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = 2;
  init.std = 0.05;
  auto m = init_model(c, init);
  Rng rng(4);
  std::vector<int32_t> tok(21);
  for (auto& t : tok) t = int32_t(rng.next() % uint64_t(c.vocab_size));
  const PerplexityReport r = perplexity(*m, tok, 8, nullptr);
  EXPECT_EQ(r.tokens, 20);
  EXPECT_EQ(r.windows, 3);  // 8 + 8 + 4 targets
  // Independent: the inference Transformer over each window, cross-entropy by hand.
  Transformer tf(*m, AttentionMode::Naive);
  double nll = 0;
  for (int64_t start = 0; start + 1 < 21; start += 8) {
    const int64_t t = std::min<int64_t>(8, 20 - start);
    KVCache cache(c, t);
    std::vector<float> hidden(size_t(t * c.hidden_size)), logits(size_t(t * c.vocab_size));
    tf.forward(tok.data() + start, {SeqSpan{&cache, 0, t, 0}}, hidden.data());
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < t; ++i) rows.push_back(i);
    tf.logits(hidden.data(), rows, logits.data());
    for (int64_t i = 0; i < t; ++i) {
      const float* l = logits.data() + i * c.vocab_size;
      double mx = l[0], z = 0;
      for (int64_t j = 0; j < c.vocab_size; ++j) mx = std::max(mx, double(l[j]));
      for (int64_t j = 0; j < c.vocab_size; ++j) z += std::exp(l[j] - mx);
      nll += std::log(z) + mx - l[tok[size_t(start + i + 1)]];
    }
  }
  EXPECT_NEAR(r.mean_nll, nll / 20, 1e-4);
  EXPECT_NEAR(r.perplexity, std::exp(nll / 20), 1e-3 * std::exp(nll / 20));
  EXPECT_THROW(perplexity(*m, tok, 5000, nullptr), Error);
}

TEST(Eval, SamplesFromACheckpointWithoutCrashing) {
  const auto dir = std::filesystem::temp_directory_path() / "whale_eval_sample_test";
  std::filesystem::remove_all(dir);
  rl_test::make_checkpoint(dir.string(), 3);
  auto model = load_model(dir.string());
  const auto tok = tokenizer::Tokenizer::from_file((dir / "tokenizer.json").string());
  auto task = make_task("arith:digits=2,ops=+");
  const auto ps = task->problems(Split::Test, 4, 0);
  SampleOptions so;
  so.max_tokens = 12;
  so.batch = 3;  // chunks that cut across problems
  so.sampling.temperature = 1.0f;
  so.sampling.seed = 11;
  const EvalReport a = evaluate_task(*task, ps, 2, model_completions(*model, tok, so));
  const EvalReport b = evaluate_task(*task, ps, 2, model_completions(*model, tok, so));
  ASSERT_EQ(a.results.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(a.results[i].completions, b.results[i].completions);  // seeded
  EXPECT_GE(a.pass_at_1, 0.0);
  std::filesystem::remove_all(dir);
}
