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

// --- prefill: the multi-head (compute-friendly) form, for prompts and prompt chunks -------------------------------

// How one prefill step is split over the device (planPrefill), made once per step on the host and reused by every
// layer; backends derive their own plans from it. The base records what the plan was made for.
struct PrefillPlanHandle {
  virtual ~PrefillPlanHandle() = default;
  std::string backend;
  int64_t batch = 0, numHeads = 0;
  bool causal = false;
  std::vector<int32_t> cuSeqLensQ, cuSeqLensKv;
  int64_t numWorkItems = 0;  // for the caller's information
};

// Ragged multi-head attention: for each sequence b, query i of its n and head h, attention over the sequence's keys
// k = [kNope[., h], kPe] (the rope key shared by every head) and values v[., h].
struct MlaPrefillParams {
  TensorView q;            // [totalQ, numHeads, nopeDim + ropeDim]          f32 | f16 | bf16
  TensorView kNope;        // [totalKv, numHeads, nopeDim]                   q dtype
  TensorView kPe;          // [totalKv, ropeDim]                             q dtype
  TensorView v;            // [totalKv, numHeads, vHeadDim]                  q dtype
  TensorView cuSeqLensQ;   // [batch + 1] i32: sequence b's queries are rows [cuSeqLensQ[b], cuSeqLensQ[b + 1]) of q
  TensorView cuSeqLensKv;  // [batch + 1] i32: its keys and values are those rows of kNope, kPe and v
  TensorView out;          // [totalQ, numHeads, vHeadDim]                   q dtype
  TensorView lse;          // [totalQ, numHeads] f32, natural log
  float softmaxScale = 0.f;
  bool causal = false;     // query i of n sees the first kvLen - n + 1 + i keys (kvLen >= n)
  std::shared_ptr<const PrefillPlanHandle> plan;  // optional; made by the stream's backend for these lengths

  // Derived by validate(). Rows of q past cuSeqLensQ[batch] (usedQ) are padding: zero output, lse -infinity.
  int64_t batch = 0, totalQ = 0, totalKv = 0, numHeads = 0, nopeDim = 0, ropeDim = 0, headDim = 0, vHeadDim = 0;
  int64_t usedQ = 0, usedKv = 0, maxQLen = 0, maxKvLen = 0;

  // How many keys query i of a sequence of qLen queries and kvLen keys attends to.
  int64_t visibleRows(int64_t kvLen, int64_t qLen, int64_t i) const { return causal ? kvLen - qLen + 1 + i : kvLen; }
};

// Copies each sequence's cached latent rows (a range of positions) out of the paged cache into dense kvC and kPe,
// dequantising an fp8 cache.
struct GatherLatentCacheParams {
  TensorView cache;       // [numBlocks, blockSize, kvLoraRank + ropeDim]   f32 | f16 | bf16 | fp8_e4m3
  TensorView blockTable;  // [batch, maxBlocksPerSeq] i32
  TensorView cuSeqLens;   // [batch + 1] i32: sequence b's rows go to rows [cuSeqLens[b], cuSeqLens[b + 1]) of kvC / kPe
  TensorView seqStarts;   // optional [batch] i32: the cached position of each sequence's first row (default 0)
  TensorView kvC;         // [numRows, kvLoraRank]   cache dtype (any float dtype for fp8); rows past usedRows are zero
  TensorView kPe;         // [numRows, ropeDim]      kvC dtype
  float cacheScale = 1.f;

  // Derived by validate().
  int64_t batch = 0, numBlocks = 0, blockSize = 0, maxBlocksPerSeq = 0, kvLoraRank = 0, ropeDim = 0, numRows = 0, usedRows = 0;
  int64_t requestedRows = -1;  // the output rows to allocate (outputShapes), -1: usedRows
};

// The keys and values MLA defines from the latent, per head: kNope[t, h] = W_uk[h] kvC[t], v[t, h] = W_uv[h] kvC[t].
struct UpProjectKvParams {
  TensorView kvC;    // [numTokens, kvLoraRank]
  TensorView wUk;    // [numHeads, nopeDim, kvLoraRank]                   kvC dtype
  TensorView wUv;    // [numHeads, vHeadDim, kvLoraRank]                  kvC dtype
  TensorView kNope;  // [numTokens, numHeads, nopeDim]                    kvC dtype
  TensorView v;      // [numTokens, numHeads, vHeadDim]                   kvC dtype

  int64_t numTokens = 0, numHeads = 0, nopeDim = 0, vHeadDim = 0, kvLoraRank = 0;
};

// Two attention results over disjoint key sets merged into the result over their union by log-sum-exp; a part
// whose lse is -infinity (no key) weighs nothing.
struct MergeAttentionStatesParams {
  TensorView outA;  // [..., width]     f32 | f16 | bf16
  TensorView lseA;  // [...]            f32, natural log
  TensorView outB;  // [..., width]     outA dtype
  TensorView lseB;  // [...]            f32
  TensorView out;   // [..., width]     outA dtype
  TensorView lse;   // [...]            f32

  int64_t numRows = 0, width = 0;
};

// --- DeepSeek Sparse Attention (V3.2): MLA over the cache rows a lightning indexer selects ---------------------------

// Absorbed MLA decode over the rows each query position selects (FlashMLA's sparse decode): query t of sequence b
// attends to the cache rows indices[b, t, :], physical slots (block * blockSize + offset), -1 for padding. A slot
// named twice counts twice; a query with no slot gets zero output and lse -infinity.
struct MlaSparseDecodeParams {
  TensorView q;        // [batch, queryLen, numHeads, kvLoraRank + ropeDim]   f32 | f16 | bf16
  TensorView cache;    // [numBlocks, blockSize, width]                        q dtype, fp8_e4m3 or fp8_ds_mla
  TensorView indices;  // [batch, queryLen, topk] i32: on the host or on the stream's device
  TensorView out;      // [batch, queryLen, numHeads, kvLoraRank]            q dtype
  TensorView lse;      // [batch, numHeads, queryLen] f32, natural log ([batch * queryLen, numHeads] when lseTokenMajor)
  float softmaxScale = 0.f;
  float cacheScale = 1.f;  // an fp8_e4m3 cache's; 1 for the others
  int64_t kvLoraRank = 0;
  // The indices are an earlier queued operation's output (the indexer's), read where they are when the kernel runs;
  // otherwise host indices are copied and every value checked at the call. Read in place (and on a device, where the
  // call cannot read them) a slot outside the cache counts as padding.
  bool indicesInPlace = false;
  bool lseTokenMajor = false;  // set by sparsePrefillAsDecode: lse [token, head] as a prefill's

  // Derived by validate().
  int64_t batch = 0, queryLen = 0, numHeads = 0, headDim = 0, ropeDim = 0, topk = 0, numBlocks = 0, blockSize = 0;
  int64_t numSlots() const { return numBlocks * blockSize; }
  bool indicesOnHost() const { return indices.device.kind == DeviceKind::Cpu; }
};

// Sparse MLA over a dense kv in the absorbed form (FlashMLA's flash_mla_sparse_fwd): token i's queries attend to the
// rows indices[i, :] of kv (-1: padding). Backends run it as the sparse decode sparsePrefillAsDecode() describes.
struct MlaSparsePrefillParams {
  TensorView q;        // [numTokens, numHeads, kvLoraRank + ropeDim]        f32 | f16 | bf16
  TensorView kv;       // [numKv, kvLoraRank + ropeDim]                        q dtype
  TensorView indices;  // [numTokens, topk] i32: rows of kv, -1 padding; on the host (checked) or the stream's device
  TensorView out;      // [numTokens, numHeads, kvLoraRank]                   q dtype
  TensorView lse;      // [numTokens, numHeads] f32, natural log
  float softmaxScale = 0.f;
  int64_t kvLoraRank = 0;
  bool indicesInPlace = false;  // as MlaSparseDecodeParams's

  // Derived by validate().
  int64_t numTokens = 0, numHeads = 0, headDim = 0, ropeDim = 0, topk = 0, numKv = 0;
};
// The validated prefill as a sparse decode of one sequence of numTokens query positions over a cache of one block
// holding kv (its rows are the slots), with lse token-major.
MlaSparseDecodeParams sparsePrefillAsDecode(const MlaSparsePrefillParams& p);

// Writes each new token's indexer key into its slot of the indexer's paged key cache (one key per token, shared by
// the indexer heads): as it is, or as e4m3(k / scale) with scale = max(amax|k| / 448, FLT_MIN) per token.
struct AppendIndexerCacheParams {
  TensorView cache;        // [numBlocks, blockSize, indexDim]   k dtype, or fp8_e4m3
  TensorView scales;       // [numBlocks, blockSize] f32: each fp8 key's scale (fp8 cache only)
  TensorView k;            // [numTokens, indexDim]              f32 | f16 | bf16
  TensorView slotMapping;  // [numTokens] i32; negative = skip

  int64_t numTokens = 0, indexDim = 0, numBlocks = 0, blockSize = 0;
};

// The lightning indexer of DeepSeek-V3.2: I[t, s] = sum_j weights[t, j] * ReLU(q[t, j] . k[s]) for each query
// position t and each cached position s it sees (s < visibleRows), then the topk positions of largest I per query,
// written as slots of the cache's block table in increasing position order (ties: the earlier position), -1 after
// them when fewer are visible.
struct LightningIndexerParams {
  TensorView q;           // [batch, queryLen, numIndexerHeads, indexDim]  f32 | f16 | bf16
  TensorView weights;     // [batch, queryLen, numIndexerHeads] f32
  TensorView cache;       // [numBlocks, blockSize, indexDim]              q dtype, or fp8_e4m3 with scales
  TensorView scales;      // [numBlocks, blockSize] f32 (fp8 cache only): a key is its stored values times its scale
  TensorView blockTable;  // [batch, maxBlocksPerSeq] i32 on the host
  TensorView seqLens;     // [batch] i32 on the host
  TensorView indices;     // [batch, queryLen, topk] i32: the selected slots
  TensorView scores;      // [batch, queryLen, topk] f32: their index scores (-infinity for padding)
  int64_t topk = 0;
  bool causal = false;    // query j of n sees the first seqLen - n + 1 + j positions

  // Derived by validate().
  int64_t batch = 0, queryLen = 0, numHeads = 0, indexDim = 0, numBlocks = 0, blockSize = 0, maxBlocksPerSeq = 0, maxSeqLen = 0;
  int64_t visibleRows(int64_t seqLen, int64_t t) const {
    const int64_t n = causal ? seqLen - queryLen + 1 + t : seqLen;
    return n < 0 ? 0 : (n > seqLen ? seqLen : n);
  }
};

// Copies a tensor between host and device memory, or within one device: same dtype and element count.
struct CopyParams {
  TensorView src;
  TensorView dst;
};

// Copies of the host index tensors an operation reads (slot mapping, positions, block table, sequence lengths),
// taken before validation and used by the kernels in place of the caller's arrays: the caller may change those as
// soon as the call returns, and the values checked must be the values used.
// A store may be reused: its first `used` buffers hold this operation's copies, the rest keep their capacity.
struct IndexSnapshot {
  std::vector<std::vector<uint8_t>> buffers;
  size_t used = 0;
};
void snapshotIndexTensors(AppendLatentCacheParams& p, IndexSnapshot& store);
void snapshotIndexTensors(MlaDecodeParams& p, IndexSnapshot& store);
void snapshotIndexTensors(MlaPrefillParams& p, IndexSnapshot& store);
void snapshotIndexTensors(GatherLatentCacheParams& p, IndexSnapshot& store);
void snapshotIndexTensors(MlaSparseDecodeParams& p, IndexSnapshot& store);
void snapshotIndexTensors(MlaSparsePrefillParams& p, IndexSnapshot& store);
void snapshotIndexTensors(AppendIndexerCacheParams& p, IndexSnapshot& store);
void snapshotIndexTensors(LightningIndexerParams& p, IndexSnapshot& store);
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
// Prefill: the output shapes (inputs validated), full validation, and the plan's agreement with the lengths.
void mlaPrefillOutShapes(MlaPrefillParams& p, std::vector<int64_t>* outShape, std::vector<int64_t>* lseShape);
void gatherLatentCacheOutShapes(GatherLatentCacheParams& p, std::vector<int64_t>* kvCShape, std::vector<int64_t>* kPeShape);
void upProjectKvOutShapes(UpProjectKvParams& p, std::vector<int64_t>* kNopeShape, std::vector<int64_t>* vShape);
void mergeAttentionStatesOutShapes(MergeAttentionStatesParams& p, std::vector<int64_t>* outShape, std::vector<int64_t>* lseShape);
void validate(MlaPrefillParams& p, const Device& device);
void validatePlan(const MlaPrefillParams& p, const std::string& backend);
void validate(GatherLatentCacheParams& p, const Device& device);
void validate(UpProjectKvParams& p, const Device& device);
void validate(MergeAttentionStatesParams& p, const Device& device);
// Sparse attention and the indexer: the output shapes (inputs validated) and full validation.
void mlaSparseDecodeOutShapes(MlaSparseDecodeParams& p, std::vector<int64_t>* outShape, std::vector<int64_t>* lseShape);
void mlaSparsePrefillOutShapes(MlaSparsePrefillParams& p, std::vector<int64_t>* outShape, std::vector<int64_t>* lseShape);
void lightningIndexerOutShapes(LightningIndexerParams& p, std::vector<int64_t>* indicesShape, std::vector<int64_t>* scoresShape);
void validate(MlaSparseDecodeParams& p, const Device& device);
void validate(MlaSparsePrefillParams& p, const Device& device);
void validate(AppendIndexerCacheParams& p, const Device& device);
void validate(LightningIndexerParams& p, const Device& device);
// The cumulative lengths planPrefill and mlaPrefill take: [batch + 1] i32 on the host, starting at 0, never
// decreasing. Throws mla::Error naming `t`.
void validateCuSeqLens(const TensorView& t);
// One side of a copy may be on the host or on another device of `device`'s kind (a peer copy); the other must be on
// `device` (or the host too).
void validate(CopyParams& p, const Device& device);

}  // namespace mla
