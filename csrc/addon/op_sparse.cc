// mlaSparseDecode(stream, [q, cache, indices, softmaxScale, kvLoraRank, cacheScale, indicesInPlace, out, lse], after)
// and mlaSparsePrefill(stream, [q, kv, indices, softmaxScale, kvLoraRank, indicesInPlace, out, lse], after): MLA over the rows a lightning
// indexer selects (DeepSeek-V3.2), over the paged latent cache or over a dense kv.
#include "op.h"

namespace mla::addon {
namespace {

namespace decodeArg { enum : uint32_t { q, cache, indices, softmaxScale, kvLoraRank, cacheScale, indicesInPlace, out, lse }; }
namespace prefillArg { enum : uint32_t { q, kv, indices, softmaxScale, kvLoraRank, indicesInPlace, out, lse }; }

MlaSparseDecodeParams readDecode(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  using P = MlaSparseDecodeParams;
  P p;
  readTensors<P>(o, keepAlive, withOutputs, p,
                 {{&P::q, decodeArg::q, "q"}, {&P::cache, decodeArg::cache, "cache"}, {&P::indices, decodeArg::indices, "indices"},
                  {&P::out, decodeArg::out, "out", false, true}, {&P::lse, decodeArg::lse, "lse", false, true}});
  p.softmaxScale = static_cast<float>(getNumber(o, decodeArg::softmaxScale, "softmaxScale"));
  p.kvLoraRank = positiveInteger(o, decodeArg::kvLoraRank, "kvLoraRank");
  p.cacheScale = static_cast<float>(getNumber(o, decodeArg::cacheScale, "cacheScale"));
  p.indicesInPlace = o.Get(decodeArg::indicesInPlace).ToBoolean().Value();
  return p;
}

MlaSparsePrefillParams readPrefill(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  using P = MlaSparsePrefillParams;
  P p;
  readTensors<P>(o, keepAlive, withOutputs, p,
                 {{&P::q, prefillArg::q, "q"}, {&P::kv, prefillArg::kv, "kv"}, {&P::indices, prefillArg::indices, "indices"},
                  {&P::out, prefillArg::out, "out", false, true}, {&P::lse, prefillArg::lse, "lse", false, true}});
  p.softmaxScale = static_cast<float>(getNumber(o, prefillArg::softmaxScale, "softmaxScale"));
  p.kvLoraRank = positiveInteger(o, prefillArg::kvLoraRank, "kvLoraRank");
  p.indicesInPlace = o.Get(prefillArg::indicesInPlace).ToBoolean().Value();
  return p;
}

constexpr const char* kOutputs[2] = {"out", "lse"};

void runDecode(Backend& backend, const MlaSparseDecodeParams& p) { backend.mlaSparseDecode(p); }
void runPrefill(Backend& backend, const MlaSparsePrefillParams& p) { backend.mlaSparsePrefill(p); }

const OpSpec<MlaSparseDecodeParams> kSparseDecode{"mlaSparseDecode", readDecode, runDecode};
const OpSpec<MlaSparsePrefillParams> kSparsePrefill{"mlaSparsePrefill", readPrefill, runPrefill};

}  // namespace

void exportMlaSparse(Napi::Env env, Napi::Object exports) {
  exportOp(env, exports, kSparseDecode, outShapes<MlaSparseDecodeParams, readDecode, mlaSparseDecodeOutShapes, kOutputs>);
  exportOp(env, exports, kSparsePrefill, outShapes<MlaSparsePrefillParams, readPrefill, mlaSparsePrefillOutShapes, kOutputs>);
}

}  // namespace mla::addon
