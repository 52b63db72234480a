// Fused absorbed-MLA decode. One CTA takes up to blockM query rows (heads x query positions of one sequence) and a
// range of that sequence's cache rows, streamed through shared memory in tiles of blockN rows with a cp.async pipeline.
// S = Q·Kᵀ and O += P·V run on tensor cores (mma.sync m16n8k16, fp32 accumulate); the softmax is online, in base 2;
// V is the first kvLoraRank columns of the same shared tile as K.
//
// Per tile, three barriers:
//   B1  the tile is in shared memory and every warp is done with the previous one: the loader warps refill the
//       freed stage, the QK warps compute S for their block of rows and columns and share their row maxima;
//   B2  the QK warps turn S into P (element type, shared) with the new row maxima and share the rescale factors;
//   B3  every warp rescales and accumulates its columns of O for all the CTA's rows: O += P·V.
// Warps whose query rows are all padding (heads x queryLen not a multiple of 16) skip their mma and ldmatrix work.
// Shared rows are XOR-swizzled in 16-byte chunks (chunk c of row r at c ^ (r % 8)), so ldmatrix and cp.async are
// bank-conflict free without padding. An fp8 cache lands in the first half of each row of a stage. Where the target
// has cvt.rn.f16x2.e4m3x2 (sm_89+) it stays there and Q·K / P·V convert their fragments in registers (kFp8Cvt below);
// elsewhere the warps that loaded it convert it in place (fp8x4ToElem): during the previous tile's P·V when the
// loader warps are not QK warps (Large, Wide), else just before B1.
#include "mla_device.cuh"

#include <atomic>

namespace mla {
namespace MLA_KERNEL_NS {
namespace {

template <int kBlockM_, int kBlockN_, int kStages_, int kWarps_, int kQkWarpsM_, int kQkWarpsN_, int kLoaderWarps_>
struct DecodeTraits {
  static constexpr int kBlockM = kBlockM_, kBlockN = kBlockN_, kStages = kStages_, kWarps = kWarps_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kMinBlocksPerSm = 1;  // __launch_bounds__: the registers are sized for this many CTAs per SM
  static constexpr int kMaxV = 512;          // kvLoraRank at most
  // S: kQkWarpsM x kQkWarpsN warps (the first ones), each kQkMt m16 x kQkNt n8 tiles of it.
  static constexpr int kQkWarpsM = kQkWarpsM_, kQkWarpsN = kQkWarpsN_, kQkWarps = kQkWarpsM * kQkWarpsN;
  static constexpr int kQkRows = kBlockM / kQkWarpsM, kQkCols = kBlockN / kQkWarpsN;
  static constexpr int kQkMt = kQkRows / 16, kQkNt = kQkCols / 8;
  // O: every warp, all kBlockM rows (kMt m16 tiles) by kVCols columns (kVNt n8 tiles).
  static constexpr int kMt = kBlockM / 16, kVCols = kMaxV / kWarps, kVNt = kVCols / 8;
  // The last kLoaderWarps warps issue the cache tiles' copies (and convert an fp8 cache).
  static constexpr int kLoaderWarps = kLoaderWarps_, kFirstLoader = kWarps - kLoaderWarps;
  static constexpr int kLoadRowsPerWarp = kBlockN / kLoaderWarps, kLanesPerRow = 32 / kLoadRowsPerWarp;
  // With loader warps that do no QK, an fp8 tile is converted during the previous tile's P·V (needs two stages).
  static constexpr bool kConvertEarly = kFirstLoader >= kQkWarps;
  static constexpr int kPChunks = kBlockN / 8;  // 16-byte chunks of a P row
  static_assert(kQkRows % 16 == 0 && kQkCols % 8 == 0 && kQkWarps <= kWarps, "QK warp tiles");
  static_assert(kVCols % 16 == 0 && kBlockN % 16 == 0 && kBlockM % 16 == 0, "PV warp tiles");
  static_assert(kBlockN % kLoaderWarps == 0 && 32 % kLoadRowsPerWarp == 0, "loader rows");
  static_assert(kPChunks == 2 || kPChunks == 4 || kPChunks == 8, "P rows of 2, 4 or 8 chunks");
  static_assert(!kConvertEarly || kStages == 2, "early fp8 conversion converts the one stage ahead");

  // Elements between shared rows of Q and the cache tiles: the row width rounded up to whole groups of 8 chunks (a
  // multiple of 128 bytes), which the swizzle permutes within.
  MLA_HOST_DEVICE static int rowStride(int headDim) { return (headDim + 63) / 64 * 64; }
  // Shared memory: Q, the stages, P, and the row statistics (the maxima and sums of each QK warp column, the rescale
  // factors, and the final maxima and sums for the epilogue). An fp8 cache is converted in place: the same.
  static int smemBytes(int headDim) {
    return (kBlockM * rowStride(headDim) + kStages * kBlockN * rowStride(headDim) + kBlockM * kBlockN) * 2 +
           (2 * kQkWarpsN + 3) * kBlockM * 4;
  }
};

// sm_90, sm_100 (227 KB): 64 query rows x 64 cache rows per stage, two stages, 8 warps; QK on warps 0-3 (32 x 32
// each, 256 bytes of ldmatrix per mma), loads and fp8 conversion on warps 4-7, P·V on all (64 x 64 each, 128 bytes).
using WideTraits = DecodeTraits<64, 64, 2, 8, 2, 2, 4>;
// sm_80 (163 KB): 64 x 32, two stages, 8 warps; QK on warps 0-3 (32 x 16 each).
using LargeTraits = DecodeTraits<64, 32, 2, 8, 2, 2, 4>;
// sm_86, sm_89, sm_120 (99 KB): 32 x 16, three stages, 4 warps, each doing QK (16 x 8), loads and P·V (32 x 128).
using SmallTraits = DecodeTraits<32, 16, 3, 4, 2, 2, 4>;

// Element offset of 16-byte chunk `c` of row `r` in a swizzled shared array of rows `stride` elements apart.
__device__ __forceinline__ int swizzled(int r, int c, int stride) { return r * stride + ((c ^ (r & 7)) * 8); }
// The same for P, whose rows are kPChunks chunks (8 rows span 8 bank groups with the row index's bits above them).
template <class Tr>
__device__ __forceinline__ int swizzledP(int r, int c) {
  constexpr int kRowsPerGroup = 8 / Tr::kPChunks;
  return r * Tr::kBlockN + ((c ^ ((r / kRowsPerGroup) % Tr::kPChunks)) * 8);
}

// kDeepSeekDims: headDim and kvLoraRank are DeepSeek's 576 and 512, known at compile time (the k-loops have constant
// trip counts and every warp's O columns are real: no runtime guards); otherwise they are read from args.
// kFp8Cvt (an fp8 cache, on a target with cvt.rn.f16x2.e4m3x2): the fp8 bytes stay as they landed and the mma
// fragments are converted in registers, K and V both, with f16 operands (Q scaled by a power of two into f16, P in
// f16); without it (sm_80, sm_86) the loader warps convert each tile in place to the element type.
template <class Tr, ElemType E, bool kFp8, bool kDeepSeekDims, bool kFp8Cvt = kFp8>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kMinBlocksPerSm) mlaDecodeKernel(const DecodeArgs args) {
  using T = typename Elem<E>::T;
  constexpr bool kCvt = kFp8 && kFp8Cvt && kArchHasFp8Cvt, kInPlace = kFp8 && !kCvt;
  constexpr bool kQRowStaged = kCvt && kDeepSeekDims;  // Q staged a row per warp, each row with its own scale (below)
  using C = Elem<kCvt ? ElemType::F16 : E>;  // the mma operands' type (and P's)
  MLA_DYNAMIC_SHARED(uint4, smemRaw);  // one declared type for every instantiation (nvcc requires it)
  if (args.numWorkOnDevice && static_cast<int>(blockIdx.x) >= *args.numWorkOnDevice) return;  // the whole CTA leaves
  griddep_launch_dependents();  // the combine may be scheduled once every CTA has started (it waits for them to end)
  const DecodeWorkItem item = args.work[blockIdx.x];
  static_assert(!kDeepSeekDims || Tr::kMaxV == kDeepSeekKvLoraRank, "every warp's O columns are real at DeepSeek's dims");
  const int D = kDeepSeekDims ? kDeepSeekHeadDim : args.headDim, V = kDeepSeekDims ? kDeepSeekKvLoraRank : args.kvLoraRank;
  const int H = args.numHeads;
  const int M = args.queryLen * H;                                         // query rows of the sequence
  const int mRows = min(Tr::kBlockM, M - item.mTile * Tr::kBlockM);       // of them, this CTA's (the rest is padding)
  const int stride = Tr::rowStride(D);
  T* const sQ = reinterpret_cast<T*>(smemRaw);
  T* const sK = sQ + Tr::kBlockM * stride;
  T* const sP = sK + Tr::kStages * Tr::kBlockN * stride;
  float* const sMaxPart = reinterpret_cast<float*>(sP + Tr::kBlockM * Tr::kBlockN);  // [kQkWarpsN][kBlockM]
  float* const sSumPart = sMaxPart + Tr::kQkWarpsN * Tr::kBlockM;                   // [kQkWarpsN][kBlockM]
  float* const sAlpha = sSumPart + Tr::kQkWarpsN * Tr::kBlockM;                     // [kBlockM]
  float* const sFinal = sAlpha + Tr::kBlockM;                                       // [2][kBlockM]: max, sum

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, tig = lane % 4;  // mma fragment coordinates: group and thread in group
  const int32_t* table = args.blockTable + static_cast<size_t>(item.batch) * args.maxBlocksPerSeq;
  const int numTiles = (item.rowEnd - item.rowBegin + Tr::kBlockN - 1) / Tr::kBlockN;
  const bool isLoader = warp >= Tr::kFirstLoader, isQk = warp < Tr::kQkWarps;

  // A loader warp's rows of a tile: lanes kLanesPerRow apart share a row; one block-table read per row.
  const int loadRow = (warp - Tr::kFirstLoader) * Tr::kLoadRowsPerWarp + lane / Tr::kLanesPerRow, loadSub = lane % Tr::kLanesPerRow;
  auto loadTile = [&](int t) {
    const int row = item.rowBegin + t * Tr::kBlockN + loadRow;
    const bool valid = row < item.rowEnd;
    int slot = 0;
    if (loadSub == 0 && valid)
      slot = args.blockShift >= 0 ? (ld_global(table + (row >> args.blockShift)) << args.blockShift) + (row & (args.blockSize - 1))
                                  : ld_global(table + row / args.blockSize) * args.blockSize + row % args.blockSize;
    slot = __shfl_sync(0xffffffffu, slot, lane & ~(Tr::kLanesPerRow - 1));
    T* stage = sK + (t % Tr::kStages) * Tr::kBlockN * stride;
    if constexpr (kFp8) {  // D bytes: chunk c to the row's chunk position c (swizzled); converted in place later
      const uint8_t* src = static_cast<const uint8_t*>(args.cache) + static_cast<size_t>(slot) * D;
      for (int c = loadSub; c < D / 16; c += Tr::kLanesPerRow) cp_async_16_pred(stage + swizzled(loadRow, c, stride), src + c * 16, valid);
    } else {
      const T* src = static_cast<const T*>(args.cache) + static_cast<size_t>(slot) * D;
      for (int c = loadSub; c < D / 8; c += Tr::kLanesPerRow) cp_async_16_pred(stage + swizzled(loadRow, c, stride), src + c * 8, valid);
    }
  };
  // Converts this loader warp's rows of a landed fp8 tile in place, one row at a time: every lane reads its words of
  // the row (8 bytes each) before any lane writes (the row's output covers its input). Rows of up to 1024 elements
  // (more than any configuration's shared memory takes), in at most 4 words per lane: the O accumulators leave no more.
  auto convertTile = [&](int t) {
    T* stage = sK + (t % Tr::kStages) * Tr::kBlockN * stride;
    const int words = D / 8;
    constexpr int kMaxWords = 1024 / 8 / 32;
    for (int i = 0; i < Tr::kLoadRowsPerWarp; ++i) {
      const int r = (warp - Tr::kFirstLoader) * Tr::kLoadRowsPerWarp + i;
      uint2 in[kMaxWords];
#pragma unroll
      for (int k = 0; k < kMaxWords; ++k) {
        const int q = lane + 32 * k;
        if (q < words) in[k] = ld_shared(reinterpret_cast<const uint2*>(stage + swizzled(r, q / 2, stride)) + q % 2);
      }
      __syncwarp();
#pragma unroll
      for (int k = 0; k < kMaxWords; ++k) {
        const int q = lane + 32 * k;
        if (q < words) {
          uint4 out;
          fp8x4ToElem<E>(in[k].x, out.x, out.y);
          fp8x4ToElem<E>(in[k].y, out.z, out.w);
          st_shared(reinterpret_cast<uint4*>(stage + swizzled(r, q, stride)), out);
        }
      }
      __syncwarp();
    }
  };

  // Q rows of this CTA (zero rows past M), then the first stages of cache rows. Q staged row by row in registers
  // (below) is not copied here.
  const T* const qSeq = static_cast<const T*>(args.q) + static_cast<size_t>(item.batch) * M * D;
  if constexpr (!kQRowStaged) {
    const int chunksPerRow = D / 8;
    for (int c = threadIdx.x; c < Tr::kBlockM * chunksPerRow; c += Tr::kThreads) {
      const int r = c / chunksPerRow, chunk = c % chunksPerRow;
      const int m = item.mTile * Tr::kBlockM + r;
      cp_async_16_pred(sQ + swizzled(r, chunk, stride), qSeq + static_cast<size_t>(m < M ? m : 0) * D + chunk * 8, m < M);
    }
  }
  cp_async_commit();
  if (isLoader)
    for (int s = 0; s < Tr::kStages - 1; ++s) {
      if (s < numTiles) loadTile(s);
      cp_async_commit();
    }
  if (isLoader) cp_async_wait<Tr::kStages - 2>();  // Q (unless staged in registers) and tile 0
  else cp_async_wait_all();                          // Q
  if constexpr (kInPlace && Tr::kConvertEarly)
    if (isLoader && numTiles > 0) {
      __syncwarp();
      convertTile(0);
    }
  // With the cache read in registers, Q becomes f16 times a power of two (bf16 exponents reach past f16's; the logits
  // are scaled back below), its features permuted within each k-step of 16 so that a K fragment's four consecutive
  // fp8 features of a key (ldmatrix gives lane 4g + t bytes 4t..4t+3 of key row g) meet them: features 4t, 4t+1 at mma
  // k 2t, 2t+1 and 4t + 2, 4t + 3 at k 2t + 8, 2t + 9 (feature pair j to pair j / 2, or 4 + j / 2 if odd).
  auto permuteStep = [&](const uint32_t (&in)[8], float qMul, int r, int ks) {
    uint32_t out[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      uint32_t w = in[j];
      if constexpr (E == ElemType::BF16)
        w = Elem<ElemType::F16>::pack2(__uint_as_float(w << 16) * qMul, __uint_as_float(w & 0xffff0000u) * qMul);
      out[j % 2 ? 4 + j / 2 : j / 2] = w;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h)
      st_shared(reinterpret_cast<uint4*>(sQ + swizzled(r, 2 * ks + h, stride)), make_uint4(out[4 * h], out[4 * h + 1], out[4 * h + 2], out[4 * h + 3]));
  };
  // The largest bf16 exponent among these words' 16-bit halves (as |bits|, which order as the magnitudes do).
  auto mostBits = [](uint32_t most, const uint32_t (&w)[8]) {
#pragma unroll
    for (int j = 0; j < 8; ++j) most = max(most, max(w[j] & 0x7fffu, (w[j] >> 16) & 0x7fffu));
    return most;
  };
  // The shift putting a largest |q| of `most` into [2^14, 2^15) (an all-zero or tiny Q: any shift).
  auto shiftFor = [](uint32_t most) { return min(100, max(-100, 14 - (static_cast<int>(most >> 7) - 127))); };
  float qkScale = args.scaleLog2;
  if constexpr (kQRowStaged) {
    // DeepSeek's dims: each warp takes its rows (warp + kWarps j) straight from global memory, all in one round trip
    // (lane l: k-step l of each row, and one of the rows' last kSteps - 32 k-steps), scales each row by its own power
    // of two (one warp reduction per row; a row far below the CTA's largest keeps its precision) and stores it once.
    // The rows' exponents of 2^-shift go to sAlpha (first written after the loop's B2).
    constexpr int kSteps = kDeepSeekHeadDim / 16, kRows = Tr::kBlockM / Tr::kWarps, kTail = kSteps - 32;
    static_assert(Tr::kBlockM % Tr::kWarps == 0 && kTail > 0 && kTail * kRows <= 32, "the k-steps past 32 of a warp's rows: one per lane");
    const int rowsUsed = (mRows + 15) / 16 * 16;  // the m16 tiles QK reads (their padding rows zeros)
    const int tailJ = lane / kTail, tailKs = 32 + lane % kTail;
    const bool hasTail = lane < kTail * kRows;
    uint32_t w[kRows + 1][8];  // the rows' k-step `lane`, then the tail's
    auto load = [&](uint32_t (&dst)[8], int j, int ks, bool valid) {
      const int m = item.mTile * Tr::kBlockM + warp + Tr::kWarps * j;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        uint4 v = make_uint4(0u, 0u, 0u, 0u);  // padding rows are zeros
        if (valid && m < M) v = ld_global_nc_16(qSeq + static_cast<size_t>(m) * D + ks * 16 + h * 8);
        dst[4 * h] = v.x, dst[4 * h + 1] = v.y, dst[4 * h + 2] = v.z, dst[4 * h + 3] = v.w;
      }
    };
#pragma unroll
    for (int j = 0; j < kRows; ++j) load(w[j], j, lane, true);
    load(w[kRows], tailJ, tailKs, hasTail);
    int shift[kRows], tailShift = 0;
#pragma unroll
    for (int j = 0; j < kRows; ++j) shift[j] = 0;
    if constexpr (E == ElemType::BF16) {
      const uint32_t tailMost = mostBits(0u, w[kRows]);
#pragma unroll
      for (int j = 0; j < kRows; ++j) {
        shift[j] = shiftFor(__reduce_max_sync(0xffffffffu, mostBits(tailJ == j ? tailMost : 0u, w[j])));
        tailShift = tailJ == j ? shift[j] : tailShift;
      }
    }
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const int r = warp + Tr::kWarps * j;
      if (r < rowsUsed) {
        if (lane == 0) st_shared(reinterpret_cast<int*>(sAlpha) + r, 127 - shift[j]);
        permuteStep(w[j], __int_as_float((127 + shift[j]) << 23), r, lane);
      }
    }
    if (hasTail && warp + Tr::kWarps * tailJ < rowsUsed) permuteStep(w[kRows], __int_as_float((127 + tailShift) << 23), warp + Tr::kWarps * tailJ, tailKs);
  } else if constexpr (kCvt) {
    // Runtime dims (whose wide kernels have no registers to hold a row): one scale for the CTA (its largest |q|), Q
    // converted where it landed.
    __syncthreads();  // every thread's copies of Q have landed
    const int kSteps = D / 16;
    int qShift = 0;
    if constexpr (E == ElemType::BF16) {
      uint32_t most = 0;
      for (int gi = threadIdx.x; gi < mRows * kSteps; gi += Tr::kThreads) {
        uint32_t w[8];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint4 v = ld_shared(reinterpret_cast<const uint4*>(sQ + swizzled(gi / kSteps, 2 * (gi % kSteps) + h, stride)));
          w[4 * h] = v.x, w[4 * h + 1] = v.y, w[4 * h + 2] = v.z, w[4 * h + 3] = v.w;
        }
        most = mostBits(most, w);
      }
      most = __reduce_max_sync(0xffffffffu, most);
      if (lane == 0) st_shared(reinterpret_cast<uint32_t*>(sAlpha) + warp, most);
      __syncthreads();
      most = 0;
      for (int w = 0; w < Tr::kWarps; ++w) most = max(most, ld_shared(reinterpret_cast<const uint32_t*>(sAlpha) + w));
      qShift = shiftFor(most);
    }
    qkScale *= __int_as_float((127 - qShift) << 23);
    for (int gi = threadIdx.x; gi < mRows * kSteps; gi += Tr::kThreads) {  // padding rows are zeros in both types
      const int r = gi / kSteps, ks = gi % kSteps;
      uint32_t in[8];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint4 v = ld_shared(reinterpret_cast<const uint4*>(sQ + swizzled(r, 2 * ks + h, stride)));
        in[4 * h] = v.x, in[4 * h + 1] = v.y, in[4 * h + 2] = v.z, in[4 * h + 3] = v.w;
      }
      permuteStep(in, __int_as_float((127 + qShift) << 23), r, ks);
    }
  }

  // A QK thread's query rows: fragment rows g and g + 8 of each of its m16 tiles, and how many cache rows each sees.
  const int qkWm = warp / Tr::kQkWarpsN, qkWn = warp % Tr::kQkWarpsN;
  int limit[2 * Tr::kQkMt];
  float rowMax[2 * Tr::kQkMt], rowSum[2 * Tr::kQkMt];
  // Row-staged Q: the exponents of the rows' logit scales 2^-shift, a byte each (the wide kernel has no registers to
  // spare).
  uint32_t qkExp = 0;
  static_assert(2 * Tr::kQkMt <= 4, "a byte per row");
#pragma unroll
  for (int i = 0; i < 2 * Tr::kQkMt; ++i) {
    const int m = item.mTile * Tr::kBlockM + qkWm * Tr::kQkRows + (i / 2) * 16 + g + 8 * (i % 2);
    const int t = (m < M ? m : 0) / H;
    int visible = args.causal ? item.seqLen - args.queryLen + 1 + t : item.seqLen;
    visible = visible < item.seqLen ? visible : item.seqLen;
    limit[i] = visible < item.rowEnd ? visible : item.rowEnd;
    rowMax[i] = neg_inf();
    rowSum[i] = 0.f;
  }
  // m16 tiles with at least one real query row: of this QK warp, and of the CTA (for P·V).
  const int qkMtUsed = isQk ? max(0, min(Tr::kQkMt, (mRows - qkWm * Tr::kQkRows + 15) / 16)) : 0;
  const int mtUsed = min(Tr::kMt, (mRows + 15) / 16);

  const int vCol0 = warp * Tr::kVCols;
  // n8 tiles of O this warp has (V is a multiple of 16)
  const int vNtUsed = kDeepSeekDims ? Tr::kVNt : max(0, min(Tr::kVNt, (V - vCol0) / 8));
  float o[Tr::kMt][Tr::kVNt][4];
#pragma unroll
  for (int i = 0; i < Tr::kMt; ++i)
#pragma unroll
    for (int j = 0; j < Tr::kVNt; ++j) o[i][j][0] = o[i][j][1] = o[i][j][2] = o[i][j][3] = 0.f;

  if constexpr (kQRowStaged) {
    __syncthreads();  // the rows' exponents
#pragma unroll
    for (int i = 0; i < 2 * Tr::kQkMt; ++i)
      if (i / 2 < qkMtUsed)  // m16 tiles of real rows: those staged
        qkExp |= static_cast<uint32_t>(ld_shared(reinterpret_cast<const int*>(sAlpha) + qkWm * Tr::kQkRows + (i / 2) * 16 + g + 8 * (i % 2))) << (8 * i);
  }
  for (int it = 0; it < numTiles; ++it) {
    if (isLoader && !(kInPlace && Tr::kConvertEarly)) {
      cp_async_wait<Tr::kStages - 2>();  // this thread's copies of tile `it` have landed
      if constexpr (kInPlace) {
        __syncwarp();
        convertTile(it);
      }
    }
    __syncthreads();  // B1
    if (isLoader) {
      if (it + Tr::kStages - 1 < numTiles) loadTile(it + Tr::kStages - 1);  // into the stage tile it - 1 used
      cp_async_commit();
    }
    const T* tile = sK + (it % Tr::kStages) * Tr::kBlockN * stride;
    const int tileRow0 = item.rowBegin + it * Tr::kBlockN;

    float s[Tr::kQkMt][Tr::kQkNt][4];
    if (isQk) {
      // S = Q Kᵀ for this warp's rows (m16 tiles of real rows only) and columns. A warp with at most four m16 x n8
      // tiles (Small: one; Large: four, two with 16 heads) accumulates even and odd k-steps in two chains, so its
      // mma do not wait on each other's results (Wide's eight tiles are enough independent chains).
      constexpr int kChains = Tr::kQkMt * Tr::kQkNt <= 4 ? 2 : 1;
      float s2[Tr::kQkMt][Tr::kQkNt][4];
#pragma unroll
      for (int i = 0; i < Tr::kQkMt; ++i)
#pragma unroll
        for (int j = 0; j < Tr::kQkNt; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[i][j][e] = s2[i][j][e] = 0.f;
      const int qRow = qkWm * Tr::kQkRows + lane % 16, kRow = qkWn * Tr::kQkCols;
      for (int ks0 = 0; ks0 < (qkMtUsed > 0 ? D / 16 : 0); ks0 += kChains) {
#pragma unroll
        for (int c = 0; c < kChains; ++c) {
          const int ks = ks0 + c;
          if (kChains > 1 && ks >= D / 16) break;
          float(&acc)[Tr::kQkMt][Tr::kQkNt][4] = c == 0 ? s : s2;
          uint32_t a[Tr::kQkMt][4];
#pragma unroll
          for (int i = 0; i < Tr::kQkMt; ++i)
            if (i < qkMtUsed) ldmatrix_x4(a[i], sQ + swizzled(qRow + 16 * i, 2 * ks + lane / 16, stride));
          if constexpr (kCvt) {  // n8 tile j: 8 keys x 16 fp8 bytes, one b16 matrix (lanes 8j..8j+7 its rows)
            uint32_t k8[Tr::kQkNt];
            if constexpr (Tr::kQkNt == 4) ldmatrix_x4(k8, tile + swizzled(kRow + lane, ks, stride));
            else if constexpr (Tr::kQkNt == 2) ldmatrix_x2(k8, tile + swizzled(kRow + (lane & 15), ks, stride));
            else ldmatrix_x1(k8[0], tile + swizzled(kRow + (lane & 7), ks, stride));
#pragma unroll
            for (int j = 0; j < Tr::kQkNt; ++j) {
              const uint32_t b[2] = {cvt_f16x2_e4m3x2(k8[j]), cvt_f16x2_e4m3x2(k8[j] >> 16)};
#pragma unroll
              for (int i = 0; i < Tr::kQkMt; ++i)
                if (i < qkMtUsed) C::mma(acc[i][j], a[i], b);
            }
          } else {
#pragma unroll
            for (int j = 0; j < Tr::kQkNt; j += 2) {
              uint32_t b[4];
              if constexpr (Tr::kQkNt % 2 == 0)  // two n8 tiles: rows +0..7 / +8..15, k halves by lanes 8-15 / 24-31
                ldmatrix_x4(b, tile + swizzled(kRow + 8 * j + (lane & 7) + ((lane >> 4) << 3), 2 * ks + ((lane >> 3) & 1), stride));
              else
                ldmatrix_x2(b[0], b[1], tile + swizzled(kRow + 8 * j + (lane & 7), 2 * ks + ((lane >> 3) & 1), stride));
#pragma unroll
              for (int i = 0; i < Tr::kQkMt; ++i)
                if (i < qkMtUsed) {
                  C::mma(acc[i][j], a[i], {b[0], b[1]});
                  if constexpr (Tr::kQkNt % 2 == 0) C::mma(acc[i][j + 1], a[i], {b[2], b[3]});
                }
            }
          }
        }
      }
      if constexpr (kChains == 2)
#pragma unroll
        for (int i = 0; i < Tr::kQkMt; ++i)
#pragma unroll
          for (int j = 0; j < Tr::kQkNt; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[i][j][e] += s2[i][j][e];
      // Scale to base 2, mask rows past the split or the causal limit, and share the row maxima of these columns.
#pragma unroll
      for (int i = 0; i < Tr::kQkMt; ++i) {
        float tileMax[2] = {neg_inf(), neg_inf()};
#pragma unroll
        for (int j = 0; j < Tr::kQkNt; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = tileRow0 + qkWn * Tr::kQkCols + j * 8 + tig * 2 + (e % 2);
            const float scale = kQRowStaged ? args.scaleLog2 * __int_as_float(((qkExp >> (8 * (2 * i + e / 2))) & 0xffu) << 23) : qkScale;
            s[i][j][e] = row < limit[2 * i + e / 2] ? s[i][j][e] * scale : neg_inf();
            tileMax[e / 2] = fmaxf(tileMax[e / 2], s[i][j][e]);
          }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          tileMax[h] = fmaxf(tileMax[h], __shfl_xor_sync(0xffffffffu, tileMax[h], 1));
          tileMax[h] = fmaxf(tileMax[h], __shfl_xor_sync(0xffffffffu, tileMax[h], 2));
          if (tig == 0 && i < qkMtUsed) st_shared(&sMaxPart[qkWn * Tr::kBlockM + qkWm * Tr::kQkRows + 16 * i + g + 8 * h], tileMax[h]);
        }
      }
    }
    __syncthreads();  // B2

    if (isQk) {
      // P = exp2(S - new row max) into shared memory, with the rescale factors and these columns' row sums.
#pragma unroll
      for (int i = 0; i < Tr::kQkMt; ++i) {
        if (i >= qkMtUsed) continue;
        float newMax[2], partSum[2] = {0.f, 0.f};
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = qkWm * Tr::kQkRows + 16 * i + g + 8 * h;
          newMax[h] = rowMax[2 * i + h];
#pragma unroll
          for (int w = 0; w < Tr::kQkWarpsN; ++w) newMax[h] = fmaxf(newMax[h], ld_shared(&sMaxPart[w * Tr::kBlockM + r]));
          const float alpha = rowMax[2 * i + h] == neg_inf() ? 0.f : exp2f(rowMax[2 * i + h] - newMax[h]);
          rowSum[2 * i + h] *= alpha;
          rowMax[2 * i + h] = newMax[h];
          if (qkWn == 0 && tig == 0) st_shared(&sAlpha[r], alpha);
        }
#pragma unroll
        for (int j = 0; j < Tr::kQkNt; ++j) {
          float p[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            p[e] = s[i][j][e] == neg_inf() ? 0.f : exp2f(s[i][j][e] - newMax[e / 2]);
            partSum[e / 2] += p[e];
          }
          const int r = qkWm * Tr::kQkRows + 16 * i + g, col = qkWn * Tr::kQkCols + j * 8 + tig * 2;
          st_shared(reinterpret_cast<uint32_t*>(sP + swizzledP<Tr>(r, col / 8) + col % 8), C::pack2(p[0], p[1]));
          st_shared(reinterpret_cast<uint32_t*>(sP + swizzledP<Tr>(r + 8, col / 8) + col % 8), C::pack2(p[2], p[3]));
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          partSum[h] += __shfl_xor_sync(0xffffffffu, partSum[h], 1);
          partSum[h] += __shfl_xor_sync(0xffffffffu, partSum[h], 2);
          if (tig == 0) st_shared(&sSumPart[qkWn * Tr::kBlockM + qkWm * Tr::kQkRows + 16 * i + g + 8 * h], partSum[h]);
        }
      }
    }
    __syncthreads();  // B3

    if constexpr (kInPlace && Tr::kConvertEarly)
      if (isLoader && it + 1 < numTiles) {  // the next tile, issued at B1: converted beside P·V (which leaves shared
        cp_async_wait<0>();                  // memory bandwidth to spare, where Q·Kᵀ has none)
        __syncwarp();
        convertTile(it + 1);
      }

    if (isQk) {  // the row sums, from every QK warp column's part (rewritten only after the next B2)
#pragma unroll
      for (int i = 0; i < Tr::kQkMt; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          if (i < qkMtUsed)
#pragma unroll
            for (int w = 0; w < Tr::kQkWarpsN; ++w) rowSum[2 * i + h] += ld_shared(&sSumPart[w * Tr::kBlockM + qkWm * Tr::kQkRows + 16 * i + g + 8 * h]);
    }
    // O = alpha O + P V for this warp's columns, V being the first kvLoraRank columns of the tile.
    if (vNtUsed > 0) {
#pragma unroll
      for (int i = 0; i < Tr::kMt; ++i)
        if (i < mtUsed) {
          const float a0 = ld_shared(&sAlpha[16 * i + g]), a1 = ld_shared(&sAlpha[16 * i + g + 8]);
#pragma unroll
          for (int j = 0; j < Tr::kVNt; ++j) {
            o[i][j][0] *= a0;
            o[i][j][1] *= a0;
            o[i][j][2] *= a1;
            o[i][j][3] *= a1;
          }
        }
#pragma unroll
      for (int ks = 0; ks < Tr::kBlockN / 16; ++ks) {
        uint32_t a[Tr::kMt][4];
#pragma unroll
        for (int i = 0; i < Tr::kMt; ++i)
          if (i < mtUsed) ldmatrix_x4(a[i], sP + swizzledP<Tr>(16 * i + lane % 16, 2 * ks + lane / 16));
        if constexpr (kCvt) {
          // 16 fp8 columns (a b16 matrix of 8 tokens x 8 byte pairs) per chunk: .trans gives lane 4g + t tokens 2t,
          // 2t + 1 of byte pair g, features 2g (bytes 0, 2) and 2g + 1 (bytes 1, 3): B fragments of n8 tile 2c (its
          // column n is feature 16c + 2n) and 2c + 1 (16c + 2n + 1). Chunks c, c + 1: tiles j..j + 3.
#pragma unroll
          for (int j = 0; j < Tr::kVNt; j += 4) {
            if (j < vNtUsed) {
              uint32_t v8[4];
              const uint32_t* vRow = reinterpret_cast<const uint32_t*>(tile + swizzled(16 * ks + lane % 16, vCol0 / 16 + j / 2 + lane / 16, stride));
              const bool two = kDeepSeekDims || j + 2 < vNtUsed;
              if (two) ldmatrix_x4_trans(v8, vRow);
              else ldmatrix_x2_trans(v8[0], v8[1], vRow);
#pragma unroll
              for (int c = 0; c < 2; ++c)
                if (c == 0 || two)
#pragma unroll
                  for (int odd = 0; odd < 2; ++odd) {
                    const uint32_t sel = odd ? 0x3131u : 0x2020u;
                    const uint32_t b[2] = {cvt_f16x2_e4m3x2(__byte_perm(v8[2 * c], 0u, sel)), cvt_f16x2_e4m3x2(__byte_perm(v8[2 * c + 1], 0u, sel))};
                    count_fp8_permuted(4);
#pragma unroll
                    for (int i = 0; i < Tr::kMt; ++i)
                      if (i < mtUsed) C::mma(o[i][j + 2 * c + odd], a[i], b);
                  }
            }
          }
        } else {
#pragma unroll
          for (int j = 0; j < Tr::kVNt; j += 2) {
            if (j < vNtUsed) {
              uint32_t b[4];  // n8 tiles j and j + 1: k rows 0..15 by lanes 0-15, columns +8 by lanes 16-31
              ldmatrix_x4_trans(b, tile + swizzled(16 * ks + lane % 16, (vCol0 + 8 * j) / 8 + lane / 16, stride));
#pragma unroll
              for (int i = 0; i < Tr::kMt; ++i)
                if (i < mtUsed) {
                  C::mma(o[i][j], a[i], {b[0], b[1]});
                  C::mma(o[i][j + 1], a[i], {b[2], b[3]});
                }
            }
          }
        }
      }
    }
  }
  cp_async_wait_all();

  // Normalise and store: the final output, or this split's partial (fp32, lse in base 2) for the combine kernel.
  if (isQk && qkWn == 0 && tig == 0)
#pragma unroll
    for (int i = 0; i < 2 * Tr::kQkMt; ++i) {
      const int r = qkWm * Tr::kQkRows + (i / 2) * 16 + g + 8 * (i % 2);
      st_shared(&sFinal[r], rowMax[i]);
      st_shared(&sFinal[Tr::kBlockM + r], rowSum[i]);
    }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < Tr::kMt; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = 16 * i + g + 8 * h, m = item.mTile * Tr::kBlockM + r;
      if (r >= mRows) continue;
      const float sum = ld_shared(&sFinal[Tr::kBlockM + r]);
      const float inv = sum > 0.f ? args.cacheScale / sum : 0.f;  // an fp8 cache's scale applies to V here
      if (item.partial < 0) {
        T* outRow = static_cast<T*>(args.out) + (static_cast<size_t>(item.batch) * M + m) * V;
        if constexpr (kCvt) {  // tiles j, j + 1 hold features 8j + 4t + {0, 2} and {1, 3} of the warp's columns
#pragma unroll
          for (int j = 0; j < Tr::kVNt; j += 2)
            if (j < vNtUsed)
              st_global(reinterpret_cast<uint2*>(outRow + vCol0 + j * 8 + tig * 4),
                        make_uint2(Elem<E>::pack2(o[i][j][2 * h] * inv, o[i][j + 1][2 * h] * inv), Elem<E>::pack2(o[i][j][2 * h + 1] * inv, o[i][j + 1][2 * h + 1] * inv)));
        } else {
#pragma unroll
          for (int j = 0; j < Tr::kVNt; ++j)
            if (j < vNtUsed) st_global(reinterpret_cast<uint32_t*>(outRow + vCol0 + j * 8 + tig * 2), Elem<E>::pack2(o[i][j][2 * h] * inv, o[i][j][2 * h + 1] * inv));
        }
      } else {
        float* pRow = args.partialOut + (static_cast<size_t>(item.partial) * Tr::kBlockM + r) * V;
        if constexpr (kCvt) {
#pragma unroll
          for (int j = 0; j < Tr::kVNt; j += 2)
            if (j < vNtUsed)
              st_global(reinterpret_cast<float4*>(pRow + vCol0 + j * 8 + tig * 4),
                        make_float4(o[i][j][2 * h] * inv, o[i][j + 1][2 * h] * inv, o[i][j][2 * h + 1] * inv, o[i][j + 1][2 * h + 1] * inv));
        } else {
#pragma unroll
          for (int j = 0; j < Tr::kVNt; ++j)
            if (j < vNtUsed) st_global(reinterpret_cast<float2*>(pRow + vCol0 + j * 8 + tig * 2), make_float2(o[i][j][2 * h] * inv, o[i][j][2 * h + 1] * inv));
        }
      }
    }
  // The log-sum-exp of each real row, by the thread that kept its statistics.
  if (isQk && qkWn == 0 && tig == 0)
#pragma unroll
    for (int i = 0; i < 2 * Tr::kQkMt; ++i) {
      const int r = qkWm * Tr::kQkRows + (i / 2) * 16 + g + 8 * (i % 2), m = item.mTile * Tr::kBlockM + r;
      if (r >= mRows) continue;
      const float lse2 = rowSum[i] > 0.f ? rowMax[i] + log2f(rowSum[i]) : neg_inf();
      if (item.partial < 0) {
        const int t = m / H, h = m % H;
        st_global(args.lse + (static_cast<size_t>(item.batch) * H + h) * args.queryLen + t, lse2 == neg_inf() ? neg_inf() : lse2 * 0.69314718055994531f);
      } else {
        st_global(args.partialLse + static_cast<size_t>(item.partial) * Tr::kBlockM + r, lse2);
      }
    }
}

// Merges a sequence's split results by their log-sum-exps. One warp per query row (4 per CTA): its lanes read the
// splits' lse and weigh them (a warp max and sum), then each lane combines 16 of the row's columns over the splits.
// With programmatic dependent launch it may start while the decode kernel ends, and waits for its results first.
constexpr int kCombineRowsPerCta = 4;
template <ElemType E>
__global__ void __launch_bounds__(32 * kCombineRowsPerCta) mlaCombineKernel(const CombineArgs args) {
  using T = typename Elem<E>::T;
  __shared__ float weights[kCombineRowsPerCta][kMaxDecodeSplits];
  if (args.numItemsOnDevice && static_cast<int>(blockIdx.x) >= *args.numItemsOnDevice) return;  // the whole CTA leaves
  griddep_wait();  // the decode kernel's partial results are complete and visible
  const CombineItem item = args.items[blockIdx.x];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = blockIdx.y * kCombineRowsPerCta + warp;
  const int M = args.queryLen * args.numHeads, V = args.kvLoraRank;
  const int m = item.mTile * args.blockM + r;
  if (r >= args.blockM || m >= M) return;  // this warp's row is padding (no barrier follows)
  const int n = item.numPartials;
  float* w = weights[warp];
  float maxLse = neg_inf();
  for (int p = lane; p < n; p += 32) {
    const float lse = ld_global(args.partialLse + static_cast<size_t>(item.firstPartial + p) * args.blockM + r);
    st_shared(&w[p], lse);
    maxLse = fmaxf(maxLse, lse);
  }
  for (int k = 16; k >= 1; k /= 2) maxLse = fmaxf(maxLse, __shfl_xor_sync(0xffffffffu, maxLse, k));
  float total = 0.f;
  for (int p = lane; p < n; p += 32) {
    const float lse = ld_shared(&w[p]);
    const float weight = lse == neg_inf() ? 0.f : exp2f(lse - maxLse);  // empty splits weigh nothing
    st_shared(&w[p], weight);
    total += weight;
  }
  for (int k = 16; k >= 1; k /= 2) total += __shfl_xor_sync(0xffffffffu, total, k);
  __syncwarp();
  const float invTotal = total > 0.f ? 1.f / total : 0.f;
  T* outRow = static_cast<T*>(args.out) + (static_cast<size_t>(item.batch) * M + m) * V;
  for (int c = 4 * lane; c < V; c += 4 * 32) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int p = 0; p < n; ++p) {
      const float weight = ld_shared(&w[p]);
      if (weight > 0.f) {
        const float4 x = ld_global(reinterpret_cast<const float4*>(args.partialOut + (static_cast<size_t>(item.firstPartial + p) * args.blockM + r) * V + c));
        acc.x += weight * x.x;
        acc.y += weight * x.y;
        acc.z += weight * x.z;
        acc.w += weight * x.w;
      }
    }
    st_global(reinterpret_cast<uint2*>(outRow + c), make_uint2(Elem<E>::pack2(acc.x * invTotal, acc.y * invTotal), Elem<E>::pack2(acc.z * invTotal, acc.w * invTotal)));
  }
  if (lane == 0) {
    const int t = m / args.numHeads, h = m % args.numHeads;
    st_global(args.lse + (static_cast<size_t>(item.batch) * args.numHeads + h) * args.queryLen + t,
              total > 0.f ? (maxLse + log2f(total)) * 0.69314718055994531f : neg_inf());
  }
}

template <class Tr>
DecodeConfigInfo infoOf() {
  return {Tr::kBlockM, Tr::kBlockN, Tr::kStages, Tr::kThreads, Tr::kMinBlocksPerSm};
}

// Calls f with the traits of a configuration.
template <class F>
auto withTraits(DecodeConfig config, F&& f) {
  switch (config) {
    case DecodeConfig::Wide: return f(WideTraits{});
    case DecodeConfig::Large: return f(LargeTraits{});
    default: return f(SmallTraits{});
  }
}

template <class Tr, ElemType E, bool kFp8, bool kFp8Cvt = kFp8>
cudaError_t launchWith(const DecodeArgs& args, cudaStream_t stream) {
  const bool deepSeek = args.headDim == kDeepSeekHeadDim && args.kvLoraRank == kDeepSeekKvLoraRank;
  return mla_launch(deepSeek ? mlaDecodeKernel<Tr, E, kFp8, true, kFp8Cvt> : mlaDecodeKernel<Tr, E, kFp8, false, kFp8Cvt>, "mlaDecodeKernel",
                    dim3(args.numWork), dim3(Tr::kThreads), static_cast<size_t>(Tr::smemBytes(args.headDim)), stream, args);
}

// Allows each decode kernel of a configuration the shared memory of the widest rows it has been launched with on the
// current device, once (cudaFuncSetAttribute on every decode cost four driver calls).
template <class Tr>
cudaError_t prepareWith(int headDim) {
#if !defined(__CUDACC__)
  (void)headDim;
  return cudaSuccess;
#else
  constexpr int kMaxDevices = 64;
  static std::atomic<int> allowed[kMaxDevices];
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  const int bytes = Tr::smemBytes(headDim);
  if (device < kMaxDevices && allowed[device].load(std::memory_order_acquire) >= bytes) return cudaSuccess;
  for (auto kernel : {mlaDecodeKernel<Tr, ElemType::BF16, false, false>, mlaDecodeKernel<Tr, ElemType::F16, false, false>,
                      mlaDecodeKernel<Tr, ElemType::BF16, true, false>, mlaDecodeKernel<Tr, ElemType::F16, true, false>,
                      mlaDecodeKernel<Tr, ElemType::BF16, false, true>, mlaDecodeKernel<Tr, ElemType::F16, false, true>,
                      mlaDecodeKernel<Tr, ElemType::BF16, true, true>, mlaDecodeKernel<Tr, ElemType::F16, true, true>})
    if (e == cudaSuccess) e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess && device < kMaxDevices) {
    int prev = allowed[device].load(std::memory_order_relaxed);
    while (prev < bytes && !allowed[device].compare_exchange_weak(prev, bytes)) {}
  }
  return e;
#endif
}

}  // namespace

DecodeConfigInfo decodeConfigInfo(DecodeConfig config) {
  return withTraits(config, [](auto tr) { return infoOf<decltype(tr)>(); });
}

int decodeSmemBytes(DecodeConfig config, int headDim, bool /*cacheFp8: converted in place, the same*/) {
  return withTraits(config, [&](auto tr) { return decltype(tr)::smemBytes(headDim); });
}

cudaError_t prepareDecode(DecodeConfig config, int headDim) {
  return withTraits(config, [&](auto tr) { return prepareWith<decltype(tr)>(headDim); });
}

cudaError_t launchDecode(const DecodeArgs& args, cudaStream_t stream) {
  if (args.numWork == 0) return cudaSuccess;
  return withTraits(args.config, [&](auto tr) {
    using Tr = decltype(tr);
    const bool bf16 = args.elem == ElemType::BF16;
#if !defined(__CUDACC__)  // the emulator runs the path of the simulated device (on the GPU each target's code has its own)
    if (args.cacheFp8 && !args.fp8Cvt)
      return bf16 ? launchWith<Tr, ElemType::BF16, true, false>(args, stream) : launchWith<Tr, ElemType::F16, true, false>(args, stream);
#endif
    if (args.cacheFp8) return bf16 ? launchWith<Tr, ElemType::BF16, true>(args, stream) : launchWith<Tr, ElemType::F16, true>(args, stream);
    return bf16 ? launchWith<Tr, ElemType::BF16, false>(args, stream) : launchWith<Tr, ElemType::F16, false>(args, stream);
  });
}

cudaError_t launchCombine(const CombineArgs& args, cudaStream_t stream) {
  if (args.numItems == 0) return cudaSuccess;
  // Rows of an item: blockM, or all of M when it has fewer (16 heads in a 64-row tile).
  const int rows = min(args.blockM, args.queryLen * args.numHeads);
  const dim3 grid(args.numItems, (rows + kCombineRowsPerCta - 1) / kCombineRowsPerCta);
  const dim3 block(32 * kCombineRowsPerCta);
  return args.elem == ElemType::BF16
             ? mla_launch_dependent(mlaCombineKernel<ElemType::BF16>, "mlaCombineKernel", grid, block, 0, stream, args.dependentLaunch != 0, args)
             : mla_launch_dependent(mlaCombineKernel<ElemType::F16>, "mlaCombineKernel", grid, block, 0, stream, args.dependentLaunch != 0, args);
}

}  // namespace MLA_KERNEL_NS
}  // namespace mla
