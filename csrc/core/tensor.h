// A non-owning view of a dense, row-major tensor, as every backend receives it.
#pragma once
#include <cstdint>
#include <string>

#include "dtype.h"

namespace mla {

inline constexpr int kMaxDims = 6;

// cuda-sim memory is host memory handed out by the emulated CUDA runtime; it is a device of its own so tensors of a
// real GPU and of the emulator are never confused.
// The values are the codes lib/ passes in tensor descriptors (DEVICE_KINDS in lib/stream.ts; a test checks they agree).
enum class DeviceKind : uint8_t { Cpu = 0, Cuda = 1, CudaSim = 2 };

inline constexpr DeviceKind kAllDeviceKinds[] = {DeviceKind::Cpu, DeviceKind::Cuda, DeviceKind::CudaSim};

// The backend's name: "cpu", "cuda", "cuda-sim".
inline const char* deviceKindName(DeviceKind k) {
  switch (k) {
    case DeviceKind::Cpu: return "cpu";
    case DeviceKind::Cuda: return "cuda";
    case DeviceKind::CudaSim: return "cuda-sim";
  }
  return "?";
}

struct Device {
  DeviceKind kind = DeviceKind::Cpu;
  int index = 0;
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const {
    if (kind == DeviceKind::Cpu) return "cpu";
    return deviceKindName(kind) + (":" + std::to_string(index));
  }
};

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::F32;
  Device device;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0, 0, 0};
  const char* name = "";  // the argument's name, for error messages
  // The caller's memory when `data` points at a copy of it (snapshotIndexTensors): what aliasing is checked on.
  const void* source = nullptr;

  bool present() const { return data != nullptr || ndim > 0; }
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtypeSize(dtype); }
  std::string shapeStr() const {
    std::string s = "[";
    for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
  template <class T>
  T* as() const { return static_cast<T*>(data); }
};

}  // namespace mla
