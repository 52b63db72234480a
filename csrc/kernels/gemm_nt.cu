// C = A Bᵀ on tensor cores for the up-projection of prefill: kNope = kvC W_ukᵀ and v = kvC W_uvᵀ (the weights' heads
// stacked as rows, so both operands are k-contiguous, the layout mma.sync's row.col form takes). CTA tile 64 x 64,
// k-tiles of 32 through a 3-stage cp.async pipeline, 4 warps of 32 x 32 (2 m16 x 4 n8 tiles), fp32 accumulation;
// grid.z selects the product (both share A).
#include "mla_device.cuh"

namespace mla {
namespace MLA_KERNEL_NS {
namespace {

constexpr int kTileM = 64, kTileN = 64, kTileK = 32, kStages = 3, kThreads = 128;
constexpr int kStride = kTileK + 8;  // padded rows: ldmatrix row addresses 80 bytes apart hit distinct banks

template <ElemType E>
__global__ void __launch_bounds__(kThreads) gemmNtKernel(const GemmNtArgs args) {
  using T = typename Elem<E>::T;
  // [kStages][kTileM * kStride] of A, then the same of B: 30 KB whatever the shapes, so static (under 48 KB).
  __shared__ uint4 smemRaw[kStages * (kTileM + kTileN) * kStride * sizeof(T) / sizeof(uint4)];
  T (*const sA)[kTileM * kStride] = reinterpret_cast<T (*)[kTileM * kStride]>(smemRaw);
  T (*const sB)[kTileN * kStride] = reinterpret_cast<T (*)[kTileN * kStride]>(reinterpret_cast<T*>(smemRaw) + kStages * kTileM * kStride);
  // The product by a select, not an index: a run-time index into the parameter arrays would copy them to local memory.
  const bool second = blockIdx.z == 1;
  const int N = second ? args.n[1] : args.n[0], M = args.M, K = args.K;
  const int m0 = blockIdx.y * kTileM, n0 = blockIdx.x * kTileN;
  if (n0 >= N) return;  // the whole CTA: grid.x is sized for the wider product
  const T* a = static_cast<const T*>(args.a);
  const T* b = static_cast<const T*>(second ? args.b[1] : args.b[0]);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wm = warp / 2, wn = warp % 2, g = lane / 4, tig = lane % 4;
  const int numK = (K + kTileK - 1) / kTileK;

  auto load = [&](int kt) {
    const int st = kt % kStages;
    for (int c = tid; c < kTileM * (kTileK / 8); c += kThreads) {
      const int r = c / (kTileK / 8), k = kt * kTileK + (c % (kTileK / 8)) * 8;
      const bool okA = m0 + r < M && k < K, okB = n0 + r < N && k < K;
      cp_async_16_pred(&sA[st][r * kStride + (k - kt * kTileK)], a + static_cast<size_t>(okA ? m0 + r : 0) * K + (okA ? k : 0), okA);
      cp_async_16_pred(&sB[st][r * kStride + (k - kt * kTileK)], b + static_cast<size_t>(okB ? n0 + r : 0) * K + (okB ? k : 0), okB);
    }
  };
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < numK) load(s);
    cp_async_commit();
  }
  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  for (int kt = 0; kt < numK; ++kt) {
    if (kt + kStages - 1 < numK) load(kt + kStages - 1);
    cp_async_commit();
    cp_async_wait<kStages - 1>();
    __syncthreads();
    const T* tA = sA[kt % kStages];
    const T* tB = sB[kt % kStages];
#pragma unroll
    for (int ks = 0; ks < kTileK / 16; ++ks) {
      uint32_t fa[2][4];
#pragma unroll
      for (int i = 0; i < 2; ++i) ldmatrix_x4(fa[i], tA + (wm * 32 + i * 16 + lane % 16) * kStride + ks * 16 + (lane / 16) * 8);
#pragma unroll
      for (int j = 0; j < 4; j += 2) {
        uint32_t fb[4];
        ldmatrix_x4(fb, tB + (wn * 32 + j * 8 + (lane / 16) * 8 + lane % 8) * kStride + ks * 16 + ((lane / 8) % 2) * 8);
        const uint32_t b0[2] = {fb[0], fb[1]}, b1[2] = {fb[2], fb[3]};
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          Elem<E>::mma(acc[i][j], fa[i], b0);
          Elem<E>::mma(acc[i][j + 1], fa[i], b1);
        }
      }
    }
    __syncthreads();  // the stage is refilled by a later iteration
  }
  cp_async_wait<0>();

  T* c = static_cast<T*>(second ? args.c[1] : args.c[0]);
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + wm * 32 + i * 16 + g + 8 * h, col = n0 + wn * 32 + j * 8 + tig * 2;
        if (row < M && col < N)  // N is even (the backend refuses odd widths)
          st_global(reinterpret_cast<uint32_t*>(c + static_cast<size_t>(row) * N + col), Elem<E>::pack2(acc[i][j][2 * h], acc[i][j][2 * h + 1]));
      }
}

}  // namespace

cudaError_t launchGemmNt(const GemmNtArgs& args, cudaStream_t stream) {
  if (args.M == 0 || args.count == 0) return cudaSuccess;
  int widest = 0;
  for (int i = 0; i < args.count; ++i) widest = args.n[i] > widest ? args.n[i] : widest;
  const dim3 grid((widest + kTileN - 1) / kTileN, (args.M + kTileM - 1) / kTileM, args.count);
  return args.elem == ElemType::BF16 ? mla_launch(gemmNtKernel<ElemType::BF16>, "gemmNtKernel", grid, dim3(kThreads), 0, stream, args)
                                     : mla_launch(gemmNtKernel<ElemType::F16>, "gemmNtKernel", grid, dim3(kThreads), 0, stream, args);
}

}  // namespace MLA_KERNEL_NS
}  // namespace mla
