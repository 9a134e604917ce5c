// Training data: text files -> token shards (little-endian uint32, documents separated by EOS)
// with a train/validation split, and a loader that samples fixed-length windows from them.
// The directory layout and meta.json fields are described in docs/training.md ("Data").
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/mmap.h"
#include "core/progress.h"
#include "core/rng.h"

namespace whale {

struct DataPrepareOptions {
  std::string tokenizer;  // tokenizer.json (tokenizer_config.json beside it is copied too)
  std::string out_dir;
  std::vector<std::string> files;  // text files; each holds one or more documents
  double val_fraction = 0.05;      // share of tokens held out for validation, whole documents
  int64_t shard_tokens = 1 << 24;  // tokens per shard file
  uint64_t seed = 0;               // train/validation assignment of documents
};

struct DataStats {
  int64_t documents = 0, train_tokens = 0, val_tokens = 0, train_shards = 0, val_shards = 0;
  int64_t input_bytes = 0;  // text read, for throughput figures
};

// Writes DIR/{train,val}_NNNNN.bin, DIR/meta.json and a copy of the tokenizer; every file
// atomically, meta.json last (a killed run leaves no meta.json, so no loader accepts it).
// Documents: a file splits at lines that are exactly <|endoftext|>; a file without such lines
// splits into ~64 KB chunks at blank lines. Validation documents are drawn per source, by
// tokens, with a seeded shuffle; each split keeps the input order. progress may be null.
DataStats prepare_data(const DataPrepareOptions& options, Progress* progress);

class TokenLoader {
 public:
  // split: "train" or "val". Validates meta.json and every shard (size, token range), and
  // memory-maps the shards.
  TokenLoader(const std::string& dir, const std::string& split);
  int64_t vocab_size() const { return vocab_size_; }
  int32_t eos_id() const { return eos_id_; }
  int64_t tokens() const { return total_; }
  // B windows of T + 1 consecutive tokens at random offsets drawn from rng, row-major
  // [B, T + 1]. Every window start is equally likely, so a shard is chosen in proportion to
  // its windows; a window never crosses a shard's end.
  void sample(int64_t B, int64_t T, Rng& rng, std::vector<int32_t>* out) const;
  // Non-overlapping windows of T + 1 tokens in order (shard by shard), for evaluation.
  int64_t num_windows(int64_t T) const;
  void window(int64_t i, int64_t T, int32_t* out) const;

 private:
  struct Shard {
    std::unique_ptr<MappedFile> file;
    int64_t tokens = 0;
    const uint32_t* data() const { return reinterpret_cast<const uint32_t*>(file->data()); }
  };
  std::vector<Shard> shards_;
  std::string dir_, split_;
  int64_t vocab_size_ = 0, total_ = 0;
  int32_t eos_id_ = 0;
};

}  // namespace whale
