// Portable kernels: the same blocked algorithm (kernels_generic.inl) over plain 4-float vectors that the compiler
// maps to whatever the build's baseline has (SSE2 on x86-64, NEON on arm64), for every processor.
#include "kernels.h"

namespace mla::cpu {
namespace {

#include "kernels_scalar.inl"

struct VO {
  struct V { float v[4]; };
  static constexpr int W = 4;
  static constexpr int kQkRegs = 8;
  static constexpr int kPvMr = 2;
  static constexpr int kPvVv = 4;
  static inline V zero() { return V{{0.f, 0.f, 0.f, 0.f}}; }
  static inline V set1(float x) { return V{{x, x, x, x}}; }
  static inline V load(const float* p) { return V{{p[0], p[1], p[2], p[3]}}; }
  static inline void store(float* p, V x) { for (int i = 0; i < 4; ++i) p[i] = x.v[i]; }
  static inline V fma(V a, V b, V c) { V r; for (int i = 0; i < 4; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i]; return r; }
  static inline V mul(V a, V b) { V r; for (int i = 0; i < 4; ++i) r.v[i] = a.v[i] * b.v[i]; return r; }
  static inline V add(V a, V b) { V r; for (int i = 0; i < 4; ++i) r.v[i] = a.v[i] + b.v[i]; return r; }
  static inline V sub(V a, V b) { V r; for (int i = 0; i < 4; ++i) r.v[i] = a.v[i] - b.v[i]; return r; }
  static inline V max(V a, V b) { V r; for (int i = 0; i < 4; ++i) r.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i]; return r; }
  static inline V selectLt(V x, V y, V a, V b) { V r; for (int i = 0; i < 4; ++i) r.v[i] = x.v[i] < y.v[i] ? a.v[i] : b.v[i]; return r; }
  static inline V round(V x) {
    V r;
    for (int i = 0; i < 4; ++i) r.v[i] = static_cast<float>(static_cast<int>(x.v[i] >= 0.f ? x.v[i] + 0.5f : x.v[i] - 0.5f));
    return r;
  }
  static inline V loadStrided(const float* p, int64_t stride) { return V{{p[0], p[stride], p[2 * stride], p[3 * stride]}}; }
  static inline V pow2i(V n) {
    V r;
    for (int i = 0; i < 4; ++i) {
      const uint32_t u = static_cast<uint32_t>(static_cast<int>(n.v[i]) + 127) << 23;
      __builtin_memcpy(&r.v[i], &u, 4);
    }
    return r;
  }
  // bf16 → f32 in split order (per 8 values, the even ones then the odd ones; see splitPos). n is a multiple of 8.
  static inline void loadBf16Split(const uint16_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; i += 8)
      for (int64_t k = 0; k < 4; ++k) dst[i + k] = sBf16ToF32(src[i + 2 * k]), dst[i + 4 + k] = sBf16ToF32(src[i + 2 * k + 1]);
  }
  static void loadElems(Elem e, const void* src, float* dst, int64_t n);
  static void storeElems(Elem e, const float* src, void* dst, int64_t n);
};

#include "kernels_generic.inl"
#include "prefill_generic.inl"

void VO::loadElems(Elem e, const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = sLoad(e, src, i);
}
void VO::storeElems(Elem e, const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) sStore(e, dst, i, src[i]);
}

double noLoop(int64_t) { return 0.0; }
void plainCopy(void* dst, const void* src, int64_t bytes) {
  if (bytes > 0) __builtin_memcpy(dst, src, static_cast<size_t>(bytes));  // an empty tensor's data may be null
}
void noFence() {}

}  // namespace

const KernelSet& portableKernels() {
  static const KernelSet k{"portable", decodeScratchGeneric, decodeGeneric, VO::loadElems, VO::storeElems,
                           axpyGeneric, dotGeneric, ropeGeneric, plainCopy, noFence, fmaLoopGeneric, noLoop,
                           prefillScratchGeneric, prefillGeneric, gemmScratchGeneric, gemmNTGeneric};
  return k;
}

}  // namespace mla::cpu
