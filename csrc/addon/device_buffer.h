// Device memory behind a JS Tensor on cuda:N or cuda-sim:N. release() (Tensor.dispose) frees it as soon as no queued
// operation uses it; the finaliser frees what was forgotten.
#pragma once
#include <napi.h>

#include <vector>

#include "../core/backend.h"
#include "lifetime.h"

namespace mla::addon {

class DeviceBufferWrap : public Napi::ObjectWrap<DeviceBufferWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // new NativeDeviceBuffer(device, bytes): device 'cuda-sim:1' (a backend name is its device 0)
  explicit DeviceBufferWrap(const Napi::CallbackInfo& info);
  ~DeviceBufferWrap() override;

  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  bool released() const { return releaseRequested_; }
  const Backend& backend() const { return *backend_; }
  // Main thread only: an operation using the buffer was queued / has completed.
  void use() { ++pending_; }
  void done() {
    if (--pending_ == 0 && releaseRequested_) free();
  }

 private:
  Napi::Value Release(const Napi::CallbackInfo& info);
  void free();  // never throws: it runs in finalisers and completions

  Backend* backend_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  int pending_ = 0;
  bool releaseRequested_ = false;
};

}  // namespace mla::addon
