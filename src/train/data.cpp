#include "train/data.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string_view>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace whale {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Shards are the host's uint32 written as is.
static_assert(std::endian::native == std::endian::little, "shards are little-endian uint32");

namespace {

constexpr const char* kFormat = "whale-tokens";
constexpr int64_t kFormatVersion = 1;
constexpr std::string_view kMarker = "<|endoftext|>";
constexpr size_t kChunkBytes = size_t(64) * 1024;  // document size for files without markers
constexpr size_t kBatchBytes = 4 << 20;            // text handed to one encode_batch call
constexpr size_t kWriteBuffer = 1 << 16;           // tokens buffered before a write()

bool has_text(std::string_view s) {
  return s.find_first_not_of(" \t\r\n") != std::string_view::npos;
}

// Drops one trailing line break (\n or \r\n): it belongs to the separator, not the document.
std::string_view drop_line_break(std::string_view s) {
  if (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
  return s;
}

// End of the paragraph that is open at `from`: just past the next blank line (and any blank
// lines after it). Text without blank lines falls back to the next line end.
size_t paragraph_end(std::string_view text, size_t from) {
  const size_t first_line_end = text.find('\n', from);
  if (first_line_end == std::string_view::npos) return text.size();
  for (size_t p = first_line_end; p != std::string_view::npos && p - from <= 4 * kChunkBytes;
       p = text.find('\n', p + 1)) {
    size_t q = p + 1;
    if (q < text.size() && text[q] == '\r') ++q;
    if (q < text.size() && text[q] == '\n') {
      while (q < text.size() && (text[q] == '\n' || text[q] == '\r')) ++q;
      return q;
    }
  }
  return first_line_end + 1;
}

// Documents of one file, as views into its text. Lines that are exactly <|endoftext|>
// separate documents (TinyStories' format); a file without them is one document, cut into
// ~64 KB chunks at blank lines so that the validation split can draw from every source.
std::vector<std::string_view> split_documents(std::string_view text) {
  std::vector<std::string_view> docs;
  bool markers = false;
  size_t doc_begin = 0;
  for (size_t pos = 0; pos < text.size();) {
    const size_t eol = std::min(text.find('\n', pos), text.size());
    std::string_view line = text.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == kMarker) {
      markers = true;
      std::string_view doc = drop_line_break(text.substr(doc_begin, pos - doc_begin));
      if (has_text(doc)) docs.push_back(doc);
      doc_begin = eol + 1;
    }
    pos = eol + 1;
  }
  if (markers) {
    if (doc_begin < text.size()) {
      std::string_view rest = drop_line_break(text.substr(doc_begin));
      if (has_text(rest)) docs.push_back(rest);
    }
    return docs;
  }
  for (size_t begin = 0; begin < text.size();) {
    // Cut only when a real chunk remains after the cut, so no tiny tail document.
    const size_t end = text.size() - begin > kChunkBytes + kChunkBytes / 2
                           ? paragraph_end(text, begin + kChunkBytes)
                           : text.size();
    std::string_view doc = text.substr(begin, end - begin);
    if (has_text(doc)) docs.push_back(doc);
    begin = end;
  }
  return docs;
}

std::string shard_name(const std::string& split, size_t index) {
  char name[64];
  std::snprintf(name, sizeof name, "%s_%05zu.bin", split.c_str(), index);
  return name;
}

// Appends tokens to the split's numbered shard files, each written through an AtomicWriter
// and committed when it holds shard_tokens tokens (or at finish()).
class ShardWriter {
 public:
  ShardWriter(const std::string& dir, const std::string& split, int64_t shard_tokens)
      : dir_(dir), split_(split), shard_tokens_(shard_tokens) {
    buffer_.reserve(kWriteBuffer);
  }
  void append(const std::vector<int>& ids, int eos) {
    for (int id : ids) push(uint32_t(id));
    push(uint32_t(eos));
  }
  void finish() {
    if (out_) close();
  }
  int64_t tokens() const { return tokens_; }
  const json& shards() const { return shards_; }

 private:
  void push(uint32_t id) {
    if (!out_)
      out_ = std::make_unique<AtomicWriter>(
          (fs::path(dir_) / shard_name(split_, shards_.size())).string());
    buffer_.push_back(id);
    ++tokens_;
    if (++in_shard_ == shard_tokens_) {
      close();
    } else if (buffer_.size() == kWriteBuffer) {
      flush();
    }
  }
  void flush() {
    out_->write(buffer_.data(), buffer_.size() * sizeof(uint32_t));
    buffer_.clear();
  }
  void close() {
    flush();
    out_->commit();
    out_.reset();
    shards_.push_back({{"file", shard_name(split_, shards_.size())}, {"tokens", in_shard_}});
    in_shard_ = 0;
  }

  std::string dir_, split_;
  int64_t shard_tokens_, tokens_ = 0, in_shard_ = 0;
  std::unique_ptr<AtomicWriter> out_;
  std::vector<uint32_t> buffer_;
  json shards_ = json::array();
};

struct Source {
  std::string path;
  int64_t bytes = 0, documents = 0, train_tokens = 0, val_tokens = 0;
};

tokenizer::Tokenizer load_tokenizer(const std::string& path) {
  if (path.empty()) throw Error("--tokenizer", "is required (a tokenizer.json)");
  if (!fs::is_regular_file(path))
    throw Error(path, "tokenizer file does not exist or is not a regular file");
  try {
    return tokenizer::Tokenizer::from_file(path);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(path, std::string("cannot read the tokenizer: ") + e.what());
  }
}

void copy_file_atomic(const fs::path& from, const fs::path& to) {
  const std::string text = read_text_file(from.string());
  write_file_atomic(to.string(), text.data(), text.size());
}

// train_NNNNN.bin or val_NNNNN.bin, or an AtomicWriter temporary of one (NAME.tmp.PID).
bool is_shard_file(std::string_view name) {
  auto digits = [&](size_t at) {
    size_t end = at;
    while (end < name.size() && name[end] >= '0' && name[end] <= '9') ++end;
    return end;
  };
  for (std::string_view split : {"train_", "val_"}) {
    if (!name.starts_with(split)) continue;
    const size_t end = digits(split.size());
    if (end - split.size() < 5 || name.substr(end, 4) != ".bin") return false;
    const std::string_view rest = name.substr(end + 4);
    return rest.empty() ||
           (rest.starts_with(".tmp.") && rest.size() > 5 && digits(end + 9) == name.size());
  }
  return false;
}

// Removes shards an earlier, larger run left behind, and temporaries of killed runs.
void remove_stale_shards(const std::string& dir, const json& train, const json& val) {
  std::vector<std::string> keep;
  for (const json* list : {&train, &val})
    for (const auto& s : *list) keep.push_back(s.at("file").get<std::string>());
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (is_shard_file(name) && std::find(keep.begin(), keep.end(), name) == keep.end())
      fs::remove(entry.path());
  }
}

}  // namespace

DataStats prepare_data(const DataPrepareOptions& o, Progress* progress) {
  if (o.out_dir.empty()) throw Error("--out", "is required (the data directory to write)");
  if (o.files.empty()) throw Error("data prepare", "no input files given");
  if (!(o.val_fraction >= 0 && o.val_fraction < 1))
    throw Error("--val-fraction", "must be in [0, 1), got " + std::to_string(o.val_fraction));
  if (o.shard_tokens <= 0)
    throw Error("--shard-tokens", "must be positive, got " + std::to_string(o.shard_tokens));

  DataStats stats;
  std::vector<Source> sources;
  for (const auto& f : o.files) {
    std::error_code ec;
    if (!fs::exists(f, ec)) throw Error(f, "input file does not exist");
    if (!fs::is_regular_file(f, ec)) throw Error(f, "input is not a regular file");
    sources.push_back({f, int64_t(fs::file_size(f, ec)), 0, 0, 0});
    stats.input_bytes += sources.back().bytes;
  }
  const tokenizer::Tokenizer tok = load_tokenizer(o.tokenizer);
  const int eos = tok.eos_id();
  if (eos < 0 || eos >= tok.vocab_size())
    throw Error(o.tokenizer,
                "has no EOS token (tokenizer_config.json eos_token); documents need a separator");
  try {
    fs::create_directories(o.out_dir);
  } catch (const fs::filesystem_error& e) {
    throw Error(o.out_dir, std::string("cannot create the data directory: ") + e.what());
  }
  // Without meta.json the directory is not loadable, so a run killed halfway cannot leave an
  // old meta.json describing a mix of old and new shards.
  fs::remove(fs::path(o.out_dir) / "meta.json");

  ShardWriter train(o.out_dir, "train", o.shard_tokens), val(o.out_dir, "val", o.shard_tokens);
  Rng rng(o.seed);
  // Tokens the validation split is short of (or over) its share so far; carried from one group
  // of documents to the next so that small sources add up to the right fraction.
  double val_debt = 0;
  std::vector<std::string> batch;
  std::vector<size_t> batch_source;
  size_t batch_bytes = 0;
  int64_t done_bytes = 0;
  if (progress) progress->start("tokenize", stats.input_bytes);

  auto flush_batch = [&] {
    const auto ids = tok.encode_batch(batch, false);
    // Each run of documents from one source picks its validation documents in a seeded order,
    // taking a document while that brings the split closer to its share of the tokens.
    for (size_t g = 0; g < batch.size();) {
      size_t h = g;
      int64_t group_tokens = 0;
      for (; h < batch.size() && batch_source[h] == batch_source[g]; ++h)
        group_tokens += int64_t(ids[h].size()) + 1;
      std::vector<size_t> order(h - g);
      std::iota(order.begin(), order.end(), size_t(0));
      for (size_t i = order.size(); i > 1; --i)
        std::swap(order[i - 1], order[size_t(rng.next() % i)]);
      std::vector<char> is_val(h - g, 0);
      double target = val_debt + o.val_fraction * double(group_tokens), taken = 0;
      if (o.val_fraction > 0) {
        for (size_t k : order) {
          const double n = double(ids[g + k].size() + 1);
          if (taken + n / 2 <= target) {
            is_val[k] = 1;
            taken += n;
          }
        }
      }
      val_debt = target - taken;
      Source& source = sources[batch_source[g]];
      for (size_t k = 0; k < h - g; ++k) {
        const auto& doc = ids[g + k];
        (is_val[k] ? val : train).append(doc, eos);
        (is_val[k] ? source.val_tokens : source.train_tokens) += int64_t(doc.size()) + 1;
      }
      g = h;
    }
    done_bytes += int64_t(batch_bytes);
    if (progress) progress->update(done_bytes);
    batch.clear();
    batch_source.clear();
    batch_bytes = 0;
  };

  for (size_t s = 0; s < sources.size(); ++s) {
    MappedFile file(sources[s].path);
    const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
    const auto docs = split_documents(text);
    if (docs.empty()) throw Error(sources[s].path, "holds no text (empty input)");
    sources[s].documents = int64_t(docs.size());
    stats.documents += int64_t(docs.size());
    for (std::string_view doc : docs) {
      batch.emplace_back(doc);
      batch_source.push_back(s);
      batch_bytes += doc.size();
      if (batch_bytes >= kBatchBytes) flush_batch();
    }
  }
  if (!batch.empty()) flush_batch();
  train.finish();
  val.finish();
  if (progress) {
    progress->update(stats.input_bytes);
    progress->finish();
  }
  if (train.tokens() == 0)
    throw Error("--val-fraction", std::to_string(o.val_fraction) + " leaves no training documents");

  const fs::path dir(o.out_dir);
  const fs::path config = fs::path(o.tokenizer).parent_path() / "tokenizer_config.json";
  copy_file_atomic(o.tokenizer, dir / "tokenizer.json");
  if (fs::exists(config)) {
    copy_file_atomic(config, dir / "tokenizer_config.json");
  } else {
    fs::remove(dir / "tokenizer_config.json");  // a stale one would change how the copy loads
  }

  json source_list = json::array();
  for (const auto& s : sources)
    source_list.push_back({{"file", s.path},
                           {"bytes", s.bytes},
                           {"documents", s.documents},
                           {"train_tokens", s.train_tokens},
                           {"val_tokens", s.val_tokens}});
  const json meta = {{"format", kFormat},
                     {"format_version", kFormatVersion},
                     {"dtype", "uint32"},
                     {"byte_order", "little"},
                     {"vocab_size", tok.vocab_size()},
                     {"eos_id", eos},
                     {"documents", stats.documents},
                     {"train_tokens", train.tokens()},
                     {"val_tokens", val.tokens()},
                     {"shard_tokens", o.shard_tokens},
                     {"val_fraction", o.val_fraction},
                     {"seed", o.seed},
                     {"tokenizer", "tokenizer.json"},
                     {"tokenizer_source", o.tokenizer},
                     {"sources", source_list},
                     {"train", train.shards()},
                     {"val", val.shards()}};
  const std::string text = meta.dump(2) + "\n";
  write_file_atomic((dir / "meta.json").string(), text.data(), text.size());
  remove_stale_shards(o.out_dir, train.shards(), val.shards());

  stats.train_tokens = train.tokens();
  stats.val_tokens = val.tokens();
  stats.train_shards = int64_t(train.shards().size());
  stats.val_shards = int64_t(val.shards().size());
  return stats;
}

namespace {

int64_t json_int(const json& object, const std::string& key, const std::string& where, int64_t lo,
                 int64_t hi) {
  const auto it = object.find(key);
  if (it == object.end()) throw Error(where, "field '" + key + "' is missing");
  if (!it->is_number_integer())
    throw Error(where, "field '" + key + "' must be an integer, got " + it->dump());
  if (it->is_number_unsigned() &&
      it->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    throw Error(where, "field '" + key + "' = " + it->dump() + " is out of range");
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi)
    throw Error(where, "field '" + key + "' = " + std::to_string(v) + " must be in [" +
                           std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

}  // namespace

TokenLoader::TokenLoader(const std::string& dir, const std::string& split)
    : dir_(dir), split_(split) {
  if (split != "train" && split != "val")
    throw Error("split", "must be 'train' or 'val', got '" + split + "'");
  const std::string meta_path = (fs::path(dir) / "meta.json").string();
  if (!fs::exists(meta_path))
    throw Error(dir,
                "no meta.json: not a data directory written by `whale data prepare` (or an "
                "interrupted one)");
  json meta;
  try {
    meta = json::parse(read_text_file(meta_path));
  } catch (const json::exception& e) {
    throw Error(meta_path, std::string("malformed JSON: ") + e.what());
  }
  if (!meta.is_object()) throw Error(meta_path, "must be a JSON object");
  const std::string format = meta.contains("format") && meta["format"].is_string()
                                 ? meta["format"].get<std::string>()
                                 : "";
  if (format == kFormat) {
    const int64_t version =
        json_int(meta, "format_version", meta_path, 0, std::numeric_limits<int64_t>::max());
    if (version != kFormatVersion)
      throw Error(meta_path, "format_version " + std::to_string(version) +
                                 " is not supported (expected " + std::to_string(kFormatVersion) +
                                 "); run `whale data prepare` again");
  } else if (format != "whale-tokens-1") {  // the first release's spelling of the same layout
    throw Error(meta_path,
                "field 'format' must be \"" + std::string(kFormat) + "\", got " +
                    (meta.contains("format") ? meta["format"].dump() : std::string("nothing")));
  }
  if (meta.contains("dtype") && meta["dtype"] != "uint32")
    throw Error(meta_path, "field 'dtype' must be \"uint32\", got " + meta["dtype"].dump());
  vocab_size_ = json_int(meta, "vocab_size", meta_path, 1, int64_t(1) << 32);
  eos_id_ = int32_t(
      json_int(meta, "eos_id", meta_path, 0, std::min<int64_t>(vocab_size_ - 1, INT32_MAX)));
  if (!meta.contains(split) || !meta[split].is_array())
    throw Error(meta_path, "field '" + split + "' must be a list of shards");

  for (const auto& entry : meta[split]) {
    const std::string where = meta_path + " " + split + "[" + std::to_string(shards_.size()) + "]";
    if (!entry.is_object() || !entry.contains("file") || !entry["file"].is_string())
      throw Error(where, "must be an object with 'file' (string) and 'tokens'");
    const std::string name = entry["file"].get<std::string>();
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      throw Error(where,
                  "shard name '" + name + "' must be a plain file name inside the data directory");
    Shard shard;
    shard.tokens = json_int(entry, "tokens", where, 1, std::numeric_limits<int64_t>::max() / 4);
    const std::string path = (fs::path(dir) / name).string();
    shard.file = std::make_unique<MappedFile>(path);
    const size_t bytes = shard.file->size();
    if (bytes % 4 != 0)
      throw Error(path,
                  std::to_string(bytes) +
                      " bytes is not a whole number of uint32 tokens (a torn or foreign file)");
    if (int64_t(bytes / 4) != shard.tokens)
      throw Error(path, "holds " + std::to_string(bytes / 4) + " tokens; meta.json says " +
                            std::to_string(shard.tokens));
    const uint32_t* d = shard.data();
    const int64_t n = shard.tokens;
    uint32_t max_id = 0;
#pragma omp parallel for reduction(max : max_id) if (n > (1 << 20))
    for (int64_t i = 0; i < n; ++i) max_id = std::max(max_id, d[i]);
    if (int64_t(max_id) >= vocab_size_) {
      int64_t i = 0;
      while (int64_t(d[i]) < vocab_size_) ++i;
      throw Error(path, "token id " + std::to_string(d[i]) + " at position " + std::to_string(i) +
                            " is not below vocab_size " + std::to_string(vocab_size_) +
                            " (meta.json)");
    }
    total_ += shard.tokens;
    shards_.push_back(std::move(shard));
  }
  if (shards_.empty()) throw Error(dir, "has no " + split + " shards (meta.json lists none)");
  if (meta.contains(split + "_tokens")) {
    const int64_t listed =
        json_int(meta, split + "_tokens", meta_path, 0, std::numeric_limits<int64_t>::max());
    if (listed != total_)
      throw Error(meta_path, "field '" + split + "_tokens' = " + std::to_string(listed) +
                                 " but the shards hold " + std::to_string(total_));
  }
}

void TokenLoader::sample(int64_t B, int64_t T, Rng& rng, std::vector<int32_t>* out) const {
  if (B <= 0 || T <= 0)
    throw Error("sample", "batch and window length must be positive, got B=" + std::to_string(B) +
                              " T=" + std::to_string(T));
  const int64_t len = T + 1;
  uint64_t total = 0;
  int64_t longest = 0;
  for (const auto& s : shards_) {
    if (s.tokens >= len) total += uint64_t(s.tokens - len + 1);
    longest = std::max(longest, s.tokens);
  }
  if (total == 0)
    throw Error(dir_, "every " + split_ +
                          " shard is shorter than a window of T + 1 = " + std::to_string(len) +
                          " tokens (the longest holds " + std::to_string(longest) +
                          "); use a shorter sequence or prepare with a larger --shard-tokens");
  // Uniform over all window starts: rejection keeps the draw unbiased for any total.
  const uint64_t limit = total * (std::numeric_limits<uint64_t>::max() / total);
  out->resize(size_t(B * len));
  for (int64_t b = 0; b < B; ++b) {
    uint64_t pick;
    do pick = rng.next();
    while (pick >= limit);
    pick %= total;
    for (const auto& s : shards_) {
      const uint64_t windows = s.tokens >= len ? uint64_t(s.tokens - len + 1) : 0;
      if (pick < windows) {
        std::transform(s.data() + pick, s.data() + pick + len, out->data() + b * len,
                       [](uint32_t id) { return int32_t(id); });
        break;
      }
      pick -= windows;
    }
  }
}

int64_t TokenLoader::num_windows(int64_t T) const {
  if (T <= 0)
    throw Error("num_windows", "window length T must be positive, got " + std::to_string(T));
  int64_t n = 0;
  for (const auto& s : shards_) n += s.tokens / (T + 1);
  return n;
}

void TokenLoader::window(int64_t i, int64_t T, int32_t* out) const {
  const int64_t count = num_windows(T);
  if (i < 0 || i >= count)
    throw Error(dir_, "evaluation window " + std::to_string(i) + " is out of range: the " + split_ +
                          " split has " + std::to_string(count) + " windows of " +
                          std::to_string(T + 1) + " tokens");
  for (const auto& s : shards_) {
    const int64_t n = s.tokens / (T + 1);
    if (i < n) {
      const uint32_t* d = s.data() + i * (T + 1);
      std::transform(d, d + T + 1, out, [](uint32_t id) { return int32_t(id); });
      return;
    }
    i -= n;
  }
}

}  // namespace whale
