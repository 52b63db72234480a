// The exception guards. No C++ exception may cross a N-API boundary or the top frame of a thread: both end the
// process. `guarded` wraps every entry point from JS: mla::Error leaves as a JS MlaError (the class lib/errors.ts
// registers at load) with the same code, any other exception as E_OOM or E_INTERNAL. `contained` wraps what N-API
// calls without a JS caller (completions, finalisers, cleanup hooks) and the top frame of each thread (threads start
// through core/threads.h's startThread, whose failure is E_OOM with the system's reason).
#pragma once
#include <napi.h>

#include <cstdio>
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
  } catch (...) {
    throwJs(env, "E_INTERNAL", "an unknown C++ exception");
  }
}

// Runs fn and swallows whatever it throws (said on stderr: it is a bug of mla-kernels, but not one worth the
// process). For callbacks without a JS caller and the top frames of threads.
template <class Fn>
void contained(const char* where, Fn&& fn) noexcept {
  try {
    fn();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mla-kernels: %s: %s (ignored)\n", where, e.what());
  } catch (...) {
    std::fprintf(stderr, "mla-kernels: %s: an unknown exception (ignored)\n", where);
  }
}

}  // namespace mla::addon
