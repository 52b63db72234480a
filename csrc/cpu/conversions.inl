// Exact scalar conversions between f32 and the 16-bit float formats (round to nearest, ties to even), and FP8 e4m3,
// matching lib/half.ts bit for bit. SIMD paths may convert faster but must agree with these.
// Included by kernels_scalar.inl inside each kernel unit's anonymous namespace, after its target pragma, so every
// unit has its own internal copy compiled for its instruction set (see kernels.h on why a header's inline functions
// must not be shared between targets). No includes, no namespace.

inline float sBits(uint32_t u) { float f; __builtin_memcpy(&f, &u, 4); return f; }
inline uint32_t sU32(float f) { uint32_t u; __builtin_memcpy(&u, &f, 4); return u; }

inline float sBf16ToF32(uint16_t h) { return sBits(static_cast<uint32_t>(h) << 16); }

inline uint16_t sF32ToBf16(float f) {
  uint32_t u = sU32(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN stays a quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float sF16ToF32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return sBits(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return sBits(sign);
    // Subnormal: value = man * 2^-24, exact in f32.
    float v = static_cast<float>(man) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return sBits(sign | ((exp + 112) << 23) | (man << 13));
}

inline uint16_t sF32ToF16(float f) {
  uint32_t u = sU32(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return sign | 0x7e00u | static_cast<uint16_t>((absu >> 13) & 0x3ffu);  // NaN
  if (absu >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: infinity
  if (absu < 0x38800000u) {
    // Subnormal or zero: adding 0.5 (2^-1) aligns the f16 subnormal unit (2^-24) with f32's ulp in [0.5, 1), so the
    // hardware's rounding (nearest even) does the work.
    float a = sBits(absu) + 0.5f;
    uint32_t r = sU32(a) - 0x3f000000u;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t mant_odd = (absu >> 13) & 1u;
  absu += 0xc8000fffu + mant_odd;  // rebias the exponent (-112 << 23) and round to nearest even
  return sign | static_cast<uint16_t>(absu >> 13);
}

// FP8 e4m3 ("e4m3fn"): sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities; 0x7F / 0xFF are NaN; the
// largest finite value is 448.
inline float sFp8ToF32(uint8_t x) {
  const uint32_t sign = static_cast<uint32_t>(x & 0x80u) << 24, mag = x & 0x7fu;
  if (mag == 0x7fu) return sBits(sign | 0x7fc00000u);
  // The bits moved to f32's places read as the value times 2^-120, subnormals included: one exact product restores it.
  return sBits(sign | (mag << 20)) * 0x1p120f;
}

// Round to nearest, ties to even; magnitudes beyond 448 saturate to 448 (as a saturating cast, e.g. CUDA's
// __NV_SATFINITE), NaN stays NaN.
inline uint8_t sF32ToFp8(float f) {
  const uint32_t u = sU32(f), absu = u & 0x7fffffffu;
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  if (absu > 0x7f800000u) return sign | 0x7fu;
  if (absu >= 0x43e00000u) return sign | 0x7eu;  // >= 448 (infinity included)
  // Below 2^-6, the smallest normal: multiples of 2^-9. Adding 2^14 aligns that unit with f32's ulp in [2^14, 2^15),
  // so the hardware's rounding (nearest even) does the work; 8 units (2^-6 itself) is the bit pattern 0x08.
  if (absu < 0x3c800000u) return sign | static_cast<uint8_t>(sU32(sBits(absu) + 0x1p14f) - 0x46800000u);
  // Normal: keep 3 of f32's 23 mantissa bits, rounding the 20 dropped ones to nearest even, and rebias 127 -> 7.
  const uint32_t odd = (absu >> 20) & 1u;
  return sign | static_cast<uint8_t>(((absu + 0x7ffffu + odd) >> 20) - (120u << 3));
}
