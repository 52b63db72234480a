// planDecode: how a batch's decode is cut into CTAs (split-KV), computed on the host from the sequence lengths and
// the device's SM count, once per decode step and reused by every layer. With batchInvariant, a sequence's split
// depends only on its own length, so its result is bit-identical whatever else is in the batch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../kernels/mla_kernels.h"

// Host code, one for both runtimes (the GPU's and the emulator's): the kernels' tile shapes come in the options.
namespace mla::cuda {
using namespace kernels;  // the kernels' argument types (DecodeWorkItem, CombineItem, DecodeConfig, ...)

struct DecodePlanOptions {
  int numSms = 108;             // the device's SMs (one decode CTA fits an SM)
  bool batchInvariant = false;
  int splitRows = 0;            // > 0: split every sequence into chunks of this many rows (tests, tuning)
  DecodeConfig config = DecodeConfig::Large;
  DecodeConfigInfo tiles{};     // the tile shapes of `config` (the runtime's decodeConfigInfo)
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

inline size_t align16(size_t n) { return (n + 15) / 16 * 16; }

// The room a plan takes: its own size (a direct call), or a capacity (a captured graph, whose grids are fixed).
inline DecodePlanCapacity sizeOf(const DecodePlan& plan) {
  return DecodePlanCapacity{static_cast<int>(plan.work.size()), static_cast<int>(plan.combine.size()), plan.numPartials};
}

// Where one decode's arrays go in device memory, the same for direct calls, captured graphs and their replays: an
// upload of [counts | block table | work items | combine items], copied in one go, and an area of partial results
// (split sequences) [partialOut | partialLse]. `room` sizes the item arrays and the partials.
struct DecodeWorkspace {
  size_t counts = 0, table = 0, work = 0, combine = 0, uploadBytes = 0;  // offsets in the upload; its size
  size_t partialOut = 0, partialLse = 0, partialBytes = 0;                // offsets in the partials area; its size
  DecodePlanCapacity room;
};
DecodeWorkspace decodeWorkspace(const DecodePlanCapacity& room, size_t blockTableBytes, int blockM, int64_t kvLoraRank);

// The sparse decode's split over the rows of a query (its top-k, or a dense fp8_ds_mla decode's longest context):
// chunks of splitRows, from the shape and the device alone, so every call of a shape, and a captured graph's replays,
// split alike. Enough CTAs for two per SM, chunks of at least kSparseMinSplitRows rows; fixed chunks when asked for
// (splitRows) or batch-invariant. One split: no partials, no combine.
struct SparseSplit {
  int numSplits = 1, splitRows = 0;
};
inline constexpr int kSparseMinSplitRows = 64;
SparseSplit sparseDecodeSplit(int numQueries, int numHeads, int kvLoraRank, int rows, const DecodePlanOptions& options);

// Fills the upload laid out by `ws`: how many work and combine items `plan` has, the block table, its items.
// Throws mla::Error (E_INTERNAL) when the plan exceeds the workspace's room.
void stageDecode(uint8_t* upload, const DecodeWorkspace& ws, const DecodePlan& plan, const void* blockTable, size_t blockTableBytes);

// Every decode configuration, largest shared memory first, with its name (the model and check-cuda use the names).
inline constexpr DecodeConfig kAllDecodeConfigs[] = {DecodeConfig::Wide, DecodeConfig::Large, DecodeConfig::Small};
const char* decodeConfigName(DecodeConfig config);
// The configuration a device gives rows of headDim elements: the largest of those the device holds at DeepSeek's width
// (kDeepSeekHeadDim) whose shared memory it also allows at this width (Small when none fits: the caller refuses the
// shape). So a device always runs the same configuration for narrower rows, the one it is sized for. The shared
// memory is the runtime's kernels' (runtime.h).
template <class Runtime>
DecodeConfig decodeConfigFor(int smemOptin, int headDim) {
  for (DecodeConfig c : kAllDecodeConfigs)
    if (Runtime::decodeSmemBytes(c, kDeepSeekHeadDim, false) <= smemOptin && Runtime::decodeSmemBytes(c, headDim, false) <= smemOptin) return c;
  return DecodeConfig::Small;
}

}  // namespace mla::cuda
