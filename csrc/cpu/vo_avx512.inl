// The AVX-512F vector abstraction of kernels_generic.inl (shared by kernels_avx512.cc and kernels_avx512bf16.cc).
struct VO {
  using V = __m512;
  static constexpr int W = 16;
  static constexpr int kQkRegs = 24;
  static constexpr int kPvMr = 6;
  static constexpr int kPvVv = 4;
  static inline V zero() { return _mm512_setzero_ps(); }
  static inline V set1(float x) { return _mm512_set1_ps(x); }
  static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, V x) { _mm512_storeu_ps(p, x); }
  static inline V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static inline V add(V a, V b) { return _mm512_add_ps(a, b); }
  static inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static inline V max(V a, V b) { return _mm512_max_ps(a, b); }
  static inline V selectLt(V x, V y, V a, V b) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, y, _CMP_LT_OQ), b, a); }
  static inline V round(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static inline V pow2i(V n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static inline __m512 loadBf16(const uint16_t* p, __mmask16 k) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)), 16));
  }
  // FP8 e4m3: the bits moved to f32's places read as the value times 2^-120 (subnormals included); 0x7F is NaN.
  static inline __m512 loadFp8(const uint8_t* p, __mmask16 k) {
    const __m512i x = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, p));
    const __m512i mag = _mm512_and_si512(x, _mm512_set1_epi32(0x7f));
    const __m512i bits = _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x80)), 24), _mm512_slli_epi32(mag, 20));
    const __m512 v = _mm512_mul_ps(_mm512_castsi512_ps(bits), _mm512_set1_ps(0x1p120f));
    return _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7f)), v, _mm512_set1_ps(__builtin_nanf("")));
  }
  // bf16 → f32 in split order (see splitPos in kernels_generic.inl): per 32 values, the even ones then the odd ones.
  // One load and two integer ops per 32 values where the in-order conversion takes two loads and four (vpmovzxwd
  // on the shuffle port, then a shift), all on the ports the FMAs need. n is a multiple of 32.
  static inline void loadBf16Split(const uint16_t* src, float* dst, int64_t n) {
    const __m512i high = _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u));
    for (int64_t i = 0; i < n; i += 32) {
      const __m512i x = _mm512_loadu_si512(src + i);
      _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)));
      _mm512_storeu_ps(dst + i + 16, _mm512_castsi512_ps(_mm512_and_si512(x, high)));
    }
  }
  // Lane i = p[i * stride] (a column of a small row-major block; stride * 15 fits an int32).
  static inline V loadStrided(const float* p, int64_t stride) {
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(static_cast<int32_t>(stride)));
    return _mm512_i32gather_ps(idx, p, 4);
  }
  static inline void loadElems(Elem e, const void* src, float* dst, int64_t n) {
    int64_t i = 0;
    if (e == Elem::FP8E4M3) {
      const uint8_t* s = static_cast<const uint8_t*>(src);
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, loadFp8(s + i, 0xffff));
      if (i < n) {
        const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, k, loadFp8(s + i, k));
      }
    } else if (e == Elem::F32) {
      const float* s = static_cast<const float*>(src);
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_loadu_ps(s + i));
      if (i < n) {
        const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, k, _mm512_maskz_loadu_ps(k, s + i));
      }
    } else if (e == Elem::BF16) {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, loadBf16(s + i, 0xffff));
      if (i < n) {
        const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, k, loadBf16(s + i, k));
      }
    } else {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i))));
      if (i < n) {
        const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, k, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, s + i)));
      }
    }
  }
  static inline __m256i toBf16(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
  }
  // bf16 pairs 16 at a time, a pair per 32-bit lane: a = the low half moved up, b = the high half masked, so cos and
  // sin need no duplicating permute, nor the values a widening or narrowing one; the same products and the same
  // rounding as toBf16 (round to nearest even, NaN kept quiet), each result put back in its own half.
  static inline __m512i ropeVecBf16(__m512i x, __m512 cc, __m512 ss) {
    const __m512i high = _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u)), one = _mm512_set1_epi32(1);
    const __m512i bias = _mm512_set1_epi32(0x7fff), absMask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512 a = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)), b = _mm512_castsi512_ps(_mm512_and_si512(x, high));
    const __m512i ua = _mm512_castps_si512(_mm512_fmadd_ps(a, cc, _mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(b, ss))));
    const __m512i ub = _mm512_castps_si512(_mm512_fmadd_ps(b, cc, _mm512_mul_ps(a, ss)));
    __m512i ra = _mm512_srli_epi32(_mm512_add_epi32(ua, _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(ua, 16), one), bias)), 16);
    __m512i rb = _mm512_and_si512(_mm512_add_epi32(ub, _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(ub, 16), one), bias)), high);
    ra = _mm512_mask_or_epi32(ra, _mm512_cmpgt_epu32_mask(_mm512_and_si512(ua, absMask), inf), _mm512_srli_epi32(ua, 16), _mm512_set1_epi32(0x40));
    rb = _mm512_mask_or_epi32(rb, _mm512_cmpgt_epu32_mask(_mm512_and_si512(ub, absMask), inf), _mm512_and_si512(ub, high), _mm512_set1_epi32(0x400000));
    return _mm512_or_si512(ra, rb);
  }
  static inline void ropePairsBf16(const uint16_t* src, const float* c, const float* s, uint16_t* dst, int64_t half) {
    for (int64_t j = 0; j < half; j += 16)
      _mm512_storeu_si512(dst + 2 * j, ropeVecBf16(_mm512_loadu_si512(src + 2 * j), _mm512_loadu_ps(c + j), _mm512_loadu_ps(s + j)));
  }
  // 8 interleaved f32 pairs (a0 b0 a1 b1 ...) with their 8 cos and sin values, unrounded.
  static inline __m512 ropeVecF32(__m512 x, const float* c, const float* s) {
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512 cc = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(c)));
    const __m512 ss = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(s)));
    const __m512 t = _mm512_mul_ps(_mm512_permute_ps(x, 0xB1), ss);               // b0 s0, a0 s0, ...
    return _mm512_fmadd_ps(x, cc, _mm512_mask_sub_ps(t, 0x5555, _mm512_setzero_ps(), t));  // + (-(b s), a s)
  }
  // RoPE of interleaved pairs of f32, bf16 or f16, 8 pairs per vector: (a, b) -> (a c - b s, b c + a s), rounded
  // once to the element type (in the generic loop a call to load, one to store and the pairs' shuffles cost several
  // times the row's copy). half: a multiple of 8.
  static constexpr bool kRopePairs = true;
  static inline void ropePairs(Elem e, const void* src, const float* c, const float* s, void* dst, int64_t half) {
    if (e == Elem::BF16 && half % 16 == 0) return ropePairsBf16(static_cast<const uint16_t*>(src), c, s, static_cast<uint16_t*>(dst), half);
    for (int64_t j = 0; j < half; j += 8) {
      const __m512 x = e == Elem::F32 ? _mm512_loadu_ps(static_cast<const float*>(src) + 2 * j)  // a0 b0 a1 b1 ...
                       : e == Elem::BF16 ? loadBf16(static_cast<const uint16_t*>(src) + 2 * j, 0xffff)
                                         : _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + 2 * j)));
      const __m512 r = ropeVecF32(x, c + j, s + j);
      if (e == Elem::F32) _mm512_storeu_ps(static_cast<float*>(dst) + 2 * j, r);
      else
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(dst) + 2 * j),
                            e == Elem::BF16 ? toBf16(r) : _mm512_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
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
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, _mm512_loadu_ps(src + i));
      if (i < n) {
        const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(d + i, k, _mm512_maskz_loadu_ps(k, src + i));
      }
      return;
    }
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (; i < n; i += 16) {
      const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
      const __m512 x = _mm512_maskz_loadu_ps(k, src + i);
      const __m256i h = e == Elem::BF16 ? toBf16(x) : _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm256_mask_storeu_epi16(d + i, k, h);
    }
  }
  // Non-temporal 64-byte stores for the aligned middle of dst; plain copies for the ends.
  static inline void streamCopy(void* dst, const void* src, int64_t bytes) {
    char* d = static_cast<char*>(dst);
    const char* s = static_cast<const char*>(src);
    int64_t head = static_cast<int64_t>((64 - (reinterpret_cast<uintptr_t>(d) & 63)) & 63);
    if (head > bytes) head = bytes;
    if (bytes <= 0) return;  // an empty tensor's data may be null, which memcpy may not name
    // The ends by masked stores (under a line each): a memcpy call per end of every row cost more than the row's
    // streaming stores.
    if (head > 0) {
      const __mmask64 k = (1ull << head) - 1;
      _mm512_mask_storeu_epi8(d, k, _mm512_maskz_loadu_epi8(k, s));
    }
    int64_t i = head;
    for (; i + 64 <= bytes; i += 64) _mm512_stream_si512(reinterpret_cast<__m512i*>(d + i), _mm512_loadu_si512(s + i));
    if (i < bytes) {
      const __mmask64 k = (1ull << (bytes - i)) - 1;
      _mm512_mask_storeu_epi8(d + i, k, _mm512_maskz_loadu_epi8(k, s + i));
    }
  }
  static inline void streamFence() { _mm_sfence(); }
  // The append run loop (kernels.h's AppendRun) for bf16 and f32 rows whose kvC and kPe parts are whole 64-byte
  // vectors: a row is read as vectors (kvC's loaded, kPe's loaded and rotated in registers) and each destination line
  // is two neighbouring vectors shifted by the destination's offset in its line, so every line is stored once, whole,
  // by a streaming store however the cache is aligned.
  static constexpr bool kAppendRun = true;
  static constexpr int64_t kRunVecBytes = 64;  // appendRunVectors' vectors
  static inline __m512i runLoad(const char* p) { return _mm512_loadu_si512(p); }
  static inline __m512i runRotateBf16(const char* p, const float* c, const float* s) {
    return ropeVecBf16(_mm512_loadu_si512(p), _mm512_loadu_ps(c), _mm512_loadu_ps(s));
  }
  static inline __m512i runRotateF32(const char* p, const float* c, const float* s) {
    return _mm512_castps_si512(ropeVecF32(_mm512_loadu_ps(reinterpret_cast<const float*>(p)), c, s));
  }
  static inline bool appendRunFits(Elem e, bool, int64_t kvBytes, int64_t ropeDim) {
    const int64_t es = e == Elem::F32 ? 4 : 2;
    return (e == Elem::F32 || e == Elem::BF16) && kvBytes > 0 && kvBytes % 64 == 0 && ropeDim > 0 && ropeDim * es % 64 == 0;
  }
  template <bool kWords>  // shift by 16-bit words (an offset of 2 mod 4 bytes) or 32-bit ones
  static inline void appendRunShifted(const AppendRun& r, int64_t offset) {
    const __m512i idx = kWords ? _mm512_add_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                  _mm512_set1_epi16(static_cast<int16_t>(32 - offset / 2)))
                               : _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(static_cast<int32_t>(16 - offset / 4)));
    char* line = r.dst - offset;
    __m512i prev = _mm512_setzero_si512();
    bool first = offset != 0;  // the first line's bytes before dst are not the run's: a masked plain store
    auto emit = [&](__m512i cur) {
      const __m512i out = kWords ? _mm512_permutex2var_epi16(prev, idx, cur) : _mm512_permutex2var_epi32(prev, idx, cur);
      if (first) _mm512_mask_storeu_epi8(line, ~0ull << offset, out), first = false;
      else _mm512_stream_si512(reinterpret_cast<__m512i*>(line), out);
      prev = cur;
      line += 64;
    };
    appendRunVectors<VO>(r, emit);
    if (offset) _mm512_mask_storeu_epi8(line, (1ull << offset) - 1, kWords ? _mm512_permutex2var_epi16(prev, idx, prev) : _mm512_permutex2var_epi32(prev, idx, prev));
  }
  static inline void appendRun(const AppendRun& r) {
    const int64_t offset = static_cast<int64_t>(reinterpret_cast<uintptr_t>(r.dst) & 63);
    if (offset % 4 == 0) appendRunShifted<false>(r, offset);
    else appendRunShifted<true>(r, offset);
  }
};
