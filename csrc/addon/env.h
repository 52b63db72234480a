// The addon's state per environment (Node's main thread or a worker thread), made when the addon is loaded there
// and torn down with it: the place for what must be stopped or released when an environment goes away.
#pragma once
#include <napi.h>

#include <map>
#include <set>
#include <string>

namespace mla::addon {

class StreamWrap;

// Output shapes of an operation whose outputs the caller did not give (outputShapes(op, inputs) in lib/native.ts).
using OutputShapesFn = Napi::Object (*)(Napi::Env env, const Napi::Array& inputs);

struct AddonData {
  Napi::FunctionReference errorClass;  // MlaError, from setErrorClass
  Napi::FunctionReference graphClass;  // NativeGraph, made by StreamWrap::EndCapture
  std::set<StreamWrap*> streams;       // live streams, stopped when the environment is torn down
  bool tearingDown = false;            // set by the cleanup hook: nothing calls into JS any more
  std::map<std::string, OutputShapesFn> outputShapes;  // by operation name, from each op's registration
};

// Makes the environment's AddonData and the cleanup hook that stops its streams at teardown. The hook runs before
// Node deletes the streams' thread-safe functions and before the finalisers free what JS objects hold (device
// memory included): every stream's threads are joined by then, so no operation runs on freed memory and no
// completion is delivered into the dying environment.
AddonData& initEnv(Napi::Env env);

}  // namespace mla::addon
