#include "infer/chat_session.h"

#include <algorithm>
#include <chrono>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mmap.h"

namespace whale {

const char* to_string(ChatFinish finish) {
  switch (finish) {
    case ChatFinish::Stop: return "stop";
    case ChatFinish::Length: return "length";
    case ChatFinish::Interrupted: return "interrupted";
  }
  return "?";
}

tokenizer::ChatFormat detect_chat_format(const tokenizer::Tokenizer& tok) {
  return tok.config().chat_template.find("<think>") != std::string::npos ? tokenizer::ChatFormat::DeepSeekR1
                                                                          : tokenizer::ChatFormat::DeepSeekV3;
}

ChatSession::ChatSession(const Model& model, const tokenizer::Tokenizer& tok, tokenizer::ChatFormat format,
                         int64_t context, AttentionMode mode)
    : model_(model),
      tok_(tok),
      format_(format),
      transformer_(model, mode),
      cache_(model.config, [&] {
        if (context < 2 || context > model.config.max_position_embeddings)
          throw Error("context", std::to_string(context) + " tokens; expected 2 to max_position_embeddings (" +
                                     std::to_string(model.config.max_position_embeddings) + ")");
        return context;
      }()) {
  if (tok.vocab_size() > model.config.vocab_size)
    throw Error("tokenizer", "has " + std::to_string(tok.vocab_size()) + " ids but the model's vocab_size is " +
                                 std::to_string(model.config.vocab_size));
}

void ChatSession::reset() {
  turns_.clear();
  drop_cache();
}

void ChatSession::drop_cache() {
  cache_.clear();
  cached_.clear();
}

void ChatSession::set_system(std::string text) { system_ = std::move(text); }

std::vector<tokenizer::ChatMessage> ChatSession::messages() const {
  std::vector<tokenizer::ChatMessage> out;
  if (!system_.empty()) out.push_back({"system", system_, {}});
  out.insert(out.end(), turns_.begin(), turns_.end());
  return out;
}

void ChatSession::set_messages(const std::vector<tokenizer::ChatMessage>& messages) {
  system_.clear();
  turns_.clear();
  for (const auto& m : messages) {
    if (m.role == "system") {
      system_ += (system_.empty() ? "" : "\n\n") + m.content.value_or("");
    } else {
      turns_.push_back(m);
    }
  }
}

std::vector<int32_t> ChatSession::prompt_ids(const std::vector<tokenizer::ChatMessage>& turns) const {
  std::vector<tokenizer::ChatMessage> all;
  if (!system_.empty()) all.push_back({"system", system_, {}});
  all.insert(all.end(), turns.begin(), turns.end());
  tokenizer::ChatOptions options;
  if (!tok_.config().bos_token.empty()) options.bos_token = tok_.config().bos_token;
  std::vector<int32_t> ids;
  for (int id : tok_.encode(tokenizer::render_chat(all, format_, options))) ids.push_back(int32_t(id));
  return ids;
}

void ChatSession::feed(const int32_t* tokens, int64_t n) {
  const int64_t H = model_.config.hidden_size, V = model_.config.vocab_size;
  hidden_.resize(size_t(n * H));
  logits_.resize(size_t(V));
  transformer_.forward(tokens, {SeqSpan{&cache_, 0, n, cache_.length}}, hidden_.data());
  transformer_.logits(hidden_.data(), {n - 1}, logits_.data());
  cached_.insert(cached_.end(), tokens, tokens + n);
}

ChatReply ChatSession::send(const std::string& user_text, const ChatTurnOptions& options,
                            const ChatDeltaCallback& on_delta) {
  if (options.max_tokens < 1) throw Error("max_tokens", std::to_string(options.max_tokens) + "; expected at least 1");
  validate(options.sampling);
  TextStream stream(tok_, format_ == tokenizer::ChatFormat::DeepSeekR1, options.stop);  // checks the stop strings
  std::vector<tokenizer::ChatMessage> turns = turns_;
  turns.push_back({"user", user_text, {}});
  const std::vector<int32_t> ids = prompt_ids(turns);
  if (int64_t(ids.size()) >= cache_.capacity())
    throw Error("context", "the conversation is " + std::to_string(ids.size()) + " tokens and the context holds " +
                               std::to_string(cache_.capacity()) + "; /reset it or raise --context");

  ChatReply reply;
  // Keep the longest cached prefix; at least one token must run to get the next logits.
  size_t common = 0;
  while (common < cached_.size() && common < ids.size() && cached_[common] == ids[common]) ++common;
  common = std::min(common, ids.size() - 1);
  cache_.length = int64_t(common);
  cache_.mtp_length = std::min(cache_.mtp_length, cache_.length);
  cached_.resize(common);
  reply.stats.reused_tokens = int64_t(common);
  reply.stats.prompt_tokens = int64_t(ids.size() - common);

  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  feed(ids.data() + common, int64_t(ids.size() - common));
  reply.stats.prompt_seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  int64_t assistant_turns = 0;
  for (const auto& m : turns_) assistant_turns += m.role == "assistant";
  SamplingParams sampling = options.sampling;
  sampling.seed += uint64_t(assistant_turns);
  Sampler sampler(sampling);
  std::vector<int32_t> history = ids;
  const int32_t eos = tok_.eos_id() >= 0 ? int32_t(tok_.eos_id()) : int32_t(model_.config.eos_token_id);
  const int64_t V = model_.config.vocab_size;
  auto t1 = Clock::now();
  while (true) {
    const int32_t token = sampler.sample(logits_.data(), V, history);
    reply.tokens.push_back(token);
    history.push_back(token);
    TextDelta delta = stream.push(token);
    reply.reasoning += delta.reasoning;
    reply.content += delta.content;
    const bool keep = on_delta ? on_delta(delta) : true;
    if (token == eos || stream.stopped()) {
      reply.finish = ChatFinish::Stop;
      break;
    }
    if (!keep) {
      reply.finish = ChatFinish::Interrupted;
      break;
    }
    if (int64_t(reply.tokens.size()) >= options.max_tokens || cache_.length >= cache_.capacity()) {
      reply.finish = ChatFinish::Length;
      break;
    }
    feed(&token, 1);
  }
  reply.stats.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  reply.stats.generated_tokens = int64_t(reply.tokens.size());
  TextDelta last = stream.finish();
  reply.reasoning += last.reasoning;
  reply.content += last.content;
  if (on_delta && !last.empty()) on_delta(last);
  turns.push_back({"assistant", reply.content, {}});
  turns_ = std::move(turns);
  return reply;
}

void save_chat_messages(const std::string& path, const std::vector<tokenizer::ChatMessage>& messages) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& m : messages) {
    nlohmann::json j = {{"role", m.role}};
    j["content"] = m.content ? nlohmann::json(*m.content) : nlohmann::json();
    out.push_back(std::move(j));
  }
  // Invalid UTF-8 (a reply cut inside a character cannot happen, but a user line can hold
  // anything) is written as U+FFFD rather than failing the save.
  const std::string text = out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  write_file_atomic(path, text.data(), text.size());
}

std::vector<tokenizer::ChatMessage> load_chat_messages(const std::string& path) {
  const std::string text = read_text_file(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(path, std::string("not valid JSON (") + e.what() + "); expected an array of {\"role\", \"content\"}");
  }
  return tokenizer::chat_messages_from_json(j, path);
}

}  // namespace whale
