#include "tokenizer/added_tokens.h"

namespace whale::tokenizer {

AddedTokens::AddedTokens()
    : leading_space_(js_compatible_pattern("^\\s+"), "added token lstrip"),
      trailing_space_(js_compatible_pattern("\\s+\\z"), "added token rstrip") {
  trie_.emplace_back();
}

void AddedTokens::add(AddedToken token) {
  int index = int(tokens_.size());
  if (!token.content.empty()) {
    int node = 0;
    for (unsigned char c : token.content) {
      auto it = trie_[size_t(node)].children.find(c);
      if (it == trie_[size_t(node)].children.end()) {
        int child = int(trie_.size());
        trie_[size_t(node)].children.emplace(c, child);
        trie_.emplace_back();
        node = child;
      } else {
        node = it->second;
      }
    }
    // A later duplicate of the same content wins, like a JS Map built from the list.
    trie_[size_t(node)].token = index;
    first_byte_[(unsigned char)token.content[0]] = true;
  }
  by_id_[token.id] = index;
  tokens_.push_back(std::move(token));
}

const AddedToken* AddedTokens::find_by_id(int id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[size_t(it->second)];
}

const AddedToken* AddedTokens::find_by_content(std::string_view content) const {
  int node = 0;
  for (unsigned char c : content) {
    auto it = trie_[size_t(node)].children.find(c);
    if (it == trie_[size_t(node)].children.end()) return nullptr;
    node = it->second;
  }
  int t = trie_[size_t(node)].token;
  return t < 0 ? nullptr : &tokens_[size_t(t)];
}

void AddedTokens::split(std::string_view text, std::vector<Section>& out,
                        MatchState& match) const {
  out.clear();
  size_t start = 0, i = 0;
  while (i < text.size()) {
    if (!first_byte_[(unsigned char)text[i]]) {
      ++i;
      continue;
    }
    int node = 0, found = -1;
    size_t found_end = i;
    for (size_t j = i; j < text.size(); ++j) {
      auto it = trie_[size_t(node)].children.find((unsigned char)text[j]);
      if (it == trie_[size_t(node)].children.end()) break;
      node = it->second;
      if (trie_[size_t(node)].token >= 0) {
        found = trie_[size_t(node)].token;
        found_end = j + 1;
      }
    }
    if (found < 0) {
      ++i;
      continue;
    }
    if (i > start) out.push_back({text.substr(start, i - start), -1});
    out.push_back({text.substr(i, found_end - i), found});
    i = start = found_end;
  }
  if (start < text.size()) out.push_back({text.substr(start), -1});

  for (size_t k = 0; k < out.size(); ++k) {
    if (out[k].added_index < 0) continue;
    const AddedToken& t = tokens_[size_t(out[k].added_index)];
    size_t b, e;
    if (t.lstrip && k > 0 && out[k - 1].added_index < 0) {
      auto& prev = out[k - 1].text;
      if (trailing_space_.find(prev, 0, b, e, match)) prev = prev.substr(0, b);
    }
    if (t.rstrip && k + 1 < out.size() && out[k + 1].added_index < 0) {
      auto& next = out[k + 1].text;
      if (leading_space_.find(next, 0, b, e, match)) next = next.substr(e);
    }
  }
}

}  // namespace whale::tokenizer
