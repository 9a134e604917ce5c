// libFuzzer target for the rule-checked rewards: arbitrary model output must score 0 or 1 on
// accuracy and format, with no crash, hang, overflow (UBSan) or exception; the expression
// evaluator must refuse or give a value in lowest terms within its bounds.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string_view>

#include "rl/expr.h"
#include "rl/task.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void check_reward(const whale::rl::RewardResult& r) {
  check(r.accuracy == 0.0 || r.accuracy == 1.0);
  check(r.format == 0.0 || r.format == 1.0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace whale::rl;
  static const std::unique_ptr<Task> arith = make_task("arith:digits=3");
  static const std::unique_ptr<Task> countdown = make_task("countdown:numbers=4");
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  const ExprResult e = evaluate_expression(text);
  if (e.ok) {
    const ExprLimits lim;
    check(e.value.den > 0 && e.value.den <= lim.max_magnitude);
    check(e.value.num <= lim.max_magnitude && e.value.num >= -lim.max_magnitude);
    check(std::gcd(e.value.num, e.value.den) == 1);
  } else {
    check(!e.error.empty());
  }
  if (const auto n = parse_number(text)) check(n->den > 0);
  if (const auto n = last_number(text)) check(n->den > 0);
  const double f = format_reward(text);
  check(f == 0.0 || f == 1.0);

  Problem sum;
  sum.target = 579;
  sum.answer = "579";
  check_reward(arith->score(sum, text));
  Problem cd;
  cd.numbers = {3, 7, 25, 50};
  cd.target = 82;
  cd.answer = "82";
  check_reward(countdown->score(cd, text));
  return 0;
}
