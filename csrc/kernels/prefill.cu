// Prefill attention in multi-head form: a flash-attention forward for MLA's shapes. One CTA takes blockM queries of
// one sequence for `heads` heads (a work item of the plan) and walks the sequence's keys in tiles of blockN through
// a multi-stage cp.async pipeline: per stage the tile's per-head keys kNope and values v of every head of the CTA, and
// its rope keys kPe ONCE (one per key, shared by the heads). Each warp owns 16 query rows of one head and whole rows
// of S, so the online softmax needs no shared memory: S = Q Kᵀ on tensor cores (mma.sync m16n8k16, fp32 accumulate;
// the k-steps of the nope part read the head's kNope tile, those of the rope part the shared kPe tile), scaled to base
// 2, masked only on tiles crossing a query's causal limit, exponentiated in registers, and P (as bf16 / f16 A
// fragments, straight from the accumulators) times the V tile added to O. Tiles past the CTA's last query's causal
// limit are never loaded.
#include "mla_device.cuh"

namespace mla {
namespace MLA_KERNEL_NS {
namespace {

template <int kBlockM_, int kHeads_, int kBlockN_, int kStages_>
struct PrefillTraits {
  static constexpr int kBlockM = kBlockM_, kHeads = kHeads_, kBlockN = kBlockN_, kStages = kStages_;
  static constexpr int kWarpsM = kBlockM / 16, kWarps = kWarpsM * kHeads, kThreads = kWarps * 32;
  static constexpr int kSTiles = kBlockN / 8;                 // S n8 tiles per warp (whole rows)
  static constexpr int kOTiles = kPrefillMaxVHeadDim / 8;     // O n8 tiles per warp, at most
  static constexpr int kPad = 8;  // elements added to each shared row: consecutive rows start 16 bytes apart in banks
  static_assert(kBlockM % 16 == 0 && kBlockN % 16 == 0 && kSTiles % 2 == 0, "tile shape");

  // Shared memory in elements: Q of every head, then per stage the keys (per head), the rope keys (once) and the
  // values (per head).
  struct Layout {
    int strideQ, strideKn, strideKp, strideV, q, kn, kp, v, stage, total;
  };
  __host__ __device__ static Layout layout(int nope, int rope, int vDim) {
    Layout l;
    l.strideQ = nope + rope + kPad;
    l.strideKn = nope + kPad;
    l.strideKp = rope + kPad;
    l.strideV = vDim + kPad;
    l.q = 0;
    l.kn = kHeads * kBlockM * l.strideQ;  // stage 0's keys; stage s at kn + s * stage
    l.kp = kHeads * kBlockN * l.strideKn;  // offsets within a stage
    l.v = l.kp + kBlockN * l.strideKp;
    l.stage = l.v + kHeads * kBlockN * l.strideV;
    l.total = l.kn + kStages * l.stage;
    return l;
  }
  static int smemBytes(int nope, int rope, int vDim) { return layout(nope, rope, vDim).total * 2; }
};

using LargeTraits = PrefillTraits<64, 2, 32, 2>;
using SmallTraits = PrefillTraits<64, 1, 32, 3>;

template <class Tr, ElemType E>
__global__ void __launch_bounds__(Tr::kThreads, 1) mlaPrefillKernel(const PrefillArgs args) {
  using T = typename Elem<E>::T;
  MLA_DYNAMIC_SHARED(uint4, smemRaw);  // one declared type for every instantiation (nvcc requires it)
  T* const smem = reinterpret_cast<T*>(smemRaw);
  if (args.numWorkOnDevice && static_cast<int>(blockIdx.x) >= *args.numWorkOnDevice) return;  // the whole CTA leaves
  const PrefillWorkItem item = args.work[blockIdx.x];
  const int H = args.numHeads, nope = args.nopeDim, rope = args.ropeDim, D = nope + rope, vDim = args.vHeadDim;
  const typename Tr::Layout L = Tr::layout(nope, rope, vDim);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int hh = warp / Tr::kWarpsM, slab = warp % Tr::kWarpsM;  // this warp's head (within the CTA) and 16 rows
  const int g = lane / 4, tig = lane % 4;                         // mma fragment coordinates

  // How many keys each query sees; the CTA loads keys up to what its last valid query sees.
  const int rowsValid = item.qLen - item.i0 < Tr::kBlockM ? item.qLen - item.i0 : Tr::kBlockM;
  const int firstLimit = args.causal ? item.kvLen - item.qLen + 1 + item.i0 : item.kvLen;
  const int kvEnd = args.causal ? item.kvLen - item.qLen + item.i0 + rowsValid : item.kvLen;
  const int numTiles = (kvEnd + Tr::kBlockN - 1) / Tr::kBlockN;

  const T* q = static_cast<const T*>(args.q);
  const T* kNope = static_cast<const T*>(args.kNope);
  const T* kPe = static_cast<const T*>(args.kPe);
  const T* v = static_cast<const T*>(args.v);
  T* sQ = smem + L.q;

  // Q of every head of the CTA (rows past the sequence's queries, and heads past numHeads, zero).
  {
    const int chunks = D / 8;
    for (int c = tid; c < Tr::kHeads * Tr::kBlockM * chunks; c += Tr::kThreads) {
      const int r = c / chunks, ch = c % chunks, h = r / Tr::kBlockM, i = r % Tr::kBlockM;
      const bool ok = i < rowsValid && item.head0 + h < H;
      const T* src = q + (static_cast<size_t>(ok ? item.qBegin + item.i0 + i : 0) * H + (ok ? item.head0 + h : 0)) * D + ch * 8;
      cp_async_16_pred(sQ + r * L.strideQ + ch * 8, src, ok);
    }
  }
  // Issues the copies of key tile t into its stage: per head its kNope rows and v rows, and the kPe rows once.
  auto loadTile = [&](int t) {
    T* stage = smem + L.kn + (t % Tr::kStages) * L.stage;
    const int key0 = t * Tr::kBlockN;
    const int nChunks = nope / 8, pChunks = rope / 8, vChunks = vDim / 8;
    for (int c = tid; c < Tr::kHeads * Tr::kBlockN * nChunks; c += Tr::kThreads) {
      const int r = c / nChunks, ch = c % nChunks, h = r / Tr::kBlockN, s = r % Tr::kBlockN;
      const bool ok = key0 + s < kvEnd && item.head0 + h < H;
      const T* src = kNope + (static_cast<size_t>(ok ? item.kvBegin + key0 + s : 0) * H + (ok ? item.head0 + h : 0)) * nope + ch * 8;
      cp_async_16_pred(stage + r * L.strideKn + ch * 8, src, ok);
    }
    for (int c = tid; c < Tr::kBlockN * pChunks; c += Tr::kThreads) {
      const int s = c / pChunks, ch = c % pChunks;
      const bool ok = key0 + s < kvEnd;
      cp_async_16_pred(stage + L.kp + s * L.strideKp + ch * 8, kPe + static_cast<size_t>(ok ? item.kvBegin + key0 + s : 0) * rope + ch * 8, ok);
    }
    for (int c = tid; c < Tr::kHeads * Tr::kBlockN * vChunks; c += Tr::kThreads) {
      const int r = c / vChunks, ch = c % vChunks, h = r / Tr::kBlockN, s = r % Tr::kBlockN;
      const bool ok = key0 + s < kvEnd && item.head0 + h < H;
      const T* src = v + (static_cast<size_t>(ok ? item.kvBegin + key0 + s : 0) * H + (ok ? item.head0 + h : 0)) * vDim + ch * 8;
      cp_async_16_pred(stage + L.v + r * L.strideV + ch * 8, src, ok);
    }
  };
  for (int s = 0; s < Tr::kStages - 1; ++s) {
    if (s < numTiles) loadTile(s);
    cp_async_commit();
  }

  // This thread's two query rows (fragment rows g and g + 8 of the warp's 16) and how many keys each sees.
  int limit[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = slab * 16 + g + 8 * i;
    limit[i] = args.causal ? item.kvLen - item.qLen + 1 + item.i0 + row : item.kvLen;
  }
  const int vTiles = vDim / 8;
  float o[Tr::kOTiles][4];
#pragma unroll
  for (int j = 0; j < Tr::kOTiles; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float rowMax[2] = {neg_inf(), neg_inf()}, rowSum[2] = {0.f, 0.f};  // rowSum: this thread's part of the row
  const T* qWarp = sQ + (hh * Tr::kBlockM + slab * 16) * L.strideQ;

  for (int it = 0; it < numTiles; ++it) {
    const int pre = it + Tr::kStages - 1;
    if (pre < numTiles) loadTile(pre);
    cp_async_commit();
    cp_async_wait<Tr::kStages - 1>();
    __syncthreads();
    const T* stage = smem + L.kn + (it % Tr::kStages) * L.stage;
    const T* kn = stage + hh * Tr::kBlockN * L.strideKn;
    const T* kp = stage + L.kp;
    const T* vt = stage + L.v + hh * Tr::kBlockN * L.strideV;

    // S = Q Kᵀ for the warp's 16 rows and the tile's blockN keys; two n8 tiles per ldmatrix.x4.
    float s[Tr::kSTiles][4];
#pragma unroll
    for (int j = 0; j < Tr::kSTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    for (int ks = 0; ks < D / 16; ++ks) {
      uint32_t a[4];
      ldmatrix_x4(a, qWarp + (lane % 16) * L.strideQ + ks * 16 + (lane / 16) * 8);
      const bool inNope = ks * 16 < nope;
      const T* kb = inNope ? kn + ks * 16 : kp + (ks * 16 - nope);
      const int kStride = inNope ? L.strideKn : L.strideKp;
#pragma unroll
      for (int j = 0; j < Tr::kSTiles; j += 2) {
        uint32_t b[4];
        ldmatrix_x4(b, kb + (j * 8 + (lane / 16) * 8 + lane % 8) * kStride + ((lane / 8) % 2) * 8);
        const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
        Elem<E>::mma(s[j], a, b0);
        Elem<E>::mma(s[j + 1], a, b1);
      }
    }

    // Scale to base 2; mask keys past each row's limit (only on tiles that cross a limit); the new row maxima.
    const int key0 = it * Tr::kBlockN;
    const bool mask = key0 + Tr::kBlockN > firstLimit;
    float tileMax[2] = {neg_inf(), neg_inf()};
#pragma unroll
    for (int j = 0; j < Tr::kSTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e / 2, key = key0 + j * 8 + tig * 2 + (e % 2);
        s[j][e] = !mask || key < limit[i] ? s[j][e] * args.scaleLog2 : neg_inf();
        tileMax[i] = fmaxf(tileMax[i], s[j][e]);
      }
    float alpha[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      tileMax[i] = fmaxf(tileMax[i], __shfl_xor_sync(0xffffffffu, tileMax[i], 1));
      tileMax[i] = fmaxf(tileMax[i], __shfl_xor_sync(0xffffffffu, tileMax[i], 2));
      const float newMax = fmaxf(rowMax[i], tileMax[i]);
      alpha[i] = rowMax[i] == neg_inf() ? 0.f : exp2f(rowMax[i] - newMax);
      rowMax[i] = newMax;
      rowSum[i] *= alpha[i];
    }
    // P = 2^(S - max), kept as the A fragments of P V: n8 tiles 2k and 2k + 1 of S are k-step k of the product.
    uint32_t p[Tr::kSTiles / 2][4];
#pragma unroll
    for (int j = 0; j < Tr::kSTiles; ++j) {
      float e[4];
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        e[x] = s[j][x] == neg_inf() ? 0.f : exp2f(s[j][x] - rowMax[x / 2]);
        rowSum[x / 2] += e[x];
      }
      p[j / 2][(j % 2) * 2 + 0] = Elem<E>::pack2(e[0], e[1]);  // row g
      p[j / 2][(j % 2) * 2 + 1] = Elem<E>::pack2(e[2], e[3]);  // row g + 8
    }
#pragma unroll
    for (int j = 0; j < Tr::kOTiles; ++j) {
      o[j][0] *= alpha[0];
      o[j][1] *= alpha[0];
      o[j][2] *= alpha[1];
      o[j][3] *= alpha[1];
    }
    // O += P V; two n8 tiles of V per ldmatrix.x4.trans.
#pragma unroll
    for (int kk = 0; kk < Tr::kBlockN / 16; ++kk) {
      const uint32_t a[4] = {p[kk][0], p[kk][1], p[kk][2], p[kk][3]};
#pragma unroll
      for (int j = 0; j < Tr::kOTiles; j += 2) {
        if (j < vTiles) {
          uint32_t b[4];
          // Lanes 16..31 address the next n8 tile (tile j again when there is none: its registers go unused).
          ldmatrix_x4_trans(b, vt + (kk * 16 + lane % 16) * L.strideV + (j + (j + 1 < vTiles ? lane / 16 : 0)) * 8);
          const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
          Elem<E>::mma(o[j], a, b0);
          if (j + 1 < vTiles) Elem<E>::mma(o[j + 1], a, b1);
        }
      }
    }
    __syncthreads();  // the stage is refilled by a later iteration
  }
  cp_async_wait<0>();

  // Normalise and store. Rows past the sequence's queries and heads past numHeads are not stored.
  const int head = item.head0 + hh;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    rowSum[i] += __shfl_xor_sync(0xffffffffu, rowSum[i], 1);
    rowSum[i] += __shfl_xor_sync(0xffffffffu, rowSum[i], 2);
    const int r = slab * 16 + g + 8 * i;
    if (r < rowsValid && head < H) {
      const float inv = rowSum[i] > 0.f ? 1.f / rowSum[i] : 0.f;
      const size_t row = static_cast<size_t>(item.qBegin + item.i0 + r) * H + head;
      T* outRow = static_cast<T*>(args.out) + row * vDim;
#pragma unroll
      for (int j = 0; j < Tr::kOTiles; ++j)
        if (j < vTiles) st_global(reinterpret_cast<uint32_t*>(outRow + j * 8 + tig * 2), Elem<E>::pack2(o[j][2 * i] * inv, o[j][2 * i + 1] * inv));
      if (tig == 0) st_global(args.lse + row, rowSum[i] > 0.f ? (rowMax[i] + log2f(rowSum[i])) * 0.69314718055994531f : neg_inf());
    }
  }
}

// Rows of out and lse past the last sequence: zero and -infinity.
template <ElemType E>
__global__ void __launch_bounds__(256) prefillPadKernel(const PrefillArgs args) {
  using T = typename Elem<E>::T;
  const int usedQ = args.usedQOnDevice ? *args.usedQOnDevice : args.usedQ;
  const size_t first = static_cast<size_t>(usedQ) * args.numHeads, end = static_cast<size_t>(args.totalQ) * args.numHeads;
  for (size_t r = first + blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; r < end; r += static_cast<size_t>(gridDim.x) * blockDim.x) {
    st_global(args.lse + r, neg_inf());
    T* row = static_cast<T*>(args.out) + r * args.vHeadDim;
    for (int c = 0; c < args.vHeadDim; ++c) st_global(row + c, Elem<E>::fromFloat(0.f));
  }
}

template <class Tr, ElemType E>
cudaError_t launchWith(const PrefillArgs& args, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(Tr::smemBytes(args.nopeDim, args.ropeDim, args.vHeadDim));
  return mla_launch(mlaPrefillKernel<Tr, E>, "mlaPrefillKernel", dim3(args.numWork), dim3(Tr::kThreads), smem, stream, args);
}

template <class Tr>
cudaError_t prepareWith(int nope, int rope, int vDim) {
#if !defined(__CUDACC__)
  (void)nope, (void)rope, (void)vDim;
  return cudaSuccess;
#else
  const int bytes = Tr::smemBytes(nope, rope, vDim);
  cudaError_t e = cudaFuncSetAttribute(mlaPrefillKernel<Tr, ElemType::BF16>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) e = cudaFuncSetAttribute(mlaPrefillKernel<Tr, ElemType::F16>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  return e;
#endif
}

}  // namespace

PrefillConfigInfo prefillConfigInfo(PrefillConfig config) {
  if (config == PrefillConfig::Large) return {LargeTraits::kBlockM, LargeTraits::kHeads, LargeTraits::kBlockN, LargeTraits::kStages, LargeTraits::kThreads};
  return {SmallTraits::kBlockM, SmallTraits::kHeads, SmallTraits::kBlockN, SmallTraits::kStages, SmallTraits::kThreads};
}

int prefillSmemBytes(PrefillConfig config, int nopeDim, int ropeDim, int vHeadDim) {
  return config == PrefillConfig::Large ? LargeTraits::smemBytes(nopeDim, ropeDim, vHeadDim) : SmallTraits::smemBytes(nopeDim, ropeDim, vHeadDim);
}

cudaError_t preparePrefill(PrefillConfig config, int nopeDim, int ropeDim, int vHeadDim) {
  return config == PrefillConfig::Large ? prepareWith<LargeTraits>(nopeDim, ropeDim, vHeadDim) : prepareWith<SmallTraits>(nopeDim, ropeDim, vHeadDim);
}

cudaError_t launchPrefill(const PrefillArgs& args, cudaStream_t stream) {
  if (args.numWork == 0) return cudaSuccess;
  const bool bf16 = args.elem == ElemType::BF16;
  if (args.config == PrefillConfig::Large)
    return bf16 ? launchWith<LargeTraits, ElemType::BF16>(args, stream) : launchWith<LargeTraits, ElemType::F16>(args, stream);
  return bf16 ? launchWith<SmallTraits, ElemType::BF16>(args, stream) : launchWith<SmallTraits, ElemType::F16>(args, stream);
}

bool prefillHasPadding(const PrefillArgs& args) { return args.numHeads > 0 && (args.usedQOnDevice ? args.totalQ > 0 : args.totalQ > args.usedQ); }

cudaError_t launchPrefillPad(const PrefillArgs& args, cudaStream_t stream) {
  if (!prefillHasPadding(args)) return cudaSuccess;
  // As many rows as are padding now, or (a replayed graph) as many as can be.
  const int rows = args.usedQOnDevice ? args.totalQ : args.totalQ - args.usedQ;
  const int64_t wanted = (static_cast<int64_t>(rows) * args.numHeads + 255) / 256;
  const int blocks = static_cast<int>(wanted < 1024 ? wanted : 1024);
  return args.elem == ElemType::BF16 ? mla_launch(prefillPadKernel<ElemType::BF16>, "prefillPadKernel", dim3(blocks), dim3(256), 0, stream, args)
                                     : mla_launch(prefillPadKernel<ElemType::F16>, "prefillPadKernel", dim3(blocks), dim3(256), 0, stream, args);
}

}  // namespace MLA_KERNEL_NS
}  // namespace mla
