#include "prefill_plan.h"

#include <algorithm>

namespace mla::cuda {

int prefillPlanCapacity(int batch, int totalQ, int numHeads, const PrefillConfigInfo& tiles) {
  const int64_t qTiles = (int64_t{totalQ} + tiles.blockM - 1) / tiles.blockM + batch;  // sum over b of ceil(qLen_b / blockM)
  const int64_t headGroups = (numHeads + tiles.heads - 1) / tiles.heads;
  return static_cast<int>(std::min<int64_t>(qTiles * headGroups, int64_t{1} << 30));
}

PrefillPlan makePrefillPlan(int batch, int numHeads, bool causal, const int32_t* cuSeqLensQ, const int32_t* cuSeqLensKv, PrefillConfig config,
                            const PrefillConfigInfo& tiles) {
  PrefillPlan plan;
  plan.config = config;
  plan.blockM = tiles.blockM;
  plan.heads = tiles.heads;
  std::vector<int64_t> cost;
  for (int b = 0; b < batch; ++b) {
    const int qLen = cuSeqLensQ[b + 1] - cuSeqLensQ[b], kvLen = cuSeqLensKv[b + 1] - cuSeqLensKv[b];
    for (int i0 = 0; i0 < qLen; i0 += tiles.blockM) {
      const int rows = std::min(tiles.blockM, qLen - i0);
      const int keys = causal ? kvLen - qLen + i0 + rows : kvLen;  // what the CTA's last query sees
      for (int h = 0; h < numHeads; h += tiles.heads) {
        plan.work.push_back(PrefillWorkItem{cuSeqLensQ[b], qLen, cuSeqLensKv[b], kvLen, i0, h});
        cost.push_back(int64_t{keys} + 1);
      }
    }
  }
  std::vector<size_t> order(plan.work.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return cost[x] > cost[y]; });
  std::vector<PrefillWorkItem> sorted(plan.work.size());
  for (size_t i = 0; i < order.size(); ++i) sorted[i] = plan.work[order[i]];
  plan.work = std::move(sorted);
  return plan;
}

}  // namespace mla::cuda
