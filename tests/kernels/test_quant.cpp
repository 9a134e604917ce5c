// ggml block formats: dequantisation against blocks written by hand from the format
// definitions (values chosen so every expected float is exact), and round-to-nearest
// quantisation within its provable (Q8_0, Q4_0) or measured (K-quants) error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/quant.h"

using namespace whale;

namespace {

constexpr uint16_t kHalf = 0x3800;  // fp16 0.5
constexpr uint16_t kOne = 0x3C00;   // fp16 1.0
constexpr uint16_t kTwo = 0x4000;   // fp16 2.0

std::vector<float> gaussian(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

double rel_rmse(const std::vector<float>& x, const std::vector<float>& y) {
  double e = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += double(x[i] - y[i]) * (x[i] - y[i]);
    s += double(x[i]) * x[i];
  }
  return std::sqrt(e / s);
}

}  // namespace

TEST(QuantLayout, BlockSizesMatchGgml) {
  EXPECT_EQ(ggml_type_size(GgmlType::Q8_0), 34u);
  EXPECT_EQ(ggml_type_size(GgmlType::Q4_0), 18u);
  EXPECT_EQ(ggml_type_size(GgmlType::Q4_K), 144u);
  EXPECT_EQ(ggml_type_size(GgmlType::Q6_K), 210u);
  EXPECT_EQ(ggml_row_size(GgmlType::Q4_K, 512), 288u);
  EXPECT_EQ(ggml_row_size(GgmlType::BF16, 7), 14u);
  EXPECT_THROW(ggml_row_size(GgmlType::Q4_K, 128), Error);
  // Field offsets: scales come first in every block except Q6_K, whose d is last.
  EXPECT_EQ(offsetof(block_q4_K, scales), 4u);
  EXPECT_EQ(offsetof(block_q4_K, qs), 16u);
  EXPECT_EQ(offsetof(block_q6_K, qh), 128u);
  EXPECT_EQ(offsetof(block_q6_K, scales), 192u);
  EXPECT_EQ(offsetof(block_q6_K, d), 208u);
}

TEST(QuantDequant, Q8_0ByHand) {
  block_q8_0 b;
  b.d = kHalf;
  for (int i = 0; i < 32; ++i) b.qs[i] = int8_t(i * 8 - 128);  // -128, -120, ..., 120
  float y[32];
  dequantize_row_q8_0(&b, y, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.5f * float(i * 8 - 128)) << i;
}

TEST(QuantDequant, Q4_0ByHand) {
  // Byte j holds value j (low nibble) and value j + 16 (high nibble); stored q - 8.
  block_q4_0 b;
  b.d = kTwo;
  for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(j | ((15 - j) << 4));
  float y[32];
  dequantize_row_q4_0(&b, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 2.0f * float(j - 8)) << j;
    EXPECT_EQ(y[j + 16], 2.0f * float(7 - j)) << j;
  }
}

TEST(QuantDequant, Q4_KByHand) {
  // Sub-block s (32 values) decodes to d * sc[s] * q - dmin * m[s]. Six-bit scales and mins
  // packed as ggml does: bytes 0-3 scales 0-3 (top two bits: high bits of scales 4-7),
  // bytes 4-7 mins 0-3 (top bits: high bits of mins 4-7), bytes 8-11 low nibbles of
  // scales 4-7 with low nibbles of mins 4-7 above them.
  const int sc[8] = {1, 2, 3, 4, 5, 6, 7, 63};
  const int m[8] = {0, 1, 2, 3, 4, 5, 6, 33};
  block_q4_K b;
  b.d = kOne;
  b.dmin = kHalf;
  const uint8_t packed[12] = {1, 2, 3, 4 | (3 << 6), 0, 1, 2, 3 | (2 << 6),
                              5 | (4 << 4), 6 | (5 << 4), 7 | (6 << 4), 15 | (1 << 4)};
  std::memcpy(b.scales, packed, 12);
  // 64 values per 32 bytes: sub-block 2c in the low nibbles, 2c + 1 in the high nibbles.
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) b.qs[32 * c + l] = uint8_t((l & 0xF) | (((l + c) & 0xF) << 4));
  float y[256];
  dequantize_row_q4_K(&b, y, 256);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      EXPECT_EQ(y[64 * c + l], float(sc[2 * c] * (l & 0xF)) - 0.5f * float(m[2 * c])) << c << " " << l;
      EXPECT_EQ(y[64 * c + 32 + l], float(sc[2 * c + 1] * ((l + c) & 0xF)) - 0.5f * float(m[2 * c + 1])) << c << " " << l;
    }
  for (int j = 0; j < 8; ++j) {
    uint8_t s, mn;
    q4_K_scale_min(j, b.scales, &s, &mn);
    EXPECT_EQ(s, sc[j]);
    EXPECT_EQ(mn, m[j]);
  }
}

TEST(QuantDequant, Q6_KByHand) {
  // Value i = d * scales[i / 16] * (q[i] - 32) with q in 0..63: low four bits in ql, high two
  // in qh. Each half of 128 values: ql[l] holds q[l] | q[l+64] << 4, ql[l+32] holds
  // q[l+32] | q[l+96] << 4, qh[l] holds the high bits of q[l], q[l+32], q[l+64], q[l+96].
  int q[256];
  for (int i = 0; i < 256; ++i) q[i] = (i * 7) % 64;
  block_q6_K b;
  b.d = kHalf;
  for (int s = 0; s < 16; ++s) b.scales[s] = int8_t((s % 2 ? -1 : 1) * (s + 1));
  for (int n = 0; n < 2; ++n) {
    const int* h = q + 128 * n;
    for (int l = 0; l < 32; ++l) {
      b.ql[64 * n + l] = uint8_t((h[l] & 0xF) | ((h[l + 64] & 0xF) << 4));
      b.ql[64 * n + l + 32] = uint8_t((h[l + 32] & 0xF) | ((h[l + 96] & 0xF) << 4));
      b.qh[32 * n + l] = uint8_t((h[l] >> 4) | ((h[l + 32] >> 4) << 2) | ((h[l + 64] >> 4) << 4) | ((h[l + 96] >> 4) << 6));
    }
  }
  float y[256];
  dequantize_row_q6_K(&b, y, 256);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(y[i], 0.5f * float(b.scales[i / 16]) * float(q[i] - 32)) << i;
}

TEST(QuantDequant, DispatchByTypeMatchesDirectCalls) {
  const std::vector<float> x = gaussian(512, 5);
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K,
                     GgmlType::Q6_K}) {
    SCOPED_TRACE(ggml_type_name(t));
    std::vector<uint8_t> bytes(ggml_row_size(t, 512));
    quantize_row(t, x.data(), bytes.data(), 512);
    std::vector<float> y(512);
    dequantize_row(t, bytes.data(), y.data(), 512);
    if (t == GgmlType::F32) {
      EXPECT_EQ(y, x);
    } else if (t == GgmlType::F16) {
      for (int i = 0; i < 512; ++i) EXPECT_EQ(y[i], f16_to_f32(f32_to_f16(x[i])));
    } else if (t == GgmlType::BF16) {
      for (int i = 0; i < 512; ++i) EXPECT_EQ(y[i], bf16_to_f32(f32_to_bf16(x[i])));
    }
  }
}

// Q8_0 stores q = round(x / d) with d = amax / 127, then d rounded to fp16 (relative error
// <= 2^-11): |x - d16 q| <= d / 2 + 127 d 2^-11 < 0.563 d.
TEST(QuantRoundTrip, Q8_0WithinHalfAStep) {
  const std::vector<float> x = gaussian(32 * 64, 1, 3.0f);
  std::vector<block_q8_0> b(64);
  quantize_row_q8_0(x.data(), b.data(), int64_t(x.size()));
  std::vector<float> y(x.size());
  dequantize_row_q8_0(b.data(), y.data(), int64_t(x.size()));
  for (size_t blk = 0; blk < 64; ++blk) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[blk * 32 + i]));
    const float d = amax / 127.0f;
    for (int i = 0; i < 32; ++i) EXPECT_LE(std::fabs(x[blk * 32 + i] - y[blk * 32 + i]), 0.563f * d);
  }
}

// Q4_0: d = max / -8 maps the value of largest magnitude to code 0 exactly; the others round
// to nearest (half a step, plus d's fp16 rounding: 8 |d| 2^-11), except that code 16 does
// not exist, so values at the opposite extreme (x / d > 7.5) clamp to 15: one step.
TEST(QuantRoundTrip, Q4_0WithinHalfAStep) {
  const std::vector<float> x = gaussian(32 * 64, 2);
  std::vector<block_q4_0> b(64);
  quantize_row_q4_0(x.data(), b.data(), int64_t(x.size()));
  std::vector<float> y(x.size());
  dequantize_row_q4_0(b.data(), y.data(), int64_t(x.size()));
  int clamped = 0;
  for (size_t blk = 0; blk < 64; ++blk) {
    float max = 0;
    for (int i = 0; i < 32; ++i)
      if (std::fabs(x[blk * 32 + i]) > std::fabs(max)) max = x[blk * 32 + i];
    const float d = max / -8.0f;
    for (int i = 0; i < 32; ++i) {
      const float v = x[blk * 32 + i], err = std::fabs(v - y[blk * 32 + i]);
      if (v / d + 8.0f > 15.5f) {
        ++clamped;
        EXPECT_LE(err, std::fabs(d) * (1.0f + 8.0f / 2048)) << blk;
      } else {
        EXPECT_LE(err, std::fabs(d) * (0.5f + 8.0f / 2048)) << blk;
      }
    }
  }
  EXPECT_GT(clamped, 0);  // the data reach the clamped case
}

// K-quants: the 6-bit (Q4_K) and 8-bit (Q6_K) sub-block scales add error that depends on
// the data, so these bounds are measured ones with a margin (Gaussian data, 64 blocks):
// 4 bits give about 1/15 of a sub-block range per step, 6 bits about 1/63.
TEST(QuantRoundTrip, KQuantsErrorBounds) {
  const std::vector<float> x = gaussian(256 * 64, 3);
  std::vector<float> y(x.size());
  std::vector<block_q4_K> b4(64);
  quantize_row_q4_K(x.data(), b4.data(), int64_t(x.size()));
  dequantize_row_q4_K(b4.data(), y.data(), int64_t(x.size()));
  const double e4 = rel_rmse(x, y);
  std::vector<block_q6_K> b6(64);
  quantize_row_q6_K(x.data(), b6.data(), int64_t(x.size()));
  dequantize_row_q6_K(b6.data(), y.data(), int64_t(x.size()));
  const double e6 = rel_rmse(x, y);
  std::vector<block_q8_0> b8(x.size() / 32);
  quantize_row_q8_0(x.data(), b8.data(), int64_t(x.size()));
  dequantize_row_q8_0(b8.data(), y.data(), int64_t(x.size()));
  const double e8 = rel_rmse(x, y);
  RecordProperty("rel_rmse_q4_K", std::to_string(e4));
  RecordProperty("rel_rmse_q6_K", std::to_string(e6));
  RecordProperty("rel_rmse_q8_0", std::to_string(e8));
  EXPECT_LT(e4, 0.13) << "q4_K";
  EXPECT_LT(e6, 0.035) << "q6_K";
  EXPECT_LT(e8, 0.01) << "q8_0";
  EXPECT_LT(e6, e4);
}

TEST(QuantRoundTrip, ZeroAndConstantBlocks) {
  std::vector<float> zeros(256, 0.0f), y(256, 1.0f);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_K}) {
    std::vector<uint8_t> bytes(ggml_row_size(t, 256));
    quantize_row(t, zeros.data(), bytes.data(), 256);
    dequantize_row(t, bytes.data(), y.data(), 256);
    for (float v : y) EXPECT_EQ(v, 0.0f) << ggml_type_name(t);
  }
  // A block of one repeated value is reproduced within fp16 precision by every format.
  std::vector<float> c(256, -0.75f);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
    std::vector<uint8_t> bytes(ggml_row_size(t, 256));
    quantize_row(t, c.data(), bytes.data(), 256);
    dequantize_row(t, bytes.data(), y.data(), 256);
    for (float v : y) EXPECT_NEAR(v, -0.75f, 0.75f * 2e-3f) << ggml_type_name(t);
  }
}

TEST(QuantRoundTrip, Q8_KBlockSums) {
  const std::vector<float> x = gaussian(512, 4);
  std::vector<block_q8_K> b(2);
  quantize_row_q8_K(x.data(), b.data(), 512);
  for (const auto& blk : b)
    for (int j = 0; j < 16; ++j) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += blk.qs[16 * j + l];
      EXPECT_EQ(blk.bsums[j], sum);
    }
  std::vector<float> y(512);
  dequantize_row_q8_K(b.data(), y.data(), 512);
  EXPECT_LT(rel_rmse(x, y), 0.01);
}
