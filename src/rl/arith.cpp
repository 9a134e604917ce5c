// Multi-digit arithmetic (+, -, *) with digit-by-digit worked traces a small model can imitate.
#include <algorithm>
#include <set>

#include "core/error.h"
#include "core/rng.h"
#include "rl/task_common.h"

namespace whale::rl {

namespace {

struct Operation {
  int64_t a, b;
  char op;
  int64_t result() const { return op == '+' ? a + b : op == '-' ? a - b : a * b; }
  std::string key() const { return std::to_string(a) + op + std::to_string(b); }
};

std::vector<int> digits_of(int64_t v) {  // least significant first
  std::vector<int> d;
  do {
    d.push_back(int(v % 10));
    v /= 10;
  } while (v > 0);
  return d;
}

// Column addition, one line per column from the right: "7+5=12", then "4+8+1=13" (carry in).
std::string add_trace(int64_t a, int64_t b) {
  const auto da = digits_of(a), db = digits_of(b);
  std::string t;
  int carry = 0;
  for (size_t i = 0; i < std::max(da.size(), db.size()); ++i) {
    const int x = i < da.size() ? da[i] : 0, y = i < db.size() ? db[i] : 0, s = x + y + carry;
    t += std::to_string(x) + "+" + std::to_string(y) + (carry ? "+1" : "") + "=" + std::to_string(s) + "\n";
    carry = s / 10;
  }
  return t;
}

// Column subtraction (a >= b): "15-7=8" borrows ten, "8-4-1=3" pays the borrow back.
std::string sub_trace(int64_t a, int64_t b) {
  const auto da = digits_of(a), db = digits_of(b);
  std::string t;
  int borrow = 0;
  for (size_t i = 0; i < da.size(); ++i) {
    const int x = da[i], y = i < db.size() ? db[i] : 0;
    const int next = x - y - borrow < 0 ? 1 : 0;
    const int d = x + 10 * next - y - borrow;
    t += std::to_string(x + 10 * next) + "-" + std::to_string(y) + (borrow ? "-1" : "") + "=" + std::to_string(d) + "\n";
    borrow = next;
  }
  return t;
}

// Long multiplication: one partial product per digit of b (with its place value), then the sum.
std::string mul_trace(int64_t a, int64_t b) {
  const auto db = digits_of(b);
  if (db.size() == 1) return std::to_string(a) + "*" + std::to_string(b) + "=" + std::to_string(a * b) + "\n";
  std::string t, sum;
  int64_t place = 1;
  for (int d : db) {
    const int64_t p = a * d * place;
    t += std::to_string(a) + "*" + std::to_string(d * place) + "=" + std::to_string(p) + "\n";
    if (!sum.empty()) sum += '+';
    sum += std::to_string(p);
    place *= 10;
  }
  return t + sum + "=" + std::to_string(a * b) + "\n";
}

class ArithTask : public Task {
 public:
  ArithTask(int64_t digits, std::string ops) : digits_(digits), ops_(std::move(ops)) {
    lo_ = digits_ == 1 ? 0 : 1;
    for (int64_t i = 1; i < digits_; ++i) lo_ *= 10;
    hi_ = lo_ == 0 ? 9 : lo_ * 10 - 1;
  }
  std::string name() const override { return "arith"; }

  std::vector<Problem> problems(Split split, int64_t count, uint64_t seed) const override {
    Rng rng(stream_seed("arith:" + std::to_string(digits_) + ops_, split, seed));
    std::vector<Operation> ops;
    const int64_t range = hi_ - lo_ + 1;
    if (range * range * int64_t(ops_.size()) <= 200000) {
      // Small space: enumerate the split, then a seeded shuffle, so no problem repeats.
      for (char op : ops_)
        for (int64_t a = lo_; a <= hi_; ++a)
          for (int64_t b = lo_; b <= hi_; ++b) {
            if (op == '-' && a < b) continue;
            Operation o{a, b, op};
            if (is_test_key(o.key()) == (split == Split::Test)) ops.push_back(o);
          }
      for (size_t i = ops.size(); i > 1; --i) std::swap(ops[i - 1], ops[size_t(rng.next() % i)]);
      if (count > 0 && size_t(count) < ops.size()) ops.resize(size_t(count));
    } else {
      std::set<std::string> seen;
      const int64_t want = count > 0 ? count : 1000;
      while (int64_t(ops.size()) < want) {
        Operation o{lo_ + int64_t(rng.next() % uint64_t(range)), lo_ + int64_t(rng.next() % uint64_t(range)),
                    ops_[size_t(rng.next() % ops_.size())]};
        if (o.op == '-' && o.a < o.b) std::swap(o.a, o.b);
        if (is_test_key(o.key()) != (split == Split::Test) || !seen.insert(o.key()).second) continue;
        ops.push_back(o);
      }
    }
    std::vector<Problem> out;
    const std::string prefix = std::string("arith-") + (split == Split::Test ? "test-" : "train-");
    for (const auto& o : ops) {
      Problem p;
      p.id = prefix + std::to_string(out.size());
      p.question = "What is " + std::to_string(o.a) + " " + o.op + " " + std::to_string(o.b) + "?";
      p.answer = std::to_string(o.result());
      p.numbers = {o.a, o.b};
      p.target = o.result();
      const std::string work = o.op == '+' ? add_trace(o.a, o.b) : o.op == '-' ? sub_trace(o.a, o.b) : mul_trace(o.a, o.b);
      p.reference_trace = "<think>\n" + work + "</think>\n\n" + p.answer;
      out.push_back(std::move(p));
    }
    return out;
  }

  RewardResult score(const Problem& problem, std::string_view completion) const override {
    return score_numeric(completion, Rational{problem.target, 1});
  }

 private:
  int64_t digits_;
  std::string ops_;
  int64_t lo_ = 0, hi_ = 9;
};

}  // namespace

std::unique_ptr<Task> make_arith_task(const TaskOptions& options, const std::string& spec) {
  check_option_keys(options, {"digits", "ops"}, spec);
  const int64_t digits = option_int(options, "digits", 2, 1, 9, spec);
  std::string ops;
  const std::string given = options.count("ops") ? options.at("ops") : "+-*";
  for (char c : given) {
    const char op = c == 'x' ? '*' : c;
    if (op != '+' && op != '-' && op != '*')
      throw Error("task '" + spec + "'", "ops=" + given + " may only hold + - * (or x)");
    if (ops.find(op) == std::string::npos) ops += op;
  }
  if (ops.empty()) throw Error("task '" + spec + "'", "ops is empty (expected some of + - *)");
  return std::make_unique<ArithTask>(digits, ops);
}

}  // namespace whale::rl
