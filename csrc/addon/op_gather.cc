// gatherLatentCache(stream, [cache, blockTable, cuSeqLens, seqStarts?, kvLoraRank, cacheScale, numRows, kvC, kPe],
// after): each sequence's cached latent rows copied out of the paged cache into dense kvC and kPe (fp8 dequantised).
#include <cmath>

#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { cache, blockTable, cuSeqLens, seqStarts, kvLoraRank, cacheScale, numRows, kvC, kPe }; }

GatherLatentCacheParams read(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  using P = GatherLatentCacheParams;
  P p;
  readTensors<P>(o, keepAlive, false, p,
                 {{&P::cache, arg::cache, "cache"}, {&P::blockTable, arg::blockTable, "blockTable"}, {&P::cuSeqLens, arg::cuSeqLens, "cuSeqLens"},
                  {&P::seqStarts, arg::seqStarts, "seqStarts", true}});
  p.kvLoraRank = positiveInteger(o, arg::kvLoraRank, "kvLoraRank");
  p.cacheScale = static_cast<float>(getNumber(o, arg::cacheScale, "cacheScale"));
  const double rows = getNumber(o, arg::numRows, "numRows");  // -1: as many as the sequences have
  if (rows != -1 && (!(rows >= 0 && rows <= 0x7fffffff) || std::floor(rows) != rows))
    throw Error(ErrorCode::Range, "numRows must be an integer >= 0, got " + std::to_string(rows));
  p.requestedRows = static_cast<int64_t>(rows);
  readTensors<P>(o, keepAlive, withOutputs, p, {{&P::kvC, arg::kvC, "kvC", false, true}, {&P::kPe, arg::kPe, "kPe", false, true}});
  return p;
}

constexpr const char* kOutputs[2] = {"kvC", "kPe"};

void run(Backend& backend, const GatherLatentCacheParams& p) { backend.gatherLatentCache(p); }

const OpSpec<GatherLatentCacheParams> kGather{"gatherLatentCache", read, run};

}  // namespace

void exportGatherLatentCache(Napi::Env env, Napi::Object exports) {
  exportOp(env, exports, kGather, outShapes<GatherLatentCacheParams, read, gatherLatentCacheOutShapes, kOutputs>);
}

}  // namespace mla::addon
