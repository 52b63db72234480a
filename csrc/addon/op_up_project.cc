// upProjectKv(stream, [kvC, wUk, wUv, kNope, v], after): the per-head keys and values of latent rows,
// kNope[t, h] = W_uk[h] kvC[t] and v[t, h] = W_uv[h] kvC[t].
#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { kvC, wUk, wUv, kNope, v }; }

UpProjectKvParams read(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  using P = UpProjectKvParams;
  P p;
  readTensors<P>(o, keepAlive, withOutputs, p,
                 {{&P::kvC, arg::kvC, "kvC"}, {&P::wUk, arg::wUk, "wUk"}, {&P::wUv, arg::wUv, "wUv"}, {&P::kNope, arg::kNope, "kNope", false, true},
                  {&P::v, arg::v, "v", false, true}});
  return p;
}

constexpr const char* kOutputs[2] = {"kNope", "v"};

void run(Backend& backend, const UpProjectKvParams& p) { backend.upProjectKv(p); }

const OpSpec<UpProjectKvParams> kUpProject{"upProjectKv", read, run};

}  // namespace

void exportUpProjectKv(Napi::Env env, Napi::Object exports) {
  exportOp(env, exports, kUpProject, outShapes<UpProjectKvParams, read, upProjectKvOutShapes, kOutputs>);
}

}  // namespace mla::addon
