// A compiled PCRE2 pattern (UTF + UCP, JIT when available) plus the per-thread state a match
// needs. The compiled code is shared read-only between threads; each thread owns a MatchState.
#pragma once
#include <pcre2.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace whale::tokenizer {

// Rewrites a Hugging Face (Rust/Oniguruma syntax) pattern into the PCRE2 pattern that matches
// what the JS reference (@lenml/tokenizers, a transformers.js port) matches:
//  - `\s` / `\S` use ECMAScript's whitespace set (ECMA-262 WhiteSpace + LineTerminator: it
//    includes U+FEFF but not U+0085 or U+180E, unlike PCRE2's UCP `\s`);
//  - the case-insensitive contraction group `(?i:'s|'t|...)` becomes the explicit
//    `[sS]`-style group that transformers.js substitutes (PROBLEMATIC_REGEX_MAP), so `'ſ`
//    (U+017F, which case-folds to `s`) is not a contraction.
std::string js_compatible_pattern(std::string_view hf_pattern);

struct MatchState;

class Regex {
 public:
  // Throws whale::Error naming `where` and PCRE2's message when the pattern does not compile.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Finds the first match in subject[start..]; returns false when there is none.
  bool find(std::string_view subject, size_t start, size_t& match_begin, size_t& match_end,
            MatchState& state) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

// Match data and JIT stack for one thread; large enough for any pattern in this library.
struct MatchState {
  MatchState();
  ~MatchState();
  MatchState(const MatchState&) = delete;
  MatchState& operator=(const MatchState&) = delete;
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
};

}  // namespace whale::tokenizer
