// The fp32 kernels of the CPU backend, written once over a small vector abstraction `VO` that each instruction-set
// unit defines before including this file (inside its own anonymous namespace, under its own target pragma):
//   using V; W (lanes); kQkRegs (accumulators of the Q·K block); kPvMr, kPvVv (rows × vectors of the P·V block);
//   zero, set1, load, store, fma(a, b, c) = a*b + c, mul, add, sub, max, selectLt(x, y, a, b) = x < y ? a : b,
//   round (to nearest integer), pow2i (2^n for integer-valued n in [-127, 127]),
//   loadElems(Elem, src, dst, n) / storeElems(Elem, src, dst, n): element conversion of a row;
//   loadBf16Split(src, dst, n): bf16 → f32 in split order (splitPos).
//
// Decode (one DecodeItem): the item's query rows are packed transposed, QT[d][m] (heads in SIMD lanes, scaled by
// softmaxScale * log2 e); the cache is walked in tiles of kTile rows, each converted once to f32 into a tile buffer
// and used for every query row of the item while it is in L1/L2:
//   S[r][m] = Σ_d tile[r][d] QT[d][m]                (register-blocked: kQkRegs accumulators, rows × lane vectors)
//   online softmax per lane, in base 2, with the causal limit per lane
//   O[m][v] = O[m][v] · α[m] + Σ_r S[r][m] tile[r][v]  (register-blocked kPvMr × kPvVv, the V slice stays in L1)
// Memory is the scratch the caller hands in, whose size depends on the item's rows and the row width only.

constexpr float kNegInf = -__builtin_inff();
constexpr float kLn2 = 0.693147180559945309f;

// 2^x for x <= 0 (scores minus their running max), exactly 0 below -125 and for -inf.
inline VO::V exp2v(VO::V x) {
  using V = VO::V;
  const V xc = VO::max(x, VO::set1(-127.f));
  const V n = VO::round(xc);
  const V f = VO::sub(xc, n);  // [-0.5, 0.5]
  // 2^f = e^(f ln 2), Taylor to degree 7: relative error < 1e-8 on [-0.5, 0.5].
  V p = VO::set1(1.5252733804059841e-05f);
  p = VO::fma(p, f, VO::set1(1.5403530393381609e-04f));
  p = VO::fma(p, f, VO::set1(1.3333558146428443e-03f));
  p = VO::fma(p, f, VO::set1(9.6181291076284772e-03f));
  p = VO::fma(p, f, VO::set1(5.5504108664821580e-02f));
  p = VO::fma(p, f, VO::set1(2.4022650695910071e-01f));
  p = VO::fma(p, f, VO::set1(6.9314718055994531e-01f));
  p = VO::fma(p, f, VO::set1(1.f));
  const V r = VO::mul(p, VO::pow2i(n));
  return VO::selectLt(x, VO::set1(-125.f), VO::zero(), r);
}

// The next tile's rows, prefetched while this tile computes, paced by the arithmetic: the blocks report their
// vector FMAs as they go and issue their share of the lines, a few at a time. Issued in bursts (a block's share at
// once), the prefetches fill the core's miss buffers and the arithmetic stalls behind them: perf put a quarter of a
// 16-head decode on a Xeon on the prefetch instruction and on the tile conversion waiting for lines still in flight.
struct Prefetch {
  const char* const* rows;  // next tile's rows (null: none)
  int64_t count, bytes;
  int64_t row = 0, offset = 0;  // the next line to fetch (counters, not a divided index: this runs per line)
  int64_t opsPerLine = 0, credit = 0;  // integers: this runs every few hundred FMAs
  Prefetch(const char* const* rows_, int64_t count_, int64_t bytes_, int64_t opsPerTile)
      : rows(count_ > 0 ? rows_ : nullptr), count(count_), bytes(bytes_) {
    const int64_t lines = count * ((bytes + 63) / 64);
    if (lines > 0) opsPerLine = opsPerTile / lines > 0 ? opsPerTile / lines : 1;
  }
  inline void issueOne() {
    if (row >= count) return;
    __builtin_prefetch(rows[row] + offset, 0, 3);  // to L1 (prefetcht0): faster than to L2 alone on a Xeon
    offset += 64;
    if (offset >= bytes) offset = 0, ++row;
  }
  // `ops` vector operations of this tile are about to run.
  inline void work(int64_t ops) {
    if (!rows) return;
    for (credit += ops; credit >= opsPerLine; credit -= opsPerLine) issueOne();
  }
  inline void rest() {
    if (rows)
      while (row < count) issueOne();
  }
};
// Steps of the inner loops between two calls of Prefetch::work (16 rows of 16 heads: ~128 cycles of FMAs).
constexpr int64_t kPrefetchStep = 16;

// A bf16 cache is converted in split order: within each group of 2W columns, the even columns then the odd ones
// (what a shift and a mask of the bf16 pairs give, with no shuffle). Q·T is packed in the same order, so the scores
// do not change; the output accumulates in that order and finishItem puts it back. splitPos(d): where column d is.
inline int64_t splitPos(int64_t d) {
  const int64_t group = d / (2 * VO::W) * (2 * VO::W), i = d - group;
  return group + (i & 1 ? VO::W : 0) + i / 2;
}

// The cache rows of a tile still to be converted to f32: the first column group of Q·K converts each (row block,
// d chunk) piece just before its block uses it. Converted in one pass before Q·K, the tile (147 KB of f32 for 64
// rows) went through L2 twice and perf put 15% of a 16-head decode on that pass; piece by piece, the stores overlap
// the FMAs and each block reads its rows from L1.
struct TileSource {
  const char* const* rows;  // this tile's cache rows (a tile read in place has no TileSource)
  int64_t count;            // valid rows; the rows after them are not converted (their scores are never used)
  Elem elem;
  float scale;              // cacheScale: an fp8 cache is dequantised here
  bool split;               // bf16 in split order (d0, d1 multiples of 2W)
  float* tile;              // the f32 tile, row stride `stride`
  int64_t stride;
  int64_t V;                // kvLoraRank: where an FP8DSMLA row's rope part starts
  inline void convert(int64_t r0, int64_t r1, int64_t d0, int64_t d1) const {
    if (r1 > count) r1 = count;
    if (elem == Elem::FP8DSMLA) {  // [d0, d1) lies in one scale tile of the latent, or in the rope part
      for (int64_t r = r0; r < r1; ++r) {
        float* dst = tile + r * stride + d0;
        if (d0 < V) {
          VO::loadElems(Elem::FP8E4M3, rows[r] + d0, dst, d1 - d0);
          float tileScale;
          __builtin_memcpy(&tileScale, rows[r] + V + 4 * (d0 / kDsMlaTileValues), 4);
          for (int64_t d = 0; d < d1 - d0; d += VO::W) VO::store(dst + d, VO::mul(VO::load(dst + d), VO::set1(tileScale)));
        } else {
          VO::loadElems(Elem::BF16, rows[r] + V + V / kDsMlaTileValues * 4 + 2 * (d0 - V), dst, d1 - d0);
        }
      }
      return;
    }
    if (split) {
      for (int64_t r = r0; r < r1; ++r)
        VO::loadBf16Split(reinterpret_cast<const uint16_t*>(rows[r]) + d0, tile + r * stride + d0, d1 - d0);
      return;
    }
    for (int64_t r = r0; r < r1; ++r) {
      float* dst = tile + r * stride + d0;
      VO::loadElems(elem, elemAt(elem, rows[r], d0), dst, d1 - d0);
      if (scale != 1.f)
        for (int64_t d = 0; d < d1 - d0; d += VO::W) VO::store(dst + d, VO::mul(VO::load(dst + d), VO::set1(scale)));
    }
  }
};

// --- decode: Q·K block -----------------------------------------------------------------------------------------
// kStride > 0: the tile's row stride is a compile-time constant, so the NR row addresses are one pointer plus
// immediate displacements (with a run-time stride the compiler keeps NR pointers and, out of registers, reloads them
// from the stack before every FMA, halving the rate). 0: the stride is tileStride.
// Columns [d0, d1) of the product; adds to s unless d0 == 0.
template <int NR, int MV, int64_t kStride>
inline void qkBlock(const float* tile, int64_t tileStride, const float* qt, int64_t mp, int64_t d0, int64_t d1, float* s, Prefetch& pf) {
  using V = VO::V;
  const int64_t stride = kStride > 0 ? kStride : tileStride;
  V acc[NR][MV];
  MLA_UNROLL
  for (int r = 0; r < NR; ++r)
    MLA_UNROLL
    for (int v = 0; v < MV; ++v) acc[r][v] = d0 == 0 ? VO::zero() : VO::load(s + r * mp + v * VO::W);
  for (int64_t d = d0; d < d1;) {
    const int64_t dEnd = d1 - d > kPrefetchStep ? d + kPrefetchStep : d1;
    pf.work(NR * MV * (dEnd - d));
    for (; d < dEnd; ++d) {
      V q[MV];
      MLA_UNROLL
      for (int v = 0; v < MV; ++v) q[v] = VO::load(qt + d * mp + v * VO::W);
      MLA_UNROLL
      for (int r = 0; r < NR; ++r) {
        const V k = VO::set1(tile[r * stride + d]);
        MLA_UNROLL
        for (int v = 0; v < MV; ++v) acc[r][v] = VO::fma(k, q[v], acc[r][v]);
      }
    }
  }
  MLA_UNROLL
  for (int r = 0; r < NR; ++r)
    MLA_UNROLL
    for (int v = 0; v < MV; ++v) VO::store(s + r * mp + v * VO::W, acc[r][v]);
}

// The cache slot of an item's row `pos`: through the block table, or the sparse decode's slot list.
inline int64_t slotOf(const DecodeItem& it, int64_t pos) {
  return it.slots ? it.slots[pos] : static_cast<int64_t>(it.table[pos / it.blockSize]) * it.blockSize + pos % it.blockSize;
}

// Fills `rows` with the cache rows [n, n + count) of an item.
inline void rowPointers(const DecodeItem& it, int64_t n, int64_t count, const char** rows) {
  for (int64_t r = 0; r < count; ++r) rows[r] = static_cast<const char*>(it.cache) + slotOf(it, n + r) * it.rowBytes;
}

// Where query row m's log-sum-exp goes: [batch][H][queryLen], or [batch * queryLen][H] (a sparse prefill's).
inline float* lseAt(const DecodeItem& it, int64_t m) {
  const int64_t t = m / it.numHeads, h = m % it.numHeads;
  return it.lse + (it.lseTokenMajor ? (it.b * it.queryLen + t) * it.numHeads + h : (it.b * it.numHeads + h) * it.queryLen + t);
}

constexpr int floorPow2(int x) { return x >= 16 ? 16 : x >= 8 ? 8 : x >= 4 ? 4 : x >= 2 ? 2 : 1; }

template <int MV, int64_t kStride>
inline void qkColumns(const float* tile, int64_t tileStride, int64_t rows, const float* qt, int64_t mp, int64_t D, float* s, Prefetch& pf,
                      const TileSource* src) {
  // Rows per block: the accumulators allow kQkRegs / MV, rounded down to a power of two so that blocks tile the
  // 64-row tile exactly (24 rows would compute 72, 12% of the Q·K work on padding).
  constexpr int NR = floorPow2(VO::kQkRegs / MV);
  // The reduction over d in chunks, each chunk's QT slice reused from L1 by every row block (the whole QT and a row
  // block do not fit in L1 together: 576 × 16 heads × 4 B is 36 KB already).
  constexpr int64_t kDChunk = 128;
  for (int64_t d0 = 0; d0 < D; d0 += kDChunk) {
    const int64_t d1 = D - d0 < kDChunk ? D : d0 + kDChunk;
    for (int64_t r = 0; r < rows; r += NR) {
      if (src) src->convert(r, r + NR, d0, d1);
      qkBlock<NR, MV, kStride>(tile + r * tileStride, tileStride, qt, mp, d0, d1, s + r * mp, pf);
    }
  }
}

// `src`: converts the tile as the first column group goes (null when the tile is read in place).
template <int64_t kStride>
inline void qkTile(const float* tile, int64_t tileStride, int64_t rows, const float* qt, int64_t mp, int64_t D, float* s, Prefetch& pf,
                   const TileSource* src) {
  const int64_t nv = mp / VO::W;
  int64_t v = 0;
  for (; v + 3 <= nv; v += 3, src = nullptr) qkColumns<3, kStride>(tile, tileStride, rows, qt + v * VO::W, mp, D, s + v * VO::W, pf, src);
  if (nv - v == 2) qkColumns<2, kStride>(tile, tileStride, rows, qt + v * VO::W, mp, D, s + v * VO::W, pf, src);
  else if (nv - v == 1) qkColumns<1, kStride>(tile, tileStride, rows, qt + v * VO::W, mp, D, s + v * VO::W, pf, src);
}

constexpr int64_t kFastStride = 576;  // kvLoraRank 512 + ropeDim 64, the DeepSeek shape

// --- decode: P·V block -----------------------------------------------------------------------------------------
template <int MR, int VV>
inline void pvBlock(const float* s, int64_t mp, const float* tile, int64_t tileStride, int64_t rows, float* o, int64_t oStride,
                    const float* alpha, Prefetch& pf) {
  using V = VO::V;
  V acc[MR][VV];
  MLA_UNROLL
  for (int i = 0; i < MR; ++i) {
    const V a = VO::set1(alpha[i]);
    MLA_UNROLL
    for (int k = 0; k < VV; ++k) acc[i][k] = VO::mul(VO::load(o + i * oStride + k * VO::W), a);
  }
  for (int64_t r = 0; r < rows;) {
    const int64_t rEnd = rows - r > kPrefetchStep ? r + kPrefetchStep : rows;
    pf.work(MR * VV * (rEnd - r));
    for (; r < rEnd; ++r) {
      V x[VV];
      MLA_UNROLL
      for (int k = 0; k < VV; ++k) x[k] = VO::load(tile + r * tileStride + k * VO::W);
      MLA_UNROLL
      for (int i = 0; i < MR; ++i) {
        const V p = VO::set1(s[r * mp + i]);
        MLA_UNROLL
        for (int k = 0; k < VV; ++k) acc[i][k] = VO::fma(p, x[k], acc[i][k]);
      }
    }
  }
  MLA_UNROLL
  for (int i = 0; i < MR; ++i)
    MLA_UNROLL
    for (int k = 0; k < VV; ++k) VO::store(o + i * oStride + k * VO::W, acc[i][k]);
}

template <int VV>
inline void pvRows(const float* s, int64_t mp, int64_t mg, const float* tile, int64_t tileStride, int64_t rows, float* o, int64_t oStride,
                   const float* alpha, Prefetch& pf) {
  constexpr int MR = VO::kPvMr;
  int64_t m = 0;
  for (; m + MR <= mg; m += MR) pvBlock<MR, VV>(s + m, mp, tile, tileStride, rows, o + m * oStride, oStride, alpha + m, pf);
  // The rest in blocks of 4 and 2 before single rows: a 1-row block does 1 FMA per load and is load-bound.
  if (MR > 4 && m + 4 <= mg) { pvBlock<4, VV>(s + m, mp, tile, tileStride, rows, o + m * oStride, oStride, alpha + m, pf); m += 4; }
  if (MR > 2 && m + 2 <= mg) { pvBlock<2, VV>(s + m, mp, tile, tileStride, rows, o + m * oStride, oStride, alpha + m, pf); m += 2; }
  for (; m < mg; ++m) pvBlock<1, VV>(s + m, mp, tile, tileStride, rows, o + m * oStride, oStride, alpha + m, pf);
}

inline void pvTile(const float* s, int64_t mp, int64_t mg, const float* tile, int64_t tileStride, int64_t rows, float* o, int64_t vp,
                   const float* alpha, Prefetch& pf) {
  constexpr int VV = VO::kPvVv;
  const int64_t nv = vp / VO::W;
  int64_t v = 0;
  for (; v + VV <= nv; v += VV) pvRows<VV>(s, mp, mg, tile + v * VO::W, tileStride, rows, o + v * VO::W, vp, alpha, pf);
  for (; v < nv; ++v) pvRows<1>(s, mp, mg, tile + v * VO::W, tileStride, rows, o + v * VO::W, vp, alpha, pf);
}

// Columns of q converted per pass when QT is built (a multiple of 2W for every VO, so split groups stay whole).
constexpr int64_t kQtChunk = 32;

// --- decode: one item --------------------------------------------------------------------------------------------
struct DecodeLayout {
  int64_t mg, mp, dp, vp;
  int64_t qt, tile, s, o, mrun, lrun, alpha, limit, row, qtRows, total;  // offsets in floats (each a multiple of 16)
};

inline DecodeLayout decodeLayout(const DecodeItem& it) {
  DecodeLayout l;
  l.mg = it.m1 - it.m0;
  l.mp = roundUp(l.mg, VO::W);
  l.dp = roundUp(it.D, 16);
  l.vp = roundUp(it.V, VO::W);
  int64_t at = 0;
  auto take = [&at](int64_t n) { const int64_t o = at; at += roundUp(n, 16); return o; };
  l.qt = take(it.D * l.mp);
  l.tile = take((kTile + kTilePad) * l.dp);
  l.s = take((kTile + kTilePad) * l.mp);
  l.o = take(l.mg * l.vp);
  l.mrun = take(l.mp);
  l.lrun = take(l.mp);
  l.alpha = take(l.mp);
  l.limit = take(l.mp);
  l.row = take(l.vp);
  l.qtRows = take(l.mp * kQtChunk);
  l.total = at;
  return l;
}

size_t decodeScratchGeneric(const DecodeItem& it) { return static_cast<size_t>(decodeLayout(it).total); }

// Writes the item's result: normalised rows into out/lse when it covers the sequence, partial sums otherwise.
// `split`: o's columns are in split order (splitPos); `natural` (vp floats) receives each row in column order.
inline void finishItem(const DecodeItem& it, const float* o, int64_t vp, const float* mrun, const float* lrun, bool split, float* natural) {
  const int64_t mg = it.m1 - it.m0;
  const bool whole = it.part < 0;
  for (int64_t j = 0; j < mg; ++j) {
    const float* row = o + j * vp;
    if (split) {  // a group's first W values are its even columns, the next W its odd ones
      for (int64_t g = 0; g < it.V; g += 2 * VO::W)
        for (int64_t k = 0; k < VO::W; ++k) natural[g + 2 * k] = row[g + k], natural[g + 2 * k + 1] = row[g + VO::W + k];
      row = natural;
    }
    if (!whole) {
      for (int64_t v = 0; v < it.V; ++v) it.oPart[j * it.V + v] = row[v];
      it.maxPart[j] = mrun[j];
      it.sumPart[j] = lrun[j];
      continue;
    }
    const int64_t m = it.m0 + j;
    void* out = elemAt(it.elem, it.out, (it.b * it.queryLen * it.numHeads + m) * it.V);
    float* lse = lseAt(it, m);
    if (lrun[j] > 0.f) {
      const float inv = 1.f / lrun[j];
      float buf[64];
      for (int64_t v0 = 0; v0 < it.V; v0 += 64) {
        const int64_t n = it.V - v0 < 64 ? it.V - v0 : 64;
        for (int64_t v = 0; v < n; ++v) buf[v] = row[v0 + v] * inv;
        VO::storeElems(it.elem, buf, elemAt(it.elem, out, v0), n);
      }
      *lse = (mrun[j] + __builtin_log2f(lrun[j])) * kLn2;
    } else {
      for (int64_t v = 0; v < it.V; ++v) sStore(it.elem, out, v, 0.f);
      *lse = kNegInf;
    }
  }
}

void decodeGeneric(const DecodeItem& it, float* scratch) {
  using V = VO::V;
  const DecodeLayout L = decodeLayout(it);
  float* qt = scratch + L.qt;
  float* tile = scratch + L.tile;
  float* s = scratch + L.s;
  float* o = scratch + L.o;
  float* mrun = scratch + L.mrun;
  float* lrun = scratch + L.lrun;
  float* alpha = scratch + L.alpha;
  float* limit = scratch + L.limit;
  const int64_t D = it.D, M = it.numHeads * it.queryLen;
  const bool split = it.cacheElem == Elem::BF16 && D % (2 * VO::W) == 0 && it.V % (2 * VO::W) == 0;

  // QT[d][j] = q[m0 + j][d] · scale · log2 e (d in split order when the cache is); padded lanes are zero. By chunks
  // of kQtChunk columns, every row's chunk converted into L1 first: row by row, the stores went down a column of QT
  // (one cache line each), a quarter of a short 128-head decode.
  {
    float* rowsF32 = scratch + L.qtRows;  // [mp][kQtChunk]: rows [0, mg) refilled per chunk, the rest zero
    for (int64_t i = L.mg * kQtChunk; i < L.mp * kQtChunk; ++i) rowsF32[i] = 0.f;
    const V scale = VO::set1(it.scaleLog2);
    for (int64_t d0 = 0; d0 < D; d0 += kQtChunk) {
      const int64_t n = D - d0 < kQtChunk ? D - d0 : kQtChunk;
      for (int64_t j = 0; j < L.mg; ++j)
        VO::loadElems(it.elem, elemAt(it.elem, it.q, (it.b * M + it.m0 + j) * D + d0), rowsF32 + j * kQtChunk, n);
      // A column of the chunk per QT row, W lanes at a time (the rows after mg are zero). Scalar, this loop took
      // about 8% of a 16-head, 512-row decode.
      for (int64_t k = 0; k < n; ++k) {
        float* dst = qt + (split ? splitPos(d0 + k) : d0 + k) * L.mp;
        for (int64_t j = 0; j < L.mp; j += VO::W) VO::store(dst + j, VO::mul(VO::loadStrided(rowsF32 + j * kQtChunk + k, kQtChunk), scale));
      }
    }
  }
  int64_t minLimit = it.n1;
  for (int64_t j = 0; j < L.mp; ++j) {
    int64_t lim = it.seqLen;
    if (j < L.mg && it.causal) {
      const int64_t t = (it.m0 + j) / it.numHeads;
      lim = it.seqLen - it.queryLen + 1 + t;
      if (lim < 0) lim = 0;
    }
    if (j < L.mg && lim < minLimit) minLimit = lim;
    limit[j] = static_cast<float>(lim);  // absolute; made relative per tile below
    mrun[j] = kNegInf;
    lrun[j] = 0.f;
  }
  for (int64_t i = 0; i < L.mg * L.vp; ++i) o[i] = 0.f;
  // Zero the tile's padding columns once (V vectors may read them when kvLoraRank is not a multiple of the lanes).
  for (int64_t r = 0; r < kTile + kTilePad; ++r)
    for (int64_t d = D; d < L.dp; ++d) tile[r * L.dp + d] = 0.f;

  const char* cur[kTile];
  const char* next[kTile];
  const int64_t rowBytes = it.rowBytes;
  if (it.n0 < it.n1) rowPointers(it, it.n0, it.n1 - it.n0 < kTile ? it.n1 - it.n0 : kTile, cur);
  for (int64_t n = it.n0; n < it.n1; n += kTile) {
    const int64_t rows = it.n1 - n < kTile ? it.n1 - n : kTile;
    const int64_t nextRows = it.n1 - (n + kTile) < kTile ? (it.n1 - (n + kTile) > 0 ? it.n1 - (n + kTile) : 0) : kTile;
    rowPointers(it, n + kTile, nextRows, next);
    // The tile's vector FMAs: Q·K over the padded row blocks, P·V.
    Prefetch pf(next, nextRows, rowBytes, roundUp(rows, 16) * D * (L.mp / VO::W) + rows * L.mg * (L.vp / VO::W));
    // Rows at or beyond the item's smallest causal limit need the mask.
    const bool mask = it.causal && n + rows > minLimit;
    // An f32 tile whose rows lie contiguous in the cache (one block, or consecutive blocks) is read in place:
    // only for whole tiles, since the row blocks of Q·K cover kTile rows exactly and read no further.
    bool inPlace = it.cacheElem == Elem::F32 && L.dp == D && rows == kTile;
    for (int64_t r = 1; inPlace && r < rows; ++r) inPlace = cur[r] == cur[0] + r * rowBytes;
    const float* t = inPlace ? reinterpret_cast<const float*>(cur[0]) : tile;
    const TileSource src{cur, rows, it.cacheElem, it.cacheScale, split, tile, L.dp, it.V};
    if (L.dp == kFastStride) qkTile<kFastStride>(t, L.dp, rows, qt, L.mp, D, s, pf, inPlace ? nullptr : &src);
    else qkTile<0>(t, L.dp, rows, qt, L.mp, D, s, pf, inPlace ? nullptr : &src);
    for (int64_t r = 0; r < nextRows; ++r) cur[r] = next[r];

    for (int64_t j = 0; j < L.mp; j += VO::W) {
      const V mOld = VO::load(mrun + j);
      V tmax = VO::set1(kNegInf);
      if (mask) {
        // limit relative to this tile, clamped so the float compare is exact
        float rel[VO::W];
        MLA_UNROLL
        for (int l = 0; l < VO::W; ++l) {
          float x = limit[j + l] - static_cast<float>(n);
          rel[l] = x < -1.f ? -1.f : (x > static_cast<float>(kTile + 1) ? static_cast<float>(kTile + 1) : x);
        }
        const V lim = VO::load(rel);
        const V ninf = VO::set1(kNegInf);
        for (int64_t r = 0; r < rows; ++r) {
          V x = VO::selectLt(VO::set1(static_cast<float>(r)), lim, VO::load(s + r * L.mp + j), ninf);
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
    pvTile(s, L.mp, L.mg, t, L.dp, rows, o, L.vp, alpha, pf);
    pf.rest();
  }
  finishItem(it, o, L.vp, mrun, lrun, split, scratch + L.row);
}

// --- small helpers for absorb / unabsorb / append / the limits loops ---------------------------------------------
void axpyGeneric(float a, const float* x, float* acc, int64_t n) {
  const VO::V av = VO::set1(a);
  int64_t i = 0;
  for (; i + VO::W <= n; i += VO::W) VO::store(acc + i, VO::fma(av, VO::load(x + i), VO::load(acc + i)));
  for (; i < n; ++i) acc[i] += a * x[i];
}

float dotGeneric(const float* a, const float* b, int64_t n) {
  VO::V s0 = VO::zero(), s1 = VO::zero(), s2 = VO::zero(), s3 = VO::zero();
  int64_t i = 0;
  for (; i + 4 * VO::W <= n; i += 4 * VO::W) {
    s0 = VO::fma(VO::load(a + i), VO::load(b + i), s0);
    s1 = VO::fma(VO::load(a + i + VO::W), VO::load(b + i + VO::W), s1);
    s2 = VO::fma(VO::load(a + i + 2 * VO::W), VO::load(b + i + 2 * VO::W), s2);
    s3 = VO::fma(VO::load(a + i + 3 * VO::W), VO::load(b + i + 3 * VO::W), s3);
  }
  for (; i + VO::W <= n; i += VO::W) s0 = VO::fma(VO::load(a + i), VO::load(b + i), s0);
  float lanes[VO::W];
  VO::store(lanes, VO::add(VO::add(s0, s1), VO::add(s2, s3)));
  float s = 0.f;
  MLA_UNROLL
  for (int l = 0; l < VO::W; ++l) s += lanes[l];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Interleaved RoPE by the path's VO where it has a kernel of its own (ropePairs: f32, bf16 or f16, half a multiple of 8).
template <class T, class = void>
struct HasRopePairs { static constexpr bool value = false; };
template <class T>
struct HasRopePairs<T, decltype(void(T::kRopePairs))> { static constexpr bool value = T::kRopePairs; };
template <class T>
inline bool ropePairsOf(Elem e, bool interleaved, const void* src, const float* cosRow, const float* sinRow, void* dst, int64_t half) {
  if constexpr (HasRopePairs<T>::value) {
    if (interleaved && half % 8 == 0 && (e == Elem::F32 || e == Elem::BF16 || e == Elem::F16)) {
      T::ropePairs(e, src, cosRow, sinRow, dst, half);
      return true;
    }
  }
  return false;
}

void ropeGeneric(Elem e, bool interleaved, const void* src, const float* cosRow, const float* sinRow, void* dst, int64_t ropeDim) {
  const int64_t half = ropeDim / 2;
  if (ropePairsOf<VO>(e, interleaved, src, cosRow, sinRow, dst, half)) return;
  // In place in one buffer per chunk, so the compiler vectorises the rotation (no gather / scatter passes).
  float x[128], y[64];
  for (int64_t j0 = 0; j0 < half; j0 += 64) {
    const int64_t n = half - j0 < 64 ? half - j0 : 64;
    const float* c = cosRow + j0;
    const float* sn = sinRow + j0;
    if (interleaved) {
      VO::loadElems(e, elemAt(e, src, 2 * j0), x, 2 * n);
      for (int64_t j = 0; j < n; ++j) {
        const float a = x[2 * j], b = x[2 * j + 1];
        x[2 * j] = a * c[j] - b * sn[j];
        x[2 * j + 1] = b * c[j] + a * sn[j];
      }
      VO::storeElems(e, x, elemAt(e, dst, 2 * j0), 2 * n);
    } else {
      VO::loadElems(e, elemAt(e, src, j0), x, n);
      VO::loadElems(e, elemAt(e, src, half + j0), y, n);
      for (int64_t j = 0; j < n; ++j) {
        const float a = x[j], b = y[j];
        x[j] = a * c[j] - b * sn[j];
        y[j] = b * c[j] + a * sn[j];
      }
      VO::storeElems(e, x, elemAt(e, dst, j0), n);
      VO::storeElems(e, y, elemAt(e, dst, half + j0), n);
    }
  }
}

// The run loop of append where the path's VO has one (appendRunOf: kAppendRun), else none (the backend's own path).
template <class T, class = void>
struct HasAppendRun { static constexpr bool value = false; };
template <class T>
struct HasAppendRun<T, decltype(void(T::kAppendRun))> { static constexpr bool value = T::kAppendRun; };
template <class T>
bool appendRunFitsOf(Elem e, bool rotate, int64_t kvBytes, int64_t ropeDim) {
  if constexpr (HasAppendRun<T>::value) return T::appendRunFits(e, rotate, kvBytes, ropeDim);
  else return false;
}
template <class T>
void appendRunOf(const AppendRun& run) {
  if constexpr (HasAppendRun<T>::value) T::appendRun(run);
  else (void)run;
}

double fmaLoopGeneric(int64_t iters) {
  using V = VO::V;
  constexpr int kAcc = VO::kQkRegs;  // independent accumulators, enough to cover the FMA latency
  V acc[kAcc];
  MLA_UNROLL
  for (int i = 0; i < kAcc; ++i) acc[i] = VO::set1(static_cast<float>(i) * 1e-3f);
  const V a = VO::set1(0.999999f), b = VO::set1(1e-7f);
  for (int64_t it = 0; it < iters; ++it)
    MLA_UNROLL
    for (int i = 0; i < kAcc; ++i) acc[i] = VO::fma(acc[i], a, b);
  V s = VO::zero();
  MLA_UNROLL
  for (int i = 0; i < kAcc; ++i) s = VO::add(s, acc[i]);
  float lanes[VO::W];
  VO::store(lanes, s);
  volatile float sink = lanes[0];
  (void)sink;
  return 2.0 * VO::W * kAcc * static_cast<double>(iters);
}

double noBf16DotLoop(int64_t) { return 0.0; }

#include "prefill_generic.inl"
#include "indexer_generic.inl"

// The unit's functions, in the order of KernelSet's fields (kernelSet() in kernels.h reads them): the generic ones
// above over the unit's VO; a unit with its own overrides some in a struct derived from this one.
struct GenericKernels {
  static constexpr auto decodeScratch = decodeScratchGeneric;
  static constexpr auto decode = decodeGeneric;
  static constexpr auto load = VO::loadElems;
  static constexpr auto store = VO::storeElems;
  static constexpr auto axpy = axpyGeneric;
  static constexpr auto dot = dotGeneric;
  static constexpr auto rope = ropeGeneric;
  static constexpr auto streamCopy = VO::streamCopy;
  static constexpr auto streamFence = VO::streamFence;
  static constexpr auto appendRunFits = appendRunFitsOf<VO>;
  static constexpr auto appendRun = appendRunOf<VO>;
  static constexpr auto fmaLoop = fmaLoopGeneric;
  static constexpr auto bf16DotLoop = noBf16DotLoop;
  static constexpr auto prefillScratch = prefillScratchGeneric;
  static constexpr auto prefill = prefillGeneric;
  static constexpr auto gemmScratch = gemmScratchGeneric;
  static constexpr auto gemmNT = gemmNTGeneric;
  static constexpr auto indexerScratch = indexerScratchGeneric;
  static constexpr auto indexerScores = indexerScoresGeneric;
};
