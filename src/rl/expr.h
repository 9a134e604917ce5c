// Numbers and arithmetic expressions in model output, read safely: exact rational arithmetic on
// bounded 64-bit integers, with refusals (never crashes, hangs or overflow) for long inputs, deep
// nesting, huge literals, huge exponents, division by zero and results that leave the bounds.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace whale::rl {

// num / den in lowest terms, den > 0.
struct Rational {
  int64_t num = 0, den = 1;
  bool operator==(const Rational& o) const { return num == o.num && den == o.den; }
  bool is_integer() const { return den == 1; }
  std::string str() const;  // "7", "-3/4"
};

struct ExprLimits {
  size_t max_length = 512;      // characters of input
  int max_depth = 32;           // nested parentheses / unary operators
  int max_literal_digits = 15;  // digits in one literal (before and after a decimal point)
  int max_exponent = 64;        // |n| in a ^ n (or a ** n); n must be an integer
  int64_t max_magnitude = int64_t(1) << 53;  // |numerator| and denominator of every intermediate
  size_t max_numbers = 64;      // literals in one expression
};

struct ExprResult {
  bool ok = false;
  Rational value;
  std::string error;              // why it was refused, when !ok
  std::vector<Rational> numbers;  // the literals, in order of appearance
};

// Evaluates + - * / ^ (also ** and the Unicode × ÷ −), unary minus and parentheses over integer
// and decimal literals. Whitespace is ignored. Never throws.
ExprResult evaluate_expression(std::string_view text, const ExprLimits& limits = {});

// A plain number: optional sign, digits with optional thousands separators ("1,234"), optional
// decimal part, surrounding whitespace allowed. nullopt if it is anything else or out of bounds.
std::optional<Rational> parse_number(std::string_view text);

// The last number written in text ("the answer is $1,234." gives 1234; "-7" gives -7), or nullopt.
// `found` (optional) receives the number's text as written.
std::optional<Rational> last_number(std::string_view text, std::string* found = nullptr);

}  // namespace whale::rl
