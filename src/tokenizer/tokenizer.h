// A Hugging Face tokenizer.json byte-level BPE tokenizer: added tokens, normalizer,
// pre-tokenizer, BPE model and ByteLevel decoder. Immutable once loaded, so one instance is
// shared by all threads; per-thread state lives in EncodeScratch.
#pragma once
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"

namespace whale::tokenizer {

struct EncodeScratch {
  PreTokenizeScratch pre;
  BpeScratch bpe;
  std::vector<Section> sections;
  std::vector<Span> pieces;
  std::string sanitized, normalized;
};

// Settings from tokenizer_config.json (optional, next to tokenizer.json).
struct TokenizerConfig {
  bool add_bos_token = false, add_eos_token = false;
  std::string bos_token, eos_token, pad_token;
  std::string chat_template;
};

class Tokenizer {
 public:
  // Reads tokenizer.json and, when it exists beside it, tokenizer_config.json.
  static Tokenizer from_file(const std::string& path);
  // Parses tokenizer.json text; `where` names it in errors.
  static Tokenizer from_json(std::string_view json_text, const std::string& where,
                             TokenizerConfig config = {});

  // Ids of `text`. Invalid UTF-8 is first replaced with U+FFFD the way Node decodes bytes,
  // which is what the reference sees. add_special_tokens adds what tokenizer.json's
  // post_processor adds (TemplateProcessing's "single" special tokens; ByteLevel adds none,
  // so DeepSeek-V3 gets no BOS here, as in the reference and Hugging Face tokenizers).
  // Callers that want DeepSeek's BOS (tokenizer_config.json add_bos_token) prepend bos_id().
  std::vector<int> encode(std::string_view text, bool add_special_tokens = false) const;
  void encode(std::string_view text, bool add_special_tokens, std::vector<int>& out,
              EncodeScratch& scratch) const;
  // Encodes many texts on `threads` OpenMP threads (0: the OpenMP default); order is kept.
  std::vector<std::vector<int>> encode_batch(const std::vector<std::string>& texts,
                                             bool add_special_tokens, int threads = 0) const;

  // Raw bytes of the tokens (may end inside a UTF-8 character: useful when streaming).
  std::string decode_bytes(std::span<const int> ids, bool skip_special_tokens = false) const;
  // Text of the tokens, ill-formed UTF-8 replaced with U+FFFD as the reference decoder does.
  std::string decode(std::span<const int> ids, bool skip_special_tokens = false) const;

  // Id of a token string (vocab or added token), or -1.
  int token_to_id(std::string_view token) const;
  // Token string of an id (byte-level form for vocab entries), or "" when unknown.
  std::string id_to_token(int id) const;
  // One more than the largest id in vocab or added tokens.
  int vocab_size() const { return vocab_size_; }

  const BpeModel& model() const { return *model_; }
  const AddedTokens& added_tokens() const { return *added_; }
  const Normalizer& normalizer() const { return normalizer_; }
  const PreTokenizer& pre_tokenizer() const { return *pre_tokenizer_; }
  const TokenizerConfig& config() const { return config_; }
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }

 private:
  Tokenizer() = default;
  void encode_plain(std::string_view text, std::vector<int>& out, EncodeScratch& scratch) const;
  void finish_setup();

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<AddedTokens> added_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  Normalizer normalizer_;
  TokenizerConfig config_;
  int vocab_size_ = 0, bos_id_ = -1, eos_id_ = -1;
  std::vector<int> special_prefix_, special_suffix_;  // from a TemplateProcessing post_processor

  friend class TokenizerJsonLoader;
};

}  // namespace whale::tokenizer
