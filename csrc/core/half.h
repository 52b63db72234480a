// Exact scalar conversions between f32 and the 16-bit float formats (round to nearest, ties to even),
// matching lib/half.ts bit for bit. SIMD paths may convert faster but must agree with these.
#pragma once
#include <cstdint>
#include <cstring>

namespace mla {

inline float bitsToF32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32ToBits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float bf16ToF32(uint16_t h) { return bitsToF32(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32ToBf16(float f) {
  uint32_t u = f32ToBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN stays a quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float f16ToF32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return bitsToF32(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return bitsToF32(sign);
    // Subnormal: value = man * 2^-24, exact in f32.
    float v = static_cast<float>(man) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return bitsToF32(sign | ((exp + 112) << 23) | (man << 13));
}

inline uint16_t f32ToF16(float f) {
  uint32_t u = f32ToBits(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return sign | 0x7e00u | static_cast<uint16_t>((absu >> 13) & 0x3ffu);  // NaN
  if (absu >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: infinity
  if (absu < 0x38800000u) {
    // Result is subnormal or zero: scale so the f16 subnormal unit (2^-24) becomes 1 and round.
    // Adding 0.5 * 2^-24 * 2^23 style trick: use the float rounding of the hardware (RNE) via magic add.
    float a = bitsToF32(absu) + 0.5f;  // 0.5 = 2^-1: aligns the f16 subnormal unit to the f32 ulp of [0.5, 1)
    uint32_t r = f32ToBits(a) - 0x3f000000u;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t mant_odd = (absu >> 13) & 1u;
  absu += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round to nearest even
  return sign | static_cast<uint16_t>(absu >> 13);
}

}  // namespace mla
