// Merge of two attention states by log-sum-exp (prefill's context chunks and new tokens). One warp per row: lane 0
// reads the two lse values and the warp shares the weights; a part with lse -infinity weighs nothing and the other
// is copied as it is.
#include "mla_device.cuh"

namespace mla {
namespace MLA_KERNEL_NS {
namespace {

constexpr int kRowsPerCta = 4;

template <ElemType E>
__global__ void __launch_bounds__(32 * kRowsPerCta) mergeAttentionStatesKernel(const MergeArgs args) {
  using T = typename Elem<E>::T;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerCta + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= args.rows) return;  // the whole warp
  float la = 0.f, lb = 0.f;
  if (lane == 0) {
    la = ld_global(args.lseA + row);
    lb = ld_global(args.lseB + row);
  }
  la = __shfl_sync(0xffffffffu, la, 0);
  lb = __shfl_sync(0xffffffffu, lb, 0);
  const T* a = static_cast<const T*>(args.outA) + row * args.width;
  const T* b = static_cast<const T*>(args.outB) + row * args.width;
  T* out = static_cast<T*>(args.out) + row * args.width;
  const bool emptyA = la == neg_inf(), emptyB = lb == neg_inf();
  if (emptyA || emptyB) {
    for (int c = lane; c < args.width; c += 32)
      st_global(out + c, emptyA && emptyB ? Elem<E>::fromFloat(0.f) : ld_global(emptyA ? b + c : a + c));
    if (lane == 0) st_global(args.lse + row, emptyA ? lb : la);
    return;
  }
  const float mx = fmaxf(la, lb);
  const float wa = exp2f((la - mx) * 1.4426950408889634f), wb = exp2f((lb - mx) * 1.4426950408889634f);
  const float ca = wa / (wa + wb), cb = wb / (wa + wb);
  for (int c = lane; c < args.width; c += 32)
    st_global(out + c, Elem<E>::fromFloat(ca * Elem<E>::toFloat(ld_global(a + c)) + cb * Elem<E>::toFloat(ld_global(b + c))));
  if (lane == 0) st_global(args.lse + row, mx + log2f(wa + wb) * 0.69314718055994531f);
}

}  // namespace

cudaError_t launchMerge(const MergeArgs& args, cudaStream_t stream) {
  if (args.rows == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((args.rows + kRowsPerCta - 1) / kRowsPerCta));
  return args.elem == ElemType::BF16
             ? mla_launch(mergeAttentionStatesKernel<ElemType::BF16>, "mergeAttentionStatesKernel", grid, dim3(32 * kRowsPerCta), 0, stream, args)
             : mla_launch(mergeAttentionStatesKernel<ElemType::F16>, "mergeAttentionStatesKernel", grid, dim3(32 * kRowsPerCta), 0, stream, args);
}

}  // namespace MLA_KERNEL_NS
}  // namespace mla
