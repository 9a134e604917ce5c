#include "train/data.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace whale {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Documents of one file: split at lines that are exactly <|endoftext|> (TinyStories style);
// otherwise at blank lines into chunks of about 64 KB, so every source reaches the split.
std::vector<std::string> split_documents(const std::string& text) {
  std::vector<std::string> docs;
  const std::string marker = "<|endoftext|>";
  if (text.find("\n" + marker + "\n") != std::string::npos || text.rfind(marker + "\n", 0) == 0) {
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find("\n" + marker, start);
      if (end == std::string::npos) end = text.size();
      std::string doc = text.substr(start, end - start);
      if (doc.find_first_not_of(" \n\r\t") != std::string::npos) docs.push_back(doc);
      start = end == text.size() ? end : end + marker.size() + 2;
    }
    return docs;
  }
  const size_t target = 64 * 1024;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = start + target;
    if (end >= text.size()) {
      end = text.size();
    } else {
      size_t para = text.find("\n\n", end);
      end = para == std::string::npos ? text.size() : para + 2;
    }
    std::string doc = text.substr(start, end - start);
    if (doc.find_first_not_of(" \n\r\t") != std::string::npos) docs.push_back(doc);
    start = end;
  }
  return docs;
}

void write_shards(const std::string& dir, const std::string& split, const std::vector<uint32_t>& tokens,
                  int64_t shard_tokens, json* list) {
  int64_t index = 0;
  for (int64_t begin = 0; begin < int64_t(tokens.size()); begin += shard_tokens, ++index) {
    const int64_t n = std::min<int64_t>(shard_tokens, int64_t(tokens.size()) - begin);
    char name[64];
    std::snprintf(name, sizeof name, "%s_%05lld.bin", split.c_str(), (long long)index);
    write_file_atomic((fs::path(dir) / name).string(), tokens.data() + begin, size_t(n) * 4);
    list->push_back({{"file", name}, {"tokens", n}});
  }
}

}  // namespace

DataStats prepare_data(const DataPrepareOptions& o, Progress* progress) {
  if (o.files.empty()) throw Error("data prepare", "no input files given");
  if (!(o.val_fraction >= 0 && o.val_fraction < 1)) throw Error("--val-fraction", "must be in [0, 1)");
  if (o.shard_tokens <= 0) throw Error("--shard-tokens", "must be positive");
  auto tok = tokenizer::Tokenizer::from_file(o.tokenizer);
  const int eos = tok.eos_id();
  if (eos < 0) throw Error(o.tokenizer, "has no EOS token (tokenizer_config.json eos_token); documents need a separator");
  DataStats stats;
  std::vector<std::string> docs;
  json sources = json::array();
  for (const auto& f : o.files) {
    if (!fs::is_regular_file(f)) throw Error(f, "input file does not exist or is not a regular file");
    std::string text = read_text_file(f);
    stats.input_bytes += int64_t(text.size());
    auto d = split_documents(text);
    sources.push_back({{"file", fs::path(f).filename().string()}, {"bytes", text.size()}, {"documents", d.size()}});
    for (auto& x : d) docs.push_back(std::move(x));
  }
  if (docs.empty()) throw Error("data prepare", "the input files hold no text");
  stats.documents = int64_t(docs.size());
  // Deterministic validation choice: a seeded draw per document.
  Rng rng(o.seed ^ 0x5eed0fda7aull);
  std::vector<bool> is_val(docs.size());
  for (size_t i = 0; i < docs.size(); ++i) is_val[i] = rng.uniform() < o.val_fraction;
  if (o.val_fraction > 0 && docs.size() > 1 && std::none_of(is_val.begin(), is_val.end(), [](bool v) { return v; }))
    is_val.back() = true;  // always hold out at least one document
  std::vector<uint32_t> train, val;
  const size_t chunk = 256;
  if (progress) progress->start("tokenize", stats.input_bytes);
  int64_t done_bytes = 0;
  for (size_t begin = 0; begin < docs.size(); begin += chunk) {
    const size_t end = std::min(docs.size(), begin + chunk);
    std::vector<std::string> batch(docs.begin() + long(begin), docs.begin() + long(end));
    auto ids = tok.encode_batch(batch, false);
    for (size_t i = 0; i < ids.size(); ++i) {
      auto& dst = is_val[begin + i] ? val : train;
      for (int id : ids[i]) dst.push_back(uint32_t(id));
      dst.push_back(uint32_t(eos));
      done_bytes += int64_t(batch[i].size());
    }
    if (progress) progress->update(done_bytes);
  }
  if (progress) progress->finish();
  if (train.empty()) throw Error("data prepare", "no training documents left after the validation split");
  fs::create_directories(o.out_dir);
  json meta = {{"format", "whale-tokens-1"}, {"dtype", "uint32"}, {"vocab_size", tok.vocab_size()},
               {"eos_id", eos}, {"train_tokens", train.size()}, {"val_tokens", val.size()},
               {"documents", stats.documents}, {"val_fraction", o.val_fraction}, {"seed", o.seed},
               {"sources", sources}, {"train", json::array()}, {"val", json::array()}};
  write_shards(o.out_dir, "train", train, o.shard_tokens, &meta["train"]);
  write_shards(o.out_dir, "val", val, o.shard_tokens, &meta["val"]);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    const fs::path src = fs::path(o.tokenizer).parent_path() / f;
    const fs::path from = std::string(f) == "tokenizer.json" ? fs::path(o.tokenizer) : src;
    if (fs::exists(from)) {
      const std::string text = read_text_file(from.string());
      write_file_atomic((fs::path(o.out_dir) / f).string(), text.data(), text.size());
    }
  }
  const std::string text = meta.dump(2) + "\n";
  write_file_atomic((fs::path(o.out_dir) / "meta.json").string(), text.data(), text.size());
  stats.train_tokens = int64_t(train.size());
  stats.val_tokens = int64_t(val.size());
  stats.train_shards = int64_t(meta["train"].size());
  stats.val_shards = int64_t(meta["val"].size());
  return stats;
}

TokenLoader::TokenLoader(const std::string& dir, const std::string& split) : dir_(dir), split_(split) {
  const std::string meta_path = (fs::path(dir) / "meta.json").string();
  if (!fs::exists(meta_path)) throw Error(dir, "no meta.json: not a data directory from `whale data prepare`");
  json meta;
  try {
    meta = json::parse(read_text_file(meta_path));
    vocab_size_ = meta.at("vocab_size").get<int64_t>();
    eos_id_ = meta.at("eos_id").get<int32_t>();
    if (!meta.at(split).is_array()) throw Error(meta_path, "field '" + split + "' must be a list of shards");
  } catch (const json::exception& e) {
    throw Error(meta_path, std::string("malformed: ") + e.what());
  }
  for (const auto& s : meta[split]) {
    Shard shard;
    std::string file;
    try {
      file = s.at("file").get<std::string>();
      shard.tokens = s.at("tokens").get<int64_t>();
    } catch (const json::exception& e) {
      throw Error(meta_path, std::string("malformed shard entry: ") + e.what());
    }
    if (file.find('/') != std::string::npos) throw Error(meta_path, "shard name '" + file + "' must be a plain file name");
    const std::string path = (fs::path(dir) / file).string();
    shard.file = std::make_unique<MappedFile>(path);
    if (shard.file->size() % 4 != 0 || int64_t(shard.file->size() / 4) != shard.tokens)
      throw Error(path, "holds " + std::to_string(shard.file->size()) + " bytes; meta.json says " +
                            std::to_string(shard.tokens) + " uint32 tokens");
    const uint32_t* d = shard.data();
    for (int64_t i = 0; i < shard.tokens; ++i)
      if (int64_t(d[i]) >= vocab_size_)
        throw Error(path, "token " + std::to_string(d[i]) + " at position " + std::to_string(i) +
                              " is outside vocab_size " + std::to_string(vocab_size_));
    total_ += shard.tokens;
    shards_.push_back(std::move(shard));
  }
  if (shards_.empty()) throw Error(dir, "has no " + split + " shards");
}

void TokenLoader::sample(int64_t B, int64_t T, Rng& rng, std::vector<int32_t>* out) const {
  std::vector<int64_t> windows(shards_.size());
  int64_t total = 0;
  for (size_t i = 0; i < shards_.size(); ++i) {
    windows[i] = std::max<int64_t>(0, shards_[i].tokens - (T + 1) + 1);
    total += windows[i];
  }
  if (total == 0)
    throw Error(dir_, "every " + split_ + " shard is shorter than a window of " + std::to_string(T + 1) + " tokens");
  out->resize(size_t(B * (T + 1)));
  for (int64_t b = 0; b < B; ++b) {
    int64_t pick = int64_t(rng.next() % uint64_t(total));
    size_t s = 0;
    while (pick >= windows[s]) pick -= windows[s++];
    const uint32_t* d = shards_[s].data() + pick;
    for (int64_t t = 0; t <= T; ++t) (*out)[size_t(b * (T + 1) + t)] = int32_t(d[t]);
  }
}

int64_t TokenLoader::num_windows(int64_t T) const {
  int64_t n = 0;
  for (const auto& s : shards_) n += s.tokens / (T + 1);
  return n;
}

void TokenLoader::window(int64_t i, int64_t T, int32_t* out) const {
  for (const auto& s : shards_) {
    const int64_t n = s.tokens / (T + 1);
    if (i < n) {
      const uint32_t* d = s.data() + i * (T + 1);
      for (int64_t t = 0; t <= T; ++t) out[t] = int32_t(d[t]);
      return;
    }
    i -= n;
  }
  throw Error(dir_, "evaluation window index out of range");
}

}  // namespace whale
