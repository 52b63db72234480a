// The lightning indexer's scores on the CPU (DeepSeek-V3.2), written once over the vector abstraction VO of the
// including unit; included at the end of kernels_generic.inl, whose register-blocked Q·K block (qkTile) it reuses.
//
// An item: query positions [t0, t1) of one sequence with all their indexer heads in SIMD lanes (m = (t - t0) · H + h),
// QT[d][m] = q[t][h][d]; per tile of kTile cached keys, converted to f32 once and used by every lane:
//   S[r][m] = Σ_d K[r][d] QT[d][m]                       (qkTile)
//   score[t][n + r] = scale[n + r] · Σ_h w[t][h] · max(S[r][(t - t0) · H + h], 0)
// (a key's fp8 scale applies after the ReLU: it is positive).

struct IndexerLayout {
  int64_t mg, mp, dp;
  int64_t qt, kt, s, qtRows, total;  // offsets in floats (each a multiple of 16)
};

inline IndexerLayout indexerLayout(const IndexerItem& it) {
  IndexerLayout l;
  l.mg = (it.t1 - it.t0) * it.numHeads;
  l.mp = roundUp(l.mg, VO::W);
  l.dp = roundUp(it.indexDim, 16);
  int64_t at = 0;
  auto take = [&at](int64_t n) { const int64_t o = at; at += roundUp(n, 16); return o; };
  l.qt = take(it.indexDim * l.mp);
  l.kt = take((kTile + kTilePad) * l.dp);
  l.s = take((kTile + kTilePad) * l.mp);
  l.qtRows = take(l.mp * kQtChunk);
  l.total = at;
  return l;
}

size_t indexerScratchGeneric(const IndexerItem& it) { return static_cast<size_t>(indexerLayout(it).total); }

// The scores of a tile's keys from their per-lane dot products S (row r at s + r * mp): the weighted ReLU sum over
// heads, a vector of heads at a time (it cost as much as Q·K done a head at a time); max(x, 0) as a select so that a
// NaN counts 0 on every path, as in the scalar tail.
inline void indexerWeightedSum(const IndexerItem& it, const float* s, int64_t mp, int64_t n, int64_t rows, const int64_t* slots) {
  const int64_t H = it.numHeads, hv = H / VO::W * VO::W;
  const float* w = it.weights + (it.b * it.queryLen + it.t0) * H;
  for (int64_t r = 0; r < rows; ++r) {
    const float* sr = s + r * mp;
    const float scale = it.scales ? it.scales[slots[r]] : 1.f;
    for (int64_t t = 0; t < it.t1 - it.t0; ++t) {
      VO::V sum = VO::zero();
      for (int64_t h = 0; h < hv; h += VO::W) {
        const VO::V x = VO::load(sr + t * H + h);
        sum = VO::fma(VO::selectLt(VO::zero(), x, x, VO::zero()), VO::load(w + t * H + h), sum);
      }
      alignas(64) float lanes[VO::W];
      VO::store(lanes, sum);
      float acc = 0.f;
      for (int l = 0; l < VO::W; ++l) acc += lanes[l];
      for (int64_t h = hv; h < H; ++h) {
        const float x = sr[t * H + h];
        acc += w[t * H + h] * (x > 0.f ? x : 0.f);
      }
      it.scores[t * it.scoreStride + n + r] = acc * scale;
    }
  }
}

// An item's keys a tile at a time: fn(n, rows, slots, pf) with the tile's first position, its keys' cache slots, and
// a prefetcher of the next tile's keys (fetched while this one computes: `opsPerRow` vector operations per key row).
template <class Fn>
inline void forEachIndexerTile(const IndexerItem& it, int64_t rowBytes, int64_t opsPerRow, Fn&& fn) {
  auto slotAt = [&it](int64_t pos) { return static_cast<int64_t>(it.table[pos / it.blockSize]) * it.blockSize + pos % it.blockSize; };
  int64_t slots[kTile];
  const char* next[kTile];
  for (int64_t n = it.n0; n < it.n1; n += kTile) {
    const int64_t rows = it.n1 - n < kTile ? it.n1 - n : kTile;
    for (int64_t r = 0; r < rows; ++r) slots[r] = slotAt(n + r);
    const int64_t nextRows = it.n1 - (n + kTile) < kTile ? (it.n1 - (n + kTile) > 0 ? it.n1 - (n + kTile) : 0) : kTile;
    for (int64_t r = 0; r < nextRows; ++r) next[r] = static_cast<const char*>(it.cache) + slotAt(n + kTile + r) * rowBytes;
    Prefetch pf(next, nextRows, rowBytes, roundUp(rows, 16) * opsPerRow);
    fn(n, rows, slots, pf);
  }
}

void indexerScoresGeneric(const IndexerItem& it, float* scratch) {
  const IndexerLayout L = indexerLayout(it);
  float* qt = scratch + L.qt;
  float* kt = scratch + L.kt;
  float* s = scratch + L.s;
  const int64_t H = it.numHeads, D = it.indexDim;
  const int64_t rowBytes = D * static_cast<int64_t>(elemBytes(it.cacheElem));
  packTransposed(it.elem, [&](int64_t j) { return elemAt(it.elem, it.q, ((it.b * it.queryLen + it.t0) * H + j) * D); }, L.mg, L.mp, D, 1.f, qt,
                 scratch + L.qtRows);
  for (int64_t r = 0; r < kTile + kTilePad; ++r)
    for (int64_t d = D; d < L.dp; ++d) kt[r * L.dp + d] = 0.f;

  forEachIndexerTile(it, rowBytes, D * (L.mp / VO::W), [&](int64_t n, int64_t rows, const int64_t* slots, Prefetch& pf) {
    for (int64_t r = 0; r < rows; ++r) VO::loadElems(it.cacheElem, static_cast<const char*>(it.cache) + slots[r] * rowBytes, kt + r * L.dp, D);
    qkTile<0>(kt, L.dp, rows, qt, L.mp, D, s, pf, nullptr);
    pf.rest();
    indexerWeightedSum(it, s, L.mp, n, rows, slots);
  });
}
