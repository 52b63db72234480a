// Each backend's own functions (BackendProvider::hooks: cpuInfo, simConfigure, ...), exported under their names,
// with their plain values converted to and from JS.
#include <string>

#include "../core/backend.h"
#include "../core/errors.h"
#include "guard.h"

namespace mla::addon {
namespace {

Value fromJs(const Napi::Value& v) {
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value();
  if (v.IsNumber()) return v.As<Napi::Number>().DoubleValue();
  if (v.IsString()) return v.As<Napi::String>().Utf8Value();
  if (v.IsArray()) {
    Napi::Array a = v.As<Napi::Array>();
    Value::List list;
    for (uint32_t i = 0; i < a.Length(); ++i) list.push_back(fromJs(a.Get(i)));
    return list;
  }
  if (v.IsObject() && !v.IsFunction()) {
    Napi::Object o = v.As<Napi::Object>();
    Napi::Array keys = o.GetPropertyNames();
    Value::Record record;
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      const std::string key = keys.Get(i).ToString().Utf8Value();
      record.emplace_back(key, fromJs(o.Get(key)));
    }
    return record;
  }
  return {};
}

Napi::Value toJs(Napi::Env env, const Value& v) {
  if (v.isBool()) return Napi::Boolean::New(env, v.boolean());
  if (v.isNumber()) return Napi::Number::New(env, v.number());
  if (v.isString()) return Napi::String::New(env, v.string());
  if (const auto* list = std::get_if<Value::List>(&v.v)) {
    Napi::Array a = Napi::Array::New(env, list->size());
    for (size_t i = 0; i < list->size(); ++i) a.Set(static_cast<uint32_t>(i), toJs(env, (*list)[i]));
    return a;
  }
  if (const auto* record = std::get_if<Value::Record>(&v.v)) {
    Napi::Object o = Napi::Object::New(env);
    for (const auto& [key, x] : *record) o.Set(key, toJs(env, x));
    return o;
  }
  return env.Undefined();
}

}  // namespace

void exportHooks(Napi::Env env, Napi::Object exports) {
  for (BackendHook& hook : backendHooks()) {
    exports.Set(hook.name, Napi::Function::New(env, [call = std::move(hook.call)](const Napi::CallbackInfo& info) -> Napi::Value {
      return guarded(info.Env(), [&] { return toJs(info.Env(), call(fromJs(info[0]))); });
    }, hook.name));
  }
}

}  // namespace mla::addon
