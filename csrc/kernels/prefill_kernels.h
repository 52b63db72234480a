// Launch arguments of the prefill kernels (prefill.cu, gather.cu, gemm_nt.cu, merge.cu): plain structs shared by the
// host code of the CUDA backend and the device code, in the namespaces mla_kernels.h sets up (mla::kernels on a GPU,
// mla::kernels_sim under cuda-sim).
#pragma once
#include "mla_kernels.h"

namespace mla {
namespace MLA_KERNEL_NS {

// The tile shapes the prefill attention kernel is compiled with (prefill.cu), chosen from the device's shared memory.
enum class PrefillConfig : int {
  Large = 0,  // 64 queries x 2 heads per CTA (the rope key tile shared by both), 32 keys per stage, 2 stages, 8 warps:
              // ~127 KB shared at DeepSeek's dims (sm_80, 90, 100)
  Small = 1,  // 64 queries x 1 head, 32 keys per stage, 3 stages, 4 warps: ~90 KB (sm_86, 89, 120)
};
struct PrefillConfigInfo {
  int blockM, heads, blockN, stages, threads;
};
PrefillConfigInfo prefillConfigInfo(PrefillConfig config);
// Dynamic shared memory of the prefill kernel for these dims.
int prefillSmemBytes(PrefillConfig config, int nopeDim, int ropeDim, int vHeadDim);
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
  ElemType elem;  // of kvC and kPe (and of the cache, unless cacheFp8)
  int cacheFp8;
  float cacheScale;
  const void* cache;          // [numBlocks * blockSize, kvLoraRank + ropeDim]
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

// The attention CTAs of the work list (nothing when numWork is 0), and the padding rows (nothing when there are
// none; a replayed graph's launch covers every row that can be padding).
cudaError_t launchPrefill(const PrefillArgs& args, cudaStream_t stream);
bool prefillHasPadding(const PrefillArgs& args);
cudaError_t launchPrefillPad(const PrefillArgs& args, cudaStream_t stream);
// Allows the prefill kernels their shared memory for these dims (a no-op under emulation).
cudaError_t preparePrefill(PrefillConfig config, int nopeDim, int ropeDim, int vHeadDim);
cudaError_t launchGather(const GatherArgs& args, cudaStream_t stream);
cudaError_t launchGemmNt(const GemmNtArgs& args, cudaStream_t stream);
// The GEMM kernel's dynamic shared memory (under the 48 KB every GPU allows without opting in).
int gemmNtSmemBytes();
cudaError_t launchMerge(const MergeArgs& args, cudaStream_t stream);

}  // namespace MLA_KERNEL_NS
}  // namespace mla
