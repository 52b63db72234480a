// Device-side helpers shared by the MLA kernels: element types and the few instruction wrappers they use, all
// taken from warp_ops.cuh (so cuda-sim emulates exactly what the GPU runs).
#pragma once
#include "cuda_compat.cuh"
#include "mla_kernels.h"
#include "launch.cuh"
#include "warp_ops.cuh"

namespace mla {
namespace MLA_KERNEL_NS {

template <ElemType E>
struct Elem;

template <>
struct Elem<ElemType::BF16> {
  using T = __nv_bfloat16;
  __device__ __forceinline__ static T fromFloat(float v) { return __float2bfloat16_rn(v); }
  __device__ __forceinline__ static float toFloat(T v) { return __bfloat162float(v); }
  __device__ __forceinline__ static uint16_t bits(T v) { return __bfloat16_as_ushort(v); }
  __device__ __forceinline__ static uint32_t pack2(float lo, float hi) {
    const uint32_t l = __bfloat16_as_ushort(fromFloat(lo)), h = __bfloat16_as_ushort(fromFloat(hi));
    return l | (h << 16);
  }
  __device__ __forceinline__ static void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    mma_m16n8k16_bf16(d, a, b, d);
  }
};

template <>
struct Elem<ElemType::F16> {
  using T = __half;
  __device__ __forceinline__ static T fromFloat(float v) { return __float2half_rn(v); }
  __device__ __forceinline__ static float toFloat(T v) { return __half2float(v); }
  __device__ __forceinline__ static uint16_t bits(T v) { return __half_as_ushort(v); }
  __device__ __forceinline__ static uint32_t pack2(float lo, float hi) {
    const uint32_t l = __half_as_ushort(fromFloat(lo)), h = __half_as_ushort(fromFloat(hi));
    return l | (h << 16);
  }
  __device__ __forceinline__ static void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    mma_m16n8k16_f16(d, a, b, d);
  }
};

__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }

// FP8 e4m3 ("e4m3fn") in software, bit for bit as csrc/cpu/conversions.inl (sm_80 and sm_86 have no fp8 conversion
// instructions; one code path keeps every GPU and the CPU writing the same bytes).
// Decoding: the bits moved to f32's places read as the value times 2^-120, subnormals included; 0x7F is NaN.
__device__ __forceinline__ float fp8e4m3ToFloat(uint32_t x) {
  const uint32_t mag = x & 0x7fu;
  const float v = __uint_as_float(((x & 0x80u) << 24) | (mag << 20)) * 0x1p120f;
  return mag == 0x7fu ? __uint_as_float(0x7fc00000u) : v;
}
// Encoding: nearest even, saturating at 448, NaN kept.
__device__ __forceinline__ uint8_t floatToFp8e4m3(float f) {
  const uint32_t u = __float_as_uint(f), absu = u & 0x7fffffffu;
  const uint32_t sign = (u >> 24) & 0x80u;
  if (absu > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7fu);
  if (absu >= 0x43e00000u) return static_cast<uint8_t>(sign | 0x7eu);
  if (absu < 0x3c800000u) return static_cast<uint8_t>(sign | (__float_as_uint(__fadd_rn(__uint_as_float(absu), 0x1p14f)) - 0x46800000u));
  return static_cast<uint8_t>(sign | (((absu + 0x7ffffu + ((absu >> 20) & 1u)) >> 20) - (120u << 3)));
}

// Four e4m3 bytes (byte i is element i) to two words of two b16 elements each (lo: elements 0, 1), exactly: every
// e4m3 value is a bf16 and an f16 value. Each byte's sign goes to the b16's sign and its other 7 bits (exponent and
// mantissa) under the b16's, so the b16 reads as the value times 2^-120 (bf16) or 2^-8 (f16), subnormals included;
// one exact multiply by 2^120 or 2^8 restores it. Per pair of values: a byte permute, three integer operations and a
// b16x2 multiply, the same on every GPU. An e4m3 NaN (0x7F, 0xFF) reads as +-480.
template <ElemType E>
__device__ __forceinline__ void fp8x4ToElem(uint32_t w, uint32_t& lo, uint32_t& hi) {
  constexpr bool kBf16 = E == ElemType::BF16;
  constexpr int kShift = kBf16 ? 4 : 1;  // the 7 bits to bf16's bits 4..10 / f16's bits 7..13
  uint32_t half[2] = {__byte_perm(w, 0u, 0x1404u), __byte_perm(w, 0u, 0x3424u)};  // byte k at bits 8..15 of half k%2
#pragma unroll
  for (int i = 0; i < 2; ++i) half[i] = ((half[i] & 0x7f007f00u) >> kShift) | (half[i] & 0x80008000u);
  count_fp8_converted(4);
  using B16x2 = std::conditional_t<kBf16, __nv_bfloat162, __half2>;
  constexpr uint32_t kScaleBits = kBf16 ? 0x7b807b80u : 0x5c005c00u;  // 2^120 (bf16) / 2^8 (f16), twice
  B16x2 v[2], scale;
  std::memcpy(v, half, sizeof v);
  std::memcpy(&scale, &kScaleBits, sizeof scale);
  v[0] = __hmul2(v[0], scale);
  v[1] = __hmul2(v[1], scale);
  std::memcpy(half, v, sizeof v);
  lo = half[0];
  hi = half[1];
}

}  // namespace MLA_KERNEL_NS
}  // namespace mla
