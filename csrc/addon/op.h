// How an operation reaches a backend: op(stream, params, after) -> ticket. The op's params are read from lib/'s
// array (in the order its op_*.cc gives, lib/native.ts's), the host index arrays are copied, everything is validated
// for the stream's device (core/ops.cc) and backend, and the op is queued on the stream's worker, or recorded when
// the stream captures a graph. Each op_*.cc describes its op with an OpSpec and exports it with exportOp().
#pragma once
#include <napi.h>

#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/backend.h"
#include "../core/errors.h"
#include "env.h"
#include "guard.h"
#include "lifetime.h"
#include "marshal.h"
#include "stream.h"

namespace mla::addon {

template <class Params>
struct OpSpec {
  const char* name;  // the JS function, lib/native.ts's name
  // The params from lib/'s array, outputs included when withOutputs (outputShapes reads the inputs alone). Device
  // buffers go to keepAlive when given.
  Params (*read)(const Napi::Array& params, Retained* keepAlive, bool withOutputs);
  // Runs the op on the stream's worker.
  void (*run)(Backend& backend, const Params& p);
  // Checks that need the stream's backend beyond Backend::checkSupported (a decode's plan), or null.
  void (*checkForBackend)(const Params& p, const Backend& backend) = nullptr;
  // Why a stream cannot capture the op, for ops that are no GraphOp (core/backend.h).
  const char* notCapturable = nullptr;
};

// One tensor argument of an op, by role: its place in lib/'s array, its name in messages, the params member it
// fills, whether it may be absent, and whether it is an output (read only withOutputs).
template <class Params>
struct TensorArg {
  TensorView Params::*member;
  uint32_t index;
  const char* name;
  bool optional = false;
  bool output = false;
};

// Reads an op's tensor arguments in the order `args` lists them (the order their errors are raised in).
template <class Params>
void readTensors(const Napi::Array& params, Retained* keepAlive, bool withOutputs, Params& p, std::initializer_list<TensorArg<Params>> args) {
  for (const TensorArg<Params>& a : args)
    if (!a.output || withOutputs) p.*a.member = toView(params, a.index, a.name, a.optional, keepAlive);
}

// An operation's index snapshot, from a pool it returns to when the operation completes. A fresh copy per call (128 KiB
// of slots and as much of positions for 32768 tokens) went back to the system when freed (glibc trims the heap) and
// was faulted in again by the next call: ~0.4 ms of a 2-3 ms append with RoPE (Zen 5 VM, one thread).
inline std::shared_ptr<IndexSnapshot> pooledSnapshot() {
  struct Pool {
    std::mutex mu;
    std::vector<IndexSnapshot*> free;
  };
  static Pool* const pool = new Pool;  // never destroyed: snapshots may come back while the process exits
  IndexSnapshot* s = nullptr;
  {
    std::lock_guard<std::mutex> lock(pool->mu);
    if (!pool->free.empty()) s = pool->free.back(), pool->free.pop_back();
  }
  if (!s) s = new IndexSnapshot;
  return std::shared_ptr<IndexSnapshot>(s, [](IndexSnapshot* back) {
    back->used = 0;
    std::lock_guard<std::mutex> lock(pool->mu);
    if (pool->free.size() < 8) pool->free.push_back(back);
    else delete back;
  });
}

template <class Params>
Napi::Value enqueueOp(const Napi::CallbackInfo& info, const OpSpec<Params>& op) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    StreamWrap& stream = toStream(info[0]);
    Retained refs;
    Napi::Array params = paramsOf(info[1]);
    Params p = op.read(params, &refs, true);
    // One reference keeps every tensor's memory alive until the operation completes: the params array holds their
    // descriptors (lib/ makes a new array per call and never changes it), and a reference per tensor costs more.
    refs.refs.push_back(Napi::Persistent(params.As<Napi::Object>()));
    Backend* backend = &stream.backend();
    // The kernels read copies of the index arrays, taken before they are checked.
    auto snapshot = pooledSnapshot();
    Params checked = p;
    snapshotIndexTensors(checked, *snapshot);
    validate(checked, backend->device());
    if (op.checkForBackend) op.checkForBackend(checked, *backend);
    backend->checkSupported(checked);
    if (stream.capturing()) {
      // Recorded as it was given (the caller's index arrays are read again at each replay); queues nothing.
      if constexpr (std::is_constructible_v<GraphOp, Params>)
        stream.captured(GraphOp(p), std::move(refs));
      else
        throw Error(ErrorCode::Argument, op.notCapturable);
      return Napi::Number::New(info.Env(), 0);
    }
    // Writes on other streams this operation must wait for: [[stream, ticket], ...] from lib/ops.ts.
    std::vector<StreamWrap::Dependency> after = stream.dependencies(info[2], refs);
    void (*run)(Backend&, const Params&) = op.run;
    uint64_t ticket = stream.enqueue([checked, snapshot, backend, run] { run(*backend, checked); }, std::move(refs), std::move(after));
    return Napi::Number::New(info.Env(), static_cast<double>(ticket));
  });
}

// outputShapes of an op with one created output, `out`, whose shape `shape` (core/ops.h) gives from the inputs.
template <class Params, Params (*read)(const Napi::Array&, Retained*, bool), std::vector<int64_t> (*shape)(Params&)>
Napi::Object outShape(Napi::Env env, const Napi::Array& inputs) {
  Params p = read(inputs, nullptr, false);
  Napi::Object result = Napi::Object::New(env);
  result.Set("out", shapeToJs(env, shape(p)));
  return result;
}

// outputShapes of an op with two created outputs, named names[0] and names[1], whose shapes `shapes` (core/ops.h)
// gives from the inputs.
template <class Params, Params (*read)(const Napi::Array&, Retained*, bool), void (*shapes)(Params&, std::vector<int64_t>*, std::vector<int64_t>*),
          const char* const (&names)[2]>
Napi::Object outShapes(Napi::Env env, const Napi::Array& inputs) {
  Params p = read(inputs, nullptr, false);
  std::vector<int64_t> first, second;
  shapes(p, &first, &second);
  Napi::Object result = Napi::Object::New(env);
  result.Set(names[0], shapeToJs(env, first));
  result.Set(names[1], shapeToJs(env, second));
  return result;
}

// Exports op.name as op(stream, params, after); `outputShapes` (when the op creates outputs the caller may omit)
// answers outputShapes(op.name, inputs).
template <class Params>
void exportOp(Napi::Env env, Napi::Object exports, const OpSpec<Params>& op, OutputShapesFn outputShapes = nullptr) {
  exports.Set(op.name, Napi::Function::New(env, [op](const Napi::CallbackInfo& info) { return enqueueOp(info, op); }, op.name));
  if (outputShapes) env.GetInstanceData<AddonData>()->outputShapes[op.name] = outputShapes;
}

}  // namespace mla::addon
