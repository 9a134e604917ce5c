// Added (and special) tokens: found in the raw text before normalization and
// pre-tokenization, so "<｜User｜>" is one id wherever it appears.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/regex.h"

namespace whale::tokenizer {

struct AddedToken {
  int id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false, rstrip = false;        // eat whitespace on that side
  bool single_word = false, normalized = false;  // kept for `info`; see docs/tokenizer.md
};

// One stretch of input: either plain text or an added token.
struct Section {
  std::string_view text;
  int added_index = -1;  // index into AddedTokens::tokens(), or -1 for plain text
};

class AddedTokens {
 public:
  AddedTokens();
  void add(AddedToken token);
  // Cuts `text` at added tokens, longest match first at each position, scanning left to right
  // (transformers.js DictionarySplitter), then applies lstrip/rstrip to the neighbours.
  void split(std::string_view text, std::vector<Section>& out, MatchState& match) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  const AddedToken* find_by_id(int id) const;
  const AddedToken* find_by_content(std::string_view content) const;

 private:
  struct Node {
    std::unordered_map<unsigned char, int> children;
    int token = -1;
  };
  std::vector<AddedToken> tokens_;
  std::vector<Node> trie_;
  bool first_byte_[256] = {};
  std::unordered_map<int, int> by_id_;
  Regex leading_space_, trailing_space_;  // JS trimStart / trimEnd whitespace
};

}  // namespace whale::tokenizer
