// Latent-cache gather for prefill: each sequence's cached rows (a range of positions, through its block table) copied
// into dense kvC and kPe, an fp8 cache dequantised exactly (e4m3 value times the scale, rounded once to the output
// type; an fp8_ds_mla row's values times their tile's scale, its bf16 rope part converted). One warp per output row: its lane 0 finds the row's sequence (binary search of cuSeqLens) and cache slot, the
// warp moves the row, in 16-byte vectors where the widths allow it. Rows past the last sequence's are zero.
#include "mla_device.cuh"

namespace mla {
namespace MLA_KERNEL_NS {
namespace {

constexpr int kRowsPerCta = 4;

enum class GatherCache { Elem, Fp8, DsMla };

template <ElemType E, GatherCache kCache>
__global__ void __launch_bounds__(32 * kRowsPerCta) gatherLatentCacheKernel(const GatherArgs args) {
  using T = typename Elem<E>::T;
  const int row = blockIdx.x * kRowsPerCta + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= args.numRows) return;  // the whole warp
  const int rank = args.kvLoraRank, rope = args.ropeDim, width = rank + rope;
  T* dstC = static_cast<T*>(args.kvC) + static_cast<size_t>(row) * rank;
  T* dstP = static_cast<T*>(args.kPe) + static_cast<size_t>(row) * rope;
  int slot = -1;  // -1: a row past the gathered ones
  if (lane == 0 && row < ld_global(args.cuSeqLens + args.batch)) {
    int lo = 0, hi = args.batch - 1;  // the sequence b with cuSeqLens[b] <= row < cuSeqLens[b + 1]
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (ld_global(args.cuSeqLens + mid + 1) > row) hi = mid;
      else lo = mid + 1;
    }
    const int pos = (args.seqStarts ? ld_global(args.seqStarts + lo) : 0) + row - ld_global(args.cuSeqLens + lo);
    slot = ld_global(args.blockTable + static_cast<size_t>(lo) * args.maxBlocksPerSeq + pos / args.blockSize) * args.blockSize + pos % args.blockSize;
  }
  slot = __shfl_sync(0xffffffffu, slot, 0);
  if (slot < 0) {
    for (int c = lane; c < rank; c += 32) st_global(dstC + c, Elem<E>::fromFloat(0.f));
    for (int c = lane; c < rope; c += 32) st_global(dstP + c, Elem<E>::fromFloat(0.f));
    return;
  }
  if constexpr (kCache == GatherCache::DsMla) {
    constexpr int kTile = 128;
    const uint8_t* src = static_cast<const uint8_t*>(args.cache) + static_cast<size_t>(slot) * (rank + 4 * (rank / kTile) + 2 * rope);
    const float* scales = reinterpret_cast<const float*>(src + rank);
    const __nv_bfloat16* pe = reinterpret_cast<const __nv_bfloat16*>(src + rank + 4 * (rank / kTile));
    for (int c = lane; c < rank; c += 32) st_global(dstC + c, Elem<E>::fromFloat(fp8e4m3ToFloat(ld_global(src + c)) * ld_global(scales + c / kTile)));
    for (int c = lane; c < rope; c += 32) st_global(dstP + c, Elem<E>::fromFloat(__bfloat162float(ld_global(pe + c))));
  } else if constexpr (kCache == GatherCache::Fp8) {
    const uint8_t* src = static_cast<const uint8_t*>(args.cache) + static_cast<size_t>(slot) * width;
    for (int c = lane; c < width; c += 32) {
      const T x = Elem<E>::fromFloat(fp8e4m3ToFloat(ld_global(src + c)) * args.cacheScale);
      st_global(c < rank ? dstC + c : dstP + (c - rank), x);
    }
  } else {
    const T* src = static_cast<const T*>(args.cache) + static_cast<size_t>(slot) * width;
    if (rank % 8 == 0 && rope % 8 == 0) {  // every row and both parts start on 16 bytes
      for (int c = lane; c < rank / 8; c += 32) st_global_16(dstC + 8 * c, ld_global_16(src + 8 * c));
      for (int c = lane; c < rope / 8; c += 32) st_global_16(dstP + 8 * c, ld_global_16(src + rank + 8 * c));
    } else {
      for (int c = lane; c < width; c += 32) st_global(c < rank ? dstC + c : dstP + (c - rank), ld_global(src + c));
    }
  }
}

template <GatherCache kCache>
cudaError_t launchWith(const GatherArgs& args, cudaStream_t stream) {
  const dim3 grid((args.numRows + kRowsPerCta - 1) / kRowsPerCta);
  return args.elem == ElemType::BF16
             ? mla_launch(gatherLatentCacheKernel<ElemType::BF16, kCache>, "gatherLatentCacheKernel", grid, dim3(32 * kRowsPerCta), 0, stream, args)
             : mla_launch(gatherLatentCacheKernel<ElemType::F16, kCache>, "gatherLatentCacheKernel", grid, dim3(32 * kRowsPerCta), 0, stream, args);
}

}  // namespace

cudaError_t launchGather(const GatherArgs& args, cudaStream_t stream) {
  if (args.numRows == 0) return cudaSuccess;
  if (args.cacheDsMla) return launchWith<GatherCache::DsMla>(args, stream);
  return args.cacheFp8 ? launchWith<GatherCache::Fp8>(args, stream) : launchWith<GatherCache::Elem>(args, stream);
}

}  // namespace MLA_KERNEL_NS
}  // namespace mla
