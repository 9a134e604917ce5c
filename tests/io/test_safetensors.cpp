// safetensors reading and writing: round trips of every dtype and shape, a whale::Error that
// names the file and the problem for every kind of corrupt file, and sharded checkpoints
// (model.safetensors.index.json) read through SafetensorsSet and load_model.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io_test_util.h"
#include "model/transformer.h"

using namespace whale;
using whale::testing::error_of;
using whale::testing::read_bytes;
using whale::testing::TempDir;
using whale::testing::write_bytes;
using json = nlohmann::json;

namespace {

// The raw layout: little-endian u64 header length, header text, data section.
std::string safetensors_bytes(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char(uint8_t(n >> (8 * i)));
  return out + header + data;
}

std::string patterned_bytes(size_t n, uint8_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char(uint8_t(seed + 37 * i));
  return s;
}

// The message SafetensorsFile throws for these bytes; checks that it names the file.
std::string load_error(const TempDir& dir, const std::string& name, const std::string& bytes) {
  const std::string path = dir / name;
  write_bytes(path, bytes);
  const std::string message = error_of([&] { SafetensorsFile file(path); });
  EXPECT_CONTAINS(message, path);
  // The in-memory parser (what the fuzz target drives) must agree with the file reader.
  const std::string direct = error_of([&] {
    parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "buffer",
                             nullptr, nullptr);
  });
  EXPECT_EQ(direct.substr(std::min(std::strlen("buffer"), direct.size())),
            message.substr(std::min(path.size(), message.size())))
      << "the parser and the file reader disagree";
  return message;
}

std::string one_tensor(const std::string& entry) { return "{\"t\":" + entry + "}"; }

}  // namespace

TEST(Safetensors, RoundTripsEveryDtypeShapeAndMetadata) {
  TempDir dir;
  struct Case {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  // Odd-sized tensors first, so later ones start unaligned within the data section.
  const std::vector<Case> cases = {
      {"f8", DType::F8_E4M3, {7}},        {"u8", DType::U8, {3, 1}},
      {"f16", DType::F16, {5}},           {"bf16", DType::BF16, {3, 1, 2}},
      {"f32", DType::F32, {2, 3}},        {"i32", DType::I32, {2}},
      {"i64", DType::I64, {2, 2}},        {"scalar_f32", DType::F32, {}},
      {"scalar_i64", DType::I64, {}},     {"empty_i32", DType::I32, {0}},
      {"empty_u8", DType::U8, {3, 0, 4}}, {"empty_bf16", DType::BF16, {0, 5}}};
  std::vector<std::string> payloads;
  std::vector<TensorToWrite> tensors;
  for (size_t i = 0; i < cases.size(); ++i) {
    int64_t numel = 1;
    for (int64_t d : cases[i].shape) numel *= d;
    payloads.push_back(
        patterned_bytes(size_t(numel) * dtype_size(cases[i].dtype), uint8_t(i * 11 + 1)));
  }
  for (size_t i = 0; i < cases.size(); ++i)
    tensors.push_back({cases[i].name, cases[i].dtype, cases[i].shape, payloads[i].data()});
  const std::map<std::string, std::string> metadata{{"format", "pt"},
                                                    {"note", "caf\xc3\xa9 \"quoted\""}};
  const std::string path = dir / "all.safetensors";
  write_safetensors(path, tensors, metadata);

  const std::string raw = read_bytes(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint8_t(raw[size_t(i)]);
  EXPECT_EQ((8 + header_len) % 8, 0u) << "data section should start 8-byte aligned";

  SafetensorsFile file(path);
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.tensors().size(), cases.size());
  uint64_t previous_end = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    const TensorInfo* info = file.find(cases[i].name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, cases[i].dtype);
    EXPECT_EQ(info->shape, cases[i].shape);
    EXPECT_EQ(info->end - info->begin, payloads[i].size());
    EXPECT_EQ(info->begin, previous_end) << "tensors are laid out in the order given";
    previous_end = info->end;
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(file.data(*info)), payloads[i].size()),
              payloads[i]);
  }
  EXPECT_EQ(raw.size(), 8 + header_len + previous_end) << "no bytes after the last tensor";
  EXPECT_EQ(file.find("absent"), nullptr);

  // The same file through SafetensorsSet, as a path and as the model.safetensors of a directory.
  SafetensorsSet by_path(path);
  EXPECT_EQ(by_path.entries().size(), cases.size());
  std::filesystem::create_directory(dir / "ckpt");
  std::filesystem::copy_file(path, dir / "ckpt/model.safetensors");
  SafetensorsSet by_dir(dir / "ckpt");
  EXPECT_EQ(std::memcmp(by_dir.get("i64").data(), payloads[6].data(), payloads[6].size()), 0);
  EXPECT_CONTAINS(error_of([&] { by_dir.get("nope"); }), "missing tensor 'nope'");
}

TEST(Safetensors, WritesAnEmptyFile) {
  TempDir dir;
  write_safetensors(dir / "empty.safetensors", {});
  SafetensorsFile file(dir / "empty.safetensors");
  EXPECT_TRUE(file.tensors().empty());
  EXPECT_TRUE(file.metadata().empty());
}

TEST(Safetensors, CorruptFilesRaiseErrorsNamingFileAndProblem) {
  TempDir dir;
  const std::string f32x1 = R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  struct Case {
    std::string name, bytes, problem;
  };
  const std::string valid2 = safetensors_bytes(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}})",
      patterned_bytes(11, 3));
  const std::vector<Case> cases = {
      {"empty", "", "file is 0 bytes"},
      {"short", "abcde", "needs at least an 8-byte header length"},
      {"header_past_end", std::string("\x10\0\0\0\0\0\0\0", 8) + "{}",
       "header length 16 exceeds the file size 10"},
      {"huge_header_len", std::string("\xff\xff\xff\xff\xff\xff\xff\xff", 8) + "{}",
       "exceeds the file size"},
      {"zero_header", safetensors_bytes(""), "header is not valid JSON"},
      {"not_json", safetensors_bytes("{\"t\": [1, 2"), "header is not valid JSON"},
      {"binary_header", safetensors_bytes(std::string("\x00\x01\x02\x03", 4)),
       "header is not valid JSON"},
      {"not_object", safetensors_bytes("[1,2,3]"), "header must be a JSON object"},
      {"entry_not_object", safetensors_bytes(one_tensor("[]")),
       "tensor 't': entry must be an object"},
      {"missing_dtype",
       safetensors_bytes(one_tensor(R"({"shape":[1],"data_offsets":[0,4]})"), "abcd"),
       "tensor 't': missing string field 'dtype'"},
      {"dtype_not_string",
       safetensors_bytes(one_tensor(R"({"dtype":4,"shape":[1],"data_offsets":[0,4]})"), "abcd"),
       "missing string field 'dtype'"},
      {"unknown_dtype",
       safetensors_bytes(one_tensor(R"({"dtype":"F64","shape":[1],"data_offsets":[0,8]})"),
                         "abcdefgh"),
       "unsupported dtype 'F64'"},
      {"missing_shape",
       safetensors_bytes(one_tensor(R"({"dtype":"F32","data_offsets":[0,4]})"), "abcd"),
       "missing array field 'shape'"},
      {"shape_not_array",
       safetensors_bytes(one_tensor(R"({"dtype":"F32","shape":1,"data_offsets":[0,4]})"), "abcd"),
       "missing array field 'shape'"},
      {"negative_shape",
       safetensors_bytes(one_tensor(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})"),
                         "abcd"),
       "shape entries must be non-negative integers"},
      {"fractional_shape",
       safetensors_bytes(one_tensor(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})"),
                         "abcd"),
       "shape entries must be non-negative integers"},
      {"string_shape",
       safetensors_bytes(one_tensor(R"({"dtype":"F32","shape":["1"],"data_offsets":[0,4]})"),
                         "abcd"),
       "shape entries must be non-negative integers"},
      {"huge_shape",
       safetensors_bytes(
           one_tensor(R"({"dtype":"F32","shape":[1099511627777],"data_offsets":[0,4]})"), "abcd"),
       "shape is too large"},
      {"overflowing_shape",
       safetensors_bytes(
           one_tensor(R"({"dtype":"F32","shape":[1048576,1048576,1048576],"data_offsets":[0,4]})"),
           "abcd"),
       "shape is too large"},
      {"missing_offsets", safetensors_bytes(one_tensor(R"({"dtype":"F32","shape":[1]})"), "abcd"),
       "data_offsets must be [begin, end] non-negative integers"},
      {"one_offset",
       safetensors_bytes(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[4]})"), "abcd"),
       "data_offsets must be [begin, end]"},
      {"negative_offset",
       safetensors_bytes(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})"),
                         "abcd"),
       "data_offsets must be [begin, end]"},
      {"offsets_out_of_range",
       safetensors_bytes(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})"), "abcd"),
       "data_offsets [4, 8] lie outside the data section of 4 bytes"},
      {"offsets_huge",
       safetensors_bytes(
           one_tensor(
               R"({"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615]})"),
           "abcd"),
       "lie outside the data section"},
      {"offsets_reversed",
       safetensors_bytes(one_tensor(R"({"dtype":"F32","shape":[0],"data_offsets":[4,0]})"),
                         "abcdabcd"),
       "data_offsets [4, 0] are reversed"},
      {"offsets_vs_shape",
       safetensors_bytes(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})"),
                         "abcdabcd"),
       "data_offsets span 4 bytes but shape and dtype need 8"},
      {"offsets_vs_dtype",
       safetensors_bytes(one_tensor(R"({"dtype":"BF16","shape":[2],"data_offsets":[0,8]})"),
                         "abcdabcd"),
       "data_offsets span 8 bytes but shape and dtype need 4"},
      {"overlap",
       safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         patterned_bytes(12, 1)),
       "tensors 'a' and 'b' overlap"},
      {"overlap_same_range",
       safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                         "abcd"),
       "overlap in the data section"},
      // An empty tensor between two others must not hide their overlap.
      {"overlap_across_empty",
       safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                         R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                         R"("z":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                         patterned_bytes(16, 2)),
       "tensors 'a' and 'z' overlap"},
      {"truncated_data", valid2.substr(0, valid2.size() - 2),
       "tensor 'b': data_offsets [8, 11] lie outside the data section of 9 bytes"},
      {"truncated_header", valid2.substr(0, 40), "exceeds the file size"},
      {"metadata_not_object", safetensors_bytes(R"({"__metadata__":[1]})"),
       "__metadata__ must be an object"},
      {"metadata_value_not_string", safetensors_bytes(R"({"__metadata__":{"n":1}})"),
       "metadata value 'n' must be a string"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_CONTAINS(load_error(dir, c.name + ".safetensors", c.bytes), c.problem);
  }
  // The untruncated file is fine: the errors above come from the corruption alone.
  write_bytes(dir / "valid.safetensors", valid2);
  EXPECT_EQ(SafetensorsFile(dir / "valid.safetensors").tensors().size(), 2u);
}

TEST(Safetensors, MissingOrSpecialFilesRaiseErrors) {
  TempDir dir;
  EXPECT_CONTAINS(error_of([&] { SafetensorsFile f(dir / "absent.safetensors"); }),
                  "absent.safetensors: cannot open");
  EXPECT_CONTAINS(error_of([&] { SafetensorsFile f(dir.path()); }), "not a regular file");
  EXPECT_CONTAINS(error_of([&] { SafetensorsSet s(dir.path()); }), "no model.safetensors");
}

// ---- Sharded checkpoints ----------------------------------------------------------------

namespace {

void write_index(const std::string& dir, const json& weight_map) {
  const json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  write_bytes(dir + "/model.safetensors.index.json", index.dump(2));
}

struct ShardFixture {
  std::string a = patterned_bytes(8, 1), b = patterned_bytes(6, 2), c = patterned_bytes(4, 3);
  void write(const std::string& dir) {
    write_safetensors(dir + "/model-00001-of-00002.safetensors",
                      {{"a", DType::F32, {2}, a.data()}, {"b", DType::BF16, {3}, b.data()}});
    write_safetensors(dir + "/model-00002-of-00002.safetensors",
                      {{"c", DType::U8, {2, 2}, c.data()}});
  }
  json weight_map() const {
    return {{"a", "model-00001-of-00002.safetensors"},
            {"b", "model-00001-of-00002.safetensors"},
            {"c", "model-00002-of-00002.safetensors"}};
  }
};

}  // namespace

TEST(SafetensorsSet, ReadsShardsListedInTheIndex) {
  TempDir dir;
  ShardFixture shards;
  shards.write(dir.path());
  write_index(dir.path(), shards.weight_map());
  SafetensorsSet set(dir.path());
  EXPECT_EQ(set.files().size(), 2u);
  ASSERT_EQ(set.entries().size(), 3u);
  EXPECT_CONTAINS(set.get("a").file->path(), "model-00001-of-00002.safetensors");
  EXPECT_CONTAINS(set.get("c").file->path(), "model-00002-of-00002.safetensors");
  EXPECT_EQ(std::string(reinterpret_cast<char*>(set.get("b").data()), 6), shards.b);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(set.get("c").data()), 4), shards.c);
  EXPECT_EQ(set.get("c").info->shape, (std::vector<int64_t>{2, 2}));
}

TEST(SafetensorsSet, ReadsUnindexedShardsInNameOrder) {
  TempDir dir;
  ShardFixture shards;
  shards.write(dir.path());
  SafetensorsSet set(dir.path());
  EXPECT_EQ(set.entries().size(), 3u);
  EXPECT_CONTAINS(set.files()[0]->path(), "model-00001-of-00002.safetensors");
}

TEST(SafetensorsSet, BadIndexesRaiseErrorsNamingTheProblem) {
  ShardFixture shards;
  {
    TempDir dir;
    shards.write(dir.path());
    json map = shards.weight_map();
    map["d"] = "model-00003-of-00003.safetensors";
    write_index(dir.path(), map);
    const std::string message = error_of([&] { SafetensorsSet s(dir.path()); });
    EXPECT_CONTAINS(message, "model-00003-of-00003.safetensors");
    EXPECT_CONTAINS(message, "cannot open");
  }
  {
    TempDir dir;
    shards.write(dir.path());
    json map = shards.weight_map();
    map["c"] = "../elsewhere/model-00002-of-00002.safetensors";
    write_index(dir.path(), map);
    const std::string message = error_of([&] { SafetensorsSet s(dir.path()); });
    EXPECT_CONTAINS(message, "model.safetensors.index.json");
    EXPECT_CONTAINS(
        message,
        "shard name '../elsewhere/model-00002-of-00002.safetensors' must be a plain file name");
  }
  {
    TempDir dir;
    shards.write(dir.path());
    // Tensor "a" stored in both shards.
    write_safetensors(
        dir / "model-00002-of-00002.safetensors",
        {{"c", DType::U8, {2, 2}, shards.c.data()}, {"a", DType::F32, {2}, shards.a.data()}});
    write_index(dir.path(), shards.weight_map());
    const std::string message = error_of([&] { SafetensorsSet s(dir.path()); });
    EXPECT_CONTAINS(message, "tensor 'a' also appears in");
    EXPECT_CONTAINS(message, "model-00001-of-00002.safetensors");
    EXPECT_CONTAINS(message, "model-00002-of-00002.safetensors");
  }
  {
    TempDir dir;
    shards.write(dir.path());
    write_bytes(dir / "model.safetensors.index.json", "{\"weight_map\": ");
    const std::string message = error_of([&] { SafetensorsSet s(dir.path()); });
    EXPECT_CONTAINS(message, "model.safetensors.index.json: not valid JSON");
  }
  {
    TempDir dir;
    shards.write(dir.path());
    write_bytes(dir / "model.safetensors.index.json", R"({"metadata": {}})");
    EXPECT_CONTAINS(error_of([&] { SafetensorsSet s(dir.path()); }),
                    "missing object field 'weight_map'");
  }
  {
    TempDir dir;
    shards.write(dir.path());
    write_index(dir.path(), {{"a", 1}});
    EXPECT_CONTAINS(error_of([&] { SafetensorsSet s(dir.path()); }),
                    "weight_map['a'] must be a file name");
  }
  {
    // A corrupt shard is reported with the shard's own path.
    TempDir dir;
    shards.write(dir.path());
    write_index(dir.path(), shards.weight_map());
    write_bytes(dir / "model-00002-of-00002.safetensors", "junk");
    const std::string message = error_of([&] { SafetensorsSet s(dir.path()); });
    EXPECT_CONTAINS(message, "model-00002-of-00002.safetensors: file is 4 bytes");
  }
}

namespace {

std::unique_ptr<Model> tiny_model() {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = 11;
  init.std = 0.05;
  init.norm_jitter = 0.1;
  init.router_bias_std = 0.05;
  return init_model(c, init);
}

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& tokens) {
  const ModelConfig& c = m.config;
  const int64_t n = int64_t(tokens.size());
  Transformer tf(m);
  KVCache cache(c, n);
  std::vector<float> hidden(size_t(n * c.hidden_size));
  tf.forward(tokens.data(), {SeqSpan{&cache, 0, n, 0}}, hidden.data());
  std::vector<int64_t> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rows[size_t(i)] = i;
  std::vector<float> logits(size_t(n * c.vocab_size));
  tf.logits(hidden.data(), rows, logits.data());
  return logits;
}

}  // namespace

TEST(SafetensorsSet, ShardedModelLoadsAndGivesTheSameLogits) {
  TempDir dir;
  auto original = tiny_model();
  const std::string single = dir / "single", sharded = dir / "sharded";
  save_model(*original, single);
  std::filesystem::create_directory(sharded);
  std::filesystem::copy_file(single + "/config.json", sharded + "/config.json");

  // Split by hand: the main layers' tensors in shard 1, everything else in shard 2.
  {
    SafetensorsFile whole(single + "/model.safetensors");
    std::vector<TensorToWrite> first, second;
    json map = json::object();
    for (const TensorInfo& t : whole.tensors()) {
      const bool early =
          t.name.rfind("model.layers.0.", 0) == 0 || t.name.rfind("model.layers.1.", 0) == 0;
      (early ? first : second).push_back({t.name, t.dtype, t.shape, whole.data(t)});
      map[t.name] = early ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    ASSERT_FALSE(first.empty());
    ASSERT_FALSE(second.empty());
    write_safetensors(sharded + "/model-00001-of-00002.safetensors", first);
    write_safetensors(sharded + "/model-00002-of-00002.safetensors", second);
    write_index(sharded, map);
  }

  auto from_single = load_model(single);
  auto from_shards = load_model(sharded);
  EXPECT_EQ(from_shards->files->files().size(), 2u);
  EXPECT_EQ(from_shards->files->entries().size(), from_single->files->entries().size());

  std::vector<int32_t> tokens;
  Rng rng(5);
  for (int i = 0; i < 12; ++i)
    tokens.push_back(int32_t(rng.next() % uint64_t(original->config.vocab_size)));
  const auto expected = logits_of(*original, tokens);
  const auto a = logits_of(*from_single, tokens);
  const auto b = logits_of(*from_shards, tokens);
  // Same F32 weights, same kernels: the logits agree bit for bit.
  ASSERT_EQ(a.size(), expected.size());
  EXPECT_EQ(std::memcmp(a.data(), expected.data(), a.size() * 4), 0);
  EXPECT_EQ(std::memcmp(b.data(), expected.data(), b.size() * 4), 0);
}
