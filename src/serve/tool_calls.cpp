#include "serve/tool_calls.h"

namespace whale::serve {

const std::string kToolCallsBegin = "<｜tool▁calls▁begin｜>", kToolCallsEnd = "<｜tool▁calls▁end｜>",
                  kToolCallBegin = "<｜tool▁call▁begin｜>", kToolCallEnd = "<｜tool▁call▁end｜>",
                  kToolSep = "<｜tool▁sep｜>";

namespace {

std::string_view trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// One call's text between <｜tool▁call▁begin｜> and <｜tool▁call▁end｜>.
bool parse_call(std::string_view body, ParsedToolCall& out) {
  size_t sep = body.find(kToolSep);
  if (sep == std::string_view::npos) return false;
  std::string_view rest = body.substr(sep + kToolSep.size());
  size_t nl = rest.find('\n');
  std::string_view name = trim(rest.substr(0, nl));
  if (name.empty()) return false;
  out.name = std::string(name);
  std::string_view args = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
  args = trim(args);
  if (args.starts_with("```json")) args.remove_prefix(7);
  else if (args.starts_with("```")) args.remove_prefix(3);
  if (args.ends_with("```")) args.remove_suffix(3);
  out.arguments = std::string(trim(args));
  return true;
}

}  // namespace

std::vector<ParsedToolCall> ToolCallParser::drain(bool final) {
  std::vector<ParsedToolCall> calls;
  for (;;) {
    size_t begin = buffer_.find(kToolCallBegin);
    if (begin == std::string::npos) break;
    size_t end = buffer_.find(kToolCallEnd, begin);
    size_t stop = buffer_.find(kToolCallsEnd, begin);
    size_t close = std::min(end, stop);
    if (close == std::string::npos && !final) break;
    std::string_view body = std::string_view(buffer_).substr(begin + kToolCallBegin.size(),
                                                             close == std::string::npos ? std::string::npos
                                                                                        : close - begin - kToolCallBegin.size());
    ParsedToolCall call;
    if (parse_call(body, call)) calls.push_back(std::move(call));
    if (close == std::string::npos) {
      buffer_.clear();
      break;
    }
    buffer_.erase(0, close == end ? end + kToolCallEnd.size() : close);
  }
  if (buffer_.find(kToolCallsEnd) != std::string::npos) {
    ended_ = true;
    buffer_.clear();
  }
  return calls;
}

std::vector<ParsedToolCall> ToolCallParser::push(std::string_view text) {
  if (ended_) return {};
  buffer_ += text;
  return drain(false);
}

std::vector<ParsedToolCall> ToolCallParser::finish() {
  if (ended_) return {};
  auto calls = drain(true);
  buffer_.clear();
  return calls;
}

ParsedOutput parse_tool_output(std::string_view text) {
  ParsedOutput out;
  size_t at = text.find(kToolCallsBegin);
  out.content = std::string(text.substr(0, at));
  if (at == std::string_view::npos) return out;
  ToolCallParser parser;
  out.calls = parser.push(text.substr(at + kToolCallsBegin.size()));
  auto rest = parser.finish();
  out.calls.insert(out.calls.end(), rest.begin(), rest.end());
  return out;
}

}  // namespace whale::serve
