// The CUDA runtime calls of the device backend, as mla::<kernel namespace>::rt. The GPU build uses the real runtime
// (linked statically); cuda-sim defines the same calls over host memory — one simulated device whose SM count and
// shared memory come from the emulator's settings, synchronous "streams" — so the backend's host code runs in tests.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../kernels/mla_kernels.h"

#if defined(MLA_KERNELS_DEVICE_API)
#include <cuda_runtime_api.h>

namespace mla::kernels::rt {
using ::cudaDeviceGetAttribute;
using ::cudaDriverGetVersion;
using ::cudaFree;
using ::cudaFreeHost;
using ::cudaGetDeviceCount;
using ::cudaGetDeviceProperties;
using ::cudaGetErrorName;
using ::cudaMalloc;
using ::cudaMallocHost;
using ::cudaMemcpyAsync;
using ::cudaMemGetInfo;
using ::cudaRuntimeGetVersion;
using ::cudaSetDevice;
using ::cudaStreamCreateWithFlags;
using ::cudaStreamDestroy;
using ::cudaStreamSynchronize;
inline const char* deviceName(int device, cudaDeviceProp* props) {
  return cudaGetDeviceProperties(props, device) == cudaSuccess ? props->name : "unknown";
}
}  // namespace mla::kernels::rt

#else  // cuda-sim

namespace mla::kernels_sim::rt {

// The simulated device (from cuda::SimSettings, see sim_backend.cc).
struct SimDeviceSpec {
  int numSms;
  int smemOptin;          // bytes of shared memory a block may opt into
  size_t memoryBytes;     // device memory the emulated runtime hands out before cudaErrorMemoryAllocation
  int computeMajor, computeMinor;
};
SimDeviceSpec simDeviceSpec();

inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
inline cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  const SimDeviceSpec s = simDeviceSpec();
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *v = s.numSms; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = s.smemOptin; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *v = s.computeMajor; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *v = s.computeMinor; return cudaSuccess;
    default: return cudaErrorInvalidValue;
  }
}
inline const char* deviceName(int, void*) { return "cuda-sim (emulated)"; }
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    default: return "cudaErrorUnknown";
  }
}
// Device memory is host memory; allocations are counted against SimDeviceSpec::memoryBytes (sim_backend.cc).
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMemGetInfo(size_t* freeBytes, size_t* total);
inline cudaError_t cudaMallocHost(void** p, size_t bytes) {
  *p = std::malloc(bytes == 0 ? 1 : bytes);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  if (bytes) std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  static char token;
  *s = reinterpret_cast<cudaStream_t>(&token);  // kernels run synchronously under emulation
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

}  // namespace mla::kernels_sim::rt
#endif
