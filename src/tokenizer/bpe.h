// The byte-level BPE model: vocab, ranked merges, and the merge loop for one pre-token.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace whale::tokenizer {

// Hash that lets unordered_map<std::string, ...> be probed with a string_view (no copy).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenIds = std::unordered_map<std::string, int, StringHash, std::equal_to<>>;

// Per-thread buffers and the word cache used while encoding.
struct BpeScratch {
  struct Symbol {
    int id;
    int prev, next;  // neighbours in the linked list, -1 at the ends
    uint32_t position;  // original position, breaks ties between equal ranks (leftmost first)
  };
  struct Candidate {
    int rank;
    uint32_t position;
    int left, right;     // symbol indices
    int left_id, right_id;  // ids when queued; a mismatch later means the entry is stale
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  std::vector<int> ranks;  // rank of each adjacent pair, for the short-word path
  // Pre-token bytes -> ids. Cleared when it grows past a bound so memory stays flat.
  std::unordered_map<std::string, std::vector<int>, StringHash, std::equal_to<>> cache;
  std::string key;
};

class BpeModel {
 public:
  // vocab: token string -> id. merges: pairs of token strings in rank order. `where` names the
  // JSON field for errors. A merge whose parts or result are missing from vocab is an error,
  // as in Hugging Face tokenizers.
  BpeModel(TokenIds vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           const std::string& where, bool ignore_merges, int unk_id);

  // Appends the ids of one pre-token given as raw bytes; `prefix_space` prepends ' '.
  void encode_word(std::string_view bytes, bool prefix_space, std::vector<int>& out,
                   BpeScratch& scratch) const;

  int token_to_id(std::string_view token) const;
  // Empty string for ids with no vocab entry.
  const std::string& id_to_token(int id) const;
  size_t vocab_entries() const { return vocab_.size(); }
  size_t merge_count() const { return merge_count_; }
  int max_id() const { return int(id_to_token_.size()) - 1; }

 private:
  void merge(std::vector<int>& ids, BpeScratch& scratch) const;
  void merge_short(std::vector<int>& ids, BpeScratch& scratch) const;
  static uint64_t pair_key(int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  TokenIds vocab_;
  std::vector<std::string> id_to_token_;
  // Open-addressing table from pair_key to (rank, result): the merge loop's hot lookup, where
  // std::unordered_map's node chasing cost a third of the encode time.
  struct MergeSlot {
    uint64_t key = kEmpty;
    int rank = 0, result = 0;
  };
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  const MergeSlot* find_merge(int a, int b) const {
    uint64_t key = pair_key(a, b);
    size_t mask = merge_table_.size() - 1;
    for (size_t i = (key * 0x9E3779B97F4A7C15ull) >> merge_shift_;; i = (i + 1) & mask) {
      const MergeSlot& s = merge_table_[i];
      if (s.key == key) return &s;
      if (s.key == kEmpty) return nullptr;
    }
  }
  std::vector<MergeSlot> merge_table_;
  int merge_shift_ = 64;
  size_t merge_count_ = 0;
  std::array<int, 256> byte_ids_;  // id of each byte's one-character token, -1 if absent
  bool ignore_merges_;
  int unk_id_;
};

}  // namespace whale::tokenizer
