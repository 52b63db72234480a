// The CPU backend's prefill operations: plans each one's work and runs it on the thread pool with the kernel set
// cpu_backend.cc chose for this processor (kernels.h). Operations arrive validated.
#pragma once
#include "../core/ops.h"
#include "kernels.h"

namespace mla::cpu {

// Of cpu_backend.cc: a float dtype's kernel element type, and this thread's scratch of n floats (64-byte aligned).
Elem cpuElem(DType t);
float* cpuScratch(size_t n);

void mlaPrefillCpu(const MlaPrefillParams& p, const KernelSet& k);
void gatherLatentCacheCpu(const GatherLatentCacheParams& p, const KernelSet& k);
void upProjectKvCpu(const UpProjectKvParams& p, const KernelSet& k);
void mergeAttentionStatesCpu(const MergeAttentionStatesParams& p, const KernelSet& k);

}  // namespace mla::cpu
