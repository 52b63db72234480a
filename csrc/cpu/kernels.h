// The interface between the CPU backend (cpu_backend.cc: validation is done, planning, threads) and the SIMD
// kernels, one translation unit per instruction set (kernels_avx512.cc, kernels_avx2.cc, kernels_portable.cc,
// kernels_avx512bf16.cc, kernels_neon.cc). Each of those units sets its own target (a `#pragma GCC target` after its includes), so
// only plain structs of pointers and integers cross this boundary: no inline function or template of a header is
// ever instantiated under a SIMD target (that would let the linker pick an AVX-512 copy for generic code).
#pragma once
#include <cstddef>
#include <cstdint>

namespace mla::cpu {

// FP8E4M3: the caches only (decode reads it through cacheElem, dequantised by cacheScale; append writes it). FP8DSMLA:
// a latent cache row in FlashMLA's V3.2 layout (kvLoraRank e4m3 bytes, an fp32 scale per kDsMlaTile of them, ropeDim
// bf16), read by decode only.
enum class Elem : uint8_t { F32 = 0, F16 = 1, BF16 = 2, FP8E4M3 = 3, FP8DSMLA = 4 };
inline constexpr int64_t kDsMlaTileValues = 128;  // core/dtype.h's kDsMlaTile (kernel units include no core header)

// One work item of decode: query rows [m0, m1) (m = t * numHeads + h) of sequence b against its cache rows [n0, n1):
// rows of the sequence's block-table row, or (sparse decode) the cache slots slots[n0, n1).
struct DecodeItem {
  // The whole operation.
  Elem elem;               // of q and out
  Elem cacheElem;          // of the cache: elem, FP8E4M3 or FP8DSMLA
  float cacheScale;        // a cache element's value is its stored value times this (1 but for FP8E4M3)
  const void* q;           // [batch][queryLen * numHeads][D]
  const void* cache;       // [numBlocks * blockSize] rows of rowBytes
  const int32_t* table;    // this sequence's block-table row (null when slots is given)
  const int32_t* slots;    // sparse decode: the slot of each of the item's rows (n indexes it), all valid
  int64_t rowBytes;        // bytes of a cache row
  bool lseTokenMajor;      // lse [batch * queryLen][H] (a sparse prefill's) instead of [batch][H][queryLen]
  int64_t D, V;            // row width (kvLoraRank + ropeDim) and kvLoraRank
  int64_t blockSize, numHeads, queryLen;
  int64_t seqLen;
  bool causal;
  float scaleLog2;         // softmaxScale * log2(e): scores are kept in base 2
  // This item.
  int64_t b, m0, m1, n0, n1;
  // Outputs. Final (the item covers the whole sequence): out [batch][M][V] of elem, lse [batch][H][queryLen] f32.
  // Partial (split-KV): oPart [m1 - m0][V] unnormalised f32, maxPart / sumPart [m1 - m0] (base-2 max, sum of 2^(s - max)).
  void* out;
  float* lse;
  float* oPart;
  float* maxPart;
  float* sumPart;
  int64_t part;  // the backend's index of this partial (-1 when the item covers the sequence)
};

// One work item of prefill (prefill_generic.inl): head h of one sequence, its queries [i0, i1) (indices within the
// sequence, rows qBegin + i of q) against its first keys (rows kvBegin + s of kNope, kPe, v), as many as the item's
// last query sees.
struct PrefillItem {
  Elem elem;             // of q, kNope, kPe, v and out
  const void* q;         // [totalQ][numHeads][nopeDim + ropeDim]
  const void* kNope;     // [totalKv][numHeads][nopeDim]
  const void* kPe;       // [totalKv][ropeDim], shared by the heads
  const void* v;         // [totalKv][numHeads][vHeadDim]
  void* out;             // [totalQ][numHeads][vHeadDim]
  float* lse;            // [totalQ][numHeads], natural log
  int64_t numHeads, nopeDim, ropeDim, vHeadDim;
  float scaleLog2;       // softmaxScale * log2(e)
  bool causal;           // query i of qLen sees the first kvLen - qLen + 1 + i keys
  int64_t h, qBegin, qLen, kvBegin, kvLen, i0, i1;
};

// One work item of the lightning indexer (indexer_generic.inl): query positions [t0, t1) of sequence b, all their
// heads, against its cached keys [n0, n1): scores[(t - t0) * scoreStride + n] = scale[n] Σ_h w[t][h] ReLU(q[t][h]·k[n]).
struct IndexerItem {
  Elem elem;               // of q
  Elem cacheElem;          // of the key cache: elem, or FP8E4M3
  const void* q;           // [batch][queryLen][numHeads][indexDim]
  const float* weights;    // [batch][queryLen][numHeads]
  const void* cache;       // [numBlocks * blockSize][indexDim]
  const float* scales;     // [numBlocks * blockSize]: an fp8 key's scale (null: 1)
  const int32_t* table;    // this sequence's block-table row
  int64_t blockSize, numHeads, indexDim, queryLen;
  int64_t b, t0, t1, n0, n1;
  float* scores;           // row t - t0 at scores + (t - t0) * scoreStride, indexed by position
  int64_t scoreStride;
};

// One block of C = A Bᵀ (the up-projection of prefill): rows [m0, m1) and columns [n0, n1) of C, A [M][K] and
// B [N][K] row-major of elem, C of elem with row stride ldc.
struct GemmBlock {
  Elem elem;
  const void* a;
  const void* b;
  void* c;
  int64_t K, ldc;
  int64_t m0, m1, n0, n1;
};

// A run of appended rows whose slots are consecutive: rows [row0, row1) of kvC and kPe go to one destination byte range
// starting at dst, each row kvBytes of kvC then ropeDim elements of kPe (rotated by interleaved RoPE when rotate).
struct AppendRun {
  Elem elem;
  bool rotate;
  const char* kvC;
  const char* kPe;
  int64_t kvBytes, ropeDim;
  const int32_t* positions;  // rotate: the row's position picks its cos/sin row (ropeDim / 2 floats each)
  const float* cos;
  const float* sin;
  int64_t row0, row1;
  char* dst;
};

// A kernel set: one instruction set's implementation of the hot loops.
struct KernelSet {
  const char* name;
  // Floats of scratch a thread needs for an item with `rows` query rows (independent of the sequence length).
  size_t (*decodeScratch)(const DecodeItem& item);
  // Runs one item; `scratch` holds decodeScratch(item) floats, 64-byte aligned.
  void (*decode)(const DecodeItem& item, float* scratch);
  // Converts n elements to f32 / from f32 (round to nearest even), for absorb / unabsorb / append.
  void (*load)(Elem e, const void* src, float* dst, int64_t n);
  void (*store)(Elem e, const float* src, void* dst, int64_t n);
  // acc[0..n) += a * x[0..n)
  void (*axpy)(float a, const float* x, float* acc, int64_t n);
  float (*dot)(const float* a, const float* b, int64_t n);
  // RoPE of one row: interleaved pairs (x[2j], x[2j+1]) or neox (x[j], x[j + half]); src/dst of elem.
  void (*rope)(Elem e, bool interleaved, const void* src, const float* cosRow, const float* sinRow, void* dst, int64_t ropeDim);
  // Copies bytes to memory the caller will not read soon (appended cache rows), with non-temporal stores where the
  // instruction set has them: no read-for-ownership of the written lines, so append moves 2 bytes per byte, not 3.
  // streamFence orders those stores before the caller reports completion.
  void (*streamCopy)(void* dst, const void* src, int64_t bytes);
  void (*streamFence)();
  // A whole run of streamed append rows in one call (no per-row calls or staging): every line of the range (64 bytes;
  // AVX2: 32-byte units) written once, by a streaming store, but for the range's partial first and last ones (plain
  // stores of their bytes only). dst is aligned to the element size.
  // appendRunFits says whether this set has such a loop for the rows' shape; the run is then written only when it does.
  bool (*appendRunFits)(Elem e, bool rotate, int64_t kvBytes, int64_t ropeDim);
  void (*appendRun)(const AppendRun& run);
  // The machine-limit loops of the benchmark: `iters` rounds of a dense FMA (f32) or dot-product (bf16) loop with
  // enough independent accumulators; returns the FLOPs done (0 when this set has no such loop).
  double (*fmaLoop)(int64_t iters);
  double (*bf16DotLoop)(int64_t iters);
  // Prefill (prefill_generic.inl): the scratch floats of an item (64-byte aligned, independent of the key count) and
  // the item itself; the same for a block of C = A Bᵀ of at most kGemmBlockRows x kGemmBlockCols.
  size_t (*prefillScratch)(const PrefillItem& item);
  void (*prefill)(const PrefillItem& item, float* scratch);
  size_t (*gemmScratch)(const GemmBlock& block);
  void (*gemmNT)(const GemmBlock& block, float* scratch);
  // The lightning indexer's scores (indexer_generic.inl): an item's scratch floats (64-byte aligned, independent of the
  // key count) and the item.
  size_t (*indexerScratch)(const IndexerItem& item);
  void (*indexerScores)(const IndexerItem& item, float* scratch);
};

// The largest GemmBlock: C blocks of 64 rows by 96 columns (6, 12 and 24 vectors of the three widths).
inline constexpr int64_t kGemmBlockRows = 64, kGemmBlockCols = 96;

// A unit's KernelSet from the struct naming its functions (GenericKernels of kernels_generic.inl, or one derived
// from it). Called after the unit's target region: it only copies function addresses.
template <class Functions>
KernelSet kernelSet(const char* name) {
  return KernelSet{name,          Functions::decodeScratch, Functions::decode,     Functions::load,
                   Functions::store, Functions::axpy,       Functions::dot,        Functions::rope,
                   Functions::streamCopy, Functions::streamFence, Functions::appendRunFits, Functions::appendRun, Functions::fmaLoop, Functions::bf16DotLoop,
                   Functions::prefillScratch, Functions::prefill, Functions::gemmScratch, Functions::gemmNT,
                   Functions::indexerScratch, Functions::indexerScores};
}

const KernelSet& portableKernels();
#if defined(__x86_64__) || defined(_M_X64)
const KernelSet& avx2Kernels();
const KernelSet& avx512Kernels();
const KernelSet& avx512Bf16Kernels();
#endif
#if defined(__aarch64__)
const KernelSet& neonKernels();
#endif

}  // namespace mla::cpu
