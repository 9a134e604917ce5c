// Token shards: prepare_data writes what the tokenizer says, splits and shards deterministically,
// and TokenLoader samples windows that stay inside one shard and rejects damaged directories.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mmap.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"

using namespace whale;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kTokenizer =
    std::string(WHALE_SOURCE_DIR) + "/data/tokenizers/deepseek_v3/tokenizer.json";
const std::string kEos = "<｜end▁of▁sentence｜>";

const tokenizer::Tokenizer& deepseek() {
  static const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(kTokenizer);
  return tok;
}

// This process's folder (other builds may run the tests at the same time), removed at exit.
const fs::path& base() {
  struct Folder {
    fs::path path = fs::temp_directory_path() / ("whale_test_data_" + std::to_string(::getpid()));
    ~Folder() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  };
  static const Folder folder;
  return folder.path;
}

fs::path scratch(const std::string& name) {
  const fs::path p = base() / name;
  fs::remove_all(p);
  fs::create_directories(base());
  return p;
}

std::string write_text(const std::string& name, const std::string& text) {
  const fs::path p = base() / "inputs" / name;
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
  return p.string();
}

DataPrepareOptions options(const std::string& out, std::vector<std::string> files,
                           double val_fraction = 0, int64_t shard_tokens = 50) {
  DataPrepareOptions o;
  o.tokenizer = kTokenizer;
  o.out_dir = scratch(out).string();
  o.files = std::move(files);
  o.val_fraction = val_fraction;
  o.shard_tokens = shard_tokens;
  o.seed = 4;
  return o;
}

std::vector<uint32_t> read_shard(const fs::path& path) {
  const std::string bytes = read_text_file(path.string());
  std::vector<uint32_t> ids(bytes.size() / 4);
  std::memcpy(ids.data(), bytes.data(), ids.size() * 4);
  return ids;
}

// The split's shards in meta.json order.
std::vector<std::vector<uint32_t>> read_shards(const std::string& dir, const std::string& split) {
  const json meta = json::parse(read_text_file(dir + "/meta.json"));
  std::vector<std::vector<uint32_t>> shards;
  for (const auto& s : meta.at(split))
    shards.push_back(read_shard(fs::path(dir) / s.at("file").get<std::string>()));
  return shards;
}

std::string decode_split(const std::string& dir, const std::string& split) {
  std::vector<int> ids;
  for (const auto& shard : read_shards(dir, split))
    ids.insert(ids.end(), shard.begin(), shard.end());
  return deepseek().decode(ids);
}

std::vector<std::string> split_at(const std::string& text, const std::string& separator) {
  std::vector<std::string> parts;
  size_t begin = 0;
  for (size_t at; (at = text.find(separator, begin)) != std::string::npos;
       begin = at + separator.size())
    parts.push_back(text.substr(begin, at - begin));
  if (begin < text.size()) parts.push_back(text.substr(begin));
  return parts;
}

// Stories of varied length in TinyStories' format, and the documents they hold.
std::string stories(int count, std::vector<std::string>* docs) {
  std::string text;
  for (int i = 0; i < count; ++i) {
    std::string doc = "Story " + std::to_string(i) + ": the whale swam far";
    for (int k = 0; k < i % 7; ++k) doc += ", and sang a song about the sea";
    doc += ".\nShe said \"héllo\" to the moon 🌙, twice.";
    docs->push_back(doc);
    text += doc + (i % 3 == 0 ? "\r\n<|endoftext|>\r\n" : "\n<|endoftext|>\n");
  }
  return text;
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no whale::Error thrown)";
}

}  // namespace

TEST(DataPrepare, ShardsDecodeBackToTheDocuments) {
  std::vector<std::string> docs;
  const std::string marked = write_text("stories.txt", stories(12, &docs));
  // A file without markers is one document (short enough not to be cut), kept verbatim.
  const std::string plain_text =
      "A plain file.\n\nIts second paragraph, with a trailing newline.\n";
  docs.push_back(plain_text);
  // A larger one is cut into ~64 KB documents at blank lines.
  std::string novel;
  for (int p = 0; novel.size() < 300 * 1024; ++p) {
    novel += "Paragraph " + std::to_string(p) + ".";
    for (int k = 0; k < p % 40; ++k) novel += " It was a truth universally acknowledged.";
    novel += "\n\n";
  }
  auto o = options("decode",
                   {marked, write_text("plain.txt", plain_text), write_text("novel.txt", novel)}, 0,
                   1000);
  const DataStats s = prepare_data(o, nullptr);
  EXPECT_GE(s.documents, 13 + 4);
  EXPECT_LE(s.documents, 13 + 6);
  EXPECT_EQ(s.val_tokens, 0);
  EXPECT_EQ(s.val_shards, 0);
  EXPECT_GT(s.train_shards, 3);

  // The shards decode to the documents, each followed by EOS.
  std::string expected;
  for (const auto& d : docs) expected += d + kEos;
  const std::string decoded = decode_split(o.out_dir, "train");
  ASSERT_EQ(decoded.substr(0, expected.size()), expected);
  const auto chunks = split_at(decoded.substr(expected.size()), kEos);
  EXPECT_EQ(int64_t(chunks.size()), s.documents - 13);
  std::string joined;
  for (size_t i = 0; i < chunks.size(); ++i) {
    joined += chunks[i];
    EXPECT_TRUE(chunks[i].ends_with("\n\n")) << "chunk " << i << " does not end at a blank line";
    if (i + 1 < chunks.size()) {
      EXPECT_GE(chunks[i].size(), 64u * 1024) << i;
      EXPECT_LE(chunks[i].size(), 68u * 1024) << i;
    }
  }
  EXPECT_EQ(joined, novel);
  EXPECT_TRUE(decoded.ends_with(kEos));

  const json meta = json::parse(read_text_file(o.out_dir + "/meta.json"));
  EXPECT_EQ(meta.at("format_version"), 1);
  EXPECT_EQ(meta.at("vocab_size"), deepseek().vocab_size());
  EXPECT_EQ(meta.at("eos_id"), deepseek().eos_id());
  EXPECT_EQ(meta.at("train_tokens"), s.train_tokens);
  EXPECT_EQ(meta.at("documents"), s.documents);
  ASSERT_EQ(meta.at("sources").size(), 3u);
  EXPECT_EQ(meta.at("sources")[1].at("bytes"), plain_text.size());
  EXPECT_EQ(meta.at("sources")[2].at("bytes"), novel.size());
  int64_t listed = 0;
  for (const auto& shard : meta.at("train")) {
    EXPECT_LE(shard.at("tokens").get<int64_t>(), 1000);
    listed += shard.at("tokens").get<int64_t>();
  }
  EXPECT_EQ(listed, s.train_tokens);
  const std::string tokenizer_dir = fs::path(kTokenizer).parent_path().string();
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    EXPECT_EQ(read_text_file(o.out_dir + "/" + f), read_text_file(tokenizer_dir + "/" + f)) << f;
}

TEST(DataPrepare, ValidationSplitIsByTokensSeededAndDeterministic) {
  std::vector<std::string> docs;
  const auto files = std::vector<std::string>{write_text("many.txt", stories(200, &docs))};
  auto o = options("split_a", files, 0.2, 400);
  const DataStats s = prepare_data(o, nullptr);
  EXPECT_EQ(s.documents, 200);
  // Whole documents of at most ~90 tokens, so the split is within one document of its share.
  const double total = double(s.train_tokens + s.val_tokens);
  EXPECT_NEAR(double(s.val_tokens), 0.2 * total, 90.0);
  // Every document lands in exactly one split.
  std::map<std::string, int> seen;
  for (const char* split : {"train", "val"})
    for (const auto& d : split_at(decode_split(o.out_dir, split), kEos)) ++seen[d];
  std::map<std::string, int> want;
  for (const auto& d : docs) ++want[d];
  EXPECT_EQ(seen, want);

  // Same seed: identical bytes in every file. Another seed: another choice of documents.
  auto same = options("split_b", files, 0.2, 400);
  prepare_data(same, nullptr);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(o.out_dir))
    names.push_back(e.path().filename().string());
  EXPECT_EQ(names.size(), 3 + size_t(s.train_shards + s.val_shards));  // no leftover temporaries
  for (const auto& name : names)
    EXPECT_EQ(read_text_file(o.out_dir + "/" + name), read_text_file(same.out_dir + "/" + name))
        << name;
  auto other = options("split_c", files, 0.2, 400);
  other.seed = 5;
  prepare_data(other, nullptr);
  EXPECT_NE(decode_split(o.out_dir, "val"), decode_split(other.out_dir, "val"));

  // Preparing into the same folder again with fewer shards removes the old ones and the
  // temporaries of killed runs, and nothing else.
  std::ofstream(fs::path(o.out_dir) / "train_00099.bin.tmp.123") << "torn";
  std::ofstream(fs::path(o.out_dir) / "train_notes.bin") << "mine";
  auto again = o;  // the same folder, not wiped
  again.shard_tokens = 1 << 20;
  prepare_data(again, nullptr);
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "train_00000.bin"));
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "train_00001.bin"));
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "train_00099.bin.tmp.123"));
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "train_notes.bin"));
  EXPECT_EQ(TokenLoader(o.out_dir, "train").tokens(), s.train_tokens);
}

class TokenLoaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string text;
    // Distinct numbers, so a window matches exactly one place in the stream.
    for (int i = 100; i < 500; ++i) text += "word" + std::to_string(i) + " ";
    auto o = options("loader", {write_text("words.txt", text)});
    o.shard_tokens = 47;  // the last shard is shorter than the others
    prepare_data(o, nullptr);
    dir_ = new std::string(o.out_dir);
  }
  static void TearDownTestSuite() { delete dir_; }
  // A fresh copy of the prepared folder, to damage.
  static std::string copy(const std::string& name) {
    const fs::path to = scratch(name);
    fs::copy(*dir_, to, fs::copy_options::recursive);
    return to.string();
  }
  static std::string* dir_;
};
std::string* TokenLoaderTest::dir_ = nullptr;

TEST_F(TokenLoaderTest, WindowsAreSlicesOfOneShard) {
  TokenLoader loader(*dir_, "train");
  const auto shards = read_shards(*dir_, "train");
  ASSERT_GT(shards.size(), 5u);
  ASSERT_LT(shards.back().size(), 47u);
  int64_t total = 0;
  for (const auto& s : shards) total += int64_t(s.size());
  EXPECT_EQ(loader.tokens(), total);
  EXPECT_EQ(loader.eos_id(), deepseek().eos_id());
  EXPECT_EQ(loader.vocab_size(), deepseek().vocab_size());

  const int64_t B = 8, T = 20;
  Rng rng(3);
  std::vector<int32_t> batch;
  std::vector<int> hits(shards.size(), 0);
  for (int rep = 0; rep < 100; ++rep) {
    loader.sample(B, T, rng, &batch);
    ASSERT_EQ(batch.size(), size_t(B * (T + 1)));
    for (int64_t b = 0; b < B; ++b) {
      const auto row = batch.begin() + b * (T + 1);
      int found = 0;  // places the window matches
      for (size_t s = 0; s < shards.size(); ++s)
        for (size_t start = 0; start + T + 1 <= shards[s].size(); ++start)
          if (std::equal(row, row + T + 1, shards[s].begin() + long(start),
                         [](int32_t a, uint32_t c) { return uint32_t(a) == c; })) {
            ++hits[s];
            found = 1;
          }
      EXPECT_EQ(found, 1) << "window " << b << " is not a slice of one shard";
    }
  }
  // Every shard long enough for a window gets drawn.
  for (size_t s = 0; s < shards.size(); ++s)
    if (int64_t(shards[s].size()) >= T + 1) {
      EXPECT_GT(hits[s], 0) << "shard " << s;
    }
}

TEST_F(TokenLoaderTest, SameRngStateGivesSameBatches) {
  TokenLoader loader(*dir_, "train");
  Rng rng(11);
  std::vector<int32_t> a, b, c;
  loader.sample(4, 16, rng, &a);
  uint64_t state[4];
  rng.get_state(state);
  loader.sample(4, 16, rng, &b);
  Rng restored(999);
  restored.set_state(state);
  loader.sample(4, 16, restored, &c);
  EXPECT_EQ(b, c);
  EXPECT_NE(a, b);
}

TEST_F(TokenLoaderTest, EvaluationWindowsAreConsecutiveAndInsideShards) {
  TokenLoader loader(*dir_, "train");
  const auto shards = read_shards(*dir_, "train");
  const int64_t T = 9;
  std::vector<std::vector<uint32_t>> expected;
  for (const auto& s : shards)
    for (size_t start = 0; start + T + 1 <= s.size(); start += T + 1)
      expected.emplace_back(s.begin() + long(start), s.begin() + long(start + T + 1));
  ASSERT_EQ(loader.num_windows(T), int64_t(expected.size()));
  std::vector<int32_t> w(T + 1);
  for (size_t i = 0; i < expected.size(); ++i) {
    loader.window(int64_t(i), T, w.data());
    EXPECT_TRUE(std::equal(w.begin(), w.end(), expected[i].begin(), [](int32_t a, uint32_t c) {
      return uint32_t(a) == c;
    })) << i;
  }
  EXPECT_NE(
      error_of([&] { loader.window(int64_t(expected.size()), T, w.data()); }).find("out of range"),
      std::string::npos);
}

TEST_F(TokenLoaderTest, DamagedDirectoriesNameTheProblem) {
  std::vector<int32_t> batch;
  Rng rng(1);
  const TokenLoader loader(*dir_, "train");
  EXPECT_NE(error_of([&] {
              loader.sample(2, 47, rng, &batch);
            }).find("shorter than a window of T + 1 = 48"),
            std::string::npos);
  EXPECT_NE(error_of([&] { TokenLoader(*dir_, "test"); }).find("'train' or 'val'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { TokenLoader(*dir_, "val"); }).find("no val shards"), std::string::npos);

  const std::string nowhere = scratch("nowhere").string();
  EXPECT_NE(error_of([&] { TokenLoader(nowhere, "train"); }).find("no meta.json"),
            std::string::npos);

  std::string dir = copy("torn");  // not a whole number of tokens
  std::ofstream(dir + "/train_00002.bin", std::ios::binary | std::ios::app) << "xy";
  std::string e = error_of([&] { TokenLoader(dir, "train"); });
  EXPECT_NE(e.find("train_00002.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("not a whole number"), std::string::npos) << e;

  dir = copy("longer");  // whole tokens, but more than meta.json lists
  std::ofstream(dir + "/train_00001.bin", std::ios::binary | std::ios::app) << "wxyz";
  e = error_of([&] { TokenLoader(dir, "train"); });
  EXPECT_NE(e.find("train_00001.bin: holds 48 tokens; meta.json says 47"), std::string::npos) << e;

  dir = copy("range");  // a token id outside the vocabulary
  {
    std::fstream f(dir + "/train_00003.bin", std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(4 * 5);
    const uint32_t bad = 0xfffffff0u;
    f.write(reinterpret_cast<const char*>(&bad), 4);
  }
  e = error_of([&] { TokenLoader(dir, "train"); });
  EXPECT_NE(e.find("train_00003.bin: token id 4294967280 at position 5 is not below vocab_size"),
            std::string::npos)
      << e;

  dir = copy("missing");
  fs::remove(dir + "/train_00000.bin");
  e = error_of([&] { TokenLoader(dir, "train"); });
  EXPECT_NE(e.find("train_00000.bin"), std::string::npos) << e;

  const json meta = json::parse(read_text_file(*dir_ + "/meta.json"));
  auto with_meta = [&](const std::string& name, const std::string& text) {
    const std::string d = copy(name);
    std::ofstream(d + "/meta.json", std::ios::binary | std::ios::trunc) << text;
    return error_of([&] { TokenLoader(d, "train"); });
  };
  e = with_meta("truncated", meta.dump().substr(0, 40));
  EXPECT_NE(e.find("meta.json: malformed JSON"), std::string::npos) << e;
  json changed = meta;
  changed.erase("vocab_size");
  e = with_meta("no_vocab", changed.dump());
  EXPECT_NE(e.find("field 'vocab_size' is missing"), std::string::npos) << e;
  changed = meta;
  changed["eos_id"] = "one";
  e = with_meta("eos_string", changed.dump());
  EXPECT_NE(e.find("field 'eos_id' must be an integer"), std::string::npos) << e;
  changed = meta;
  changed["format_version"] = 2;
  e = with_meta("version", changed.dump());
  EXPECT_NE(e.find("format_version 2 is not supported"), std::string::npos) << e;
  changed = meta;
  changed["train"] = "train_00000.bin";
  e = with_meta("not_list", changed.dump());
  EXPECT_NE(e.find("field 'train' must be a list of shards"), std::string::npos) << e;
  changed = meta;
  changed["train"][0]["file"] = "../meta.json";
  e = with_meta("escape", changed.dump());
  EXPECT_NE(e.find("must be a plain file name"), std::string::npos) << e;
  changed = meta;
  changed["train_tokens"] = meta["train_tokens"].get<int64_t>() + 1;
  e = with_meta("count", changed.dump());
  EXPECT_NE(e.find("field 'train_tokens'"), std::string::npos) << e;
}

TEST(DataPrepare, BadInputsNameTheProblem) {
  const std::string text = write_text("ok.txt", "Some text to tokenise.\n");
  std::string e = error_of([&] {
    prepare_data(options("e1", {text, "/nonexistent/file.txt"}), nullptr);
  });
  EXPECT_NE(e.find("/nonexistent/file.txt: input file does not exist"), std::string::npos) << e;

  // Whitespace and markers only: no document.
  const std::string empty = write_text("empty.txt", "  \n<|endoftext|>\n\t\n<|endoftext|>\n");
  e = error_of([&] { prepare_data(options("e2", {text, empty}), nullptr); });
  EXPECT_NE(e.find(empty + ": holds no text"), std::string::npos) << e;
  e = error_of([&] { prepare_data(options("e4", {}), nullptr); });
  EXPECT_NE(e.find("no input files"), std::string::npos) << e;

  auto o = options("e5", {text});
  o.tokenizer = "/nonexistent/tokenizer.json";
  e = error_of([&] { prepare_data(o, nullptr); });
  EXPECT_NE(e.find("/nonexistent/tokenizer.json"), std::string::npos) << e;
  o.tokenizer = write_text("tokenizer.json", "{\"model\": ");
  e = error_of([&] { prepare_data(o, nullptr); });
  EXPECT_NE(e.find(o.tokenizer), std::string::npos) << e;

  o = options("e6", {text});
  o.val_fraction = 1.0;
  EXPECT_NE(error_of([&] { prepare_data(o, nullptr); }).find("--val-fraction"), std::string::npos);
  o = options("e7", {text});
  o.shard_tokens = 0;
  EXPECT_NE(error_of([&] { prepare_data(o, nullptr); }).find("--shard-tokens"), std::string::npos);
}
