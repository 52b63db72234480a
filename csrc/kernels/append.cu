// Latent-cache append: one CTA per new token writes [kvC, RoPE(kPe)] into its cache slot. The latent part moves
// in 16-byte vectors when rows allow it; RoPE is computed in fp32 from the table row of the token's position. An fp8
// cache gets each element rounded to e4m3 after division by the cache's scale; an fp8_ds_mla cache its own kernel.
#include "mla_device.cuh"

namespace mla {
namespace MLA_KERNEL_NS {
namespace {

// Stores one element of a cache row: as the cache's element type, or as fp8 e4m3 of value / scale.
template <ElemType E, bool kFp8>
struct CacheStore {
  using T = typename Elem<E>::T;
  using Cell = T;
  __device__ __forceinline__ static void put(Cell* p, float v, float) { st_global(p, Elem<E>::fromFloat(v)); }
};
template <ElemType E>
struct CacheStore<E, true> {
  using Cell = uint8_t;
  __device__ __forceinline__ static void put(Cell* p, float v, float scale) { st_global(p, floatToFp8e4m3(v / scale)); }
};

// The CTA's token's rope key, value c handed to put(c, value): as it is, or rotated in fp32 from the table row of the
// token's position (interleaved pairs (x[2j], x[2j+1]) as DeepSeek; neox pairs (x[j], x[j + half])).
template <ElemType E, class Put>
__device__ __forceinline__ void ropeKey(const AppendArgs& args, int token, Put put) {
  const typename Elem<E>::T* kPe = static_cast<const typename Elem<E>::T*>(args.kPe) + static_cast<size_t>(token) * args.ropeDim;
  if (args.positions == nullptr) {
    for (int c = threadIdx.x; c < args.ropeDim; c += blockDim.x) put(c, Elem<E>::toFloat(ld_global(kPe + c)));
    return;
  }
  const int half = args.ropeDim / 2;
  const int pos = ld_global(args.positions + token);
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    const int a = args.ropeStyle == 1 ? 2 * j : j;
    const int b = args.ropeStyle == 1 ? 2 * j + 1 : j + half;
    const float c = ld_global(args.cos + static_cast<size_t>(pos) * half + j);
    const float s = ld_global(args.sin + static_cast<size_t>(pos) * half + j);
    const float x = Elem<E>::toFloat(ld_global(kPe + a)), y = Elem<E>::toFloat(ld_global(kPe + b));
    put(a, x * c - y * s);
    put(b, y * c + x * s);
  }
}

template <ElemType E, bool kFp8>
__global__ void __launch_bounds__(128) appendLatentCacheKernel(const AppendArgs args) {
  using T = typename Elem<E>::T;
  using Store = CacheStore<E, kFp8>;
  using Cell = typename Store::Cell;
  const int token = blockIdx.x;
  const int slot = ld_global(args.slotMapping + token);
  if (slot < 0) return;  // padding token: the whole CTA leaves
  const int width = args.kvLoraRank + args.ropeDim;
  Cell* row = static_cast<Cell*>(args.cache) + static_cast<size_t>(slot) * width;
  const T* kvC = static_cast<const T*>(args.kvC) + static_cast<size_t>(token) * args.kvLoraRank;

  const bool vectors = !kFp8 && args.kvLoraRank % 8 == 0 && width % 8 == 0 && (reinterpret_cast<uintptr_t>(args.cache) % 16) == 0 &&
                       (reinterpret_cast<uintptr_t>(args.kvC) % 16) == 0;
  if (vectors) {
    for (int c = threadIdx.x; c < args.kvLoraRank / 8; c += blockDim.x)
      st_global(reinterpret_cast<uint4*>(row) + c, ld_global(reinterpret_cast<const uint4*>(kvC) + c));
  } else {
    for (int c = threadIdx.x; c < args.kvLoraRank; c += blockDim.x) Store::put(row + c, Elem<E>::toFloat(ld_global(kvC + c)), args.cacheScale);
  }

  Cell* pe = row + args.kvLoraRank;
  ropeKey<E>(args, token, [&](int c, float v) { Store::put(pe + c, v, args.cacheScale); });
}

// FlashMLA's V3.2 row (fp8_ds_mla): each warp quantises 128-value tiles of the latent with the tile's scale
// max(amax / 448, FLT_MIN), the CPU's bytes exactly; the rope part (rotated in f32 when asked) as bf16.
template <ElemType E>
__global__ void __launch_bounds__(128) appendDsMlaKernel(const AppendArgs args) {
  using T = typename Elem<E>::T;
  constexpr int kTile = 128;
  const int token = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int slot = ld_global(args.slotMapping + token);
  if (slot < 0) return;
  const int V = args.kvLoraRank, tiles = V / kTile;
  uint8_t* row = static_cast<uint8_t*>(args.cache) + static_cast<size_t>(slot) * (V + 4 * tiles + 2 * args.ropeDim);
  const T* kvC = static_cast<const T*>(args.kvC) + static_cast<size_t>(token) * V;
  for (int tile = warp; tile < tiles; tile += 4) {
    float x[kTile / 32];
    float amax = 0.f;
#pragma unroll
    for (int j = 0; j < kTile / 32; ++j) {
      x[j] = Elem<E>::toFloat(ld_global(kvC + tile * kTile + lane + 32 * j));
      amax = fmaxf(amax, fabsf(x[j]));
    }
    for (int s = 16; s >= 1; s /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, s));
    const float scale = fmaxf(amax / 448.f, 1.17549435e-38f);
#pragma unroll
    for (int j = 0; j < kTile / 32; ++j) st_global(row + tile * kTile + lane + 32 * j, floatToFp8e4m3(x[j] / scale));
    if (lane == 0) st_global(reinterpret_cast<float*>(row + V) + tile, scale);
  }
  __nv_bfloat16* pe = reinterpret_cast<__nv_bfloat16*>(row + V + 4 * tiles);
  ropeKey<E>(args, token, [&](int c, float v) { st_global(pe + c, __float2bfloat16_rn(v)); });
}

template <bool kFp8>
cudaError_t launchAppendWith(const AppendArgs& args, cudaStream_t stream) {
  return args.elem == ElemType::BF16
             ? mla_launch(appendLatentCacheKernel<ElemType::BF16, kFp8>, "appendLatentCacheKernel", dim3(args.numTokens), dim3(128), 0, stream, args)
             : mla_launch(appendLatentCacheKernel<ElemType::F16, kFp8>, "appendLatentCacheKernel", dim3(args.numTokens), dim3(128), 0, stream, args);
}

}  // namespace

cudaError_t launchAppend(const AppendArgs& args, cudaStream_t stream) {
  if (args.numTokens == 0) return cudaSuccess;
  if (args.cacheDsMla)
    return args.elem == ElemType::BF16
               ? mla_launch(appendDsMlaKernel<ElemType::BF16>, "appendDsMlaKernel", dim3(args.numTokens), dim3(128), 0, stream, args)
               : mla_launch(appendDsMlaKernel<ElemType::F16>, "appendDsMlaKernel", dim3(args.numTokens), dim3(128), 0, stream, args);
  return args.cacheFp8 ? launchAppendWith<true>(args, stream) : launchAppendWith<false>(args, stream);
}

}  // namespace MLA_KERNEL_NS
}  // namespace mla
