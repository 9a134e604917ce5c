// libFuzzer target for the OpenAI request parser: arbitrary bytes must either parse into a
// request or raise serve::ApiError with a 4xx status; a parsed chat request must render to a
// prompt, and the tool-call parser must accept whatever text follows.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "serve/openai.h"
#include "serve/tool_calls.h"
#include "tokenizer/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  whale::serve::Limits limits;
  limits.max_body_bytes = 1 << 16;
  try {
    whale::serve::ChatRequest r = whale::serve::parse_chat_request(body, limits);
    auto messages = r.messages;
    std::string tools = whale::serve::tools_prompt(r.tools, r.tool_choice);
    if (!tools.empty()) messages.push_back({"system", tools, {}});
    for (auto format : {whale::tokenizer::ChatFormat::DeepSeekV3, whale::tokenizer::ChatFormat::DeepSeekR1}) {
      std::string prompt = whale::tokenizer::render_chat(messages, format) + whale::serve::forced_tool_prefix(r.tool_choice);
      if (prompt.empty()) std::abort();  // BOS at least
    }
  } catch (const whale::serve::ApiError& e) {
    if (e.status < 400 || e.status >= 500) std::abort();
  }
  try {
    whale::serve::parse_completion_request(body, limits);
  } catch (const whale::serve::ApiError& e) {
    if (e.status < 400 || e.status >= 500) std::abort();
  }
  whale::serve::ParsedOutput out = whale::serve::parse_tool_output(body);
  if (out.content.size() > size) std::abort();
  return 0;
}
