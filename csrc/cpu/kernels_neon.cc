// NEON kernels (arm64: 4 fp32 lanes, 32 vector registers): the fp32 path of kernels_generic.inl with register blocks
// sized for 32 registers and every element conversion in vector instructions. The portable path compiles to NEON on
// arm64 too, but its blocks are sized for x86-64's 16 registers (GCC 12's Q·K inner loop: 6 FMAs in 14 instructions;
// here 24 in 38, nothing spilled) and it converts bf16, f16 and fp8 one element at a time; docs/platforms.md gives
// the instructions per decode of both.
// Advanced SIMD is part of every ARMv8-A processor (the Linux arm64 ABI requires it): no target pragma, and the path
// is always supported; chosen at run time like the x86-64 paths, listed by info(), forced by MLA_CPU_ISA=neon.
#include "kernels.h"

#if defined(__aarch64__)
#include <arm_neon.h>

namespace mla::cpu {
namespace {

#include "kernels_scalar.inl"

struct VO {
  using V = float32x4_t;
  static constexpr int W = 4;
  // Q·K: 3 query vectors × 8 rows = 24 accumulators, + 3 query vectors and a row value: 28 of the 32 registers.
  static constexpr int kQkRegs = 24;
  // P·V: 4 rows × 4 vectors = 16 accumulators, + 4 value vectors and the P values.
  static constexpr int kPvMr = 4;
  static constexpr int kPvVv = 4;
  static inline V zero() { return vdupq_n_f32(0.f); }
  static inline V set1(float x) { return vdupq_n_f32(x); }
  static inline V load(const float* p) { return vld1q_f32(p); }
  static inline void store(float* p, V x) { vst1q_f32(p, x); }
  static inline V fma(V a, V b, V c) { return vfmaq_f32(c, a, b); }
  static inline V mul(V a, V b) { return vmulq_f32(a, b); }
  static inline V add(V a, V b) { return vaddq_f32(a, b); }
  static inline V sub(V a, V b) { return vsubq_f32(a, b); }
  static inline V max(V a, V b) { return vmaxq_f32(a, b); }
  static inline V selectLt(V x, V y, V a, V b) { return vbslq_f32(vcltq_f32(x, y), a, b); }
  static inline V round(V x) { return vrndnq_f32(x); }
  static inline V pow2i(V n) { return vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23)); }
  // Lane i = p[i * stride].
  static inline V loadStrided(const float* p, int64_t stride) {
    V r = vdupq_n_f32(p[0]);
    r = vsetq_lane_f32(p[stride], r, 1);
    r = vsetq_lane_f32(p[2 * stride], r, 2);
    return vsetq_lane_f32(p[3 * stride], r, 3);
  }
  // bf16 → f32 in split order (per 8 values, the even ones then the odd ones; see splitPos). n is a multiple of 8.
  static inline void loadBf16Split(const uint16_t* src, float* dst, int64_t n) {
    const uint32x4_t high = vdupq_n_u32(0xffff0000u);
    for (int64_t i = 0; i < n; i += 8) {
      const uint32x4_t x = vreinterpretq_u32_u16(vld1q_u16(src + i));  // lane k: src[2k] | src[2k + 1] << 16
      vst1q_f32(dst + i, vreinterpretq_f32_u32(vshlq_n_u32(x, 16)));
      vst1q_f32(dst + i + 4, vreinterpretq_f32_u32(vandq_u32(x, high)));
    }
  }
  // fp8 e4m3 → f32 as sFp8ToF32: the magnitude's bits at f32's places read as value × 2^-120; 0x7f is NaN.
  static inline V fp8ToF32(uint32x4_t x) {
    const uint32x4_t mag = vandq_u32(x, vdupq_n_u32(0x7f));
    const uint32x4_t bits = vorrq_u32(vshlq_n_u32(vandq_u32(x, vdupq_n_u32(0x80)), 24), vshlq_n_u32(mag, 20));
    const V v = vmulq_f32(vreinterpretq_f32_u32(bits), vdupq_n_f32(0x1p120f));
    return vbslq_f32(vceqq_u32(mag, vdupq_n_u32(0x7f)), vdupq_n_f32(__builtin_nanf("")), v);
  }
  static inline void loadElems(Elem e, const void* src, float* dst, int64_t n) {
    int64_t i = 0;
    if (e == Elem::F32) {
      const float* s = static_cast<const float*>(src);
      for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vld1q_f32(s + i));
      for (; i < n; ++i) dst[i] = s[i];
    } else if (e == Elem::BF16) {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (; i + 8 <= n; i += 8) {
        const uint16x8_t x = vld1q_u16(s + i);
        vst1q_f32(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(x), 16)));
        vst1q_f32(dst + i + 4, vreinterpretq_f32_u32(vshll_high_n_u16(x, 16)));
      }
      for (; i < n; ++i) dst[i] = sBf16ToF32(s[i]);
    } else if (e == Elem::F16) {  // FCVTL: exact, subnormals included (FPCR.FZ16 is off)
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (; i + 8 <= n; i += 8) {
        const float16x8_t x = vreinterpretq_f16_u16(vld1q_u16(s + i));
        vst1q_f32(dst + i, vcvt_f32_f16(vget_low_f16(x)));
        vst1q_f32(dst + i + 4, vcvt_high_f32_f16(x));
      }
      for (; i < n; ++i) dst[i] = sF16ToF32(s[i]);
    } else {
      const uint8_t* s = static_cast<const uint8_t*>(src);
      for (; i + 8 <= n; i += 8) {
        const uint16x8_t x = vmovl_u8(vld1_u8(s + i));
        vst1q_f32(dst + i, fp8ToF32(vmovl_u16(vget_low_u16(x))));
        vst1q_f32(dst + i + 4, fp8ToF32(vmovl_high_u16(x)));
      }
      for (; i < n; ++i) dst[i] = sFp8ToF32(s[i]);
    }
  }
  // f32 → bf16, round to nearest even, NaN kept quiet: sF32ToBf16 on four lanes.
  static inline uint16x4_t toBf16(V x) {
    const uint32x4_t u = vreinterpretq_u32_f32(x);
    const uint32x4_t rounded = vaddq_u32(u, vaddq_u32(vdupq_n_u32(0x7fff), vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1))));
    const uint32x4_t quiet = vorrq_u32(u, vdupq_n_u32(0x400000));
    const uint32x4_t isNan = vmvnq_u32(vceqq_f32(x, x));
    return vshrn_n_u32(vbslq_u32(isNan, quiet, rounded), 16);
  }
  static inline void storeElems(Elem e, const float* src, void* dst, int64_t n) {
    int64_t i = 0;
    if (e == Elem::FP8E4M3) {  // append only: the scalar rounding
      for (; i < n; ++i) sStore(e, dst, i, src[i]);
      return;
    }
    if (e == Elem::F32) {
      float* d = static_cast<float*>(dst);
      for (; i + 4 <= n; i += 4) vst1q_f32(d + i, vld1q_f32(src + i));
      for (; i < n; ++i) d[i] = src[i];
      return;
    }
    uint16_t* d = static_cast<uint16_t*>(dst);
    if (e == Elem::F16)  // FCVTN rounds to nearest even (FPCR's default mode), overflow to infinity, as sF32ToF16
      for (; i + 8 <= n; i += 8)
        vst1q_u16(d + i, vreinterpretq_u16_f16(vcvt_high_f16_f32(vcvt_f16_f32(vld1q_f32(src + i)), vld1q_f32(src + i + 4))));
    else
      for (; i + 8 <= n; i += 8) vst1q_u16(d + i, vcombine_u16(toBf16(vld1q_f32(src + i)), toBf16(vld1q_f32(src + i + 4))));
    for (; i < n; ++i) d[i] = e == Elem::BF16 ? sF32ToBf16(src[i]) : sF32ToF16(src[i]);
  }
  // No non-temporal stores in Advanced SIMD intrinsics (STNP would need assembly): a plain copy, nothing to order.
  static inline void streamCopy(void* dst, const void* src, int64_t bytes) {
    if (bytes > 0) __builtin_memcpy(dst, src, static_cast<size_t>(bytes));  // an empty tensor's data may be null
  }
  static inline void streamFence() {}
};

#include "kernels_generic.inl"

}  // namespace

const KernelSet& neonKernels() {
  static const KernelSet k = kernelSet<GenericKernels>("neon");
  return k;
}

}  // namespace mla::cpu
#endif
