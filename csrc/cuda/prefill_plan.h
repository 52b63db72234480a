// planPrefill: how a prefill step is cut into CTAs (blockM queries x `heads` heads of one sequence, against the keys
// the CTA's last query sees), made on the host from the cumulative lengths once per step and reused by every layer.
// Host code, one for both runtimes (the GPU's and the emulator's): the kernel's tile shapes come as an argument (the
// runtime's prefillConfigInfo).
#pragma once
#include <cstdint>
#include <vector>

#include "../kernels/mla_kernels.h"

namespace mla::cuda {
using namespace kernels;  // the kernels' argument types (PrefillWorkItem, PrefillConfig, ...)

struct PrefillPlan {
  PrefillConfig config = PrefillConfig::Large;
  int blockM = 0, heads = 0;
  std::vector<PrefillWorkItem> work;  // longest first: the GPU starts CTAs in index order
};

// The most work items any lengths can give a prefill of totalQ query rows in `batch` sequences: the room a captured
// graph reserves (its grid is fixed at capture while the lengths change between replays).
int prefillPlanCapacity(int batch, int totalQ, int numHeads, const PrefillConfigInfo& tiles);

PrefillPlan makePrefillPlan(int batch, int numHeads, bool causal, const int32_t* cuSeqLensQ, const int32_t* cuSeqLensKv, PrefillConfig config,
                            const PrefillConfigInfo& tiles);

}  // namespace mla::cuda
