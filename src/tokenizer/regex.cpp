#include "tokenizer/regex.h"

#include "core/error.h"

namespace whale::tokenizer {
namespace {

// ECMA-262 WhiteSpace and LineTerminator code points: what JS `\s` matches.
constexpr const char* kJsSpaceSet =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}";

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
}

}  // namespace

std::string js_compatible_pattern(std::string_view hf_pattern) {
  std::string p(hf_pattern);
  replace_all(p, "(?i:'s|'t|'re|'ve|'m|'ll|'d)",
              "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))");
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char n = p[i + 1];
      ++i;
      if (n == 's') {
        out += in_class ? std::string(kJsSpaceSet) : "[" + std::string(kJsSpaceSet) + "]";
      } else if (n == 'S' && !in_class) {
        out += "[^" + std::string(kJsSpaceSet) + "]";
      } else {
        out += c;
        out += n;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& pattern, const std::string& where) : pattern_(pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                        PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (!code_) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof message);
    throw Error(where, "invalid regex /" + pattern + "/ at offset " +
                           std::to_string(error_offset) + ": " +
                           reinterpret_cast<const char*>(message));
  }
  jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(code_); }

bool Regex::find(std::string_view subject, size_t start, size_t& match_begin, size_t& match_end,
                 MatchState& state) const {
  auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  // Inputs are sanitized to valid UTF-8 before they get here, so the check can be skipped.
  int rc = jit_ ? pcre2_jit_match(code_, s, subject.size(), start, PCRE2_NO_UTF_CHECK,
                                  state.data, state.context)
                : pcre2_match(code_, s, subject.size(), start, PCRE2_NO_UTF_CHECK, state.data,
                              state.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(rc, message, sizeof message);
    throw Error("regex /" + pattern_ + "/", reinterpret_cast<const char*>(message));
  }
  PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
  match_begin = ovector[0];
  match_end = ovector[1];
  return true;
}

MatchState::MatchState() {
  data = pcre2_match_data_create(16, nullptr);
  context = pcre2_match_context_create(nullptr);
  // Long runs (a megabyte of spaces) need more than the 32 KiB default JIT stack.
  jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
  pcre2_jit_stack_assign(context, nullptr, jit_stack);
}

MatchState::~MatchState() {
  pcre2_jit_stack_free(jit_stack);
  pcre2_match_context_free(context);
  pcre2_match_data_free(data);
}

}  // namespace whale::tokenizer
