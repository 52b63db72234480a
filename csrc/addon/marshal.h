// Marshalling: the arguments lib/ passes (lib/native.ts) read into C++ views, and values back. lib/ passes arrays
// read by index in the order lib/native.ts gives (TensorDescriptor, each op's params), not objects read by name:
// through N-API a read by name makes a new V8 string for the name every time (~1.2K instructions), and keeping the
// strings across calls needs references to strings (N-API 10; Node 20 has 9). What each call costs is in
// bench/overhead.mjs. The order of each op's params is in its op_*.cc.
#pragma once
#include <napi.h>

#include <cstdint>
#include <vector>

#include "../core/errors.h"
#include "../core/tensor.h"
#include "lifetime.h"

namespace mla::addon {

class StreamWrap;

// The shape of what lib/ passes (argument arrays, tensor descriptors). Bumped with every change to it: lib/native.ts
// refuses an addon of another interface, which would otherwise misread its arguments (a stale build in a checkout).
constexpr int kInterface = 3;

// The address of a TypedArray's first element and its length in bytes, in one N-API call (Napi::TypedArray makes
// four for the same). False when `v` is not a TypedArray.
bool typedArrayMemory(const Napi::Value& v, void** data, size_t* bytes, napi_typedarray_type* type = nullptr);

// Whether a TypedArray's memory is a SharedArrayBuffer's (which JS cannot detach, transfer or shrink).
bool sharedMemory(const Napi::Value& typedArray);

// params[index] as a tensor named `name` (for errors); an absent optional one is a view with no data. The device
// buffer of a device tensor is added to `keepAlive` (when given).
TensorView toView(const Napi::Array& params, uint32_t index, const char* name, bool optional, Retained* keepAlive);

StreamWrap& toStream(const Napi::Value& v);
// The C++ object of a wrapped JS object, or mla::Error E_ARGUMENT "`what` must be ..." when it wraps none.
template <class Wrap>
Wrap& unwrapped(const Napi::Value& v, const char* what) {
  void* wrapped = nullptr;
  if (!v.IsObject() || napi_unwrap(v.Env(), v, &wrapped) != napi_ok || !wrapped) throw Error(ErrorCode::Argument, what);
  return *static_cast<Wrap*>(wrapped);
}
double getNumber(const Napi::Array& params, uint32_t index, const char* name);
// params[index] as an integer in [1, 1e9]; E_RANGE naming `name` otherwise.
int64_t positiveInteger(const Napi::Array& params, uint32_t index, const char* name);
// An operation's params array (info[1]).
Napi::Array paramsOf(const Napi::Value& v);
Napi::Array shapeToJs(Napi::Env env, const std::vector<int64_t>& dims);

}  // namespace mla::addon
