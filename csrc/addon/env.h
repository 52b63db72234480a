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
  std::map<std::string, OutputShapesFn> outputShapes;  // by operation name, from each op's registration
};

// Makes the environment's AddonData and the cleanup hook that stops its streams at teardown.
AddonData& initEnv(Napi::Env env);

}  // namespace mla::addon
