#include "serve/generation.h"

#include <span>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace whale::serve {

namespace {
// Tool calls are cut from raw token bytes, which a model may leave as ill-formed UTF-8.
ParsedToolCall clean(ParsedToolCall call) {
  call.name = tokenizer::sanitize_utf8(call.name);
  call.arguments = tokenizer::sanitize_utf8(call.arguments);
  return call;
}
}  // namespace

struct Generation::State {
  std::shared_ptr<Sequence> seq;
  TextStream text;
  ToolCallParser tools;
  bool tool_mode = false, in_reasoning = false, stopped_by_string = false, finished = false;
  int64_t reasoning_tokens = 0, calls = 0, text_tokens = 0;
  State(std::shared_ptr<Sequence> s, const tokenizer::Tokenizer& tok, bool think, std::vector<std::string> stop)
      : seq(std::move(s)), text(tok, think, std::move(stop)), in_reasoning(think) {}
};

std::string render_chat_prompt(const ChatRequest& request, tokenizer::ChatFormat format) {
  std::vector<tokenizer::ChatMessage> messages = request.messages;
  // render_chat gathers every system message, in order, right after BOS.
  std::string tools = tools_prompt(request.tools, request.tool_choice);
  if (!tools.empty()) messages.push_back({"system", tools, {}});
  return tokenizer::render_chat(messages, format) + forced_tool_prefix(request.tool_choice);
}

Generation::Generation(Engine& engine, const tokenizer::Tokenizer& tok, const ChatRequest& request,
                       const GenerationSettings& settings, uint64_t default_seed)
    : engine_(engine), tok_(tok), settings_(settings) {
  for (int id : tok.encode(render_chat_prompt(request, settings.format))) prompt_.push_back(int32_t(id));
  const std::string forced = forced_tool_prefix(request.tool_choice);
  const bool think = settings.format == tokenizer::ChatFormat::DeepSeekR1 && forced.empty();
  start(request.sampling, default_seed, think, forced, request.tool_choice != "none");
}

Generation::Generation(Engine& engine, const tokenizer::Tokenizer& tok, const CompletionRequest& request,
                       const GenerationSettings& settings, uint64_t default_seed)
    : engine_(engine), tok_(tok), settings_(settings) {
  if (tok.config().add_bos_token && tok.bos_id() >= 0) prompt_.push_back(int32_t(tok.bos_id()));
  for (int id : tok.encode(request.prompt)) prompt_.push_back(int32_t(id));
  start(request.sampling, default_seed, false, "", false);
}

Generation::~Generation() { cancel(); }

void Generation::start(const SamplingRequest& sampling, uint64_t default_seed, bool starts_in_think,
                       const std::string& forced_tool_prefix, bool tools_enabled) {
  tool_calls_begin_ = tools_enabled ? tok_.token_to_id(kToolCallsBegin) : -1;
  think_open_ = tok_.token_to_id("<think>");
  think_close_ = tok_.token_to_id("</think>");
  const int64_t context = engine_.context_length(), n = int64_t(prompt_.size());
  const int64_t limit = settings_.max_prompt_tokens > 0 ? std::min(settings_.max_prompt_tokens, context - 1) : context - 1;
  if (n > limit)
    throw ApiError(400, "invalid_request_error",
                   "the prompt is " + std::to_string(n) + " tokens, over the limit of " + std::to_string(limit) +
                       " (context length " + std::to_string(context) + ")",
                   "messages", "context_length_exceeded");
  int64_t max_tokens = std::min(settings_.default_max_tokens, context - n);
  if (sampling.max_tokens) {
    max_tokens = *sampling.max_tokens;
    if (n + max_tokens > context)
      throw ApiError(400, "invalid_request_error",
                     "the prompt (" + std::to_string(n) + " tokens) plus max_tokens (" + std::to_string(max_tokens) +
                         ") exceeds the context length of " + std::to_string(context),
                     "max_tokens", "context_length_exceeded");
  }
  const uint64_t seed = sampling.seed.value_or(default_seed);
  for (int64_t i = 0; i < sampling.n; ++i) {
    SequenceRequest r;
    r.prompt = prompt_;
    r.max_tokens = max_tokens;
    r.sampling.temperature = sampling.temperature;
    r.sampling.top_p = sampling.top_p;
    r.sampling.seed = seed + uint64_t(i);
    r.presence_penalty = sampling.presence_penalty;
    r.frequency_penalty = sampling.frequency_penalty;
    r.min_tokens = std::min(sampling.min_tokens, max_tokens);
    std::shared_ptr<Sequence> seq;
    try {
      seq = engine_.submit(std::move(r));
    } catch (const Error& e) {
      cancel();
      throw ApiError(400, "invalid_request_error", e.what(), "max_tokens");
    }
    auto st = std::make_unique<State>(std::move(seq), tok_, starts_in_think, sampling.stop);
    if (!forced_tool_prefix.empty()) {
      st->tool_mode = true;
      st->tools.push(std::string_view(forced_tool_prefix).substr(kToolCallsBegin.size()));
    }
    states_.push_back(std::move(st));
    choices_.emplace_back();
  }
}

void Generation::cancel() {
  for (auto& st : states_) st->seq->cancel();
}

bool Generation::done() const {
  for (const auto& st : states_)
    if (!st->finished) return false;
  return true;
}

void Generation::finish_choice(size_t i, ChoiceDelta& d) {
  State& st = *states_[i];
  if (st.tool_mode) {
    for (auto& call : st.tools.finish()) d.tool_calls.push_back(clean(std::move(call)));
  } else {
    TextDelta t = st.text.finish();
    d.reasoning += t.reasoning;
    d.content += t.content;
  }
  std::string reason = "stop";
  if (!st.stopped_by_string) {
    FinishReason r = st.seq->finish_reason();
    if (r == FinishReason::Length) reason = "length";
    if (r == FinishReason::Error) reason = "error";
  }
  if (st.calls + int64_t(d.tool_calls.size()) > 0) reason = "tool_calls";
  d.finish_reason = reason;
  st.finished = true;
}

bool Generation::poll(std::vector<ChoiceDelta>& out, std::chrono::milliseconds timeout) {
  bool waited = false, all = true;
  for (size_t i = 0; i < states_.size(); ++i) {
    State& st = *states_[i];
    if (st.finished) continue;
    std::vector<int32_t> tokens;
    bool seq_done = st.seq->wait(tokens, waited ? std::chrono::milliseconds(0) : timeout);
    waited = true;
    ChoiceDelta d;
    d.index = int64_t(i);
    d.tool_call_base = st.calls;
    for (int32_t t : tokens) {
      if (st.tool_mode) {
        const int id = t;
        std::string raw = tok_.decode_bytes(std::span<const int>(&id, 1));
        for (auto& call : st.tools.push(raw)) d.tool_calls.push_back(clean(std::move(call)));
        continue;
      }
      if (tool_calls_begin_ >= 0 && t == tool_calls_begin_) {
        TextDelta f = st.text.finish();
        d.reasoning += f.reasoning;
        d.content += f.content;
        st.tool_mode = true;
        continue;
      }
      // As TextStream splits: only an opening "<think>" starts reasoning, and "</think>" ends it
      // for good (tags later in the answer are text).
      if (t == think_open_ && st.text_tokens == 0) st.in_reasoning = true;
      if (st.in_reasoning) ++st.reasoning_tokens;
      if (t == think_close_) st.in_reasoning = false;
      ++st.text_tokens;
      TextDelta td = st.text.push(t);
      d.reasoning += td.reasoning;
      d.content += td.content;
      if (st.text.stopped()) {
        st.stopped_by_string = true;
        st.seq->cancel();
        break;
      }
    }
    if (seq_done || st.stopped_by_string) finish_choice(i, d);
    if (!st.finished) all = false;
    Choice& c = choices_[i];
    c.reasoning += d.reasoning;
    c.content += d.content;
    c.tool_calls.insert(c.tool_calls.end(), d.tool_calls.begin(), d.tool_calls.end());
    st.calls += int64_t(d.tool_calls.size());
    if (d.finish_reason) c.finish_reason = *d.finish_reason;
    if (!d.empty()) out.push_back(std::move(d));
  }
  return all;
}

Usage Generation::usage() const {
  Usage u;
  u.prompt_tokens = int64_t(prompt_.size());
  for (const auto& st : states_) {
    u.completion_tokens += st->seq->generated_tokens();
    u.reasoning_tokens += st->reasoning_tokens;
  }
  if (!states_.empty()) u.cached_tokens = states_[0]->seq->cached_tokens();
  return u;
}

}  // namespace whale::serve
