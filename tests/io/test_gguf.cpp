// GGUF container: writer -> reader round trip of every metadata type and tensor type, and
// the errors a malformed file produces (each built byte by byte below, never a crash).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io_test_util.h"

using namespace whale;
using whale::testing::error_of;
using whale::testing::read_bytes;
using whale::testing::TempDir;
using whale::testing::write_bytes;

namespace {

// A GGUF file assembled field by field, so a test can write exactly the lie it wants.
struct Bytes {
  std::string b;
  template <class T>
  Bytes& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b += s;
    return *this;
  }
  Bytes& pad(size_t alignment = 32) {
    b.resize((b.size() + alignment - 1) / alignment * alignment, '\0');
    return *this;
  }
};

// Header of a file with one uint32 key and one F32 tensor of ne = {4, 2} at offset 0.
struct Parts {
  uint32_t version = 3;
  uint64_t n_tensors = 1, n_kv = 1;
  uint64_t key_length = 0;  // 0: the real one
  uint32_t value_type = 4;  // uint32
  uint32_t n_dims = 2;
  uint64_t ne0 = 4, ne1 = 2;
  uint32_t tensor_type = 0;
  uint64_t offset = 0;
  size_t data_bytes = 32;
};

std::string build(const Parts& p) {
  Bytes f;
  f.b = "GGUF";
  f.put<uint32_t>(p.version).put<uint64_t>(p.n_tensors).put<uint64_t>(p.n_kv);
  const std::string key = "test.value";
  f.put<uint64_t>(p.key_length ? p.key_length : key.size());
  f.b += key;
  f.put<uint32_t>(p.value_type).put<uint32_t>(7);
  f.str("w").put<uint32_t>(p.n_dims).put<uint64_t>(p.ne0);
  if (p.n_dims > 1) f.put<uint64_t>(p.ne1);
  f.put<uint32_t>(p.tensor_type).put<uint64_t>(p.offset);
  f.pad();
  for (size_t i = 0; i < p.data_bytes / 4; ++i) f.put<float>(float(i));
  return f.b;
}

std::string parse_error(const std::string& bytes) {
  return error_of([&] { GgufHeader::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.gguf"); });
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(Gguf, HandBuiltFileParses) {
  TempDir dir;
  write_bytes(dir / "a.gguf", build({}));
  GgufFile f(dir / "a.gguf");
  EXPECT_EQ(f.get_int("test.value"), 7);
  const GgufTensorInfo& t = f.tensor("w");
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 4}));
  float v[8];
  std::memcpy(v, f.data(t), 32);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(v[i], float(i));
}

TEST(Gguf, WriterRoundTripsEveryValueAndTensorType) {
  TempDir dir;
  GgufWriter w;
  w.add_string("general.architecture", "deepseek2");
  w.add_u32("a.u32", 4000000000u);
  w.add_f32("a.f32", 0.25f);
  w.add_bool("a.bool", true);
  w.add_strings("a.strings", {"x", "", "ünïcode", std::string("nul\0byte", 8)});
  w.add_i32s("a.ints", {-5, 0, 2147483647});
  w.add_f32s("a.floats", {1.5, -2.0});
  GgufValue u64;
  u64.type = GgufType::UINT64;
  u64.u = 1ull << 40;
  w.add("a.u64", u64);
  GgufValue i8;
  i8.type = GgufType::INT8;
  i8.i = -7;
  w.add("a.i8", i8);
  GgufValue f64;
  f64.type = GgufType::FLOAT64;
  f64.f = 1e-300;
  w.add("a.f64", f64);
  std::vector<float> x(3 * 256);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i)) * 3.0f;
  std::vector<std::vector<uint8_t>> expected;
  const GgmlType types[] = {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0,
                            GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K};
  for (GgmlType t : types) {
    std::vector<uint8_t> bytes(3 * ggml_row_size(t, 256));
    for (int r = 0; r < 3; ++r) quantize_row(t, x.data() + 256 * r, bytes.data() + r * ggml_row_size(t, 256), 256);
    expected.push_back(bytes);
    w.add_tensor(std::string("t.") + ggml_type_name(t), t, {256, 3}, [bytes](std::vector<uint8_t>& out) {
      out.insert(out.end(), bytes.begin(), bytes.end());
    });
  }
  size_t calls = 0;
  w.write(dir / "w.gguf", [&](size_t done, size_t total) {
    EXPECT_EQ(total, std::size(types));
    EXPECT_EQ(done, ++calls);
  });
  GgufFile f(dir / "w.gguf");
  EXPECT_EQ(f.header().version, 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "deepseek2");
  EXPECT_EQ(f.get_int("a.u32"), 4000000000ll);
  EXPECT_EQ(f.get_float("a.f32"), 0.25);
  EXPECT_TRUE(f.get_bool("a.bool", false));
  EXPECT_EQ(f.get("a.strings").strings, (std::vector<std::string>{"x", "", "ünïcode", std::string("nul\0byte", 8)}));
  EXPECT_EQ(f.get("a.ints").ints, (std::vector<int64_t>{-5, 0, 2147483647}));
  EXPECT_EQ(f.get("a.floats").floats, (std::vector<double>{1.5, -2.0}));
  EXPECT_EQ(f.get_int("a.u64"), 1ll << 40);
  EXPECT_EQ(f.get_int("a.i8"), -7);
  EXPECT_EQ(f.get_float("a.f64"), 1e-300);
  EXPECT_EQ(f.get_int("missing", 9), 9);
  EXPECT_TRUE(contains(error_of([&] { f.get_string("a.u32"); }), "a.u32"));
  EXPECT_TRUE(contains(error_of([&] { f.get_int("missing.key"); }), "missing.key"));
  for (size_t k = 0; k < std::size(types); ++k) {
    const GgufTensorInfo& t = f.tensor(std::string("t.") + ggml_type_name(types[k]));
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.type, types[k]);
    EXPECT_EQ(t.offset % 32, 0u);
    EXPECT_EQ(t.shape(), (std::vector<int64_t>{3, 256}));
    ASSERT_EQ(t.nbytes, expected[k].size());
    EXPECT_EQ(std::memcmp(f.data(t), expected[k].data(), t.nbytes), 0);
  }
}

TEST(GgufErrors, BadMagicAndVersion) {
  std::string bytes = build({});
  bytes[0] = 'X';
  EXPECT_TRUE(contains(parse_error(bytes), "bad magic"));
  Parts v1;
  v1.version = 1;
  EXPECT_TRUE(contains(parse_error(build(v1)), "version 1"));
  EXPECT_TRUE(contains(parse_error("GG"), "truncated"));
}

TEST(GgufErrors, EveryTruncationIsAnError) {
  const std::string bytes = build({});
  for (size_t n = 0; n < bytes.size(); ++n) {
    SCOPED_TRACE(n);
    const std::string cut = bytes.substr(0, n);
    const std::string message = parse_error(cut);
    EXPECT_TRUE(contains(message, "x.gguf")) << message;
  }
}

TEST(GgufErrors, LyingCountsAndLengths) {
  Parts many_tensors;
  many_tensors.n_tensors = 1ull << 40;
  EXPECT_TRUE(contains(parse_error(build(many_tensors)), "tensor count 1099511627776"));
  Parts many_kv;
  many_kv.n_kv = ~0ull;
  EXPECT_TRUE(contains(parse_error(build(many_kv)), "metadata count"));
  Parts long_key;
  long_key.key_length = 1ull << 62;
  EXPECT_TRUE(contains(parse_error(build(long_key)), "string length 4611686018427387904"));
  Parts bad_value_type;
  bad_value_type.value_type = 13;
  EXPECT_TRUE(contains(parse_error(build(bad_value_type)), "unknown value type 13"));
}

TEST(GgufErrors, AbsurdArrayLength) {
  Bytes f;
  f.b = "GGUF";
  f.put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1);
  f.str("tokenizer.ggml.tokens").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(1ull << 50);
  f.str("a").str("b");
  const std::string message = parse_error(f.b);
  EXPECT_TRUE(contains(message, "tokenizer.ggml.tokens")) << message;
  EXPECT_TRUE(contains(message, "array length 1125899906842624")) << message;
  Bytes nested;
  nested.b = "GGUF";
  nested.put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1);
  nested.str("k").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(0);
  EXPECT_TRUE(contains(parse_error(nested.b), "nested arrays"));
}

TEST(GgufErrors, TensorDescriptionsAreChecked) {
  Parts past_end;
  past_end.offset = 64;  // aligned, but the data section holds 32 bytes
  EXPECT_TRUE(contains(parse_error(build(past_end)), "runs past the end"));
  Parts huge_offset;
  huge_offset.offset = ~0ull - 31;
  EXPECT_TRUE(contains(parse_error(build(huge_offset)), "runs past the end"));
  Parts misaligned;
  misaligned.offset = 4;
  EXPECT_TRUE(contains(parse_error(build(misaligned)), "not a multiple of the alignment"));
  Parts unknown;
  unknown.tensor_type = 99;
  EXPECT_TRUE(contains(parse_error(build(unknown)), "ggml type id 99"));
  Parts q5_k;  // a real ggml type that whale does not read
  q5_k.tensor_type = 13;
  EXPECT_TRUE(contains(parse_error(build(q5_k)), "ggml type id 13"));
  Parts five_dims;
  five_dims.n_dims = 5;
  EXPECT_TRUE(contains(parse_error(build(five_dims)), "5 dimensions"));
  Parts zero_dim;
  zero_dim.ne1 = 0;
  EXPECT_TRUE(contains(parse_error(build(zero_dim)), "dimension 1 is 0"));
  Parts overflow;
  overflow.ne0 = 1ull << 40;
  overflow.ne1 = 1ull << 40;
  EXPECT_TRUE(contains(parse_error(build(overflow)), "below 2^62"));
  Parts partial_block;  // Q8_0 rows must hold whole blocks of 32
  partial_block.tensor_type = 8;
  EXPECT_TRUE(contains(parse_error(build(partial_block)), "not a multiple of the q8_0 block size 32"));
  Parts truncated_data;
  truncated_data.data_bytes = 16;
  EXPECT_TRUE(contains(parse_error(build(truncated_data)), "tensor 'w'"));
}

TEST(GgufErrors, DuplicatesAndAlignment) {
  Bytes f;
  f.b = "GGUF";
  f.put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(2);
  f.str("k").put<uint32_t>(4).put<uint32_t>(1);
  f.str("k").put<uint32_t>(4).put<uint32_t>(2);
  EXPECT_TRUE(contains(parse_error(f.b), "duplicate metadata key 'k'"));
  Bytes a;
  a.b = "GGUF";
  a.put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1);
  a.str("general.alignment").put<uint32_t>(4).put<uint32_t>(24);
  EXPECT_TRUE(contains(parse_error(a.b), "power of two"));
  Bytes t;
  t.b = "GGUF";
  t.put<uint32_t>(3).put<uint64_t>(2).put<uint64_t>(0);
  for (int k = 0; k < 2; ++k) t.str("w").put<uint32_t>(1).put<uint64_t>(4).put<uint32_t>(0).put<uint64_t>(0);
  t.pad();
  t.b.append(16, '\0');
  EXPECT_TRUE(contains(parse_error(t.b), "appears twice"));
}

TEST(GgufErrors, FileErrorsNameThePath) {
  TempDir dir;
  write_bytes(dir / "bad.gguf", "GGUF\x03\x00\x00\x00");
  const std::string message = error_of([&] { GgufFile f(dir / "bad.gguf"); });
  EXPECT_TRUE(contains(message, "bad.gguf")) << message;
}

// A file written by a second, independent writer (tests/fuzz/make_gguf_corpus.py, Python
// from the GGUF spec) with hand-made blocks of every supported type.
TEST(Gguf, ReadsAFileFromTheIndependentPythonWriter) {
  GgufFile f(std::string(WHALE_SOURCE_DIR) + "/tests/fuzz/corpus_gguf/all_types.gguf");
  EXPECT_EQ(f.get_string("general.architecture"), "deepseek2");
  EXPECT_EQ(f.get_int("deepseek2.block_count"), 1);
  EXPECT_EQ(f.get_float("deepseek2.rope.freq_base"), 10000.0);
  EXPECT_EQ(f.get("tokenizer.ggml.tokens").strings, (std::vector<std::string>{"a", "b", "ab"}));
  EXPECT_EQ(f.get("tokenizer.ggml.token_type").ints, (std::vector<int64_t>{1, 1, 1}));
  auto row = [&](const std::string& name) {
    const GgufTensorInfo& t = f.tensor(name);
    std::vector<float> y(size_t(t.numel()));
    dequantize_row(t.type, f.data(t), y.data(), t.numel());
    return y;
  };
  const std::vector<float> f32 = row("f32");
  for (int i = 0; i < 8; ++i) EXPECT_EQ(f32[size_t(i)], float(i));
  EXPECT_EQ(f.tensor("f32").shape(), (std::vector<int64_t>{2, 4}));
  const std::vector<float> q8 = row("q8_0");
  for (int i = 0; i < 32; ++i) EXPECT_EQ(q8[size_t(i)], 0.5f * float(i));
  const std::vector<float> q4 = row("q4_0");
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(q4[size_t(j)], 2.0f * float(j - 8));
    EXPECT_EQ(q4[size_t(j + 16)], 2.0f * float(7 - j));
  }
  EXPECT_EQ(row("bf16"), (std::vector<float>{1.0f, -1.0f, 2.0f, 0.0f}));
  // q4_K: scales bytes {1,2,3,196,0,1,2,131,69,86,103,31} = sc {1..7,63}, m {0..6,33}
  // (see QuantDequant.Q4_KByHand); qs[i] = i, d = 1, dmin = 0.5.
  const int sc[8] = {1, 2, 3, 4, 5, 6, 7, 63}, m[8] = {0, 1, 2, 3, 4, 5, 6, 33};
  const std::vector<float> q4k = row("q4_K");
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const int byte = 32 * c + l;
      EXPECT_EQ(q4k[size_t(64 * c + l)], float(sc[2 * c] * (byte & 0xF)) - 0.5f * float(m[2 * c]));
      EXPECT_EQ(q4k[size_t(64 * c + 32 + l)], float(sc[2 * c + 1] * (byte >> 4)) - 0.5f * float(m[2 * c + 1]));
    }
  // q6_K: ql[i] = i, qh[i] = i, scales[i] = i, d = 0.5.
  const std::vector<float> q6k = row("q6_K");
  for (int n = 0; n < 2; ++n)
    for (int l = 0; l < 32; ++l) {
      const int ql0 = 64 * n + l, ql1 = 64 * n + l + 32, qh = 32 * n + l;
      const int q[4] = {(ql0 & 0xF) | ((qh >> 0) & 3) << 4, (ql1 & 0xF) | ((qh >> 2) & 3) << 4,
                        (ql0 >> 4) | ((qh >> 4) & 3) << 4, (ql1 >> 4) | ((qh >> 6) & 3) << 4};
      for (int k = 0; k < 4; ++k) {
        const int i = 128 * n + 32 * k + l;
        EXPECT_EQ(q6k[size_t(i)], 0.5f * float(i / 16) * float(q[k] - 32)) << i;
      }
    }
}
