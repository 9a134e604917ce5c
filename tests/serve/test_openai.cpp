// Request parsing and validation (OpenAI's schema and error shape), the tools prompt and the
// DeepSeek-V3 tool-call output parser, on hand-written cases.
#include <gtest/gtest.h>

#include "serve/generation.h"
#include "serve/openai.h"
#include "serve/tool_calls.h"

using namespace whale::serve;
using nlohmann::json;

namespace {

// The status and param of the ApiError a body raises (0 when it parses).
std::pair<int, std::string> chat_error(const std::string& body, const Limits& limits = {}) {
  try {
    parse_chat_request(body, limits);
  } catch (const ApiError& e) {
    json j = error_json(e);
    EXPECT_TRUE(j["error"].contains("message"));
    EXPECT_TRUE(j["error"].contains("type"));
    EXPECT_TRUE(j["error"].contains("param"));
    return {e.status, e.param};
  }
  return {0, ""};
}

}  // namespace

TEST(OpenAIRequest, ParsesEveryField) {
  ChatRequest r = parse_chat_request(R"({"model": "m", "messages": [
      {"role": "system", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]}],
      "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 42, "stop": ["a", "b"], "n": 2,
      "presence_penalty": 0.5, "frequency_penalty": -0.5, "stream": true,
      "stream_options": {"include_usage": true}})",
                                     {});
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(*r.messages[1].content, "hello");
  EXPECT_EQ(*r.sampling.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(*r.sampling.seed, 42u);
  EXPECT_EQ(r.sampling.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.sampling.n, 2);
  EXPECT_FLOAT_EQ(r.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.frequency_penalty, -0.5f);
  EXPECT_TRUE(r.sampling.stream);
  EXPECT_TRUE(r.sampling.include_usage);
  EXPECT_EQ(r.tool_choice, "none");
  CompletionRequest c = parse_completion_request(R"({"prompt": "once", "stop": "x", "max_tokens": 3})", {});
  EXPECT_EQ(c.prompt, "once");
  EXPECT_EQ(c.sampling.stop, std::vector<std::string>{"x"});
}

TEST(OpenAIRequest, RejectsBadInputWithStatusAndParam) {
  EXPECT_EQ(chat_error("{not json").first, 400);
  EXPECT_EQ(chat_error("[1, 2]").first, 400);
  // A number beyond double: nlohmann's out_of_range, not a parse_error (found by fuzz_request).
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "temperature": 421e308})").first, 400);
  EXPECT_EQ(chat_error(R"({"messages": "hi"})"), std::make_pair(400, std::string("messages")));
  EXPECT_EQ(chat_error(R"({"messages": []})").first, 400);
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "wizard", "content": "x"}]})").first, 400);
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": 5}]})").first, 400);
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})"),
            std::make_pair(400, std::string("temperature")));
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "temperature": 3})").second, "temperature");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0})").second, "max_tokens");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5})").second, "max_tokens");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "n": 1000})").second, "n");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "stop": [1]})").second, "stop");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "stream": "yes"})").second, "stream");
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})").second,
            "tool_choice");
  // Invalid UTF-8 inside a string.
  EXPECT_EQ(chat_error("{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}").first, 400);
  // Limits: body size and message count give 413.
  Limits small;
  small.max_body_bytes = 64;
  small.max_messages = 2;
  EXPECT_EQ(chat_error(std::string(100, ' ') + "{}", small).first, 413);
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                        {"role": "user", "content": "c"}]})",
                       Limits{.max_messages = 2})
                .first,
            413);
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}]})"), std::make_pair(0, std::string()));
}

TEST(OpenAIRequest, ToolsAndToolChoice) {
  ChatRequest r = parse_chat_request(R"({"messages": [{"role": "user", "content": "weather?"}],
      "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
      "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})",
                                     {});
  ASSERT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.tools[0].name, "get_weather");
  EXPECT_EQ(r.tool_choice, "function:get_weather");
  std::string prompt = render_chat_prompt(r, whale::tokenizer::ChatFormat::DeepSeekV3);
  EXPECT_NE(prompt.find("### get_weather\nDescription: Weather of a city"), std::string::npos);
  EXPECT_NE(prompt.find("\"city\""), std::string::npos);
  // Forced call: the prompt ends inside the call, right before the arguments.
  EXPECT_TRUE(prompt.ends_with("<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>"
                               "get_weather\n```json\n"));
  EXPECT_EQ(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
      "function": {"name": "a"}}], "tool_choice": {"type": "function", "function": {"name": "b"}}})")
                .second,
            "tool_choice");
  // Tool results in the conversation render with the template's tool-output tokens.
  ChatRequest t = parse_chat_request(R"({"messages": [{"role": "user", "content": "w?"},
      {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "id": "c1",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]})",
                                     {});
  std::string p2 = render_chat_prompt(t, whale::tokenizer::ChatFormat::DeepSeekV3);
  EXPECT_NE(p2.find("<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>"), std::string::npos);
  EXPECT_NE(p2.find("<｜tool▁output▁begin｜>sunny<｜tool▁output▁end｜>"), std::string::npos);
}

TEST(ToolCalls, ParsesDeepSeekFormatWholeAndIncremental) {
  const std::string text =
      "Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
      "{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n"
      "```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  ParsedOutput whole = parse_tool_output(text);
  EXPECT_EQ(whole.content, "Let me check.");
  ASSERT_EQ(whole.calls.size(), 2u);
  EXPECT_EQ(whole.calls[0].name, "get_weather");
  EXPECT_EQ(whole.calls[0].arguments, "{\"city\": \"Paris\"}");
  EXPECT_EQ(whole.calls[1].name, "get_time");
  EXPECT_EQ(whole.calls[1].arguments, "{}");
  // Byte by byte: each call comes out once, when its closing token arrives.
  ToolCallParser p;
  std::vector<ParsedToolCall> calls;
  const std::string after = text.substr(text.find(kToolCallsBegin) + kToolCallsBegin.size());
  size_t first_done = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    auto got = p.push(std::string_view(after).substr(i, 1));
    if (!got.empty() && calls.empty()) first_done = i;
    calls.insert(calls.end(), got.begin(), got.end());
  }
  auto rest = p.finish();
  calls.insert(calls.end(), rest.begin(), rest.end());
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[1].name, "get_time");
  EXPECT_EQ(first_done, after.find(kToolCallEnd) + kToolCallEnd.size() - 1);
  EXPECT_TRUE(p.ended());
  // Unterminated at the end of generation: the call is still returned.
  ParsedOutput cut = parse_tool_output("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"a\": 1");
  ASSERT_EQ(cut.calls.size(), 1u);
  EXPECT_EQ(cut.calls[0].arguments, "{\"a\": 1");
  EXPECT_TRUE(parse_tool_output("no tools here").calls.empty());
}
