#include "plan.h"

#include <algorithm>
#include <functional>
#include <queue>
#include <vector>

namespace mla::cuda {
namespace {

// Rows per split when fixed: asked for, or batch-invariant; 0 when the planner fills the SMs.
int fixedSplitRows(const DecodePlanOptions& options) {
  if (options.splitRows > 0) return options.splitRows;
  return options.batchInvariant ? kInvariantSplitRows : 0;
}

int64_t tilesOf(int64_t rows, int blockN) { return (rows + blockN - 1) / blockN; }

// The planner's cost of a CTA, in tiles: its tiles, one more for the pipeline fill and its query rows, and for a split
// its partial result and share of the combine, as FlashMLA's scheduler counts them (5 blocks of 64 rows per split).
constexpr int64_t kSplitOverheadRows = 320;
// A split of fewer tiles would cost more in partial results and combine work than it saves.
constexpr int64_t kMinSplitTiles = 2;
// Candidate splits make up to this many CTAs per SM (more waves of shorter CTAs can balance a batch whose CTAs are a
// little more, or fewer, than the SMs).
constexpr int64_t kMaxCtasPerSm = 4;

// How long CTAs of these costs keep `slots` SMs busy: longest first, each onto the SM that frees first (the GPU starts
// CTAs in launch order as SMs free up, and the plan puts the longest first).
int64_t makespan(std::vector<int64_t>& costs, int slots) {
  std::sort(costs.begin(), costs.end(), std::greater<>());
  std::priority_queue<int64_t, std::vector<int64_t>, std::greater<>> load;
  for (int i = 0; i < slots; ++i) load.push(0);
  int64_t worst = 0;
  for (int64_t c : costs) {
    const int64_t l = load.top() + c;
    load.pop();
    load.push(l);
    worst = std::max(worst, l);
  }
  return worst;
}

// The splits of a sequence of `tiles` tiles when no CTA may take more than `maxTiles`.
int64_t splitsOf(int64_t tiles, int64_t maxTiles) {
  return std::clamp<int64_t>((tiles + maxTiles - 1) / maxTiles, 1, kMaxDecodeSplits);
}

// The most tiles per CTA that fills the SMs best: each candidate splits the longest sequence into 1, 2, ... parts
// (up to kMaxCtasPerSm CTAs per SM, no part under kMinSplitTiles) and the one finishing first in the planner's cost
// model wins. More splits must finish at least 5% sooner: their partial results cost bandwidth the tile count does not
// see when memory bounds the decode.
int64_t fillingTilesPerCta(int batch, const int32_t* seqLens, int mTiles, int blockN, int numSms) {
  int64_t longest = 0;
  for (int b = 0; b < batch; ++b) longest = std::max(longest, tilesOf(std::max(0, seqLens[b]), blockN));
  if (longest <= kMinSplitTiles) return std::max<int64_t>(1, longest);
  const int slots = std::max(1, numSms);
  const int64_t pairs = int64_t{batch} * mTiles;
  const int64_t maxSplits = std::clamp<int64_t>((kMaxCtasPerSm * slots + pairs - 1) / pairs, 1, kMaxDecodeSplits);
  const int64_t splitOverhead = tilesOf(kSplitOverheadRows, blockN);
  int64_t best = longest, bestSpan = -1;
  std::vector<int64_t> costs;
  for (int64_t k = 1, previous = 0; k <= maxSplits; ++k) {
    const int64_t maxTiles = (longest + k - 1) / k;
    if (maxTiles == previous) continue;
    if (maxTiles < kMinSplitTiles) break;
    previous = maxTiles;
    costs.clear();
    for (int b = 0; b < batch; ++b) {
      const int64_t tiles = tilesOf(std::max(0, seqLens[b]), blockN), splits = splitsOf(tiles, maxTiles);
      const int64_t cost = (tiles + splits - 1) / splits + 1 + (splits > 1 ? splitOverhead : 0);
      for (int64_t i = 0; i < splits * mTiles; ++i) costs.push_back(cost);
    }
    const int64_t span = makespan(costs, slots);
    if (bestSpan < 0 || span * 20 < bestSpan * 19) {
      bestSpan = span;
      best = maxTiles;
    }
  }
  return best;
}

}  // namespace

const char* decodeConfigName(DecodeConfig config) {
  switch (config) {
    case DecodeConfig::Wide: return "wide";
    case DecodeConfig::Large: return "large";
    case DecodeConfig::Small: return "small";
  }
  return "?";
}

DecodePlanCapacity decodePlanCapacity(int batch, int queryLen, int numHeads, int maxSeqLen, const DecodePlanOptions& options) {
  const DecodeConfigInfo info = options.tiles;
  const int64_t mTiles = (int64_t{queryLen} * numHeads + info.blockM - 1) / info.blockM;
  const int fixed = fixedSplitRows(options);
  const int64_t splitsPerSeq = fixed > 0 ? std::clamp<int64_t>((maxSeqLen + fixed - 1) / fixed, 1, kMaxDecodeSplits)
                                         : splitsOf(tilesOf(maxSeqLen, info.blockN), 1);
  int64_t work = batch * mTiles * splitsPerSeq;
  // Filling the SMs, each sequence has at most ceil(kMaxCtasPerSm * SMs / (batch * m-tiles)) splits (fillingTilesPerCta).
  if (fixed <= 0) work = std::min(work, batch * mTiles + kMaxCtasPerSm * std::max(1, options.numSms));
  DecodePlanCapacity c;
  c.work = static_cast<int>(work);
  c.combine = static_cast<int>(batch * mTiles);
  c.partials = c.work;
  return c;
}

DecodePlan makeDecodePlan(int batch, int queryLen, int numHeads, const int32_t* seqLens, const DecodePlanOptions& options) {
  DecodePlan plan;
  const DecodeConfigInfo info = options.tiles;
  plan.config = options.config;
  plan.blockM = info.blockM;
  plan.blockN = info.blockN;
  plan.batch = batch;
  plan.queryLen = queryLen;
  plan.numHeads = numHeads;
  plan.seqLens.assign(seqLens, seqLens + batch);
  const int mTiles = (queryLen * numHeads + info.blockM - 1) / info.blockM;

  // Fixed chunks of rows (asked for, or batch-invariant: a sequence's split depends on its length alone), else the
  // tiles per CTA that fill the SMs best, each sequence cut into equal parts of whole tiles.
  int splitRows = fixedSplitRows(options);
  int longest = 0;
  for (int b = 0; b < batch; ++b) longest = std::max(longest, seqLens[b]);
  if (splitRows > 0) splitRows = std::max(splitRows, (longest + kMaxDecodeSplits - 1) / kMaxDecodeSplits);  // the combine's limit
  const int64_t maxTiles = splitRows > 0 ? 0 : fillingTilesPerCta(batch, seqLens, mTiles, info.blockN, options.numSms);

  // The m-tiles of one split are adjacent, so the CTAs reading the same cache rows run together (L2 serves the rest).
  for (int b = 0; b < batch; ++b) {
    const int len = std::max(0, seqLens[b]);
    const int64_t tiles = tilesOf(len, info.blockN);
    const int splits = static_cast<int>(splitRows > 0 ? std::max(1, (len + splitRows - 1) / splitRows) : splitsOf(tiles, maxTiles));
    const int first = plan.numPartials;
    for (int s = 0; s < splits; ++s) {
      int64_t begin, end;
      if (splitRows > 0) {
        begin = std::min<int64_t>(len, int64_t{s} * splitRows);
        end = std::min<int64_t>(len, int64_t{s + 1} * splitRows);
      } else {
        begin = std::min<int64_t>(len, tiles * s / splits * info.blockN);
        end = std::min<int64_t>(len, tiles * (s + 1) / splits * info.blockN);
      }
      for (int mt = 0; mt < mTiles; ++mt) {
        DecodeWorkItem w;
        w.batch = b;
        w.mTile = mt;
        w.rowBegin = static_cast<int>(begin);
        w.rowEnd = static_cast<int>(end);
        w.seqLen = len;
        w.partial = splits > 1 ? first + mt * splits + s : -1;
        plan.work.push_back(w);
      }
    }
    if (splits > 1) {
      for (int mt = 0; mt < mTiles; ++mt) plan.combine.push_back(CombineItem{b, mt, first + mt * splits, splits});
      plan.numPartials += mTiles * splits;
    }
  }
  // Longest work first: the GPU starts CTAs in index order, so the long ones do not end up last.
  std::stable_sort(plan.work.begin(), plan.work.end(),
                   [](const DecodeWorkItem& x, const DecodeWorkItem& y) { return x.rowEnd - x.rowBegin > y.rowEnd - y.rowBegin; });
  return plan;
}

SparseSplit sparseDecodeSplit(int numQueries, int numHeads, int kvLoraRank, int rows, const DecodePlanOptions& options) {
  if (rows <= 0 || kvLoraRank % 4 != 0) return SparseSplit{1, rows};  // the combine reads partial rows as float4
  int64_t chunk = fixedSplitRows(options);
  if (chunk == 0) {
    const int64_t ctas = std::max<int64_t>(1, int64_t{numQueries} * ((numHeads + kSparseHeadsPerCta - 1) / kSparseHeadsPerCta));
    const int64_t want = (2 * int64_t{std::max(1, options.numSms)} + ctas - 1) / ctas;
    chunk = std::max<int64_t>(kSparseMinSplitRows, (rows + want - 1) / want);
  }
  chunk = std::max<int64_t>(chunk, (rows + kMaxDecodeSplits - 1) / kMaxDecodeSplits);  // the combine's limit
  const int splits = static_cast<int>((rows + chunk - 1) / chunk);
  return splits > 1 ? SparseSplit{splits, static_cast<int>(chunk)} : SparseSplit{1, rows};
}

}  // namespace mla::cuda
