// Element storage types of the CPU kernels and their conversions to and from fp32.
#pragma once
#include <cstdint>

#include "../core/dtype.h"
#include "../core/errors.h"
#include "../core/half.h"

namespace mla::cpu {

struct F16 { uint16_t bits; };
struct BF16 { uint16_t bits; };

inline float toF32(float v) { return v; }
inline float toF32(F16 v) { return f16ToF32(v.bits); }
inline float toF32(BF16 v) { return bf16ToF32(v.bits); }

template <class T> T fromF32(float v);
template <> inline float fromF32<float>(float v) { return v; }
template <> inline F16 fromF32<F16>(float v) { return F16{f32ToF16(v)}; }
template <> inline BF16 fromF32<BF16>(float v) { return BF16{f32ToBf16(v)}; }

template <class T>
inline void loadRow(const T* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = toF32(src[i]);
}

template <class T>
inline void storeRow(const float* src, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = fromF32<T>(src[i]);
}

// Calls fn(T{}) with T the storage type of a floating dtype.
template <class Fn>
inline void dispatchFloat(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::F32: fn(float{}); return;
    case DType::F16: fn(F16{}); return;
    case DType::BF16: fn(BF16{}); return;
    default: throw Error(ErrorCode::Internal, "CPU kernel called with a non-float dtype");
  }
}

}  // namespace mla::cpu
