// The exception guard of every entry point: mla::Error leaves as a JS MlaError (the class lib/errors.ts registers at
// load) with the same code, any other C++ exception as E_OOM or E_INTERNAL, never as process termination.
#pragma once
#include <napi.h>

#include <new>
#include <string>

#include "../core/errors.h"
#include "env.h"

namespace mla::addon {

[[noreturn]] inline void throwJs(Napi::Env env, const std::string& code, const std::string& message) {
  auto* data = env.GetInstanceData<AddonData>();
  if (data && !data->errorClass.IsEmpty())
    throw Napi::Error(env, data->errorClass.New({Napi::String::New(env, code), Napi::String::New(env, message)}));
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  throw err;
}

// Runs fn; any C++ exception leaves as a thrown JS MlaError.
template <class Fn>
auto guarded(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const Error& e) {
    throwJs(env, errorCodeName(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    throwJs(env, "E_OOM", "out of host memory");
  } catch (const std::exception& e) {
    throwJs(env, "E_INTERNAL", e.what());
  }
}

}  // namespace mla::addon
