// FP8 E4M3 fine-grained quantisation (DeepSeek-V3 section 3.3.2) against hand-derived values.
// E4M3: 3 mantissa bits, so in [2^e, 2^(e+1)) the grid step is 2^(e-3); below 2^-6 the
// subnormal step is 2^-9. Each group is scaled by amax / 448 before rounding to that grid.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "kernels/quant_sim.h"

using namespace whale;

namespace {
// Results are k * scale with scale = amax / 448 computed in float: compare to 1e-6 relative,
// far below the grid steps (>= 1/16 relative) the cases distinguish.
void expect_close(float got, double want) { EXPECT_NEAR(got, want, 1e-6 * std::max(1.0, std::abs(want))) << want; }
}  // namespace

TEST(QuantSim, RowTilesHaveTheirOwnScale) {
  const int64_t rows = 2, cols = 200;  // two tiles per row, the second one 72 wide
  std::vector<float> x(size_t(rows * cols), 0.0f), y(x.size());
  // row 0, tile 0: amax 896 -> scale 2. 1.1 / 2 = 0.55, step 1/16 in [0.5, 1): 0.5625 -> 1.125.
  x[0] = 896.0f;
  x[1] = 1.1f;
  x[2] = 3.0f;   // 1.5 is on the grid: exact
  x[3] = -7.0f;  // -3.5: exact
  // row 0, tile 1 (columns 128..199): amax 0.448 -> scale 0.001. 0.11 -> 110, step 8 in
  // [64, 128): 112 -> 0.112. A large value in tile 0 does not coarsen this tile.
  x[150] = 0.448f;
  x[199] = 0.11f;
  // row 1, tile 0: amax 448 -> scale 1. 0.001 = 0.512 * 2^-9 rounds up to the smallest
  // subnormal 2^-9; 0.0009 = 0.46 * 2^-9 rounds to 0. 300 in [256, 448]: step 32 -> 288.
  x[cols + 0] = 448.0f;
  x[cols + 1] = 0.001f;
  x[cols + 2] = 0.0009f;
  x[cols + 3] = 300.0f;
  // row 1, tile 1 stays all zeros (amax 0 must not divide by zero).
  fake_quant_fp8_tiles(x.data(), y.data(), rows, cols, 128);
  expect_close(y[0], 896.0);
  expect_close(y[1], 1.125);
  expect_close(y[2], 3.0);
  expect_close(y[3], -7.0);
  expect_close(y[150], 0.448);
  expect_close(y[199], 0.112);
  expect_close(y[cols + 0], 448.0);
  expect_close(y[cols + 1], 0.001953125);
  EXPECT_EQ(y[cols + 2], 0.0f);
  expect_close(y[cols + 3], 288.0);
  for (int64_t c = 128; c < cols; ++c) EXPECT_EQ(y[size_t(cols + c)], 0.0f);
}

TEST(QuantSim, ColumnTilesRunDownTheTokens) {
  // 130 rows x 2 columns, tile 128: rows 0..127 and 128..129 are separate groups per column.
  const int64_t rows = 130, cols = 2;
  std::vector<float> x(size_t(rows * cols), 0.0f), y(x.size());
  x[0 * cols + 0] = 44.8f;  // column 0, group 0: scale 0.1 -> 1.3 / 0.1 = 13, on the grid: 1.3
  x[5 * cols + 0] = 1.3f;
  x[5 * cols + 1] = 1.3f;   // column 1, group 0: amax 1.3 -> 1.3 maps to 448 exactly
  x[7 * cols + 1] = 0.6f;   // 0.6 * 448 / 1.3 = 206.77, step 16 in [128, 256): 208 -> 0.60357
  x[129 * cols + 0] = 1.3f;  // column 0, group 1: its own amax, 1.3 -> exact
  fake_quant_fp8_column_tiles(x.data(), y.data(), rows, cols, 128);
  expect_close(y[0 * cols + 0], 44.8);
  expect_close(y[5 * cols + 0], 1.3);
  expect_close(y[5 * cols + 1], 1.3);
  expect_close(y[7 * cols + 1], 208.0 * 1.3 / 448.0);
  expect_close(y[129 * cols + 0], 1.3);
  // In 1 x 128 row tiles the same 0.6 is its row's amax, so it is exact: the grouping matters.
  fake_quant_fp8_tiles(x.data(), y.data(), rows, cols, 128);
  expect_close(y[7 * cols + 1], 0.6);
}

TEST(QuantSim, WeightBlocksAre128By128) {
  const int64_t n = 256;
  std::vector<float> w(size_t(n * n), 0.0f), y(w.size());
  auto at = [&](int64_t r, int64_t c) -> float& { return w[size_t(r * n + c)]; };
  at(0, 0) = 448.0f;      // block (0, 0): scale 1. 1.3 in [1, 2), step 1/8: 1.25
  at(127, 127) = 1.3f;
  at(0, 128) = 44.8f;     // block (0, 1): scale 0.1. 1.3 -> 13, exact
  at(127, 255) = 1.3f;
  at(128, 0) = 4480.0f;   // block (1, 0): scale 10. 1100 -> 110, step 8 in [64, 128): 112 -> 1120
  at(255, 127) = 1100.0f;
  at(128, 128) = 1.3f;    // block (1, 1): amax 1.3 alone, exact; an outlier elsewhere does not reach it
  fake_quant_fp8_blocks(w.data(), y.data(), n, n, 128, 128);
  auto out = [&](int64_t r, int64_t c) { return y[size_t(r * n + c)]; };
  expect_close(out(0, 0), 448.0);
  expect_close(out(127, 127), 1.25);
  expect_close(out(0, 128), 44.8);
  expect_close(out(127, 255), 1.3);
  expect_close(out(128, 0), 4480.0);
  expect_close(out(255, 127), 1120.0);
  expect_close(out(128, 128), 1.3);
  EXPECT_EQ(out(200, 200), 0.0f);
}

// The fast rounding against the E4M3 codec (src/core/dtype), an independent bit-level
// implementation, over every scale class: normals, subnormals, ties, saturation, signs.
TEST(QuantSim, RoundingMatchesTheCodec) {
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return uint32_t(state >> 33);
  };
  int checked = 0;
  for (int i = 0; i < 200000; ++i) {
    // magnitudes from 2^-14 to 2^10 (past the 448 saturation), both signs
    const float mag = std::ldexp(1.0f + float(next() % 65536) / 65536.0f, int(next() % 25) - 14);
    const float x = (next() & 1) ? -mag : mag;
    const float scale = (i % 3 == 0) ? 1.0f : std::ldexp(1.0f + float(next() % 1000) / 1000.0f, int(next() % 9) - 4);
    const float want = fp8_e4m3_to_f32(f32_to_fp8_e4m3(x / scale)) * scale;
    ASSERT_EQ(fp8_round(x, scale), want) << "x " << x << " scale " << scale;
    ++checked;
  }
  // Exact ties: 1 + 1/16 rounds to the even 1, 1 + 3/16 to 1.25; subnormal halves of 2^-9 go
  // to the even neighbour; 464 is halfway past 448 and saturates.
  for (float x : {1.0625f, 1.1875f, 0.5f * 0.001953125f, 1.5f * 0.001953125f, 2.5f * 0.001953125f, 464.0f, 0.0f})
    EXPECT_EQ(fp8_round(x, 1.0f), fp8_e4m3_to_f32(f32_to_fp8_e4m3(x))) << x;
  EXPECT_EQ(checked, 200000);
}
