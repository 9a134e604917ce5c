#include "tokenizer/bpe.h"

#include <algorithm>
#include <bit>
#include <limits>

#include "core/error.h"
#include "tokenizer/byte_level.h"

namespace whale::tokenizer {

BpeModel::BpeModel(TokenIds vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                   const std::string& where, bool ignore_merges, int unk_id)
    : vocab_(std::move(vocab)), ignore_merges_(ignore_merges), unk_id_(unk_id) {
  int max_id = -1;
  for (auto& [token, id] : vocab_) {
    if (id < 0) throw Error(where + ".vocab[\"" + token + "\"]", "negative id " + std::to_string(id));
    max_id = std::max(max_id, id);
  }
  id_to_token_.resize(size_t(max_id + 1));
  for (auto& [token, id] : vocab_) id_to_token_[size_t(id)] = token;

  size_t capacity = 16;
  while (capacity < merges.size() * 2) capacity *= 2;  // load factor <= 1/2
  merge_table_.assign(capacity, MergeSlot{});
  merge_shift_ = 64 - std::countr_zero(capacity);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    std::string field = where + ".merges[" + std::to_string(rank) + "]";
    int ia = token_to_id(a), ib = token_to_id(b), ir = token_to_id(a + b);
    if (ia < 0) throw Error(field, "merge part \"" + a + "\" is not in the vocab");
    if (ib < 0) throw Error(field, "merge part \"" + b + "\" is not in the vocab");
    if (ir < 0) throw Error(field, "merge result \"" + a + b + "\" is not in the vocab");
    // The first occurrence of a duplicated pair keeps its (lower) rank, as in transformers.js.
    if (find_merge(ia, ib)) continue;
    uint64_t key = pair_key(ia, ib);
    size_t i = (key * 0x9E3779B97F4A7C15ull) >> merge_shift_;
    while (merge_table_[i].key != kEmpty) i = (i + 1) & (capacity - 1);
    merge_table_[i] = {key, int(rank), ir};
    ++merge_count_;
  }
  const auto& alphabet = byte_to_unicode();
  for (int b = 0; b < 256; ++b) byte_ids_[size_t(b)] = token_to_id(alphabet[size_t(b)]);
}

int BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string& BpeModel::id_to_token(int id) const {
  static const std::string empty;
  if (id < 0 || size_t(id) >= id_to_token_.size()) return empty;
  return id_to_token_[size_t(id)];
}

void BpeModel::encode_word(std::string_view bytes, bool prefix_space, std::vector<int>& out,
                           BpeScratch& scratch) const {
  std::string_view key = bytes;
  if (prefix_space && (bytes.empty() || bytes[0] != ' ')) {
    scratch.key.assign(1, ' ');
    scratch.key.append(bytes);
    key = scratch.key;
  }
  if (auto it = scratch.cache.find(key); it != scratch.cache.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  std::vector<int> ids;
  if (ignore_merges_) {
    int whole = token_to_id(byte_level_encode(key));
    if (whole >= 0) ids.push_back(whole);
  }
  if (ids.empty()) {
    ids.reserve(key.size());
    for (unsigned char c : key) {
      int id = byte_ids_[c];
      // A vocab without this byte: fall back to unk if there is one, else drop the byte.
      if (id < 0) id = unk_id_;
      if (id >= 0) ids.push_back(id);
    }
    merge(ids, scratch);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  if (scratch.cache.size() > 200000) scratch.cache.clear();
  scratch.cache.emplace(std::string(key), std::move(ids));
}

// Repeatedly applies the lowest-ranked merge, leftmost first among equal ranks. This is the
// order of transformers.js (score = rank + position/length) and of Hugging Face tokenizers.
void BpeModel::merge(std::vector<int>& ids, BpeScratch& scratch) const {
  if (ids.size() < 2) return;
  if (ids.size() <= 48) return merge_short(ids, scratch);
  auto& sym = scratch.symbols;
  auto& heap = scratch.heap;
  sym.resize(ids.size());
  heap.clear();
  const int n = int(ids.size());
  for (int i = 0; i < n; ++i) sym[size_t(i)] = {ids[size_t(i)], i - 1, i + 1 < n ? i + 1 : -1, uint32_t(i)};
  auto later = [](const BpeScratch::Candidate& x, const BpeScratch::Candidate& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.position > y.position;
  };
  auto push = [&](int left) {
    int right = sym[size_t(left)].next;
    if (right < 0) return;
    const MergeSlot* m = find_merge(sym[size_t(left)].id, sym[size_t(right)].id);
    if (!m) return;
    heap.push_back({m->rank, sym[size_t(left)].position, left, right,
                    sym[size_t(left)].id, sym[size_t(right)].id});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    BpeScratch::Candidate c = heap.back();
    heap.pop_back();
    auto& l = sym[size_t(c.left)];
    if (l.id != c.left_id || l.next != c.right || sym[size_t(c.right)].id != c.right_id) continue;
    auto& r = sym[size_t(c.right)];
    l.id = find_merge(c.left_id, c.right_id)->result;
    l.next = r.next;
    if (r.next >= 0) sym[size_t(r.next)].prev = c.left;
    r.id = -1;  // dead: any queued entry naming it is now stale
    r.prev = r.next = -1;
    if (l.prev >= 0) push(l.prev);
    push(c.left);
  }
  ids.clear();
  for (int i = 0; i >= 0; i = sym[size_t(i)].next) ids.push_back(sym[size_t(i)].id);
}

// The same order for short words without a heap: keep each adjacent pair's rank, merge the
// leftmost lowest rank, refresh the two ranks next to it. O(n^2) but n is small, and it beats
// the heap's bookkeeping on typical pre-tokens (a few bytes).
void BpeModel::merge_short(std::vector<int>& ids, BpeScratch& scratch) const {
  constexpr int kNone = std::numeric_limits<int>::max();
  auto rank_of = [&](size_t i) {
    const MergeSlot* m = find_merge(ids[i], ids[i + 1]);
    return m ? m->rank : kNone;
  };
  auto& ranks = scratch.ranks;
  ranks.resize(ids.size() - 1);
  for (size_t i = 0; i + 1 < ids.size(); ++i) ranks[i] = rank_of(i);
  while (!ranks.empty()) {
    size_t best = 0;
    for (size_t i = 1; i < ranks.size(); ++i)
      if (ranks[i] < ranks[best]) best = i;
    if (ranks[best] == kNone) break;
    ids[best] = find_merge(ids[best], ids[best + 1])->result;
    ids.erase(ids.begin() + long(best) + 1);
    ranks.erase(ranks.begin() + long(best));
    if (best < ranks.size()) ranks[best] = rank_of(best);
    if (best > 0) ranks[best - 1] = rank_of(best - 1);
  }
}

}  // namespace whale::tokenizer
