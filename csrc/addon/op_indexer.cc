// appendIndexerCache(stream, [cache, scales?, k, slotMapping], after) and lightningIndexer(stream, [q, weights, cache,
// scales?, blockTable, seqLens, topk, causal, indices, scores], after): DeepSeek-V3.2's lightning indexer, its key
// cache and the top-k slots it selects for the sparse attention.
#include <cmath>

#include "op.h"

namespace mla::addon {
namespace {

namespace appendArg { enum : uint32_t { cache, scales, k, slotMapping }; }
namespace indexerArg { enum : uint32_t { q, weights, cache, scales, blockTable, seqLens, topk, causal, indices, scores }; }

AppendIndexerCacheParams readAppend(const Napi::Array& o, Retained* keepAlive, bool) {
  AppendIndexerCacheParams p;
  p.cache = toView(o, appendArg::cache, "cache", false, keepAlive);
  p.scales = toView(o, appendArg::scales, "scales", true, keepAlive);
  p.k = toView(o, appendArg::k, "k", false, keepAlive);
  p.slotMapping = toView(o, appendArg::slotMapping, "slotMapping", false, keepAlive);
  return p;
}

LightningIndexerParams readIndexer(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  LightningIndexerParams p;
  p.q = toView(o, indexerArg::q, "q", false, keepAlive);
  p.weights = toView(o, indexerArg::weights, "weights", false, keepAlive);
  p.cache = toView(o, indexerArg::cache, "cache", false, keepAlive);
  p.scales = toView(o, indexerArg::scales, "scales", true, keepAlive);
  p.blockTable = toView(o, indexerArg::blockTable, "blockTable", false, keepAlive);
  p.seqLens = toView(o, indexerArg::seqLens, "seqLens", false, keepAlive);
  if (withOutputs) {
    p.indices = toView(o, indexerArg::indices, "indices", false, keepAlive);
    p.scores = toView(o, indexerArg::scores, "scores", false, keepAlive);
  }
  p.topk = positiveInteger(o, indexerArg::topk, "topk");
  p.causal = o.Get(indexerArg::causal).ToBoolean().Value();
  return p;
}

constexpr const char* kOutputs[2] = {"indices", "scores"};

void runAppend(Backend& backend, const AppendIndexerCacheParams& p) { backend.appendIndexerCache(p); }
void runIndexer(Backend& backend, const LightningIndexerParams& p) { backend.lightningIndexer(p); }

const OpSpec<AppendIndexerCacheParams> kAppendIndexer{"appendIndexerCache", readAppend, runAppend};
const OpSpec<LightningIndexerParams> kIndexer{"lightningIndexer", readIndexer, runIndexer};

}  // namespace

void exportLightningIndexer(Napi::Env env, Napi::Object exports) {
  exportOp(env, exports, kAppendIndexer);
  exportOp(env, exports, kIndexer, outShapes<LightningIndexerParams, readIndexer, lightningIndexerOutShapes, kOutputs>);
}

}  // namespace mla::addon
