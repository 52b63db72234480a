#include "marshal.h"

#include <cmath>
#include <iterator>
#include <string>

#include "../core/errors.h"
#include "device_buffer.h"
#include "stream.h"

namespace mla::addon {

bool typedArrayMemory(const Napi::Value& v, void** data, size_t* bytes, napi_typedarray_type* type) {
  napi_typedarray_type t;
  size_t length = 0;
  if (napi_get_typedarray_info(v.Env(), v, &t, &length, data, nullptr, nullptr) != napi_ok) return false;
  size_t elementBytes = 8;  // float64, bigint64
  switch (t) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: elementBytes = 1; break;
    case napi_int16_array: case napi_uint16_array: elementBytes = 2; break;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: elementBytes = 4; break;
    default: break;
  }
  *bytes = length * elementBytes;
  if (type) *type = t;
  return true;
}

bool sharedMemory(const Napi::Value& typedArray) {
  napi_value buffer;
  bool plain = true;
  if (napi_get_typedarray_info(typedArray.Env(), typedArray, nullptr, nullptr, nullptr, &buffer, nullptr) != napi_ok) return false;
  // napi_is_arraybuffer is false for a SharedArrayBuffer.
  return napi_is_arraybuffer(typedArray.Env(), buffer, &plain) == napi_ok && !plain;
}

// A tensor descriptor, from lib/tensor.ts: [memory, meta] where memory is the TypedArray of a host tensor or the
// NativeDeviceBuffer of a device tensor, and meta an Int32Array [dtype, device kind, device index, ...shape] with
// the codes of csrc/core (DType, DeviceKind). The checks here only make sure a descriptor cannot point outside its
// own memory, and that host memory is shared memory (a SharedArrayBuffer's): JS can detach, transfer or shrink an
// ordinary ArrayBuffer at any moment, which would free what a queued operation reads or writes, but never a
// SharedArrayBuffer, whose memory lives as long as any object refers to it (lifetime.h; lib/tensor.ts mirrors the
// caller's ordinary arrays into shared memory, docs/lifetime.md).
TensorView toView(const Napi::Array& params, uint32_t index, const char* name, bool optional, Retained* keepAlive) {
  TensorView v;
  v.name = name;
  Napi::Value value = params.Get(index);
  if (!value.IsArray()) {  // the other checks only then: each is an N-API call
    if (value.IsUndefined() || value.IsNull()) {
      if (optional) return v;
      throw Error(ErrorCode::Argument, std::string(name) + " is required");
    }
    throw Error(ErrorCode::Argument, std::string(name) + " must be a Tensor");
  }
  Napi::Array desc = value.As<Napi::Array>();
  Napi::Value memory = desc.Get(0u);
  void* metaData = nullptr;
  size_t metaBytes = 0;
  napi_typedarray_type metaType;
  if (!typedArrayMemory(desc.Get(1u), &metaData, &metaBytes, &metaType) || metaType != napi_int32_array || metaBytes < 3 * sizeof(int32_t))
    throw Error(ErrorCode::Argument, std::string(name) + " must be a Tensor");
  const int32_t* meta = static_cast<const int32_t*>(metaData);
  const int ndim = static_cast<int>(metaBytes / sizeof(int32_t)) - 3;
  if (meta[0] < 0 || meta[0] >= static_cast<int32_t>(std::size(kAllDTypes)))
    throw Error(ErrorCode::DType, std::string(name) + " has an unknown dtype");
  v.dtype = static_cast<DType>(meta[0]);
  if (meta[1] < 0 || meta[1] >= static_cast<int32_t>(std::size(kAllDeviceKinds)) || meta[2] < 0 ||
      (meta[1] == static_cast<int32_t>(DeviceKind::Cpu) && meta[2] != 0))
    throw Error(ErrorCode::Device, std::string(name) + " has an unknown device (kind " + std::to_string(meta[1]) + ", index " + std::to_string(meta[2]) + ")");
  v.device = Device{static_cast<DeviceKind>(meta[1]), meta[2]};
  if (ndim > kMaxDims)
    throw Error(ErrorCode::Shape, std::string(name) + " has more than " + std::to_string(kMaxDims) + " dimensions");
  v.ndim = ndim;
  for (int i = 0; i < ndim; ++i) {
    if (meta[3 + i] < 0) throw Error(ErrorCode::Shape, std::string(name) + " has an invalid dimension " + std::to_string(meta[3 + i]));
    v.shape[i] = meta[3 + i];
  }
  void* hostData = nullptr;
  size_t byteLength = 0;
  const bool host = typedArrayMemory(memory, &hostData, &byteLength);
  if (!host && !memory.IsObject()) throw Error(ErrorCode::Argument, std::string(name) + " must be a Tensor");
  if (host && !sharedMemory(memory))
    throw Error(ErrorCode::Argument, std::string(name) + " is not memory mla-kernels can keep alive (an ordinary ArrayBuffer's; make tensors with the Tensor class)");
  DeviceBufferWrap* deviceBuffer = host ? nullptr : &unwrapped<DeviceBufferWrap>(memory, "a tensor's memory must be a TypedArray or a device buffer");
  if (deviceBuffer && deviceBuffer->released()) throw Error(ErrorCode::Disposed, std::string(name) + " was disposed");
  if (deviceBuffer && v.device != deviceBuffer->backend().device())
    throw Error(ErrorCode::Internal, std::string(name) + ": descriptor device disagrees with its memory");
  if (deviceBuffer) byteLength = deviceBuffer->bytes();
  // Element count with overflow detection: absurd shapes must not wrap around to a small size.
  const size_t elem = dtypeSize(v.dtype);
  size_t numel = 1;
  bool overflow = false;
  for (int i = 0; i < v.ndim && numel != 0; ++i) {
    const size_t d = static_cast<size_t>(v.shape[i]);
    if (d != 0 && numel > SIZE_MAX / elem / d) overflow = true;
    numel = d == 0 ? 0 : numel * d;
  }
  if (numel == 0) overflow = false;
  if (overflow || numel * elem > byteLength)
    throw Error(ErrorCode::Shape, std::string(name) + " shape " + v.shapeStr() + " is larger than its buffer");
  v.data = deviceBuffer ? deviceBuffer->data() : hostData;
  // The memory itself is kept alive through the params array (enqueueOp).
  if (keepAlive && deviceBuffer) keepAlive->buffers.push_back(deviceBuffer);
  return v;
}

StreamWrap& toStream(const Napi::Value& v) { return unwrapped<StreamWrap>(v, "stream must be a Stream"); }

double getNumber(const Napi::Array& params, uint32_t index, const char* name) {
  Napi::Value v = params.Get(index);
  if (!v.IsNumber()) throw Error(ErrorCode::Argument, std::string(name) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

int64_t positiveInteger(const Napi::Array& params, uint32_t index, const char* name) {
  const double x = getNumber(params, index, name);
  if (!(x >= 1 && x <= 1e9) || std::floor(x) != x) throw Error(ErrorCode::Range, std::string(name) + " must be a positive integer, got " + std::to_string(x));
  return static_cast<int64_t>(x);
}

// An operation's params array (info[1]).
Napi::Array paramsOf(const Napi::Value& v) {
  if (!v.IsArray()) throw Error(ErrorCode::Internal, "params must be an array (see lib/native.ts)");
  return v.As<Napi::Array>();
}

Napi::Array shapeToJs(Napi::Env env, const std::vector<int64_t>& dims) {
  Napi::Array a = Napi::Array::New(env, dims.size());
  for (size_t i = 0; i < dims.size(); ++i) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(dims[i])));
  return a;
}

}  // namespace mla::addon
