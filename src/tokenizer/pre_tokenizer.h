// Pre-tokenization: cuts normalized text into the pieces that BPE encodes independently.
// Supports tokenizer.json's Split (Regex or String pattern, every behavior, invert) in a
// Sequence, ending in ByteLevel (whose optional GPT-2 regex is one more Split).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/regex.h"

namespace whale::tokenizer {

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// A byte range [begin, end) of the text being pre-tokenized.
struct Span {
  uint32_t begin, end;
};

struct SplitRule {
  std::unique_ptr<Regex> regex;
  std::string source;  // the pattern as written in tokenizer.json, for `info`
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
};

// Per-thread state for PreTokenizer::split.
struct PreTokenizeScratch {
  MatchState match;
  std::vector<Span> next;
  struct Segment {
    uint32_t begin, end;
    bool is_match;
  };
  std::vector<Segment> segments;
};

class PreTokenizer {
 public:
  // `where` names the JSON field for error messages.
  void add_regex_split(std::string_view pattern, SplitBehavior behavior, bool invert,
                       const std::string& where);
  void add_string_split(std::string_view literal, SplitBehavior behavior, bool invert,
                        const std::string& where);
  // ByteLevel: with use_regex, GPT-2's word regex splits first.
  void add_byte_level(bool add_prefix_space, bool use_regex, const std::string& where);

  // Replaces `pieces` with the pieces of text[0..size).
  void split(std::string_view text, std::vector<Span>& pieces, PreTokenizeScratch& scratch) const;

  bool byte_level() const { return byte_level_; }
  bool add_prefix_space() const { return add_prefix_space_; }
  const std::vector<SplitRule>& rules() const { return rules_; }

 private:
  void split_one(const SplitRule& rule, std::string_view text, Span piece,
                 PreTokenizeScratch& scratch) const;
  std::vector<SplitRule> rules_;
  bool byte_level_ = false;
  bool add_prefix_space_ = false;
};

SplitBehavior parse_split_behavior(const std::string& name, const std::string& where);
const char* split_behavior_name(SplitBehavior behavior);

}  // namespace whale::tokenizer
