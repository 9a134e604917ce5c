// Task generators (splits, determinism, solvability, traces), GSM8K parsing and the rewards on
// hand-derived cases.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>

#include "core/error.h"
#include "rl/task.h"

using namespace whale;
using namespace whale::rl;

namespace {

const Problem* find_question(const std::vector<Problem>& ps, const std::string& q) {
  for (const auto& p : ps)
    if (p.question == q) return &p;
  return nullptr;
}

// Independent of the generator's search: every value a multiset of numbers reaches with + - * /
// over exact fractions (any order, any intermediate sign), by dynamic programming over subsets.
bool reachable(const std::vector<int64_t>& numbers, int64_t target) {
  using Frac = std::pair<int64_t, int64_t>;
  const auto norm = [](int64_t n, int64_t d) {
    if (d < 0) n = -n, d = -d;
    const int64_t g = std::gcd(n < 0 ? -n : n, d);
    return Frac{n / g, d / g};
  };
  const size_t n = numbers.size(), full = (size_t(1) << n) - 1;
  std::vector<std::set<Frac>> vals(full + 1);
  for (size_t i = 0; i < n; ++i) vals[size_t(1) << i].insert({numbers[i], 1});
  for (size_t mask = 1; mask <= full; ++mask)
    for (size_t sub = (mask - 1) & mask; sub > 0; sub = (sub - 1) & mask) {
      const size_t rest = mask ^ sub;
      for (const auto& [an, ad] : vals[sub])
        for (const auto& [bn, bd] : vals[rest]) {
          vals[mask].insert(norm(an * bd + bn * ad, ad * bd));
          vals[mask].insert(norm(an * bd - bn * ad, ad * bd));
          vals[mask].insert(norm(an * bn, ad * bd));
          if (bn != 0) vals[mask].insert(norm(an * bd, ad * bn));
        }
    }
  return vals[full].count({target, 1}) > 0;
}

}  // namespace

TEST(Tasks, SpecErrorsNameThePart) {
  const auto message = [](const std::string& spec) {
    try {
      make_task(spec);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("chess").find("unknown task 'chess'"), std::string::npos);
  EXPECT_NE(message("arith:digits=0").find("digits=0"), std::string::npos);
  EXPECT_NE(message("arith:digits=two").find("digits=two"), std::string::npos);
  EXPECT_NE(message("arith:ops=/").find("ops=/"), std::string::npos);
  EXPECT_NE(message("arith:colour=red").find("unknown option 'colour'"), std::string::npos);
  EXPECT_NE(message("arith:digits").find("not key=value"), std::string::npos);
  EXPECT_NE(message("countdown:numbers=9").find("numbers=9"), std::string::npos);
  EXPECT_NE(message("gsm8k:path=/nonexistent/x.jsonl").find("/nonexistent/x.jsonl"), std::string::npos);
}

TEST(Tasks, ArithSplitsAreDisjointAndDeterministic) {
  auto task = make_task("arith:digits=2,ops=+-*");
  EXPECT_EQ(task->name(), "arith");
  const auto train = task->problems(Split::Train, 4000, 1);
  const auto test = task->problems(Split::Test, -1, 1);  // the whole (enumerated) test split
  ASSERT_EQ(train.size(), 4000u);
  EXPECT_GT(test.size(), 2000u);  // about 1/8 of 8100 + 8100 + 4095 problems
  EXPECT_LT(test.size(), 3100u);
  std::set<std::string> test_q;
  for (const auto& p : test) EXPECT_TRUE(test_q.insert(p.question).second) << "repeated " << p.question;
  for (const auto& p : train) EXPECT_EQ(test_q.count(p.question), 0u) << p.question;
  // Same (split, seed): same problems, and a shorter request is a prefix.
  const auto again = task->problems(Split::Train, 100, 1);
  for (size_t i = 0; i < again.size(); ++i) EXPECT_EQ(again[i].question, train[i].question);
  const auto other = task->problems(Split::Train, 100, 2);
  int same = 0;
  for (size_t i = 0; i < 100; ++i) same += other[i].question == train[i].question;
  EXPECT_LT(same, 10);
  // Large spaces are sampled rather than enumerated; still disjoint.
  auto big = make_task("arith:digits=4,ops=*");
  const auto btrain = big->problems(Split::Train, 500, 3), btest = big->problems(Split::Test, 500, 3);
  std::set<std::string> bq;
  for (const auto& p : btest) bq.insert(p.question);
  for (const auto& p : btrain) EXPECT_EQ(bq.count(p.question), 0u);
  EXPECT_EQ(bq.size(), 500u);
}

TEST(Tasks, ArithTracesAreHandDerived) {
  auto task = make_task("arith:digits=2,ops=+-*");
  auto all = task->problems(Split::Train, -1, 0);
  for (const auto& p : task->problems(Split::Test, -1, 0)) all.push_back(p);
  const Problem* add = find_question(all, "What is 47 + 85?");
  const Problem* sub = find_question(all, "What is 85 - 47?");
  const Problem* mul = find_question(all, "What is 47 * 85?");
  const Problem* sub0 = find_question(all, "What is 50 - 13?");
  ASSERT_TRUE(add && sub && mul && sub0);
  EXPECT_EQ(add->reference_trace, "<think>\n7+5=12\n4+8+1=13\n</think>\n\n132");
  EXPECT_EQ(sub->reference_trace, "<think>\n15-7=8\n8-4-1=3\n</think>\n\n38");
  EXPECT_EQ(sub0->reference_trace, "<think>\n10-3=7\n5-1-1=3\n</think>\n\n37");
  EXPECT_EQ(mul->reference_trace, "<think>\n47*5=235\n47*80=3760\n235+3760=3995\n</think>\n\n3995");
  EXPECT_EQ(add->answer, "132");
  // Every trace (3 digits, all ops) is short, correct and well formed by the task's own rewards.
  auto t3 = make_task("arith:digits=3");
  for (const auto& p : t3->problems(Split::Train, 300, 5)) {
    const RewardResult r = t3->score(p, p.reference_trace);
    EXPECT_EQ(r.accuracy, 1.0) << p.question << "\n" << p.reference_trace;
    EXPECT_EQ(r.format, 1.0);
    EXPECT_LT(p.reference_trace.size(), 160u) << p.reference_trace;
  }
}

TEST(Tasks, ArithRewardsOnHandCases) {
  auto task = make_task("arith:digits=2,ops=+");
  Problem p;
  p.target = 132;
  p.answer = "132";
  const auto score = [&](const std::string& c) { return task->score(p, c); };
  EXPECT_EQ(score("<think>\n7+5=12\n</think>\n\n132").accuracy, 1.0);
  EXPECT_EQ(score("<think>\n7+5=12\n</think>\n\n132").format, 1.0);
  EXPECT_EQ(score("132").accuracy, 1.0);  // right answer, no reasoning: accuracy without format
  EXPECT_EQ(score("132").format, 0.0);
  EXPECT_EQ(score("<think>\nit is 132").accuracy, 0.0);  // reasoning never closed: no answer
  EXPECT_EQ(score("<think>132</think>\n\n131").accuracy, 0.0);
  EXPECT_EQ(score("<think>x</think>The answer is 132.").accuracy, 1.0);
  EXPECT_EQ(score("<think>x</think>\n\n132").extracted, "132");
  EXPECT_EQ(score("").accuracy, 0.0);
}

TEST(Tasks, FormatReward) {
  EXPECT_EQ(format_reward("<think>\nwork\n</think>\n\n5"), 1.0);
  EXPECT_EQ(format_reward("  <think></think> 5"), 1.0);
  EXPECT_EQ(format_reward("work\n</think>\n\n5"), 1.0);  // the prompt opened <think>
  EXPECT_EQ(format_reward("<think>work"), 0.0);
  EXPECT_EQ(format_reward("<think>work</think>\n\n"), 0.0);
  EXPECT_EQ(format_reward("<think>a</think>5</think>"), 0.0);
  EXPECT_EQ(format_reward("<think>a</think>5<think>"), 0.0);
  EXPECT_EQ(format_reward("<think><think>a</think>5"), 0.0);
  EXPECT_EQ(format_reward("5"), 0.0);
  EXPECT_EQ(format_reward(""), 0.0);
}

TEST(Tasks, CountdownIsSolvableAndScored) {
  auto task = make_task("countdown:numbers=4");
  const auto train = task->problems(Split::Train, 150, 7), test = task->problems(Split::Test, 60, 7);
  ASSERT_EQ(train.size(), 150u);
  ASSERT_EQ(test.size(), 60u);
  std::set<std::string> keys;
  const auto key = [](const Problem& p) {
    auto n = p.numbers;
    std::sort(n.begin(), n.end());
    std::string k;
    for (auto v : n) k += std::to_string(v) + ",";
    return k + "->" + std::to_string(p.target);
  };
  for (const auto& p : test) keys.insert(key(p));
  for (const auto& p : train) EXPECT_EQ(keys.count(key(p)), 0u);
  for (const auto* split : {&train, &test})
    for (const auto& p : *split) {
      ASSERT_EQ(p.numbers.size(), 4u);
      EXPECT_TRUE(p.target >= 10 && p.target <= 100);
      EXPECT_TRUE(reachable(p.numbers, p.target)) << p.question;
      const RewardResult r = task->score(p, p.reference_trace);
      EXPECT_EQ(r.accuracy, 1.0) << p.question << "\n" << p.reference_trace;
      EXPECT_EQ(r.format, 1.0);
    }
  const auto again = task->problems(Split::Train, 20, 7);
  for (size_t i = 0; i < again.size(); ++i) EXPECT_EQ(again[i].question, train[i].question);

  Problem p;
  p.numbers = {3, 7, 25, 50};
  p.target = 82;
  const auto acc = [&](const std::string& answer) { return task->score(p, "<think>\nx\n</think>\n\n" + answer).accuracy; };
  EXPECT_EQ(acc("(50-25)*3+7"), 1.0);
  EXPECT_EQ(acc("(50 - 25) * 3 + 7 = 82"), 1.0);
  EXPECT_EQ(acc("7+3*(50-25)\nbecause"), 1.0);
  EXPECT_EQ(acc("82"), 0.0);                   // the target alone uses none of the numbers
  EXPECT_EQ(acc("50+25+7"), 0.0);              // 82 but 3 unused
  EXPECT_EQ(acc("(50-25)*3+7+3-3"), 0.0);      // 3 used three times
  EXPECT_EQ(acc("(50-25)*3+7.0"), 1.0);        // 7.0 is the number 7
  EXPECT_EQ(acc("(50-25)*3+7/0"), 0.0);
  EXPECT_EQ(acc("(50-25)*3+7)"), 0.0);
  EXPECT_EQ(acc("2^1000"), 0.0);
  EXPECT_EQ(acc(""), 0.0);
}

TEST(Tasks, Gsm8kParsesTheRealFiles) {
  auto task = make_task(std::string("gsm8k:path=") + WHALE_SOURCE_DIR + "/data/gsm8k");
  const auto test = task->problems(Split::Test, -1, 0);
  const auto train = task->problems(Split::Train, -1, 0);
  ASSERT_EQ(test.size(), 1319u);
  ASSERT_EQ(train.size(), 7473u);
  EXPECT_EQ(test[0].answer, "18");
  EXPECT_EQ(test[0].id, "gsm8k-test-0");
  EXPECT_EQ(test[146].answer, "2125");  // "#### 2,125"
  EXPECT_EQ(test[489].answer, "-10");   // "#### -10"
  EXPECT_EQ(test[1113].answer, "-3");
  // The trace is the dataset's solution without its calculator annotations.
  EXPECT_EQ(test[0].reference_trace,
            "<think>\nJanet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day at the "
            "farmer\xE2\x80\x99s market.\n</think>\n\n18");
  EXPECT_EQ(task->score(test[146], "<think>x</think>\n\n2,125").accuracy, 1.0);
  EXPECT_EQ(task->score(test[489], "<think>x</think>\n\nIt is -10 degrees").accuracy, 1.0);
  EXPECT_EQ(task->score(test[489], "<think>x</think>\n\n10").accuracy, 0.0);
  const auto first = task->problems(Split::Test, 5, 0), shuffled = task->problems(Split::Test, 5, 9);
  EXPECT_EQ(first[4].question, test[4].question);
  EXPECT_NE(shuffled[0].question + shuffled[1].question, first[0].question + first[1].question);
}

TEST(Tasks, Gsm8kSingleFileAndBadLines) {
  const auto dir = std::filesystem::temp_directory_path() / "whale_gsm8k_test";
  std::filesystem::create_directories(dir);
  const std::string good = (dir / "good.jsonl").string(), bad = (dir / "bad.jsonl").string();
  {
    std::ofstream f(good);
    for (int i = 0; i < 40; ++i)
      f << R"({"question": "Q)" << i << R"(", "answer": "a <<1+1=2>>2\n#### )" << (i % 2 ? "-" : "") << i
        << R"(,000"})" << "\n";
  }
  auto task = make_task("gsm8k:path=" + good);
  const auto train = task->problems(Split::Train, -1, 0), test = task->problems(Split::Test, -1, 0);
  EXPECT_EQ(train.size() + test.size(), 40u);
  EXPECT_GT(train.size(), test.size());
  for (const auto& p : train) {
    const int i = std::stoi(p.question.substr(1));
    EXPECT_EQ(p.target, (i % 2 ? -1 : 1) * i * 1000);
    EXPECT_EQ(p.reference_trace, "<think>\na 2\n</think>\n\n" + p.answer);
  }
  {
    std::ofstream f(bad);
    f << R"({"question": "Q", "answer": "#### 5"})" << "\n" << R"({"question": "Q", "answer": "no marker"})" << "\n";
  }
  try {
    make_task("gsm8k:path=" + bad);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad + ":2"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}
