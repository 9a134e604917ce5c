// Countdown (TinyZero's R1-Zero task): reach a target with + - * / using each number once.
// Targets are picked among the values an exhaustive search reaches, so every instance is
// solvable and ships with the expression the search found.
#include <algorithm>
#include <map>
#include <set>

#include "core/error.h"
#include "core/rng.h"
#include "rl/task_common.h"

namespace whale::rl {

namespace {

struct Item {
  int64_t value;
  std::string expr;   // fully parenthesised where needed
  std::string steps;  // "50-25=25\n..." one line per operation
  bool compound;
};

// Every value reachable by combining all items with + - * / (exact, positive intermediates,
// as in the game); the first expression found for each value is kept.
void search(std::vector<Item>& items, std::map<int64_t, Item>& reached) {
  if (items.size() == 1) {
    reached.emplace(items[0].value, items[0]);
    return;
  }
  for (size_t i = 0; i < items.size(); ++i)
    for (size_t j = 0; j < items.size(); ++j) {
      if (i == j) continue;
      const Item a = items[i], b = items[j];
      const auto wrap = [](const Item& x) { return x.compound ? "(" + x.expr + ")" : x.expr; };
      for (char op : std::string("+-*/")) {
        if ((op == '+' || op == '*') && i > j) continue;  // commutative: one order is enough
        int64_t v;
        if (op == '+') v = a.value + b.value;
        else if (op == '-') v = a.value - b.value;
        else if (op == '*') v = a.value * b.value;
        else v = b.value != 0 && a.value % b.value == 0 ? a.value / b.value : -1;
        if (v <= 0) continue;
        Item c{v, wrap(a) + op + wrap(b),
               a.steps + b.steps + std::to_string(a.value) + op + std::to_string(b.value) + "=" + std::to_string(v) + "\n",
               true};
        std::vector<Item> next;
        for (size_t k = 0; k < items.size(); ++k)
          if (k != i && k != j) next.push_back(items[k]);
        next.push_back(std::move(c));
        search(next, reached);
      }
    }
}

std::string numbers_text(const std::vector<int64_t>& n) {
  std::string s;
  for (size_t i = 0; i < n.size(); ++i) s += (i ? ", " : "") + std::to_string(n[i]);
  return s;
}

class CountdownTask : public Task {
 public:
  CountdownTask(int64_t count, int64_t max_number, int64_t target_min, int64_t target_max)
      : count_(count), max_number_(max_number), target_min_(target_min), target_max_(target_max) {}
  std::string name() const override { return "countdown"; }

  std::vector<Problem> problems(Split split, int64_t count, uint64_t seed) const override {
    Rng rng(stream_seed("countdown:" + std::to_string(count_) + ":" + std::to_string(max_number_), split, seed));
    std::vector<Problem> out;
    std::set<std::string> seen;
    const int64_t want = count > 0 ? count : 1000;
    int64_t attempts = 0;
    while (int64_t(out.size()) < want && attempts++ < want * 200 + 1000) {
      std::vector<int64_t> nums;
      for (int64_t i = 0; i < count_; ++i) nums.push_back(1 + int64_t(rng.next() % uint64_t(max_number_)));
      std::vector<Item> items;
      for (int64_t n : nums) items.push_back({n, std::to_string(n), "", false});
      std::map<int64_t, Item> reached;
      search(items, reached);
      std::vector<const Item*> candidates;
      for (const auto& [v, item] : reached)
        if (v >= target_min_ && v <= target_max_) candidates.push_back(&item);
      if (candidates.empty()) continue;
      const Item& pick = *candidates[size_t(rng.next() % candidates.size())];
      std::vector<int64_t> sorted = nums;
      std::sort(sorted.begin(), sorted.end());
      const std::string key = numbers_text(sorted) + "->" + std::to_string(pick.value);
      if (is_test_key(key) != (split == Split::Test) || !seen.insert(key).second) continue;
      Problem p;
      p.id = std::string("countdown-") + (split == Split::Test ? "test-" : "train-") + std::to_string(out.size());
      p.numbers = nums;
      p.target = pick.value;
      p.answer = std::to_string(pick.value);
      p.question = "Using the numbers " + numbers_text(nums) + ", make " + p.answer +
                   ". Use each number exactly once, with + - * / and parentheses. Answer with the expression.";
      p.reference_trace = "<think>\n" + pick.steps + "</think>\n\n" + pick.expr;
      out.push_back(std::move(p));
    }
    return out;
  }

  RewardResult score(const Problem& problem, std::string_view completion) const override {
    RewardResult r;
    r.format = format_reward(completion);
    std::string_view answer = answer_part(completion);
    answer = answer.substr(0, answer.find('\n'));  // the expression is the answer's first line
    answer = answer.substr(0, answer.find('='));   // "(50-25)*3+7 = 82" names its value too
    r.extracted = std::string(answer.substr(0, 200));
    const ExprResult e = evaluate_expression(answer);
    if (!e.ok || e.value != Rational{problem.target, 1}) return r;
    std::vector<int64_t> used, want = problem.numbers;
    for (const Rational& n : e.numbers) {
      if (!n.is_integer()) return r;
      used.push_back(n.num);
    }
    std::sort(used.begin(), used.end());
    std::sort(want.begin(), want.end());
    r.accuracy = used == want ? 1.0 : 0.0;
    return r;
  }

 private:
  int64_t count_, max_number_, target_min_, target_max_;
};

}  // namespace

std::unique_ptr<Task> make_countdown_task(const TaskOptions& options, const std::string& spec) {
  check_option_keys(options, {"numbers", "max", "target_min", "target_max"}, spec);
  const int64_t n = option_int(options, "numbers", 4, 2, 5, spec);
  const int64_t max_number = option_int(options, "max", 50, 1, 1000, spec);
  const int64_t tmin = option_int(options, "target_min", 10, 1, 1000000, spec);
  const int64_t tmax = option_int(options, "target_max", 100, tmin, 1000000, spec);
  return std::make_unique<CountdownTask>(n, max_number, tmin, tmax);
}

}  // namespace whale::rl
