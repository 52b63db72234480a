// unabsorbOutput(stream, [oLat, wUv, out], after): o = W_uv o_lat per head.
#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { oLat, wUv, out }; }

UnabsorbOutputParams read(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  UnabsorbOutputParams p;
  p.oLat = toView(o, arg::oLat, "oLat", false, keepAlive);
  p.wUv = toView(o, arg::wUv, "wUv", false, keepAlive);
  if (withOutputs) p.out = toView(o, arg::out, "out", false, keepAlive);
  return p;
}

Napi::Object outputShapes(Napi::Env env, const Napi::Array& inputs) {
  UnabsorbOutputParams p = read(inputs, nullptr, false);
  Napi::Object result = Napi::Object::New(env);
  result.Set("out", shapeToJs(env, unabsorbOutputOutShape(p)));
  return result;
}

void run(Backend& backend, const UnabsorbOutputParams& p) { backend.unabsorbOutput(p); }

const OpSpec<UnabsorbOutputParams> kUnabsorb{"unabsorbOutput", read, run};

}  // namespace

void exportUnabsorbOutput(Napi::Env env, Napi::Object exports) { exportOp(env, exports, kUnabsorb, outputShapes); }

}  // namespace mla::addon
