// The CUDA runtime calls of the device backend, as mla::<kernel namespace>::rt. The GPU build uses the real runtime
// (linked statically); cuda-sim defines the same calls over host memory — SimSettings::numDevices simulated devices
// whose SM count and shared memory come from the emulator's settings, synchronous "streams" and "events" — so the
// backend's host code runs in tests. Under cuda-sim the host synchronisations made inside an operation are counted
// (OpScope), so tests can check that operations only enqueue.
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
using ::cudaEventCreateWithFlags;
using ::cudaEventDestroy;
using ::cudaEventQuery;
using ::cudaEventRecord;
using ::cudaEventSynchronize;
using ::cudaFree;
using ::cudaFreeHost;
using ::cudaGetDeviceCount;
using ::cudaGetDeviceProperties;
using ::cudaGetErrorName;
using ::cudaGraphDestroy;
using ::cudaGraphExecDestroy;
using ::cudaGraphInstantiate;
using ::cudaGraphLaunch;
using ::cudaStreamBeginCapture;
using ::cudaStreamEndCapture;
using ::cudaMalloc;
using ::cudaMallocHost;
using ::cudaMemcpyAsync;
using ::cudaMemcpyPeerAsync;
using ::cudaMemGetInfo;
using ::cudaRuntimeGetVersion;
using ::cudaSetDevice;
using ::cudaStreamCreateWithFlags;
using ::cudaStreamDestroy;
using ::cudaStreamSynchronize;
using ::cudaStreamWaitEvent;
// Marks the body of an operation (counted under cuda-sim only).
struct OpScope {
  explicit OpScope(const char*) {}
};
inline const char* deviceName(int device, cudaDeviceProp* props) {
  return cudaGetDeviceProperties(props, device) == cudaSuccess ? props->name : "unknown";
}
}  // namespace mla::kernels::rt

#else  // cuda-sim
#include <functional>
#include <vector>

namespace mla::kernels_sim::rt {

// The simulated device (from cuda::SimSettings, see sim_backend.cc).
struct SimDeviceSpec {
  int numSms;
  int smemOptin;          // bytes of shared memory a block may opt into
  size_t memoryBytes;     // device memory the emulated runtime hands out before cudaErrorMemoryAllocation
  int computeMajor, computeMinor;
};
SimDeviceSpec simDeviceSpec();
int simDeviceCount();

// The calling thread's current device, as the real runtime keeps it (sim_backend.cc).
int& simCurrentDevice();
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = simDeviceCount();
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) {
  if (d < 0 || d >= simDeviceCount()) return cudaErrorInvalidDevice;
  simCurrentDevice() = d;
  return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= simDeviceCount()) return cudaErrorInvalidDevice;
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
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    default: return "cudaErrorUnknown";
  }
}
// Device memory is host memory; allocations are counted per device against SimDeviceSpec::memoryBytes (sim_backend.cc).
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
inline cudaError_t cudaMemcpyPeerAsync(void* dst, int dstDevice, const void* src, int srcDevice, size_t bytes, cudaStream_t) {
  if (dstDevice < 0 || dstDevice >= simDeviceCount() || srcDevice < 0 || srcDevice >= simDeviceCount()) return cudaErrorInvalidDevice;
  if (bytes) std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  static char token;
  *s = reinterpret_cast<cudaStream_t>(&token);  // kernels run synchronously under emulation
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }

// Host synchronisations are no-ops (the work is done when it is queued) but counted when inside an operation.
void countHostSync();
struct OpScope {
  explicit OpScope(const char* op);
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;
  const char* op;
};
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
  countHostSync();
  return cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = reinterpret_cast<cudaEvent_t>(new char);  // distinct handles, so a double destroy shows under ASan
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<char*>(e);
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) {
  countHostSync();
  return cudaSuccess;
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }

// Graph capture: the launches a thread makes between cudaStreamBeginCapture and cudaStreamEndCapture are recorded
// (launch.cuh, cudasim::capture_list), not run; cudaGraphLaunch runs an instantiated graph's launches in order.
struct SimGraph {
  std::vector<std::function<void()>> launches;
};
inline cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (::cudasim::capture_list()) return cudaErrorIllegalState;
  ::cudasim::capture_list() = new std::vector<std::function<void()>>();
  return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* graph) {
  std::vector<std::function<void()>>* list = ::cudasim::capture_list();
  if (!list) return cudaErrorIllegalState;
  ::cudasim::capture_list() = nullptr;
  *graph = reinterpret_cast<cudaGraph_t>(new SimGraph{std::move(*list)});
  delete list;
  return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long = 0) {
  *exec = reinterpret_cast<cudaGraphExec_t>(new SimGraph(*reinterpret_cast<SimGraph*>(graph)));
  return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete reinterpret_cast<SimGraph*>(graph);
  return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete reinterpret_cast<SimGraph*>(exec);
  return cudaSuccess;
}
// Runs the launches, each reported to the running operation's launch observer (sim_backend.cc's runOp).
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t);

}  // namespace mla::kernels_sim::rt
#endif
