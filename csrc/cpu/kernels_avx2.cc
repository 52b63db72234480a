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
  // RoPE of 4 interleaved f32 pairs (a0 b0 a1 b1 ...) with their 4 cos and sin values: ropeGeneric's arithmetic as
  // compiled for this set, (a c - round(b s), b c + round(a s)) with one rounding in each FMA; fmaddsub subtracts in
  // the even lanes and adds in the odd ones.
  static inline __m256 ropeVecF32(__m256 x, const float* c, const float* s) {
    const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    const __m256 cc = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(c)), dup);
    const __m256 ss = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(s)), dup);
    return _mm256_fmaddsub_ps(x, cc, _mm256_mul_ps(_mm256_permute_ps(x, 0xB1), ss));  // x c -+ (b0 s0, a0 s0, ...)
  }
  // 8 bf16 pairs, a pair per 32-bit lane (a = the low half moved up, b = the high half masked, so cos and sin need no
  // duplicating): the products above, then sF32ToBf16's rounding (nearest even, NaN kept quiet), each result put back
  // in its own half.
  static inline __m256i ropeVecBf16(__m256i x, __m256 cc, __m256 ss) {
    const __m256i high = _mm256_set1_epi32(static_cast<int32_t>(0xffff0000u)), one = _mm256_set1_epi32(1);
    const __m256i bias = _mm256_set1_epi32(0x7fff), absMask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256 a = _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)), b = _mm256_castsi256_ps(_mm256_and_si256(x, high));
    const __m256i ua = _mm256_castps_si256(_mm256_fmsub_ps(a, cc, _mm256_mul_ps(b, ss)));
    const __m256i ub = _mm256_castps_si256(_mm256_fmadd_ps(b, cc, _mm256_mul_ps(a, ss)));
    // Magnitudes above infinity's bits are NaN (a signed compare suffices: both sides are non-negative).
    const __m256i nanA = _mm256_cmpgt_epi32(_mm256_and_si256(ua, absMask), inf), nanB = _mm256_cmpgt_epi32(_mm256_and_si256(ub, absMask), inf);
    const __m256i ra = _mm256_blendv_epi8(_mm256_srli_epi32(_mm256_add_epi32(ua, _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(ua, 16), one), bias)), 16),
                                          _mm256_or_si256(_mm256_srli_epi32(ua, 16), _mm256_set1_epi32(0x40)), nanA);
    const __m256i rb = _mm256_blendv_epi8(_mm256_and_si256(_mm256_add_epi32(ub, _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(ub, 16), one), bias)), high),
                                          _mm256_or_si256(_mm256_and_si256(ub, high), _mm256_set1_epi32(0x400000)), nanB);
    return _mm256_or_si256(ra, rb);
  }
  // Bytes [32 - kOff, 64 - kOff) of prev then cur: the 32-byte unit at a destination kOff bytes past a unit's start.
  // alignr shifts within 128-bit lanes, so the middle pair of lanes (prev's high, cur's low) is formed first.
  template <int kOff>
  static inline __m256i shiftIn(__m256i prev, __m256i cur) {
    const __m256i mid = _mm256_permute2x128_si256(prev, cur, 0x21);
    if constexpr (kOff <= 16) return _mm256_alignr_epi8(cur, mid, 16 - kOff);
    else return _mm256_alignr_epi8(mid, prev, 32 - kOff);
  }
  // The append run loop (kernels.h's AppendRun) for bf16 and f32 rows whose kvC and kPe parts are whole 32-byte
  // vectors: a row is read as vectors (kvC's loaded, kPe's loaded and rotated in registers) and each destination unit
  // is two neighbouring vectors shifted by the destination's offset in its unit (kOff, a template argument: alignr
  // takes an immediate), so every unit is stored once, whole, by a streaming store; the run's partial first and last
  // units by byte-exact plain copies.
  static constexpr bool kAppendRun = true;
  static constexpr int64_t kRunVecBytes = 32;  // appendRunVectors' vectors
  static inline __m256i runLoad(const char* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static inline __m256i runRotateBf16(const char* p, const float* c, const float* s) {
    return ropeVecBf16(runLoad(p), _mm256_loadu_ps(c), _mm256_loadu_ps(s));
  }
  static inline __m256i runRotateF32(const char* p, const float* c, const float* s) {
    return _mm256_castps_si256(ropeVecF32(_mm256_loadu_ps(reinterpret_cast<const float*>(p)), c, s));
  }
  static inline bool appendRunFits(Elem e, bool, int64_t kvBytes, int64_t ropeDim) {
    const int64_t es = e == Elem::F32 ? 4 : 2;
    return (e == Elem::F32 || e == Elem::BF16) && kvBytes > 0 && kvBytes % 32 == 0 && ropeDim > 0 && ropeDim * es % 32 == 0;
  }
  template <int kOff>
  static void appendRunAt(const AppendRun& r) {
    char* unit = r.dst - kOff;
    __m256i prev = _mm256_setzero_si256();
    bool first = kOff != 0;  // the first unit's bytes before dst are not the run's
    auto emit = [&](__m256i cur) {
      if constexpr (kOff == 0) {
        _mm256_stream_si256(reinterpret_cast<__m256i*>(unit), cur);
      } else {
        const __m256i out = shiftIn<kOff>(prev, cur);
        if (first) {
          alignas(32) char t[32];
          _mm256_store_si256(reinterpret_cast<__m256i*>(t), out);
          copyShort(unit + kOff, t + kOff, 32 - kOff);
          first = false;
        } else {
          _mm256_stream_si256(reinterpret_cast<__m256i*>(unit), out);
        }
        prev = cur;
      }
      unit += 32;
    };
    appendRunVectors<VO>(r, emit);
    if constexpr (kOff != 0) {  // the last unit's first kOff bytes
      alignas(32) char t[32];
      _mm256_store_si256(reinterpret_cast<__m256i*>(t), shiftIn<kOff>(prev, prev));
      copyShort(unit, t, kOff);
    }
  }
  // dst is aligned to the element size (the backend's condition), so its offset in a unit is even.
  static inline void appendRun(const AppendRun& r) {
    using Run = void (*)(const AppendRun&);
    static constexpr Run kRuns[16] = {appendRunAt<0>,  appendRunAt<2>,  appendRunAt<4>,  appendRunAt<6>,  appendRunAt<8>,  appendRunAt<10>,
                                      appendRunAt<12>, appendRunAt<14>, appendRunAt<16>, appendRunAt<18>, appendRunAt<20>, appendRunAt<22>,
                                      appendRunAt<24>, appendRunAt<26>, appendRunAt<28>, appendRunAt<30>};
    kRuns[(reinterpret_cast<uintptr_t>(r.dst) & 31) / 2](r);
  }
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
