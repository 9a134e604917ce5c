// A multi-turn chat over one KV cache. Each turn renders the whole conversation with the
// model's chat template, keeps the longest prefix of tokens already in the cache and runs only
// the rest, so a turn costs its new tokens, not the whole history. When the rendering of
// earlier turns differs from what was generated (R1 drops old reasoning; BPE may tokenize an
// answer differently from how it was sampled), the cache is cut back to the common prefix, so
// the result always equals a from-scratch run over the rendered conversation.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "infer/kv_cache.h"
#include "infer/sampler.h"
#include "infer/text_stream.h"
#include "model/transformer.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace whale {

struct ChatTurnOptions {
  int64_t max_tokens = 1024;
  SamplingParams sampling;  // the seed of turn k is sampling.seed + k, so a replayed chat repeats
  std::vector<std::string> stop;
};

enum class ChatFinish { Stop, Length, Interrupted };
const char* to_string(ChatFinish finish);

struct ChatTurnStats {
  int64_t reused_tokens = 0;  // prompt tokens found in the cache
  int64_t prompt_tokens = 0;  // prompt tokens run through the model this turn
  int64_t generated_tokens = 0;
  double prompt_seconds = 0, decode_seconds = 0;
  double prompt_tokens_per_second() const { return prompt_seconds > 0 ? prompt_tokens / prompt_seconds : 0; }
  double decode_tokens_per_second() const {
    return decode_seconds > 0 ? (generated_tokens - 1) / decode_seconds : 0;  // the first comes from the prompt pass
  }
};

struct ChatReply {
  std::string reasoning, content;
  std::vector<int32_t> tokens;  // generated ids, the end-of-sequence token included
  ChatFinish finish = ChatFinish::Stop;
  ChatTurnStats stats;
};

// Called after every generated token with the text it made certain (often empty); return
// false to stop the turn (Ctrl-C). The last call, after generation, cannot stop anything.
using ChatDeltaCallback = std::function<bool(const TextDelta&)>;

// DeepSeek-R1 when the tokenizer_config.json chat template opens a "<think>" block, else V3.
tokenizer::ChatFormat detect_chat_format(const tokenizer::Tokenizer& tok);

class ChatSession {
 public:
  // context: KV cache capacity in tokens (at most max_position_embeddings).
  ChatSession(const Model& model, const tokenizer::Tokenizer& tok, tokenizer::ChatFormat format, int64_t context,
              AttentionMode mode = AttentionMode::Auto);

  // Adds a user turn, generates the assistant's answer and adds it (its content, without
  // reasoning, as an API client would send it back; an interrupted answer is kept as far as
  // it got). Throws whale::Error when the conversation no longer fits in the context; the
  // conversation is then left unchanged.
  ChatReply send(const std::string& user_text, const ChatTurnOptions& options, const ChatDeltaCallback& on_delta = {});

  // Forgets the conversation (and the cache); the system prompt stays.
  void reset();
  void set_system(std::string text);  // "" for none
  const std::string& system() const { return system_; }
  // The system prompt (if any) followed by the turns.
  std::vector<tokenizer::ChatMessage> messages() const;
  // Replaces the conversation; system messages become the system prompt (joined by blank
  // lines, as the template joins them). The cache keeps whatever prefix still matches.
  void set_messages(const std::vector<tokenizer::ChatMessage>& messages);

  int64_t cached_tokens() const { return int64_t(cached_.size()); }
  int64_t context() const { return cache_.capacity(); }
  tokenizer::ChatFormat format() const { return format_; }
  void drop_cache();  // the next turn recomputes everything (for tests and comparisons)

 private:
  std::vector<int32_t> prompt_ids(const std::vector<tokenizer::ChatMessage>& turns) const;
  // Runs tokens through the model after what the cache holds; logits_ gets the last row's.
  void feed(const int32_t* tokens, int64_t n);

  const Model& model_;
  const tokenizer::Tokenizer& tok_;
  tokenizer::ChatFormat format_;
  Transformer transformer_;
  KVCache cache_;
  std::vector<int32_t> cached_;  // the tokens whose keys and values the cache holds, in order
  std::string system_;
  std::vector<tokenizer::ChatMessage> turns_;
  std::vector<float> hidden_, logits_;
};

// /save and /load: an OpenAI-style JSON array of {"role", "content"} messages, written atomically.
void save_chat_messages(const std::string& path, const std::vector<tokenizer::ChatMessage>& messages);
std::vector<tokenizer::ChatMessage> load_chat_messages(const std::string& path);

}  // namespace whale
