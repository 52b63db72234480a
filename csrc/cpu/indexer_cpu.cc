// The CPU backend's lightning indexer (DeepSeek-V3.2): the indexer key cache's append, and the index scores of each
// query position over the keys it sees with their top-k, as slots. Operations arrive validated.
//
// Scores are computed in passes of query rows whose score rows fit a fixed buffer: each pass runs work items of
// (query positions sharing the lanes of one Q·K block) × (a chunk of the keys), then selects each row's top-k.
#include <algorithm>
#include <functional>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "prefill_cpu.h"
#include "thread_pool.h"

namespace mla::cpu {
namespace {

constexpr int64_t kMaxLanes = 128;           // query rows (positions × heads) of one item, as decode's head groups
constexpr int64_t kKeyChunk = 1024;          // keys per item
constexpr int64_t kPassFloats = int64_t{16} << 20;  // score buffer of a pass: 64 MiB

}  // namespace

// As appendLatentCache's fp8 rows: k, or e4m3(k / scale) with the key's scale = max(amax / 448, FLT_MIN).
void appendIndexerCacheCpu(const AppendIndexerCacheParams& p, const KernelSet& k) {
  const Elem in = cpuElem(p.k.dtype);
  const bool fp8 = p.cache.dtype == DType::FP8E4M3;
  const int64_t D = p.indexDim, inBytes = D * static_cast<int64_t>(dtypeSize(p.k.dtype)), rowBytes = D * static_cast<int64_t>(dtypeSize(p.cache.dtype));
  const int32_t* slots = p.slotMapping.as<const int32_t>();
  const char* keys = static_cast<const char*>(p.k.data);
  char* cache = static_cast<char*>(p.cache.data);
  float* scales = fp8 ? p.scales.as<float>() : nullptr;
  const int64_t perTask = 256;
  parallelFor((p.numTokens + perTask - 1) / perTask, [&](int64_t task) {
    float* row = cpuScratch(static_cast<size_t>(D));
    for (int64_t i = task * perTask; i < std::min(p.numTokens, (task + 1) * perTask); ++i) {
      if (slots[i] < 0) continue;
      char* dst = cache + static_cast<int64_t>(slots[i]) * rowBytes;
      if (!fp8) {
        std::memcpy(dst, keys + i * inBytes, static_cast<size_t>(inBytes));
        continue;
      }
      k.load(in, keys + i * inBytes, row, D);
      float amax = 0.f;
      for (int64_t c = 0; c < D; ++c) amax = std::max(amax, std::fabs(row[c]));
      const float scale = std::max(amax / 448.f, std::numeric_limits<float>::min());
      for (int64_t c = 0; c < D; ++c) row[c] /= scale;
      k.store(Elem::FP8E4M3, row, dst, D);
      scales[slots[i]] = scale;
    }
  });
}

void lightningIndexerCpu(const LightningIndexerParams& p, const KernelSet& k) {
  const int32_t* lens = p.seqLens.as<const int32_t>();
  const int32_t* table = p.blockTable.as<const int32_t>();
  const int64_t H = p.numHeads, topk = p.topk, rows = p.batch * p.queryLen;
  const int64_t groupT = std::max<int64_t>(1, kMaxLanes / H);
  int32_t* outIdx = p.indices.as<int32_t>();
  float* outScores = p.scores.as<float>();

  IndexerItem base{};
  base.elem = cpuElem(p.q.dtype);
  base.cacheElem = cpuElem(p.cache.dtype);
  base.q = p.q.data;
  base.weights = p.weights.as<const float>();
  base.cache = p.cache.data;
  base.scales = p.scales.present() ? p.scales.as<const float>() : nullptr;
  base.blockSize = p.blockSize;
  base.numHeads = H;
  base.indexDim = p.indexDim;
  base.queryLen = p.queryLen;

  std::vector<float> buffer;
  for (int64_t row0 = 0; row0 < rows;) {
    // This pass: rows [row0, row1), each with a score row of its sequence's length.
    std::vector<int64_t> offset;
    int64_t floats = 0, row1 = row0;
    while (row1 < rows) {
      const int64_t len = lens[row1 / p.queryLen];
      if (row1 > row0 && floats + len > kPassFloats) break;
      offset.push_back(floats);
      floats += len;
      ++row1;
    }
    buffer.resize(static_cast<size_t>(std::max<int64_t>(floats, 1)));
    std::vector<IndexerItem> items;
    for (int64_t r = row0; r < row1;) {
      const int64_t b = r / p.queryLen, t0 = r % p.queryLen;
      const int64_t t1 = std::min({p.queryLen, t0 + groupT, t0 + (row1 - r)});
      const int64_t keys = p.visibleRows(lens[b], t1 - 1);  // the group's last position sees the most
      for (int64_t n0 = 0; n0 < keys; n0 += kKeyChunk) {
        IndexerItem it = base;
        it.table = table + b * p.maxBlocksPerSeq;
        it.b = b;
        it.t0 = t0;
        it.t1 = t1;
        it.n0 = n0;
        it.n1 = std::min(keys, n0 + kKeyChunk);
        it.scores = buffer.data() + offset[static_cast<size_t>(r - row0)];
        it.scoreStride = lens[b];
        items.push_back(it);
      }
      r += t1 - t0;
    }
    parallelFor(static_cast<int64_t>(items.size()), [&](int64_t i) {
      const IndexerItem& it = items[static_cast<size_t>(i)];
      k.indexerScores(it, cpuScratch(k.indexerScratch(it)));
    });
    parallelFor(row1 - row0, [&](int64_t i) {
      const int64_t r = row0 + i, b = r / p.queryLen, t = r % p.queryLen;
      const int64_t visible = p.visibleRows(lens[b], t);
      const float* scores = buffer.data() + offset[static_cast<size_t>(i)];
      // The topk-th best score by selection over a copy (NaN as -infinity), then one pass in position order takes
      // every better score and the earliest of the ties: the order of the output, with no sort and no pairs.
      const float kNaNRank = -std::numeric_limits<float>::infinity();
      auto rankOf = [&](int64_t s) { return std::isnan(scores[s]) ? kNaNRank : scores[s]; };
      const int64_t taken = std::min(visible, topk);
      float tau = kNaNRank;
      int64_t ties = 0;  // how many scores equal to tau are taken, the earliest first
      if (visible > topk) {
        thread_local std::vector<float> ranks;
        ranks.resize(static_cast<size_t>(visible));
        for (int64_t s = 0; s < visible; ++s) ranks[static_cast<size_t>(s)] = rankOf(s);
        std::nth_element(ranks.begin(), ranks.begin() + (topk - 1), ranks.end(), std::greater<float>());
        tau = ranks[static_cast<size_t>(topk - 1)];
        int64_t above = 0;
        for (int64_t j = 0; j < topk - 1; ++j) above += ranks[static_cast<size_t>(j)] > tau;
        ties = topk - above;
      }
      const int32_t* tableRow = table + b * p.maxBlocksPerSeq;
      int64_t j = 0;
      for (int64_t s = 0; s < visible && j < taken; ++s) {
        const float x = rankOf(s);
        if (visible > topk && !(x > tau || (x == tau && ties-- > 0))) continue;
        outIdx[r * topk + j] = static_cast<int32_t>(static_cast<int64_t>(tableRow[s / p.blockSize]) * p.blockSize + s % p.blockSize);
        outScores[r * topk + j] = scores[s];
        ++j;
      }
      for (; j < topk; ++j) {
        outIdx[r * topk + j] = -1;
        outScores[r * topk + j] = -std::numeric_limits<float>::infinity();
      }
    });
    row0 = row1;
  }
}

}  // namespace mla::cpu
