// The CPU backend: correct, cache-blocked kernels with fp32 accumulation. A tile of cache rows is
// converted once and used for every head and query position of the sequence.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../core/backend.h"
#include "convert.h"

namespace mla::cpu {
namespace {

constexpr int64_t kTileRows = 32;  // cache rows converted and reused per step of decode

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// --- appendLatentCache ----------------------------------------------------------------------------
template <class T>
void appendLatentCache(const AppendLatentCacheParams& p) {
  const T* kvC = p.kvC.as<const T>();
  const T* kPe = p.kPe.as<const T>();
  T* cache = p.cache.as<T>();
  const int32_t* slots = p.slotMapping.as<const int32_t>();
  const int64_t width = p.rowWidth(), half = p.ropeDim / 2;
  std::vector<float> pe(static_cast<size_t>(p.ropeDim));
  for (int64_t i = 0; i < p.numTokens; ++i) {
    if (slots[i] < 0) continue;
    T* row = cache + static_cast<int64_t>(slots[i]) * width;
    std::memcpy(row, kvC + i * p.kvLoraRank, sizeof(T) * p.kvLoraRank);
    const T* src = kPe + i * p.ropeDim;
    if (p.ropeStyle == RopeStyle::None) {
      std::memcpy(row + p.kvLoraRank, src, sizeof(T) * p.ropeDim);
      continue;
    }
    const int64_t pos = p.positions.as<const int32_t>()[i];
    const float* cosRow = p.cos.as<const float>() + pos * half;
    const float* sinRow = p.sin.as<const float>() + pos * half;
    for (int64_t j = 0; j < half; ++j) {
      // Interleaved pairs (x[2j], x[2j+1]) as DeepSeek; neox pairs (x[j], x[j + half]).
      int64_t a = p.ropeStyle == RopeStyle::Interleaved ? 2 * j : j;
      int64_t b = p.ropeStyle == RopeStyle::Interleaved ? 2 * j + 1 : j + half;
      float x = toF32(src[a]), y = toF32(src[b]);
      pe[a] = x * cosRow[j] - y * sinRow[j];
      pe[b] = y * cosRow[j] + x * sinRow[j];
    }
    storeRow(pe.data(), row + p.kvLoraRank, p.ropeDim);
  }
}

// --- mlaDecode -------------------------------------------------------------------------------------
template <class T>
void decodeSequence(const MlaDecodeParams& p, int64_t b, std::vector<float>& scratch) {
  const int64_t rowsM = p.queryLen * p.numHeads;  // query rows (t, h) of this sequence
  const int64_t D = p.headDim, V = p.kvLoraRank;
  const int64_t len = p.seqLens.as<const int32_t>()[b];
  const int32_t* table = p.blockTable.as<const int32_t>() + b * p.maxBlocksPerSeq;
  const T* cache = p.cache.as<const T>();

  scratch.resize(static_cast<size_t>(rowsM * D + rowsM * V + 2 * rowsM + kTileRows * D + kTileRows));
  float* qf = scratch.data();           // [t][h][D]
  float* acc = qf + rowsM * D;          // [t][h][V]
  float* maxScore = acc + rowsM * V;    // running max per (t, h)
  float* sumExp = maxScore + rowsM;     // running sum of exp(score - max)
  float* tile = sumExp + rowsM;         // [kTileRows][D]
  float* prob = tile + kTileRows * D;   // [kTileRows]

  loadRow(p.q.as<const T>() + b * rowsM * D, qf, rowsM * D);
  std::fill(acc, acc + rowsM * V, 0.f);
  std::fill(maxScore, maxScore + rowsM, -std::numeric_limits<float>::infinity());
  std::fill(sumExp, sumExp + rowsM, 0.f);

  for (int64_t r0 = 0; r0 < len; r0 += kTileRows) {
    const int64_t r1 = std::min(len, r0 + kTileRows);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t slot = static_cast<int64_t>(table[r / p.blockSize]) * p.blockSize + r % p.blockSize;
      loadRow(cache + slot * D, tile + (r - r0) * D, D);
    }
    for (int64_t t = 0; t < p.queryLen; ++t) {
      const int64_t rEnd = std::min(r1, p.visibleRows(len, t));
      if (rEnd <= r0) continue;
      for (int64_t h = 0; h < p.numHeads; ++h) {
        const int64_t m = t * p.numHeads + h;
        float tileMax = -std::numeric_limits<float>::infinity();
        for (int64_t r = r0; r < rEnd; ++r) {
          prob[r - r0] = p.softmaxScale * dot(qf + m * D, tile + (r - r0) * D, D);
          tileMax = std::max(tileMax, prob[r - r0]);
        }
        const float newMax = std::max(maxScore[m], tileMax);
        const float rescale = std::exp(maxScore[m] - newMax);  // exp(-inf) = 0 on the first tile
        float* a = acc + m * V;
        for (int64_t k = 0; k < V; ++k) a[k] *= rescale;
        float tileSum = 0.f;
        for (int64_t r = r0; r < rEnd; ++r) {
          const float w = std::exp(prob[r - r0] - newMax);
          tileSum += w;
          const float* v = tile + (r - r0) * D;
          for (int64_t k = 0; k < V; ++k) a[k] += w * v[k];
        }
        sumExp[m] = sumExp[m] * rescale + tileSum;
        maxScore[m] = newMax;
      }
    }
  }

  T* out = p.out.as<T>() + b * rowsM * V;
  float* lse = p.lse.as<float>() + b * p.numHeads * p.queryLen;  // [h][t]
  for (int64_t t = 0; t < p.queryLen; ++t)
    for (int64_t h = 0; h < p.numHeads; ++h) {
      const int64_t m = t * p.numHeads + h;
      float* a = acc + m * V;
      if (sumExp[m] > 0.f) {
        const float inv = 1.f / sumExp[m];
        for (int64_t k = 0; k < V; ++k) a[k] *= inv;
        lse[h * p.queryLen + t] = maxScore[m] + std::log(sumExp[m]);
      } else {  // no visible rows: defined as a zero output and lse = -inf
        std::fill(a, a + V, 0.f);
        lse[h * p.queryLen + t] = -std::numeric_limits<float>::infinity();
      }
      storeRow(a, out + m * V, V);
    }
}

// --- absorb / unabsorb -----------------------------------------------------------------------------
template <class T>
void absorbQuery(const AbsorbQueryParams& p) {
  const int64_t N = p.nopeDim, C = p.kvLoraRank, R = p.ropeDim, outW = C + R;
  std::vector<float> q(static_cast<size_t>(N)), acc(static_cast<size_t>(C)), w(static_cast<size_t>(C)), pe(static_cast<size_t>(R));
  for (int64_t tok = 0; tok < p.numTokens; ++tok)
    for (int64_t h = 0; h < p.numHeads; ++h) {
      const int64_t th = tok * p.numHeads + h;
      loadRow(p.qNope.as<const T>() + th * N, q.data(), N);
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t n = 0; n < N; ++n) {
        loadRow(p.wUk.as<const T>() + (h * N + n) * C, w.data(), C);
        for (int64_t c = 0; c < C; ++c) acc[c] += q[n] * w[c];
      }
      T* out = p.out.as<T>() + th * outW;
      storeRow(acc.data(), out, C);
      if (R > 0) std::memcpy(out + C, p.qPe.as<const T>() + th * R, sizeof(T) * R);
    }
}

template <class T>
void unabsorbOutput(const UnabsorbOutputParams& p) {
  const int64_t C = p.kvLoraRank, Vd = p.vHeadDim;
  std::vector<float> o(static_cast<size_t>(C)), w(static_cast<size_t>(C)), res(static_cast<size_t>(Vd));
  for (int64_t tok = 0; tok < p.numTokens; ++tok)
    for (int64_t h = 0; h < p.numHeads; ++h) {
      const int64_t th = tok * p.numHeads + h;
      loadRow(p.oLat.as<const T>() + th * C, o.data(), C);
      for (int64_t v = 0; v < Vd; ++v) {
        loadRow(p.wUv.as<const T>() + (h * Vd + v) * C, w.data(), C);
        res[v] = dot(o.data(), w.data(), C);
      }
      storeRow(res.data(), p.out.as<T>() + th * Vd, Vd);
    }
}

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  Device device() const override { return Device{}; }

  void appendLatentCache(const AppendLatentCacheParams& p) override {
    dispatchFloat(p.cache.dtype, [&](auto tag) { cpu::appendLatentCache<decltype(tag)>(p); });
  }
  void mlaDecode(const MlaDecodeParams& p) override {
    dispatchFloat(p.q.dtype, [&](auto tag) {
      std::vector<float> scratch;
      for (int64_t b = 0; b < p.batch; ++b) decodeSequence<decltype(tag)>(p, b, scratch);
    });
  }
  void copy(const CopyParams& p) override { std::memcpy(p.dst.data, p.src.data, p.src.nbytes()); }
  void absorbQuery(const AbsorbQueryParams& p) override {
    dispatchFloat(p.qNope.dtype, [&](auto tag) { cpu::absorbQuery<decltype(tag)>(p); });
  }
  void unabsorbOutput(const UnabsorbOutputParams& p) override {
    dispatchFloat(p.oLat.dtype, [&](auto tag) { cpu::unabsorbOutput<decltype(tag)>(p); });
  }
};

}  // namespace
}  // namespace mla::cpu

namespace mla {
Backend& cpuBackend() {
  static cpu::CpuBackend backend;
  return backend;
}
}  // namespace mla
