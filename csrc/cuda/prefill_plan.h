// planPrefill: how a prefill step is cut into CTAs (blockM queries x `heads` heads of one sequence, against the keys
// the CTA's last query sees), made on the host from the cumulative lengths once per step and reused by every layer.
// Host side of the kernels, so it lives beside them, in mla::kernels (GPU) and mla::kernels_sim (emulator); header
// only, compiled into each of the two backends that include it.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../kernels/prefill_kernels.h"

namespace mla::MLA_KERNEL_NS {

struct PrefillPlan {
  PrefillConfig config = PrefillConfig::Large;
  int blockM = 0, heads = 0;
  std::vector<PrefillWorkItem> work;  // longest first: the GPU starts CTAs in index order
};

// The most work items any lengths can give a prefill of totalQ query rows in `batch` sequences: the room a captured
// graph reserves (its grid is fixed at capture while the lengths change between replays).
inline int prefillPlanCapacity(int batch, int totalQ, int numHeads, PrefillConfig config) {
  const PrefillConfigInfo info = prefillConfigInfo(config);
  const int64_t tiles = (int64_t{totalQ} + info.blockM - 1) / info.blockM + batch;  // sum over b of ceil(qLen_b / blockM)
  const int64_t headGroups = (numHeads + info.heads - 1) / info.heads;
  return static_cast<int>(std::min<int64_t>(tiles * headGroups, int64_t{1} << 30));
}

inline PrefillPlan makePrefillPlan(int batch, int numHeads, bool causal, const int32_t* cuSeqLensQ, const int32_t* cuSeqLensKv, PrefillConfig config) {
  PrefillPlan plan;
  const PrefillConfigInfo info = prefillConfigInfo(config);
  plan.config = config;
  plan.blockM = info.blockM;
  plan.heads = info.heads;
  std::vector<int64_t> cost;
  for (int b = 0; b < batch; ++b) {
    const int qLen = cuSeqLensQ[b + 1] - cuSeqLensQ[b], kvLen = cuSeqLensKv[b + 1] - cuSeqLensKv[b];
    for (int i0 = 0; i0 < qLen; i0 += info.blockM) {
      const int rows = std::min(info.blockM, qLen - i0);
      const int keys = causal ? kvLen - qLen + i0 + rows : kvLen;  // what the CTA's last query sees
      for (int h = 0; h < numHeads; h += info.heads) {
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

}  // namespace mla::MLA_KERNEL_NS
