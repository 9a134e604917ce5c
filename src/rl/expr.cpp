#include "rl/expr.h"

#include <cstdlib>
#include <numeric>

namespace whale::rl {

std::string Rational::str() const {
  return den == 1 ? std::to_string(num) : std::to_string(num) + "/" + std::to_string(den);
}

namespace {

struct Refused {
  std::string why;
};

__int128 abs128(__int128 v) { return v < 0 ? -v : v; }

__int128 gcd128(__int128 a, __int128 b) {
  a = abs128(a);
  b = abs128(b);
  while (b != 0) {
    const __int128 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// Reduces num/den (den != 0) and checks both against the bound. Operands are below 2^63, so
// every product of two of them fits in __int128.
Rational make(__int128 num, __int128 den, int64_t bound) {
  if (den == 0) throw Refused{"division by zero"};
  if (den < 0) {
    num = -num;
    den = -den;
  }
  const __int128 g = gcd128(num, den);
  if (g > 1) {
    num /= g;
    den /= g;
  }
  if (abs128(num) > bound || den > bound) throw Refused{"a value exceeds the magnitude bound"};
  return Rational{int64_t(num), int64_t(den)};
}

Rational add(Rational a, Rational b, int64_t bound, int sign) {
  return make(__int128(a.num) * b.den + sign * __int128(b.num) * a.den, __int128(a.den) * b.den, bound);
}
Rational mul(Rational a, Rational b, int64_t bound) {
  return make(__int128(a.num) * b.num, __int128(a.den) * b.den, bound);
}
Rational divide(Rational a, Rational b, int64_t bound) {
  if (b.num == 0) throw Refused{"division by zero"};
  return make(__int128(a.num) * b.den, __int128(a.den) * b.num, bound);
}

class Parser {
 public:
  Parser(std::string text, const ExprLimits& limits, std::vector<Rational>& numbers)
      : s_(std::move(text)), lim_(limits), numbers_(numbers) {}

  Rational parse() {
    Rational v = expression();
    if (peek() != '\0') throw Refused{"unexpected '" + std::string(1, s_[pos_]) + "'"};
    return v;
  }

 private:
  struct DepthGuard {
    int& d;
    DepthGuard(int& depth, int max) : d(depth) {
      if (++d > max) throw Refused{"nesting is too deep"};
    }
    ~DepthGuard() { --d; }
  };

  // The next character after any spaces; literals read raw characters, so "1 2" is two numbers.
  char peek() {
    while (pos_ < s_.size() && s_[pos_] == ' ') ++pos_;
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  char raw() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }

  Rational expression() {
    Rational v = term();
    while (peek() == '+' || peek() == '-') {
      const int sign = s_[pos_++] == '+' ? 1 : -1;
      v = add(v, term(), lim_.max_magnitude, sign);
    }
    return v;
  }
  Rational term() {
    Rational v = unary();
    while (peek() == '*' || peek() == '/') {
      const char op = s_[pos_++];
      const Rational r = unary();
      v = op == '*' ? mul(v, r, lim_.max_magnitude) : divide(v, r, lim_.max_magnitude);
    }
    return v;
  }
  Rational unary() {
    if (peek() == '-' || peek() == '+') {
      DepthGuard guard(depth_, lim_.max_depth);
      const bool neg = s_[pos_++] == '-';
      Rational v = unary();
      return neg ? Rational{-v.num, v.den} : v;
    }
    return power();
  }
  // a ^ b binds tighter than unary minus on its left (-2^2 = -4) and is right-associative.
  Rational power() {
    Rational base = primary();
    if (peek() != '^') return base;
    ++pos_;
    DepthGuard guard(depth_, lim_.max_depth);
    const Rational e = unary();
    if (!e.is_integer()) throw Refused{"a non-integer exponent"};
    if (e.num > lim_.max_exponent || e.num < -lim_.max_exponent) throw Refused{"the exponent is too large"};
    Rational r{1, 1};
    for (int64_t i = 0; i < std::abs(e.num); ++i) r = mul(r, base, lim_.max_magnitude);
    return e.num < 0 ? divide(Rational{1, 1}, r, lim_.max_magnitude) : r;
  }
  Rational primary() {
    if (peek() == '(') {
      DepthGuard guard(depth_, lim_.max_depth);
      ++pos_;
      Rational v = expression();
      if (peek() != ')') throw Refused{"a '(' is not closed"};
      ++pos_;
      return v;
    }
    if (peek() >= '0' && peek() <= '9') return literal();
    if (pos_ >= s_.size()) throw Refused{"the expression ends too early"};
    throw Refused{"unexpected '" + std::string(1, s_[pos_]) + "'"};
  }
  Rational literal() {
    __int128 num = 0, den = 1;
    int digits = 0;
    for (; raw() >= '0' && raw() <= '9'; ++pos_) {
      if (++digits > lim_.max_literal_digits) throw Refused{"a number has too many digits"};
      num = num * 10 + (s_[pos_] - '0');
    }
    if (raw() == '.') {
      ++pos_;
      if (!(raw() >= '0' && raw() <= '9')) throw Refused{"a '.' without digits after it"};
      for (; raw() >= '0' && raw() <= '9'; ++pos_) {
        if (++digits > lim_.max_literal_digits) throw Refused{"a number has too many digits"};
        num = num * 10 + (s_[pos_] - '0');
        den *= 10;
      }
    }
    if (numbers_.size() >= lim_.max_numbers) throw Refused{"too many numbers"};
    const Rational v = make(num, den, lim_.max_magnitude);
    numbers_.push_back(v);
    return v;
  }

  std::string s_;
  const ExprLimits& lim_;
  std::vector<Rational>& numbers_;
  size_t pos_ = 0;
  int depth_ = 0;
};

// ASCII form of the expression: whitespace dropped, "**" -> '^', × ÷ − -> * / -.
bool normalise(std::string_view in, std::string& out, std::string& error) {
  for (size_t i = 0; i < in.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(in[i]);
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (!out.empty() && out.back() != ' ') out += ' ';  // kept: it separates literals
      continue;
    }
    if (c == '*' && i + 1 < in.size() && in[i + 1] == '*') {
      out += '^';
      ++i;
    } else if (in.substr(i, 2) == "\xC3\x97") {
      out += '*';
      ++i;
    } else if (in.substr(i, 2) == "\xC3\xB7") {
      out += '/';
      ++i;
    } else if (in.substr(i, 3) == "\xE2\x88\x92") {
      out += '-';
      i += 2;
    } else if ((c >= '0' && c <= '9') || c == '.' || c == '+' || c == '-' || c == '*' || c == '/' || c == '^' ||
               c == '(' || c == ')') {
      out += char(c);
    } else {
      error = "character " + std::to_string(int(c)) + " is not part of an expression";
      return false;
    }
  }
  return true;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

ExprResult evaluate_expression(std::string_view text, const ExprLimits& limits) {
  ExprResult r;
  if (text.size() > limits.max_length) {
    r.error = "longer than " + std::to_string(limits.max_length) + " characters";
    return r;
  }
  std::string ascii;
  if (!normalise(text, ascii, r.error)) return r;
  if (ascii.empty() || ascii == " ") {
    r.error = "empty expression";
    return r;
  }
  try {
    Parser p(std::move(ascii), limits, r.numbers);
    r.value = p.parse();
    r.ok = true;
  } catch (const Refused& e) {
    r.error = e.why;
    r.numbers.clear();
  }
  return r;
}

std::optional<Rational> parse_number(std::string_view t) {
  const size_t b = t.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return std::nullopt;
  const size_t e = t.find_last_not_of(" \t\r\n");
  t = t.substr(b, e - b + 1);
  bool neg = false;
  if (t.starts_with("\xE2\x88\x92")) {
    neg = true;
    t.remove_prefix(3);
  } else if (!t.empty() && (t[0] == '-' || t[0] == '+')) {
    neg = t[0] == '-';
    t.remove_prefix(1);
  }
  std::string digits;
  size_t i = 0;
  while (i < t.size() && is_digit(t[i]) && digits.size() <= 15) digits += t[i++];
  const size_t first_group = i;
  if (first_group == 0) return std::nullopt;
  while (i < t.size() && t[i] == ',') {  // thousands separators: exactly three digits per group
    if (first_group > 3 || i + 3 >= t.size() || !(is_digit(t[i + 1]) && is_digit(t[i + 2]) && is_digit(t[i + 3])))
      return std::nullopt;
    if (i + 4 < t.size() && is_digit(t[i + 4])) return std::nullopt;
    digits.append(t.substr(i + 1, 3));
    i += 4;
  }
  int64_t den = 1;
  if (i < t.size() && t[i] == '.') {
    ++i;
    if (i >= t.size() || !is_digit(t[i])) return std::nullopt;
    while (i < t.size() && is_digit(t[i])) {
      digits += t[i++];
      if (digits.size() > 15) return std::nullopt;
      den *= 10;
    }
  }
  if (i != t.size() || digits.size() > 15) return std::nullopt;
  const int64_t num = std::stoll(digits);
  const int64_t g = std::gcd(num, den);
  return Rational{(neg ? -num : num) / g, den / g};
}

std::optional<Rational> last_number(std::string_view t, std::string* found) {
  size_t best_b = std::string_view::npos, best_e = 0;
  size_t i = 0;
  while (i < t.size()) {
    if (!is_digit(t[i])) {
      ++i;
      continue;
    }
    size_t b = i, j = i;
    while (j < t.size() && is_digit(t[j])) ++j;
    if (j - b <= 3)  // thousands groups follow a lead of 1-3 digits
      while (j + 3 < t.size() && t[j] == ',' && is_digit(t[j + 1]) && is_digit(t[j + 2]) && is_digit(t[j + 3]) &&
             !(j + 4 < t.size() && is_digit(t[j + 4])))
        j += 4;
    if (j + 1 < t.size() && t[j] == '.' && is_digit(t[j + 1])) {
      ++j;
      while (j < t.size() && is_digit(t[j])) ++j;
    }
    // A minus sign counts when it does not follow a digit, letter or closing bracket ("3-5" is
    // two numbers, "x = -5" is one).
    if (b > 0 && t[b - 1] == '-') {
      const char p = b > 1 ? t[b - 2] : ' ';
      if (!(is_digit(p) || p == ')' || (p >= 'a' && p <= 'z') || (p >= 'A' && p <= 'Z'))) --b;
    } else if (b >= 3 && t.substr(b - 3, 3) == "\xE2\x88\x92") {
      b -= 3;
    }
    best_b = b;
    best_e = j;
    i = j;
  }
  if (best_b == std::string_view::npos) return std::nullopt;
  const std::string_view s = t.substr(best_b, best_e - best_b);
  if (found) *found = std::string(s);
  return parse_number(s);
}

}  // namespace whale::rl
