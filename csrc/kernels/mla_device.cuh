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

}  // namespace MLA_KERNEL_NS
}  // namespace mla
