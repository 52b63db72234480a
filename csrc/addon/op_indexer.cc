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
  using P = AppendIndexerCacheParams;
  P p;
  readTensors<P>(o, keepAlive, false, p,
                 {{&P::cache, appendArg::cache, "cache"}, {&P::scales, appendArg::scales, "scales", true}, {&P::k, appendArg::k, "k"},
                  {&P::slotMapping, appendArg::slotMapping, "slotMapping"}});
  return p;
}

LightningIndexerParams readIndexer(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  using P = LightningIndexerParams;
  P p;
  readTensors<P>(o, keepAlive, withOutputs, p,
                 {{&P::q, indexerArg::q, "q"}, {&P::weights, indexerArg::weights, "weights"}, {&P::cache, indexerArg::cache, "cache"},
                  {&P::scales, indexerArg::scales, "scales", true}, {&P::blockTable, indexerArg::blockTable, "blockTable"},
                  {&P::seqLens, indexerArg::seqLens, "seqLens"}, {&P::indices, indexerArg::indices, "indices", false, true},
                  {&P::scores, indexerArg::scores, "scores", false, true}});
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
