// mlaPrefill(stream, [q, kNope, kPe, v, cuSeqLensQ, cuSeqLensKv, softmaxScale, causal, plan, out, lse], after): ragged
// multi-head attention (the rope key shared by the heads), and planPrefill(stream, [cuSeqLensQ, cuSeqLensKv,
// numHeads, causal]): the split of a prefill step, made once on the host and passed to every layer's mlaPrefill.
#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { q, kNope, kPe, v, cuSeqLensQ, cuSeqLensKv, softmaxScale, causal, plan, out, lse }; }
namespace planArg { enum : uint32_t { cuSeqLensQ, cuSeqLensKv, numHeads, causal }; }

using PlanRef = std::shared_ptr<const PrefillPlanHandle>;
// A prefill plan's External carries this tag: a decode plan (or anything else) passed as one is refused, not misread.
constexpr napi_type_tag kPlanTag = {0x6d6c612d70726566ull, 0x696c6c2d706c616eull};

MlaPrefillParams read(const Napi::Array& o, Retained* keepAlive, bool withOutputs) {
  using P = MlaPrefillParams;
  P p;
  readTensors<P>(o, keepAlive, withOutputs, p,
                 {{&P::q, arg::q, "q"}, {&P::kNope, arg::kNope, "kNope"}, {&P::kPe, arg::kPe, "kPe"}, {&P::v, arg::v, "v"},
                  {&P::cuSeqLensQ, arg::cuSeqLensQ, "cuSeqLensQ"}, {&P::cuSeqLensKv, arg::cuSeqLensKv, "cuSeqLensKv"},
                  {&P::out, arg::out, "out", false, true}, {&P::lse, arg::lse, "lse", false, true}});
  p.softmaxScale = static_cast<float>(getNumber(o, arg::softmaxScale, "softmaxScale"));
  p.causal = o.Get(arg::causal).ToBoolean().Value();
  Napi::Value plan = o.Get(arg::plan);
  if (plan.IsExternal()) {
    bool tagged = false;
    napi_check_object_type_tag(o.Env(), plan, &kPlanTag, &tagged);
    if (!tagged) throw Error(ErrorCode::Argument, "plan must come from planPrefill");
    p.plan = *plan.As<Napi::External<PlanRef>>().Data();
  } else if (!plan.IsUndefined() && !plan.IsNull()) {
    throw Error(ErrorCode::Argument, "plan must come from planPrefill");
  }
  return p;
}

constexpr const char* kOutputs[2] = {"out", "lse"};

void run(Backend& backend, const MlaPrefillParams& p) { backend.mlaPrefill(p); }
void checkPlan(const MlaPrefillParams& p, const Backend& backend) { validatePlan(p, backend.name()); }

const OpSpec<MlaPrefillParams> kPrefill{"mlaPrefill", read, run, checkPlan};

// planPrefill(stream, params) -> { handle, numWorkItems }: an opaque plan for mlaPrefill (tagged), plus what it holds
// for the caller's information.
Napi::Value PlanPrefill(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    StreamWrap& stream = toStream(info[0]);
    Napi::Array o = paramsOf(info[1]);
    TensorView cuQ = toView(o, planArg::cuSeqLensQ, "cuSeqLensQ", false, nullptr);
    TensorView cuKv = toView(o, planArg::cuSeqLensKv, "cuSeqLensKv", false, nullptr);
    validateCuSeqLens(cuQ);
    validateCuSeqLens(cuKv);
    const int64_t batch = cuQ.shape[0] - 1;
    if (cuKv.shape[0] != batch + 1)
      throw Error(ErrorCode::Shape, "cuSeqLensKv must have shape [" + std::to_string(batch + 1) + "] (batch + 1, from cuSeqLensQ), got " + cuKv.shapeStr());
    const int64_t heads = positiveInteger(o, planArg::numHeads, "numHeads");
    const bool causal = o.Get(planArg::causal).ToBoolean().Value();
    const int32_t* q = cuQ.as<const int32_t>();
    const int32_t* kv = cuKv.as<const int32_t>();
    for (int64_t b = 0; causal && b < batch; ++b)
      if (kv[b + 1] - kv[b] < q[b + 1] - q[b])
        throw Error(ErrorCode::Range, "causal: sequence " + std::to_string(b) + " has " + std::to_string(q[b + 1] - q[b]) + " queries but " +
                                          std::to_string(kv[b + 1] - kv[b]) + " keys; a causal prefill needs at least as many keys as queries");
    PlanRef plan = stream.backend().planPrefill(batch, heads, causal, q, kv);
    Napi::Object result = Napi::Object::New(env);
    auto handle = Napi::External<PlanRef>::New(env, new PlanRef(plan), [](Napi::Env, PlanRef* p) { delete p; });
    napi_type_tag_object(env, handle, &kPlanTag);
    result.Set("handle", handle);
    result.Set("numWorkItems", static_cast<double>(plan->numWorkItems));
    return result;
  });
}

}  // namespace

void exportMlaPrefill(Napi::Env env, Napi::Object exports) {
  exportOp(env, exports, kPrefill, outShapes<MlaPrefillParams, read, mlaPrefillOutShapes, kOutputs>);
  exports.Set("planPrefill", Napi::Function::New(env, PlanPrefill));
}

}  // namespace mla::addon
