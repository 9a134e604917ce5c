#include <gtest/gtest.h>

#include <cmath>

#include "core/dtype.h"

using namespace whale;

// Hand-derived from the OCP FP8 spec: E4M3 has bias 7, 3 mantissa bits, no infinities.
TEST(Fp8E4M3, DecodesHandDerivedValues) {
  EXPECT_EQ(fp8_e4m3_to_f32(0x00), 0.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x38), 1.0f);           // exponent 7, mantissa 0
  EXPECT_EQ(fp8_e4m3_to_f32(0x7e), 448.0f);         // 1.75 * 2^8, largest finite
  EXPECT_EQ(fp8_e4m3_to_f32(0xfe), -448.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x08), 0.015625f);      // smallest normal 2^-6
  EXPECT_EQ(fp8_e4m3_to_f32(0x01), 0.001953125f);   // smallest subnormal 2^-9
  EXPECT_EQ(fp8_e4m3_to_f32(0x07), 7 * 0.001953125f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x3c), 1.5f);
  EXPECT_EQ(fp8_e4m3_to_f32(0xc0), -2.0f);
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0xff)));
}

TEST(Fp8E4M3, EncodeRoundTripsEveryFiniteCode) {
  for (int v = 0; v < 256; ++v) {
    if ((v & 0x7f) == 0x7f) continue;
    const float f = fp8_e4m3_to_f32(uint8_t(v));
    const uint8_t back = f32_to_fp8_e4m3(f);
    if (f == 0.0f) {
      EXPECT_EQ(back & 0x7f, 0);
    } else {
      EXPECT_EQ(back, v) << "code " << v;
    }
  }
}

TEST(Fp8E4M3, RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(f32_to_fp8_e4m3(1.0625f), 0x38);  // halfway 1 and 1.125: even mantissa (1.0)
  EXPECT_EQ(f32_to_fp8_e4m3(1.1875f), 0x3a);  // halfway 1.125 and 1.25: even (1.25)
  EXPECT_EQ(f32_to_fp8_e4m3(1000.0f), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3(-1000.0f), 0xfe);
  EXPECT_EQ(f32_to_fp8_e4m3(464.0f), 0x7e);
}

TEST(BFloat16, RoundTripAndRounding) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc000), -2.0f);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even -> 1.0
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);  // halfway 0x3f81/0x3f82 -> even 0x3f82
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(Float16, HandDerivedValues) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0xc400), -4.0f);
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
  for (uint32_t h = 0; h < 0x7c00; ++h) EXPECT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << h;
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
}
