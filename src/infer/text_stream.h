// Streaming detokenizer shared by `whale chat`, `whale generate` and the server: turns
// generated token ids into UTF-8 text deltas, split into reasoning (R1's <think>...</think>)
// and content, and stops at stop strings.
//
// Concatenating every delta of push() and finish() gives exactly what decoding all tokens at
// once and splitting with tokenizer::split_reasoning gives (after cutting the text at the
// first stop string), with one deliberate difference: when generation does not start inside
// <think> and the output does not open with "<think>", all of it is content, even if a
// "</think>" turns up later (split_reasoning would retroactively make the text before it
// reasoning, which a stream cannot take back).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace whale {

struct TextDelta {
  std::string reasoning, content;
  bool empty() const { return reasoning.empty() && content.empty(); }
};

class TextStream {
 public:
  // starts_in_think: the prompt ended in "<think>\n" (DeepSeek-R1's generation prompt).
  // stop: strings that end generation when they appear in the output (reasoning or content);
  // they are not emitted. Special tokens (BOS, EOS, padding) decode to nothing.
  TextStream(const tokenizer::Tokenizer& tok, bool starts_in_think, std::vector<std::string> stop = {});

  // Text that became certain with this token. Never ends inside a UTF-8 character, a tag or a
  // possible stop string. After a stop string was seen, returns nothing.
  TextDelta push(int32_t token);
  // Flushes what was held back (an unfinished UTF-8 sequence becomes U+FFFD).
  TextDelta finish();
  bool stopped() const { return stopped_; }

 private:
  enum class State { Start, ReasoningLead, Reasoning, ContentLead, Content };
  std::string complete_utf8(bool final);        // bytes_ -> sanitized text ready for the stop filter
  std::string filter_stops(std::string text, bool final);  // text before any stop string
  void route(const std::string& text, bool final, TextDelta& out);  // tag state machine

  const tokenizer::Tokenizer& tok_;
  bool starts_in_think_;
  std::vector<std::string> stop_;
  std::string bytes_;     // decoded bytes not yet complete UTF-8
  std::string stop_held_; // text that may be the start of a stop string
  std::string tag_held_;  // text that may be a tag, or newlines that may end the reasoning
  State state_;
  bool stopped_ = false, finished_ = false;
};

}  // namespace whale
