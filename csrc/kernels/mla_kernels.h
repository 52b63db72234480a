// Launch arguments of the MLA kernels: plain structs shared by host code (csrc/cuda/) and device code, in
// mla::kernels for both builds, and the launchers each .cu file defines. Under cuda-sim the same source is compiled
// as host C++ with its functions in mla::kernels_sim, so both builds can live in one addon.
#pragma once
#include <cstdint>

// The kernels compiled for the emulator live in mla::kernels_sim, the device ones in mla::kernels. Host code of the
// real CUDA backend defines MLA_KERNELS_DEVICE_API before including this header (its target also builds cuda-sim).
#if defined(MLA_CUDA_SIM) && !defined(__CUDACC__) && !defined(MLA_KERNELS_DEVICE_API)
#define MLA_KERNEL_NS kernels_sim
#else
#define MLA_KERNEL_NS kernels
#endif

#ifdef MLA_KERNELS_DEVICE_API
#include <cuda_runtime_api.h>
#else
#include "cuda_compat.cuh"
#endif

namespace mla {
namespace kernels {

enum class ElemType : int { BF16 = 0, F16 = 1 };

// One CTA of decode: query rows [mTile * blockM, +blockM) of `batch`, cache rows [rowBegin, rowEnd).
struct DecodeWorkItem {
  int batch;
  int mTile;
  int rowBegin;
  int rowEnd;
  int seqLen;
  int partial;  // index of its partial result, or -1 when this CTA covers the whole sequence and writes `out`
};

// kvLoraRank 512 + ropeDim 64: the row width the decode configurations are sized for, and which of them a device has.
inline constexpr int kDeepSeekHeadDim = 576;
inline constexpr int kDeepSeekKvLoraRank = 512;

// The tile shapes a decode kernel is compiled with (see decode.cu); chosen from the device's shared memory.
enum class DecodeConfig : int {
  Large = 0,  // 64 query rows per CTA, 32 cache rows per stage, 2 stages, 8 warps: ~150 KB shared (sm_80)
  Small = 1,  // 32 query rows per CTA, 16 cache rows per stage, 3 stages, 4 warps: ~92 KB shared (sm_86, 89, 120)
  Wide = 2,   // 64 query rows per CTA, 64 cache rows per stage, 2 stages, 8 warps: ~226 KB shared (sm_90, 100)
};
struct DecodeConfigInfo {
  int blockM, blockN, stages, threads;
  int minBlocksPerSm;  // CTAs per SM the kernel's registers are bounded for (__launch_bounds__)
};

struct DecodeArgs {
  ElemType elem;            // of q and out (and of the cache, unless cacheFp8)
  DecodeConfig config;
  int cacheFp8;             // the cache is fp8 e4m3: its values are the stored ones times cacheScale
  int fp8Cvt;               // the device converts fp8 with cvt.rn.f16x2.e4m3x2 (sm_89+): the cache read in registers
  float cacheScale;
  const void* q;            // [batch, queryLen, numHeads, headDim]
  const void* cache;        // [numBlocks, blockSize, headDim]
  const int32_t* blockTable;  // [batch, maxBlocksPerSeq]
  void* out;                // [batch, queryLen, numHeads, kvLoraRank]
  float* lse;               // [batch, numHeads, queryLen]
  float* partialOut;        // [numPartials, blockM, kvLoraRank]
  float* partialLse;        // [numPartials, blockM]
  const DecodeWorkItem* work;
  int numWork;                  // CTAs launched
  const int* numWorkOnDevice;   // null, or how many of them have work, read by the kernel (a replayed CUDA graph
                                // launches its capacity; the plan uploaded before each replay says how many are used)
  int queryLen, numHeads, headDim, kvLoraRank, blockSize, maxBlocksPerSeq;
  int blockShift;  // log2(blockSize) when it is a power of two (16, 32, 64: shift and mask), else -1 (divide)
  int causal;
  float scaleLog2;  // softmaxScale * log2(e): scores are kept in base 2
};

// The most splits of one sequence: the planner's limit and the size of the combine kernel's weight table.
inline constexpr int kMaxDecodeSplits = 256;

// Merges the partial results of sequences split over several CTAs.
struct CombineItem {
  int batch;
  int mTile;
  int firstPartial;
  int numPartials;
};
struct CombineArgs {
  ElemType elem;
  const float* partialOut;
  const float* partialLse;
  const CombineItem* items;
  int numItems;                 // CTAs launched (times blockM)
  const int* numItemsOnDevice;  // null, or how many of them have work (as DecodeArgs::numWorkOnDevice)
  int blockM;
  void* out;
  float* lse;
  int queryLen, numHeads, kvLoraRank;
  int dependentLaunch;  // programmatic dependent launch (sm_90+): starts while the decode kernel ends, waits for it
};

struct AppendArgs {
  ElemType elem;            // of kvC and kPe (and of the cache, unless cacheFp8)
  int cacheFp8;             // the cache is fp8 e4m3: rows are stored as e4m3(value / cacheScale)
  int cacheDsMla;           // the cache is fp8_ds_mla: per 128 latent values e4m3(value / tile scale), the tile scales
                            // (f32) after the latent, then the rope part as bf16 (core/dtype.h's dsMlaRowBytes)
  float cacheScale;
  void* cache;              // [numSlots, rowWidth]
  const void* kvC;          // [numTokens, kvLoraRank]
  const void* kPe;          // [numTokens, ropeDim]
  const int32_t* slotMapping;
  const int32_t* positions; // null: no RoPE
  const float* cos;         // [maxPositions, ropeDim / 2]
  const float* sin;
  int ropeStyle;            // 1 interleaved, 2 neox
  int numTokens, kvLoraRank, ropeDim;
};

// out[t, h, :] = a[t, h, :] (K) times per-head matrix w[h] (K x N, stored k-major when `wKMajor`, else N x K).
struct HeadGemmArgs {
  ElemType elem;
  const void* a;     // [tokens, heads, K]
  const void* w;     // [heads, K, N] when wKMajor (W_uk), [heads, N, K] otherwise (W_uv)
  bool wKMajor;
  void* out;         // [tokens, heads, outStride], columns [0, N)
  int tokens, heads, K, N, outStride;
  const void* tail;  // optional [tokens, heads, tailWidth] copied to columns [N, N + tailWidth) (q_pe)
  int tailWidth;
};

// --- prefill (prefill.cu, gather.cu, gemm_nt.cu, merge.cu) ---

// The tile shapes the prefill attention kernel is compiled with (prefill.cu), chosen from the device's shared memory.
enum class PrefillConfig : int {
  Large = 0,  // 64 queries x 2 heads per CTA (the rope key tile shared by both), 32 keys per stage, 2 stages, 8 warps:
              // ~127 KB shared at DeepSeek's dims (sm_80, 90, 100)
  Small = 1,  // 64 queries x 1 head, 32 keys per stage, 3 stages, 4 warps: ~90 KB (sm_86, 89, 120)
};
struct PrefillConfigInfo {
  int blockM, heads, blockN, stages, threads;
};
// The largest dims the kernel's registers hold (larger ones are refused with E_UNSUPPORTED).
inline constexpr int kPrefillMaxVHeadDim = 128, kPrefillMaxQkDim = 256;

// One CTA of prefill: queries [i0, i0 + blockM) of one sequence (rows qBegin + i of q), heads [head0, head0 + heads),
// against the sequence's keys (rows kvBegin + s), as many as its last query sees.
struct PrefillWorkItem {
  int qBegin, qLen, kvBegin, kvLen, i0, head0;
};

struct PrefillArgs {
  ElemType elem;  // of q, kNope, kPe, v, out
  PrefillConfig config;
  const void* q;      // [totalQ, numHeads, nopeDim + ropeDim]
  const void* kNope;  // [totalKv, numHeads, nopeDim]
  const void* kPe;    // [totalKv, ropeDim]
  const void* v;      // [totalKv, numHeads, vHeadDim]
  void* out;          // [totalQ, numHeads, vHeadDim]
  float* lse;         // [totalQ, numHeads], natural log
  const PrefillWorkItem* work;
  int numWork;                 // CTAs launched
  const int* numWorkOnDevice;  // null, or how many of them have work (a replayed graph launches its capacity)
  int numHeads, nopeDim, ropeDim, vHeadDim;
  int causal;
  float scaleLog2;  // softmaxScale * log2(e)
  // Rows [usedQ, totalQ) of out and lse are padding: zero and -infinity (usedQOnDevice, when not null, is read on
  // the device instead: a replayed graph's lengths change).
  int totalQ, usedQ;
  const int* usedQOnDevice;
};

// Copies each sequence's cached rows to dense kvC and kPe (an fp8 cache dequantised); rows past the last sequence's
// are zero. The index arrays are on the device.
struct GatherArgs {
  ElemType elem;  // of kvC and kPe (and of the cache, unless cacheFp8 or cacheDsMla)
  int cacheFp8;
  int cacheDsMla;             // fp8_ds_mla rows (AppendArgs's): each value its e4m3 times its tile's scale, rope bf16
  float cacheScale;
  const void* cache;          // [numBlocks * blockSize, kvLoraRank + ropeDim] (fp8_ds_mla: its row bytes)
  const int32_t* blockTable;  // [batch, maxBlocksPerSeq]
  const int32_t* cuSeqLens;   // [batch + 1]
  const int32_t* seqStarts;   // [batch], or null (every sequence from position 0)
  void* kvC;                  // [numRows, kvLoraRank]
  void* kPe;                  // [numRows, ropeDim]
  int batch, maxBlocksPerSeq, blockSize, kvLoraRank, ropeDim, numRows;
};

// C_i[m, n] = Σ_k A[m, k] B_i[n, k] for the `count` (1 or 2) products sharing A: the up-projection's kNope (B = W_uk
// with its heads stacked as rows) and v (B = W_uv). Row-major, K a multiple of 8.
struct GemmNtArgs {
  ElemType elem;
  const void* a;  // [M, K]
  int M, K;
  const void* b[2];  // [N_i, K]
  void* c[2];        // [M, N_i]
  int n[2];
  int count;
};

// out = (e^lseA outA + e^lseB outB) / (e^lseA + e^lseB) per row, lse = log(e^lseA + e^lseB); a part with lse
// -infinity weighs nothing (the other is copied as it is).
struct MergeArgs {
  ElemType elem;
  const void* outA;
  const float* lseA;
  const void* outB;
  const float* lseB;
  void* out;
  float* lse;
  int64_t rows;
  int width;
};

// --- sparse decode (sparse.cu): DeepSeek-V3.2's MLA over the cache rows each query selects ---
// The widest rows the sparse decode kernel takes (its query and row buffers in shared memory, its output columns in
// registers): DeepSeek's 512 + 64.
inline constexpr int kSparseMaxHeadDim = 576;
inline constexpr int kSparseMaxKvLoraRank = 512;
inline constexpr int kSparseHeadsPerCta = 16;  // the heads one CTA scores against each row it reads
enum class SparseCache : int {
  Elem = 0,      // of q's dtype
  Fp8 = 1,       // fp8 e4m3, values the stored ones times cacheScale
  Fp8DsMla = 2,  // FlashMLA's V3.2 rows: kvLoraRank e4m3 | an f32 scale per 128 of them | ropeDim bf16
};
struct SparseDecodeArgs {
  ElemType elem;             // of q and out
  SparseCache cacheKind;
  float cacheScale;
  const void* q;             // [numQueries, numHeads, headDim], numQueries = batch * queryLen
  const void* cache;         // numSlots rows of rowBytes
  const int32_t* indices;    // [numQueries, topk] slots; outside [0, numSlots): padding
  void* out;                 // [numQueries, numHeads, kvLoraRank]
  float* lse;                // [batch, numHeads, queryLen], or [numQueries, numHeads] when lseTokenMajor
  int numQueries, queryLen, numHeads, headDim, kvLoraRank, topk;
  int64_t numSlots, rowBytes;
  int lseTokenMajor;
  float scaleLog2;           // softmaxScale · log2(e)
  // Dense mode (mlaDecode over a cache the dense kernel does not read): with blockTable set, indices and topk are
  // unused and query t of sequence b attends to its first visible rows (seqLens[b], less queryLen - 1 - t when causal),
  // slot blockTable[b][k / blockSize] * blockSize + k % blockSize.
  const int32_t* blockTable; // [batch, maxBlocksPerSeq] (device copy), or null
  const int32_t* seqLens;    // [batch] (device copy)
  int blockSize, maxBlocksPerSeq, causal;
  // Split over the rows (numSplits > 1): CTA z takes rows [z·splitRows, (z+1)·splitRows) of its query's and writes
  // fp32 partials, partial (query·numSplits + z) rows [numHeads] of [kvLoraRank] and their lse (base 2), which the
  // decode's combine kernel merges into out and lse.
  int numSplits, splitRows;
  float* partialOut;
  float* partialLse;
};


// --- lightning indexer (indexer.cu): DeepSeek-V3.2's key-cache append, index scores and top-k ---
// The largest indexer the scores kernel takes (its queries wait in shared memory as f32): V3.2's 64 heads of 128.
inline constexpr int kIndexerMaxHeads = 64;
inline constexpr int kIndexerMaxDim = 128;
struct IndexerAppendArgs {
  ElemType elem;             // of k (and of the cache unless cacheFp8)
  int cacheFp8;              // e4m3(k / scale) with scale = max(amax / 448, FLT_MIN) per key, into scales
  const void* k;             // [numTokens, indexDim]
  const int32_t* slotMapping;  // [numTokens]; negative: skip
  void* cache;               // [slots, indexDim]
  float* scales;             // [slots] (fp8 only)
  int numTokens, indexDim;
};
// Scores of query rows [rowBase, rowBase + numRows) (row = b * queryLen + t) into `work` [numRows, workStride], then
// per row the topk positions of largest score (ties: the earlier position; NaN ranks as -infinity), as slots in
// increasing position order, -1 / -infinity after them.
struct IndexerArgs {
  ElemType elem;             // of q (and of the cache unless cacheFp8)
  int cacheFp8;
  const void* q;             // [batch, queryLen, numHeads, indexDim]
  const float* weights;      // [batch, queryLen, numHeads]
  const void* cache;         // [slots, indexDim]
  const float* scales;       // [slots] (fp8 only)
  const int32_t* blockTable; // [batch, maxBlocksPerSeq] (device copy)
  const int32_t* seqLens;    // [batch] (device copy)
  float* work;               // [numRows, workStride] f32
  int32_t* indices;          // [batch * queryLen, topk]
  float* scores;             // [batch * queryLen, topk]
  int rowBase, numRows, queryLen, numHeads, indexDim, blockSize, maxBlocksPerSeq, topk, causal;
  int64_t workStride;        // maxBlocksPerSeq * blockSize: every position a sequence can have
};

}  // namespace kernels

namespace MLA_KERNEL_NS {
using namespace kernels;  // the argument types

DecodeConfigInfo decodeConfigInfo(DecodeConfig config);
// Dynamic shared memory the decode kernel needs for row width `headDim` (an fp8 cache, converted in place, the same).
int decodeSmemBytes(DecodeConfig config, int headDim, bool cacheFp8 = false);

cudaError_t launchDecode(const DecodeArgs& args, cudaStream_t stream);
cudaError_t launchCombine(const CombineArgs& args, cudaStream_t stream);
cudaError_t launchAppend(const AppendArgs& args, cudaStream_t stream);
cudaError_t launchHeadGemm(const HeadGemmArgs& args, cudaStream_t stream);
// Allows the decode kernels their shared memory (once per device; a no-op under emulation).
cudaError_t prepareDecode(DecodeConfig config, int headDim);

PrefillConfigInfo prefillConfigInfo(PrefillConfig config);
// Dynamic shared memory of the prefill kernel for these dims.
int prefillSmemBytes(PrefillConfig config, int nopeDim, int ropeDim, int vHeadDim);
// The attention CTAs of the work list (nothing when numWork is 0), and the padding rows (nothing when there are
// none; a replayed graph's launch covers every row that can be padding).
cudaError_t launchPrefill(const PrefillArgs& args, cudaStream_t stream);
bool prefillHasPadding(const PrefillArgs& args);
cudaError_t launchPrefillPad(const PrefillArgs& args, cudaStream_t stream);
// Allows the prefill kernels their shared memory for these dims (a no-op under emulation).
cudaError_t preparePrefill(PrefillConfig config, int nopeDim, int ropeDim, int vHeadDim);
cudaError_t launchGather(const GatherArgs& args, cudaStream_t stream);
cudaError_t launchGemmNt(const GemmNtArgs& args, cudaStream_t stream);
cudaError_t launchMerge(const MergeArgs& args, cudaStream_t stream);
cudaError_t launchSparseDecode(const SparseDecodeArgs& args, cudaStream_t stream);
cudaError_t launchIndexerAppend(const IndexerAppendArgs& args, cudaStream_t stream);
cudaError_t launchIndexerScores(const IndexerArgs& args, cudaStream_t stream);
cudaError_t launchIndexerTopk(const IndexerArgs& args, cudaStream_t stream);

}  // namespace MLA_KERNEL_NS
}  // namespace mla
