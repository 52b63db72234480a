// unabsorbOutput(stream, [oLat, wUv, out], after): o = W_uv o_lat per head.
#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { oLat, wUv, out }; }

UnabsorbOutputParams read(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  using P = UnabsorbOutputParams;
  P p;
  readTensors<P>(o, keepAlive, withOutputs, p, {{&P::oLat, arg::oLat, "oLat"}, {&P::wUv, arg::wUv, "wUv"}, {&P::out, arg::out, "out", false, true}});
  return p;
}

void run(Backend& backend, const UnabsorbOutputParams& p) { backend.unabsorbOutput(p); }

const OpSpec<UnabsorbOutputParams> kUnabsorb{"unabsorbOutput", read, run};

}  // namespace

void exportUnabsorbOutput(Napi::Env env, Napi::Object exports) {
  exportOp(env, exports, kUnabsorb, outShape<UnabsorbOutputParams, read, unabsorbOutputOutShape>);
}

}  // namespace mla::addon
