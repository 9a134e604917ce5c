// Learns byte-level BPE merges from text with DeepSeek-V3's pre-tokenization and writes a
// standard tokenizer.json that whale and Hugging Face-compatible libraries load.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "core/progress.h"

namespace whale::tokenizer {

struct SpecialToken {
  std::string content;
  bool special;  // false for chat markers that must survive skip_special_tokens
};

// DeepSeek-V3/R1's BOS, EOS, padding, chat markers and reasoning tags, with DeepSeek's flags.
std::vector<SpecialToken> deepseek_special_tokens();
// DeepSeek-V3's Split patterns, in order (digits, CJK runs, words/punctuation/space).
const std::vector<std::string>& deepseek_split_patterns();

struct TrainOptions {
  int vocab_size = 8192;  // total: 256 bytes + merges + special tokens
  int min_frequency = 2;  // a pair seen fewer times is not merged
  int threads = 0;        // 0: OpenMP default
  std::vector<SpecialToken> special_tokens = deepseek_special_tokens();
};

struct TrainStats {
  int vocab_size = 0, merges = 0;
  size_t bytes = 0, distinct_words = 0;
  double seconds = 0;
};

// Ids: bytes 0..255 (GPT-2 byte alphabet), then merges in rank order, then special tokens.
// Training stops early when no pair reaches min_frequency. Throws whale::Error for unreadable
// files or a vocab_size too small to hold the bytes and special tokens.
std::string train_bpe(const std::vector<std::string>& files, const TrainOptions& options,
                      Progress* progress = nullptr, TrainStats* stats = nullptr);
std::string train_bpe_from_texts(const std::vector<std::string>& texts, const TrainOptions& options,
                                 Progress* progress = nullptr, TrainStats* stats = nullptr);

}  // namespace whale::tokenizer
