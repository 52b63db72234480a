// DeepSeek-V3.2's lightning indexer on the device: the key-cache append, the index scores and the per-row top-k.
//  - Append: one warp per new token; an fp8 cache gets e4m3(k / scale) with scale = max(amax / 448, FLT_MIN), the
//    CPU's bytes exactly (the same software e4m3 encoder).
//  - Scores: one CTA per query row and chunk of kKeysPerCta positions. The row's queries (all indexer heads) wait in
//    shared memory as f32; each warp takes a key at a time into shared memory, each lane scores its heads against it
//    (lane h and h + 32), and a warp sum gives Σ_h w[h] · ReLU(q[h] · k), times the key's scale for an fp8 cache.
//  - Top-k: one CTA per query row. A radix select over the scores' order-preserving bits (four 8-bit digits, shared
//    histograms) finds the topk-th largest key T and how many positions of exactly T are still wanted; a pass over
//    contiguous chunks then writes every position above T and the earliest positions at T, in position order, so the
//    result is the CPU's (the larger score, then the earlier position; NaN ranks as -infinity) in every thread order.
#include "mla_device.cuh"

namespace mla {
namespace MLA_KERNEL_NS {
namespace {

constexpr int kScoreWarps = 4, kKeysPerCta = 64;
constexpr int kQStride = kIndexerMaxDim + 1;  // odd: lane h's reads of head h's row fall in distinct banks
constexpr int kTopkThreads = 256;

__device__ __forceinline__ int visibleRows(const IndexerArgs& a, int b, int t) {
  const int len = ld_global(a.seqLens + b);
  const int n = a.causal ? len - a.queryLen + 1 + t : len;
  return n < 0 ? 0 : (n > len ? len : n);
}

__device__ __forceinline__ float warpSum(float v) {
  for (int s = 16; s >= 1; s /= 2) v += __shfl_xor_sync(0xffffffffu, v, s);
  return v;
}

template <ElemType E, bool kFp8>
__global__ void __launch_bounds__(32) indexerAppendKernel(const IndexerAppendArgs args) {
  using T = typename Elem<E>::T;
  const int token = blockIdx.x, lane = threadIdx.x, D = args.indexDim;
  const int slot = ld_global(args.slotMapping + token);
  if (slot < 0) return;
  const T* k = static_cast<const T*>(args.k) + static_cast<size_t>(token) * D;
  if constexpr (!kFp8) {
    T* dst = static_cast<T*>(args.cache) + static_cast<size_t>(slot) * D;
    for (int c = lane; c < D; c += 32) st_global(dst + c, ld_global(k + c));
  } else {
    float amax = 0.f;
    for (int c = lane; c < D; c += 32) amax = fmaxf(amax, fabsf(Elem<E>::toFloat(ld_global(k + c))));
    for (int s = 16; s >= 1; s /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, s));
    const float scale = fmaxf(amax / 448.f, 1.17549435e-38f);
    uint8_t* dst = static_cast<uint8_t*>(args.cache) + static_cast<size_t>(slot) * D;
    for (int c = lane; c < D; c += 32) st_global(dst + c, floatToFp8e4m3(Elem<E>::toFloat(ld_global(k + c)) / scale));
    if (lane == 0) st_global(args.scales + slot, scale);
  }
}

template <ElemType E, bool kFp8>
__global__ void __launch_bounds__(32 * kScoreWarps) indexerScoresKernel(const IndexerArgs args) {
  using T = typename Elem<E>::T;
  __shared__ float qs[kIndexerMaxHeads * kQStride];
  __shared__ float ws[kIndexerMaxHeads];
  __shared__ float keys[kScoreWarps][kIndexerMaxDim];
  __shared__ int visible;
  const int local = blockIdx.x, row = args.rowBase + local;
  const int b = row / args.queryLen, t = row % args.queryLen;
  if (threadIdx.x == 0) st_shared(&visible, visibleRows(args, b, t));
  __syncthreads();
  const int n0 = blockIdx.y * kKeysPerCta, n1 = min(ld_shared(&visible), n0 + kKeysPerCta);
  if (n0 >= n1) return;  // the same for the whole CTA
  const int H = args.numHeads, D = args.indexDim, bs = args.blockSize;
  const T* q = static_cast<const T*>(args.q) + static_cast<size_t>(row) * H * D;
  for (int i = threadIdx.x; i < H * D; i += 32 * kScoreWarps) st_shared(&qs[(i / D) * kQStride + i % D], Elem<E>::toFloat(ld_global(q + i)));
  for (int h = threadIdx.x; h < H; h += 32 * kScoreWarps) st_shared(&ws[h], ld_global(args.weights + static_cast<size_t>(row) * H + h));
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int32_t* table = args.blockTable + static_cast<size_t>(b) * args.maxBlocksPerSeq;
  float* out = args.work + static_cast<size_t>(local) * args.workStride;
  for (int n = n0 + warp; n < n1; n += kScoreWarps) {
    const int32_t block = __shfl_sync(0xffffffffu, lane == 0 ? ld_global(table + n / bs) : 0, 0);
    const int64_t slot = static_cast<int64_t>(block) * bs + n % bs;
    if constexpr (kFp8) {
      const uint8_t* src = static_cast<const uint8_t*>(args.cache) + slot * D;
      for (int c = lane; c < D; c += 32) st_shared(&keys[warp][c], fp8e4m3ToFloat(ld_global(src + c)));
    } else {
      const T* src = static_cast<const T*>(args.cache) + slot * D;
      for (int c = lane; c < D; c += 32) st_shared(&keys[warp][c], Elem<E>::toFloat(ld_global(src + c)));
    }
    __syncwarp();
    float acc = 0.f;
    for (int h = lane; h < H; h += 32) {
      float dot = 0.f;
      for (int c = 0; c < D; ++c) dot += ld_shared(&qs[h * kQStride + c]) * ld_shared(&keys[warp][c]);
      acc += ld_shared(&ws[h]) * fmaxf(dot, 0.f);
    }
    acc = warpSum(acc);
    if (lane == 0) st_global(out + n, kFp8 ? acc * ld_global(args.scales + slot) : acc);
    __syncwarp();  // every lane is done with the key before the next overwrites it
  }
}

// Larger score, larger key; -0 is +0 and NaN is -infinity, as the CPU's comparison sees them.
__device__ __forceinline__ uint32_t orderKey(float f) {
  uint32_t u = __float_as_uint(f);
  if (f != f) u = 0xff800000u;
  if ((u & 0x7fffffffu) == 0) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void __launch_bounds__(kTopkThreads) indexerTopkKernel(const IndexerArgs args) {
  __shared__ unsigned hist[256];
  __shared__ int gtBefore[kTopkThreads], eqBefore[kTopkThreads];
  __shared__ uint32_t chosenPrefix;
  __shared__ int chosenRemaining, visibleShared;
  const int local = blockIdx.x, row = args.rowBase + local, tid = threadIdx.x;
  const int b = row / args.queryLen, t = row % args.queryLen;
  if (tid == 0) st_shared(&visibleShared, visibleRows(args, b, t));
  __syncthreads();
  const int visible = ld_shared(&visibleShared), topk = args.topk, bs = args.blockSize;
  const float* sc = args.work + static_cast<size_t>(local) * args.workStride;
  const int32_t* table = args.blockTable + static_cast<size_t>(b) * args.maxBlocksPerSeq;
  int32_t* outIdx = args.indices + static_cast<size_t>(row) * topk;
  float* outScores = args.scores + static_cast<size_t>(row) * topk;
  auto slotOf = [&](int pos) { return static_cast<int32_t>(static_cast<int64_t>(ld_global(table + pos / bs)) * bs + pos % bs); };

  if (visible <= topk) {  // every visible position, then padding
    for (int j = tid; j < topk; j += kTopkThreads) {
      st_global(outIdx + j, j < visible ? slotOf(j) : -1);
      st_global(outScores + j, j < visible ? ld_global(sc + j) : neg_inf());
    }
    return;
  }

  uint32_t prefix = 0, mask = 0;
  int remaining = topk;  // positions still wanted among those whose key starts with prefix
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = tid; i < 256; i += kTopkThreads) st_shared(&hist[i], 0u);
    __syncthreads();
    for (int pos = tid; pos < visible; pos += kTopkThreads) {
      const uint32_t k = orderKey(ld_global(sc + pos));
      if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (tid == 0) {
      int above = 0, d = 255;
      for (; d > 0; --d) {
        const int c = static_cast<int>(ld_shared(&hist[d]));
        if (above + c >= remaining) break;
        above += c;
      }
      st_shared(&chosenPrefix, prefix | (static_cast<uint32_t>(d) << shift));
      st_shared(&chosenRemaining, remaining - above);
    }
    __syncthreads();
    prefix = ld_shared(&chosenPrefix);
    remaining = ld_shared(&chosenRemaining);
    mask |= 0xffu << shift;
  }
  const uint32_t threshold = prefix;  // the topk-th largest key; `remaining` positions at it are taken, earliest first

  const int chunk = (visible + kTopkThreads - 1) / kTopkThreads;
  const int p0 = min(visible, tid * chunk), p1 = min(visible, p0 + chunk);
  int gt = 0, eq = 0;
  for (int pos = p0; pos < p1; ++pos) {
    const uint32_t k = orderKey(ld_global(sc + pos));
    gt += k > threshold;
    eq += k == threshold;
  }
  st_shared(&gtBefore[tid], gt);
  st_shared(&eqBefore[tid], eq);
  __syncthreads();
  if (tid == 0) {
    int g = 0, e = 0;
    for (int i = 0; i < kTopkThreads; ++i) {
      const int gi = ld_shared(&gtBefore[i]), ei = ld_shared(&eqBefore[i]);
      st_shared(&gtBefore[i], g);
      st_shared(&eqBefore[i], e);
      g += gi;
      e += ei;
    }
  }
  __syncthreads();
  int g = ld_shared(&gtBefore[tid]), e = ld_shared(&eqBefore[tid]);
  for (int pos = p0; pos < p1; ++pos) {
    const float s = ld_global(sc + pos);
    const uint32_t k = orderKey(s);
    int j = -1;
    if (k > threshold) j = g++ + min(e, remaining);
    else if (k == threshold && e++ < remaining) j = g + e - 1;
    if (j >= 0) {
      st_global(outIdx + j, slotOf(pos));
      st_global(outScores + j, s);
    }
  }
}

// The kernel of q's (or k's) dtype and the cache's kind, from a table [bf16][fp8].
template <class Args>
using KernelTable = void (*const[2][2])(Args);
template <class Args>
cudaError_t launchTyped(const KernelTable<Args>& kernels, const char* name, const Args& args, dim3 grid, dim3 block, cudaStream_t stream) {
  return mla_launch(kernels[args.elem == ElemType::BF16][args.cacheFp8 ? 1 : 0], name, grid, block, 0, stream, args);
}

}  // namespace

cudaError_t launchIndexerAppend(const IndexerAppendArgs& args, cudaStream_t stream) {
  if (args.numTokens == 0) return cudaSuccess;
  const KernelTable<IndexerAppendArgs> kernels = {{indexerAppendKernel<ElemType::F16, false>, indexerAppendKernel<ElemType::F16, true>},
                                                  {indexerAppendKernel<ElemType::BF16, false>, indexerAppendKernel<ElemType::BF16, true>}};
  return launchTyped(kernels, "indexerAppendKernel", args, dim3(static_cast<unsigned>(args.numTokens)), dim3(32), stream);
}

cudaError_t launchIndexerScores(const IndexerArgs& args, cudaStream_t stream) {
  if (args.numRows == 0 || args.workStride == 0) return cudaSuccess;
  const KernelTable<IndexerArgs> kernels = {{indexerScoresKernel<ElemType::F16, false>, indexerScoresKernel<ElemType::F16, true>},
                                            {indexerScoresKernel<ElemType::BF16, false>, indexerScoresKernel<ElemType::BF16, true>}};
  const dim3 grid(static_cast<unsigned>(args.numRows), static_cast<unsigned>((args.workStride + kKeysPerCta - 1) / kKeysPerCta));
  return launchTyped(kernels, "indexerScoresKernel", args, grid, dim3(32 * kScoreWarps), stream);
}

cudaError_t launchIndexerTopk(const IndexerArgs& args, cudaStream_t stream) {
  if (args.numRows == 0) return cudaSuccess;
  return mla_launch(indexerTopkKernel, "indexerTopkKernel", dim3(static_cast<unsigned>(args.numRows)), dim3(kTopkThreads), 0, stream, args);
}

}  // namespace MLA_KERNEL_NS
}  // namespace mla
