#include "plan.h"

#include <algorithm>

namespace mla::MLA_KERNEL_NS {

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

  // Rows per split: fixed when asked or batch-invariant; otherwise enough CTAs to fill the SMs. Every split re-reads
  // its CTA's query rows and writes a partial, so none is shorter than 32 rows per query row (Q re-reads stay
  // within ~3% of the cache bytes) or four tiles.
  const int rowsPerCta = std::min(queryLen * numHeads, info.blockM);
  int splitRows = options.splitRows;
  if (splitRows <= 0 && options.batchInvariant) splitRows = kInvariantSplitRows;
  if (splitRows <= 0) {
    int64_t tiles = 0;
    for (int b = 0; b < batch; ++b) tiles += int64_t{mTiles} * ((seqLens[b] + info.blockN - 1) / info.blockN);
    const int64_t perCta = (tiles + options.numSms - 1) / std::max(1, options.numSms);
    const int64_t rows = std::max<int64_t>({perCta * info.blockN, int64_t{4} * info.blockN, int64_t{32} * rowsPerCta});
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
