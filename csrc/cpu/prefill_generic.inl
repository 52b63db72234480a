// Prefill kernels of the CPU backend (multi-head attention over packed ragged batches, and the GEMM of the
// up-projection), written once over the vector abstraction VO of the including unit; included at the end of
// kernels_generic.inl, whose register-blocked Q·K block (qkTile) and P·V block (pvTile) they reuse.
//
// An item (head h of one sequence, up to kPrefillRows of its queries): QT[d][j] = q[i0 + j][h][d] · scale · log2 e,
// queries in SIMD lanes; per tile of kTile keys, the K tile [kNope[., h], kPe] and the V tile v[., h] are converted to
// f32 once and used by every query of the item:
//   S[r][j] = Σ_d K[r][d] QT[d][j]                       (qkTile: rows × lane vectors of accumulators)
//   online softmax per lane, in base 2, each lane with its own causal limit; tiles past the item's last query's
//   limit are never visited (causal tiles skipped), and only tiles crossing the diagonal are masked
//   O[j][c] = O[j][c] · α[j] + Σ_r P[r][j] V[r][c]          (pvTile)
// C = A Bᵀ (upProjectKv: A the latent rows, B the per-head weights as rows): the same Q·K block with A's rows as the
// broadcast operand and B transposed into lanes.

struct PrefillLayout {
  int64_t mg, mp, D, dp, vp;
  int64_t qt, kt, vt, s, o, mrun, lrun, alpha, limit, qtRows, total;  // offsets in floats (each a multiple of 16)
};

inline PrefillLayout prefillLayout(const PrefillItem& it) {
  PrefillLayout l;
  l.mg = it.i1 - it.i0;
  l.mp = roundUp(l.mg, VO::W);
  l.D = it.nopeDim + it.ropeDim;
  l.dp = roundUp(l.D, 16);
  l.vp = roundUp(it.vHeadDim, VO::W);
  int64_t at = 0;
  auto take = [&at](int64_t n) { const int64_t o = at; at += roundUp(n, 16); return o; };
  l.qt = take(l.D * l.mp);
  l.kt = take((kTile + kTilePad) * l.dp);  // Q·K row blocks may run past the valid rows
  l.vt = take(kTile * l.vp);
  l.s = take((kTile + kTilePad) * l.mp);
  l.o = take(l.mg * l.vp);
  l.mrun = take(l.mp);
  l.lrun = take(l.mp);
  l.alpha = take(l.mp);
  l.limit = take(l.mp);
  l.qtRows = take(l.mp * kQtChunk);
  l.total = at;
  return l;
}

size_t prefillScratchGeneric(const PrefillItem& it) { return static_cast<size_t>(prefillLayout(it).total); }

// dst[k][j] = rows[j][k] · scale for k < n, j < mp (rows [mg, mp) zero): the transposed pack of QT and of B, by chunks
// of kQtChunk columns converted into L1 first (`chunk`, mp × kQtChunk floats). rowAt(j) is row j's first element.
template <class RowAt>
inline void packTransposed(Elem e, RowAt rowAt, int64_t mg, int64_t mp, int64_t n, float scale, float* dst, float* chunk) {
  for (int64_t i = mg * kQtChunk; i < mp * kQtChunk; ++i) chunk[i] = 0.f;
  const VO::V sc = VO::set1(scale);
  for (int64_t d0 = 0; d0 < n; d0 += kQtChunk) {
    const int64_t w = n - d0 < kQtChunk ? n - d0 : kQtChunk;
    for (int64_t j = 0; j < mg; ++j) VO::loadElems(e, elemAt(e, rowAt(j), d0), chunk + j * kQtChunk, w);
    for (int64_t k = 0; k < w; ++k) {
      float* out = dst + (d0 + k) * mp;
      for (int64_t j = 0; j < mp; j += VO::W) VO::store(out + j, VO::mul(VO::loadStrided(chunk + j * kQtChunk + k, kQtChunk), sc));
    }
  }
}

constexpr int64_t kPrefillFastStride = 192;  // nopeDim 128 + ropeDim 64, DeepSeek's query-key width

void prefillGeneric(const PrefillItem& it, float* scratch) {
  using V = VO::V;
  const PrefillLayout L = prefillLayout(it);
  float* qt = scratch + L.qt;
  float* kt = scratch + L.kt;
  float* vt = scratch + L.vt;
  float* s = scratch + L.s;
  float* o = scratch + L.o;
  float* mrun = scratch + L.mrun;
  float* lrun = scratch + L.lrun;
  float* alpha = scratch + L.alpha;
  float* limit = scratch + L.limit;
  const int64_t H = it.numHeads, D = L.D, nope = it.nopeDim, rope = it.ropeDim, vDim = it.vHeadDim;

  packTransposed(it.elem, [&](int64_t j) { return elemAt(it.elem, it.q, ((it.qBegin + it.i0 + j) * H + it.h) * D); }, L.mg, L.mp, D, it.scaleLog2, qt,
                 scratch + L.qtRows);
  // Each lane's number of visible keys (padded lanes see every key: their zero queries score 0, never used).
  int64_t minLimit = it.kvLen, maxLimit = 0;
  for (int64_t j = 0; j < L.mp; ++j) {
    int64_t lim = it.kvLen;
    if (j < L.mg && it.causal) lim = it.kvLen - it.qLen + 1 + it.i0 + j;  // >= 1: validation wants kvLen >= qLen
    if (j < L.mg) {
      minLimit = lim < minLimit ? lim : minLimit;
      maxLimit = lim > maxLimit ? lim : maxLimit;
    }
    limit[j] = static_cast<float>(lim);
    mrun[j] = kNegInf;
    lrun[j] = 0.f;
  }
  for (int64_t i = 0; i < L.mg * L.vp; ++i) o[i] = 0.f;
  for (int64_t r = 0; r < kTile + kTilePad; ++r)
    for (int64_t d = D; d < L.dp; ++d) kt[r * L.dp + d] = 0.f;
  for (int64_t r = 0; r < kTile; ++r)
    for (int64_t c = vDim; c < L.vp; ++c) vt[r * L.vp + c] = 0.f;

  Prefetch none(nullptr, 0, 0, 0);
  for (int64_t n = 0; n < maxLimit; n += kTile) {
    const int64_t rows = maxLimit - n < kTile ? maxLimit - n : kTile;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t key = it.kvBegin + n + r;
      VO::loadElems(it.elem, elemAt(it.elem, it.kNope, (key * H + it.h) * nope), kt + r * L.dp, nope);
      VO::loadElems(it.elem, elemAt(it.elem, it.kPe, key * rope), kt + r * L.dp + nope, rope);
      VO::loadElems(it.elem, elemAt(it.elem, it.v, (key * H + it.h) * vDim), vt + r * L.vp, vDim);
    }
    if (L.dp == kPrefillFastStride) qkTile<kPrefillFastStride>(kt, L.dp, rows, qt, L.mp, D, s, none, nullptr);
    else qkTile<0>(kt, L.dp, rows, qt, L.mp, D, s, none, nullptr);

    const bool mask = it.causal && n + rows > minLimit;  // only tiles crossing some query's limit
    for (int64_t j = 0; j < L.mp; j += VO::W) {
      const V mOld = VO::load(mrun + j);
      V tmax = VO::set1(kNegInf);
      if (mask) {
        float rel[VO::W];  // the limit relative to this tile, clamped so the float compare is exact
        MLA_UNROLL
        for (int l = 0; l < VO::W; ++l) {
          const float x = limit[j + l] - static_cast<float>(n);
          rel[l] = x < -1.f ? -1.f : (x > static_cast<float>(kTile + 1) ? static_cast<float>(kTile + 1) : x);
        }
        const V lim = VO::load(rel);
        const V ninf = VO::set1(kNegInf);
        for (int64_t r = 0; r < rows; ++r) {
          const V x = VO::selectLt(VO::set1(static_cast<float>(r)), lim, VO::load(s + r * L.mp + j), ninf);
          VO::store(s + r * L.mp + j, x);
          tmax = VO::max(tmax, x);
        }
      } else {
        for (int64_t r = 0; r < rows; ++r) tmax = VO::max(tmax, VO::load(s + r * L.mp + j));
      }
      const V mNew = VO::max(mOld, tmax);
      const V safe = VO::selectLt(mNew, VO::set1(-1e30f), VO::zero(), mNew);
      const V a = exp2v(VO::sub(mOld, safe));
      V sum = VO::zero();
      for (int64_t r = 0; r < rows; ++r) {
        const V p = exp2v(VO::sub(VO::load(s + r * L.mp + j), safe));
        VO::store(s + r * L.mp + j, p);
        sum = VO::add(sum, p);
      }
      VO::store(lrun + j, VO::fma(VO::load(lrun + j), a, sum));
      VO::store(mrun + j, mNew);
      VO::store(alpha + j, a);
    }
    pvTile(s, L.mp, L.mg, vt, L.vp, rows, o, L.vp, alpha, none);
  }

  for (int64_t j = 0; j < L.mg; ++j) {
    const int64_t row = it.qBegin + it.i0 + j;
    void* out = elemAt(it.elem, it.out, (row * H + it.h) * vDim);
    float* lse = it.lse + row * H + it.h;
    const float* src = o + j * L.vp;
    if (lrun[j] > 0.f) {
      const float inv = 1.f / lrun[j];
      float buf[64];
      for (int64_t c0 = 0; c0 < vDim; c0 += 64) {
        const int64_t w = vDim - c0 < 64 ? vDim - c0 : 64;
        for (int64_t c = 0; c < w; ++c) buf[c] = src[c0 + c] * inv;
        VO::storeElems(it.elem, buf, elemAt(it.elem, out, c0), w);
      }
      *lse = (mrun[j] + __builtin_log2f(lrun[j])) * kLn2;
    } else {
      for (int64_t c = 0; c < vDim; ++c) sStore(it.elem, out, c, 0.f);
      *lse = kNegInf;
    }
  }
}

// --- C = A Bᵀ by blocks -------------------------------------------------------------------------------------------
struct GemmLayout {
  int64_t mrows, ncols, np;
  int64_t bt, a, s, chunk, total;
};

inline GemmLayout gemmLayout(const GemmBlock& g) {
  GemmLayout l;
  l.mrows = g.m1 - g.m0;
  l.ncols = g.n1 - g.n0;
  l.np = roundUp(l.ncols, VO::W);
  int64_t at = 0;
  auto take = [&at](int64_t n) { const int64_t o = at; at += roundUp(n, 16); return o; };
  l.bt = take(g.K * l.np);
  l.a = take((l.mrows + 16) * g.K);  // Q·K row blocks may run up to 15 rows past the block's
  l.s = take((l.mrows + 16) * l.np);
  l.chunk = take(l.np * kQtChunk);
  l.total = at;
  return l;
}

size_t gemmScratchGeneric(const GemmBlock& g) { return static_cast<size_t>(gemmLayout(g).total); }

constexpr int64_t kGemmFastK = 512;  // kvLoraRank of DeepSeek-V2/V3

void gemmNTGeneric(const GemmBlock& g, float* scratch) {
  const GemmLayout L = gemmLayout(g);
  float* bt = scratch + L.bt;
  float* a = scratch + L.a;
  float* s = scratch + L.s;
  packTransposed(g.elem, [&](int64_t j) { return elemAt(g.elem, g.b, (g.n0 + j) * g.K); }, L.ncols, L.np, g.K, 1.f, bt, scratch + L.chunk);
  for (int64_t m = 0; m < L.mrows; ++m) VO::loadElems(g.elem, elemAt(g.elem, g.a, (g.m0 + m) * g.K), a + m * g.K, g.K);
  Prefetch none(nullptr, 0, 0, 0);
  if (g.K == kGemmFastK) qkTile<kGemmFastK>(a, g.K, L.mrows, bt, L.np, g.K, s, none, nullptr);
  else qkTile<0>(a, g.K, L.mrows, bt, L.np, g.K, s, none, nullptr);
  for (int64_t m = 0; m < L.mrows; ++m) VO::storeElems(g.elem, s + m * L.np, elemAt(g.elem, g.c, (g.m0 + m) * g.ldc + g.n0), L.ncols);
}
