#include "device_buffer.h"

#include "guard.h"

namespace mla::addon {

Napi::Function DeviceBufferWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeDeviceBuffer", {InstanceMethod<&DeviceBufferWrap::Release>("release")});
}

DeviceBufferWrap::DeviceBufferWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceBufferWrap>(info) {
  guarded(info.Env(), [&] {
    backend_ = &getBackend(parseDevice(info[0].ToString().Utf8Value(), "device"), "device");
    DeviceMemory* memory = backend_->memory();
    if (!memory) throw Error(ErrorCode::Device, std::string("the ") + backend_->name() + " backend has no device memory");
    const double bytes = info[1].ToNumber().DoubleValue();
    if (!(bytes >= 0 && bytes <= 1e15)) throw Error(ErrorCode::Range, "device allocation of " + std::to_string(bytes) + " bytes");
    bytes_ = static_cast<size_t>(bytes);
    ptr_ = memory->allocate(bytes_);
    return 0;
  });
}

DeviceBufferWrap::~DeviceBufferWrap() { free(); }

void DeviceBufferWrap::free() {
  void* ptr = ptr_;
  ptr_ = nullptr;
  if (ptr && backend_) contained("freeing device memory", [&] { backend_->memory()->release(ptr, bytes_); });
}

Napi::Value DeviceBufferWrap::Release(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    releaseRequested_ = true;
    if (pending_ == 0) free();
    return info.Env().Undefined();
  });
}

}  // namespace mla::addon
