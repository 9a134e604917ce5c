// DeepSeek-V3 and DeepSeek-R1 chat formats, and splitting R1 output into reasoning and answer.
// The renderers are a direct transcription of the Jinja chat_template in DeepSeek-V3's
// tokenizer_config.json (quirks included, such as the tool-call closer that is only emitted
// after a second call); tests/js/render_chat.js checks them against the reference renderer.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace whale::tokenizer {

struct ToolCall {
  std::string type = "function";
  std::string name;
  std::string arguments;  // JSON text, inserted verbatim
};

struct ChatMessage {
  std::string role;  // system, user, assistant or tool
  std::optional<std::string> content;  // null for an assistant turn that only calls tools
  std::vector<ToolCall> tool_calls;
};

enum class ChatFormat {
  DeepSeekV3,
  // V3 plus R1's two changes: earlier assistant turns lose everything up to the last
  // "</think>", and the generation prompt opens "<think>\n".
  DeepSeekR1,
};

struct ChatOptions {
  bool add_generation_prompt = true;
  std::string bos_token = "<｜begin▁of▁sentence｜>";
};

std::string render_chat(const std::vector<ChatMessage>& messages, ChatFormat format,
                        const ChatOptions& options = {});

// Parses OpenAI-style messages ([{"role": ..., "content": ..., "tool_calls": [...]}]);
// throws whale::Error naming the bad message.
std::vector<ChatMessage> chat_messages_from_json(const nlohmann::json& messages,
                                                 const std::string& where);
ChatFormat parse_chat_format(const std::string& name);  // "deepseek-v3" or "deepseek-r1"

// A model's output split at "</think>".
struct ReasoningSplit {
  std::string reasoning;  // without the tags and the newlines around it
  std::string answer;     // what follows "</think>", leading whitespace removed
  bool finished_thinking = false;  // "</think>" was seen
};

// `think_opened_by_prompt`: the prompt already ended in "<think>\n" (R1), so output with no
// tags at all is unfinished reasoning rather than an answer.
ReasoningSplit split_reasoning(std::string_view output, bool think_opened_by_prompt = true);

}  // namespace whale::tokenizer
