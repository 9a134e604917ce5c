// DeepSeek-V3's tool-call output format, parsed incrementally:
//   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>
//   ... more calls ... <｜tool▁calls▁end｜>
// (the format of the chat_template in DeepSeek-V3's tokenizer_config.json).
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace whale::serve {

struct ParsedToolCall {
  std::string name, arguments;  // arguments: the JSON text between the ```json fences
};

extern const std::string kToolCallsBegin, kToolCallsEnd, kToolCallBegin, kToolCallEnd, kToolSep;

// Feed the decoded text that follows "<｜tool▁calls▁begin｜>" (special tokens written out).
class ToolCallParser {
 public:
  // Calls completed by this text.
  std::vector<ParsedToolCall> push(std::string_view text);
  // At the end of generation: a call that has a name but no closing token is returned as is.
  std::vector<ParsedToolCall> finish();
  bool ended() const { return ended_; }  // "<｜tool▁calls▁end｜>" seen

 private:
  std::vector<ParsedToolCall> drain(bool final);
  std::string buffer_;
  bool ended_ = false;
};

// Whole output at once: text before the first "<｜tool▁calls▁begin｜>" and the calls after it.
struct ParsedOutput {
  std::string content;
  std::vector<ParsedToolCall> calls;
};
ParsedOutput parse_tool_output(std::string_view text);

}  // namespace whale::serve
