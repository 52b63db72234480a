// One plain parameter struct per operation, shared by every backend (CPU, CUDA, cuda-sim).
// The N-API glue fills the tensors and options; validate*() checks everything (shapes, dtypes, devices,
// and the values of the index tensors) and fills the derived sizes, so kernels never parse arguments.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor.h"

namespace mla {

enum class RopeStyle : uint8_t { None = 0, Interleaved = 1, Neox = 2 };

// Writes each new token's latent row [kvC, RoPE(kPe)] into its slot of the paged cache.
struct AppendLatentCacheParams {
  TensorView cache;        // [numBlocks, blockSize, kvLoraRank + ropeDim]   f32 | f16 | bf16 | fp8_e4m3
  TensorView kvC;          // [numTokens, kvLoraRank]                        cache dtype (any float dtype for fp8)
  TensorView kPe;          // [numTokens, ropeDim]                           kvC dtype
  TensorView slotMapping;  // [numTokens] i32; slot = block * blockSize + offset; negative = skip
  RopeStyle ropeStyle = RopeStyle::None;
  TensorView positions;    // [numTokens] i32, when ropeStyle != None
  TensorView cos;          // [maxPositions, ropeDim / 2] f32
  TensorView sin;          // [maxPositions, ropeDim / 2] f32
  float cacheScale = 1.f;  // fp8 cache: a row is stored as e4m3(value / cacheScale); 1 for the other dtypes

  // Derived by validate().
  int64_t numTokens = 0, kvLoraRank = 0, ropeDim = 0, numBlocks = 0, blockSize = 0, maxPositions = 0;
  int64_t rowWidth() const { return kvLoraRank + ropeDim; }
};

// How a backend splits one decode step's work (planDecode), made once per step on the host and reused by every
// layer. Backends derive their own plans from it; the base records what the plan was made for.
struct DecodePlanHandle {
  virtual ~DecodePlanHandle() = default;
  std::string backend;
  int64_t batch = 0, queryLen = 0, numHeads = 0;
  std::vector<int32_t> seqLens;
  bool batchInvariant = false;
  int64_t numWorkItems = 0, numSplitSequences = 0;  // for the caller's information
};

// Absorbed MLA decode: for each sequence, query position and head, attention over the sequence's cached
// rows. Scores use all kvLoraRank + ropeDim columns; values are the first kvLoraRank columns.
struct MlaDecodeParams {
  TensorView q;           // [batch, queryLen, numHeads, kvLoraRank + ropeDim]
  TensorView cache;       // [numBlocks, blockSize, kvLoraRank + ropeDim]   q dtype, or fp8_e4m3
  TensorView blockTable;  // [batch, maxBlocksPerSeq] i32
  TensorView seqLens;     // [batch] i32
  TensorView out;         // [batch, queryLen, numHeads, kvLoraRank]        q dtype
  TensorView lse;         // [batch, numHeads, queryLen] f32, natural log
  float softmaxScale = 0.f;
  float cacheScale = 1.f;  // fp8 cache: a row's values are its stored values times this; 1 for the other dtypes
  bool causal = false;    // query j of n sees the first seqLen - n + 1 + j rows
  int64_t kvLoraRank = 0;
  std::shared_ptr<const DecodePlanHandle> plan;  // optional; made by the stream's backend for these seqLens

  // Derived by validate().
  int64_t batch = 0, queryLen = 0, numHeads = 0, headDim = 0, ropeDim = 0;
  int64_t numBlocks = 0, blockSize = 0, maxBlocksPerSeq = 0;

  // How many cached rows query position t of sequence b attends to (0 when none).
  int64_t visibleRows(int64_t seqLen, int64_t t) const {
    int64_t n = causal ? seqLen - queryLen + 1 + t : seqLen;
    return n < 0 ? 0 : (n > seqLen ? seqLen : n);
  }
};

// q_lat[i] = W_uk[i]^T q_nope[i], optionally followed by q_pe[i] so the result is decode's q.
struct AbsorbQueryParams {
  TensorView qNope;  // [..., numHeads, nopeDim]
  TensorView wUk;    // [numHeads, nopeDim, kvLoraRank]                    qNope dtype
  TensorView qPe;    // optional [..., numHeads, ropeDim]                  qNope dtype
  TensorView out;    // [..., numHeads, kvLoraRank + ropeDim]              qNope dtype

  int64_t numTokens = 0, numHeads = 0, nopeDim = 0, kvLoraRank = 0, ropeDim = 0;
};

// o[i] = W_uv[i] o_lat[i].
struct UnabsorbOutputParams {
  TensorView oLat;  // [..., numHeads, kvLoraRank]
  TensorView wUv;   // [numHeads, vHeadDim, kvLoraRank]                    oLat dtype
  TensorView out;   // [..., numHeads, vHeadDim]                           oLat dtype

  int64_t numTokens = 0, numHeads = 0, kvLoraRank = 0, vHeadDim = 0;
};

// Copies a tensor between host and device memory, or within one device: same dtype and element count.
struct CopyParams {
  TensorView src;
  TensorView dst;
};

// Copies of the host index tensors an operation reads (slot mapping, positions, block table, sequence lengths),
// taken before validation and used by the kernels in place of the caller's arrays: the caller may change those as
// soon as the call returns, and the values checked must be the values used.
using IndexSnapshot = std::vector<std::vector<uint8_t>>;
void snapshotIndexTensors(AppendLatentCacheParams& p, IndexSnapshot& store);
void snapshotIndexTensors(MlaDecodeParams& p, IndexSnapshot& store);
template <class Params>
void snapshotIndexTensors(Params&, IndexSnapshot&) {}

// Shapes of the outputs an operation creates when the caller gives none. They validate the inputs
// (outputs absent) and throw mla::Error like validate().
std::vector<int64_t> absorbQueryOutShape(AbsorbQueryParams& p);
std::vector<int64_t> unabsorbOutputOutShape(UnabsorbOutputParams& p);
void mlaDecodeOutShapes(MlaDecodeParams& p, std::vector<int64_t>* outShape, std::vector<int64_t>* lseShape);

// Full validation, outputs included; throws mla::Error naming the argument. `device` is where the
// stream that will run the operation reads and writes memory.
void validate(AppendLatentCacheParams& p, const Device& device);
void validate(MlaDecodeParams& p, const Device& device);
// The plan must come from `backend` and match the batch, heads, query length and every sequence length.
void validatePlan(const MlaDecodeParams& p, const std::string& backend);
void validate(AbsorbQueryParams& p, const Device& device);
void validate(UnabsorbOutputParams& p, const Device& device);
// One side of a copy may be on the host or on another device of `device`'s kind (a peer copy); the other must be on
// `device` (or the host too).
void validate(CopyParams& p, const Device& device);

}  // namespace mla
