// Fused absorbed-MLA decode. One CTA takes up to blockM query rows (heads x query positions of one sequence)
// and a range of that sequence's cache rows. Cache tiles stream through shared memory with a multi-stage cp.async
// pipeline; S = Q·Kᵀ and O += P·V run on tensor cores (mma.sync m16n8k16, fp32 accumulate); the softmax is online,
// in registers, in base 2. V is the first kvLoraRank columns of the same shared tile as K. An fp8 cache streams its
// bytes through the stages and is converted (exactly) into one tile of the element type before the mma loads.
// Warps: (blockM / 16) along M times kWarpsN along N. For S each warp owns blockN / kWarpsN columns; for O it owns
// kvLoraRank / kWarpsN columns. Row maxima and sums cross the kWarpsN warps of a row through shared memory.
#include "mla_device.cuh"

namespace mla {
namespace MLA_KERNEL_NS {
namespace {

template <int kBlockM_, int kBlockN_, int kStages_, int kWarpsN_, int kMaxV_>
struct DecodeTraits {
  static constexpr int kBlockM = kBlockM_, kBlockN = kBlockN_, kStages = kStages_, kWarpsN = kWarpsN_;
  static constexpr int kMinBlocksPerSm = 1;  // __launch_bounds__: the registers are sized for this many CTAs per SM
  static constexpr int kWarpsM = kBlockM / 16, kWarps = kWarpsM * kWarpsN, kThreads = kWarps * 32;
  static constexpr int kMaxV = kMaxV_;
  static constexpr int kSCols = kBlockN / kWarpsN, kSTiles = kSCols / 8;  // S columns / n8 tiles per warp
  static constexpr int kOTiles = kMaxV / kWarpsN / 8;                      // O n8 tiles per warp, at most
  static constexpr int kPad = 8;  // elements added to each shared row: consecutive rows start 16 bytes apart in banks
  static constexpr int kPStride = kBlockN + kPad;
  static constexpr int kThreadsPerRow = kThreads / kBlockN;  // loader threads per cache row
  static_assert(kBlockM % 16 == 0 && kSCols % 8 == 0 && kBlockN % 16 == 0, "tile shape");
  static_assert(kThreadsPerRow >= 1 && kThreadsPerRow <= 32 && (kThreadsPerRow & (kThreadsPerRow - 1)) == 0, "loader");

  // Shared memory: Q, the cache tiles (kStages of them; with an fp8 cache one converted tile plus kStages of fp8
  // bytes), P, and the row maxima and sums.
  static int smemBytes(int headDim, bool fp8 = false) {
    const int stride = headDim + kPad;
    const int tiles = fp8 ? 1 : kStages;
    return (kBlockM * stride + tiles * kBlockN * stride + kBlockM * kPStride) * 2 + 2 * kWarpsN * kBlockM * 4 +
           (fp8 ? kStages * kBlockN * headDim : 0);
  }
};

using LargeTraits = DecodeTraits<64, 32, 2, 2, 512>;
using SmallTraits = DecodeTraits<32, 16, 3, 2, 512>;

// Copies cache rows [rowStart, rowStart + blockN) of one sequence (found through its block-table row) into a
// shared stage of rows `stride` elements apart; rows at or past rowEnd are zero-filled and read nothing. Cell is the
// cache's element (bf16 / f16, or the bytes of an fp8 cache): 16 bytes per copy either way.
template <class Tr, class Cell>
__device__ __forceinline__ void loadCacheTile(Cell* stage, const Cell* cache, const int32_t* table, int rowStart, int rowEnd,
                                              int headDim, int blockSize, int blockShift, int stride) {
  constexpr int kPerCopy = 16 / static_cast<int>(sizeof(Cell));
  const int r = threadIdx.x / Tr::kThreadsPerRow, sub = threadIdx.x % Tr::kThreadsPerRow;
  const int row = rowStart + r;
  const bool valid = row < rowEnd;
  int slot = 0;
  if (sub == 0 && valid)
    slot = blockShift >= 0 ? (ld_global(table + (row >> blockShift)) << blockShift) + (row & (blockSize - 1))
                           : ld_global(table + row / blockSize) * blockSize + row % blockSize;
  // One block-table read per row, shared with the row's other loader threads.
  slot = __shfl_sync(0xffffffffu, slot, (threadIdx.x & 31) & ~(Tr::kThreadsPerRow - 1));
  const Cell* src = cache + static_cast<size_t>(slot) * headDim;
  Cell* dst = stage + r * stride;
  for (int c = sub; c < headDim / kPerCopy; c += Tr::kThreadsPerRow) cp_async_16_pred(dst + c * kPerCopy, src + c * kPerCopy, valid);
}

// Converts a stage of fp8 bytes into the element type, in the padded layout the mma loads read. Exact: every e4m3
// value is a bf16 and an f16 value; the cache's scale is applied to the scores and the output instead.
template <class Tr, ElemType E>
__device__ __forceinline__ void convertFp8Tile(typename Elem<E>::T* tile, const uint8_t* stage, int headDim, int stride) {
  const int chunks = headDim / 16;
  for (int i = threadIdx.x; i < Tr::kBlockN * chunks; i += Tr::kThreads) {
    const int r = i / chunks, c = i % chunks;
    const uint4 bytes = ld_shared(reinterpret_cast<const uint4*>(stage + r * headDim + c * 16));
    const uint32_t w[4] = {bytes.x, bytes.y, bytes.z, bytes.w};
    uint32_t packed[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const uint32_t word = w[k / 2] >> (16 * (k % 2));
      packed[k] = Elem<E>::pack2(fp8e4m3ToFloat(word & 0xffu), fp8e4m3ToFloat((word >> 8) & 0xffu));
    }
    count_fp8_converted(16);
    uint4* out = reinterpret_cast<uint4*>(tile + r * stride + c * 16);
    st_shared(out, make_uint4(packed[0], packed[1], packed[2], packed[3]));
    st_shared(out + 1, make_uint4(packed[4], packed[5], packed[6], packed[7]));
  }
}

template <class Tr, ElemType E, bool kFp8>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kMinBlocksPerSm) mlaDecodeKernel(const DecodeArgs args) {
  using T = typename Elem<E>::T;
  MLA_DYNAMIC_SHARED(uint4, smemRaw);  // one declared type for every instantiation (nvcc requires it)
  T* const smem = reinterpret_cast<T*>(smemRaw);
  if (args.numWorkOnDevice && static_cast<int>(blockIdx.x) >= *args.numWorkOnDevice) return;  // the whole CTA leaves
  const DecodeWorkItem item = args.work[blockIdx.x];
  const int D = args.headDim, V = args.kvLoraRank, H = args.numHeads;
  const int M = args.queryLen * H;  // query rows of the sequence
  const int stride = D + Tr::kPad;
  T* sQ = smem;
  T* sK = sQ + Tr::kBlockM * stride;
  T* sP = sK + (kFp8 ? 1 : Tr::kStages) * Tr::kBlockN * stride;
  float* sMax = reinterpret_cast<float*>(sP + Tr::kBlockM * Tr::kPStride);
  float* sSum = sMax + Tr::kWarpsN * Tr::kBlockM;
  uint8_t* s8 = reinterpret_cast<uint8_t*>(sSum + Tr::kWarpsN * Tr::kBlockM);  // fp8 stages (kFp8 only)

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / Tr::kWarpsN, wn = warp % Tr::kWarpsN;
  const int g = lane / 4, tig = lane % 4;  // mma fragment coordinates: group and thread in group
  const T* cache = static_cast<const T*>(args.cache);
  const int32_t* table = args.blockTable + static_cast<size_t>(item.batch) * args.maxBlocksPerSeq;
  const uint8_t* cache8 = static_cast<const uint8_t*>(args.cache);
  // Issues the copies of tile `t` into its stage.
  auto loadTile = [&](int t) {
    if constexpr (kFp8)
      loadCacheTile<Tr>(s8 + (t % Tr::kStages) * Tr::kBlockN * D, cache8, table, item.rowBegin + t * Tr::kBlockN, item.rowEnd, D,
                        args.blockSize, args.blockShift, D);
    else
      loadCacheTile<Tr>(sK + (t % Tr::kStages) * Tr::kBlockN * stride, cache, table, item.rowBegin + t * Tr::kBlockN, item.rowEnd, D,
                        args.blockSize, args.blockShift, stride);
  };
  const int numTiles = (item.rowEnd - item.rowBegin + Tr::kBlockN - 1) / Tr::kBlockN;

  // Q rows of this CTA (zero rows past M), then the first stages of cache rows.
  {
    const T* q = static_cast<const T*>(args.q) + static_cast<size_t>(item.batch) * M * D;
    const int chunksPerRow = D / 8;
    for (int c = threadIdx.x; c < Tr::kBlockM * chunksPerRow; c += Tr::kThreads) {
      const int r = c / chunksPerRow, col = (c % chunksPerRow) * 8;
      const int m = item.mTile * Tr::kBlockM + r;
      cp_async_16_pred(sQ + r * stride + col, q + static_cast<size_t>(m < M ? m : 0) * D + col, m < M);
    }
  }
  for (int s = 0; s < Tr::kStages - 1; ++s) {
    if (s < numTiles) loadTile(s);
    cp_async_commit();
  }

  // This thread's two query rows (fragment rows g and g + 8 of the warp's 16) and how many cache rows each sees.
  int localRow[2], limit[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    localRow[i] = wm * 16 + g + 8 * i;
    const int m = item.mTile * Tr::kBlockM + localRow[i];
    const int t = (m < M ? m : 0) / H;
    int visible = args.causal ? item.seqLen - args.queryLen + 1 + t : item.seqLen;
    visible = visible < item.seqLen ? visible : item.seqLen;
    limit[i] = visible < item.rowEnd ? visible : item.rowEnd;
  }

  const int oTiles = V / Tr::kWarpsN / 8;
  const int oCol0 = wn * (V / Tr::kWarpsN);
  float o[Tr::kOTiles][4];
#pragma unroll
  for (int j = 0; j < Tr::kOTiles; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float rowMax[2] = {neg_inf(), neg_inf()}, rowSum[2] = {0.f, 0.f};

  for (int it = 0; it < numTiles; ++it) {
    const int pre = it + Tr::kStages - 1;
    if (pre < numTiles) loadTile(pre);
    cp_async_commit();
    cp_async_wait<Tr::kStages - 1>();
    __syncthreads();
    const T* tile = sK + (kFp8 ? 0 : it % Tr::kStages) * Tr::kBlockN * stride;
    if constexpr (kFp8) {
      convertFp8Tile<Tr, E>(sK, s8 + (it % Tr::kStages) * Tr::kBlockN * D, D, stride);
      __syncthreads();
    }

    // S = Q Kᵀ for the warp's 16 rows and kSCols columns.
    float s[Tr::kSTiles][4];
#pragma unroll
    for (int j = 0; j < Tr::kSTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    for (int ks = 0; ks < D / 16; ++ks) {
      uint32_t a[4];
      ldmatrix_x4(a, sQ + (wm * 16 + lane % 16) * stride + ks * 16 + (lane / 16) * 8);
#pragma unroll
      for (int j = 0; j < Tr::kSTiles; ++j) {
        uint32_t b[2];
        ldmatrix_x2(b, tile + (wn * Tr::kSCols + j * 8 + lane % 8) * stride + ks * 16 + ((lane / 8) % 2) * 8);
        Elem<E>::mma(s[j], a, b);
      }
    }

    // Scale to base 2, mask rows past the split or past the causal limit, and take the row maxima.
    const int tileRow0 = item.rowBegin + it * Tr::kBlockN;
    float tileMax[2] = {neg_inf(), neg_inf()};
#pragma unroll
    for (int j = 0; j < Tr::kSTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e / 2;
        const int row = tileRow0 + wn * Tr::kSCols + j * 8 + tig * 2 + (e % 2);
        s[j][e] = row < limit[i] ? s[j][e] * args.scaleLog2 : neg_inf();
        tileMax[i] = fmaxf(tileMax[i], s[j][e]);
      }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      tileMax[i] = fmaxf(tileMax[i], __shfl_xor_sync(0xffffffffu, tileMax[i], 1));
      tileMax[i] = fmaxf(tileMax[i], __shfl_xor_sync(0xffffffffu, tileMax[i], 2));
      if (tig == 0) st_shared(&sMax[wn * Tr::kBlockM + localRow[i]], tileMax[i]);
    }
    __syncthreads();

    float alpha[2], partSum[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float newMax = rowMax[i];
      for (int w = 0; w < Tr::kWarpsN; ++w) newMax = fmaxf(newMax, ld_shared(&sMax[w * Tr::kBlockM + localRow[i]]));
      alpha[i] = rowMax[i] == neg_inf() ? 0.f : exp2f(rowMax[i] - newMax);
      rowMax[i] = newMax;
    }
#pragma unroll
    for (int j = 0; j < Tr::kSTiles; ++j) {
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        p[e] = s[j][e] == neg_inf() ? 0.f : exp2f(s[j][e] - rowMax[e / 2]);
        partSum[e / 2] += p[e];
      }
      const int col = wn * Tr::kSCols + j * 8 + tig * 2;
      st_shared(reinterpret_cast<uint32_t*>(sP + localRow[0] * Tr::kPStride + col), Elem<E>::pack2(p[0], p[1]));
      st_shared(reinterpret_cast<uint32_t*>(sP + localRow[1] * Tr::kPStride + col), Elem<E>::pack2(p[2], p[3]));
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      partSum[i] += __shfl_xor_sync(0xffffffffu, partSum[i], 1);
      partSum[i] += __shfl_xor_sync(0xffffffffu, partSum[i], 2);
      if (tig == 0) st_shared(&sSum[wn * Tr::kBlockM + localRow[i]], partSum[i]);
    }
#pragma unroll
    for (int j = 0; j < Tr::kOTiles; ++j) {
      o[j][0] *= alpha[0];
      o[j][1] *= alpha[0];
      o[j][2] *= alpha[1];
      o[j][3] *= alpha[1];
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float total = 0.f;
      for (int w = 0; w < Tr::kWarpsN; ++w) total += ld_shared(&sSum[w * Tr::kBlockM + localRow[i]]);
      rowSum[i] = rowSum[i] * alpha[i] + total;
    }

    // O += P V, V being the first kvLoraRank columns of the same tile.
#pragma unroll
    for (int ks = 0; ks < Tr::kBlockN / 16; ++ks) {
      uint32_t a[4];
      ldmatrix_x4(a, sP + (wm * 16 + lane % 16) * Tr::kPStride + ks * 16 + (lane / 16) * 8);
#pragma unroll
      for (int j = 0; j < Tr::kOTiles; ++j) {
        if (j < oTiles) {
          uint32_t b[2];
          ldmatrix_x2_trans(b, tile + (ks * 16 + lane % 16) * stride + oCol0 + j * 8);
          Elem<E>::mma(o[j], a, b);
        }
      }
    }
    __syncthreads();  // the stage and sP are rewritten by the next iteration
  }
  cp_async_wait<0>();

  // Normalise and store: the final output, or this split's partial (fp32, lse in base 2) for the combine kernel.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int m = item.mTile * Tr::kBlockM + localRow[i];
    if (m < M) {
    const float inv = rowSum[i] > 0.f ? args.cacheScale / rowSum[i] : 0.f;  // an fp8 cache's scale applies to V here
    const float lse2 = rowSum[i] > 0.f ? rowMax[i] + log2f(rowSum[i]) : neg_inf();
    if (item.partial < 0) {
      T* outRow = static_cast<T*>(args.out) + (static_cast<size_t>(item.batch) * M + m) * V;
#pragma unroll
      for (int j = 0; j < Tr::kOTiles; ++j)
        if (j < oTiles)
          st_global(reinterpret_cast<uint32_t*>(outRow + oCol0 + j * 8 + tig * 2),
                    Elem<E>::pack2(o[j][2 * i] * inv, o[j][2 * i + 1] * inv));
      if (wn == 0 && tig == 0) {
        const int t = m / H, h = m % H;
        st_global(args.lse + (static_cast<size_t>(item.batch) * H + h) * args.queryLen + t,
                  lse2 == neg_inf() ? neg_inf() : lse2 * 0.69314718055994531f);
      }
    } else {
      float* pRow = args.partialOut + (static_cast<size_t>(item.partial) * Tr::kBlockM + localRow[i]) * V;
#pragma unroll
      for (int j = 0; j < Tr::kOTiles; ++j)
        if (j < oTiles) st_global(reinterpret_cast<float2*>(pRow + oCol0 + j * 8 + tig * 2), make_float2(o[j][2 * i] * inv, o[j][2 * i + 1] * inv));
      if (wn == 0 && tig == 0) st_global(args.partialLse + static_cast<size_t>(item.partial) * Tr::kBlockM + localRow[i], lse2);
    }
    }
  }
}

// Merges a sequence's split results by their log-sum-exps: one CTA per (item, query row of the tile). Each split's
// lse is read once into shared memory and turned into its weight there.
template <ElemType E>
__global__ void __launch_bounds__(128) mlaCombineKernel(const CombineArgs args) {
  using T = typename Elem<E>::T;
  __shared__ float weight[kMaxDecodeSplits];
  __shared__ float stats[3];  // max lse, sum of weights, its reciprocal
  if (args.numItemsOnDevice && static_cast<int>(blockIdx.x) >= *args.numItemsOnDevice) return;  // the whole CTA leaves
  const CombineItem item = args.items[blockIdx.x];
  const int r = blockIdx.y;
  const int M = args.queryLen * args.numHeads, V = args.kvLoraRank;
  const int m = item.mTile * args.blockM + r;
  if (m >= M) return;  // the whole CTA leaves together
  const int n = item.numPartials;
  for (int p = threadIdx.x; p < n; p += blockDim.x)
    st_shared(&weight[p], ld_global(args.partialLse + static_cast<size_t>(item.firstPartial + p) * args.blockM + r));
  __syncthreads();
  if (threadIdx.x == 0) {
    float maxLse = neg_inf();
    for (int p = 0; p < n; ++p) maxLse = fmaxf(maxLse, weight[p]);
    float total = 0.f;
    for (int p = 0; p < n; ++p) {
      weight[p] = weight[p] == neg_inf() ? 0.f : exp2f(weight[p] - maxLse);  // empty splits weigh nothing
      total += weight[p];
    }
    stats[0] = maxLse;
    stats[1] = total;
    stats[2] = total > 0.f ? 1.f / total : 0.f;  // one division, not one per column
  }
  __syncthreads();
  const float total = stats[1], invTotal = stats[2];
  T* outRow = static_cast<T*>(args.out) + (static_cast<size_t>(item.batch) * M + m) * V;
  for (int c = threadIdx.x; c < V; c += blockDim.x) {
    float acc = 0.f;
    for (int p = 0; p < n; ++p)
      if (weight[p] > 0.f) acc += weight[p] * ld_global(args.partialOut + (static_cast<size_t>(item.firstPartial + p) * args.blockM + r) * V + c);
    st_global(outRow + c, Elem<E>::fromFloat(acc * invTotal));
  }
  if (threadIdx.x == 0) {
    const int t = m / args.numHeads, h = m % args.numHeads;
    st_global(args.lse + (static_cast<size_t>(item.batch) * args.numHeads + h) * args.queryLen + t,
              total > 0.f ? (stats[0] + log2f(total)) * 0.69314718055994531f : neg_inf());
  }
}

template <class Tr, ElemType E>
cudaError_t launchDecodeWith(const DecodeArgs& args, cudaStream_t stream) {
  if (args.numWork == 0) return cudaSuccess;
  const size_t smem = static_cast<size_t>(Tr::smemBytes(args.headDim, args.cacheFp8 != 0));
  return args.cacheFp8 ? mla_launch(mlaDecodeKernel<Tr, E, true>, "mlaDecodeKernel", dim3(args.numWork), dim3(Tr::kThreads), smem, stream, args)
                       : mla_launch(mlaDecodeKernel<Tr, E, false>, "mlaDecodeKernel", dim3(args.numWork), dim3(Tr::kThreads), smem, stream, args);
}

template <class Tr>
cudaError_t prepareWith(int headDim) {
#if !defined(__CUDACC__)
  (void)headDim;
  return cudaSuccess;
#else
  const int bytes = Tr::smemBytes(headDim), bytesFp8 = Tr::smemBytes(headDim, true);
  cudaError_t e = cudaFuncSetAttribute(mlaDecodeKernel<Tr, ElemType::BF16, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) e = cudaFuncSetAttribute(mlaDecodeKernel<Tr, ElemType::F16, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) e = cudaFuncSetAttribute(mlaDecodeKernel<Tr, ElemType::BF16, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytesFp8);
  if (e == cudaSuccess) e = cudaFuncSetAttribute(mlaDecodeKernel<Tr, ElemType::F16, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytesFp8);
  return e;
#endif
}

}  // namespace

DecodeConfigInfo decodeConfigInfo(DecodeConfig config) {
  if (config == DecodeConfig::Large)
    return {LargeTraits::kBlockM, LargeTraits::kBlockN, LargeTraits::kStages, LargeTraits::kThreads, LargeTraits::kMinBlocksPerSm};
  return {SmallTraits::kBlockM, SmallTraits::kBlockN, SmallTraits::kStages, SmallTraits::kThreads, SmallTraits::kMinBlocksPerSm};
}

int decodeSmemBytes(DecodeConfig config, int headDim, bool cacheFp8) {
  return config == DecodeConfig::Large ? LargeTraits::smemBytes(headDim, cacheFp8) : SmallTraits::smemBytes(headDim, cacheFp8);
}

cudaError_t prepareDecode(DecodeConfig config, int headDim) {
  return config == DecodeConfig::Large ? prepareWith<LargeTraits>(headDim) : prepareWith<SmallTraits>(headDim);
}

cudaError_t launchDecode(const DecodeArgs& args, cudaStream_t stream) {
  const bool bf16 = args.elem == ElemType::BF16;
  if (args.config == DecodeConfig::Large)
    return bf16 ? launchDecodeWith<LargeTraits, ElemType::BF16>(args, stream) : launchDecodeWith<LargeTraits, ElemType::F16>(args, stream);
  return bf16 ? launchDecodeWith<SmallTraits, ElemType::BF16>(args, stream) : launchDecodeWith<SmallTraits, ElemType::F16>(args, stream);
}

cudaError_t launchCombine(const CombineArgs& args, cudaStream_t stream) {
  if (args.numItems == 0) return cudaSuccess;
  const dim3 grid(args.numItems, args.blockM);
  return args.elem == ElemType::BF16
             ? mla_launch(mlaCombineKernel<ElemType::BF16>, "mlaCombineKernel", grid, dim3(128), 0, stream, args)
             : mla_launch(mlaCombineKernel<ElemType::F16>, "mlaCombineKernel", grid, dim3(128), 0, stream, args);
}

}  // namespace MLA_KERNEL_NS
}  // namespace mla
