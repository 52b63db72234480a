// The CPU backend's prefill operations: plans each one's work and runs it on the thread pool with the kernel set
// cpu_backend.cc chose for this processor (kernels.h). Operations arrive validated.
#pragma once
#include "../core/ops.h"
#include "kernels.h"

namespace mla::cpu {

// Of cpu_backend.cc: a float dtype's kernel element type, and this thread's scratch of n floats (64-byte aligned).
Elem cpuElem(DType t);
float* cpuScratch(size_t n);
// One token's row of an fp8_ds_mla cache, dequantised: kvLoraRank + ropeDim floats.
void cpuLoadDsMlaRow(const KernelSet& k, const void* src, float* row, int64_t kvLoraRank, int64_t ropeDim);

void mlaPrefillCpu(const MlaPrefillParams& p, const KernelSet& k);
void gatherLatentCacheCpu(const GatherLatentCacheParams& p, const KernelSet& k);
void upProjectKvCpu(const UpProjectKvParams& p, const KernelSet& k);
void mergeAttentionStatesCpu(const MergeAttentionStatesParams& p, const KernelSet& k);
// The lightning indexer (indexer_cpu.cc).
void appendIndexerCacheCpu(const AppendIndexerCacheParams& p, const KernelSet& k);
void lightningIndexerCpu(const LightningIndexerParams& p, const KernelSet& k);

}  // namespace mla::cpu
