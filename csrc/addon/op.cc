// outputShapes(op, inputs): the shapes of the outputs `op` would create, after validating its inputs (the ops
// register their shape functions with exportOp).
#include "op.h"

namespace mla::addon {

void exportOutputShapes(Napi::Env env, Napi::Object exports) {
  exports.Set("outputShapes", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const std::string op = info[0].As<Napi::String>().Utf8Value();
      const auto& table = info.Env().GetInstanceData<AddonData>()->outputShapes;
      const auto it = table.find(op);
      if (it == table.end()) throw Error(ErrorCode::Internal, "outputShapes: unknown op " + op);
      return it->second(info.Env(), paramsOf(info[1]));
    });
  }));
}

}  // namespace mla::addon
