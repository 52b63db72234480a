// mlaDecode(stream, [q, cache, blockTable, seqLens, softmaxScale, kvLoraRank, cacheScale, causal, plan, out, lse],
// after), and planDecode(stream, [seqLens, numHeads, queryLen, batchInvariant]): the plan of a decode step, made
// once on the host and passed to every layer's mlaDecode of the step.
#include <cmath>

#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { q, cache, blockTable, seqLens, softmaxScale, kvLoraRank, cacheScale, causal, plan, out, lse }; }
namespace planArg { enum : uint32_t { seqLens, numHeads, queryLen, batchInvariant }; }

using PlanRef = std::shared_ptr<const DecodePlanHandle>;

MlaDecodeParams read(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  using P = MlaDecodeParams;
  P p;
  readTensors<P>(o, keepAlive, withOutputs, p,
                 {{&P::q, arg::q, "q"}, {&P::cache, arg::cache, "cache"}, {&P::blockTable, arg::blockTable, "blockTable"},
                  {&P::seqLens, arg::seqLens, "seqLens"}, {&P::out, arg::out, "out", false, true}, {&P::lse, arg::lse, "lse", false, true}});
  p.softmaxScale = static_cast<float>(getNumber(o, arg::softmaxScale, "softmaxScale"));
  p.cacheScale = static_cast<float>(getNumber(o, arg::cacheScale, "cacheScale"));
  double rank = getNumber(o, arg::kvLoraRank, "kvLoraRank");
  if (!(rank >= 1 && rank <= 1e9) || std::floor(rank) != rank)
    throw Error(ErrorCode::Range, "kvLoraRank must be a positive integer, got " + std::to_string(rank));
  p.kvLoraRank = static_cast<int64_t>(rank);
  p.causal = o.Get(arg::causal).ToBoolean().Value();
  Napi::Value plan = o.Get(arg::plan);
  if (plan.IsExternal()) p.plan = *plan.As<Napi::External<PlanRef>>().Data();
  else if (!plan.IsUndefined() && !plan.IsNull()) throw Error(ErrorCode::Argument, "plan must come from planDecode");
  return p;
}

constexpr const char* kOutputs[2] = {"out", "lse"};

void run(Backend& backend, const MlaDecodeParams& p) { backend.mlaDecode(p); }
void checkPlan(const MlaDecodeParams& p, const Backend& backend) { validatePlan(p, backend.name()); }

const OpSpec<MlaDecodeParams> kDecode{"mlaDecode", read, run, checkPlan};

// planDecode(stream, params) -> { handle, numWorkItems, numSplitSequences }: an opaque plan for mlaDecode, plus what
// it holds for the caller's information.
Napi::Value PlanDecode(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    StreamWrap& stream = toStream(info[0]);
    Napi::Array o = paramsOf(info[1]);
    TensorView seqLens = toView(o, planArg::seqLens, "seqLens", false, nullptr);
    if (seqLens.ndim != 1 || seqLens.dtype != DType::I32 || seqLens.device.kind != DeviceKind::Cpu)
      throw Error(ErrorCode::Shape, "seqLens must be a cpu i32 tensor of shape [batch], got " + std::string(dtypeName(seqLens.dtype)) + " " + seqLens.shapeStr());
    const double heads = getNumber(o, planArg::numHeads, "numHeads"), queryLen = getNumber(o, planArg::queryLen, "queryLen");
    if (!(heads >= 1 && heads <= 65536) || std::floor(heads) != heads) throw Error(ErrorCode::Range, "numHeads must be a positive integer");
    if (!(queryLen >= 1 && queryLen <= 65536) || std::floor(queryLen) != queryLen) throw Error(ErrorCode::Range, "queryLen must be a positive integer");
    const int32_t* lens = seqLens.as<const int32_t>();
    for (int64_t b = 0; b < seqLens.shape[0]; ++b)
      if (lens[b] < 0) throw Error(ErrorCode::Range, "seqLens[" + std::to_string(b) + "] = " + std::to_string(lens[b]) + " is negative");
    PlanRef plan = stream.backend().planDecode(seqLens.shape[0], static_cast<int64_t>(queryLen), static_cast<int64_t>(heads), lens,
                                               o.Get(planArg::batchInvariant).ToBoolean().Value());
    Napi::Object result = Napi::Object::New(env);
    result.Set("handle", Napi::External<PlanRef>::New(env, new PlanRef(plan), [](Napi::Env, PlanRef* p) { delete p; }));
    result.Set("numWorkItems", static_cast<double>(plan->numWorkItems));
    result.Set("numSplitSequences", static_cast<double>(plan->numSplitSequences));
    return result;
  });
}

}  // namespace

void exportMlaDecode(Napi::Env env, Napi::Object exports) {
  exportOp(env, exports, kDecode, outShapes<MlaDecodeParams, read, mlaDecodeOutShapes, kOutputs>);
  exports.Set("planDecode", Napi::Function::New(env, PlanDecode));
}

}  // namespace mla::addon
