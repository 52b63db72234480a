// copy(stream, [src, dst], after): Tensor.to, copyFrom and read; host <-> device or within a device.
#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { src, dst }; }

CopyParams read(const Napi::Array& o, Retained* keepAlive, bool) {
  using P = CopyParams;
  P p;
  readTensors<P>(o, keepAlive, false, p, {{&P::src, arg::src, "src"}, {&P::dst, arg::dst, "dst"}});
  return p;
}

void run(Backend& backend, const CopyParams& p) { backend.copy(p); }

const OpSpec<CopyParams> kCopy{"copy", read, run, nullptr,
                               "a copy (Tensor.to, read) cannot be captured in a graph: make it before or after the capture"};

}  // namespace

void exportCopy(Napi::Env env, Napi::Object exports) { exportOp(env, exports, kCopy); }

}  // namespace mla::addon
