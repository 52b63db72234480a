// AVX2 + FMA kernels (8 fp32 lanes, 16 registers): the fp32 path of kernels_generic.inl, f16 through F16C.
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define MLA_TARGET "avx2,fma,f16c"
#include "target_begin.h"

namespace mla::cpu {
namespace {

#include "kernels_scalar.inl"

struct VO {
  using V = __m256;
  static constexpr int W = 8;
  static constexpr int kQkRegs = 12;
  static constexpr int kPvMr = 4;
  static constexpr int kPvVv = 3;
  static inline V zero() { return _mm256_setzero_ps(); }
  static inline V set1(float x) { return _mm256_set1_ps(x); }
  static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, V x) { _mm256_storeu_ps(p, x); }
  static inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static inline V add(V a, V b) { return _mm256_add_ps(a, b); }
  static inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static inline V max(V a, V b) { return _mm256_max_ps(a, b); }
  static inline V selectLt(V x, V y, V a, V b) { return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, y, _CMP_LT_OQ)); }
  static inline V round(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static inline V pow2i(V n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  // bf16 → f32 in split order (per 16 values, the even ones then the odd ones; see splitPos). n is a multiple of 16.
  static inline void loadBf16Split(const uint16_t* src, float* dst, int64_t n) {
    const __m256i high = _mm256_set1_epi32(static_cast<int32_t>(0xffff0000u));
    for (int64_t i = 0; i < n; i += 16) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
      _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)));
      _mm256_storeu_ps(dst + i + 8, _mm256_castsi256_ps(_mm256_and_si256(x, high)));
    }
  }
  // Lane i = p[i * stride] (a column of a small row-major block; stride * 7 fits an int32).
  static inline V loadStrided(const float* p, int64_t stride) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int32_t>(stride)));
    return _mm256_i32gather_ps(p, idx, 4);
  }
  static inline void loadElems(Elem e, const void* src, float* dst, int64_t n) {
    int64_t i = 0;
    if (e == Elem::FP8E4M3) {  // as vo_avx512.inl's loadFp8
      const uint8_t* s = static_cast<const uint8_t*>(src);
      for (; i + 8 <= n; i += 8) {
        const __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i)));
        const __m256i mag = _mm256_and_si256(x, _mm256_set1_epi32(0x7f));
        const __m256i bits = _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x80)), 24), _mm256_slli_epi32(mag, 20));
        const __m256 v = _mm256_mul_ps(_mm256_castsi256_ps(bits), _mm256_set1_ps(0x1p120f));
        _mm256_storeu_ps(dst + i, _mm256_blendv_ps(v, _mm256_set1_ps(__builtin_nanf("")), _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7f)))));
      }
      for (; i < n; ++i) dst[i] = sFp8ToF32(s[i]);
    } else if (e == Elem::F32) {
      const float* s = static_cast<const float*>(src);
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_loadu_ps(s + i));
      for (; i < n; ++i) dst[i] = s[i];
    } else if (e == Elem::BF16) {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(
                                      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))), 16)));
      for (; i < n; ++i) dst[i] = sBf16ToF32(s[i]);
    } else {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
      for (; i < n; ++i) dst[i] = sF16ToF32(s[i]);
    }
  }
  static inline void storeElems(Elem e, const float* src, void* dst, int64_t n) {
    int64_t i = 0;
    if (e == Elem::FP8E4M3) {  // append only: the scalar rounding
      for (; i < n; ++i) sStore(e, dst, i, src[i]);
      return;
    }
    if (e == Elem::F32) {
      float* d = static_cast<float*>(dst);
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_loadu_ps(src + i));
      for (; i < n; ++i) d[i] = src[i];
      return;
    }
    uint16_t* d = static_cast<uint16_t*>(dst);
    if (e == Elem::F16)
      for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; ++i) d[i] = e == Elem::BF16 ? sF32ToBf16(src[i]) : sF32ToF16(src[i]);
  }
  // Under 32 bytes in fixed-size moves the compiler inlines: a memcpy call per end of every row cost more than the
  // row's streaming stores.
  static inline void copyShort(char* d, const char* s, int64_t n) {
    if (n & 16) __builtin_memcpy(d, s, 16), d += 16, s += 16;
    if (n & 8) __builtin_memcpy(d, s, 8), d += 8, s += 8;
    if (n & 4) __builtin_memcpy(d, s, 4), d += 4, s += 4;
    if (n & 2) __builtin_memcpy(d, s, 2), d += 2, s += 2;
    if (n & 1) *d = *s;
  }
  static inline void streamCopy(void* dst, const void* src, int64_t bytes) {
    char* d = static_cast<char*>(dst);
    const char* s = static_cast<const char*>(src);
    int64_t head = static_cast<int64_t>((32 - (reinterpret_cast<uintptr_t>(d) & 31)) & 31);
    if (head > bytes) head = bytes;
    if (bytes <= 0) return;  // an empty tensor's data may be null, which memcpy may not name
    copyShort(d, s, head);
    int64_t i = head;
    for (; i + 32 <= bytes; i += 32)
      _mm256_stream_si256(reinterpret_cast<__m256i*>(d + i), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
    if (i < bytes) copyShort(d + i, s + i, bytes - i);
  }
  static inline void streamFence() { _mm_sfence(); }
};
#include "kernels_generic.inl"

}  // namespace
}  // namespace mla::cpu

#include "target_end.h"

namespace mla::cpu {
const KernelSet& avx2Kernels() {
  static const KernelSet k = kernelSet<GenericKernels>("avx2-fma");
  return k;
}
}  // namespace mla::cpu
#endif
