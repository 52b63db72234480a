// What the addon is: the backends of the build, the tables lib/ must agree with (dtypes, device kinds, error codes),
// the argument interface, device memory statistics, and setErrorClass (MlaError, registered by lib/ at load).
#include <iterator>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../core/errors.h"
#include "env.h"
#include "guard.h"
#include "marshal.h"

namespace mla::addon {
namespace {

Napi::Value Backends(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    std::vector<BackendInfo> list = listBackends();
    Napi::Array arr = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", list[i].name);
      o.Set("available", list[i].available);
      o.Set("reason", list[i].reason);
      Napi::Array devices = Napi::Array::New(env, list[i].devices.size());
      for (size_t d = 0; d < list[i].devices.size(); ++d) devices.Set(static_cast<uint32_t>(d), list[i].devices[d]);
      o.Set("devices", devices);
      arr.Set(static_cast<uint32_t>(i), o);
    }
    return arr;
  });
}

// The addon's own tables, so a test can check lib/ agrees with csrc/core/.
Napi::Value Facts(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    Napi::Object facts = Napi::Object::New(env);
    Napi::Object dtypes = Napi::Object::New(env);
    for (DType t : kAllDTypes) dtypes.Set(dtypeName(t), Napi::Number::New(env, static_cast<double>(dtypeSize(t))));
    facts.Set("dtypeSizes", dtypes);
    Napi::Object dtypeCodes = Napi::Object::New(env);
    for (DType t : kAllDTypes) dtypeCodes.Set(dtypeName(t), Napi::Number::New(env, static_cast<double>(t)));
    facts.Set("dtypeCodes", dtypeCodes);
    Napi::Object deviceKinds = Napi::Object::New(env);
    for (DeviceKind k : kAllDeviceKinds) deviceKinds.Set(deviceKindName(k), Napi::Number::New(env, static_cast<double>(k)));
    facts.Set("deviceKinds", deviceKinds);
    Napi::Array codes = Napi::Array::New(env);
    uint32_t i = 0;
    for (ErrorCode c : kAllErrorCodes) codes.Set(i++, Napi::String::New(env, errorCodeName(c)));
    facts.Set("errorCodes", codes);
    facts.Set("maxDims", Napi::Number::New(env, kMaxDims));
    facts.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
    facts.Set("dsMlaTile", Napi::Number::New(env, static_cast<double>(kDsMlaTile)));
    return facts;
  });
}

// memoryStats(device) -> { bytesInUse, peakBytes } of one device's memory ('cuda-sim:1'; a backend name is its device 0).
Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    mla::Backend& backend = getBackend(parseDevice(info[0].ToString().Utf8Value(), "device"), "device");
    DeviceMemory* memory = backend.memory();
    if (!memory) throw Error(ErrorCode::Device, std::string("the ") + backend.name() + " backend works on host memory");
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("bytesInUse", static_cast<double>(memory->bytesInUse()));
    o.Set("peakBytes", static_cast<double>(memory->peakBytes()));
    return o;
  });
}

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (!info[0].IsFunction()) throw Error(ErrorCode::Argument, "setErrorClass(MlaError)");
    info.Env().GetInstanceData<AddonData>()->errorClass = Napi::Persistent(info[0].As<Napi::Function>());
    return info.Env().Undefined();
  });
}

}  // namespace

void exportInfo(Napi::Env env, Napi::Object exports) {
  exports.Set("backends", Napi::Function::New(env, Backends));
  exports.Set("facts", Napi::Function::New(env, Facts));
  exports.Set("interface", Napi::Number::New(env, kInterface));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass));
}

}  // namespace mla::addon
