// The CPU backend: plans each operation's work, runs it on the thread pool, and hands the hot loops to the kernel
// set of the instruction set chosen at run time (kernels.h). This file is compiled for the baseline processor.
//
// Decode work is split three ways so that every core has work even for batch 1 with a long context:
//   sequences × head groups (at most kMaxGroupRows query rows share one pass over the cache) × KV chunks.
// A sequence whose rows are split over several chunks writes partial results (unnormalised output, base-2 max and
// sum) to a workspace whose size depends on the thread count and head count, never on the context; a second pass
// merges them by log-sum-exp. Items are ordered longest first and taken dynamically.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../core/errors.h"
#include "../core/threads.h"
#include "cpu_info.h"
#include "kernels.h"
#include "prefill_cpu.h"
#include "thread_pool.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define MLA_X86 1
#endif

namespace mla::cpu {
namespace {

// --- instruction sets --------------------------------------------------------------------------------------------
struct Features {
  bool avx2 = false, avx512 = false, avx512bf16 = false;
};

#ifdef MLA_X86
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

Features detect() {
  Features f;
#ifdef MLA_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool ymmOs = (xcr0 & 0x6) == 0x6, zmmOs = (xcr0 & 0xe6) == 0xe6;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30),
             avx512vl = b & (1u << 31);
  unsigned a1, b1, c1, d1;
  __cpuid_count(7, 1, a1, b1, c1, d1);
  const bool bf16 = a1 & (1u << 5);
  f.avx2 = ymmOs && avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmmOs && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512bf16 = f.avx512 && bf16;
#endif
  return f;
}

const Features& features() {
  static const Features f = detect();
  return f;
}

struct Isa {
  const char* name;
  bool (*supported)();
  const KernelSet& (*kernels)();
};

#ifdef MLA_X86
const Isa kIsas[] = {
    {"avx512-bf16", [] { return features().avx512bf16; }, avx512Bf16Kernels},
    {"avx512", [] { return features().avx512; }, avx512Kernels},
    {"avx2-fma", [] { return features().avx2; }, avx2Kernels},
    {"portable", [] { return true; }, portableKernels},
};
#elif defined(__aarch64__)
// Advanced SIMD is in every ARMv8-A processor: nothing to detect.
const Isa kIsas[] = {
    {"neon", [] { return true; }, neonKernels},
    {"portable", [] { return true; }, portableKernels},
};
#else
const Isa kIsas[] = {{"portable", [] { return true; }, portableKernels}};
#endif

const Isa* findIsa(const std::string& name) {
  for (const Isa& isa : kIsas)
    if (name == isa.name) return &isa;
  return nullptr;
}

std::string isaNames() {
  std::string s;
  for (const Isa& isa : kIsas) s += (s.empty() ? "" : ", ") + std::string(isa.name);
  return s;
}

// One core's FMA and bf16-dot speed, measured once: the bf16 dot-product kernels are used only where they are
// faster (Zen 4/5: ~2x; some Xeons: ~0.5x).
struct Calibration {
  double fma = 0, dot = 0;  // GFLOP/s on one core
};

double bestRate(double (*loop)(int64_t), int64_t iters) {
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    const double flops = loop(iters);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) best = std::max(best, flops / s);
  }
  return best;
}

const Calibration& calibration() {
  static const Calibration c = [] {
    Calibration r;
    const Isa* best = nullptr;
    for (const Isa& isa : kIsas)
      if (isa.supported() && std::string(isa.name) != "avx512-bf16") { best = &isa; break; }
    r.fma = bestRate(best->kernels().fmaLoop, 20000) / 1e9;
    if (features().avx512bf16) r.dot = bestRate(findIsa("avx512-bf16")->kernels().bf16DotLoop, 20000) / 1e9;
    return r;
  }();
  return c;
}

std::mutex configMu;
std::string& forcedIsa = neverDestroyed<std::string>();  // by cpuConfigure
int64_t forcedSplitRows = 0;
std::string& forcedStores = neverDestroyed<std::string>();  // by cpuConfigure: "", "stream" or "regular"

// Append's stores. Non-temporal stores skip the read-for-ownership of each written line (2 bytes of traffic per byte
// copied, not 3) but leave nothing in the caches, and their cost against plain stores differs between processors
// (docs/performance-cpu.md has the measurement). Appends writing less than kStreamMinBytes (a decode step's few rows,
// read again by the next decode) use plain stores; larger ones use the kind a one-time calibration per path found
// faster: an L1 buffer copied over a destination far larger than L2.
constexpr int64_t kStreamMinBytes = int64_t{1} << 20;

struct StoreCalibration {
  double streamBytesPerSec = 0, regularBytesPerSec = 0;
  bool stream = true;
};

// On the calling thread alone (a pass takes ~2 ms; on a shared machine a pass over every thread is often stretched by
// one preempted thread), best of 7 alternations. Non-temporal stays unless plain stores are 10% faster: it measured
// best or equal on the Zen 5 and ran at 0.86-0.96 of copy bandwidth on the Xeon; one noisy sample should not flip it.
StoreCalibration calibrateStores(const KernelSet& k) {
  constexpr int64_t kStage = 16 << 10, kBytes = 32 << 20;
  std::vector<char> dst(static_cast<size_t>(kBytes)), stage(static_cast<size_t>(kStage), 1);  // pages touched
  double best[2] = {1e30, 1e30};  // [stream, regular] seconds
  for (int rep = 0; rep < 7; ++rep)
    for (int mode = 0; mode < 2; ++mode) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t off = 0; off < kBytes; off += kStage) {
        if (mode == 0) k.streamCopy(dst.data() + off, stage.data(), kStage);
        else std::memcpy(dst.data() + off, stage.data(), static_cast<size_t>(kStage));
      }
      if (mode == 0) k.streamFence();
      best[mode] = std::min(best[mode], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  StoreCalibration c;
  c.streamBytesPerSec = static_cast<double>(kBytes) / best[0];
  c.regularBytesPerSec = static_cast<double>(kBytes) / best[1];
  c.stream = c.regularBytesPerSec < 1.1 * c.streamBytesPerSec;
  return c;
}

// Per path (each has its own streamCopy), measured at the path's first large append.
StoreCalibration storeCalibration(const char* path, const KernelSet& k) {
  static std::mutex mu;
  static std::vector<std::pair<std::string, StoreCalibration>>& done = neverDestroyed<std::vector<std::pair<std::string, StoreCalibration>>>();
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& [name, c] : done)
    if (name == path) return c;
  done.emplace_back(path, calibrateStores(k));
  return done.back().second;
}

bool streamStores(int64_t bytesWritten, const char* path, const KernelSet& k) {
  std::string forced;
  {
    std::lock_guard<std::mutex> lock(configMu);
    forced = forcedStores;
  }
  if (forced == "stream") return true;
  if (forced == "regular") return false;
  return bytesWritten >= kStreamMinBytes && storeCalibration(path, k).stream;
}

struct Choice {
  const Isa* isa;
  std::string reason;
};

Choice automatic() {
  for (const Isa& isa : kIsas) {
    if (!isa.supported()) continue;
    if (std::string(isa.name) == "avx512-bf16") {
      const Calibration& c = calibration();
      if (c.dot > 1.2 * c.fma) return {&isa, "detected; vdpbf16ps measured faster than fp32 FMA on one core"};
      continue;
    }
    return {&isa, features().avx512bf16 ? "detected; AVX512_BF16 present but vdpbf16ps measured no faster than fp32 FMA"
                                        : "detected"};
  }
  return {&kIsas[0], "detected"};
}

Choice choose() {
  std::string name;
  const char* how = "";
  {
    std::lock_guard<std::mutex> lock(configMu);
    name = forcedIsa;
    how = "forced by cpuConfigure";
  }
  if (name.empty()) {
    const char* env = std::getenv("MLA_CPU_ISA");  // read per operation: tests force each path
    if (env && *env && std::string(env) != "auto") {
      name = env;
      how = "forced by MLA_CPU_ISA";
    }
  }
  if (name.empty()) return automatic();
  const Isa* isa = findIsa(name);
  if (!isa) throw Error(ErrorCode::Unsupported, "CPU path '" + name + "' (" + how + ") is unknown; this build has " + isaNames());
  if (!isa->supported()) throw Error(ErrorCode::Unsupported, "CPU path '" + name + "' (" + how + ") is not supported by this processor");
  return {isa, how};
}

const KernelSet& kernels() { return choose().isa->kernels(); }

Elem elemOf(DType t) {
  switch (t) {
    case DType::F32: return Elem::F32;
    case DType::F16: return Elem::F16;
    case DType::BF16: return Elem::BF16;
    case DType::FP8E4M3: return Elem::FP8E4M3;
    default: throw Error(ErrorCode::Internal, "CPU kernel called with a non-float dtype");
  }
}

// Per-thread scratch, 64-byte aligned, grown as needed (its size depends on head count and row width only).
float* scratchFloats(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n + 16) buf.resize(n + 16);
  const uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<float*>((p + 63) & ~static_cast<uintptr_t>(63));
}

// --- decode ------------------------------------------------------------------------------------------------------
constexpr int64_t kMaxGroupRows = 128;  // query rows sharing one pass over the cache (128 heads: QT, O and a tile fit a 1 MiB L2)
constexpr int64_t kMinChunkRows = 256;  // shortest KV chunk worth a split
constexpr int64_t kMaxUnsplitShortRows = 4096;  // longest unit left whole to save splits' fixed work (runDecodeCpu)
constexpr int64_t kInvariantChunkRows = 1024;    // a batch-invariant plan's KV chunk: a sequence's split by its own length

// A decode's work as the split sees it: query rows [m0, m1) of sequence b against its len cache rows, found through
// its block-table row or (sparse decode) listed as slots.
struct DecodeUnit {
  int64_t b, m0, m1, len;
  const int32_t* table;
  const int32_t* slots;
};

// The item every work item starts from: the operation's tensors and sizes.
DecodeItem decodeBase(const TensorView& q, const TensorView& cache, const TensorView& out, const TensorView& lse, int64_t kvLoraRank,
                      int64_t numHeads, int64_t queryLen, int64_t blockSize, float softmaxScale, float cacheScale) {
  DecodeItem base{};
  base.elem = elemOf(q.dtype);
  base.cacheElem = cache.dtype == DType::FP8DSMLA ? Elem::FP8DSMLA : elemOf(cache.dtype);
  base.cacheScale = cacheScale;
  base.q = q.data;
  base.cache = cache.data;
  base.rowBytes = cache.dim(2) * static_cast<int64_t>(dtypeSize(cache.dtype));
  base.D = q.dim(-1);
  base.V = kvLoraRank;
  base.blockSize = blockSize;
  base.numHeads = numHeads;
  base.queryLen = queryLen;
  base.scaleLog2 = softmaxScale * 1.4426950408889634f;
  base.out = out.data;
  base.lse = lse.as<float>();
  return base;
}

// Splits the units three ways (units × head groups of at most kMaxGroupRows rows × KV chunks), runs the items longest
// first, and merges split units by log-sum-exp. batchInvariant: KV chunks of a fixed length, so that a unit's split,
// and so its bits, depend on its own length only.
void runDecodeCpu(const DecodeItem& base, const std::vector<DecodeUnit>& units, int64_t unitRows, bool batchInvariant = false) {
  const KernelSet& k = kernels();
  const int threads = poolThreads();
  const int64_t V = base.V, M = base.queryLen * base.numHeads;

  // Head groups: equal sizes, multiples of 16 rows where possible.
  const int64_t numGroups = (unitRows + kMaxGroupRows - 1) / kMaxGroupRows;
  int64_t groupRows = (unitRows + numGroups - 1) / numGroups;
  if (groupRows > 16) groupRows = std::min<int64_t>(kMaxGroupRows, (groupRows + 15) / 16 * 16);

  // KV chunk length: enough items for every thread (about 4 per thread to balance), never below kMinChunkRows.
  int64_t totalRows = 0;
  for (const DecodeUnit& u : units) totalRows += u.len * numGroups;
  int64_t splitRows;
  {
    std::lock_guard<std::mutex> lock(configMu);
    splitRows = forcedSplitRows;
  }
  if (splitRows <= 0 && batchInvariant) splitRows = kInvariantChunkRows;
  int64_t chunk = splitRows > 0 ? splitRows : std::max<int64_t>(kMinChunkRows, (totalRows + 4 * threads - 1) / (4 * threads));
  if (splitRows <= 0) chunk = (chunk + 63) / 64 * 64;
  // Short units of one length that already come in a multiple of the threads' count are not split: each split adds a
  // pass's fixed work (the group's Q packing, its output and the merge), which a short pass does not amortise.
  if (splitRows <= 0 && !units.empty()) {
    const int64_t len = units.front().len;
    bool equal = len <= kMaxUnsplitShortRows;
    for (const DecodeUnit& u : units) equal = equal && u.len == len;
    if (equal && (static_cast<int64_t>(units.size()) * numGroups) % threads == 0) chunk = std::max(chunk, len);
  }

  struct SplitSeq {
    int64_t b, m0, m1, parts, first;  // first: index of its first partial
  };
  std::vector<DecodeItem> items;
  std::vector<SplitSeq> splits;
  int64_t partials = 0;
  for (const DecodeUnit& u : units) {
    const int64_t len = u.len;
    const int64_t parts = len <= chunk ? 1 : (len + chunk - 1) / chunk;
    const int64_t per = parts == 1 ? len : (len + parts - 1) / parts;
    for (int64_t m0 = u.m0; m0 < u.m1; m0 += groupRows) {
      const int64_t m1 = std::min(u.m1, m0 + groupRows);
      if (parts > 1) splits.push_back({u.b, m0, m1, parts, partials});
      for (int64_t s = 0; s < parts; ++s) {
        DecodeItem it = base;
        it.part = -1;
        it.table = u.table;
        it.slots = u.slots;
        it.seqLen = len;
        it.b = u.b;
        it.m0 = m0;
        it.m1 = m1;
        it.n0 = std::min(len, s * per);
        it.n1 = std::min(len, (s + 1) * per);
        if (parts > 1) {
          it.part = partials++;  // its workspace is set below, once the workspace exists
        }
        items.push_back(it);
      }
    }
  }
  // Workspace of the partials: [partials][groupRows][V] + max + sum.
  thread_local std::vector<float> work;
  const int64_t partStride = groupRows * V + 2 * groupRows;
  if (partials > 0) {
    work.resize(static_cast<size_t>(partials * partStride));
    for (DecodeItem& it : items)
      if (it.part >= 0) {
        float* base_ = work.data() + it.part * partStride;
        it.oPart = base_;
        it.maxPart = base_ + groupRows * V;
        it.sumPart = it.maxPart + groupRows;
      }
  }
  // Longest first, taken dynamically.
  std::stable_sort(items.begin(), items.end(),
                   [](const DecodeItem& a, const DecodeItem& b) { return (a.n1 - a.n0) * (a.m1 - a.m0) > (b.n1 - b.n0) * (b.m1 - b.m0); });
  parallelFor(static_cast<int64_t>(items.size()), [&](int64_t i) {
    const DecodeItem& it = items[static_cast<size_t>(i)];
    k.decode(it, scratchFloats(k.decodeScratch(it)));
  });
  if (splits.empty()) return;

  // Merge: out = Σ_s 2^(max_s - max) o_s / Σ_s 2^(max_s - max) sum_s, lse = (max + log2 Σ ...) · ln 2.
  const Elem elem = base.elem;
  const float* ws = work.data();  // the caller's thread_local: the pool's threads must not name it
  const int64_t outBytes = static_cast<int64_t>(elem == Elem::F32 ? 4 : 2);
  parallelFor(static_cast<int64_t>(splits.size()), [&](int64_t i) {
    const SplitSeq& sq = splits[static_cast<size_t>(i)];
    float* acc = scratchFloats(static_cast<size_t>(V));
    for (int64_t j = 0; j < sq.m1 - sq.m0; ++j) {
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t s = 0; s < sq.parts; ++s) mx = std::max(mx, ws[(sq.first + s) * partStride + groupRows * V + j]);
      const int64_t m = sq.m0 + j, t = m / base.numHeads, h = m % base.numHeads;
      float* lse = base.lse + (base.lseTokenMajor ? (sq.b * base.queryLen + t) * base.numHeads + h : (sq.b * base.numHeads + h) * base.queryLen + t);
      char* out = static_cast<char*>(base.out) + (sq.b * M + m) * V * outBytes;
      std::fill(acc, acc + V, 0.f);
      float total = 0.f;
      if (mx != -std::numeric_limits<float>::infinity()) {
        for (int64_t s = 0; s < sq.parts; ++s) {
          const float* part = ws + (sq.first + s) * partStride;
          const float w = std::exp2(part[groupRows * V + j] - mx);
          if (w == 0.f) continue;
          total += w * part[groupRows * V + groupRows + j];
          k.axpy(w, part + j * V, acc, V);
        }
      }
      if (total > 0.f) {
        const float inv = 1.f / total;
        for (int64_t v = 0; v < V; ++v) acc[v] *= inv;
        *lse = (mx + std::log2(total)) * 0.693147180559945309f;
      } else {
        *lse = -std::numeric_limits<float>::infinity();
      }
      k.store(elem, acc, out, V);
    }
  });
}

void mlaDecodeCpu(const MlaDecodeParams& p) {
  DecodeItem base = decodeBase(p.q, p.cache, p.out, p.lse, p.kvLoraRank, p.numHeads, p.queryLen, p.blockSize, p.softmaxScale, p.cacheScale);
  base.causal = p.causal;
  const int32_t* lens = p.seqLens.as<const int32_t>();
  const int64_t M = p.queryLen * p.numHeads;
  std::vector<DecodeUnit> units;
  for (int64_t b = 0; b < p.batch; ++b) units.push_back({b, 0, M, lens[b], p.blockTable.as<const int32_t>() + b * p.maxBlocksPerSeq, nullptr});
  runDecodeCpu(base, units, M, p.plan && p.plan->batchInvariant);
}

// Sparse decode: each query position a unit of its heads over the slots it selects, padding left out (it adds
// nothing), so with every row of a sequence selected in order the work is that of mlaDecode, bit for bit. Indices
// read in place were not checked at the call: a slot outside the cache counts as padding.
void mlaSparseDecodeCpu(const MlaSparseDecodeParams& p) {
  DecodeItem base = decodeBase(p.q, p.cache, p.out, p.lse, p.kvLoraRank, p.numHeads, p.queryLen, p.blockSize, p.softmaxScale, p.cacheScale);
  base.lseTokenMajor = p.lseTokenMajor;
  const int32_t* indices = p.indices.as<const int32_t>();
  const int64_t numSlots = p.numSlots();
  std::vector<int32_t> slots(static_cast<size_t>(p.batch * p.queryLen * p.topk));
  std::vector<DecodeUnit> units;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t t = 0; t < p.queryLen; ++t) {
      const int64_t row = b * p.queryLen + t;
      int32_t* kept = slots.data() + row * p.topk;
      int64_t n = 0;
      for (int64_t k = 0; k < p.topk; ++k) {
        const int32_t slot = indices[row * p.topk + k];
        if (slot >= 0 && slot < numSlots) kept[n++] = slot;
      }
      units.push_back({b, t * p.numHeads, (t + 1) * p.numHeads, n, nullptr, kept});
    }
  runDecodeCpu(base, units, p.numHeads);
}

// --- append ------------------------------------------------------------------------------------------------------
// An fp8 cache: each row is built in f32 (latent, rotated rope part), divided by the scale and rounded to e4m3.
void appendFp8Cpu(const AppendLatentCacheParams& p) {
  const KernelSet& k = kernels();
  const Elem in = elemOf(p.kvC.dtype);
  const int64_t es = static_cast<int64_t>(dtypeSize(p.kvC.dtype)), width = p.rowWidth(), half = p.ropeDim / 2;
  const int32_t* slots = p.slotMapping.as<const int32_t>();
  const char* kvC = static_cast<const char*>(p.kvC.data);
  const char* kPe = static_cast<const char*>(p.kPe.data);
  uint8_t* cache = static_cast<uint8_t*>(p.cache.data);
  const int64_t perTask = 256;
  parallelFor((p.numTokens + perTask - 1) / perTask, [&](int64_t task) {
    float* row = scratchFloats(static_cast<size_t>(width + p.ropeDim));
    float* pe = row + width;
    for (int64_t i = task * perTask; i < std::min(p.numTokens, (task + 1) * perTask); ++i) {
      if (slots[i] < 0) continue;
      k.load(in, kvC + i * p.kvLoraRank * es, row, p.kvLoraRank);
      if (p.ropeStyle == RopeStyle::None) {
        k.load(in, kPe + i * p.ropeDim * es, row + p.kvLoraRank, p.ropeDim);
      } else {
        const int64_t pos = p.positions.as<const int32_t>()[i];
        k.load(in, kPe + i * p.ropeDim * es, pe, p.ropeDim);
        k.rope(Elem::F32, p.ropeStyle == RopeStyle::Interleaved, pe, p.cos.as<const float>() + pos * half, p.sin.as<const float>() + pos * half,
               row + p.kvLoraRank, p.ropeDim);
      }
      for (int64_t c = 0; c < width; ++c) row[c] /= p.cacheScale;
      k.store(Elem::FP8E4M3, row, cache + static_cast<int64_t>(slots[i]) * width, width);
    }
  });
}

// An fp8_ds_mla cache (FlashMLA's V3.2 layout): the latent in tiles of kDsMlaTile values, each stored as
// e4m3(value / scale) with scale = max(amax / 448, FLT_MIN) over the tile (as vLLM's concat_and_cache_ds_mla), the
// tiles' scales as fp32 after the latent, then the rope part (rotated in f32 when asked) as bf16.
void appendDsMlaCpu(const AppendLatentCacheParams& p) {
  const KernelSet& k = kernels();
  const Elem in = elemOf(p.kvC.dtype);
  const int64_t es = static_cast<int64_t>(dtypeSize(p.kvC.dtype)), V = p.kvLoraRank, R = p.ropeDim, half = R / 2;
  const int64_t rowBytes = dsMlaRowBytes(V, R), tiles = V / kDsMlaTile;
  const int32_t* slots = p.slotMapping.as<const int32_t>();
  const char* kvC = static_cast<const char*>(p.kvC.data);
  const char* kPe = static_cast<const char*>(p.kPe.data);
  uint8_t* cache = static_cast<uint8_t*>(p.cache.data);
  const int64_t perTask = 64;
  parallelFor((p.numTokens + perTask - 1) / perTask, [&](int64_t task) {
    float* row = scratchFloats(static_cast<size_t>(V + 2 * R + 16));
    float* pe = row + V;
    float* rotated = pe + R;
    for (int64_t i = task * perTask; i < std::min(p.numTokens, (task + 1) * perTask); ++i) {
      if (slots[i] < 0) continue;
      uint8_t* dst = cache + static_cast<int64_t>(slots[i]) * rowBytes;
      k.load(in, kvC + i * V * es, row, V);
      for (int64_t t = 0; t < tiles; ++t) {
        float* x = row + t * kDsMlaTile;
        float amax = 0.f;
        for (int64_t c = 0; c < kDsMlaTile; ++c) amax = std::max(amax, std::fabs(x[c]));
        const float scale = std::max(amax / 448.f, std::numeric_limits<float>::min());
        for (int64_t c = 0; c < kDsMlaTile; ++c) x[c] /= scale;
        std::memcpy(dst + V + 4 * t, &scale, 4);
      }
      k.store(Elem::FP8E4M3, row, dst, V);
      k.load(in, kPe + i * R * es, pe, R);
      const float* ropeRow = pe;
      if (p.ropeStyle != RopeStyle::None) {
        const int64_t pos = p.positions.as<const int32_t>()[i];
        k.rope(Elem::F32, p.ropeStyle == RopeStyle::Interleaved, pe, p.cos.as<const float>() + pos * half, p.sin.as<const float>() + pos * half, rotated, R);
        ropeRow = rotated;
      }
      k.store(Elem::BF16, ropeRow, dst + V + 4 * tiles, R);
    }
  });
}

void appendCpu(const AppendLatentCacheParams& p) {
  if (p.cache.dtype == DType::FP8E4M3) return appendFp8Cpu(p);
  if (p.cache.dtype == DType::FP8DSMLA) return appendDsMlaCpu(p);
  const Choice path = choose();
  const KernelSet& k = path.isa->kernels();
  const Elem e = elemOf(p.cache.dtype);
  const size_t es = dtypeSize(p.cache.dtype);
  const int64_t width = p.rowWidth(), half = p.ropeDim / 2;
  const int32_t* slots = p.slotMapping.as<const int32_t>();
  const char* kvC = static_cast<const char*>(p.kvC.data);
  const char* kPe = static_cast<const char*>(p.kPe.data);
  char* cache = static_cast<char*>(p.cache.data);
  // Chunks of ~256 KiB of rows per task: memory speed needs every core only for large appends.
  const int64_t rowBytes = width * static_cast<int64_t>(es);
  const int64_t perTask = std::max<int64_t>(1, (256 << 10) / std::max<int64_t>(1, rowBytes));
  const int64_t tasks = (p.numTokens + perTask - 1) / perTask;
  const bool stream = streamStores(p.numTokens * rowBytes, path.isa->name, k);
  const int64_t kvBytes = p.kvLoraRank * static_cast<int64_t>(es), ropeBytes = p.ropeDim * static_cast<int64_t>(es);
  const bool rope = p.ropeStyle != RopeStyle::None;
  const int32_t* positions = rope ? p.positions.as<const int32_t>() : nullptr;
  const float* cos = rope ? p.cos.as<const float>() : nullptr;
  const float* sin = rope ? p.sin.as<const float>() : nullptr;
  auto write = [&](char* dst, const void* src, int64_t bytes) {
    if (bytes <= 0) return;  // an empty kvC or kPe (kvLoraRank or ropeDim 0) may have no data at all
    if (stream) k.streamCopy(dst, src, bytes);
    else std::memcpy(dst, src, static_cast<size_t>(bytes));
  };
  // Rows go straight from kvC and kPe to their slots where every part of a row is a whole number of 64-byte lines:
  // then, however the cache is aligned (a typed array's data need not be), each line is written wholly by streaming
  // stores or wholly by plain ones (the partial lines at the parts' ends), never both, which costs more than the row.
  // A rotated RoPE part is built in L1 and copied with plain stores: streamed from the buffer just written, its
  // append took 1.7x as long (two threads, Zen 5). Else rows are built in a staging buffer in L1 and written out a run
  // of consecutive slots at a time. Staging cost more than the copy itself: 0.34 of one core's copy bandwidth against
  // 0.63 direct (Zen 5, docs/performance-cpu.md).
  const bool direct = rowBytes % 64 == 0 && kvBytes % 64 == 0;
  constexpr int64_t kStageBytes = 16 << 10;
  const int64_t stageRows = std::max<int64_t>(1, kStageBytes / rowBytes);
  // kvC at least 128 bytes: a row's block never reaches the next row's. f32 rows (where the kernel set has no run loop:
  // portable, NEON) keep the per-row path: the run path measured 5-8% slower for them (Zen 5, one and two threads; bf16
  // 1.2-1.4x faster).
  const bool runs = stream && es == 2 && kvBytes >= 128 && ropeBytes > 0;
  // Where the kernel set has the whole run loop for these rows (AVX-512 and AVX2) it writes each run instead: no block
  // built in L1, no call per row part, every 64-byte line (AVX2: 32-byte unit) one streaming store (the run's two end
  // ones aside). Alternated against the paths below (Zen 5, one thread, fresh processes, medians): AVX-512 f32 1.07x,
  // bf16 1.01-1.05x; AVX2 f32 1.9x, bf16 1.35x.
  // (The loop shifts lines by whole elements: a cache not aligned to its element size, which a typed array never is,
  // takes the paths below.)
  const bool kernelRuns = stream && p.ropeStyle != RopeStyle::Neox && reinterpret_cast<uintptr_t>(cache) % es == 0 &&
                          k.appendRunFits(e, rope, kvBytes, p.ropeDim);
  parallelFor(tasks, [&](int64_t task) {
    const int64_t i1 = std::min(p.numTokens, (task + 1) * perTask);
    auto runEnd = [&](int64_t i) {  // the end of the run of consecutive slots from token i
      int64_t j = i + 1;
      while (j < i1 && slots[j] == slots[j - 1] + 1) ++j;
      return j;
    };
    if (kernelRuns) {
      for (int64_t i = task * perTask; i < i1;) {
        if (slots[i] < 0) {
          ++i;
          continue;
        }
        const int64_t j = runEnd(i);
        k.appendRun({e, rope, kvC, kPe, kvBytes, p.ropeDim, positions, cos, sin, i, j, cache + static_cast<int64_t>(slots[i]) * rowBytes});
        i = j;
      }
      k.streamFence();
      return;
    }
    auto ropeRow = [&](int64_t i, char* out) {
      const int64_t pos = positions[i];
      k.rope(e, p.ropeStyle == RopeStyle::Interleaved, kPe + i * ropeBytes, cos + pos * half, sin + pos * half, out, p.ropeDim);
    };
    if (runs) {
      // A run of consecutive slots is one destination byte range, written a 64-byte line at a time, each line by
      // exactly one kind of store: kvC's whole lines streamed straight from kvC; the lines around a row's RoPE part
      // (the end of its kvC, the rotated RoPE bytes, the start of the next row's kvC) assembled in an L1 block and
      // streamed; only the run's first and last partial lines by plain (masked) stores. No line is read for
      // ownership. A row's block is streamed after the next row's kvC lines, when the stores that built it are done
      // (streamed at once: 3-4% slower, bf16, one thread).
      const int64_t blockBytes = (ropeBytes + 128 + 63) / 64 * 64;
      char* const blocks = reinterpret_cast<char*>(scratchFloats(static_cast<size_t>(2 * blockBytes / 4)));
      auto copyShort = [](char* d, const char* s, int64_t n) {  // n < 64, inlined: a call per piece cost more than the piece
        if (n & 32) __builtin_memcpy(d, s, 32), d += 32, s += 32;
        if (n & 16) __builtin_memcpy(d, s, 16), d += 16, s += 16;
        if (n & 8) __builtin_memcpy(d, s, 8), d += 8, s += 8;
        if (n & 4) __builtin_memcpy(d, s, 4), d += 4, s += 4;
        if (n & 2) __builtin_memcpy(d, s, 2), d += 2, s += 2;
        if (n & 1) *d = *s;
      };
      auto down = [](char* a) { return a - reinterpret_cast<uintptr_t>(a) % 64; };
      auto up = [](char* a) { return a + (64 - reinterpret_cast<uintptr_t>(a) % 64) % 64; };
      for (int64_t i = task * perTask; i < i1;) {
        if (slots[i] < 0) {
          ++i;
          continue;
        }
        const int64_t j = runEnd(i);
        char* const runStop = cache + (static_cast<int64_t>(slots[i]) + (j - i)) * rowBytes;
        // kvC row i from `from` on (the bytes before it went with the previous block) ends at the RoPE part.
        char* from = cache + static_cast<int64_t>(slots[i]) * rowBytes;
        char *pendingAt = nullptr, *pending = nullptr;  // the previous row's block, not yet streamed
        int64_t pendingBytes = 0;
        for (; i < j; ++i) {
          char* const ropeAt = cache + static_cast<int64_t>(slots[i]) * rowBytes + kvBytes;
          char* const rowEnd = ropeAt + ropeBytes;
          char* const b0 = down(ropeAt);
          char* const b1 = std::min(up(rowEnd), runStop);
          k.streamCopy(from, kvC + i * kvBytes + (from - (ropeAt - kvBytes)), b0 - from);
          if (pending) k.streamCopy(pendingAt, pending, pendingBytes);
          char* const block = blocks + (i & 1) * blockBytes;
          copyShort(block, kvC + i * kvBytes + (b0 - (ropeAt - kvBytes)), ropeAt - b0);
          if (rope) ropeRow(i, block + (ropeAt - b0));
          else std::memcpy(block + (ropeAt - b0), kPe + i * ropeBytes, static_cast<size_t>(ropeBytes));
          if (b1 > rowEnd) copyShort(block + (rowEnd - b0), kvC + (i + 1) * kvBytes, b1 - rowEnd);
          pendingAt = b0, pending = block, pendingBytes = b1 - b0;
          from = b1;
        }
        k.streamCopy(pendingAt, pending, pendingBytes);
      }
      k.streamFence();
      return;
    }
    if (direct) {
      char* peRow = reinterpret_cast<char*>(scratchFloats(static_cast<size_t>((ropeBytes + 63) / 4 + 16)));
      peRow += (64 - reinterpret_cast<uintptr_t>(peRow) % 64) % 64;
      for (int64_t i = task * perTask; i < i1; ++i) {
        if (slots[i] < 0) continue;
        char* dst = cache + static_cast<int64_t>(slots[i]) * rowBytes;
        if (i + 2 < i1 && slots[i + 2] >= 0) {
          // The lines a later row writes with plain stores, owned early: each would otherwise wait for its read.
          char* later = cache + static_cast<int64_t>(slots[i + 2]) * rowBytes;
          __builtin_prefetch(later, 1, 3);
          for (int64_t o = kvBytes - 1; o < rowBytes; o += 64) __builtin_prefetch(later + o, 1, 3);
          __builtin_prefetch(later + rowBytes - 1, 1, 3);
        }
        write(dst, kvC + i * kvBytes, kvBytes);
        if (rope) {
          ropeRow(i, peRow);
          std::memcpy(dst + kvBytes, peRow, static_cast<size_t>(ropeBytes));
        } else {
          write(dst + kvBytes, kPe + i * ropeBytes, ropeBytes);
        }
      }
      if (stream) k.streamFence();
      return;
    }
    char* stage = reinterpret_cast<char*>(scratchFloats(static_cast<size_t>((stageRows * rowBytes + 3) / 4)));
    int64_t runSlot = -1, runRows = 0;  // the run of consecutive slots staged so far
    auto flush = [&] {
      if (runRows > 0) write(cache + runSlot * rowBytes, stage, runRows * rowBytes);
      runRows = 0;
    };
    for (int64_t i = task * perTask; i < i1; ++i) {
      if (slots[i] < 0) continue;
      if (runRows == stageRows || (runRows > 0 && slots[i] != runSlot + runRows)) flush();
      if (runRows == 0) runSlot = slots[i];
      char* row = stage + runRows * rowBytes;
      if (kvBytes > 0) std::memcpy(row, kvC + i * kvBytes, static_cast<size_t>(kvBytes));
      if (rope) ropeRow(i, row + kvBytes);
      else if (ropeBytes > 0) std::memcpy(row + kvBytes, kPe + i * ropeBytes, static_cast<size_t>(ropeBytes));
      ++runRows;
    }
    flush();
    if (stream) k.streamFence();
  });
}

// --- absorb / unabsorb: per head, chunks of tokens share each converted weight row --------------------------------
constexpr int64_t kTokChunk = 16;

void absorbCpu(const AbsorbQueryParams& p) {
  const KernelSet& k = kernels();
  const Elem e = elemOf(p.qNope.dtype);
  const int64_t es = static_cast<int64_t>(dtypeSize(p.qNope.dtype));
  const int64_t N = p.nopeDim, C = p.kvLoraRank, R = p.ropeDim, outW = C + R, H = p.numHeads;
  const int64_t chunks = (p.numTokens + kTokChunk - 1) / kTokChunk;
  parallelFor(H * chunks, [&](int64_t task) {
    const int64_t h = task % H, t0 = (task / H) * kTokChunk, t1 = std::min(p.numTokens, t0 + kTokChunk), nt = t1 - t0;
    float* acc = scratchFloats(static_cast<size_t>(nt * C + C + nt * N));
    float* w = acc + nt * C;
    float* q = w + C;
    std::fill(acc, acc + nt * C, 0.f);
    for (int64_t t = 0; t < nt; ++t) k.load(e, static_cast<const char*>(p.qNope.data) + ((t0 + t) * H + h) * N * es, q + t * N, N);
    for (int64_t n = 0; n < N; ++n) {
      k.load(e, static_cast<const char*>(p.wUk.data) + (h * N + n) * C * es, w, C);
      for (int64_t t = 0; t < nt; ++t) k.axpy(q[t * N + n], w, acc + t * C, C);
    }
    for (int64_t t = 0; t < nt; ++t) {
      char* out = static_cast<char*>(p.out.data) + ((t0 + t) * H + h) * outW * es;
      k.store(e, acc + t * C, out, C);
      if (R > 0) std::memcpy(out + C * es, static_cast<const char*>(p.qPe.data) + ((t0 + t) * H + h) * R * es, static_cast<size_t>(R * es));
    }
  });
}

void unabsorbCpu(const UnabsorbOutputParams& p) {
  const KernelSet& k = kernels();
  const Elem e = elemOf(p.oLat.dtype);
  const int64_t es = static_cast<int64_t>(dtypeSize(p.oLat.dtype));
  const int64_t C = p.kvLoraRank, Vd = p.vHeadDim, H = p.numHeads;
  const int64_t chunks = (p.numTokens + kTokChunk - 1) / kTokChunk;
  parallelFor(H * chunks, [&](int64_t task) {
    const int64_t h = task % H, t0 = (task / H) * kTokChunk, t1 = std::min(p.numTokens, t0 + kTokChunk), nt = t1 - t0;
    float* o = scratchFloats(static_cast<size_t>(nt * C + C + nt * Vd));
    float* w = o + nt * C;
    float* res = w + C;
    for (int64_t t = 0; t < nt; ++t) k.load(e, static_cast<const char*>(p.oLat.data) + ((t0 + t) * H + h) * C * es, o + t * C, C);
    for (int64_t v = 0; v < Vd; ++v) {
      k.load(e, static_cast<const char*>(p.wUv.data) + (h * Vd + v) * C * es, w, C);
      for (int64_t t = 0; t < nt; ++t) res[t * Vd + v] = k.dot(o + t * C, w, C);
    }
    for (int64_t t = 0; t < nt; ++t) k.store(e, res + t * Vd, static_cast<char*>(p.out.data) + ((t0 + t) * H + h) * Vd * es, Vd);
  });
}

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  Device device() const override { return Device{}; }
  void appendLatentCache(const AppendLatentCacheParams& p) override { appendCpu(p); }
  void mlaDecode(const MlaDecodeParams& p) override { mlaDecodeCpu(p); }
  void mlaSparseDecode(const MlaSparseDecodeParams& p) override { mlaSparseDecodeCpu(p); }
  void appendIndexerCache(const AppendIndexerCacheParams& p) override { appendIndexerCacheCpu(p, kernels()); }
  void lightningIndexer(const LightningIndexerParams& p) override { lightningIndexerCpu(p, kernels()); }
  void copy(const CopyParams& p) override {
    if (p.src.nbytes()) std::memcpy(p.dst.data, p.src.data, p.src.nbytes());
  }
  void absorbQuery(const AbsorbQueryParams& p) override { absorbCpu(p); }
  void unabsorbOutput(const UnabsorbOutputParams& p) override { unabsorbCpu(p); }
  void mlaPrefill(const MlaPrefillParams& p) override { mlaPrefillCpu(p, kernels()); }
  void gatherLatentCache(const GatherLatentCacheParams& p) override { gatherLatentCacheCpu(p, kernels()); }
  void upProjectKv(const UpProjectKvParams& p) override { upProjectKvCpu(p, kernels()); }
  void mergeAttentionStates(const MergeAttentionStatesParams& p) override { mergeAttentionStatesCpu(p, kernels()); }
};

}  // namespace

// For the prefill operations (prefill_cpu.cc).
Elem cpuElem(DType t) { return elemOf(t); }
float* cpuScratch(size_t n) { return scratchFloats(n); }

void cpuLoadDsMlaRow(const KernelSet& k, const void* src, float* row, int64_t kvLoraRank, int64_t ropeDim) {
  const uint8_t* bytes = static_cast<const uint8_t*>(src);
  k.load(Elem::FP8E4M3, bytes, row, kvLoraRank);
  for (int64_t t = 0; t < kvLoraRank / kDsMlaTile; ++t) {
    float scale;
    std::memcpy(&scale, bytes + kvLoraRank + 4 * t, 4);
    for (int64_t c = t * kDsMlaTile; c < (t + 1) * kDsMlaTile; ++c) row[c] *= scale;
  }
  k.load(Elem::BF16, bytes + dsMlaRowBytes(kvLoraRank, 0), row + kvLoraRank, ropeDim);
}

// --- info, test hooks, limits ------------------------------------------------------------------------------------
CpuStatus cpuStatus() {
  CpuStatus s;
  for (const Isa& isa : kIsas)
    if (isa.supported()) s.supported.push_back(isa.name);
  try {
    const Choice c = choose();
    s.simd = c.isa->name;
    s.reason = c.reason;
  } catch (const Error& e) {
    const Choice c = automatic();
    s.simd = c.isa->name;
    s.reason = std::string("ops will fail: ") + e.what();
  }
  s.threads = poolThreads();
  s.fmaGflopsPerCore = calibration().fma;
  s.bf16DotGflopsPerCore = calibration().dot;
  std::string forced;
  {
    std::lock_guard<std::mutex> lock(configMu);
    forced = forcedStores;
  }
  if (!forced.empty()) {
    s.appendStores = forced + " (forced by cpuConfigure)";
    s.streamAboveBytes = forced == "stream" ? 0 : -1;
  } else {
    try {
      const Choice c = choose();
      const StoreCalibration cal = storeCalibration(c.isa->name, c.isa->kernels());
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s (calibrated: non-temporal %.1f GB/s, regular %.1f GB/s)",
                    cal.stream ? ("non-temporal from " + std::to_string(kStreamMinBytes >> 10) + " KiB written, regular below").c_str()
                               : "regular at every size",
                    cal.streamBytesPerSec / 1e9, cal.regularBytesPerSec / 1e9);
      s.appendStores = buf;
      s.streamAboveBytes = cal.stream ? kStreamMinBytes : -1;
    } catch (const Error&) {
      s.appendStores = "unknown (ops will fail)";
      s.streamAboveBytes = -1;
    }
  }
  return s;
}

void cpuConfigure(const std::string* isa, const int64_t* splitRows, const std::string* appendStores) {
  if (appendStores && !appendStores->empty() && *appendStores != "auto" && *appendStores != "stream" && *appendStores != "regular")
    throw Error(ErrorCode::Argument, "cpuConfigure: appendStores must be 'stream', 'regular' or 'auto', not '" + *appendStores + "'");
  if (isa && !isa->empty()) {
    const Isa* found = findIsa(*isa);
    if (!found) throw Error(ErrorCode::Argument, "cpuConfigure: unknown CPU path '" + *isa + "'; this build has " + isaNames());
    if (!found->supported()) throw Error(ErrorCode::Unsupported, "cpuConfigure: CPU path '" + *isa + "' is not supported by this processor");
  }
  std::lock_guard<std::mutex> lock(configMu);
  if (isa) forcedIsa = *isa;
  if (splitRows) forcedSplitRows = *splitRows > 0 ? *splitRows : 0;
  if (appendStores) forcedStores = *appendStores == "auto" ? "" : *appendStores;
}

CpuLimits measureCpuLimits(size_t bytes) {
  CpuLimits r;
  r.threads = poolThreads();
  // The path in use (a forced avx2-fma run is rated against 256-bit FMAs even on an AVX-512 processor).
  const KernelSet& k = choose().isa->kernels();
  const int64_t n = static_cast<int64_t>(bytes / sizeof(float));
  const int64_t per = (n / r.threads) / 64 * 64;
  std::vector<float> src(static_cast<size_t>(n), 1.f), dst(static_cast<size_t>(n), 0.f);  // touched: pages are mapped
  std::atomic<double> sink{0};
  auto timed = [&](const std::function<void(int64_t)>& fn) {
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      parallelFor(r.threads, fn);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  const double tRead = timed([&](int64_t t) {
    const float* a = src.data() + t * per;
    sink.store(k.dot(a, a + per / 2, per / 2));  // two streams of one buffer: every byte read once
  });
  r.readBytesPerSec = static_cast<double>(per) * r.threads * sizeof(float) / tRead;
  const double tCopy = timed([&](int64_t t) { std::memcpy(dst.data() + t * per, src.data() + t * per, static_cast<size_t>(per) * sizeof(float)); });
  r.copyBytesPerSec = 2.0 * static_cast<double>(per) * r.threads * sizeof(float) / tCopy;
  auto rate = [&](double (*loop)(int64_t)) {
    std::vector<double> flops(static_cast<size_t>(r.threads));
    const double t = timed([&](int64_t i) { flops[static_cast<size_t>(i)] = loop(400000); });
    double total = 0;
    for (double f : flops) total += f;
    return total / t;
  };
  r.fmaFlops = rate(k.fmaLoop);
  if (features().avx512bf16) r.bf16DotFlops = rate(findIsa("avx512-bf16")->kernels().bf16DotLoop);
  return r;
}

Backend& cpuBackend() {
  static CpuBackend& backend = neverDestroyed<CpuBackend>();
  return backend;
}

}  // namespace mla::cpu
