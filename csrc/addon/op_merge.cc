// mergeAttentionStates(stream, [outA, lseA, outB, lseB, out, lse], after): two attention results over disjoint key
// sets merged by log-sum-exp into the result over their union.
#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { outA, lseA, outB, lseB, out, lse }; }

MergeAttentionStatesParams read(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  MergeAttentionStatesParams p;
  p.outA = toView(o, arg::outA, "outA", false, keepAlive);
  p.lseA = toView(o, arg::lseA, "lseA", false, keepAlive);
  p.outB = toView(o, arg::outB, "outB", false, keepAlive);
  p.lseB = toView(o, arg::lseB, "lseB", false, keepAlive);
  if (withOutputs) {
    p.out = toView(o, arg::out, "out", false, keepAlive);
    p.lse = toView(o, arg::lse, "lse", false, keepAlive);
  }
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
