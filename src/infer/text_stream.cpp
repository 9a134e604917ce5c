#include "infer/text_stream.h"

#include <span>
#include <string_view>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace whale {
namespace {

constexpr std::string_view kOpen = "<think>", kClose = "</think>", kSpace = " \t\r\n";

// Length of the unfinished UTF-8 sequence ending `bytes` that more bytes could still complete
// into a well-formed character (Unicode 15, table 3-7), or 0.
size_t incomplete_tail(const std::string& bytes) {
  const size_t n = bytes.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto b0 = static_cast<unsigned char>(bytes[n - back]);
    if (b0 < 0x80) return 0;
    if (b0 < 0xC0) continue;  // continuation byte: look further back for the lead
    const size_t need = b0 >= 0xC2 && b0 <= 0xDF ? 2 : b0 >= 0xE0 && b0 <= 0xEF ? 3 : b0 >= 0xF0 && b0 <= 0xF4 ? 4 : 0;
    if (need == 0 || back >= need) return 0;
    if (back >= 2) {
      const auto b1 = static_cast<unsigned char>(bytes[n - back + 1]);
      unsigned char lo = 0x80, hi = 0xBF;
      if (b0 == 0xE0) lo = 0xA0;
      if (b0 == 0xED) hi = 0x9F;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;
      if (b1 < lo || b1 > hi) return 0;
    }
    if (back >= 3) {
      const auto b2 = static_cast<unsigned char>(bytes[n - back + 2]);
      if (b2 < 0x80 || b2 > 0xBF) return 0;
    }
    return back;
  }
  return 0;
}

std::string_view trim_trailing_newlines(std::string_view s) {
  size_t e = s.find_last_not_of('\n');
  return e == std::string_view::npos ? std::string_view{} : s.substr(0, e + 1);
}

}  // namespace

TextStream::TextStream(const tokenizer::Tokenizer& tok, bool starts_in_think, std::vector<std::string> stop)
    : tok_(tok), starts_in_think_(starts_in_think), stop_(std::move(stop)), state_(State::Start) {
  for (const auto& s : stop_)
    if (s.empty()) throw Error("stop", "stop strings must not be empty");
}

std::string TextStream::complete_utf8(bool final) {
  const size_t keep = final ? 0 : incomplete_tail(bytes_);
  std::string_view ready(bytes_.data(), bytes_.size() - keep);
  std::string text = tokenizer::is_valid_utf8(ready) ? std::string(ready) : tokenizer::sanitize_utf8(ready);
  bytes_.erase(0, ready.size());
  return text;
}

std::string TextStream::filter_stops(std::string text, bool final) {
  if (stop_.empty()) return text;
  std::string buf = std::move(stop_held_);
  stop_held_.clear();
  buf += text;
  // The stop string that completes first wins (on a tie, the one that started first), as it
  // would when checking after every token.
  size_t best_end = std::string::npos, best_pos = 0;
  for (const auto& s : stop_) {
    size_t p = buf.find(s);
    if (p == std::string::npos) continue;
    size_t end = p + s.size();
    if (end < best_end || (end == best_end && p < best_pos)) best_end = end, best_pos = p;
  }
  if (best_end != std::string::npos) {
    stopped_ = true;
    buf.resize(best_pos);
    return buf;
  }
  if (final) return buf;
  // Hold the longest suffix that could still grow into a stop string.
  size_t hold = 0;
  for (const auto& s : stop_) {
    for (size_t k = std::min(buf.size(), s.size() - 1); k > hold; --k) {
      if (std::string_view(buf).substr(buf.size() - k) == std::string_view(s).substr(0, k)) {
        hold = k;
        break;
      }
    }
  }
  stop_held_ = buf.substr(buf.size() - hold);
  buf.resize(buf.size() - hold);
  return buf;
}

void TextStream::route(const std::string& text, bool final, TextDelta& out) {
  std::string pending = std::move(tag_held_);
  tag_held_.clear();
  pending += text;
  std::string_view p = pending;
  while (!p.empty() || final) {
    switch (state_) {
      case State::Start: {
        // split_reasoning skips leading whitespace before an explicit "<think>".
        size_t f = p.find_first_not_of(kSpace);
        if (f != std::string_view::npos) {
          std::string_view rest = p.substr(f);
          if (rest.starts_with(kOpen)) {
            p = rest.substr(kOpen.size());
            state_ = State::ReasoningLead;
            continue;
          }
          if (!final && kOpen.starts_with(rest)) {
            tag_held_ = std::string(p);
            return;
          }
        } else if (!final) {
          tag_held_ = std::string(p);
          return;
        }
        state_ = starts_in_think_ ? State::ReasoningLead : State::Content;  // no "<think>": reread p
        continue;
      }
      case State::ReasoningLead: {
        size_t f = p.find_first_not_of('\n');
        if (f == std::string_view::npos) return;  // leading newlines of the reasoning are dropped
        p = p.substr(f);
        state_ = State::Reasoning;
        continue;
      }
      case State::Reasoning: {
        size_t close = p.find(kClose);
        if (close != std::string_view::npos) {
          out.reasoning += trim_trailing_newlines(p.substr(0, close));
          p = p.substr(close + kClose.size());
          state_ = State::ContentLead;
          continue;
        }
        if (final) {
          out.reasoning += trim_trailing_newlines(p);
          return;
        }
        // Hold a possible start of "</think>" and the newlines before it: they are dropped if
        // the reasoning ends there.
        size_t hold = 0;
        for (size_t k = std::min(p.size(), kClose.size() - 1); k > 0; --k)
          if (p.substr(p.size() - k) == kClose.substr(0, k)) {
            hold = k;
            break;
          }
        size_t cut = p.size() - hold;
        while (cut > 0 && p[cut - 1] == '\n') --cut;
        out.reasoning += p.substr(0, cut);
        tag_held_ = std::string(p.substr(cut));
        return;
      }
      case State::ContentLead: {
        size_t f = p.find_first_not_of(kSpace);
        if (f == std::string_view::npos) return;  // whitespace after "</think>" is dropped
        p = p.substr(f);
        state_ = State::Content;
        continue;
      }
      case State::Content:
        out.content += p;
        return;
    }
  }
}

TextDelta TextStream::push(int32_t token) {
  TextDelta out;
  if (stopped_ || finished_) return out;
  const int id = token;
  bytes_ += tok_.decode_bytes(std::span<const int>(&id, 1), /*skip_special_tokens=*/true);
  std::string text = filter_stops(complete_utf8(false), false);
  // A stop string ends the output: nothing more will come, so nothing needs holding.
  route(text, stopped_, out);
  return out;
}

TextDelta TextStream::finish() {
  TextDelta out;
  if (finished_) return out;
  finished_ = true;
  if (stopped_) return out;
  route(filter_stops(complete_utf8(true), true), true, out);
  return out;
}

}  // namespace whale
