// absorbQuery(stream, [qNope, wUk, qPe?, out], after): q_lat = W_uk^T q_nope per head, then q_pe.
#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { qNope, wUk, qPe, out }; }

AbsorbQueryParams read(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  using P = AbsorbQueryParams;
  P p;
  readTensors<P>(o, keepAlive, withOutputs, p,
                 {{&P::qNope, arg::qNope, "qNope"}, {&P::wUk, arg::wUk, "wUk"}, {&P::qPe, arg::qPe, "qPe", true},
                  {&P::out, arg::out, "out", false, true}});
  return p;
}

void run(Backend& backend, const AbsorbQueryParams& p) { backend.absorbQuery(p); }

const OpSpec<AbsorbQueryParams> kAbsorb{"absorbQuery", read, run};

}  // namespace

void exportAbsorbQuery(Napi::Env env, Napi::Object exports) {
  exportOp(env, exports, kAbsorb, outShape<AbsorbQueryParams, read, absorbQueryOutShape>);
}

}  // namespace mla::addon
