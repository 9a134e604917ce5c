#include "tokenizer/tokenizer.h"

#include <omp.h>

#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace whale::tokenizer {

std::vector<int> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  EncodeScratch scratch;
  std::vector<int> out;
  encode(text, add_special_tokens, out, scratch);
  return out;
}

void Tokenizer::encode(std::string_view text, bool add_special_tokens, std::vector<int>& out,
                       EncodeScratch& scratch) const {
  out.clear();
  if (add_special_tokens) out.insert(out.end(), special_prefix_.begin(), special_prefix_.end());
  if (!is_valid_utf8(text)) {
    scratch.sanitized = sanitize_utf8(text);
    text = scratch.sanitized;
  }
  added_->split(text, scratch.sections, scratch.pre.match);
  for (const Section& s : scratch.sections) {
    if (s.added_index >= 0) {
      out.push_back(added_->tokens()[size_t(s.added_index)].id);
    } else if (!s.text.empty()) {
      encode_plain(s.text, out, scratch);
    }
  }
  if (add_special_tokens) out.insert(out.end(), special_suffix_.begin(), special_suffix_.end());
}

void Tokenizer::encode_plain(std::string_view text, std::vector<int>& out,
                             EncodeScratch& scratch) const {
  if (normalizer_.apply(text, scratch.normalized)) text = scratch.normalized;
  pre_tokenizer_->split(text, scratch.pieces, scratch.pre);
  bool prefix = pre_tokenizer_->add_prefix_space();
  for (Span p : scratch.pieces)
    model_->encode_word(text.substr(p.begin, p.end - p.begin), prefix, out, scratch.bpe);
}

std::vector<std::vector<int>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                      bool add_special_tokens,
                                                      int threads) const {
  std::vector<std::vector<int>> result(texts.size());
  if (threads <= 0) threads = omp_get_max_threads();
#pragma omp parallel num_threads(threads)
  {
    EncodeScratch scratch;  // one word cache per thread: no locks on the hot path
#pragma omp for schedule(dynamic, 1)
    for (long i = 0; i < long(texts.size()); ++i)
      encode(texts[size_t(i)], add_special_tokens, result[size_t(i)], scratch);
  }
  return result;
}

std::string Tokenizer::decode_bytes(std::span<const int> ids, bool skip_special_tokens) const {
  std::string out;
  for (int id : ids) {
    if (const AddedToken* t = added_->find_by_id(id)) {
      if (!(skip_special_tokens && t->special)) out += t->content;
      continue;
    }
    const std::string& token = model_->id_to_token(id);
    if (!token.empty()) byte_level_decode(token, out);
    // Unknown ids decode to nothing, as in the reference (it maps them to undefined).
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int> ids, bool skip_special_tokens) const {
  std::string bytes = decode_bytes(ids, skip_special_tokens);
  return is_valid_utf8(bytes) ? bytes : sanitize_utf8(bytes);
}

int Tokenizer::token_to_id(std::string_view token) const {
  if (const AddedToken* t = added_->find_by_content(token)) return t->id;
  return model_->token_to_id(token);
}

std::string Tokenizer::id_to_token(int id) const {
  if (const AddedToken* t = added_->find_by_id(id)) return t->content;
  return model_->id_to_token(id);
}

void Tokenizer::finish_setup() {
  vocab_size_ = model_->max_id() + 1;
  for (const AddedToken& t : added_->tokens()) vocab_size_ = std::max(vocab_size_, t.id + 1);
  bos_id_ = config_.bos_token.empty() ? -1 : token_to_id(config_.bos_token);
  eos_id_ = config_.eos_token.empty() ? -1 : token_to_id(config_.eos_token);
}

}  // namespace whale::tokenizer
