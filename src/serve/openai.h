// OpenAI-compatible request parsing and validation for /v1/chat/completions and
// /v1/completions. Pure functions over the body text (no HTTP), so the fuzzer drives them
// directly. Every rejection is an ApiError carrying the HTTP status and OpenAI's error fields.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/chat_template.h"

namespace whale::serve {

// Rendered as {"error": {"message", "type", "param", "code"}}.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, std::string message, std::string param = {}, std::string code = {})
      : std::runtime_error(message), status(status), type(std::move(type)), param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string type, param, code;
};
nlohmann::json error_json(const ApiError& error);
// 400 invalid_request_error naming the parameter.
[[noreturn]] void invalid(const std::string& param, const std::string& message);

struct Limits {
  int64_t max_body_bytes = 4 << 20;
  int64_t max_messages = 512;
  int64_t max_n = 16;
  int64_t max_stop = 4;
  int64_t max_tools = 128;
};

struct SamplingRequest {
  std::optional<int64_t> max_tokens;
  float temperature = 1.0f, top_p = 1.0f;  // OpenAI's defaults
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  int64_t n = 1;
  float presence_penalty = 0, frequency_penalty = 0;
  int64_t min_tokens = 0;  // vLLM's extension: no EOS before this many tokens
  bool stream = false, include_usage = false;  // include_usage: stream_options.include_usage
};

struct ToolSpec {
  std::string name, description;
  nlohmann::json parameters;  // JSON Schema, passed to the model as text
};

struct ChatRequest {
  std::string model;
  std::vector<tokenizer::ChatMessage> messages;
  SamplingRequest sampling;
  std::vector<ToolSpec> tools;
  std::string tool_choice = "auto";  // none, auto, required, or "function:NAME"
};

struct CompletionRequest {
  std::string model;
  std::string prompt;
  SamplingRequest sampling;
  bool echo = false;
};

// Parse a request body. Throw ApiError (400 for bad JSON, types, values or roles; 413 for a body
// over limits.max_body_bytes).
ChatRequest parse_chat_request(std::string_view body, const Limits& limits);
CompletionRequest parse_completion_request(std::string_view body, const Limits& limits);

// The system-prompt text that describes `tools` to the model, asking for DeepSeek-V3's
// tool-call format. Empty when there are no tools or tool_choice is "none".
std::string tools_prompt(const std::vector<ToolSpec>& tools, const std::string& tool_choice);
// What the generation prompt is followed by so the model must call a tool: for "required" the
// opening of a call, for "function:NAME" the call up to its arguments. Empty otherwise.
std::string forced_tool_prefix(const std::string& tool_choice);

}  // namespace whale::serve
