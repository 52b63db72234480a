// Sparse MLA decode (DeepSeek-V3.2, FlashMLA's sparse decode): each query position attends to the cache rows its
// indices name. One CTA per query position and group of up to 16 heads: the heads' queries wait in shared memory as
// f32, and per selected slot the CTA reads the row once (gathered into shared memory in double-buffered stages of
// kStageRows rows by cp.async, the next stage in flight while this one is scored; dequantised to f32 in shared memory,
// whatever the cache's format), then each warp scores its 4 heads against it (lanes over the row, a warp sum) and
// folds the row into its heads' outputs with an online softmax (each lane owns 16 columns of the 512 per head). A slot
// outside the cache, -1 included, adds nothing; a query with no slot gets zeros and lse -infinity. In dense mode (blockTable set) the slots
// are every visible position of the query's sequence, read from the block table. Split (numSplits > 1), the CTAs of a
// query and head group take contiguous chunks of its slots and leave fp32 partials for the combine kernel.
#include "mla_device.cuh"

namespace mla {
namespace MLA_KERNEL_NS {
namespace {

constexpr int kWarps = 4, kHeadsPerWarp = 4, kHeadsPerCta = kWarps * kHeadsPerWarp;
static_assert(kHeadsPerCta == kSparseHeadsPerCta);
constexpr int kColsPerLane = kSparseMaxKvLoraRank / 32;
constexpr int kDsTile = 128;  // latent values per f32 scale of an FP8DsMla row (core/dtype.h's kDsMlaTile)
// Rows gathered per stage, two stages: the next stage's rows are in flight (cp.async) while this stage's are scored.
constexpr int kStageRows = 4;
constexpr int kMaxRowBytes = kSparseMaxHeadDim * 2;  // an f16/bf16 row; fp8 and fp8_ds_mla rows are shorter

template <ElemType E, SparseCache kCache>
__global__ void __launch_bounds__(32 * kWarps) mlaSparseDecodeKernel(const SparseDecodeArgs args) {
  using T = typename Elem<E>::T;
  __shared__ float qs[kHeadsPerCta][kSparseMaxHeadDim];
  __shared__ float row[kSparseMaxHeadDim];
  __shared__ __align__(16) uint8_t stage[2][kStageRows][kMaxRowBytes];
  __shared__ int64_t stageSlots[2][kStageRows];
  const int query = blockIdx.x, h0 = blockIdx.y * kHeadsPerCta, split = blockIdx.z;
  const int D = args.headDim, V = args.kvLoraRank, H = args.numHeads;
  const int heads = min(kHeadsPerCta, H - h0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  const T* q = static_cast<const T*>(args.q) + (static_cast<size_t>(query) * H + h0) * D;
  for (int i = threadIdx.x; i < heads * D; i += 32 * kWarps) st_shared(&qs[i / D][i % D], Elem<E>::toFloat(ld_global(q + i)));

  float o[kHeadsPerWarp][kColsPerLane];
  float runMax[kHeadsPerWarp], runSum[kHeadsPerWarp];
#pragma unroll
  for (int j = 0; j < kHeadsPerWarp; ++j) {
    runMax[j] = neg_inf();
    runSum[j] = 0.f;
#pragma unroll
    for (int c = 0; c < kColsPerLane; ++c) o[j][c] = 0.f;
  }

  const int b = query / args.queryLen, t = query % args.queryLen;
  const bool dense = args.blockTable != nullptr;
  const int32_t* indices = dense ? nullptr : args.indices + static_cast<size_t>(query) * args.topk;
  const int32_t* table = dense ? args.blockTable + static_cast<size_t>(b) * args.maxBlocksPerSeq : nullptr;
  int count = args.topk;
  if (dense) {
    const int seqLen = ld_global(args.seqLens + b);
    count = min(seqLen, max(0, args.causal ? seqLen - args.queryLen + 1 + t : seqLen));
  }
  const int kBegin = args.numSplits > 1 ? min(count, split * args.splitRows) : 0;
  const int kEnd = args.numSplits > 1 ? min(count, kBegin + args.splitRows) : count;
  // Rows go to shared memory in stages of kStageRows: 16-byte cp.async pieces when rows and cache are 16-byte aligned,
  // else plain byte copies (odd widths). Stage s + 1's slots are read and its rows issued before stage s is scored.
  const bool aligned = args.rowBytes % 16 == 0 && reinterpret_cast<uintptr_t>(args.cache) % 16 == 0;
  const int rowBytes = static_cast<int>(args.rowBytes);
  auto issue = [&](int first, int buf) {
    if (threadIdx.x < kStageRows) {
      const int k = first + threadIdx.x;
      int64_t slot = -1;
      if (k < kEnd) {
        slot = dense ? static_cast<int64_t>(ld_global(table + k / args.blockSize)) * args.blockSize + k % args.blockSize
                     : static_cast<int64_t>(ld_global(indices + k));
        if (slot < 0 || slot >= args.numSlots) slot = -1;
      }
      st_shared(&stageSlots[buf][threadIdx.x], slot);
    }
    __syncthreads();
    const uint8_t* cache = static_cast<const uint8_t*>(args.cache);
    if (aligned) {
      const int pieces = rowBytes / 16;
      for (int i = threadIdx.x; i < kStageRows * pieces; i += 32 * kWarps) {
        const int64_t slot = ld_shared(&stageSlots[buf][i / pieces]);
        if (slot >= 0) cp_async_16(&stage[buf][i / pieces][(i % pieces) * 16], cache + slot * args.rowBytes + (i % pieces) * 16);
      }
    } else {
      for (int i = threadIdx.x; i < kStageRows * rowBytes; i += 32 * kWarps) {
        const int64_t slot = ld_shared(&stageSlots[buf][i / rowBytes]);
        if (slot >= 0) st_shared(&stage[buf][i / rowBytes][i % rowBytes], ld_global(cache + slot * args.rowBytes + i % rowBytes));
      }
    }
    cp_async_commit();
  };
  const int numStages = (kEnd - kBegin + kStageRows - 1) / kStageRows;
  if (numStages > 0) issue(kBegin, 0);
  for (int stageIndex = 0; stageIndex < numStages; ++stageIndex) {
    const int buf = stageIndex & 1;
    if (stageIndex + 1 < numStages) {
      issue(kBegin + (stageIndex + 1) * kStageRows, buf ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // this stage's rows (every thread's pieces) and, at the first, the queries are in shared memory
    for (int r = 0; r < kStageRows; ++r) {
      const int64_t slot = ld_shared(&stageSlots[buf][r]);
      if (slot < 0) continue;  // the same for every thread: padding (or past the chunk) adds nothing
      const uint8_t* src = stage[buf][r];
      if constexpr (kCache == SparseCache::Fp8DsMla) {
        const float* tileScales = reinterpret_cast<const float*>(src + V);
        const uint8_t* rope = src + V + 4 * (V / kDsTile);
        for (int c = threadIdx.x; c < D; c += 32 * kWarps)
          st_shared(&row[c], c < V ? fp8e4m3ToFloat(ld_shared(src + c)) * ld_shared(&tileScales[c / kDsTile])
                                   : __bfloat162float(ld_shared(reinterpret_cast<const __nv_bfloat16*>(rope) + (c - V))));
      } else if constexpr (kCache == SparseCache::Fp8) {
        for (int c = threadIdx.x; c < D; c += 32 * kWarps) st_shared(&row[c], fp8e4m3ToFloat(ld_shared(src + c)) * args.cacheScale);
      } else {
        for (int c = threadIdx.x; c < D; c += 32 * kWarps) st_shared(&row[c], Elem<E>::toFloat(ld_shared(reinterpret_cast<const T*>(src) + c)));
      }
      __syncthreads();
#pragma unroll
      for (int j = 0; j < kHeadsPerWarp; ++j) {
        const int h = warp * kHeadsPerWarp + j;
        if (h >= heads) break;  // the same for the whole warp
        float dot = 0.f;
        for (int c = lane; c < D; c += 32) dot += ld_shared(&qs[h][c]) * ld_shared(&row[c]);
        for (int s = 16; s >= 1; s /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, s);
        const float score = dot * args.scaleLog2;
        const float newMax = fmaxf(runMax[j], score);
        const float alpha = exp2f(runMax[j] - newMax), p = exp2f(score - newMax);
        runMax[j] = newMax;
        runSum[j] = runSum[j] * alpha + p;
#pragma unroll
        for (int c = 0; c < kColsPerLane; ++c)
          if (lane + 32 * c < V) o[j][c] = o[j][c] * alpha + p * ld_shared(&row[lane + 32 * c]);
      }
      __syncthreads();  // the row is consumed before the next is converted
    }
    __syncthreads();  // every thread is past this stage's slots and rows before issue() refills the buffer
  }

#pragma unroll
  for (int j = 0; j < kHeadsPerWarp; ++j) {
    const int hl = warp * kHeadsPerWarp + j;
    if (hl >= heads) break;
    const int h = h0 + hl;
    const bool empty = runSum[j] == 0.f;
    const float inv = empty ? 0.f : 1.f / runSum[j];
    if (args.numSplits > 1) {
      const size_t partial = (static_cast<size_t>(query) * args.numSplits + split) * H + h;
#pragma unroll
      for (int c = 0; c < kColsPerLane; ++c)
        if (lane + 32 * c < V) st_global(args.partialOut + partial * V + lane + 32 * c, o[j][c] * inv);
      if (lane == 0) st_global(args.partialLse + partial, empty ? neg_inf() : runMax[j] + log2f(runSum[j]));
      continue;
    }
    T* out = static_cast<T*>(args.out) + (static_cast<size_t>(query) * H + h) * V;
#pragma unroll
    for (int c = 0; c < kColsPerLane; ++c)
      if (lane + 32 * c < V) st_global(out + lane + 32 * c, Elem<E>::fromFloat(o[j][c] * inv));
    if (lane == 0) {
      float* lse = args.lse + (args.lseTokenMajor ? static_cast<size_t>(query) * H + h : (static_cast<size_t>(b) * H + h) * args.queryLen + t);
      st_global(lse, empty ? neg_inf() : (runMax[j] + log2f(runSum[j])) * 0.69314718055994531f);
    }
  }
}

template <ElemType E>
cudaError_t launchFor(const SparseDecodeArgs& args, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(args.numQueries), static_cast<unsigned>((args.numHeads + kHeadsPerCta - 1) / kHeadsPerCta),
                  static_cast<unsigned>(args.numSplits > 1 ? args.numSplits : 1));
  const dim3 block(32 * kWarps);
  switch (args.cacheKind) {
    case SparseCache::Fp8: return mla_launch(mlaSparseDecodeKernel<E, SparseCache::Fp8>, "mlaSparseDecodeKernel", grid, block, 0, stream, args);
    case SparseCache::Fp8DsMla: return mla_launch(mlaSparseDecodeKernel<E, SparseCache::Fp8DsMla>, "mlaSparseDecodeKernel", grid, block, 0, stream, args);
    default: return mla_launch(mlaSparseDecodeKernel<E, SparseCache::Elem>, "mlaSparseDecodeKernel", grid, block, 0, stream, args);
  }
}

}  // namespace

cudaError_t launchSparseDecode(const SparseDecodeArgs& args, cudaStream_t stream) {
  if (args.numQueries == 0 || args.numHeads == 0) return cudaSuccess;
  return args.elem == ElemType::BF16 ? launchFor<ElemType::BF16>(args, stream) : launchFor<ElemType::F16>(args, stream);
}

}  // namespace MLA_KERNEL_NS
}  // namespace mla
