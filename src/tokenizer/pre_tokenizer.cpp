#include "tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace whale::tokenizer {
namespace {

// GPT-2's word pattern, used by ByteLevel when use_regex is true (transformers.js uses the
// same one, without the Oniguruma-only `(?i:` group).
constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

}  // namespace

SplitBehavior parse_split_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return SplitBehavior::Removed;
  if (name == "Isolated") return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return SplitBehavior::Contiguous;
  throw Error(where, "unknown Split behavior \"" + name +
                         "\" (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or "
                         "Contiguous)");
}

const char* split_behavior_name(SplitBehavior behavior) {
  switch (behavior) {
    case SplitBehavior::Removed: return "Removed";
    case SplitBehavior::Isolated: return "Isolated";
    case SplitBehavior::MergedWithPrevious: return "MergedWithPrevious";
    case SplitBehavior::MergedWithNext: return "MergedWithNext";
    case SplitBehavior::Contiguous: return "Contiguous";
  }
  return "?";
}

void PreTokenizer::add_regex_split(std::string_view pattern, SplitBehavior behavior, bool invert,
                                   const std::string& where) {
  if (byte_level_) throw Error(where, "a Split after ByteLevel is not supported");
  SplitRule rule;
  rule.source = std::string(pattern);
  rule.regex = std::make_unique<Regex>(js_compatible_pattern(pattern), where);
  rule.behavior = behavior;
  rule.invert = invert;
  rules_.push_back(std::move(rule));
}

void PreTokenizer::add_string_split(std::string_view literal, SplitBehavior behavior,
                                    bool invert, const std::string& where) {
  std::string escaped;
  for (char c : literal) {
    if (std::isalnum((unsigned char)c) || (unsigned char)c >= 0x80) {
      escaped += c;
    } else {
      escaped += '\\';
      escaped += c;
    }
  }
  if (byte_level_) throw Error(where, "a Split after ByteLevel is not supported");
  SplitRule rule;
  rule.source = std::string(literal);
  rule.regex = std::make_unique<Regex>(escaped, where);
  rule.behavior = behavior;
  rule.invert = invert;
  rules_.push_back(std::move(rule));
}

void PreTokenizer::add_byte_level(bool add_prefix_space, bool use_regex,
                                  const std::string& where) {
  if (byte_level_) throw Error(where, "ByteLevel appears twice");
  if (use_regex) add_regex_split(kGpt2Pattern, SplitBehavior::Isolated, false, where);
  byte_level_ = true;
  add_prefix_space_ = add_prefix_space;
}

void PreTokenizer::split(std::string_view text, std::vector<Span>& pieces,
                         PreTokenizeScratch& scratch) const {
  pieces.clear();
  if (text.empty()) return;
  // Spans hold 32-bit offsets to halve their size; callers cut text into documents long before.
  if (text.size() > UINT32_MAX) throw Error("pre-tokenizer", "a single text is longer than 4 GiB");
  pieces.push_back({0, uint32_t(text.size())});
  for (const SplitRule& rule : rules_) {
    scratch.next.clear();
    for (Span piece : pieces) split_one(rule, text, piece, scratch);
    pieces.swap(scratch.next);
  }
}

// Appends the pieces of `piece` under `rule` to scratch.next, following the Hugging Face
// tokenizers semantics of each behavior (tokenizers/src/tokenizer/normalizer.rs, split).
void PreTokenizer::split_one(const SplitRule& rule, std::string_view text, Span piece,
                             PreTokenizeScratch& scratch) const {
  // The piece is the whole subject, so lookaheads such as \s+(?!\S) see its end as the end.
  std::string_view subject = text.substr(piece.begin, piece.end - piece.begin);
  auto& segs = scratch.segments;
  segs.clear();
  size_t prev = 0, start = 0, mb, me;
  while (start <= subject.size() && rule.regex->find(subject, start, mb, me, scratch.match)) {
    if (prev < mb) segs.push_back({uint32_t(prev), uint32_t(mb), false});
    if (me > mb) {
      segs.push_back({uint32_t(mb), uint32_t(me), true});
      start = me;
    } else {
      // An empty match still cuts here (as in transformers.js); step one character on.
      if (me >= subject.size()) {
        prev = mb;
        break;
      }
      start = me + utf8_char_length(subject, me);
    }
    prev = me;
  }
  if (prev < subject.size()) segs.push_back({uint32_t(prev), uint32_t(subject.size()), false});
  if (rule.invert)
    for (auto& s : segs) s.is_match = !s.is_match;

  auto emit = [&](uint32_t b, uint32_t e) {
    if (e > b) scratch.next.push_back({piece.begin + b, piece.begin + e});
  };
  switch (rule.behavior) {
    case SplitBehavior::Isolated:
      for (auto& s : segs) emit(s.begin, s.end);
      break;
    case SplitBehavior::Removed:
      for (auto& s : segs)
        if (!s.is_match) emit(s.begin, s.end);
      break;
    case SplitBehavior::MergedWithPrevious:
    case SplitBehavior::Contiguous: {
      // Build merged ranges in place: a delimiter joins the piece before it (or, for
      // Contiguous, runs of equal kind join together).
      size_t first = scratch.next.size();
      bool previous_match = false;
      for (auto& s : segs) {
        bool join = rule.behavior == SplitBehavior::MergedWithPrevious
                        ? (s.is_match && !previous_match)
                        : (s.is_match == previous_match);
        if (join && scratch.next.size() > first) {
          scratch.next.back().end = piece.begin + s.end;
        } else {
          scratch.next.push_back({piece.begin + s.begin, piece.begin + s.end});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      size_t first = scratch.next.size();
      bool previous_match = false;
      for (size_t i = segs.size(); i-- > 0;) {
        auto& s = segs[i];
        if (s.is_match && !previous_match && scratch.next.size() > first) {
          scratch.next.back().begin = piece.begin + s.begin;
        } else {
          scratch.next.push_back({piece.begin + s.begin, piece.begin + s.end});
        }
        previous_match = s.is_match;
      }
      std::reverse(scratch.next.begin() + long(first), scratch.next.end());
      break;
    }
  }
}

}  // namespace whale::tokenizer
