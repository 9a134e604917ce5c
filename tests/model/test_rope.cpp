// Rope: one rotation against a hand-derived case, and the many-vector form (a token's heads with
// each angle computed once) against one call per vector, bit for bit, with and without YaRN.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "model/rope.h"

namespace whale {
namespace {

ModelConfig rope_config(int64_t dim, bool yarn) {
  ModelConfig c;
  c.qk_rope_head_dim = dim;
  c.rope_theta = 10000.0;
  if (yarn) {
    c.rope_scaling.yarn = true;
    c.rope_scaling.factor = 40.0;
    c.rope_scaling.original_max_position_embeddings = 4096;
    c.rope_scaling.beta_fast = 32.0;
    c.rope_scaling.beta_slow = 1.0;
    c.rope_scaling.mscale = 1.0;
    c.rope_scaling.mscale_all_dim = 0.0;  // amplitude 0.1 ln 40 + 1, not 1: exercised too
  }
  return c;
}

TEST(Rope, RotatesEachPairByPositionTimesItsFrequency) {
  // dim 4, theta 10000: frequencies 1 and 10000^(-1/2) = 0.01; at position 3 pair 0 turns by
  // 3 rad and pair 1 by 0.03 rad.
  const Rope rope(rope_config(4, false));
  float x[4] = {1.0f, 2.0f, -0.5f, 4.0f};
  rope.apply(x, 3);
  const double a0 = 3.0, a1 = 0.03;
  EXPECT_NEAR(x[0], 1.0 * std::cos(a0) - 2.0 * std::sin(a0), 1e-6);
  EXPECT_NEAR(x[1], 2.0 * std::cos(a0) + 1.0 * std::sin(a0), 1e-6);
  EXPECT_NEAR(x[2], -0.5 * std::cos(a1) - 4.0 * std::sin(a1), 1e-6);
  EXPECT_NEAR(x[3], 4.0 * std::cos(a1) + -0.5 * std::sin(a1), 1e-6);
}

TEST(Rope, ManyVectorsGiveTheBitsOfOneCallEach) {
  for (bool yarn : {false, true}) {
    const int64_t dim = 64, heads = 16, stride = 192;  // V2-Lite's query heads: nope 128 + rope 64
    const Rope rope(rope_config(dim, yarn));
    std::vector<float> x(size_t(heads * stride));
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * float(i)) * 3.0f;
    for (int64_t pos : {0, 1, 77, 4095, 163839}) {
      std::vector<float> one = x, many = x;
      for (int64_t h = 0; h < heads; ++h) rope.apply(one.data() + h * stride + 128, pos);
      rope.apply(many.data() + 128, pos, heads, stride);
      ASSERT_EQ(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)), 0)
          << "position " << pos << (yarn ? " with YaRN" : "");
    }
  }
}

}  // namespace
}  // namespace whale
