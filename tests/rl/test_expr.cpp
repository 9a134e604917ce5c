// The safe expression evaluator and number readers: hand-derived values and refusals.
#include <gtest/gtest.h>

#include "rl/expr.h"

using namespace whale::rl;

namespace {

Rational eval_ok(const std::string& s) {
  const ExprResult r = evaluate_expression(s);
  EXPECT_TRUE(r.ok) << s << ": " << r.error;
  return r.value;
}

void refused(const std::string& s, const std::string& why_part) {
  const ExprResult r = evaluate_expression(s);
  EXPECT_FALSE(r.ok) << s.substr(0, 60) << " gave " << r.value.str();
  EXPECT_NE(r.error.find(why_part), std::string::npos) << s.substr(0, 60) << ": " << r.error;
}

}  // namespace

TEST(Expr, HandDerivedValues) {
  EXPECT_EQ(eval_ok("1+2*3"), (Rational{7, 1}));
  EXPECT_EQ(eval_ok("(1 + 2) * 3"), (Rational{9, 1}));
  EXPECT_EQ(eval_ok("2^10"), (Rational{1024, 1}));
  EXPECT_EQ(eval_ok("2**3**2"), (Rational{512, 1}));  // right-associative: 2^9
  EXPECT_EQ(eval_ok("-2^2"), (Rational{-4, 1}));
  EXPECT_EQ(eval_ok("2^-2"), (Rational{1, 4}));
  EXPECT_EQ(eval_ok("7/2"), (Rational{7, 2}));
  EXPECT_EQ(eval_ok("1/3 + 1/6"), (Rational{1, 2}));
  EXPECT_EQ(eval_ok("10-4-3"), (Rational{3, 1}));  // left-associative
  EXPECT_EQ(eval_ok("3 \xC3\x97 4 \xC3\xB7 6 \xE2\x88\x92 1"), (Rational{1, 1}));  // 3 × 4 ÷ 6 − 1
  EXPECT_EQ(eval_ok("1.5*4"), (Rational{6, 1}));
  EXPECT_EQ(eval_ok("--3"), (Rational{3, 1}));
  EXPECT_EQ(eval_ok("(50-25)*3+7"), (Rational{82, 1}));
  const ExprResult r = evaluate_expression("(50-25)*3+7");
  ASSERT_EQ(r.numbers.size(), 4u);
  EXPECT_EQ(r.numbers[0].num, 50);
  EXPECT_EQ(r.numbers[3].num, 7);
  EXPECT_EQ((Rational{-3, 4}).str(), "-3/4");
}

TEST(Expr, RefusesSafely) {
  refused("1/0", "division by zero");
  refused("1/(2-2)", "division by zero");
  refused("0^-1", "division by zero");
  refused("2^1000000", "exponent");
  refused("2^62", "magnitude");                  // 2^62 > the 2^53 bound
  refused("999999999*999999999", "magnitude");   // would overflow int64 without the bound
  refused("2^0.5", "non-integer exponent");
  refused("12345678901234567890", "digits");
  refused(std::string(2000, '(') + "1" + std::string(2000, ')'), "longer");
  refused(std::string(100, '(') + "1" + std::string(100, ')'), "deep");
  refused(std::string(100, '-') + "1", "deep");
  refused(std::string(255, '1').insert(1, "+"), "digits");
  refused("", "empty");
  refused("abc", "not part of an expression");
  refused("1+", "ends too early");
  refused("((1)", "not closed");
  refused("1.", "'.'");
  refused("1 2", "unexpected");
  std::string many;
  for (int i = 0; i < 100; ++i) many += "1+";
  refused(many + "1", "too many numbers");
  // Nested but within the limits still works.
  EXPECT_EQ(eval_ok(std::string(20, '(') + "6" + std::string(20, ')')), (Rational{6, 1}));
}

TEST(Expr, ParseNumber) {
  EXPECT_EQ(parse_number("1,234"), (Rational{1234, 1}));
  EXPECT_EQ(parse_number(" 12,345,678 "), (Rational{12345678, 1}));
  EXPECT_EQ(parse_number("-5"), (Rational{-5, 1}));
  EXPECT_EQ(parse_number("\xE2\x88\x92" "5"), (Rational{-5, 1}));
  EXPECT_EQ(parse_number("+7"), (Rational{7, 1}));
  EXPECT_EQ(parse_number("3.50"), (Rational{7, 2}));
  EXPECT_EQ(parse_number("18.00"), (Rational{18, 1}));
  EXPECT_FALSE(parse_number("1,23"));
  EXPECT_FALSE(parse_number("1234,567"));
  EXPECT_FALSE(parse_number("1,2345"));
  EXPECT_FALSE(parse_number("12a"));
  EXPECT_FALSE(parse_number(""));
  EXPECT_FALSE(parse_number("-"));
  EXPECT_FALSE(parse_number("1."));
  EXPECT_FALSE(parse_number(std::string(1000, '9')));
}

TEST(Expr, LastNumber) {
  std::string found;
  EXPECT_EQ(last_number("The answer is $1,234.", &found), (Rational{1234, 1}));
  EXPECT_EQ(found, "1,234");
  EXPECT_EQ(last_number("x = -5"), (Rational{-5, 1}));
  EXPECT_EQ(last_number("3-5"), (Rational{5, 1}));
  EXPECT_EQ(last_number("costs 18.00 dollars"), (Rational{18, 1}));
  EXPECT_EQ(last_number("1, 2, 3"), (Rational{3, 1}));
  EXPECT_EQ(last_number("(-7)"), (Rational{-7, 1}));
  EXPECT_FALSE(last_number("no numbers here"));
  EXPECT_FALSE(last_number(""));
  EXPECT_FALSE(last_number(std::string(100000, '9')));  // too many digits: not a number, no hang
}
