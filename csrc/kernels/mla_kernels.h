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

}  // namespace MLA_KERNEL_NS
}  // namespace mla
