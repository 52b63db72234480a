// AVX-512 BF16 kernels: bf16 decode (and, in prefill_avx512bf16.inl, bf16 prefill and its up-projection) with
// vdpbf16ps for Q·K and P·V (P rounded to bf16, fp32 accumulation); every other dtype and operation runs the AVX-512F
// code of kernels_generic.inl and prefill_generic.inl.
//
// Q·K: S[r][m] = Σ_p dot2(K[r][2p..2p+1], Q[m][2p..2p+1]) with the query packed as pairs, heads in lanes
//   (QP[p][m] = the dword q[m][2p..2p+1]); the cache rows are read in place, one broadcast dword per instruction.
// P·V: O[m][v] += Σ_i dot2(P[m][2i..2i+1], V[2i..2i+1][v]) with the tile's values interleaved by row pairs
//   (VP[i][v] = (V[2i][v], V[2i+1][v])) and P packed the same way (PP[i][m]), converted once per tile.
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define MLA_TARGET "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c"
#include "target_begin.h"

namespace mla::cpu {
namespace {

#include "kernels_scalar.inl"
#include "vo_avx512.inl"
#include "kernels_generic.inl"

inline __m512bh asBh(__m512i x) { return (__m512bh)x; }
inline __m512i bcast32(const uint16_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// K rows at k + r * stride (stride KS when KS != 0: constant offsets for the 576-wide rows).
template <int NR, int MV, int KS>
inline void qkBlockBf16(const uint16_t* k, int64_t stride, const uint32_t* qp, int64_t mp, int64_t pairs, float scale, float* s, Prefetch& pf) {
  const int64_t st = KS ? KS : stride;
  __m512 acc[NR][MV];
  MLA_UNROLL
  for (int r = 0; r < NR; ++r)
    MLA_UNROLL
    for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs;) {
    const int64_t pEnd = pairs - p > kPrefetchStep ? p + kPrefetchStep : pairs;
    pf.work(NR * MV * (pEnd - p));
    for (; p < pEnd; ++p) {
      __m512i q[MV];
      MLA_UNROLL
      for (int v = 0; v < MV; ++v) q[v] = _mm512_loadu_si512(qp + p * mp + v * 16);
      MLA_UNROLL
      for (int r = 0; r < NR; ++r) {
        const __m512i kb = bcast32(k + r * st + 2 * p);
        MLA_UNROLL
        for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], asBh(kb), asBh(q[v]));
      }
    }
  }
  const __m512 sc = _mm512_set1_ps(scale);
  MLA_UNROLL
  for (int r = 0; r < NR; ++r)
    MLA_UNROLL
    for (int v = 0; v < MV; ++v) _mm512_storeu_ps(s + r * mp + v * 16, _mm512_mul_ps(acc[r][v], sc));
}

// Rows [0, nrows) rounded up to NR (the tile has zero rows after the valid ones).
template <int NR, int MV, int KS>
inline void qkColumnsBf16(const uint16_t* k, int64_t stride, int64_t nrows, const uint32_t* qp, int64_t mp, int64_t pairs, float scale, float* s,
                          Prefetch& pf) {
  for (int64_t r = 0; r < nrows; r += NR) qkBlockBf16<NR, MV, KS>(k + r * (KS ? KS : stride), stride, qp, mp, pairs, scale, s + r * mp, pf);
}

template <int KS>
inline void qkTileBf16(const uint16_t* k, int64_t stride, int64_t nrows, const uint32_t* qp, int64_t mp, int64_t pairs, float scale, float* s,
                       Prefetch& pf) {
  const int64_t nv = mp / 16;
  int64_t v = 0;
  // Row blocks divide kTile (64): a full tile read in place is never over-read.
  for (; v + 3 <= nv; v += 3) qkColumnsBf16<8, 3, KS>(k, stride, nrows, qp + v * 16, mp, pairs, scale, s + v * 16, pf);
  if (nv - v == 2) qkColumnsBf16<8, 2, KS>(k, stride, nrows, qp + v * 16, mp, pairs, scale, s + v * 16, pf);
  else if (nv - v == 1) qkColumnsBf16<16, 1, KS>(k, stride, nrows, qp + v * 16, mp, pairs, scale, s + v * 16, pf);
}

template <int MR, int VV>
inline void pvBlockBf16(const uint32_t* pp, int64_t mp, const uint32_t* vp, int64_t vstride, int64_t pairs, float* o, int64_t oStride,
                        const float* alpha, Prefetch& pf) {
  __m512 acc[MR][VV];
  MLA_UNROLL
  for (int i = 0; i < MR; ++i) {
    const __m512 a = _mm512_set1_ps(alpha[i]);
    MLA_UNROLL
    for (int k = 0; k < VV; ++k) acc[i][k] = _mm512_mul_ps(_mm512_loadu_ps(o + i * oStride + k * 16), a);
  }
  for (int64_t q = 0; q < pairs;) {
    const int64_t qEnd = pairs - q > kPrefetchStep / 2 ? q + kPrefetchStep / 2 : pairs;
    pf.work(MR * VV * (qEnd - q));
    for (; q < qEnd; ++q) {
      __m512i x[VV];
      MLA_UNROLL
      for (int k = 0; k < VV; ++k) x[k] = _mm512_loadu_si512(vp + q * vstride + k * 16);
      MLA_UNROLL
      for (int i = 0; i < MR; ++i) {
        const __m512i pb = _mm512_set1_epi32(static_cast<int32_t>(pp[q * mp + i]));
        MLA_UNROLL
        for (int k = 0; k < VV; ++k) acc[i][k] = _mm512_dpbf16_ps(acc[i][k], asBh(pb), asBh(x[k]));
      }
    }
  }
  MLA_UNROLL
  for (int i = 0; i < MR; ++i)
    MLA_UNROLL
    for (int k = 0; k < VV; ++k) _mm512_storeu_ps(o + i * oStride + k * 16, acc[i][k]);
}

template <int VV>
inline void pvRowsBf16(const uint32_t* pp, int64_t mp, int64_t mg, const uint32_t* vp, int64_t vstride, int64_t pairs, float* o,
                       int64_t oStride, const float* alpha, Prefetch& pf) {
  int64_t m = 0;
  for (; m + 8 <= mg; m += 8) pvBlockBf16<8, VV>(pp + m, mp, vp, vstride, pairs, o + m * oStride, oStride, alpha + m, pf);
  for (; m + 4 <= mg; m += 4) pvBlockBf16<4, VV>(pp + m, mp, vp, vstride, pairs, o + m * oStride, oStride, alpha + m, pf);
  for (; m + 2 <= mg; m += 2) pvBlockBf16<2, VV>(pp + m, mp, vp, vstride, pairs, o + m * oStride, oStride, alpha + m, pf);
  for (; m < mg; ++m) pvBlockBf16<1, VV>(pp + m, mp, vp, vstride, pairs, o + m * oStride, oStride, alpha + m, pf);
}

struct Bf16Layout {
  int64_t mg, mp, vp, pairs;
  int64_t qp, s, pp, vv, o, kt, mrun, lrun, alpha, limit, total;
};

inline Bf16Layout bf16Layout(const DecodeItem& it) {
  Bf16Layout l;
  l.mg = it.m1 - it.m0;
  l.mp = roundUp(l.mg, 16);
  l.vp = roundUp(it.V, 32);
  l.pairs = it.D / 2;
  int64_t at = 0;
  auto take = [&at](int64_t n) { const int64_t o = at; at += roundUp(n, 16); return o; };
  l.qp = take(l.pairs * l.mp);
  l.s = take((kTile + kTilePad) * l.mp);
  l.pp = take((kTile / 2 + 1) * l.mp);
  l.vv = take((kTile / 2 + 1) * l.vp);
  l.o = take(l.mg * l.vp);
  l.kt = take((kTile + kTilePad) * l.pairs + 16);  // K tile copy [kTile + kTilePad][D] bf16, when rows are not contiguous
  l.mrun = take(l.mp);
  l.lrun = take(l.mp);
  l.alpha = take(l.mp);
  l.limit = take(l.mp);
  l.total = at;
  return l;
}

bool bf16Path(const DecodeItem& it) { return it.elem == Elem::BF16 && it.cacheElem == Elem::BF16 && it.D % 2 == 0 && it.V % 2 == 0; }

size_t decodeScratchBf16(const DecodeItem& it) {
  return bf16Path(it) ? static_cast<size_t>(bf16Layout(it).total) : decodeScratchGeneric(it);
}

void decodeBf16(const DecodeItem& it, float* scratch) {
  if (!bf16Path(it)) return decodeGeneric(it, scratch);
  const Bf16Layout L = bf16Layout(it);
  uint32_t* qp = reinterpret_cast<uint32_t*>(scratch + L.qp);
  float* s = scratch + L.s;
  uint32_t* pp = reinterpret_cast<uint32_t*>(scratch + L.pp);
  uint32_t* vv = reinterpret_cast<uint32_t*>(scratch + L.vv);
  float* o = scratch + L.o;
  uint16_t* kt = reinterpret_cast<uint16_t*>(scratch + L.kt);
  float* mrun = scratch + L.mrun;
  float* lrun = scratch + L.lrun;
  float* alpha = scratch + L.alpha;
  float* limit = scratch + L.limit;
  const int64_t D = it.D, V = it.V, M = it.numHeads * it.queryLen;
  const uint16_t* cache = static_cast<const uint16_t*>(it.cache);

  // QP a row at a time, each row whole, 16 query rows per gather (lanes past mg zero), as the generic QT build:
  // scalar, each pair was a load and a store, and row by row the stores went down a column of QP.
  const uint32_t* q32 = reinterpret_cast<const uint32_t*>(static_cast<const uint16_t*>(it.q) + (it.b * M + it.m0) * D);
  const __m512i rowIdx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(static_cast<int32_t>(L.pairs)));
  for (int64_t p = 0; p < L.pairs; ++p)
    for (int64_t j = 0; j < L.mp; j += 16) {
      const __mmask16 live = L.mg - j >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (L.mg - j)) - 1u);
      _mm512_storeu_si512(qp + p * L.mp + j, _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, rowIdx, q32 + j * L.pairs + p, 4));
    }
  int64_t minLimit = it.n1;
  for (int64_t j = 0; j < L.mp; ++j) {
    int64_t lim = it.seqLen;
    if (j < L.mg && it.causal) {
      lim = it.seqLen - it.queryLen + 1 + (it.m0 + j) / it.numHeads;
      if (lim < 0) lim = 0;
    }
    if (j < L.mg && lim < minLimit) minLimit = lim;
    limit[j] = static_cast<float>(lim);
    mrun[j] = kNegInf;
    lrun[j] = 0.f;
  }
  for (int64_t i = 0; i < L.mg * L.vp; ++i) o[i] = 0.f;

  // Interleaves value columns of two rows: lo = pairs of columns 0..15, hi = 16..31 of a 32-column chunk.
  alignas(64) static const uint16_t kLo[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                               8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static const uint16_t kHi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                               24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  alignas(64) static const uint16_t kPair[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idxLo = _mm512_loadu_si512(kLo), idxHi = _mm512_loadu_si512(kHi), idxPair = _mm512_loadu_si512(kPair);

  const char* next[kTile];
  for (int64_t n = it.n0; n < it.n1; n += kTile) {
    const int64_t nrows = it.n1 - n < kTile ? it.n1 - n : kTile;
    const int64_t nextRows = it.n1 - (n + kTile) < kTile ? (it.n1 - (n + kTile) > 0 ? it.n1 - (n + kTile) : 0) : kTile;
    rowPointers(it, n + kTile, nextRows, next);
    // The tile's dot-product instructions: Q·K over the padded row blocks, P·V over row pairs.
    Prefetch pf(next, nextRows, D * 2, roundUp(nrows, 16) * L.pairs * (L.mp / 16) + (nrows + 1) / 2 * L.mg * (L.vp / 16));
    const bool mask = it.causal && n + nrows > minLimit;
    // The tile's K rows: in place when they are consecutive in one cache block and fill the Q·K blocks exactly,
    // else copied (zero rows after the valid ones).
    const uint16_t* k;
    if (!it.slots && nrows == kTile && n % it.blockSize + kTile <= it.blockSize) {
      k = cache + slotOf(it, n) * D;
    } else {
      for (int64_t r = 0; r < nrows; ++r) __builtin_memcpy(kt + r * D, cache + slotOf(it, n + r) * D, static_cast<size_t>(D) * 2);
      for (int64_t i = nrows * D; i < (kTile + kTilePad) * D; ++i) kt[i] = 0;
      k = kt;
    }
    const int64_t pairs = (nrows + 1) / 2;
    // Values of the tile, interleaved by row pairs (a missing odd row is zero).
    for (int64_t i = 0; i < pairs; ++i) {
      const uint16_t* a = k + 2 * i * D;
      const uint16_t* b = k + (2 * i + 1) * D;  // a zero row (or masked below) when 2i + 1 = nrows
      for (int64_t c = 0; c < L.vp; c += 32) {
        const __mmask32 k = V - c >= 32 ? 0xffffffffu : ((1u << (V - c)) - 1u);
        const __m512i x = _mm512_maskz_loadu_epi16(k, a + c), y = _mm512_maskz_loadu_epi16(k, b + c);
        _mm512_storeu_si512(vv + i * L.vp + c, _mm512_permutex2var_epi16(x, idxLo, y));
        _mm512_storeu_si512(vv + i * L.vp + c + 16, _mm512_permutex2var_epi16(x, idxHi, y));
      }
    }
    // Scores.
    if (D == 576) qkTileBf16<576>(k, D, nrows, qp, L.mp, L.pairs, it.scaleLog2, s, pf);
    else qkTileBf16<0>(k, D, nrows, qp, L.mp, L.pairs, it.scaleLog2, s, pf);
    // Online softmax per lane; P packed by row pairs as bf16.
    for (int64_t j = 0; j < L.mp; j += 16) {
      const __m512 mOld = _mm512_loadu_ps(mrun + j);
      __m512 tmax = _mm512_set1_ps(kNegInf);
      if (mask) {
        float rel[16];
        MLA_UNROLL
        for (int l = 0; l < 16; ++l) {
          float x = limit[j + l] - static_cast<float>(n);
          rel[l] = x < -1.f ? -1.f : (x > static_cast<float>(kTile + 1) ? static_cast<float>(kTile + 1) : x);
        }
        const __m512 lim = _mm512_loadu_ps(rel);
        for (int64_t r = 0; r < nrows; ++r) {
          const __mmask16 vis = _mm512_cmp_ps_mask(_mm512_set1_ps(static_cast<float>(r)), lim, _CMP_LT_OQ);
          const __m512 x = _mm512_mask_blend_ps(vis, _mm512_set1_ps(kNegInf), _mm512_loadu_ps(s + r * L.mp + j));
          _mm512_storeu_ps(s + r * L.mp + j, x);
          tmax = _mm512_max_ps(tmax, x);
        }
      } else {
        for (int64_t r = 0; r < nrows; ++r) tmax = _mm512_max_ps(tmax, _mm512_loadu_ps(s + r * L.mp + j));
      }
      const __m512 mNew = _mm512_max_ps(mOld, tmax);
      const __m512 safe = VO::selectLt(mNew, _mm512_set1_ps(-1e30f), _mm512_setzero_ps(), mNew);
      const __m512 a = exp2v(_mm512_sub_ps(mOld, safe));
      __m512 sum = _mm512_setzero_ps();
      for (int64_t i = 0; i < pairs; ++i) {
        const __m512 p0 = exp2v(_mm512_sub_ps(_mm512_loadu_ps(s + 2 * i * L.mp + j), safe));
        const __m512 p1 = 2 * i + 1 < nrows ? exp2v(_mm512_sub_ps(_mm512_loadu_ps(s + (2 * i + 1) * L.mp + j), safe)) : _mm512_setzero_ps();
        sum = _mm512_add_ps(sum, _mm512_add_ps(p0, p1));
        const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(p1, p0);  // low half row 2i, high half row 2i+1
        _mm512_storeu_si512(pp + i * L.mp + j, _mm512_permutexvar_epi16(idxPair, both));
      }
      _mm512_storeu_ps(lrun + j, _mm512_fmadd_ps(_mm512_loadu_ps(lrun + j), a, sum));
      _mm512_storeu_ps(mrun + j, mNew);
      _mm512_storeu_ps(alpha + j, a);
    }
    // Output.
    const int64_t ov = L.vp / 16;
    int64_t c = 0;
    for (; c + 3 <= ov; c += 3) pvRowsBf16<3>(pp, L.mp, L.mg, vv + c * 16, L.vp, pairs, o + c * 16, L.vp, alpha, pf);
    if (ov - c == 2) pvRowsBf16<2>(pp, L.mp, L.mg, vv + c * 16, L.vp, pairs, o + c * 16, L.vp, alpha, pf);
    else if (ov - c == 1) pvRowsBf16<1>(pp, L.mp, L.mg, vv + c * 16, L.vp, pairs, o + c * 16, L.vp, alpha, pf);
    pf.rest();
  }
  finishItem(it, o, L.vp, mrun, lrun, false, nullptr);
}

double dotLoopBf16(int64_t iters) {
  __m512 acc[16];
  MLA_UNROLL
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512i a = _mm512_set1_epi32(0x3f803f80), b = _mm512_set1_epi32(0x33803380);  // 1.0 and ~6e-8
  for (int64_t it = 0; it < iters; ++it)
    MLA_UNROLL
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], asBh(a), asBh(b));
  __m512 s = _mm512_setzero_ps();
  MLA_UNROLL
  for (int i = 0; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return 64.0 * 16 * static_cast<double>(iters);
}

// The lightning indexer with vdpbf16ps: bf16 queries against keys that bf16 holds exactly (bf16, or fp8 e4m3:
// 3 mantissa bits), each tile's keys converted to bf16 once; QP packed as decode's (heads in lanes, dims in pairs).
// Twice the dot-product rate of the fp32 FMAs of indexerScoresGeneric, which takes every other case.
bool indexerBf16Path(const IndexerItem& it) {
  return it.elem == Elem::BF16 && (it.cacheElem == Elem::BF16 || it.cacheElem == Elem::FP8E4M3) && it.indexDim % 2 == 0;
}

struct IndexerBf16Layout {
  int64_t mg, mp, pairs;
  int64_t qp, kt, s, total;  // offsets in floats
};

inline IndexerBf16Layout indexerBf16Layout(const IndexerItem& it) {
  IndexerBf16Layout l;
  l.mg = (it.t1 - it.t0) * it.numHeads;
  l.mp = roundUp(l.mg, 16);
  l.pairs = it.indexDim / 2;
  int64_t at = 0;
  auto take = [&at](int64_t n) { const int64_t o = at; at += roundUp(n, 16); return o; };
  l.qp = take(l.pairs * l.mp);
  l.kt = take(kTile * l.pairs);  // the tile's keys as bf16 [kTile][indexDim]
  l.s = take(kTile * l.mp);
  l.total = at;
  return l;
}

size_t indexerScratchBf16(const IndexerItem& it) {
  return indexerBf16Path(it) ? static_cast<size_t>(indexerBf16Layout(it).total) : indexerScratchGeneric(it);
}

void indexerScoresBf16(const IndexerItem& it, float* scratch) {
  if (!indexerBf16Path(it)) return indexerScoresGeneric(it, scratch);
  const IndexerBf16Layout L = indexerBf16Layout(it);
  uint32_t* qp = reinterpret_cast<uint32_t*>(scratch + L.qp);
  uint16_t* kt = reinterpret_cast<uint16_t*>(scratch + L.kt);
  float* s = scratch + L.s;
  const int64_t D = it.indexDim;
  const uint32_t* q32 = reinterpret_cast<const uint32_t*>(static_cast<const uint16_t*>(it.q) + (it.b * it.queryLen + it.t0) * it.numHeads * D);
  for (int64_t p = 0; p < L.pairs; ++p)
    for (int64_t m = 0; m < L.mp; ++m) qp[p * L.mp + m] = m < L.mg ? q32[m * L.pairs + p] : 0u;
  // Rows past a short tile's last are zero: the Q·K row blocks (8 or 16 rows, dividing kTile) read them.
  for (int64_t i = 0; i < kTile * D; ++i) kt[i] = 0;
  const bool fp8 = it.cacheElem == Elem::FP8E4M3;
  const int64_t rowBytes = D * (fp8 ? 1 : 2);
  forEachIndexerTile(it, rowBytes, L.pairs * (L.mp / 16), [&](int64_t n, int64_t rows, const int64_t* slots, Prefetch& pf) {
    for (int64_t r = 0; r < rows; ++r) {
      const char* src = static_cast<const char*>(it.cache) + slots[r] * rowBytes;
      if (!fp8) {
        __builtin_memcpy(kt + r * D, src, static_cast<size_t>(rowBytes));
        continue;
      }
      for (int64_t c = 0; c < D; c += 16) {
        const __mmask16 live = D - c >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (D - c)) - 1u);
        // Exact: every e4m3 value is a bf16 value.
        _mm256_mask_storeu_epi16(kt + r * D + c, live, (__m256i)_mm512_cvtneps_pbh(VO::loadFp8(reinterpret_cast<const uint8_t*>(src) + c, live)));
      }
    }
    if (D == 128 && L.mp % 64 == 0) {
      for (int64_t v = 0; v < L.mp; v += 64) qkColumnsBf16<4, 4, 128>(kt, D, rows, qp + v, L.mp, L.pairs, 1.f, s + v, pf);
    } else if (D == 128) qkTileBf16<128>(kt, D, rows, qp, L.mp, L.pairs, 1.f, s, pf);  // DeepSeek-V3.2's index dim: constant row offsets
    else qkTileBf16<0>(kt, D, rows, qp, L.mp, L.pairs, 1.f, s, pf);
    pf.rest();
    indexerWeightedSum(it, s, L.mp, n, rows, slots);
  });
}

#include "prefill_avx512bf16.inl"

struct Bf16Kernels : GenericKernels {
  static constexpr auto decodeScratch = decodeScratchBf16;
  static constexpr auto decode = decodeBf16;
  static constexpr auto bf16DotLoop = dotLoopBf16;
  static constexpr auto prefillScratch = prefillScratchBf16;
  static constexpr auto prefill = prefillBf16;
  static constexpr auto gemmScratch = gemmScratchBf16;
  static constexpr auto gemmNT = gemmNTBf16;
  static constexpr auto indexerScratch = indexerScratchBf16;
  static constexpr auto indexerScores = indexerScoresBf16;
};

}  // namespace
}  // namespace mla::cpu

#include "target_end.h"

namespace mla::cpu {
const KernelSet& avx512Bf16Kernels() {
  static const KernelSet k = kernelSet<Bf16Kernels>("avx512-bf16");
  return k;
}
}  // namespace mla::cpu
#endif
