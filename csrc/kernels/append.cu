// Latent-cache append: one CTA per new token writes [kvC, RoPE(kPe)] into its cache slot. The latent part moves
// in 16-byte vectors when rows allow it; RoPE is computed in fp32 from the table row of the token's position.
#include "mla_device.cuh"

namespace mla {
namespace MLA_KERNEL_NS {
namespace {

template <ElemType E>
__global__ void __launch_bounds__(128) appendLatentCacheKernel(const AppendArgs args) {
  using T = typename Elem<E>::T;
  const int token = blockIdx.x;
  const int slot = ld_global(args.slotMapping + token);
  if (slot < 0) return;  // padding token: the whole CTA leaves
  const int width = args.kvLoraRank + args.ropeDim;
  T* row = static_cast<T*>(args.cache) + static_cast<size_t>(slot) * width;
  const T* kvC = static_cast<const T*>(args.kvC) + static_cast<size_t>(token) * args.kvLoraRank;
  const T* kPe = static_cast<const T*>(args.kPe) + static_cast<size_t>(token) * args.ropeDim;

  const bool vectors = args.kvLoraRank % 8 == 0 && width % 8 == 0 && (reinterpret_cast<uintptr_t>(args.cache) % 16) == 0 &&
                       (reinterpret_cast<uintptr_t>(args.kvC) % 16) == 0;
  if (vectors) {
    for (int c = threadIdx.x; c < args.kvLoraRank / 8; c += blockDim.x)
      st_global(reinterpret_cast<uint4*>(row) + c, ld_global(reinterpret_cast<const uint4*>(kvC) + c));
  } else {
    for (int c = threadIdx.x; c < args.kvLoraRank; c += blockDim.x) st_global(row + c, ld_global(kvC + c));
  }

  T* pe = row + args.kvLoraRank;
  if (args.positions == nullptr) {
    for (int c = threadIdx.x; c < args.ropeDim; c += blockDim.x) st_global(pe + c, ld_global(kPe + c));
    return;
  }
  const int half = args.ropeDim / 2;
  const int pos = ld_global(args.positions + token);
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    // Interleaved pairs (x[2j], x[2j+1]) as DeepSeek; neox pairs (x[j], x[j + half]).
    const int a = args.ropeStyle == 1 ? 2 * j : j;
    const int b = args.ropeStyle == 1 ? 2 * j + 1 : j + half;
    const float c = ld_global(args.cos + static_cast<size_t>(pos) * half + j);
    const float s = ld_global(args.sin + static_cast<size_t>(pos) * half + j);
    const float x = Elem<E>::toFloat(ld_global(kPe + a)), y = Elem<E>::toFloat(ld_global(kPe + b));
    st_global(pe + a, Elem<E>::fromFloat(x * c - y * s));
    st_global(pe + b, Elem<E>::fromFloat(y * c + x * s));
  }
}

}  // namespace

cudaError_t launchAppend(const AppendArgs& args, cudaStream_t stream) {
  if (args.numTokens == 0) return cudaSuccess;
  return args.elem == ElemType::BF16
             ? mla_launch(appendLatentCacheKernel<ElemType::BF16>, "appendLatentCacheKernel", dim3(args.numTokens), dim3(128), 0, stream, args)
             : mla_launch(appendLatentCacheKernel<ElemType::F16>, "appendLatentCacheKernel", dim3(args.numTokens), dim3(128), 0, stream, args);
}

}  // namespace MLA_KERNEL_NS
}  // namespace mla
