// ChatSession: a multi-turn chat that reuses its KV cache gives, turn by turn, exactly the
// tokens that the existing Generator gives from scratch on the rendered conversation (greedy);
// /reset, interruption, the context limit and the /save + /load round trip.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "infer/chat_session.h"
#include "infer/generate.h"
#include "io/checkpoint.h"
#include "tokenizer/trainer.h"

namespace whale {
namespace {

using tokenizer::ChatFormat;
using tokenizer::ChatMessage;
using tokenizer::Tokenizer;

const Tokenizer& chat_tokenizer() {
  static const Tokenizer tok = [] {
    std::string text;
    for (int i = 0; i < 40; ++i) text += "hello there, how are you? I am fine. The cat sat on the mat. 深度求索\n";
    tokenizer::TrainOptions options;
    options.vocab_size = 320;
    options.threads = 1;
    tokenizer::TokenizerConfig config;
    config.bos_token = "<｜begin▁of▁sentence｜>";
    config.eos_token = "<｜end▁of▁sentence｜>";
    return Tokenizer::from_json(tokenizer::train_bpe_from_texts({text}, options), "chat tokenizer", config);
  }();
  return tok;
}

const Model& chat_model() {
  static const std::unique_ptr<Model> model = [] {
    ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
    InitOptions init;
    init.seed = 3;
    init.std = 0.05;
    init.norm_jitter = 0.1;
    return init_model(c, init);
  }();
  return *model;
}

// The independent path: render the conversation, encode it and run the batch Generator.
std::vector<int32_t> from_scratch(const std::vector<ChatMessage>& before, const std::string& user, ChatFormat format,
                                  int64_t max_tokens) {
  const Tokenizer& tok = chat_tokenizer();
  std::vector<ChatMessage> all = before;
  all.push_back({"user", user, {}});
  std::vector<int32_t> prompt;
  for (int id : tok.encode(tokenizer::render_chat(all, format))) prompt.push_back(id);
  GenerateOptions g;
  g.max_tokens = max_tokens;
  g.stop_at_eos = false;  // the tiny config's eos id is a byte token of this tokenizer
  g.stop_tokens = {tok.eos_id()};
  Generator gen(chat_model());
  return gen.generate({prompt}, g)[0];
}

void check_turns_match_generator(ChatFormat format) {
  ChatSession chat(chat_model(), chat_tokenizer(), format, 512);
  chat.set_system("Be brief.");
  ChatTurnOptions options;
  options.max_tokens = 10;
  const std::vector<std::string> users = {"hello there", "how are you?", "The cat sat on the mat.", "深度求索?"};
  int64_t reused = 0, generated = 0;
  for (size_t k = 0; k < users.size(); ++k) {
    std::vector<ChatMessage> before = chat.messages();
    std::string streamed;
    ChatReply reply = chat.send(users[k], options, [&](const TextDelta& d) {
      streamed += d.reasoning + d.content;
      return true;
    });
    EXPECT_EQ(reply.tokens, from_scratch(before, users[k], format, options.max_tokens)) << "turn " << k;
    EXPECT_EQ(reply.stats.generated_tokens, int64_t(reply.tokens.size()));
    EXPECT_EQ(streamed, reply.reasoning + reply.content);
    if (k > 0) {
      EXPECT_GT(reply.stats.reused_tokens, 0) << "turn " << k;
    }
    reused += reply.stats.reused_tokens;
    generated += int64_t(reply.tokens.size());
    ASSERT_EQ(chat.messages().size(), before.size() + 2);
    EXPECT_EQ(chat.messages().back().content.value_or("?"), reply.content);
  }
  EXPECT_GT(reused, 20);
  EXPECT_GT(generated, int64_t(users.size()) * 3);  // not just end-of-sequence tokens
}

TEST(ChatSession, ReusedCacheMatchesFromScratchV3) { check_turns_match_generator(ChatFormat::DeepSeekV3); }

// R1's template drops earlier reasoning, so the cache must be cut back, not only extended.
TEST(ChatSession, ReusedCacheMatchesFromScratchR1) { check_turns_match_generator(ChatFormat::DeepSeekR1); }

TEST(ChatSession, ResetForgetsTheConversationButNotTheSystemPrompt) {
  ChatTurnOptions options;
  options.max_tokens = 6;
  ChatSession fresh(chat_model(), chat_tokenizer(), ChatFormat::DeepSeekV3, 256);
  fresh.set_system("sys");
  const ChatReply first = fresh.send("hello", options);

  ChatSession chat(chat_model(), chat_tokenizer(), ChatFormat::DeepSeekV3, 256);
  chat.set_system("sys");
  chat.send("how are you?", options);
  chat.send("The cat", options);
  chat.reset();
  EXPECT_EQ(chat.cached_tokens(), 0);
  ASSERT_EQ(chat.messages().size(), 1u);
  EXPECT_EQ(chat.messages()[0].role, "system");
  const ChatReply again = chat.send("hello", options);
  EXPECT_EQ(again.tokens, first.tokens);
  EXPECT_EQ(again.stats.reused_tokens, 0);
}

TEST(ChatSession, InterruptStopsTheTurnAndKeepsThePartialAnswer) {
  ChatSession chat(chat_model(), chat_tokenizer(), ChatFormat::DeepSeekV3, 256);
  ChatTurnOptions options;
  options.max_tokens = 50;
  options.sampling.temperature = 1.0f;
  options.sampling.seed = 5;
  int calls = 0;
  ChatReply reply = chat.send("hello", options, [&](const TextDelta&) { return ++calls < 3; });
  if (reply.finish == ChatFinish::Interrupted) {
    EXPECT_EQ(reply.tokens.size(), 3u);
  } else {  // the third token happened to end the answer
    EXPECT_LE(reply.tokens.size(), 3u);
  }
  EXPECT_EQ(chat.messages().back().content.value_or("?"), reply.content);
  // The session goes on after an interruption.
  ChatReply next = chat.send("and now?", options);
  EXPECT_GE(next.tokens.size(), 1u);
}

TEST(ChatSession, ConversationLongerThanTheContextIsAnError) {
  ChatSession chat(chat_model(), chat_tokenizer(), ChatFormat::DeepSeekV3, 24);
  ChatTurnOptions options;
  options.max_tokens = 4;
  std::string long_text;
  for (int i = 0; i < 30; ++i) long_text += "x y z ";
  EXPECT_THROW(chat.send(long_text, options), Error);
  EXPECT_TRUE(chat.messages().empty());
  // A turn that runs into the end of the context stops with "length", not a crash.
  options.max_tokens = 1000;
  ChatReply reply = chat.send("hello", options);
  EXPECT_LE(chat.cached_tokens(), 24);
  EXPECT_TRUE(reply.finish == ChatFinish::Length || reply.finish == ChatFinish::Stop);
  EXPECT_THROW(ChatSession(chat_model(), chat_tokenizer(), ChatFormat::DeepSeekV3, 1 << 20), Error);
}

TEST(ChatSession, SaveThenLoadRoundTrips) {
  const std::string dir = testing::TempDir() + "/whale_chat_save";
  std::filesystem::create_directories(dir);
  ChatTurnOptions options;
  options.max_tokens = 5;
  ChatSession chat(chat_model(), chat_tokenizer(), ChatFormat::DeepSeekV3, 256);
  chat.set_system("You are \"whale\".\nBe brief.");
  chat.send("hello 深度求索", options);
  chat.send("how are you?", options);
  save_chat_messages(dir + "/chat.json", chat.messages());

  ChatSession loaded(chat_model(), chat_tokenizer(), ChatFormat::DeepSeekV3, 256);
  loaded.set_messages(load_chat_messages(dir + "/chat.json"));
  ASSERT_EQ(loaded.messages().size(), chat.messages().size());
  for (size_t i = 0; i < chat.messages().size(); ++i) {
    EXPECT_EQ(loaded.messages()[i].role, chat.messages()[i].role);
    EXPECT_EQ(loaded.messages()[i].content, chat.messages()[i].content);
  }
  EXPECT_EQ(loaded.system(), chat.system());
  // The loaded conversation continues exactly as the original would.
  EXPECT_EQ(loaded.send("The cat", options).tokens, chat.send("The cat", options).tokens);

  std::ofstream(dir + "/bad.json") << "[{\"role\": \"user\", \"content\": ";
  try {
    load_chat_messages(dir + "/bad.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
  }
  std::ofstream(dir + "/role.json") << "[{\"role\": \"robot\", \"content\": \"x\"}]";
  EXPECT_THROW(load_chat_messages(dir + "/role.json"), Error);
  EXPECT_THROW(load_chat_messages(dir + "/missing.json"), Error);
}

}  // namespace
}  // namespace whale
