// The CPU backend's prefill operations: plans each one's work and runs it on the thread pool with the kernel set
// cpu_backend.cc chose for this processor (kernels.h). Operations arrive validated.
#pragma once
#include "../core/ops.h"
#include "kernels.h"

namespace mla::cpu {

void mlaPrefillCpu(const MlaPrefillParams& p, const KernelSet& k);
void gatherLatentCacheCpu(const GatherLatentCacheParams& p, const KernelSet& k);
void upProjectKvCpu(const UpProjectKvParams& p, const KernelSet& k);
void mergeAttentionStatesCpu(const MergeAttentionStatesParams& p, const KernelSet& k);

}  // namespace mla::cpu
