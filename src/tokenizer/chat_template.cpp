#include "tokenizer/chat_template.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace whale::tokenizer {
namespace {

const std::string kUser = "<｜User｜>", kAssistant = "<｜Assistant｜>", kEos = "<｜end▁of▁sentence｜>";

std::string tool_call_text(const ToolCall& t) {
  return t.type + "<｜tool▁sep｜>" + t.name + "\n```json\n" + t.arguments + "\n```<｜tool▁call▁end｜>";
}

}  // namespace

std::string render_chat(const std::vector<ChatMessage>& messages, ChatFormat format,
                        const ChatOptions& options) {
  // Every system message is gathered up front, joined by blank lines, right after BOS.
  std::string system;
  bool first_system = true;
  for (const auto& m : messages) {
    if (m.role != "system") continue;
    if (!first_system) system += "\n\n";
    system += m.content.value_or("");
    first_system = false;
  }
  std::string out = options.bos_token + system;
  // The template's namespace flags. is_first is never reset, as in the original.
  bool is_first = false, is_tool = false, is_output_first = true;
  for (const auto& m : messages) {
    if (m.role == "user") {
      is_tool = false;
      out += kUser + m.content.value_or("");
    }
    if (m.role == "assistant" && !m.content) {
      is_tool = false;
      for (const auto& call : m.tool_calls) {
        if (!is_first) {
          out += kAssistant + "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>" + tool_call_text(call);
          is_first = true;
        } else {
          out += "\n<｜tool▁call▁begin｜>" + tool_call_text(call) + "<｜tool▁calls▁end｜>" + kEos;
        }
      }
    }
    if (m.role == "assistant" && m.content) {
      if (is_tool) {
        out += "<｜tool▁outputs▁end｜>" + *m.content + kEos;
        is_tool = false;
      } else {
        std::string content = *m.content;
        if (format == ChatFormat::DeepSeekR1) {
          size_t close = content.rfind("</think>");
          if (close != std::string::npos) content = content.substr(close + 8);
        }
        out += kAssistant + content + kEos;
      }
    }
    if (m.role == "tool") {
      is_tool = true;
      if (is_output_first) {
        out += "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>" + m.content.value_or("") + "<｜tool▁output▁end｜>";
        is_output_first = false;
      } else {
        out += "\n<｜tool▁output▁begin｜>" + m.content.value_or("") + "<｜tool▁output▁end｜>";
      }
    }
  }
  if (is_tool) out += "<｜tool▁outputs▁end｜>";
  if (options.add_generation_prompt && !is_tool)
    out += format == ChatFormat::DeepSeekR1 ? kAssistant + "<think>\n" : kAssistant;
  return out;
}

std::vector<ChatMessage> chat_messages_from_json(const nlohmann::json& messages,
                                                 const std::string& where) {
  if (!messages.is_array()) throw Error(where, "expected an array of messages");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    std::string field = where + "[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      throw Error(field, "expected an object with a string \"role\"");
    ChatMessage msg;
    msg.role = m["role"].get<std::string>();
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant" && msg.role != "tool")
      throw Error(field + ".role", "unknown role \"" + msg.role + "\" (system, user, assistant or tool)");
    if (m.contains("content") && m["content"].is_string()) {
      msg.content = m["content"].get<std::string>();
    } else if (m.contains("content") && !m["content"].is_null()) {
      throw Error(field + ".content", "expected a string or null");
    } else if (msg.role != "assistant") {
      throw Error(field + ".content", "a " + msg.role + " message needs a string content");
    }
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      const auto& calls = m["tool_calls"];
      if (!calls.is_array()) throw Error(field + ".tool_calls", "expected an array");
      for (size_t k = 0; k < calls.size(); ++k) {
        std::string cf = field + ".tool_calls[" + std::to_string(k) + "]";
        const auto& c = calls[k];
        if (!c.is_object() || !c.contains("function") || !c["function"].is_object())
          throw Error(cf, "expected {\"type\": ..., \"function\": {\"name\": ..., \"arguments\": ...}}");
        ToolCall call;
        if (c.contains("type") && c["type"].is_string()) call.type = c["type"].get<std::string>();
        const auto& f = c["function"];
        if (!f.contains("name") || !f["name"].is_string()) throw Error(cf + ".function.name", "expected a string");
        call.name = f["name"].get<std::string>();
        if (f.contains("arguments"))
          call.arguments = f["arguments"].is_string() ? f["arguments"].get<std::string>() : f["arguments"].dump();
        msg.tool_calls.push_back(std::move(call));
      }
    }
    if (msg.role == "assistant" && !msg.content && msg.tool_calls.empty())
      throw Error(field, "an assistant message needs content or tool_calls");
    out.push_back(std::move(msg));
  }
  return out;
}

ChatFormat parse_chat_format(const std::string& name) {
  if (name == "deepseek-v3") return ChatFormat::DeepSeekV3;
  if (name == "deepseek-r1") return ChatFormat::DeepSeekR1;
  throw Error("chat format", "unknown \"" + name + "\" (deepseek-v3 or deepseek-r1)");
}

ReasoningSplit split_reasoning(std::string_view output, bool think_opened_by_prompt) {
  ReasoningSplit r;
  std::string_view rest = output;
  // Leading whitespace before an explicit "<think>" is noise from sampling.
  size_t first = rest.find_first_not_of(" \t\r\n");
  bool opened = think_opened_by_prompt;
  if (first != std::string_view::npos && rest.substr(first).starts_with("<think>")) {
    rest = rest.substr(first + 7);
    opened = true;
  }
  size_t close = rest.find("</think>");
  auto trim_newlines = [](std::string_view s) {
    size_t b = s.find_first_not_of('\n');
    if (b == std::string_view::npos) return std::string_view{};
    size_t e = s.find_last_not_of('\n');
    return s.substr(b, e - b + 1);
  };
  if (close == std::string_view::npos) {
    if (opened) {
      r.reasoning = std::string(trim_newlines(rest));
    } else {
      r.answer = std::string(output);
    }
    return r;
  }
  r.finished_thinking = true;
  r.reasoning = std::string(trim_newlines(rest.substr(0, close)));
  std::string_view answer = rest.substr(close + 8);
  size_t b = answer.find_first_not_of(" \t\r\n");
  r.answer = b == std::string_view::npos ? "" : std::string(answer.substr(b));
  return r;
}

}  // namespace whale::tokenizer
