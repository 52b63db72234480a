#if defined(__clang__)
#define MLA_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define MLA_UNROLL _Pragma("GCC unroll 32")
#else
#define MLA_UNROLL
#endif
// Scalar helpers of the kernel units, included (inside each unit's anonymous namespace, under its target) before
// its vector abstraction, with the unit's own copy of the conversions (conversions.inl; kernels.h says why).
constexpr int64_t kTile = 64;       // cache rows per tile
constexpr int64_t kTilePad = 32;    // extra rows so Q·K blocks may run past the valid rows

inline int64_t roundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

#include "conversions.inl"

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
inline size_t elemBytes(Elem e) { return e == Elem::F32 ? 4 : e == Elem::FP8E4M3 || e == Elem::FP8DSMLA ? 1 : 2; }
inline const void* elemAt(Elem e, const void* p, int64_t i) { return static_cast<const char*>(p) + i * static_cast<int64_t>(elemBytes(e)); }
inline void* elemAt(Elem e, void* p, int64_t i) { return static_cast<char*>(p) + i * static_cast<int64_t>(elemBytes(e)); }

// The vectors of an append run (kernels.h's AppendRun) in destination order, each handed to emit: a row's kvC as
// loaded, then its kPe as loaded or rotated. Ops (the unit's vector abstraction) gives the width (kRunVecBytes) and how a
// vector at p is loaded (runLoad) and its pairs rotated with their cos and sin at c and s (runRotateBf16, runRotateF32).
template <class Ops, class Emit>
inline void appendRunVectors(const AppendRun& r, Emit&& emit) {
  constexpr int64_t kVecBytes = Ops::kRunVecBytes;
  const int64_t es = r.elem == Elem::F32 ? 4 : 2, ropeBytes = r.ropeDim * es, half = r.ropeDim / 2;
  for (int64_t i = r.row0; i < r.row1; ++i) {
    const char* kv = r.kvC + i * r.kvBytes;
    for (int64_t o = 0; o < r.kvBytes; o += kVecBytes) emit(Ops::runLoad(kv + o));
    const char* pe = r.kPe + i * ropeBytes;
    if (!r.rotate) {
      for (int64_t o = 0; o < ropeBytes; o += kVecBytes) emit(Ops::runLoad(pe + o));
      continue;
    }
    const float* c = r.cos + static_cast<int64_t>(r.positions[i]) * half;
    const float* s = r.sin + static_cast<int64_t>(r.positions[i]) * half;
    if (r.elem == Elem::BF16)
      for (int64_t j = 0; j < half; j += kVecBytes / 4) emit(Ops::runRotateBf16(pe + 4 * j, c + j, s + j));
    else
      for (int64_t j = 0; j < half; j += kVecBytes / 8) emit(Ops::runRotateF32(pe + 8 * j, c + j, s + j));
  }
}
