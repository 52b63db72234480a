// The runtime of the cuda-sim backend (runtime.h): the CUDA runtime calls over host memory — SimSettings::numDevices
// simulated devices whose SM count and shared memory come from the emulator's settings, synchronous "streams" and
// "events" — and the kernels compiled as host C++ for the SIMT emulator (mla::kernels_sim), so the backend's host
// code runs in tests. The host synchronisations made inside an operation are counted (OpScope), so tests can check
// that operations only enqueue. The functions not defined here, runOp and planOptions are in sim_backend.cc.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../core/tensor.h"
#include "../kernels/mla_kernels.h"
#include "plan.h"
#include "runtime.h"

namespace mla::cuda {

struct SimRuntime {
  static constexpr const char* kName = "cuda-sim";
  static constexpr DeviceKind kKind = DeviceKind::CudaSim;

  // The simulated device (from cuda::SimSettings, see sim_backend.cc).
  struct SimDeviceSpec {
    int numSms;
    int smemOptin;          // bytes of shared memory a block may opt into
    size_t memoryBytes;     // device memory the emulated runtime hands out before cudaErrorMemoryAllocation
    int computeMajor, computeMinor;
  };
  static SimDeviceSpec simDeviceSpec();
  static int simDeviceCount();

  // The calling thread's current device, as the real runtime keeps it (sim_backend.cc).
  static int& simCurrentDevice();
  static cudaError_t cudaGetDeviceCount(int* n) {
    *n = simDeviceCount();
    return cudaSuccess;
  }
  static cudaError_t cudaSetDevice(int d) {
    if (d < 0 || d >= simDeviceCount()) return cudaErrorInvalidDevice;
    simCurrentDevice() = d;
    return cudaSuccess;
  }
  static cudaError_t cudaDriverGetVersion(int* v) {
    *v = 13000;
    return cudaSuccess;
  }
  static cudaError_t cudaRuntimeGetVersion(int* v) {
    *v = 13000;
    return cudaSuccess;
  }
  static cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int device) {
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
  static const char* deviceName(int, void*) { return "cuda-sim (emulated)"; }
  static const char* cudaGetErrorName(cudaError_t e) {
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
  static cudaError_t cudaMalloc(void** p, size_t bytes);
  static cudaError_t cudaFree(void* p);
  static cudaError_t cudaMemGetInfo(size_t* freeBytes, size_t* total);
  static cudaError_t cudaMallocHost(void** p, size_t bytes) {
    *p = std::malloc(bytes == 0 ? 1 : bytes);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
  }
  static cudaError_t cudaFreeHost(void* p) {
    std::free(p);
    return cudaSuccess;
  }
  static cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
    if (bytes) std::memcpy(dst, src, bytes);
    return cudaSuccess;
  }
  static cudaError_t cudaMemcpyPeerAsync(void* dst, int dstDevice, const void* src, int srcDevice, size_t bytes, cudaStream_t) {
    if (dstDevice < 0 || dstDevice >= simDeviceCount() || srcDevice < 0 || srcDevice >= simDeviceCount()) return cudaErrorInvalidDevice;
    if (bytes) std::memcpy(dst, src, bytes);
    return cudaSuccess;
  }
  static cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
    static char token;
    *s = reinterpret_cast<cudaStream_t>(&token);  // kernels run synchronously under emulation
    return cudaSuccess;
  }
  static cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }

  // Host synchronisations are no-ops (the work is done when it is queued) but counted when inside an operation.
  static void countHostSync();
  struct OpScope {
    explicit OpScope(const char* op);
    ~OpScope();
    OpScope(const OpScope&) = delete;
    OpScope& operator=(const OpScope&) = delete;
    const char* op;
  };
  static cudaError_t cudaStreamSynchronize(cudaStream_t) {
    countHostSync();
    return cudaSuccess;
  }
  static cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
    *e = reinterpret_cast<cudaEvent_t>(new char);  // distinct handles, so a double destroy shows under ASan
    return cudaSuccess;
  }
  static cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete reinterpret_cast<char*>(e);
    return cudaSuccess;
  }
  static cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
  static cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
  static cudaError_t cudaEventSynchronize(cudaEvent_t) {
    countHostSync();
    return cudaSuccess;
  }
  static cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }

  // Graph capture: the launches a thread makes between cudaStreamBeginCapture and cudaStreamEndCapture are recorded
  // (launch.cuh, cudasim::capture_list), not run; cudaGraphLaunch runs an instantiated graph's launches in order.
  struct SimGraph {
    std::vector<std::function<void()>> launches;
  };
  static cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
    if (::cudasim::capture_list()) return cudaErrorIllegalState;
    ::cudasim::capture_list() = new std::vector<std::function<void()>>();
    return cudaSuccess;
  }
  static cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* graph) {
    std::vector<std::function<void()>>* list = ::cudasim::capture_list();
    if (!list) return cudaErrorIllegalState;
    ::cudasim::capture_list() = nullptr;
    *graph = reinterpret_cast<cudaGraph_t>(new SimGraph{std::move(*list)});
    delete list;
    return cudaSuccess;
  }
  static cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long = 0) {
    *exec = reinterpret_cast<cudaGraphExec_t>(new SimGraph(*reinterpret_cast<SimGraph*>(graph)));
    return cudaSuccess;
  }
  static cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete reinterpret_cast<SimGraph*>(graph);
    return cudaSuccess;
  }
  static cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete reinterpret_cast<SimGraph*>(exec);
    return cudaSuccess;
  }
  // Runs the launches, each reported to the running operation's launch observer (sim_backend.cc's runOp).
  static cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t);

  MLA_RUNTIME_KERNELS(kernels_sim)

  // Runs `launchAll` under each thread order, restoring the outputs in between, and demands identical bits.
  template <class Fn>
  static void runOp(const char* op, std::vector<OpOutput> outputs, Fn&& launchAll);
  static DecodePlanOptions planOptions();
};

}  // namespace mla::cuda
