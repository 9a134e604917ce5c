#include "tokenizer/trainer.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "core/mmap.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/utf8.h"

namespace whale::tokenizer {
namespace {

using WordCounts = std::unordered_map<std::string, int64_t>;

uint64_t pair_key(int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

// Text cut at line ends into pieces of about 1 MB so threads share the work.
struct Chunk {
  const std::string* text;
  size_t begin, end;
};

std::vector<Chunk> chunk(const std::vector<std::string>& texts) {
  std::vector<Chunk> chunks;
  const size_t target = 1 << 20;
  for (const auto& t : texts) {
    size_t begin = 0;
    while (begin < t.size()) {
      size_t end = std::min(t.size(), begin + target);
      size_t nl = end < t.size() ? t.find('\n', end) : std::string::npos;
      end = nl == std::string::npos ? t.size() : nl + 1;
      chunks.push_back({&t, begin, end});
      begin = end;
    }
  }
  return chunks;
}

// Counts pre-tokens (as raw bytes) over all chunks; special tokens in the text are skipped.
WordCounts count_words(const std::vector<std::string>& texts, const TrainOptions& options,
                       Progress* progress, size_t total_bytes) {
  PreTokenizer pre;
  for (const auto& p : deepseek_split_patterns())
    pre.add_regex_split(p, SplitBehavior::Isolated, false, "trainer");
  pre.add_byte_level(false, false, "trainer");
  AddedTokens specials;
  for (size_t i = 0; i < options.special_tokens.size(); ++i)
    specials.add({int(i), options.special_tokens[i].content, true, false, false, false, false});

  std::vector<Chunk> chunks = chunk(texts);
  int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  std::vector<WordCounts> local(static_cast<size_t>(threads));
  size_t done_bytes = 0;
  if (progress) progress->start("counting words", int64_t(total_bytes));
#pragma omp parallel num_threads(threads)
  {
    WordCounts& counts = local[size_t(omp_get_thread_num())];
    PreTokenizeScratch scratch;
    std::vector<Section> sections;
    std::vector<Span> pieces;
#pragma omp for schedule(dynamic, 1)
    for (long c = 0; c < long(chunks.size()); ++c) {
      const Chunk& ch = chunks[size_t(c)];
      std::string_view raw(ch.text->data() + ch.begin, ch.end - ch.begin);
      std::string clean;
      if (!is_valid_utf8(raw)) {
        clean = sanitize_utf8(raw);
        raw = clean;
      }
      specials.split(raw, sections, scratch.match);
      for (const Section& s : sections) {
        if (s.added_index >= 0) continue;
        pre.split(s.text, pieces, scratch);
        for (Span p : pieces) ++counts[std::string(s.text.substr(p.begin, p.end - p.begin))];
      }
#pragma omp critical(trainer_progress)
      {
        done_bytes += ch.end - ch.begin;
        if (progress) progress->update(int64_t(done_bytes));
      }
    }
  }
  if (progress) progress->finish();
  WordCounts all = std::move(local[0]);
  for (size_t t = 1; t < local.size(); ++t)
    for (auto& [w, n] : local[t]) all[w] += n;
  return all;
}

// The classic incremental BPE trainer (as in Hugging Face tokenizers' BpeTrainer): pair counts
// and the words holding each pair are kept up to date, and a max-heap with lazy re-checks
// picks the most frequent pair. Ties go to the smaller (left id, right id).
struct MergeLearner {
  std::vector<std::vector<int>> words;
  std::vector<int64_t> counts;
  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<int>> where;  // may hold stale word indices
  struct Entry {
    int64_t count;
    uint64_t pair;
    bool operator<(const Entry& o) const { return count != o.count ? count < o.count : pair > o.pair; }
  };
  std::priority_queue<Entry> queue;

  void add_pairs(int w) {
    const auto& s = words[size_t(w)];
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      uint64_t k = pair_key(s[i], s[i + 1]);
      pair_counts[k] += counts[size_t(w)];
      auto& list = where[k];
      if (list.empty() || list.back() != w) list.push_back(w);
    }
  }

  // Replaces (a, b) by `merged` in every word that holds it, updating counts.
  void apply(int a, int b, int merged) {
    uint64_t key = pair_key(a, b);
    std::vector<int> holders = std::move(where[key]);
    where.erase(key);
    std::unordered_map<uint64_t, int64_t> delta;
    for (int w : holders) {
      auto& s = words[size_t(w)];
      int64_t n = counts[size_t(w)];
      bool changed = false;
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        if (s[i] != a || s[i + 1] != b) continue;
        changed = true;
        if (i > 0) {
          delta[pair_key(s[i - 1], a)] -= n;
          delta[pair_key(s[i - 1], merged)] += n;
        }
        if (i + 2 < s.size()) {
          delta[pair_key(b, s[i + 2])] -= n;
          delta[pair_key(merged, s[i + 2])] += n;
        }
        s[i] = merged;
        s.erase(s.begin() + long(i) + 1);
      }
      if (!changed) continue;
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        if (s[i] != merged && s[i + 1] != merged) continue;
        auto& list = where[pair_key(s[i], s[i + 1])];
        if (list.empty() || list.back() != w) list.push_back(w);
      }
    }
    pair_counts.erase(key);
    for (auto& [k, d] : delta) {
      if (d == 0) continue;
      int64_t& c = pair_counts[k];
      c += d;
      if (c <= 0) {
        pair_counts.erase(k);
      } else if (d > 0) {
        queue.push({c, k});
      }
    }
  }

  // Most frequent live pair with count >= min_count, or false.
  bool best(int64_t min_count, uint64_t& pair) {
    while (!queue.empty()) {
      Entry e = queue.top();
      queue.pop();
      auto it = pair_counts.find(e.pair);
      if (it == pair_counts.end()) continue;
      if (it->second != e.count) {  // stale: count fell since it was queued
        queue.push({it->second, e.pair});
        continue;
      }
      if (e.count < min_count) return false;
      pair = e.pair;
      return true;
    }
    return false;
  }
};

}  // namespace

std::vector<SpecialToken> deepseek_special_tokens() {
  return {{"<｜begin▁of▁sentence｜>", true}, {"<｜end▁of▁sentence｜>", true},
          {"<｜▁pad▁｜>", true},            {"<｜User｜>", false},
          {"<｜Assistant｜>", false},        {"<think>", false},
          {"</think>", false}};
}

const std::vector<std::string>& deepseek_split_patterns() {
  // Copied from DeepSeek-V3's tokenizer.json (pre_tokenizer.pretokenizers[0..2]).
  static const std::vector<std::string> patterns = {
      "\\p{N}{1,3}",
      "[一-龥\u3040-ゟ゠-ヿ]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
      " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"};
  return patterns;
}

std::string train_bpe(const std::vector<std::string>& files, const TrainOptions& options,
                      Progress* progress, TrainStats* stats) {
  std::vector<std::string> texts;
  for (const auto& f : files) texts.push_back(read_text_file(f));
  return train_bpe_from_texts(texts, options, progress, stats);
}

std::string train_bpe_from_texts(const std::vector<std::string>& texts, const TrainOptions& options,
                                 Progress* progress, TrainStats* stats) {
  auto t0 = std::chrono::steady_clock::now();
  const int specials = int(options.special_tokens.size());
  const int target_merges = options.vocab_size - 256 - specials;
  if (target_merges < 0)
    throw Error("--vocab-size", std::to_string(options.vocab_size) + " is too small: need at least " +
                                    std::to_string(256 + specials) + " (256 bytes + special tokens)");
  size_t total_bytes = 0;
  for (const auto& t : texts) total_bytes += t.size();

  WordCounts word_counts = count_words(texts, options, progress, total_bytes);

  MergeLearner learner;
  learner.words.reserve(word_counts.size());
  // Sorted so that the result does not depend on hash-map order or thread count.
  std::vector<std::pair<std::string, int64_t>> sorted(word_counts.begin(), word_counts.end());
  std::sort(sorted.begin(), sorted.end());
  for (auto& [w, n] : sorted) {
    std::vector<int> symbols(w.begin(), w.end());
    for (int& s : symbols) s &= 0xFF;  // byte b has id b
    learner.words.push_back(std::move(symbols));
    learner.counts.push_back(n);
  }
  for (int w = 0; w < int(learner.words.size()); ++w) learner.add_pairs(w);
  for (auto& [k, c] : learner.pair_counts) learner.queue.push({c, k});

  std::vector<std::string> vocab;  // id -> byte-level token string
  const auto& alphabet = byte_to_unicode();
  for (int b = 0; b < 256; ++b) vocab.push_back(alphabet[size_t(b)]);
  std::vector<std::pair<int, int>> merges;
  if (progress) progress->start("learning merges", target_merges);
  uint64_t pair;
  while (int(merges.size()) < target_merges && learner.best(options.min_frequency, pair)) {
    int a = int(pair >> 32), b = int(pair & 0xFFFFFFFF);
    int merged = int(vocab.size());
    vocab.push_back(vocab[size_t(a)] + vocab[size_t(b)]);
    merges.emplace_back(a, b);
    learner.apply(a, b, merged);
    if (progress) progress->update(int64_t(merges.size()));
  }
  if (progress) progress->finish();

  nlohmann::ordered_json root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  auto added = nlohmann::ordered_json::array();
  for (int i = 0; i < specials; ++i) {
    const auto& s = options.special_tokens[size_t(i)];
    added.push_back({{"id", int(vocab.size()) + i}, {"content", s.content}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                     {"special", s.special}});
  }
  root["added_tokens"] = added;
  root["normalizer"] = nullptr;
  auto splits = nlohmann::ordered_json::array();
  for (const auto& p : deepseek_split_patterns())
    splits.push_back({{"type", "Split"}, {"pattern", {{"Regex", p}}}, {"behavior", "Isolated"}, {"invert", false}});
  splits.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
  root["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", splits}};
  root["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  root["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  nlohmann::ordered_json model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  model["ignore_merges"] = false;
  nlohmann::ordered_json vocab_json = nlohmann::ordered_json::object();
  for (size_t i = 0; i < vocab.size(); ++i) vocab_json[vocab[i]] = int(i);
  model["vocab"] = vocab_json;
  auto merges_json = nlohmann::ordered_json::array();
  for (auto [a, b] : merges) merges_json.push_back({vocab[size_t(a)], vocab[size_t(b)]});
  model["merges"] = merges_json;
  root["model"] = model;

  if (stats) {
    stats->vocab_size = int(vocab.size()) + specials;
    stats->merges = int(merges.size());
    stats->bytes = total_bytes;
    stats->distinct_words = word_counts.size();
    stats->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return root.dump(1);
}

}  // namespace whale::tokenizer
