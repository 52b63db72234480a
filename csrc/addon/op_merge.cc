// mergeAttentionStates(stream, [outA, lseA, outB, lseB, out, lse], after): two attention results over disjoint key
// sets merged by log-sum-exp into the result over their union.
#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { outA, lseA, outB, lseB, out, lse }; }

MergeAttentionStatesParams read(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  using P = MergeAttentionStatesParams;
  P p;
  readTensors<P>(o, keepAlive, withOutputs, p,
                 {{&P::outA, arg::outA, "outA"}, {&P::lseA, arg::lseA, "lseA"}, {&P::outB, arg::outB, "outB"}, {&P::lseB, arg::lseB, "lseB"},
                  {&P::out, arg::out, "out", false, true}, {&P::lse, arg::lse, "lse", false, true}});
  return p;
}

constexpr const char* kOutputs[2] = {"out", "lse"};

void run(Backend& backend, const MergeAttentionStatesParams& p) { backend.mergeAttentionStates(p); }

const OpSpec<MergeAttentionStatesParams> kMerge{"mergeAttentionStates", read, run};

}  // namespace

void exportMergeAttentionStates(Napi::Env env, Napi::Object exports) {
  exportOp(env, exports, kMerge, outShapes<MergeAttentionStatesParams, read, mergeAttentionStatesOutShapes, kOutputs>);
}

}  // namespace mla::addon
