// Prefill on the CPU. mlaPrefill is cut into items of one head and up to kPrefillRows queries of one sequence, each
// against the keys its last query sees (so causal work past the diagonal is never made); items run longest first,
// taken dynamically by the pool's threads. upProjectKv is one GEMM per output (kNope = kvC W_ukᵀ, v = kvC W_uvᵀ
// with the weights' heads stacked as rows) cut into blocks of C. Gather and merge are row-parallel copies.
#include "prefill_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "thread_pool.h"

namespace mla::cpu {
namespace {

// Queries per item: 96 is 6, 12 and 24 vectors of the 16-, 8- and 4-lane paths (whole column groups of Q·K).
constexpr int64_t kPrefillRows = 96;

}  // namespace

void mlaPrefillCpu(const MlaPrefillParams& p, const KernelSet& k) {
  const int32_t* cuQ = p.cuSeqLensQ.as<const int32_t>();
  const int32_t* cuKv = p.cuSeqLensKv.as<const int32_t>();
  PrefillItem base{};
  base.elem = cpuElem(p.q.dtype);
  base.q = p.q.data;
  base.kNope = p.kNope.data;
  base.kPe = p.kPe.data;
  base.v = p.v.data;
  base.out = p.out.data;
  base.lse = p.lse.as<float>();
  base.numHeads = p.numHeads;
  base.nopeDim = p.nopeDim;
  base.ropeDim = p.ropeDim;
  base.vHeadDim = p.vHeadDim;
  base.scaleLog2 = p.softmaxScale * 1.4426950408889634f;
  base.causal = p.causal;

  std::vector<PrefillItem> items;
  std::vector<int64_t> cost;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t qLen = cuQ[b + 1] - cuQ[b], kvLen = cuKv[b + 1] - cuKv[b];
    for (int64_t i0 = 0; i0 < qLen; i0 += kPrefillRows) {
      const int64_t i1 = std::min(qLen, i0 + kPrefillRows);
      for (int64_t h = 0; h < p.numHeads; ++h) {
        PrefillItem it = base;
        it.h = h;
        it.qBegin = cuQ[b];
        it.qLen = qLen;
        it.kvBegin = cuKv[b];
        it.kvLen = kvLen;
        it.i0 = i0;
        it.i1 = i1;
        items.push_back(it);
      }
    }
  }
  // Longest first (keys the item's last query sees, times its queries), taken dynamically.
  std::vector<int64_t> order(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    order[i] = static_cast<int64_t>(i);
    const PrefillItem& it = items[i];
    cost.push_back((it.i1 - it.i0) * (1 + p.visibleRows(it.kvLen, it.qLen, it.i1 - 1)));
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return cost[static_cast<size_t>(a)] > cost[static_cast<size_t>(b)]; });
  parallelFor(static_cast<int64_t>(items.size()), [&](int64_t i) {
    const PrefillItem& it = items[static_cast<size_t>(order[static_cast<size_t>(i)])];
    k.prefill(it, cpuScratch(k.prefillScratch(it)));
  });
  // Rows of q past the last sequence (padding): zero output, lse -infinity.
  const int64_t pad = p.totalQ - p.usedQ;
  if (pad > 0) {
    const size_t es = dtypeSize(p.out.dtype);
    std::memset(static_cast<char*>(p.out.data) + p.usedQ * p.numHeads * p.vHeadDim * es, 0, static_cast<size_t>(pad * p.numHeads * p.vHeadDim) * es);
    std::fill(p.lse.as<float>() + p.usedQ * p.numHeads, p.lse.as<float>() + p.totalQ * p.numHeads, -std::numeric_limits<float>::infinity());
  }
}

void gatherLatentCacheCpu(const GatherLatentCacheParams& p, const KernelSet& k) {
  const int32_t* cu = p.cuSeqLens.as<const int32_t>();
  const int32_t* starts = p.seqStarts.present() ? p.seqStarts.as<const int32_t>() : nullptr;
  const int32_t* table = p.blockTable.as<const int32_t>();
  const bool ds = p.cache.dtype == DType::FP8DSMLA;
  const Elem cacheElem = ds ? Elem::FP8DSMLA : cpuElem(p.cache.dtype), outElem = cpuElem(p.kvC.dtype);
  const bool same = p.cache.dtype == p.kvC.dtype;  // a float cache of the outputs' dtype: plain copies
  const int64_t width = p.kvLoraRank + p.ropeDim;
  const size_t cacheEs = dtypeSize(p.cache.dtype), outEs = dtypeSize(p.kvC.dtype);
  const int64_t rowBytes = p.cache.dim(2) * static_cast<int64_t>(cacheEs);
  const char* cache = static_cast<const char*>(p.cache.data);
  char* kvC = static_cast<char*>(p.kvC.data);
  char* kPe = static_cast<char*>(p.kPe.data);
  // Tasks of up to kRows rows of one sequence.
  constexpr int64_t kRows = 128;
  struct Task {
    int64_t b, r0, r1;
  };
  std::vector<Task> tasks;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t r0 = cu[b]; r0 < cu[b + 1]; r0 += kRows) tasks.push_back({b, r0, std::min<int64_t>(cu[b + 1], r0 + kRows)});
  parallelFor(static_cast<int64_t>(tasks.size()), [&](int64_t t) {
    const Task& task = tasks[static_cast<size_t>(t)];
    float* row = cpuScratch(static_cast<size_t>(width));
    for (int64_t r = task.r0; r < task.r1; ++r) {
      const int64_t pos = (starts ? starts[task.b] : 0) + r - cu[task.b];
      const int64_t slot = static_cast<int64_t>(table[task.b * p.maxBlocksPerSeq + pos / p.blockSize]) * p.blockSize + pos % p.blockSize;
      const char* src = cache + slot * rowBytes;
      char* dstC = kvC + r * p.kvLoraRank * static_cast<int64_t>(outEs);
      char* dstPe = kPe + r * p.ropeDim * static_cast<int64_t>(outEs);
      if (same) {
        std::memcpy(dstC, src, static_cast<size_t>(p.kvLoraRank) * cacheEs);
        if (p.ropeDim) std::memcpy(dstPe, src + p.kvLoraRank * static_cast<int64_t>(cacheEs), static_cast<size_t>(p.ropeDim) * cacheEs);
        continue;
      }
      if (ds) cpuLoadDsMlaRow(k, src, row, p.kvLoraRank, p.ropeDim);
      else k.load(cacheElem, src, row, width);
      if (p.cacheScale != 1.f)
        for (int64_t c = 0; c < width; ++c) row[c] *= p.cacheScale;
      k.store(outElem, row, dstC, p.kvLoraRank);
      if (p.ropeDim) k.store(outElem, row + p.kvLoraRank, dstPe, p.ropeDim);
    }
  });
  // Rows past the gathered ones are zero.
  if (p.numRows > p.usedRows) {
    std::memset(kvC + p.usedRows * p.kvLoraRank * static_cast<int64_t>(outEs), 0, static_cast<size_t>((p.numRows - p.usedRows) * p.kvLoraRank) * outEs);
    if (p.ropeDim)
      std::memset(kPe + p.usedRows * p.ropeDim * static_cast<int64_t>(outEs), 0, static_cast<size_t>((p.numRows - p.usedRows) * p.ropeDim) * outEs);
  }
}

void upProjectKvCpu(const UpProjectKvParams& p, const KernelSet& k) {
  if (p.numTokens == 0) return;
  const Elem e = cpuElem(p.kvC.dtype);
  // kNope [tokens][H * nopeDim] = kvC [tokens][rank] · W_uk [H * nopeDim][rank]ᵀ, and v the same with W_uv.
  std::vector<GemmBlock> blocks;
  for (const auto& [w, out, cols] : {std::tuple{p.wUk.data, p.kNope.data, p.numHeads * p.nopeDim}, std::tuple{p.wUv.data, p.v.data, p.numHeads * p.vHeadDim}})
    for (int64_t n0 = 0; n0 < cols; n0 += kGemmBlockCols)
      for (int64_t m0 = 0; m0 < p.numTokens; m0 += kGemmBlockRows)
        blocks.push_back(GemmBlock{e, p.kvC.data, w, out, p.kvLoraRank, cols, m0, std::min(p.numTokens, m0 + kGemmBlockRows), n0, std::min(cols, n0 + kGemmBlockCols)});
  parallelFor(static_cast<int64_t>(blocks.size()), [&](int64_t i) {
    const GemmBlock& g = blocks[static_cast<size_t>(i)];
    k.gemmNT(g, cpuScratch(k.gemmScratch(g)));
  });
}

void mergeAttentionStatesCpu(const MergeAttentionStatesParams& p, const KernelSet& k) {
  const Elem e = cpuElem(p.out.dtype);
  const int64_t W = p.width, es = static_cast<int64_t>(dtypeSize(p.out.dtype));
  const float* lseA = p.lseA.as<const float>();
  const float* lseB = p.lseB.as<const float>();
  float* lse = p.lse.as<float>();
  const char* outA = static_cast<const char*>(p.outA.data);
  const char* outB = static_cast<const char*>(p.outB.data);
  char* out = static_cast<char*>(p.out.data);
  constexpr int64_t kRows = 64;
  parallelFor((p.numRows + kRows - 1) / kRows, [&](int64_t task) {
    float* a = cpuScratch(static_cast<size_t>(2 * W + 16));
    float* b = a + W + 16;
    for (int64_t r = task * kRows; r < std::min(p.numRows, (task + 1) * kRows); ++r) {
      const float la = lseA[r], lb = lseB[r];
      char* dst = out + r * W * es;
      // A part that saw no key weighs nothing: the other is copied as it is (exactly), both empty give zeros.
      if (la == -std::numeric_limits<float>::infinity() || lb == -std::numeric_limits<float>::infinity()) {
        const bool useA = lb == -std::numeric_limits<float>::infinity() && la != -std::numeric_limits<float>::infinity();
        const bool useB = la == -std::numeric_limits<float>::infinity() && lb != -std::numeric_limits<float>::infinity();
        if (useA || useB) std::memcpy(dst, (useA ? outA : outB) + r * W * es, static_cast<size_t>(W * es));
        else std::memset(dst, 0, static_cast<size_t>(W * es));
        lse[r] = useA ? la : useB ? lb : -std::numeric_limits<float>::infinity();
        continue;
      }
      const float mx = std::max(la, lb);
      const float wa = std::exp(la - mx), wb = std::exp(lb - mx), total = wa + wb;
      k.load(e, outA + r * W * es, a, W);
      k.load(e, outB + r * W * es, b, W);
      const float ca = wa / total, cb = wb / total;
      for (int64_t c = 0; c < W; ++c) a[c] = ca * a[c] + cb * b[c];
      k.store(e, a, dst, W);
      lse[r] = mx + std::log(total);
    }
  });
}

}  // namespace mla::cpu
