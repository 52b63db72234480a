#include "plan.h"

#include <algorithm>

namespace mla::MLA_KERNEL_NS {
namespace {

// Rows per split when fixed: asked for, or batch-invariant; 0 when the planner fills the SMs.
int fixedSplitRows(const DecodePlanOptions& options) {
  if (options.splitRows > 0) return options.splitRows;
  return options.batchInvariant ? kInvariantSplitRows : 0;
}

// Every split re-reads its CTA's query rows and writes a partial, so none filling the SMs is shorter than 32 rows per
// query row (Q re-reads stay within ~3% of the cache bytes) or four tiles.
int64_t minSplitRows(int queryLen, int numHeads, const DecodeConfigInfo& info) {
  const int rowsPerCta = std::min(queryLen * numHeads, info.blockM);
  return std::max<int64_t>(int64_t{4} * info.blockN, int64_t{32} * rowsPerCta);
}

}  // namespace

const char* decodeConfigName(DecodeConfig config) {
  switch (config) {
    case DecodeConfig::Large: return "large";
    case DecodeConfig::Small: return "small";
  }
  return "?";
}

DecodeConfig decodeConfigFor(int smemOptin, int headDim) {
  for (DecodeConfig c : kAllDecodeConfigs)
    if (decodeSmemBytes(c, headDim) <= smemOptin) return c;
  return DecodeConfig::Small;
}

DecodePlanCapacity decodePlanCapacity(int batch, int queryLen, int numHeads, int maxSeqLen, const DecodePlanOptions& options) {
  const DecodeConfigInfo info = decodeConfigInfo(options.config);
  const int64_t mTiles = (int64_t{queryLen} * numHeads + info.blockM - 1) / info.blockM;
  const int fixed = fixedSplitRows(options);
  const int64_t shortest = fixed > 0 ? fixed : minSplitRows(queryLen, numHeads, info);
  const int64_t splitsPerSeq = std::clamp<int64_t>((maxSeqLen + shortest - 1) / shortest, 1, kMaxDecodeSplits);
  int64_t work = batch * mTiles * splitsPerSeq;
  // Filling the SMs, a split has at least (all tiles) / numSms tiles, so the splits beyond one per sequence and
  // m-tile number at most numSms.
  if (fixed <= 0) work = std::min<int64_t>(work, batch * mTiles + options.numSms);
  DecodePlanCapacity c;
  c.work = static_cast<int>(work);
  c.combine = static_cast<int>(batch * mTiles);
  c.partials = c.work;
  return c;
}

DecodePlan makeDecodePlan(int batch, int queryLen, int numHeads, const int32_t* seqLens, const DecodePlanOptions& options) {
  DecodePlan plan;
  const DecodeConfigInfo info = decodeConfigInfo(options.config);
  plan.config = options.config;
  plan.blockM = info.blockM;
  plan.blockN = info.blockN;
  plan.batch = batch;
  plan.queryLen = queryLen;
  plan.numHeads = numHeads;
  plan.seqLens.assign(seqLens, seqLens + batch);
  const int mTiles = (queryLen * numHeads + info.blockM - 1) / info.blockM;

  int splitRows = fixedSplitRows(options);
  if (splitRows <= 0) {
    int64_t tiles = 0;
    for (int b = 0; b < batch; ++b) tiles += int64_t{mTiles} * ((seqLens[b] + info.blockN - 1) / info.blockN);
    const int64_t perCta = (tiles + options.numSms - 1) / std::max(1, options.numSms);
    const int64_t rows = std::max<int64_t>(perCta * info.blockN, minSplitRows(queryLen, numHeads, info));
    splitRows = static_cast<int>(std::min<int64_t>(rows, int64_t{1} << 30));
  }
  // The combine kernel merges at most kMaxDecodeSplits partials per sequence.
  int longest = 0;
  for (int b = 0; b < batch; ++b) longest = std::max(longest, seqLens[b]);
  splitRows = std::max(splitRows, (longest + kMaxDecodeSplits - 1) / kMaxDecodeSplits);

  for (int b = 0; b < batch; ++b) {
    const int len = seqLens[b];
    const int splits = std::max(1, (len + splitRows - 1) / splitRows);
    for (int mt = 0; mt < mTiles; ++mt) {
      const int first = plan.numPartials;
      for (int s = 0; s < splits; ++s) {
        DecodeWorkItem w;
        w.batch = b;
        w.mTile = mt;
        w.rowBegin = std::min(len, s * splitRows);
        w.rowEnd = std::min(len, (s + 1) * splitRows);
        w.seqLen = len;
        w.partial = splits > 1 ? plan.numPartials++ : -1;
        plan.work.push_back(w);
      }
      if (splits > 1) plan.combine.push_back(CombineItem{b, mt, first, splits});
    }
  }
  // Longest work first: the GPU starts CTAs in index order, so the long ones do not end up last.
  std::stable_sort(plan.work.begin(), plan.work.end(),
                   [](const DecodeWorkItem& x, const DecodeWorkItem& y) { return x.rowEnd - x.rowBegin > y.rowEnd - y.rowBegin; });
  return plan;
}

}  // namespace mla::MLA_KERNEL_NS
