#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/mmap.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"

using namespace whale;
namespace fs = std::filesystem;

namespace {
const std::string kTokenizer = std::string(WHALE_SOURCE_DIR) + "/data/tokenizers/deepseek_v3/tokenizer.json";

std::string write_text(const std::string& name, const std::string& text) {
  const fs::path p = fs::path(::testing::TempDir()) / name;
  std::ofstream(p, std::ios::binary) << text;
  return p.string();
}

DataPrepareOptions options(const std::string& out, std::vector<std::string> files) {
  DataPrepareOptions o;
  o.tokenizer = kTokenizer;
  o.out_dir = (fs::path(::testing::TempDir()) / out).string();
  o.files = std::move(files);
  o.val_fraction = 0.3;
  o.shard_tokens = 50;  // many small shards
  o.seed = 4;
  return o;
}

std::vector<uint32_t> read_split(const std::string& dir, const std::string& split) {
  std::vector<uint32_t> all;
  for (int i = 0;; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "%s_%05d.bin", split.c_str(), i);
    const fs::path p = fs::path(dir) / name;
    if (!fs::exists(p)) break;
    std::string bytes = read_text_file(p.string());
    const size_t n = bytes.size() / 4;
    const size_t old = all.size();
    all.resize(old + n);
    std::memcpy(all.data() + old, bytes.data(), n * 4);
  }
  return all;
}
}  // namespace

TEST(DataPrepare, ShardsDecodeBackToTheDocuments) {
  std::string stories;
  std::vector<std::string> docs;
  for (int i = 0; i < 12; ++i) {
    docs.push_back("Story " + std::to_string(i) + ": the whale swam far, and sang a song about the sea.");
    stories += docs.back() + "\n<|endoftext|>\n";
  }
  auto o = options("data_ok", {write_text("stories.txt", stories)});
  DataStats s = prepare_data(o, nullptr);
  EXPECT_EQ(s.documents, 12);
  EXPECT_GT(s.val_tokens, 0);
  EXPECT_GT(s.train_shards, 1);
  auto tok = tokenizer::Tokenizer::from_file(kTokenizer);
  std::string decoded;
  for (const auto& split : {"train", "val"}) {
    auto ids = read_split(o.out_dir, split);
    std::vector<int> as_int(ids.begin(), ids.end());
    decoded += tok.decode(as_int);
  }
  // every document appears, each followed by EOS
  for (const auto& d : docs) EXPECT_NE(decoded.find(d + "<｜end▁of▁sentence｜>"), std::string::npos) << d;
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "meta.json"));
  // deterministic
  auto o2 = options("data_ok2", o.files);
  prepare_data(o2, nullptr);
  EXPECT_EQ(read_split(o.out_dir, "train"), read_split(o2.out_dir, "train"));
}

TEST(TokenLoader, WindowsStayInsideOneShard) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += "word" + std::to_string(i % 17) + " ";
  auto o = options("data_win", {write_text("words.txt", text)});
  o.val_fraction = 0;
  prepare_data(o, nullptr);
  TokenLoader loader(o.out_dir, "train");
  auto all = read_split(o.out_dir, "train");
  Rng rng(3), rng2(3);
  std::vector<int32_t> batch, batch2;
  for (int rep = 0; rep < 50; ++rep) {
    loader.sample(4, 20, rng, &batch);
    loader.sample(4, 20, rng2, &batch2);
    EXPECT_EQ(batch, batch2);  // same RNG state, same windows
    for (int b = 0; b < 4; ++b) {
      // the window is a contiguous slice of the stream that does not cross a 50-token shard boundary
      bool found = false;
      for (size_t start = 0; start + 21 <= all.size() && !found; ++start) {
        if (start / 50 != (start + 20) / 50) continue;
        found = std::equal(batch.begin() + b * 21, batch.begin() + (b + 1) * 21, all.begin() + long(start),
                           [](int32_t a, uint32_t c) { return uint32_t(a) == c; });
      }
      EXPECT_TRUE(found);
    }
  }
  EXPECT_THROW(loader.sample(1, 60, rng, &batch), Error);  // longer than every shard
  EXPECT_GT(loader.num_windows(20), 0);
}

TEST(DataPrepare, ErrorsNameTheProblem) {
  auto missing = options("data_missing", {"/nonexistent/file.txt"});
  try {
    prepare_data(missing, nullptr);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/file.txt"), std::string::npos);
  }
  auto empty = options("data_empty", {write_text("empty.txt", "  \n\n")});
  EXPECT_THROW(prepare_data(empty, nullptr), Error);
  auto o = options("data_corrupt", {write_text("c.txt", "some text to tokenise, long enough for a shard or two")});
  o.val_fraction = 0;
  prepare_data(o, nullptr);
  std::ofstream(fs::path(o.out_dir) / "train_00000.bin", std::ios::binary | std::ios::app) << "xy";
  try {
    TokenLoader bad(o.out_dir, "train");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train_00000.bin"), std::string::npos) << e.what();
  }
  EXPECT_THROW(TokenLoader(::testing::TempDir() + "/nowhere", "train"), Error);
}
