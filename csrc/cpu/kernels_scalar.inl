#if defined(__clang__)
#define MLA_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define MLA_UNROLL _Pragma("GCC unroll 32")
#else
#define MLA_UNROLL
#endif
// Scalar helpers of the kernel units, included (inside each unit's anonymous namespace, under its target) before
// its vector abstraction; own copies of the conversions of core/half.h (see kernels.h on why).
constexpr int64_t kTile = 64;       // cache rows per tile
constexpr int64_t kTilePad = 32;    // extra rows so Q·K blocks may run past the valid rows

inline int64_t roundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Scalar conversions (own copies: the header ones must not be compiled under this unit's target).
inline float sBits(uint32_t u) { float f; __builtin_memcpy(&f, &u, 4); return f; }
inline uint32_t sU32(float f) { uint32_t u; __builtin_memcpy(&u, &f, 4); return u; }
inline float sBf16ToF32(uint16_t h) { return sBits(static_cast<uint32_t>(h) << 16); }
inline uint16_t sF32ToBf16(float f) {
  uint32_t u = sU32(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float sF16ToF32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return sBits(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return sBits(sign);
    float v = static_cast<float>(man) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return sBits(sign | ((exp + 112) << 23) | (man << 13));
}
inline uint16_t sF32ToF16(float f) {
  uint32_t u = sU32(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return sign | 0x7e00u | static_cast<uint16_t>((absu >> 13) & 0x3ffu);
  if (absu >= 0x477ff000u) return sign | 0x7c00u;
  if (absu < 0x38800000u) {
    float a = sBits(absu) + 0.5f;
    uint32_t r = sU32(a) - 0x3f000000u;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t mant_odd = (absu >> 13) & 1u;
  absu += 0xc8000fffu + mant_odd;
  return sign | static_cast<uint16_t>(absu >> 13);
}
inline float sFp8ToF32(uint8_t x) {
  const uint32_t sign = static_cast<uint32_t>(x & 0x80u) << 24, mag = x & 0x7fu;
  if (mag == 0x7fu) return sBits(sign | 0x7fc00000u);
  return sBits(sign | (mag << 20)) * 0x1p120f;
}
inline uint8_t sF32ToFp8(float f) {
  const uint32_t u = sU32(f), absu = u & 0x7fffffffu;
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  if (absu > 0x7f800000u) return sign | 0x7fu;
  if (absu >= 0x43e00000u) return sign | 0x7eu;
  if (absu < 0x3c800000u) return sign | static_cast<uint8_t>(sU32(sBits(absu) + 0x1p14f) - 0x46800000u);
  const uint32_t odd = (absu >> 20) & 1u;
  return sign | static_cast<uint8_t>(((absu + 0x7ffffu + odd) >> 20) - (120u << 3));
}
inline float sLoad(Elem e, const void* p, int64_t i) {
  switch (e) {
    case Elem::F32: return static_cast<const float*>(p)[i];
    case Elem::BF16: return sBf16ToF32(static_cast<const uint16_t*>(p)[i]);
    case Elem::FP8E4M3: return sFp8ToF32(static_cast<const uint8_t*>(p)[i]);
    default: return sF16ToF32(static_cast<const uint16_t*>(p)[i]);
  }
}
inline void sStore(Elem e, void* p, int64_t i, float v) {
  switch (e) {
    case Elem::F32: static_cast<float*>(p)[i] = v; return;
    case Elem::BF16: static_cast<uint16_t*>(p)[i] = sF32ToBf16(v); return;
    case Elem::FP8E4M3: static_cast<uint8_t*>(p)[i] = sF32ToFp8(v); return;
    default: static_cast<uint16_t*>(p)[i] = sF32ToF16(v); return;
  }
}
inline size_t elemBytes(Elem e) { return e == Elem::F32 ? 4 : e == Elem::FP8E4M3 ? 1 : 2; }
inline const void* elemAt(Elem e, const void* p, int64_t i) { return static_cast<const char*>(p) + i * static_cast<int64_t>(elemBytes(e)); }
inline void* elemAt(Elem e, void* p, int64_t i) { return static_cast<char*>(p) + i * static_cast<int64_t>(elemBytes(e)); }

