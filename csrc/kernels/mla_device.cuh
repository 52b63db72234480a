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

}  // namespace MLA_KERNEL_NS
}  // namespace mla
