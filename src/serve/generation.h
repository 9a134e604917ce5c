// One API request's generation: renders and encodes the prompt, submits its n sequences to the
// engine, and turns their tokens into text deltas (reasoning, content, tool calls) as they
// come. HTTP-free, so the server's streaming and non-streaming paths (and tests) share it.
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "infer/engine.h"
#include "infer/text_stream.h"
#include "serve/openai.h"
#include "serve/tool_calls.h"
#include "tokenizer/tokenizer.h"

namespace whale::serve {

struct GenerationSettings {
  tokenizer::ChatFormat format = tokenizer::ChatFormat::DeepSeekV3;
  int64_t default_max_tokens = 512;  // when the request gives none (clamped to the context)
  int64_t max_prompt_tokens = 0;     // 0: the context length
};

struct ChoiceDelta {
  int64_t index = 0;
  std::string reasoning, content;
  std::vector<ParsedToolCall> tool_calls;  // completed calls (streamed whole)
  int64_t tool_call_base = 0;              // index of tool_calls[0] among this choice's calls
  std::optional<std::string> finish_reason;  // set on the choice's last delta
  bool empty() const { return reasoning.empty() && content.empty() && tool_calls.empty() && !finish_reason; }
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0, reasoning_tokens = 0, cached_tokens = 0;
};

class Generation {
 public:
  // Chat: render messages (plus a tools prompt) with the chat template.
  Generation(Engine& engine, const tokenizer::Tokenizer& tok, const ChatRequest& request,
             const GenerationSettings& settings, uint64_t default_seed);
  // Plain completion of prompt text.
  Generation(Engine& engine, const tokenizer::Tokenizer& tok, const CompletionRequest& request,
             const GenerationSettings& settings, uint64_t default_seed);
  ~Generation();  // cancels what is still running

  // Waits up to `timeout` for tokens, appends the resulting deltas (one per choice that
  // changed); returns true once every choice has finished.
  bool poll(std::vector<ChoiceDelta>& out, std::chrono::milliseconds timeout);
  void cancel();
  bool done() const;

  Usage usage() const;
  const std::vector<int32_t>& prompt_ids() const { return prompt_; }
  // Accumulated per choice (non-streaming responses).
  struct Choice {
    std::string reasoning, content;
    std::vector<ParsedToolCall> tool_calls;
    std::string finish_reason;
  };
  const std::vector<Choice>& choices() const { return choices_; }

 private:
  struct State;
  void start(const SamplingRequest& sampling, uint64_t default_seed, bool starts_in_think,
             const std::string& forced_tool_prefix, bool tools_enabled);
  void finish_choice(size_t i, ChoiceDelta& d);

  Engine& engine_;
  const tokenizer::Tokenizer& tok_;
  GenerationSettings settings_;
  std::vector<int32_t> prompt_;
  std::vector<std::unique_ptr<State>> states_;
  std::vector<Choice> choices_;
  int32_t tool_calls_begin_ = -1, think_open_ = -1, think_close_ = -1;
};

// The prompt a chat request renders to (tools prompt merged into the system messages, forced
// tool-call opening appended).
std::string render_chat_prompt(const ChatRequest& request, tokenizer::ChatFormat format);

}  // namespace whale::serve
