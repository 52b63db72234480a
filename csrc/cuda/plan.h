// planDecode: how a batch's decode is cut into CTAs (split-KV), computed on the host from the sequence lengths and
// the device's SM count, once per decode step and reused by every layer. With batchInvariant, a sequence's split
// depends only on its own length, so its result is bit-identical whatever else is in the batch.
#pragma once
#include <cstdint>
#include <vector>

#include "../kernels/mla_kernels.h"

// Host side of the kernels, so it lives beside them: mla::kernels (GPU) and mla::kernels_sim (emulator).
namespace mla::MLA_KERNEL_NS {

struct DecodePlanOptions {
  int numSms = 108;             // the device's SMs (one decode CTA fits an SM)
  bool batchInvariant = false;
  int splitRows = 0;            // > 0: split every sequence into chunks of this many rows (tests, tuning)
  DecodeConfig config = DecodeConfig::Large;
};

struct DecodePlan {
  DecodeConfig config = DecodeConfig::Large;
  int blockM = 0, blockN = 0;
  int batch = 0, queryLen = 0, numHeads = 0;
  std::vector<int32_t> seqLens;  // the lengths the plan was made for
  std::vector<DecodeWorkItem> work;
  std::vector<CombineItem> combine;
  int numPartials = 0;
};

// The fixed chunk of batch-invariant plans, in cache rows.
inline constexpr int kInvariantSplitRows = 1024;

// The most work items, split sequences (combine items) and partial results any plan of this shape can have, for
// sequences of at most maxSeqLen rows: the room a captured CUDA graph reserves, since its grids are fixed at capture
// while the lengths change between replays.
struct DecodePlanCapacity {
  int work = 0, combine = 0, partials = 0;
};
DecodePlanCapacity decodePlanCapacity(int batch, int queryLen, int numHeads, int maxSeqLen, const DecodePlanOptions& options);

DecodePlan makeDecodePlan(int batch, int queryLen, int numHeads, const int32_t* seqLens, const DecodePlanOptions& options);

// Every decode configuration, largest shared memory first, with its name (the model and check-cuda use the names).
inline constexpr DecodeConfig kAllDecodeConfigs[] = {DecodeConfig::Wide, DecodeConfig::Large, DecodeConfig::Small};
const char* decodeConfigName(DecodeConfig config);
// The configuration a device gives rows of headDim elements: the largest of those the device holds at DeepSeek's width
// (kDeepSeekHeadDim) whose shared memory it also allows at this width (Small when none fits: the caller refuses the
// shape). So a device always runs the same configuration for narrower rows, the one it is sized for.
DecodeConfig decodeConfigFor(int smemOptin, int headDim);

}  // namespace mla::MLA_KERNEL_NS
