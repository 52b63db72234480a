// absorbQuery(stream, [qNope, wUk, qPe?, out], after): q_lat = W_uk^T q_nope per head, then q_pe.
#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { qNope, wUk, qPe, out }; }

AbsorbQueryParams read(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  AbsorbQueryParams p;
  p.qNope = toView(o, arg::qNope, "qNope", false, keepAlive);
  p.wUk = toView(o, arg::wUk, "wUk", false, keepAlive);
  p.qPe = toView(o, arg::qPe, "qPe", true, keepAlive);
  if (withOutputs) p.out = toView(o, arg::out, "out", false, keepAlive);
  return p;
}

void run(Backend& backend, const AbsorbQueryParams& p) { backend.absorbQuery(p); }

const OpSpec<AbsorbQueryParams> kAbsorb{"absorbQuery", read, run};

}  // namespace

void exportAbsorbQuery(Napi::Env env, Napi::Object exports) {
  exportOp(env, exports, kAbsorb, outShape<AbsorbQueryParams, read, absorbQueryOutShape>);
}

}  // namespace mla::addon
