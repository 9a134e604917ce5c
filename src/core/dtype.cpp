#include "core/dtype.h"

#include <cmath>

namespace whale {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_0: return "Q4_0";
    case DType::Q4_K: return "Q4_K";
    case DType::Q6_K: return "Q6_K";
  }
  return "?";
}

bool dtype_from_name(const std::string& name, DType* out) {
  static const struct { const char* name; DType type; } table[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"F8_E4M3", DType::F8_E4M3}, {"I64", DType::I64}, {"I32", DType::I32},
      {"U8", DType::U8}};
  for (const auto& entry : table) {
    if (name == entry.name) {
      *out = entry.type;
      return true;
    }
  }
  return false;
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::F8_E4M3: case DType::U8: return 1;
    case DType::I64: return 8;
    case DType::Q8_0: case DType::Q4_0: case DType::Q4_K: case DType::Q6_K: return 0;
  }
  return 0;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  float value;
  if (exponent == 0) {
    value = std::ldexp(float(mantissa), -24);  // subnormal (or zero)
  } else if (exponent == 31) {
    value = mantissa ? NAN : INFINITY;
  } else {
    value = std::ldexp(float(mantissa | 0x400u), int(exponent) - 25);
  }
  return sign ? -value : value;
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  if (std::isnan(f)) return uint16_t(sign | 0x7e00u);
  float a = std::fabs(f);
  if (a >= 65520.0f) return uint16_t(sign | 0x7c00u);  // rounds to infinity
  if (a < 6.103515625e-05f) {  // subnormal range: quantum 2^-24
    const uint32_t m = uint32_t(std::nearbyint(a * 16777216.0f));  // ties to even
    return uint16_t(sign | m);
  }
  int e;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5,1)
  // 11 significant bits: quantum 2^(e-11)
  float q = std::nearbyint(std::ldexp(a, 11 - e));
  uint32_t mant = uint32_t(q);
  int exponent = e - 1 + 15;
  if (mant == 2048) {
    mant = 1024;
    exponent += 1;
  }
  if (exponent >= 31) return uint16_t(sign | 0x7c00u);
  return uint16_t(sign | (uint32_t(exponent) << 10) | (mant & 0x3ffu));
}

float fp8_e4m3_to_f32(uint8_t v) {
  const uint32_t sign = v >> 7, exponent = (v >> 3) & 0xfu, mantissa = v & 7u;
  float value;
  if (exponent == 15 && mantissa == 7) {
    value = NAN;
  } else if (exponent == 0) {
    value = std::ldexp(float(mantissa), -9);  // subnormal: m/8 * 2^-6
  } else {
    value = std::ldexp(float(mantissa | 8u), int(exponent) - 10);
  }
  return sign ? -value : value;
}

uint8_t f32_to_fp8_e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;  // saturate to the largest finite value
  if (a < 0.015625f) {  // below 2^-6: subnormal, quantum 2^-9
    const uint32_t m = uint32_t(std::nearbyint(a * 512.0f));
    return uint8_t(sign | m);  // m == 8 is the smallest normal, encoded the same way
  }
  int e;
  std::frexp(a, &e);
  float q = std::nearbyint(std::ldexp(a, 4 - e));  // 4 significant bits
  uint32_t mant = uint32_t(q);
  int exponent = e - 1 + 7;
  if (mant == 16) {
    mant = 8;
    exponent += 1;
  }
  if (exponent > 15 || (exponent == 15 && (mant & 7u) == 7)) return sign | 0x7e;
  return uint8_t(sign | (uint32_t(exponent) << 3) | (mant & 7u));
}

}  // namespace whale
