// bf16 prefill with vdpbf16ps (included by kernels_avx512bf16.cc after its decode kernels, whose Q·K and P·V blocks
// these reuse); every other dtype takes the fp32 code of prefill_generic.inl.
//
// An item: QP[p][j] = the dword q[i0 + j][h][2p .. 2p + 1] (queries in lanes, pairs of columns per dword); per tile of
// keys the K tile is the rows [kNope[., h], kPe] copied as they are (bf16, no conversion), the values interleaved by
// row pairs (VP[i][c] = (v[2i][c], v[2i + 1][c])), P packed the same way: S = K·QP and O += P·V as dot products of
// bf16 pairs with fp32 accumulation, as the bf16 decode does.
// C = A Bᵀ: the rows of A (copied, padded to a whole row block) broadcast as dword pairs against B's pairs in lanes.

struct PrefillBf16Layout {
  int64_t mg, mp, D, pairs, vp;
  int64_t qp, kt, s, pp, vv, o, mrun, lrun, alpha, limit, total;  // offsets in floats (each a multiple of 16)
};

inline PrefillBf16Layout prefillBf16Layout(const PrefillItem& it) {
  PrefillBf16Layout l;
  l.mg = it.i1 - it.i0;
  l.mp = roundUp(l.mg, 16);
  l.D = it.nopeDim + it.ropeDim;
  l.pairs = l.D / 2;
  l.vp = roundUp(it.vHeadDim, 32);
  int64_t at = 0;
  auto take = [&at](int64_t n) { const int64_t o = at; at += roundUp(n, 16); return o; };
  l.qp = take(l.pairs * l.mp);
  l.kt = take((kTile + kTilePad) * l.pairs);  // [kTile + kTilePad][D] bf16: row blocks may run past the valid rows
  l.s = take((kTile + kTilePad) * l.mp);
  l.pp = take((kTile / 2 + 1) * l.mp);
  l.vv = take((kTile / 2 + 1) * l.vp);
  l.o = take(l.mg * l.vp);
  l.mrun = take(l.mp);
  l.lrun = take(l.mp);
  l.alpha = take(l.mp);
  l.limit = take(l.mp);
  l.total = at;
  return l;
}

bool prefillBf16Path(const PrefillItem& it) { return it.elem == Elem::BF16 && (it.nopeDim + it.ropeDim) % 2 == 0 && it.vHeadDim % 2 == 0; }

size_t prefillScratchBf16(const PrefillItem& it) {
  return prefillBf16Path(it) ? static_cast<size_t>(prefillBf16Layout(it).total) : prefillScratchGeneric(it);
}

// dst[p][j] = the dword of row j at pair p, for j < mp (rows past mg zero): rows are `rowDwords` dwords apart from
// `base`, 16 rows per gather.
inline void packPairs(const uint32_t* base, int64_t rowDwords, int64_t mg, int64_t mp, int64_t pairs, uint32_t* dst) {
  const __m512i rowIdx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(static_cast<int32_t>(rowDwords)));
  for (int64_t p = 0; p < pairs; ++p)
    for (int64_t j = 0; j < mp; j += 16) {
      const __mmask16 live = mg - j >= 16 ? static_cast<__mmask16>(0xffff) : mg > j ? static_cast<__mmask16>((1u << (mg - j)) - 1u) : 0;
      _mm512_storeu_si512(dst + p * mp + j, _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, rowIdx, base + j * rowDwords + p, 4));
    }
}

void prefillBf16(const PrefillItem& it, float* scratch) {
  if (!prefillBf16Path(it)) return prefillGeneric(it, scratch);
  const PrefillBf16Layout L = prefillBf16Layout(it);
  uint32_t* qp = reinterpret_cast<uint32_t*>(scratch + L.qp);
  uint16_t* kt = reinterpret_cast<uint16_t*>(scratch + L.kt);
  float* s = scratch + L.s;
  uint32_t* pp = reinterpret_cast<uint32_t*>(scratch + L.pp);
  uint32_t* vv = reinterpret_cast<uint32_t*>(scratch + L.vv);
  float* o = scratch + L.o;
  float* mrun = scratch + L.mrun;
  float* lrun = scratch + L.lrun;
  float* alpha = scratch + L.alpha;
  float* limit = scratch + L.limit;
  const int64_t H = it.numHeads, D = L.D, nope = it.nopeDim, rope = it.ropeDim, vDim = it.vHeadDim;
  const uint16_t* q = static_cast<const uint16_t*>(it.q);
  const uint16_t* kNope = static_cast<const uint16_t*>(it.kNope);
  const uint16_t* kPe = static_cast<const uint16_t*>(it.kPe);
  const uint16_t* v = static_cast<const uint16_t*>(it.v);

  packPairs(reinterpret_cast<const uint32_t*>(q + ((it.qBegin + it.i0) * H + it.h) * D), H * L.pairs, L.mg, L.mp, L.pairs, qp);
  int64_t minLimit = it.kvLen, maxLimit = 0;
  for (int64_t j = 0; j < L.mp; ++j) {
    int64_t lim = it.kvLen;
    if (j < L.mg && it.causal) lim = it.kvLen - it.qLen + 1 + it.i0 + j;
    if (j < L.mg) {
      minLimit = lim < minLimit ? lim : minLimit;
      maxLimit = lim > maxLimit ? lim : maxLimit;
    }
    limit[j] = static_cast<float>(lim);
    mrun[j] = kNegInf;
    lrun[j] = 0.f;
  }
  for (int64_t i = 0; i < L.mg * L.vp; ++i) o[i] = 0.f;

  alignas(64) static const uint16_t kLo[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                               8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static const uint16_t kHi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                               24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  alignas(64) static const uint16_t kPair[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idxLo = _mm512_loadu_si512(kLo), idxHi = _mm512_loadu_si512(kHi), idxPair = _mm512_loadu_si512(kPair);
  Prefetch none(nullptr, 0, 0, 0);

  for (int64_t n = 0; n < maxLimit; n += kTile) {
    const int64_t rows = maxLimit - n < kTile ? maxLimit - n : kTile;
    // The K tile: each key's [kNope[., h], kPe] row as it is; rows up to the next 16 zero (Q·K row blocks read them).
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t key = it.kvBegin + n + r;
      __builtin_memcpy(kt + r * D, kNope + (key * H + it.h) * nope, static_cast<size_t>(nope) * 2);
      if (rope) __builtin_memcpy(kt + r * D + nope, kPe + key * rope, static_cast<size_t>(rope) * 2);
    }
    for (int64_t i = rows * D; i < roundUp(rows, 16) * D; ++i) kt[i] = 0;
    // The values interleaved by row pairs (a missing odd row is zero).
    const int64_t vPairs = (rows + 1) / 2;
    for (int64_t i = 0; i < vPairs; ++i) {
      const uint16_t* a = v + ((it.kvBegin + n + 2 * i) * H + it.h) * vDim;
      const uint16_t* b = 2 * i + 1 < rows ? v + ((it.kvBegin + n + 2 * i + 1) * H + it.h) * vDim : nullptr;
      for (int64_t c = 0; c < L.vp; c += 32) {
        const __mmask32 k = vDim - c >= 32 ? 0xffffffffu : vDim > c ? ((1u << (vDim - c)) - 1u) : 0u;
        const __m512i x = _mm512_maskz_loadu_epi16(k, a + c), y = b ? _mm512_maskz_loadu_epi16(k, b + c) : _mm512_setzero_si512();
        _mm512_storeu_si512(vv + i * L.vp + c, _mm512_permutex2var_epi16(x, idxLo, y));
        _mm512_storeu_si512(vv + i * L.vp + c + 16, _mm512_permutex2var_epi16(x, idxHi, y));
      }
    }
    if (D == kPrefillFastStride) qkTileBf16<kPrefillFastStride>(kt, D, rows, qp, L.mp, L.pairs, it.scaleLog2, s, none);
    else qkTileBf16<0>(kt, D, rows, qp, L.mp, L.pairs, it.scaleLog2, s, none);
    // Online softmax per lane (causal masking only on tiles crossing a limit); P packed by row pairs as bf16.
    const bool mask = it.causal && n + rows > minLimit;
    for (int64_t j = 0; j < L.mp; j += 16) {
      const __m512 mOld = _mm512_loadu_ps(mrun + j);
      __m512 tmax = _mm512_set1_ps(kNegInf);
      if (mask) {
        float rel[16];
        MLA_UNROLL
        for (int l = 0; l < 16; ++l) {
          const float x = limit[j + l] - static_cast<float>(n);
          rel[l] = x < -1.f ? -1.f : (x > static_cast<float>(kTile + 1) ? static_cast<float>(kTile + 1) : x);
        }
        const __m512 lim = _mm512_loadu_ps(rel);
        for (int64_t r = 0; r < rows; ++r) {
          const __mmask16 vis = _mm512_cmp_ps_mask(_mm512_set1_ps(static_cast<float>(r)), lim, _CMP_LT_OQ);
          const __m512 x = _mm512_mask_blend_ps(vis, _mm512_set1_ps(kNegInf), _mm512_loadu_ps(s + r * L.mp + j));
          _mm512_storeu_ps(s + r * L.mp + j, x);
          tmax = _mm512_max_ps(tmax, x);
        }
      } else {
        for (int64_t r = 0; r < rows; ++r) tmax = _mm512_max_ps(tmax, _mm512_loadu_ps(s + r * L.mp + j));
      }
      const __m512 mNew = _mm512_max_ps(mOld, tmax);
      const __m512 safe = VO::selectLt(mNew, _mm512_set1_ps(-1e30f), _mm512_setzero_ps(), mNew);
      const __m512 a = exp2v(_mm512_sub_ps(mOld, safe));
      __m512 sum = _mm512_setzero_ps();
      for (int64_t i = 0; i < vPairs; ++i) {
        const __m512 p0 = exp2v(_mm512_sub_ps(_mm512_loadu_ps(s + 2 * i * L.mp + j), safe));
        const __m512 p1 = 2 * i + 1 < rows ? exp2v(_mm512_sub_ps(_mm512_loadu_ps(s + (2 * i + 1) * L.mp + j), safe)) : _mm512_setzero_ps();
        sum = _mm512_add_ps(sum, _mm512_add_ps(p0, p1));
        const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(p1, p0);  // low half row 2i, high half row 2i + 1
        _mm512_storeu_si512(pp + i * L.mp + j, _mm512_permutexvar_epi16(idxPair, both));
      }
      _mm512_storeu_ps(lrun + j, _mm512_fmadd_ps(_mm512_loadu_ps(lrun + j), a, sum));
      _mm512_storeu_ps(mrun + j, mNew);
      _mm512_storeu_ps(alpha + j, a);
    }
    const int64_t ov = L.vp / 16;
    int64_t c = 0;
    for (; c + 3 <= ov; c += 3) pvRowsBf16<3>(pp, L.mp, L.mg, vv + c * 16, L.vp, vPairs, o + c * 16, L.vp, alpha, none);
    if (ov - c == 2) pvRowsBf16<2>(pp, L.mp, L.mg, vv + c * 16, L.vp, vPairs, o + c * 16, L.vp, alpha, none);
    else if (ov - c == 1) pvRowsBf16<1>(pp, L.mp, L.mg, vv + c * 16, L.vp, vPairs, o + c * 16, L.vp, alpha, none);
  }

  for (int64_t j = 0; j < L.mg; ++j) {
    const int64_t row = it.qBegin + it.i0 + j;
    void* out = elemAt(Elem::BF16, it.out, (row * H + it.h) * vDim);
    float* lse = it.lse + row * H + it.h;
    float* src = o + j * L.vp;
    if (lrun[j] > 0.f) {
      const __m512 inv = _mm512_set1_ps(1.f / lrun[j]);
      for (int64_t c0 = 0; c0 < L.vp; c0 += 16) _mm512_storeu_ps(src + c0, _mm512_mul_ps(_mm512_loadu_ps(src + c0), inv));
      VO::storeElems(Elem::BF16, src, out, vDim);
      *lse = (mrun[j] + __builtin_log2f(lrun[j])) * kLn2;
    } else {
      for (int64_t c0 = 0; c0 < vDim; ++c0) sStore(Elem::BF16, out, c0, 0.f);
      *lse = kNegInf;
    }
  }
}

// --- C = A Bᵀ in bf16 pairs -----------------------------------------------------------------------------------------
struct GemmBf16Layout {
  int64_t mrows, ncols, np, pairs;
  int64_t bp, a, s, total;
};

inline GemmBf16Layout gemmBf16Layout(const GemmBlock& g) {
  GemmBf16Layout l;
  l.mrows = g.m1 - g.m0;
  l.ncols = g.n1 - g.n0;
  l.np = roundUp(l.ncols, 16);
  l.pairs = g.K / 2;
  int64_t at = 0;
  auto take = [&at](int64_t n) { const int64_t o = at; at += roundUp(n, 16); return o; };
  l.bp = take(l.pairs * l.np);
  l.a = take((l.mrows + 16) * l.pairs);  // A's rows, then zero rows up to the next row block
  l.s = take((l.mrows + 16) * l.np);
  l.total = at;
  return l;
}

bool gemmBf16Path(const GemmBlock& g) { return g.elem == Elem::BF16 && g.K % 2 == 0; }

size_t gemmScratchBf16(const GemmBlock& g) { return gemmBf16Path(g) ? static_cast<size_t>(gemmBf16Layout(g).total) : gemmScratchGeneric(g); }

void gemmNTBf16(const GemmBlock& g, float* scratch) {
  if (!gemmBf16Path(g)) return gemmNTGeneric(g, scratch);
  const GemmBf16Layout L = gemmBf16Layout(g);
  uint32_t* bp = reinterpret_cast<uint32_t*>(scratch + L.bp);
  uint16_t* a = reinterpret_cast<uint16_t*>(scratch + L.a);
  float* s = scratch + L.s;
  packPairs(reinterpret_cast<const uint32_t*>(static_cast<const uint16_t*>(g.b) + g.n0 * g.K), L.pairs, L.ncols, L.np, L.pairs, bp);
  __builtin_memcpy(a, static_cast<const uint16_t*>(g.a) + g.m0 * g.K, static_cast<size_t>(L.mrows * g.K) * 2);
  for (int64_t i = L.mrows * g.K; i < roundUp(L.mrows, 16) * g.K; ++i) a[i] = 0;
  Prefetch none(nullptr, 0, 0, 0);
  if (g.K == kGemmFastK) qkTileBf16<kGemmFastK>(a, g.K, L.mrows, bp, L.np, L.pairs, 1.f, s, none);
  else qkTileBf16<0>(a, g.K, L.mrows, bp, L.np, L.pairs, 1.f, s, none);
  for (int64_t m = 0; m < L.mrows; ++m) VO::storeElems(Elem::BF16, s + m * L.np, elemAt(Elem::BF16, g.c, (g.m0 + m) * g.ldc + g.n0), L.ncols);
}
