// DeepSeek chat formats (strings from the reference apply_chat_template; the 32-rendering
// comparison is in tests/js/compare.js) and reasoning parsing.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/chat_template.h"

namespace whale::tokenizer {
namespace {

std::vector<ChatMessage> conversation() {
  return chat_messages_from_json(nlohmann::json::parse(R"([
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Solve x^2=4"},
    {"role": "assistant", "content": "<think>\nx^2=4 so x=±2\n</think>\n\nx = 2 or x = -2."},
    {"role": "user", "content": "And x^2=9?"}])"),
                                 "test");
}

TEST(TokenizerChat, DeepSeekV3MatchesReference) {
  EXPECT_EQ(render_chat(conversation(), ChatFormat::DeepSeekV3),
            "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Solve x^2=4<｜Assistant｜><think>\nx^2=4 so "
            "x=±2\n</think>\n\nx = 2 or x = -2.<｜end▁of▁sentence｜><｜User｜>And x^2=9?<｜Assistant｜>");
}

TEST(TokenizerChat, DeepSeekR1StripsReasoningAndOpensThink) {
  EXPECT_EQ(render_chat(conversation(), ChatFormat::DeepSeekR1),
            "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Solve x^2=4<｜Assistant｜>\n\nx = 2 or x = "
            "-2.<｜end▁of▁sentence｜><｜User｜>And x^2=9?<｜Assistant｜><think>\n");
  ChatOptions no_prompt;
  no_prompt.add_generation_prompt = false;
  std::string text = render_chat(conversation(), ChatFormat::DeepSeekR1, no_prompt);
  EXPECT_TRUE(text.ends_with("<｜User｜>And x^2=9?"));
}

TEST(TokenizerChat, ToolTurns) {
  auto messages = chat_messages_from_json(nlohmann::json::parse(R"([
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "content": "{\"temp\": 21}"},
    {"role": "assistant", "content": "It is 21°C in Paris."}])"),
                                          "test");
  EXPECT_EQ(render_chat(messages, ChatFormat::DeepSeekV3),
            "<｜begin▁of▁sentence｜><｜User｜>Weather in Paris?<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>"
            "function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁outputs▁begin｜>"
            "<｜tool▁output▁begin｜>{\"temp\": 21}<｜tool▁output▁end｜><｜tool▁outputs▁end｜>It is 21°C in "
            "Paris.<｜end▁of▁sentence｜><｜Assistant｜>");
}

TEST(TokenizerChat, BadMessagesAreErrors) {
  EXPECT_THROW(chat_messages_from_json(nlohmann::json::parse(R"([{"role": "robot", "content": "x"}])"), "m"), Error);
  EXPECT_THROW(chat_messages_from_json(nlohmann::json::parse(R"([{"role": "user"}])"), "m"), Error);
  EXPECT_THROW(chat_messages_from_json(nlohmann::json::parse(R"({"role": "user"})"), "m"), Error);
  EXPECT_THROW(parse_chat_format("llama"), Error);
}

TEST(TokenizerChat, SplitsReasoningFromAnswer) {
  auto r = split_reasoning("Let me think.\n2+2=4\n</think>\n\nThe answer is 4.");
  EXPECT_TRUE(r.finished_thinking);
  EXPECT_EQ(r.reasoning, "Let me think.\n2+2=4");
  EXPECT_EQ(r.answer, "The answer is 4.");

  r = split_reasoning("<think>\nhmm\n</think>ok", false);
  EXPECT_EQ(r.reasoning, "hmm");
  EXPECT_EQ(r.answer, "ok");

  r = split_reasoning("still thinking...");  // R1 prompt opened <think>, no close yet
  EXPECT_FALSE(r.finished_thinking);
  EXPECT_EQ(r.reasoning, "still thinking...");
  EXPECT_EQ(r.answer, "");

  r = split_reasoning("plain answer", /*think_opened_by_prompt=*/false);
  EXPECT_EQ(r.reasoning, "");
  EXPECT_EQ(r.answer, "plain answer");
}

}  // namespace
}  // namespace whale::tokenizer
