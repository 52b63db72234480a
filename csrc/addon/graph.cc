#include "graph.h"

#include <algorithm>
#include <map>
#include <string>
#include <tuple>

#include "../core/errors.h"
#include "guard.h"
#include "marshal.h"
#include "stream.h"

namespace mla::addon {

Napi::Function GraphWrap::Define(Napi::Env env) {
  Napi::Function ctor = DefineClass(env, "NativeGraph", {InstanceMethod<&GraphWrap::NumOps>("numOps"), InstanceMethod<&GraphWrap::Dispose>("dispose")});
  env.GetInstanceData<AddonData>()->graphClass = Napi::Persistent(ctor);
  return ctor;
}

GraphWrap::GraphWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GraphWrap>(info) {}

Napi::Object GraphWrap::Create(Napi::Env env, Napi::Value stream, std::vector<GraphOp> ops, Retained retained) {
  Napi::Object obj = env.GetInstanceData<AddonData>()->graphClass.New({});
  GraphWrap* g = Unwrap(obj);
  g->stream_ = Napi::Persistent(stream.As<Napi::Object>());
  g->ops_ = std::move(ops);
  g->retained_ = std::move(retained);
  for (DeviceBufferWrap* b : g->retained_.buffers) b->use();  // not freed while the graph may replay
  return obj;
}

void GraphWrap::release() {
  if (disposed_) return;
  disposed_ = true;
  // The buffers may be freed once queued replays (which take them into use themselves) are done; the references
  // stay until the graph is collected, which no queued replay allows.
  for (DeviceBufferWrap* b : retained_.buffers) b->done();
  ops_.clear();
}

Napi::Value GraphWrap::NumOps(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(ops_.size())); }

Napi::Value GraphWrap::Dispose(const Napi::CallbackInfo& info) {
  release();
  return info.Env().Undefined();
}

namespace {

// One plan per distinct (lengths, shape) within a replay: every layer's decode of a step shares it.
using PlanKey = std::tuple<std::vector<int32_t>, int64_t, int64_t, bool>;
using PlanCache = std::map<PlanKey, std::shared_ptr<const DecodePlanHandle>>;

// Validates one recorded operation against the index arrays as they are now (copied into `snapshot`).
void prepare(MlaDecodeParams& p, const Backend& backend, IndexSnapshot& snapshot, PlanCache& plans) {
  snapshotIndexTensors(p, snapshot);
  validate(p, backend.device());
  // A decode recorded without a plan gets one too, so that the layers of a step plan once between them.
  const int32_t* lens = p.seqLens.as<const int32_t>();
  if (!p.plan || !std::equal(lens, lens + p.batch, p.plan->seqLens.begin(), p.plan->seqLens.end())) {
    const bool batchInvariant = p.plan && p.plan->batchInvariant;
    std::shared_ptr<const DecodePlanHandle>& plan = plans[PlanKey{std::vector<int32_t>(lens, lens + p.batch), p.queryLen, p.numHeads, batchInvariant}];
    if (!plan) plan = backend.planDecode(p.batch, p.queryLen, p.numHeads, lens, batchInvariant);
    p.plan = plan;
  }
  validatePlan(p, backend.name());
  backend.checkSupported(p);
}
// A replay's plans: the decode ones above, and one prefill plan per distinct (lengths, heads, causal).
using PrefillPlanKey = std::tuple<std::vector<int32_t>, std::vector<int32_t>, int64_t, bool>;
struct ReplayPlans : PlanCache {
  std::map<PrefillPlanKey, std::shared_ptr<const PrefillPlanHandle>> prefill;
};

void prepare(MlaPrefillParams& p, const Backend& backend, IndexSnapshot& snapshot, ReplayPlans& plans) {
  snapshotIndexTensors(p, snapshot);
  validate(p, backend.device());
  const int32_t* cuQ = p.cuSeqLensQ.as<const int32_t>();
  const int32_t* cuKv = p.cuSeqLensKv.as<const int32_t>();
  const size_t n = static_cast<size_t>(p.batch + 1);
  if (!p.plan || !std::equal(cuQ, cuQ + n, p.plan->cuSeqLensQ.begin(), p.plan->cuSeqLensQ.end()) ||
      !std::equal(cuKv, cuKv + n, p.plan->cuSeqLensKv.begin(), p.plan->cuSeqLensKv.end())) {
    std::shared_ptr<const PrefillPlanHandle>& plan =
        plans.prefill[PrefillPlanKey{std::vector<int32_t>(cuQ, cuQ + n), std::vector<int32_t>(cuKv, cuKv + n), p.numHeads, p.causal}];
    if (!plan) plan = backend.planPrefill(p.batch, p.numHeads, p.causal, cuQ, cuKv);
    p.plan = plan;
  }
  validatePlan(p, backend.name());
  backend.checkSupported(p);
}

template <class Params>
void prepare(Params& p, const Backend& backend, IndexSnapshot& snapshot, PlanCache&) {
  snapshotIndexTensors(p, snapshot);
  validate(p, backend.device());
  backend.checkSupported(p);
}

}  // namespace

Napi::Value ReplayGraph(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    StreamWrap& stream = toStream(info[0]);
    GraphWrap& graph = unwrapped<GraphWrap>(info[1], "replayGraph(stream, graph): graph must be a NativeGraph");
    if (graph.disposed_) throw Error(ErrorCode::Disposed, "the graph was disposed");
    if (graph.stream_.Value() != info[0]) throw Error(ErrorCode::Argument, "a graph replays on the stream it was captured on");
    if (stream.capturing()) throw Error(ErrorCode::Argument, "a graph cannot be replayed while its stream captures another");
    for (DeviceBufferWrap* b : graph.retained_.buffers)
      if (b->released()) throw Error(ErrorCode::Disposed, "a tensor the graph uses was disposed");
    Backend* backend = &stream.backend();
    auto snapshot = std::make_shared<IndexSnapshot>();
    std::vector<GraphOp> ops = graph.ops_;
    ReplayPlans plans;
    for (size_t i = 0; i < ops.size(); ++i) {
      try {
        std::visit([&](auto& p) { prepare(p, *backend, *snapshot, plans); }, ops[i]);
      } catch (const Error& e) {
        throw Error(e.code(), "graph op " + std::to_string(i) + " (" + graphOpName(ops[i]) + "): " + e.what());
      }
    }
    Retained refs;
    refs.refs.push_back(Napi::Persistent(info[1].As<Napi::Object>()));  // the graph (and its buffers) outlive the replay
    refs.buffers = graph.retained_.buffers;
    std::vector<StreamWrap::Dependency> after = stream.dependencies(info[2], refs);
    std::shared_ptr<std::unique_ptr<GraphState>> state = graph.state_;
    const uint64_t ticket = stream.enqueue(
        [ops = std::move(ops), snapshot, state, backend] { backend->runGraph(ops, *state); }, std::move(refs), std::move(after));
    return Napi::Number::New(info.Env(), static_cast<double>(ticket));
  });
}

}  // namespace mla::addon
