#include "ops.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "errors.h"

namespace mla {
namespace {

[[noreturn]] void fail(ErrorCode code, const std::string& msg) { throw Error(code, msg); }

std::string dimsStr(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

void requirePresent(const TensorView& t) {
  if (!t.present()) fail(ErrorCode::Argument, std::string(t.name) + " is required");
}

void requireRank(const TensorView& t, int rank, const char* layout) {
  requirePresent(t);
  if (t.ndim != rank)
    fail(ErrorCode::Shape, std::string(t.name) + " must have rank " + std::to_string(rank) + " " + layout +
                               ", got shape " + t.shapeStr());
}

void requireMinRank(const TensorView& t, int rank, const char* layout) {
  requirePresent(t);
  if (t.ndim < rank)
    fail(ErrorCode::Shape, std::string(t.name) + " must have rank >= " + std::to_string(rank) + " " + layout +
                               ", got shape " + t.shapeStr());
}

void requireFloating(const TensorView& t) {
  if (!isFloating(t.dtype))
    fail(ErrorCode::DType, std::string(t.name) + " must be f32, f16 or bf16, got " + dtypeName(t.dtype));
}

void requireDType(const TensorView& t, DType want) {
  if (t.dtype != want)
    fail(ErrorCode::DType, std::string(t.name) + " must be " + dtypeName(want) + ", got " + dtypeName(t.dtype));
}

void requireSameDType(const TensorView& t, const TensorView& like) {
  if (t.dtype != like.dtype)
    fail(ErrorCode::DType, std::string(t.name) + " must have the dtype of " + like.name + " (" +
                               dtypeName(like.dtype) + "), got " + dtypeName(t.dtype));
}

void requireDim(const TensorView& t, int axis, int64_t want, const std::string& what) {
  if (t.dim(axis) != want)
    fail(ErrorCode::Shape, std::string(t.name) + " dimension " + std::to_string(axis < 0 ? t.ndim + axis : axis) +
                               " must be " + std::to_string(want) + " (" + what + "), got shape " + t.shapeStr());
}

void requireShape(const TensorView& t, const std::vector<int64_t>& want) {
  bool same = t.ndim == static_cast<int>(want.size());
  for (int i = 0; same && i < t.ndim; ++i) same = t.shape[i] == want[i];
  if (!same) fail(ErrorCode::Shape, std::string(t.name) + " must have shape " + dimsStr(want) + ", got " + t.shapeStr());
}

void requireDevice(const TensorView& t, const Device& device) {
  if (t.present() && t.device != device)
    fail(ErrorCode::Device, std::string(t.name) + " is on " + t.device.str() + " but the stream runs on " + device.str());
}

// Index tensors are read on the host to validate their values before any kernel runs.
void requireHostIndex(const TensorView& t) {
  requireDType(t, DType::I32);
  if (t.device.kind != DeviceKind::Cpu)
    fail(ErrorCode::Device, std::string(t.name) + " must be a cpu tensor (its values are checked on the host), got " +
                                t.device.str());
}

std::string shortNumber(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

// softmaxScale finite and > 0, and the scale the kernels keep scores in (base 2: softmaxScale * log2(e), times
// cacheScale for an fp8 cache) a finite float, so that no overflow reads as a sequence without keys.
void requireSoftmaxScale(float softmaxScale, float cacheScale = 1.f, bool fp8 = false) {
  if (!std::isfinite(softmaxScale) || softmaxScale <= 0.f)
    fail(ErrorCode::Range, "softmaxScale must be a finite number > 0, got " + std::to_string(softmaxScale));
  if (static_cast<double>(softmaxScale) * cacheScale * 1.4426950408889634 > std::numeric_limits<float>::max())
    fail(ErrorCode::Range, "softmaxScale * log2(e)" + std::string(fp8 ? " * cacheScale" : "") + " must be a finite float32 (below 3.4e38), got softmaxScale " +
                               shortNumber(softmaxScale));
}

bool overlaps(const TensorView& a, const TensorView& b) {
  if (!a.present() || !b.present() || a.nbytes() == 0 || b.nbytes() == 0) return false;
  auto a0 = reinterpret_cast<uintptr_t>(a.source ? a.source : a.data), b0 = reinterpret_cast<uintptr_t>(b.source ? b.source : b.data);
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// Outputs must not share memory with inputs: kernels read inputs after writing outputs.
void requireNoOverlap(const TensorView& out, std::initializer_list<const TensorView*> inputs) {
  for (const TensorView* in : inputs)
    if (overlaps(out, *in))
      fail(ErrorCode::Argument, std::string(out.name) + " shares memory with " + in->name + "; outputs must not alias inputs");
}

// An output of `like`'s dtype and the given shape.
void requireOutput(const TensorView& t, const TensorView& like, const std::vector<int64_t>& shape) {
  requirePresent(t);
  requireSameDType(t, like);
  requireShape(t, shape);
}

// A log-sum-exp output: f32 of the given shape.
void requireLseOutput(const TensorView& t, const std::vector<int64_t>& shape) {
  requirePresent(t);
  requireDType(t, DType::F32);
  requireShape(t, shape);
}

// An index tensor the kernels may read where it is: on the host or on the stream's device.
void requireIndexDevice(const TensorView& t, const Device& device) {
  if (t.device.kind != DeviceKind::Cpu && t.device != device)
    fail(ErrorCode::Device, std::string(t.name) + " is on " + t.device.str() + " but the stream runs on " + device.str() + " (it may be on the host or there)");
}

// An op's tensors against the stream's device and each other: `onDevice` there, `indices` on the host or there, no
// output sharing memory with what it reads (`reads`) nor with an earlier output, in that order.
using Tensors = std::initializer_list<const TensorView*>;
void requireOperands(const Device& device, Tensors onDevice, Tensors indices, Tensors outputs, Tensors reads) {
  for (const TensorView* t : onDevice) requireDevice(*t, device);
  for (const TensorView* t : indices) requireIndexDevice(*t, device);
  for (const TensorView* out : outputs) requireNoOverlap(*out, reads);
  for (auto later = outputs.begin(); later != outputs.end(); ++later)
    for (auto earlier = outputs.begin(); earlier != later; ++earlier) requireNoOverlap(**later, {*earlier});
}

std::vector<int64_t> leadingDims(const TensorView& t, int trailing) {
  return std::vector<int64_t>(t.shape, t.shape + t.ndim - trailing);
}

int64_t product(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

// A paged latent cache for rows of kvLoraRank + ropeDim values (`from`: where those widths come from): its last
// dimension is that width, or the bytes of a token in FlashMLA's V3.2 layout for an fp8_ds_mla cache.
void validateCacheLayout(const TensorView& cache, int64_t kvLoraRank, int64_t ropeDim, const char* from) {
  requireRank(cache, 3, cache.dtype == DType::FP8DSMLA ? "[numBlocks, blockSize, bytes per token]" : "[numBlocks, blockSize, kvLoraRank + ropeDim]");
  if (!isCacheDType(cache.dtype))
    fail(ErrorCode::DType, std::string(cache.name) + " must be f32, f16, bf16, fp8_e4m3 or fp8_ds_mla, got " + dtypeName(cache.dtype));
  if (cache.dim(1) < 1) fail(ErrorCode::Shape, std::string(cache.name) + " block size (dimension 1) must be >= 1, got shape " + cache.shapeStr());
  if (cache.dtype == DType::FP8DSMLA) {
    if (kvLoraRank % kDsMlaTile != 0)
      fail(ErrorCode::Shape, std::string(cache.name) + " is fp8_ds_mla, whose latent part has one fp32 scale per " + std::to_string(kDsMlaTile) +
                                 " values: kvLoraRank must be a multiple of " + std::to_string(kDsMlaTile) + ", got " + std::to_string(kvLoraRank));
    requireDim(cache, 2, dsMlaRowBytes(kvLoraRank, ropeDim),
               std::string("bytes per token of an fp8_ds_mla cache: kvLoraRank e4m3 + 4 per ") + std::to_string(kDsMlaTile) + " of fp32 scales + 2 ropeDim bf16, " + from);
    return;
  }
  if (cache.dim(2) != kvLoraRank + ropeDim && cache.dtype == DType::FP8E4M3 && kvLoraRank % kDsMlaTile == 0 && cache.dim(2) == dsMlaRowBytes(kvLoraRank, ropeDim))
    fail(ErrorCode::DType, std::string(cache.name) + " has FlashMLA's V3.2 row of " + std::to_string(cache.dim(2)) +
                               " bytes per token but dtype fp8_e4m3 (one scale per tensor, rows of kvLoraRank + ropeDim values): make it an fp8_ds_mla tensor");
  requireDim(cache, 2, kvLoraRank + ropeDim, std::string("kvLoraRank + ropeDim, ") + from);
}

// A cache has the dtype of the values written to it or read against it (`like`), or is fp8 e4m3 with a scale, or
// fp8_ds_mla (its scales in its rows); the scale of any other cache is 1.
void validateCacheDType(const TensorView& cache, const TensorView& like, float cacheScale) {
  if (cache.dtype == DType::FP8DSMLA) {
    if (cacheScale != 1.f)
      fail(ErrorCode::Argument, std::string("cacheScale applies to an fp8_e4m3 cache only; ") + cache.name +
                                    " is fp8_ds_mla, whose rows carry their own scale per " + std::to_string(kDsMlaTile) + " values");
    return;
  }
  if (cache.dtype != DType::FP8E4M3) {
    requireSameDType(cache, like);
    if (cacheScale != 1.f)
      fail(ErrorCode::Argument, std::string("cacheScale applies to an fp8_e4m3 cache only; ") + cache.name + " is " + dtypeName(cache.dtype));
    return;
  }
  if (!std::isfinite(cacheScale) || cacheScale <= 0.f)
    fail(ErrorCode::Range, "cacheScale must be a finite number > 0, got " + std::to_string(cacheScale));
}

// A block table [batch, maxBlocksPerSeq] and seqLens [batch] on the host, i32; returns maxBlocksPerSeq.
int64_t requireBlockTable(const TensorView& blockTable, const TensorView& seqLens, int64_t batch) {
  requireRank(blockTable, 2, "[batch, maxBlocksPerSeq]");
  requireHostIndex(blockTable);
  requireDim(blockTable, 0, batch, "batch, from q");
  requireRank(seqLens, 1, "[batch]");
  requireHostIndex(seqLens);
  requireDim(seqLens, 0, batch, "batch, from q");
  return blockTable.dim(1);
}

// Every sequence's length fits its row of the block table, and each block it uses is a block of the cache.
void requireSequences(const TensorView& blockTable, const TensorView& seqLens, int64_t batch, int64_t blockSize, int64_t numBlocks) {
  const int32_t* lens = seqLens.as<const int32_t>();
  const int32_t* table = blockTable.as<const int32_t>();
  const int64_t maxBlocksPerSeq = blockTable.dim(1), capacity = maxBlocksPerSeq * blockSize;
  for (int64_t b = 0; b < batch; ++b) {
    int64_t len = lens[b];
    if (len < 0 || len > capacity)
      fail(ErrorCode::Range, std::string(seqLens.name) + "[" + std::to_string(b) + "] = " + std::to_string(len) + " is outside [0, " +
                                 std::to_string(capacity) + "] (" + blockTable.name + " holds " + std::to_string(maxBlocksPerSeq) +
                                 " blocks of " + std::to_string(blockSize) + ")");
    int64_t usedBlocks = (len + blockSize - 1) / blockSize;
    for (int64_t j = 0; j < usedBlocks; ++j) {
      int64_t block = table[b * maxBlocksPerSeq + j];
      if (block < 0 || block >= numBlocks)
        fail(ErrorCode::Range, std::string(blockTable.name) + "[" + std::to_string(b) + "][" + std::to_string(j) + "] = " + std::to_string(block) +
                                   " is not a block of cache (numBlocks " + std::to_string(numBlocks) + ")");
    }
  }
}

// A slot mapping's values: each below numSlots (a negative slot skips its token), none repeated. eachKept(i) checks
// what else a kept token needs (its position).
template <class EachKept>
void requireSlotMapping(const TensorView& slotMapping, int64_t numTokens, int64_t numSlots, const char* cacheName, EachKept&& eachKept) {
  const int32_t* slots = slotMapping.as<const int32_t>();
  // Each slot at most once. Slots in increasing order (a prefill, most decode steps) cannot repeat; otherwise a
  // bitmap over the slots when it is no larger than the tokens, else a sorted copy. (An unordered_set cost ~1 ms
  // per 32K tokens, as much as the append itself.)
  bool increasing = true;
  int64_t last = -1;
  for (int64_t i = 0; i < numTokens; ++i) {
    const int64_t slot = slots[i];
    if (slot < 0) continue;  // a padding token: nothing is written, its position is not read
    if (slot >= numSlots)
      fail(ErrorCode::Range, std::string(slotMapping.name) + "[" + std::to_string(i) + "] = " + std::to_string(slot) + " is past the end of " + cacheName + " (" +
                                 std::to_string(numSlots) + " slots)");
    eachKept(i);
    if (slot <= last) increasing = false;
    last = slot;
  }
  if (increasing) return;
  auto repeated = [&](int32_t slot) {
    bool once = false;
    for (int64_t i = 0; i < numTokens; ++i)
      if (slots[i] == slot) {
        if (once)
          fail(ErrorCode::Range, std::string(slotMapping.name) + "[" + std::to_string(i) + "] = " + std::to_string(slot) +
                                     " repeats an earlier token's slot; each slot may be written once per call");
        once = true;
      }
  };
  if (numSlots <= 64 * numTokens) {
    std::vector<uint64_t> seen(static_cast<size_t>(numSlots / 64 + 1), 0);
    for (int64_t i = 0; i < numTokens; ++i) {
      const int32_t slot = slots[i];
      if (slot < 0) continue;
      uint64_t& word = seen[static_cast<size_t>(slot) / 64];
      const uint64_t bit = uint64_t{1} << (slot % 64);
      if (word & bit) repeated(slot);
      word |= bit;
    }
    return;
  }
  std::vector<int32_t> sorted;
  sorted.reserve(static_cast<size_t>(numTokens));
  for (int64_t i = 0; i < numTokens; ++i)
    if (slots[i] >= 0) sorted.push_back(slots[i]);
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i] == sorted[i - 1]) repeated(sorted[i]);
}

// --- absorbQuery ---------------------------------------------------------------------------------
void absorbInputs(AbsorbQueryParams& p) {
  requireMinRank(p.qNope, 2, "[..., numHeads, nopeDim]");
  requireFloating(p.qNope);
  requireRank(p.wUk, 3, "[numHeads, nopeDim, kvLoraRank]");
  requireSameDType(p.wUk, p.qNope);
  p.numHeads = p.qNope.dim(-2);
  p.nopeDim = p.qNope.dim(-1);
  p.numTokens = product(leadingDims(p.qNope, 2));
  requireDim(p.wUk, 0, p.numHeads, "numHeads, from qNope");
  requireDim(p.wUk, 1, p.nopeDim, "nopeDim, from qNope");
  p.kvLoraRank = p.wUk.dim(2);
  if (p.kvLoraRank < 1) fail(ErrorCode::Shape, "wUk kvLoraRank (dimension 2) must be >= 1, got shape " + p.wUk.shapeStr());
  p.ropeDim = 0;
  if (p.qPe.present()) {
    requireSameDType(p.qPe, p.qNope);
    std::vector<int64_t> want = leadingDims(p.qNope, 1);
    if (p.qPe.ndim != p.qNope.ndim)
      fail(ErrorCode::Shape, std::string("qPe must have the rank of qNope (") + std::to_string(p.qNope.ndim) + "), got shape " + p.qPe.shapeStr());
    for (int i = 0; i < p.qNope.ndim - 1; ++i)
      if (p.qPe.shape[i] != p.qNope.shape[i])
        fail(ErrorCode::Shape, "qPe must match qNope in every dimension but the last: qNope " + p.qNope.shapeStr() + ", qPe " + p.qPe.shapeStr());
    p.ropeDim = p.qPe.dim(-1);
  }
}

// --- unabsorbOutput ------------------------------------------------------------------------------
void unabsorbInputs(UnabsorbOutputParams& p) {
  requireMinRank(p.oLat, 2, "[..., numHeads, kvLoraRank]");
  requireFloating(p.oLat);
  requireRank(p.wUv, 3, "[numHeads, vHeadDim, kvLoraRank]");
  requireSameDType(p.wUv, p.oLat);
  p.numHeads = p.oLat.dim(-2);
  p.kvLoraRank = p.oLat.dim(-1);
  p.numTokens = product(leadingDims(p.oLat, 2));
  requireDim(p.wUv, 0, p.numHeads, "numHeads, from oLat");
  requireDim(p.wUv, 2, p.kvLoraRank, "kvLoraRank, from oLat");
  p.vHeadDim = p.wUv.dim(1);
}

// --- mlaDecode -----------------------------------------------------------------------------------
void decodeInputs(MlaDecodeParams& p) {
  requireRank(p.q, 4, "[batch, queryLen, numHeads, kvLoraRank + ropeDim]");
  requireFloating(p.q);
  p.batch = p.q.dim(0);
  p.queryLen = p.q.dim(1);
  p.numHeads = p.q.dim(2);
  p.headDim = p.q.dim(3);
  if (p.queryLen < 1) fail(ErrorCode::Shape, "q queryLen (dimension 1) must be >= 1, got shape " + p.q.shapeStr());
  if (p.numHeads < 1) fail(ErrorCode::Shape, "q numHeads (dimension 2) must be >= 1, got shape " + p.q.shapeStr());
  if (p.kvLoraRank < 1 || p.kvLoraRank > p.headDim)
    fail(ErrorCode::Range, "kvLoraRank must be in [1, " + std::to_string(p.headDim) + "] (q's last dimension), got " +
                               std::to_string(p.kvLoraRank));
  p.ropeDim = p.headDim - p.kvLoraRank;
  validateCacheLayout(p.cache, p.kvLoraRank, p.ropeDim, "from q and kvLoraRank");
  validateCacheDType(p.cache, p.q, p.cacheScale);
  p.numBlocks = p.cache.dim(0);
  p.blockSize = p.cache.dim(1);
  p.maxBlocksPerSeq = requireBlockTable(p.blockTable, p.seqLens, p.batch);
  requireSoftmaxScale(p.softmaxScale, p.cacheScale, p.cache.dtype == DType::FP8E4M3);
  if (p.causal && p.queryLen == 1) p.causal = false;  // one query position sees every row either way

  requireSequences(p.blockTable, p.seqLens, p.batch, p.blockSize, p.numBlocks);
}

}  // namespace

std::vector<int64_t> absorbQueryOutShape(AbsorbQueryParams& p) {
  absorbInputs(p);
  std::vector<int64_t> s = leadingDims(p.qNope, 1);
  s.push_back(p.kvLoraRank + p.ropeDim);
  return s;
}

std::vector<int64_t> unabsorbOutputOutShape(UnabsorbOutputParams& p) {
  unabsorbInputs(p);
  std::vector<int64_t> s = leadingDims(p.oLat, 1);
  s.push_back(p.vHeadDim);
  return s;
}

void mlaDecodeOutShapes(MlaDecodeParams& p, std::vector<int64_t>* outShape, std::vector<int64_t>* lseShape) {
  decodeInputs(p);
  *outShape = {p.batch, p.queryLen, p.numHeads, p.kvLoraRank};
  *lseShape = {p.batch, p.numHeads, p.queryLen};
}

void validate(AbsorbQueryParams& p, const Device& device) {
  std::vector<int64_t> want = absorbQueryOutShape(p);
  requireOutput(p.out, p.qNope, want);
  requireOperands(device, {&p.qNope, &p.wUk, &p.qPe, &p.out}, {}, {&p.out}, {&p.qNope, &p.wUk, &p.qPe});
}

void validate(UnabsorbOutputParams& p, const Device& device) {
  std::vector<int64_t> want = unabsorbOutputOutShape(p);
  requireOutput(p.out, p.oLat, want);
  requireOperands(device, {&p.oLat, &p.wUv, &p.out}, {}, {&p.out}, {&p.oLat, &p.wUv});
}

void validate(MlaDecodeParams& p, const Device& device) {
  std::vector<int64_t> outShape, lseShape;
  mlaDecodeOutShapes(p, &outShape, &lseShape);
  requireOutput(p.out, p.q, outShape);
  requireLseOutput(p.lse, lseShape);
  requireOperands(device, {&p.q, &p.cache, &p.out, &p.lse}, {}, {&p.out, &p.lse}, {&p.q, &p.cache, &p.blockTable, &p.seqLens});
}

void validate(CopyParams& p, const Device& device) {
  requirePresent(p.src);
  requirePresent(p.dst);
  requireSameDType(p.dst, p.src);
  if (p.dst.numel() != p.src.numel())
    fail(ErrorCode::Shape, "dst has " + std::to_string(p.dst.numel()) + " elements, src " + std::to_string(p.src.numel()));
  // Host, the stream's device, or (a peer copy) another device of the same kind when the other side is on the stream's.
  for (const TensorView* t : {&p.src, &p.dst}) {
    const TensorView& other = t == &p.src ? p.dst : p.src;
    const bool peer = t->device.kind == device.kind && other.device == device;
    if (t->device.kind != DeviceKind::Cpu && t->device != device && !peer)
      fail(ErrorCode::Device, std::string(t->name) + " is on " + t->device.str() + " but the stream runs on " + device.str());
  }
  requireNoOverlap(p.dst, {&p.src});
}

void validatePlan(const MlaDecodeParams& p, const std::string& backend) {
  if (!p.plan) return;
  const DecodePlanHandle& plan = *p.plan;
  if (plan.backend != backend)
    fail(ErrorCode::Argument, "plan was made for the " + plan.backend + " backend, but the stream runs on " + backend);
  if (plan.batch != p.batch || plan.queryLen != p.queryLen || plan.numHeads != p.numHeads)
    fail(ErrorCode::Argument, "plan was made for batch " + std::to_string(plan.batch) + ", queryLen " + std::to_string(plan.queryLen) +
                                  ", " + std::to_string(plan.numHeads) + " heads; q has batch " + std::to_string(p.batch) + ", queryLen " +
                                  std::to_string(p.queryLen) + ", " + std::to_string(p.numHeads) + " heads");
  const int32_t* lens = p.seqLens.as<const int32_t>();
  for (int64_t b = 0; b < p.batch; ++b)
    if (plan.seqLens[b] != lens[b])
      fail(ErrorCode::Argument, "plan was made for seqLens[" + std::to_string(b) + "] = " + std::to_string(plan.seqLens[b]) + ", but it is " +
                                    std::to_string(lens[b]) + " now: make one plan per decode step (every layer of the step can share it)");
}

void validate(AppendLatentCacheParams& p, const Device& device) {
  requireRank(p.kvC, 2, "[numTokens, kvLoraRank]");
  requireFloating(p.kvC);
  p.numTokens = p.kvC.dim(0);
  p.kvLoraRank = p.kvC.dim(1);
  if (p.kvLoraRank < 1) fail(ErrorCode::Shape, "kvC kvLoraRank (dimension 1) must be >= 1, got shape " + p.kvC.shapeStr());
  requireRank(p.kPe, 2, "[numTokens, ropeDim]");
  requireSameDType(p.kPe, p.kvC);
  requireDim(p.kPe, 0, p.numTokens, "numTokens, from kvC");
  p.ropeDim = p.kPe.dim(1);
  validateCacheLayout(p.cache, p.kvLoraRank, p.ropeDim, "from kvC and kPe");
  validateCacheDType(p.cache, p.kvC, p.cacheScale);
  p.numBlocks = p.cache.dim(0);
  p.blockSize = p.cache.dim(1);
  requireRank(p.slotMapping, 1, "[numTokens]");
  requireHostIndex(p.slotMapping);
  requireDim(p.slotMapping, 0, p.numTokens, "numTokens, from kvC");
  requireOperands(device, {&p.cache, &p.kvC, &p.kPe}, {}, {&p.cache}, {&p.kvC, &p.kPe, &p.slotMapping, &p.positions, &p.cos, &p.sin});

  if (p.ropeStyle != RopeStyle::None) {
    if (p.ropeDim % 2 != 0)
      fail(ErrorCode::Shape, "kPe ropeDim (dimension 1) must be even to apply RoPE, got shape " + p.kPe.shapeStr());
    requireRank(p.positions, 1, "[numTokens]");
    requireHostIndex(p.positions);
    requireDim(p.positions, 0, p.numTokens, "numTokens, from kvC");
    requireRank(p.cos, 2, "[maxPositions, ropeDim / 2]");
    requireDType(p.cos, DType::F32);
    requireDim(p.cos, 1, p.ropeDim / 2, "ropeDim / 2, from kPe");
    requireRank(p.sin, 2, "[maxPositions, ropeDim / 2]");
    requireDType(p.sin, DType::F32);
    requireShape(p.sin, std::vector<int64_t>(p.cos.shape, p.cos.shape + 2));
    requireDevice(p.cos, device);
    requireDevice(p.sin, device);
    p.maxPositions = p.cos.dim(0);
  }

  const int32_t* positions = p.ropeStyle != RopeStyle::None ? p.positions.as<const int32_t>() : nullptr;
  requireSlotMapping(p.slotMapping, p.numTokens, p.numBlocks * p.blockSize, p.cache.name, [&](int64_t i) {
    if (positions && (positions[i] < 0 || positions[i] >= p.maxPositions))
      fail(ErrorCode::Range, std::string(p.positions.name) + "[" + std::to_string(i) + "] = " + std::to_string(positions[i]) + " is outside [0, " +
                                 std::to_string(p.maxPositions) + ") (rows of cos and sin)");
  });
}

namespace {
void snapshot(TensorView& t, IndexSnapshot& store) {
  if (!t.present() || t.device.kind != DeviceKind::Cpu) return;  // validation refuses it
  const uint8_t* src = t.as<const uint8_t>();
  if (store.used == store.buffers.size()) store.buffers.emplace_back();
  std::vector<uint8_t>& copy = store.buffers[store.used++];  // moving the outer vector keeps each buffer in place
  copy.assign(src, src + t.nbytes());
  if (!t.source) t.source = t.data;
  t.data = copy.data();
}
}  // namespace

void snapshotIndexTensors(AppendLatentCacheParams& p, IndexSnapshot& store) {
  snapshot(p.slotMapping, store);
  snapshot(p.positions, store);
}

void snapshotIndexTensors(MlaDecodeParams& p, IndexSnapshot& store) {
  snapshot(p.blockTable, store);
  snapshot(p.seqLens, store);
}


// --- prefill -----------------------------------------------------------------------------------------------------
namespace {

int64_t requireDimAtLeast(const TensorView& t, int axis, int64_t least, const char* what) {
  if (t.dim(axis) < least)
    fail(ErrorCode::Shape, std::string(t.name) + " " + what + " (dimension " + std::to_string(axis) + ") must be >= " + std::to_string(least) +
                               ", got shape " + t.shapeStr());
  return t.dim(axis);
}

// The rows a ragged tensor's cumulative lengths use: at most the tensor's `rows`.
int64_t usedRowsOf(const TensorView& cu, int64_t rows, const TensorView& tensor) {
  const int64_t batch = cu.dim(0) - 1;
  const int64_t last = cu.as<const int32_t>()[batch];
  if (last > rows)
    fail(ErrorCode::Range, std::string(cu.name) + "[" + std::to_string(batch) + "] = " + std::to_string(last) + " is past the " + std::to_string(rows) +
                               " rows of " + tensor.name);
  return last;
}

void prefillInputs(MlaPrefillParams& p) {
  requireRank(p.q, 3, "[totalQ, numHeads, nopeDim + ropeDim]");
  requireFloating(p.q);
  p.totalQ = p.q.dim(0);
  p.numHeads = requireDimAtLeast(p.q, 1, 1, "numHeads");
  p.headDim = requireDimAtLeast(p.q, 2, 1, "nopeDim + ropeDim");
  requireRank(p.kNope, 3, "[totalKv, numHeads, nopeDim]");
  requireSameDType(p.kNope, p.q);
  requireDim(p.kNope, 1, p.numHeads, "numHeads, from q");
  p.totalKv = p.kNope.dim(0);
  p.nopeDim = p.kNope.dim(2);
  requireRank(p.kPe, 2, "[totalKv, ropeDim]");
  requireSameDType(p.kPe, p.q);
  requireDim(p.kPe, 0, p.totalKv, "totalKv, from kNope");
  p.ropeDim = p.kPe.dim(1);
  if (p.nopeDim + p.ropeDim != p.headDim)
    fail(ErrorCode::Shape, "q's last dimension must be nopeDim + ropeDim = " + std::to_string(p.nopeDim) + " + " + std::to_string(p.ropeDim) +
                               " (kNope's and kPe's last dimensions), got shape " + p.q.shapeStr());
  requireRank(p.v, 3, "[totalKv, numHeads, vHeadDim]");
  requireSameDType(p.v, p.q);
  requireDim(p.v, 0, p.totalKv, "totalKv, from kNope");
  requireDim(p.v, 1, p.numHeads, "numHeads, from q");
  p.vHeadDim = requireDimAtLeast(p.v, 2, 1, "vHeadDim");
  requireSoftmaxScale(p.softmaxScale);

  validateCuSeqLens(p.cuSeqLensQ);
  validateCuSeqLens(p.cuSeqLensKv);
  p.batch = p.cuSeqLensQ.dim(0) - 1;
  requireDim(p.cuSeqLensKv, 0, p.batch + 1, "batch + 1, from cuSeqLensQ");
  p.usedQ = usedRowsOf(p.cuSeqLensQ, p.totalQ, p.q);
  p.usedKv = usedRowsOf(p.cuSeqLensKv, p.totalKv, p.kNope);
  const int32_t* cuQ = p.cuSeqLensQ.as<const int32_t>();
  const int32_t* cuKv = p.cuSeqLensKv.as<const int32_t>();
  p.maxQLen = p.maxKvLen = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t qLen = cuQ[b + 1] - cuQ[b], kvLen = cuKv[b + 1] - cuKv[b];
    if (p.causal && kvLen < qLen)
      fail(ErrorCode::Range, "causal: sequence " + std::to_string(b) + " has " + std::to_string(qLen) + " queries (cuSeqLensQ) but " + std::to_string(kvLen) +
                                 " keys (cuSeqLensKv); a causal prefill needs at least as many keys as queries (query i of n sees the first kvLen - n + 1 + i keys)");
    p.maxQLen = std::max(p.maxQLen, qLen);
    p.maxKvLen = std::max(p.maxKvLen, kvLen);
  }
}

void gatherInputs(GatherLatentCacheParams& p, int64_t kvLoraRank) {
  requireRank(p.cache, 3, "[numBlocks, blockSize, kvLoraRank + ropeDim]");
  if (!isCacheDType(p.cache.dtype))
    fail(ErrorCode::DType, std::string(p.cache.name) + " must be f32, f16, bf16, fp8_e4m3 or fp8_ds_mla, got " + dtypeName(p.cache.dtype));
  if (p.cache.dim(1) < 1) fail(ErrorCode::Shape, std::string(p.cache.name) + " block size (dimension 1) must be >= 1, got shape " + p.cache.shapeStr());
  p.numBlocks = p.cache.dim(0);
  p.blockSize = p.cache.dim(1);
  if (kvLoraRank < 1 || kvLoraRank > p.cache.dim(2))
    fail(ErrorCode::Range, "kvLoraRank must be in [1, " + std::to_string(p.cache.dim(2)) + "] (the cache's row width), got " + std::to_string(kvLoraRank));
  p.kvLoraRank = kvLoraRank;
  p.ropeDim = p.cache.dim(2) - kvLoraRank;
  if (p.cache.dtype == DType::FP8DSMLA) {  // the rope part's width from the row's bytes
    const int64_t ropeBytes = p.cache.dim(2) - dsMlaRowBytes(kvLoraRank, 0);
    p.ropeDim = ropeBytes / 2;
    if (kvLoraRank % kDsMlaTile != 0 || ropeBytes < 0 || ropeBytes % 2 != 0)
      fail(ErrorCode::Shape, std::string(p.cache.name) + " is fp8_ds_mla: rows of kvLoraRank e4m3 (a multiple of " + std::to_string(kDsMlaTile) +
                                 "), 4 bytes of scale per " + std::to_string(kDsMlaTile) + " and 2 per rope value; " + std::to_string(p.cache.dim(2)) +
                                 " bytes do not fit kvLoraRank " + std::to_string(kvLoraRank));
  }
  if (p.cache.dtype != DType::FP8E4M3 && p.cacheScale != 1.f)
    fail(ErrorCode::Argument, std::string("cacheScale applies to an fp8_e4m3 cache only; ") + p.cache.name + " is " + dtypeName(p.cache.dtype));
  if (!std::isfinite(p.cacheScale) || p.cacheScale <= 0.f)
    fail(ErrorCode::Range, "cacheScale must be a finite number > 0, got " + std::to_string(p.cacheScale));
  validateCuSeqLens(p.cuSeqLens);
  p.batch = p.cuSeqLens.dim(0) - 1;
  requireRank(p.blockTable, 2, "[batch, maxBlocksPerSeq]");
  requireHostIndex(p.blockTable);
  requireDim(p.blockTable, 0, p.batch, "batch, from cuSeqLens");
  p.maxBlocksPerSeq = p.blockTable.dim(1);
  if (p.seqStarts.present()) {
    requireRank(p.seqStarts, 1, "[batch]");
    requireHostIndex(p.seqStarts);
    requireDim(p.seqStarts, 0, p.batch, "batch, from cuSeqLens");
  }
  const int32_t* cu = p.cuSeqLens.as<const int32_t>();
  const int32_t* starts = p.seqStarts.present() ? p.seqStarts.as<const int32_t>() : nullptr;
  const int32_t* table = p.blockTable.as<const int32_t>();
  const int64_t capacity = p.maxBlocksPerSeq * p.blockSize;
  p.usedRows = cu[p.batch];
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t len = cu[b + 1] - cu[b], start = starts ? starts[b] : 0;
    if (start < 0 || start + len > capacity)
      fail(ErrorCode::Range, (starts ? "seqStarts[" + std::to_string(b) + "] = " + std::to_string(start) + " with " : std::string("sequence " + std::to_string(b) + ": ")) +
                                 std::to_string(len) + " rows (cuSeqLens) reaches position " + std::to_string(start + len) + ", past the " + std::to_string(capacity) +
                                 " rows blockTable holds (" + std::to_string(p.maxBlocksPerSeq) + " blocks of " + std::to_string(p.blockSize) + ")");
    if (len == 0) continue;
    for (int64_t j = start / p.blockSize; j <= (start + len - 1) / p.blockSize; ++j) {
      const int64_t block = table[b * p.maxBlocksPerSeq + j];
      if (block < 0 || block >= p.numBlocks)
        fail(ErrorCode::Range, "blockTable[" + std::to_string(b) + "][" + std::to_string(j) + "] = " + std::to_string(block) +
                                   " is not a block of cache (numBlocks " + std::to_string(p.numBlocks) + ")");
    }
  }
}

void upProjectInputs(UpProjectKvParams& p) {
  requireRank(p.kvC, 2, "[numTokens, kvLoraRank]");
  requireFloating(p.kvC);
  p.numTokens = p.kvC.dim(0);
  p.kvLoraRank = requireDimAtLeast(p.kvC, 1, 1, "kvLoraRank");
  requireRank(p.wUk, 3, "[numHeads, nopeDim, kvLoraRank]");
  requireSameDType(p.wUk, p.kvC);
  p.numHeads = requireDimAtLeast(p.wUk, 0, 1, "numHeads");
  p.nopeDim = requireDimAtLeast(p.wUk, 1, 1, "nopeDim");
  requireDim(p.wUk, 2, p.kvLoraRank, "kvLoraRank, from kvC");
  requireRank(p.wUv, 3, "[numHeads, vHeadDim, kvLoraRank]");
  requireSameDType(p.wUv, p.kvC);
  requireDim(p.wUv, 0, p.numHeads, "numHeads, from wUk");
  p.vHeadDim = requireDimAtLeast(p.wUv, 1, 1, "vHeadDim");
  requireDim(p.wUv, 2, p.kvLoraRank, "kvLoraRank, from kvC");
}

void mergeInputs(MergeAttentionStatesParams& p) {
  requireMinRank(p.outA, 1, "[..., width]");
  requireFloating(p.outA);
  requireSameDType(p.outB, p.outA);
  requireShape(p.outB, std::vector<int64_t>(p.outA.shape, p.outA.shape + p.outA.ndim));
  const std::vector<int64_t> rows = leadingDims(p.outA, 1);
  for (TensorView* lse : {&p.lseA, &p.lseB}) {
    requirePresent(*lse);
    requireDType(*lse, DType::F32);
    requireShape(*lse, rows);
  }
  p.numRows = product(rows);
  p.width = p.outA.dim(-1);
}

}  // namespace

void validateCuSeqLens(const TensorView& t) {
  requireRank(t, 1, "[batch + 1]");
  requireHostIndex(t);
  if (t.dim(0) < 1) fail(ErrorCode::Shape, std::string(t.name) + " must have batch + 1 >= 1 elements (the first is 0), got shape " + t.shapeStr());
  const int32_t* cu = t.as<const int32_t>();
  if (cu[0] != 0) fail(ErrorCode::Range, std::string(t.name) + "[0] must be 0, got " + std::to_string(cu[0]));
  for (int64_t b = 1; b < t.dim(0); ++b)
    if (cu[b] < cu[b - 1])
      fail(ErrorCode::Range, std::string(t.name) + "[" + std::to_string(b) + "] = " + std::to_string(cu[b]) + " is less than " + t.name + "[" +
                                 std::to_string(b - 1) + "] = " + std::to_string(cu[b - 1]) + ": cumulative lengths must not decrease");
}

void mlaPrefillOutShapes(MlaPrefillParams& p, std::vector<int64_t>* outShape, std::vector<int64_t>* lseShape) {
  prefillInputs(p);
  *outShape = {p.totalQ, p.numHeads, p.vHeadDim};
  *lseShape = {p.totalQ, p.numHeads};
}

void validate(MlaPrefillParams& p, const Device& device) {
  std::vector<int64_t> outShape, lseShape;
  mlaPrefillOutShapes(p, &outShape, &lseShape);
  requireOutput(p.out, p.q, outShape);
  requireLseOutput(p.lse, lseShape);
  requireOperands(device, {&p.q, &p.kNope, &p.kPe, &p.v, &p.out, &p.lse}, {}, {&p.out, &p.lse}, {&p.q, &p.kNope, &p.kPe, &p.v, &p.cuSeqLensQ, &p.cuSeqLensKv});
}

void validatePlan(const MlaPrefillParams& p, const std::string& backend) {
  if (!p.plan) return;
  const PrefillPlanHandle& plan = *p.plan;
  if (plan.backend != backend)
    fail(ErrorCode::Argument, "plan was made for the " + plan.backend + " backend, but the stream runs on " + backend);
  if (plan.batch != p.batch || plan.numHeads != p.numHeads || plan.causal != p.causal)
    fail(ErrorCode::Argument, "plan was made for batch " + std::to_string(plan.batch) + ", " + std::to_string(plan.numHeads) + " heads, causal " +
                                  (plan.causal ? "true" : "false") + "; this prefill has batch " + std::to_string(p.batch) + ", " +
                                  std::to_string(p.numHeads) + " heads, causal " + (p.causal ? "true" : "false"));
  for (const auto& [name, made, now] : {std::tuple{"cuSeqLensQ", &plan.cuSeqLensQ, &p.cuSeqLensQ}, std::tuple{"cuSeqLensKv", &plan.cuSeqLensKv, &p.cuSeqLensKv}}) {
    const int32_t* cu = now->as<const int32_t>();
    for (int64_t b = 0; b <= p.batch; ++b)
      if ((*made)[static_cast<size_t>(b)] != cu[b])
        fail(ErrorCode::Argument, std::string("plan was made for ") + name + "[" + std::to_string(b) + "] = " + std::to_string((*made)[static_cast<size_t>(b)]) +
                                      ", but it is " + std::to_string(cu[b]) + " now: make one plan per prefill step (every layer of the step can share it)");
  }
}

void gatherLatentCacheOutShapes(GatherLatentCacheParams& p, std::vector<int64_t>* kvCShape, std::vector<int64_t>* kPeShape) {
  gatherInputs(p, p.kvLoraRank);
  const int64_t rows = p.requestedRows < 0 ? p.usedRows : p.requestedRows;
  if (rows < p.usedRows)
    fail(ErrorCode::Range, "numRows = " + std::to_string(rows) + " is less than the " + std::to_string(p.usedRows) + " rows cuSeqLens gathers");
  *kvCShape = {rows, p.kvLoraRank};
  *kPeShape = {rows, p.ropeDim};
}

void validate(GatherLatentCacheParams& p, const Device& device) {
  gatherInputs(p, p.kvLoraRank);
  requireRank(p.kvC, 2, "[numRows, kvLoraRank]");
  requireFloating(p.kvC);
  if (isFloating(p.cache.dtype)) requireSameDType(p.kvC, p.cache);
  requireDim(p.kvC, 1, p.kvLoraRank, "kvLoraRank");
  p.numRows = p.kvC.dim(0);
  if (p.usedRows > p.numRows)
    fail(ErrorCode::Range, std::string(p.cuSeqLens.name) + "[" + std::to_string(p.batch) + "] = " + std::to_string(p.usedRows) + " is past the " +
                               std::to_string(p.numRows) + " rows of kvC");
  requireRank(p.kPe, 2, "[numRows, ropeDim]");
  requireSameDType(p.kPe, p.kvC);
  requireShape(p.kPe, {p.numRows, p.ropeDim});
  requireOperands(device, {&p.cache, &p.kvC, &p.kPe}, {}, {&p.kvC, &p.kPe}, {&p.cache, &p.blockTable, &p.cuSeqLens, &p.seqStarts});
}

void upProjectKvOutShapes(UpProjectKvParams& p, std::vector<int64_t>* kNopeShape, std::vector<int64_t>* vShape) {
  upProjectInputs(p);
  *kNopeShape = {p.numTokens, p.numHeads, p.nopeDim};
  *vShape = {p.numTokens, p.numHeads, p.vHeadDim};
}

void validate(UpProjectKvParams& p, const Device& device) {
  std::vector<int64_t> kNopeShape, vShape;
  upProjectKvOutShapes(p, &kNopeShape, &vShape);
  requireOutput(p.kNope, p.kvC, kNopeShape);
  requireOutput(p.v, p.kvC, vShape);
  requireOperands(device, {&p.kvC, &p.wUk, &p.wUv, &p.kNope, &p.v}, {}, {&p.kNope, &p.v}, {&p.kvC, &p.wUk, &p.wUv});
}

void mergeAttentionStatesOutShapes(MergeAttentionStatesParams& p, std::vector<int64_t>* outShape, std::vector<int64_t>* lseShape) {
  mergeInputs(p);
  *outShape = std::vector<int64_t>(p.outA.shape, p.outA.shape + p.outA.ndim);
  *lseShape = leadingDims(p.outA, 1);
}

void validate(MergeAttentionStatesParams& p, const Device& device) {
  std::vector<int64_t> outShape, lseShape;
  mergeAttentionStatesOutShapes(p, &outShape, &lseShape);
  requireOutput(p.out, p.outA, outShape);
  requireLseOutput(p.lse, lseShape);
  requireOperands(device, {&p.outA, &p.lseA, &p.outB, &p.lseB, &p.out, &p.lse}, {}, {&p.out, &p.lse}, {&p.outA, &p.lseA, &p.outB, &p.lseB});
}

void snapshotIndexTensors(MlaPrefillParams& p, IndexSnapshot& store) {
  snapshot(p.cuSeqLensQ, store);
  snapshot(p.cuSeqLensKv, store);
}

void snapshotIndexTensors(GatherLatentCacheParams& p, IndexSnapshot& store) {
  snapshot(p.blockTable, store);
  snapshot(p.cuSeqLens, store);
  snapshot(p.seqStarts, store);
}


// --- sparse attention (DeepSeek-V3.2) and the lightning indexer -----------------------------------------------------
namespace {

// "[i][j][k]" of element `flat` of t.
std::string elementAt(const TensorView& t, int64_t flat) {
  std::string at;
  for (int d = t.ndim - 1; d >= 0; --d) {
    at = "[" + std::to_string(t.shape[d] ? flat % t.shape[d] : 0) + "]" + at;
    flat = t.shape[d] ? flat / t.shape[d] : 0;
  }
  return at;
}

// The values of an index tensor on the host: each -1 (padding) or one of `limit` rows (`rows` names them). Indices
// read in place are an earlier operation's output, not written yet.
void requireRowIndices(const TensorView& t, bool inPlace, int64_t limit, const std::string& rows) {
  if (inPlace || t.device.kind != DeviceKind::Cpu) return;  // read by the kernels only
  const int32_t* v = t.as<const int32_t>();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i)
    if (v[i] < -1 || v[i] >= limit)
      fail(ErrorCode::Range, std::string(t.name) + elementAt(t, i) + " = " + std::to_string(v[i]) + " is neither -1 (padding) nor " + rows + " ([0, " +
                                 std::to_string(limit) + "))");
}

int64_t requireKvLoraRank(int64_t kvLoraRank, int64_t headDim) {
  if (kvLoraRank < 1 || kvLoraRank > headDim)
    fail(ErrorCode::Range, "kvLoraRank must be in [1, " + std::to_string(headDim) + "] (q's last dimension), got " + std::to_string(kvLoraRank));
  return headDim - kvLoraRank;
}

void sparseDecodeInputs(MlaSparseDecodeParams& p) {
  requireRank(p.q, 4, "[batch, queryLen, numHeads, kvLoraRank + ropeDim]");
  requireFloating(p.q);
  p.batch = p.q.dim(0);
  p.queryLen = requireDimAtLeast(p.q, 1, 1, "queryLen");
  p.numHeads = requireDimAtLeast(p.q, 2, 1, "numHeads");
  p.headDim = p.q.dim(3);
  p.ropeDim = requireKvLoraRank(p.kvLoraRank, p.headDim);
  validateCacheLayout(p.cache, p.kvLoraRank, p.ropeDim, "from q and kvLoraRank");
  validateCacheDType(p.cache, p.q, p.cacheScale);
  p.numBlocks = p.cache.dim(0);
  p.blockSize = p.cache.dim(1);
  requireRank(p.indices, 3, "[batch, queryLen, topk]");
  requireDType(p.indices, DType::I32);
  requireDim(p.indices, 0, p.batch, "batch, from q");
  requireDim(p.indices, 1, p.queryLen, "queryLen, from q");
  p.topk = requireDimAtLeast(p.indices, 2, 1, "topk");
  requireSoftmaxScale(p.softmaxScale);
  requireRowIndices(p.indices, p.indicesInPlace, p.numSlots(), "a slot of cache");
}

void sparsePrefillInputs(MlaSparsePrefillParams& p) {
  requireRank(p.q, 3, "[numTokens, numHeads, kvLoraRank + ropeDim]");
  requireFloating(p.q);
  p.numTokens = p.q.dim(0);
  p.numHeads = requireDimAtLeast(p.q, 1, 1, "numHeads");
  p.headDim = p.q.dim(2);
  p.ropeDim = requireKvLoraRank(p.kvLoraRank, p.headDim);
  requireRank(p.kv, 2, "[numKv, kvLoraRank + ropeDim]");
  requireSameDType(p.kv, p.q);
  requireDim(p.kv, 1, p.headDim, "kvLoraRank + ropeDim, from q");
  p.numKv = p.kv.dim(0);
  requireRank(p.indices, 2, "[numTokens, topk]");
  requireDType(p.indices, DType::I32);
  requireDim(p.indices, 0, p.numTokens, "numTokens, from q");
  p.topk = requireDimAtLeast(p.indices, 1, 1, "topk");
  requireSoftmaxScale(p.softmaxScale);
  requireRowIndices(p.indices, p.indicesInPlace, p.numKv, "a row of kv");
}

// An indexer key cache of keys of indexDim values: k's dtype, or fp8 e4m3 with a scale per key in `scales`.
void requireIndexerCache(const TensorView& cache, const TensorView& scales, const TensorView& like, int64_t indexDim, const char* from) {
  requireRank(cache, 3, "[numBlocks, blockSize, indexDim]");
  if (cache.dtype != DType::FP8E4M3) requireSameDType(cache, like);
  if (cache.dim(1) < 1) fail(ErrorCode::Shape, std::string(cache.name) + " block size (dimension 1) must be >= 1, got shape " + cache.shapeStr());
  requireDim(cache, 2, indexDim, std::string("indexDim, ") + from);
  if (cache.dtype != DType::FP8E4M3) {
    if (scales.present())
      fail(ErrorCode::Argument, std::string(scales.name) + " applies to an fp8_e4m3 indexer cache only; " + cache.name + " is " + dtypeName(cache.dtype));
    return;
  }
  if (!scales.present())
    fail(ErrorCode::Argument, std::string(scales.name) + " is required with an fp8_e4m3 indexer cache (each key's scale, [numBlocks, blockSize] f32)");
  requireDType(scales, DType::F32);
  requireShape(scales, {cache.dim(0), cache.dim(1)});
}

void indexerInputs(LightningIndexerParams& p) {
  requireRank(p.q, 4, "[batch, queryLen, numIndexerHeads, indexDim]");
  requireFloating(p.q);
  p.batch = p.q.dim(0);
  p.queryLen = requireDimAtLeast(p.q, 1, 1, "queryLen");
  p.numHeads = requireDimAtLeast(p.q, 2, 1, "numIndexerHeads");
  p.indexDim = requireDimAtLeast(p.q, 3, 1, "indexDim");
  requirePresent(p.weights);
  requireDType(p.weights, DType::F32);
  requireShape(p.weights, {p.batch, p.queryLen, p.numHeads});
  requireIndexerCache(p.cache, p.scales, p.q, p.indexDim, "from q");
  p.numBlocks = p.cache.dim(0);
  p.blockSize = p.cache.dim(1);
  p.maxBlocksPerSeq = requireBlockTable(p.blockTable, p.seqLens, p.batch);
  if (p.topk < 1 || p.topk > (int64_t{1} << 24))
    fail(ErrorCode::Range, "topk must be in [1, " + std::to_string(int64_t{1} << 24) + "], got " + std::to_string(p.topk));
  if (p.causal && p.queryLen == 1) p.causal = false;  // one query position sees every row either way
  requireSequences(p.blockTable, p.seqLens, p.batch, p.blockSize, p.numBlocks);
  p.maxSeqLen = 0;
  for (int64_t b = 0; b < p.batch; ++b) p.maxSeqLen = std::max<int64_t>(p.maxSeqLen, p.seqLens.as<const int32_t>()[b]);
}

}  // namespace

void mlaSparseDecodeOutShapes(MlaSparseDecodeParams& p, std::vector<int64_t>* outShape, std::vector<int64_t>* lseShape) {
  sparseDecodeInputs(p);
  *outShape = {p.batch, p.queryLen, p.numHeads, p.kvLoraRank};
  *lseShape = {p.batch, p.numHeads, p.queryLen};
}

void mlaSparsePrefillOutShapes(MlaSparsePrefillParams& p, std::vector<int64_t>* outShape, std::vector<int64_t>* lseShape) {
  sparsePrefillInputs(p);
  *outShape = {p.numTokens, p.numHeads, p.kvLoraRank};
  *lseShape = {p.numTokens, p.numHeads};
}

namespace {
// A sparse attention over `rows` (the cache, or kv): its inputs, its outputs' shapes, dtypes and memory, devices.
template <class Params>
void validateSparse(Params& p, const TensorView& rows, const Device& device, void (*outShapes)(Params&, std::vector<int64_t>*, std::vector<int64_t>*)) {
  std::vector<int64_t> outShape, lseShape;
  outShapes(p, &outShape, &lseShape);
  requireOutput(p.out, p.q, outShape);
  requireLseOutput(p.lse, lseShape);
  requireOperands(device, {&p.q, &rows, &p.out, &p.lse}, {&p.indices}, {&p.out, &p.lse}, {&p.q, &rows, &p.indices});
}
}  // namespace

void validate(MlaSparseDecodeParams& p, const Device& device) { validateSparse(p, p.cache, device, mlaSparseDecodeOutShapes); }
void validate(MlaSparsePrefillParams& p, const Device& device) { validateSparse(p, p.kv, device, mlaSparsePrefillOutShapes); }

MlaSparseDecodeParams sparsePrefillAsDecode(const MlaSparsePrefillParams& p) {
  MlaSparseDecodeParams d;
  const auto view = [](TensorView t, std::initializer_list<int64_t> shape) {
    t.ndim = static_cast<int>(shape.size());
    int i = 0;
    for (int64_t x : shape) t.shape[i++] = x;
    return t;
  };
  d.q = view(p.q, {1, p.numTokens, p.numHeads, p.headDim});
  d.cache = view(p.kv, {p.numKv, 1, p.headDim});
  d.indices = view(p.indices, {1, p.numTokens, p.topk});
  d.out = view(p.out, {1, p.numTokens, p.numHeads, p.kvLoraRank});
  d.lse = p.lse;
  d.softmaxScale = p.softmaxScale;
  d.kvLoraRank = p.kvLoraRank;
  d.indicesInPlace = p.indicesInPlace;
  d.lseTokenMajor = true;
  d.batch = 1;
  d.queryLen = p.numTokens;
  d.numHeads = p.numHeads;
  d.headDim = p.headDim;
  d.ropeDim = p.ropeDim;
  d.topk = p.topk;
  d.numBlocks = p.numKv;
  d.blockSize = 1;
  return d;
}

void validate(AppendIndexerCacheParams& p, const Device& device) {
  requireRank(p.k, 2, "[numTokens, indexDim]");
  requireFloating(p.k);
  p.numTokens = p.k.dim(0);
  p.indexDim = requireDimAtLeast(p.k, 1, 1, "indexDim");
  requireIndexerCache(p.cache, p.scales, p.k, p.indexDim, "from k");
  p.numBlocks = p.cache.dim(0);
  p.blockSize = p.cache.dim(1);
  requireRank(p.slotMapping, 1, "[numTokens]");
  requireHostIndex(p.slotMapping);
  requireDim(p.slotMapping, 0, p.numTokens, "numTokens, from k");
  requireOperands(device, {&p.cache, &p.scales, &p.k}, {}, {&p.cache, &p.scales}, {&p.k, &p.slotMapping});
  requireSlotMapping(p.slotMapping, p.numTokens, p.numBlocks * p.blockSize, p.cache.name, [](int64_t) {});
}

void lightningIndexerOutShapes(LightningIndexerParams& p, std::vector<int64_t>* indicesShape, std::vector<int64_t>* scoresShape) {
  indexerInputs(p);
  *indicesShape = {p.batch, p.queryLen, p.topk};
  *scoresShape = {p.batch, p.queryLen, p.topk};
}

void validate(LightningIndexerParams& p, const Device& device) {
  std::vector<int64_t> indicesShape, scoresShape;
  lightningIndexerOutShapes(p, &indicesShape, &scoresShape);
  requirePresent(p.indices);
  requireDType(p.indices, DType::I32);
  requireShape(p.indices, indicesShape);
  requireLseOutput(p.scores, scoresShape);
  requireOperands(device, {&p.q, &p.weights, &p.cache, &p.scales, &p.indices, &p.scores}, {}, {&p.indices, &p.scores},
                  {&p.q, &p.weights, &p.cache, &p.scales, &p.blockTable, &p.seqLens});
}

void snapshotIndexTensors(MlaSparseDecodeParams& p, IndexSnapshot& store) {
  if (!p.indicesInPlace) snapshot(p.indices, store);
}
void snapshotIndexTensors(MlaSparsePrefillParams& p, IndexSnapshot& store) {
  if (!p.indicesInPlace) snapshot(p.indices, store);
}
void snapshotIndexTensors(AppendIndexerCacheParams& p, IndexSnapshot& store) { snapshot(p.slotMapping, store); }
void snapshotIndexTensors(LightningIndexerParams& p, IndexSnapshot& store) {
  snapshot(p.blockTable, store);
  snapshot(p.seqLens, store);
}

}  // namespace mla
