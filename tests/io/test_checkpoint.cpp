// Checkpoint directories written by save_model and read by load_model: bit-exact round trips
// in F32, BF16 and FP8, FP8 block (de)quantisation against hand-derived values, and the
// errors a damaged checkpoint produces.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "io/checkpoint.h"
#include "io_test_util.h"

using namespace whale;
using whale::testing::error_of;
using whale::testing::read_bytes;
using whale::testing::TempDir;
using whale::testing::write_bytes;

namespace {

std::unique_ptr<Model> tiny_model() {
  ModelConfig c = load_model_config(std::string(WHALE_SOURCE_DIR) + "/configs/tiny-v3.json");
  InitOptions init;
  init.seed = 3;
  init.norm_jitter = 0.1;       // so norms are not all exactly 1
  init.router_bias_std = 0.05;  // so the router bias is not all zeros
  return init_model(c, init);
}

std::string float_bytes(const float* f, int64_t n) {
  return std::string(reinterpret_cast<const char*>(f), size_t(n) * 4);
}

std::string bf16_bytes(const float* f, int64_t n) {
  std::string out(size_t(n) * 2, '\0');
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = f32_to_bf16(f[i]);
    std::memcpy(&out[size_t(i) * 2], &h, 2);
  }
  return out;
}

std::string tensor_bytes(const SafetensorsFile& file, const std::string& name) {
  const TensorInfo* info = file.find(name);
  EXPECT_NE(info, nullptr) << name;
  if (!info) return "";
  return std::string(reinterpret_cast<const char*>(file.data(*info)), info->end - info->begin);
}

// Loaded tensor contents as bytes of its own dtype.
std::string loaded_bytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.data), size_t(t.numel()) * dtype_size(t.dtype));
}

void expect_same_files(const std::string& a, const std::string& b) {
  const std::string x = read_bytes(a), y = read_bytes(b);
  EXPECT_EQ(x.size(), y.size()) << a << " vs " << b;
  EXPECT_TRUE(x == y) << a << " and " << b << " differ";
}

// save -> load -> save again, and check both the file bytes and the values against `original`.
void check_round_trip(SaveDType dtype, const LoadOptions& options) {
  TempDir dir;
  auto original = tiny_model();
  const std::string first = dir / "first", second = dir / "second";
  save_model(*original, first, dtype);
  auto loaded = load_model(first, options);
  save_model(*loaded, second, dtype);
  expect_same_files(first + "/model.safetensors", second + "/model.safetensors");
  expect_same_files(first + "/config.json", second + "/config.json");

  const ModelConfig& c = original->config;
  const int64_t br = c.fp8_block_rows, bc = c.fp8_block_cols;
  SafetensorsFile file(first + "/model.safetensors");
  std::map<std::string, const Tensor*> from_file;
  visit_weights(loaded->config, loaded->weights,
                [&](Tensor& t, const TensorSpec& spec) { from_file[spec.name] = &t; });
  size_t checked = 0;
  visit_weights(c, original->weights, [&](Tensor& t, const TensorSpec& spec) {
    SCOPED_TRACE(spec.name);
    const float* init = t.f32();
    const int64_t n = t.numel();
    const Tensor& back = *from_file.at(spec.name);
    ASSERT_EQ(back.shape, spec.shape);
    if (dtype == SaveDType::F32) {
      EXPECT_TRUE(tensor_bytes(file, spec.name) == float_bytes(init, n));
      EXPECT_TRUE(loaded_bytes(back) == float_bytes(init, n));
    } else if (dtype == SaveDType::BF16) {
      const std::string want = bf16_bytes(init, n);
      EXPECT_TRUE(tensor_bytes(file, spec.name) == want);
      if (back.dtype == DType::BF16) {
        EXPECT_TRUE(spec.linear && options.keep_bf16) << "only kept projections stay BF16";
        EXPECT_TRUE(loaded_bytes(back) == want);
      } else {
        std::vector<float> widened(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) widened[size_t(i)] = bf16_to_f32(f32_to_bf16(init[i]));
        EXPECT_TRUE(loaded_bytes(back) == float_bytes(widened.data(), n));
      }
    } else if (spec.fp8_eligible) {
      std::vector<uint8_t> q;
      std::vector<float> s;
      quantize_fp8_blocks(init, spec.shape[0], spec.shape[1], br, bc, &q, &s);
      EXPECT_TRUE(tensor_bytes(file, spec.name) == std::string(q.begin(), q.end()));
      EXPECT_TRUE(tensor_bytes(file, spec.name + "_scale_inv") ==
                  float_bytes(s.data(), int64_t(s.size())));
      // Loaded value = E4M3 value * its block's scale (dequantize_fp8_blocks is checked by hand
      // below).
      const int64_t cols = spec.shape[1], bcols = (cols + bc - 1) / bc;
      std::vector<float> dq(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        dq[size_t(i)] =
            fp8_e4m3_to_f32(q[size_t(i)]) * s[size_t((i / cols) / br * bcols + (i % cols) / bc)];
      EXPECT_TRUE(loaded_bytes(back) == float_bytes(dq.data(), n));
    } else {  // FP8 checkpoints keep norms, embeddings, router and head in F32
      EXPECT_TRUE(tensor_bytes(file, spec.name) == float_bytes(init, n));
      EXPECT_TRUE(loaded_bytes(back) == float_bytes(init, n));
    }
    ++checked;
  });
  EXPECT_EQ(checked, from_file.size());
  EXPECT_GT(checked, 100u);
}

}  // namespace

TEST(Checkpoint, F32RoundTripIsBitExact) { check_round_trip(SaveDType::F32, {}); }

TEST(Checkpoint, Bf16RoundTripIsBitExact) {
  check_round_trip(SaveDType::BF16, {});
  LoadOptions widen;
  widen.keep_bf16 = false;
  check_round_trip(SaveDType::BF16, widen);
}

// Requantising a dequantised block reproduces the same bytes: the block's largest element maps
// to exactly 448, so its scale comes back unchanged. (Checked exhaustively over two binades of
// amax while writing this test: fl(fl(448 * fl(amax / 448)) / 448) == fl(amax / 448).)
TEST(Checkpoint, Fp8RoundTripIsBitExact) { check_round_trip(SaveDType::FP8, {}); }

TEST(Checkpoint, SavedConfigRecordsFp8BlockSize) {
  TempDir dir;
  auto m = tiny_model();
  save_model(*m, dir.path(), SaveDType::FP8);
  const ModelConfig c = load_model_config(dir / "config.json");
  EXPECT_TRUE(c.fp8);
  EXPECT_EQ(c.fp8_block_rows, 128);
  EXPECT_EQ(c.fp8_block_cols, 128);
}

// ---- FP8 block scaling by hand ------------------------------------------------------------

// E4M3 codes used below (bias 7): 0x38 = 1.0, 0x7e = 448, 0xb8 = -1, 0x3c = 1.5, 0xc0 = -2,
// 0x40 = 2, 0x01 = 2^-9 (smallest subnormal), 0x00 = 0.
TEST(Fp8Blocks, DequantisesPartialBlocksByHand) {
  const int64_t rows = 130, cols = 200, br = 128,
                bc = 128;  // scale grid 2 x 2; last row/col blocks partial
  std::vector<uint8_t> q(size_t(rows * cols), 0x38);
  auto at = [&](int64_t i, int64_t j) -> uint8_t& { return q[size_t(i * cols + j)]; };
  at(0, 0) = 0x7e;
  at(127, 127) = 0xb8;
  at(0, 128) = 0xc0;
  at(5, 130) = 0x00;
  at(128, 0) = 0x3c;
  at(129, 128) = 0x40;
  at(129, 199) = 0x01;
  const std::vector<float> scale_inv{0.5f, 2.0f, 4.0f, 0.25f};  // [[0.5, 2], [4, 0.25]]
  std::vector<float> out(size_t(rows * cols), -1.0f);
  dequantize_fp8_blocks(q.data(), scale_inv.data(), rows, cols, br, bc, out.data());
  auto v = [&](int64_t i, int64_t j) { return out[size_t(i * cols + j)]; };
  EXPECT_EQ(v(0, 0), 224.0f);     // 448 * 0.5
  EXPECT_EQ(v(127, 127), -0.5f);  // -1 * 0.5, last element of the full block
  EXPECT_EQ(v(1, 3), 0.5f);
  EXPECT_EQ(v(0, 128), -4.0f);  // -2 * 2, first column of the partial column block
  EXPECT_EQ(v(5, 130), 0.0f);
  EXPECT_EQ(v(127, 199), 2.0f);
  EXPECT_EQ(v(128, 0), 6.0f);  // 1.5 * 4, first row of the partial row block
  EXPECT_EQ(v(128, 127), 4.0f);
  EXPECT_EQ(v(129, 128), 0.5f);  // 2 * 0.25
  EXPECT_EQ(v(129, 150), 0.25f);
  EXPECT_EQ(v(129, 199), 0.00048828125f);  // 2^-9 * 0.25 = 2^-11, the very last element
  // Block sums (all terms exact in double):
  //   [0:128, 0:128]   (16382 ones + 448 - 1) * 0.5 = 8414.5
  //   [0:128, 128:200] (9214 ones - 2 + 0) * 2      = 18424
  //   [128:130, 0:128] (255 ones + 1.5) * 4         = 1026
  //   [128:130, 128:]  (142 ones + 2 + 2^-9) * 0.25 = 36 + 2^-11
  double sums[2][2] = {};
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) sums[i / br][j / bc] += double(v(i, j));
  EXPECT_EQ(sums[0][0], 8414.5);
  EXPECT_EQ(sums[0][1], 18424.0);
  EXPECT_EQ(sums[1][0], 1026.0);
  EXPECT_EQ(sums[1][1], 36.0 + 0.00048828125);
}

TEST(Fp8Blocks, QuantisesPartialBlocksByHand) {
  // 2 x 3 with 2 x 2 blocks: block (0,0) has amax 896 -> scale 2; block (0,1) is the last
  // column alone with amax 7 -> scale 7/448 = 2^-6.
  const std::vector<float> w{896.0f, -448.0f, 1.0f,  //
                             0.5f,   3.0f,    -7.0f};
  std::vector<uint8_t> q;
  std::vector<float> s;
  quantize_fp8_blocks(w.data(), 2, 3, 2, 2, &q, &s);
  EXPECT_EQ(s, (std::vector<float>{2.0f, 0.015625f}));
  // 896/2 = 448 -> 0x7e; -448/2 = -224 = -1.75 * 2^7 -> 0xf6; 1/2^-6 = 64 = 2^6 -> 0x68;
  // 0.5/2 = 0.25 = 2^-2 -> 0x28; 3/2 = 1.5 -> 0x3c; -7/2^-6 = -448 -> 0xfe.
  EXPECT_EQ(q, (std::vector<uint8_t>{0x7e, 0xf6, 0x68, 0x28, 0x3c, 0xfe}));
  std::vector<float> back(6);
  dequantize_fp8_blocks(q.data(), s.data(), 2, 3, 2, 2, back.data());
  EXPECT_EQ(back, w);  // every value here is representable, so the trip is exact
}

TEST(Fp8Blocks, ZeroBlockKeepsUnitScale) {
  const std::vector<float> w(6, 0.0f);
  std::vector<uint8_t> q;
  std::vector<float> s;
  quantize_fp8_blocks(w.data(), 2, 3, 128, 128, &q, &s);
  EXPECT_EQ(s, std::vector<float>{1.0f});
  EXPECT_EQ(q, std::vector<uint8_t>(6, 0));
}

// ---- Damaged checkpoints --------------------------------------------------------------------

namespace {

struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

std::vector<OwnedTensor> read_all(const std::string& path) {
  SafetensorsFile file(path);
  std::vector<OwnedTensor> out;
  for (const TensorInfo& t : file.tensors())
    out.push_back({t.name, t.dtype, t.shape,
                   std::string(reinterpret_cast<const char*>(file.data(t)), t.end - t.begin)});
  return out;
}

void write_all(const std::string& path, const std::vector<OwnedTensor>& tensors) {
  std::vector<TensorToWrite> out;
  for (const auto& t : tensors) out.push_back({t.name, t.dtype, t.shape, t.bytes.data()});
  write_safetensors(path, out);
}

// Saves the tiny model, lets `damage` edit its tensors, and returns load_model's error.
template <class F>
std::string damaged_load_error(SaveDType dtype, F&& damage, const LoadOptions& options = {}) {
  TempDir dir;
  auto m = tiny_model();
  save_model(*m, dir.path(), dtype);
  const std::string path = dir / "model.safetensors";
  auto tensors = read_all(path);
  damage(tensors);
  write_all(path, tensors);
  const std::string message = error_of([&] { load_model(dir.path(), options); });
  EXPECT_CONTAINS(message, dir.path());
  return message;
}

OwnedTensor& named(std::vector<OwnedTensor>& tensors, const std::string& name) {
  for (auto& t : tensors)
    if (t.name == name) return t;
  throw std::runtime_error("test setup: no tensor " + name);
}

void erase(std::vector<OwnedTensor>& tensors, const std::string& name) {
  const size_t before = tensors.size();
  std::erase_if(tensors, [&](const OwnedTensor& t) { return t.name == name; });
  if (tensors.size() != before - 1) throw std::runtime_error("test setup: no tensor " + name);
}

template <class T>
void poke(OwnedTensor& t, size_t index, T value) {
  std::memcpy(&t.bytes[index * sizeof(T)], &value, sizeof(T));
}

}  // namespace

TEST(CheckpointErrors, MissingTensorIsNamed) {
  const std::string name = "model.layers.2.mlp.experts.3.up_proj.weight";
  const std::string message =
      damaged_load_error(SaveDType::F32, [&](auto& ts) { erase(ts, name); });
  EXPECT_CONTAINS(message, "missing tensor '" + name + "'");
}

TEST(CheckpointErrors, WrongShapeNamesTensorAndBothShapes) {
  const std::string name =
      "model.layers.0.self_attn.o_proj.weight";  // [hidden, heads * v_head_dim]
  const std::string message = damaged_load_error(SaveDType::F32, [&](auto& ts) {
    OwnedTensor& t = named(ts, name);
    t.shape = {128, 64};
    t.bytes.resize(128 * 64 * 4);
  });
  EXPECT_CONTAINS(message, "tensor '" + name + "'");
  EXPECT_CONTAINS(message, "has shape [128, 64]; config.json implies [128, 128]");
}

TEST(CheckpointErrors, UnsupportedDtypeIsNamed) {
  const std::string message = damaged_load_error(SaveDType::F32, [&](auto& ts) {
    named(ts, "model.norm.weight").dtype = DType::I32;  // same size, wrong kind
  });
  EXPECT_CONTAINS(message, "tensor 'model.norm.weight'");
  EXPECT_CONTAINS(message, "has dtype I32");
}

TEST(CheckpointErrors, Fp8WeightWithoutScale) {
  const std::string name = "model.layers.0.self_attn.q_a_proj.weight";
  const std::string message =
      damaged_load_error(SaveDType::FP8, [&](auto& ts) { erase(ts, name + "_scale_inv"); });
  EXPECT_CONTAINS(message, "tensor '" + name + "'");
  EXPECT_CONTAINS(message, "is F8_E4M3 but its block scale '" + name + "_scale_inv' is missing");
}

TEST(CheckpointErrors, Fp8ScaleOfWrongShapeOrDtype) {
  const std::string name =
      "model.layers.0.self_attn.q_a_proj.weight_scale_inv";  // weight [96, 128] -> [1, 1]
  std::string message = damaged_load_error(SaveDType::FP8, [&](auto& ts) {
    OwnedTensor& t = named(ts, name);
    t.shape = {2, 2};
    t.bytes.assign(16, '\0');
  });
  EXPECT_CONTAINS(message, "tensor '" + name + "'");
  EXPECT_CONTAINS(message, "expected F32 [1, 1] block scales, found F32 [2, 2]");
  message = damaged_load_error(SaveDType::FP8, [&](auto& ts) {
    OwnedTensor& t = named(ts, name);
    t.dtype = DType::BF16;
    t.bytes.resize(2);
  });
  EXPECT_CONTAINS(message, "expected F32 [1, 1] block scales, found BF16 [1, 1]");
}

TEST(CheckpointErrors, NonFiniteWeightsAreRejected) {
  std::string message = damaged_load_error(SaveDType::F32, [&](auto& ts) {
    poke(named(ts, "model.norm.weight"), 5, std::numeric_limits<float>::quiet_NaN());
  });
  EXPECT_CONTAINS(message, "tensor 'model.norm.weight'");
  EXPECT_CONTAINS(message, "non-finite value at element 5");
  message = damaged_load_error(SaveDType::F32, [&](auto& ts) {
    poke(named(ts, "model.layers.1.mlp.experts.0.down_proj.weight"), 77,
         -std::numeric_limits<float>::infinity());
  });
  EXPECT_CONTAINS(message, "tensor 'model.layers.1.mlp.experts.0.down_proj.weight'");
  EXPECT_CONTAINS(message, "non-finite value at element 77");
  // FP8: the NaN code 0x7f, and an infinite block scale.
  message = damaged_load_error(SaveDType::FP8, [&](auto& ts) {
    named(ts, "model.layers.0.mlp.up_proj.weight").bytes[1000] = char(0x7f);
  });
  EXPECT_CONTAINS(message, "tensor 'model.layers.0.mlp.up_proj.weight'");
  EXPECT_CONTAINS(message, "non-finite value at element 1000");
  message = damaged_load_error(SaveDType::FP8, [&](auto& ts) {
    poke(named(ts, "model.layers.0.mlp.up_proj.weight_scale_inv"), 0,
         std::numeric_limits<float>::infinity());
  });
  EXPECT_CONTAINS(message, "tensor 'model.layers.0.mlp.up_proj.weight'");
  EXPECT_CONTAINS(message, "non-finite value");
  // BF16 norms are widened to F32 on load and checked there.
  message = damaged_load_error(SaveDType::BF16, [&](auto& ts) {
    poke(named(ts, "model.norm.weight"), 2, uint16_t(0x7fc0));  // BF16 NaN
  });
  EXPECT_CONTAINS(message, "non-finite value at element 2");
}

TEST(CheckpointErrors, MissingOrBrokenConfig) {
  TempDir dir;
  auto m = tiny_model();
  save_model(*m, dir.path());
  std::filesystem::remove(dir / "config.json");
  std::string message = error_of([&] { load_model(dir.path()); });
  EXPECT_CONTAINS(message, dir / "config.json");
  EXPECT_CONTAINS(message, "cannot open");
  write_bytes(dir / "config.json", "{\"hidden_size\": ");
  message = error_of([&] { load_model(dir.path()); });
  EXPECT_CONTAINS(message, dir / "config.json");
  EXPECT_CONTAINS(message, "not valid JSON");
  EXPECT_CONTAINS(error_of([&] { load_model(dir / "nowhere"); }), "not a checkpoint directory");
}

TEST(CheckpointErrors, ConfigThatDisagreesWithTheWeights) {
  TempDir dir;
  auto m = tiny_model();
  save_model(*m, dir.path());
  ModelConfig c = m->config;
  // One more decoder layer than the file holds: layer 3 then reads the MTP layer's attention and
  // MoE tensors (same names), and the MTP module, now layer 4, is missing.
  c.num_hidden_layers = 4;
  write_bytes(dir / "config.json", model_config_to_json(c).dump(2));
  EXPECT_CONTAINS(error_of([&] { load_model(dir.path()); }), "missing tensor 'model.layers.4.");
  c.num_hidden_layers = 3;
  c.hidden_size = 64;
  write_bytes(dir / "config.json", model_config_to_json(c).dump(2));
  EXPECT_CONTAINS(
      error_of([&] { load_model(dir.path()); }),
      "tensor 'model.embed_tokens.weight': has shape [512, 128]; config.json implies [512, 64]");
}

// A BF16 projection widened to F32 on load is checked like any F32 weight.
TEST(CheckpointErrors, NonFiniteBf16ProjectionIsRejectedWhenWidened) {
  LoadOptions widen;
  widen.keep_bf16 = false;
  const std::string message = damaged_load_error(
      SaveDType::BF16,
      [&](auto& ts) {
        poke(named(ts, "model.layers.0.self_attn.o_proj.weight"), 2, uint16_t(0x7f80));
      },  // +inf
      widen);
  EXPECT_CONTAINS(message, "tensor 'model.layers.0.self_attn.o_proj.weight'");
  EXPECT_CONTAINS(message, "non-finite value at element 2");
}

// Known gap: with keep_bf16 (the default) projections stay mapped as BF16 and load_model only
// scans F32 tensors, so this NaN loads silently. Enable once src/io/checkpoint.cpp checks BF16.
TEST(CheckpointErrors, DISABLED_NonFiniteBf16ProjectionIsRejectedWhenKept) {
  const std::string message = damaged_load_error(SaveDType::BF16, [&](auto& ts) {
    poke(named(ts, "model.layers.0.self_attn.o_proj.weight"), 2, uint16_t(0x7fc0));  // NaN
  });
  EXPECT_CONTAINS(message, "non-finite value at element 2");
}
