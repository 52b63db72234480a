// Per-head products around attention on tensor cores: absorbQuery (q_lat = W_ukᵀ q_nope, W_uk stored k-major)
// and unabsorbOutput (o = W_uv o_lat, W_uv stored n-major). A CTA of 4 warps computes 16 tokens x 32 columns of one
// head; fragments are loaded straight from global memory in the mma layout (these matrices are small).
#include "mla_device.cuh"

namespace mla {
namespace MLA_KERNEL_NS {
namespace {

template <ElemType E>
__global__ void __launch_bounds__(128) headGemmKernel(const HeadGemmArgs args) {
  using T = typename Elem<E>::T;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const int t0 = blockIdx.x * 16, h = blockIdx.y, n0 = blockIdx.z * 32 + warp * 8;
  const T* a = static_cast<const T*>(args.a);
  const T* w = static_cast<const T*>(args.w) + static_cast<size_t>(h) * args.K * args.N;
  const int n = n0 + g;
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  if (n0 < args.N) {  // warp-uniform
    for (int k0 = 0; k0 < args.K; k0 += 16) {
      uint32_t af[4], bf[2];
      for (int i = 0; i < 4; ++i) {
        const int t = t0 + g + 8 * (i % 2), k = k0 + tig * 2 + 8 * (i / 2);
        af[i] = t < args.tokens ? ld_global(reinterpret_cast<const uint32_t*>(a + (static_cast<size_t>(t) * args.heads + h) * args.K + k)) : 0u;
      }
      for (int i = 0; i < 2; ++i) {
        const int k = k0 + tig * 2 + 8 * i;
        if (args.wKMajor) {
          // W_uk is [K, N]: the fragment's two k values of column n are a row apart.
          const uint32_t lo = Elem<E>::bits(ld_global(w + static_cast<size_t>(k) * args.N + n));
          const uint32_t hi = Elem<E>::bits(ld_global(w + static_cast<size_t>(k + 1) * args.N + n));
          bf[i] = lo | (hi << 16);
        } else {
          bf[i] = ld_global(reinterpret_cast<const uint32_t*>(w + static_cast<size_t>(n) * args.K + k));
        }
      }
      Elem<E>::mma(c, af, bf);
    }
    for (int i = 0; i < 2; ++i) {
      const int t = t0 + g + 8 * i;
      if (t < args.tokens)
        st_global(reinterpret_cast<uint32_t*>(static_cast<T*>(args.out) + (static_cast<size_t>(t) * args.heads + h) * args.outStride + n0 + tig * 2),
                  Elem<E>::pack2(c[2 * i], c[2 * i + 1]));
    }
  }
  // The tail (q_pe) is copied by the CTAs of the first column block.
  if (blockIdx.z == 0 && args.tail != nullptr) {
    const T* tail = static_cast<const T*>(args.tail);
    for (int e = threadIdx.x; e < 16 * args.tailWidth; e += blockDim.x) {
      const int t = t0 + e / args.tailWidth, j = e % args.tailWidth;
      if (t < args.tokens)
        st_global(static_cast<T*>(args.out) + (static_cast<size_t>(t) * args.heads + h) * args.outStride + args.N + j,
                  ld_global(tail + (static_cast<size_t>(t) * args.heads + h) * args.tailWidth + j));
    }
  }
}

}  // namespace

cudaError_t launchHeadGemm(const HeadGemmArgs& args, cudaStream_t stream) {
  if (args.tokens == 0) return cudaSuccess;
  const dim3 grid((args.tokens + 15) / 16, args.heads, (args.N + 31) / 32);
  return args.elem == ElemType::BF16
             ? mla_launch(headGemmKernel<ElemType::BF16>, "headGemmKernel", grid, dim3(128), 0, stream, args)
             : mla_launch(headGemmKernel<ElemType::F16>, "headGemmKernel", grid, dim3(128), 0, stream, args);
}

}  // namespace MLA_KERNEL_NS
}  // namespace mla
