// The runtime of the cuda backend (runtime.h): the real CUDA runtime, linked statically, and the kernels nvcc
// compiled for every architecture (mla::kernels). Included by cuda_backend.cc only, which defines
// MLA_KERNELS_DEVICE_API before anything includes mla_kernels.h (its target may also build cuda-sim).
#pragma once
#ifndef MLA_KERNELS_DEVICE_API
#error "gpu_runtime.h: define MLA_KERNELS_DEVICE_API before the first include"
#endif
#include <cuda_runtime_api.h>

#include <vector>

#include "../core/tensor.h"
#include "../kernels/mla_kernels.h"
#include "plan.h"
#include "runtime.h"

namespace mla::cuda {

struct GpuRuntime {
  static constexpr const char* kName = "cuda";
  static constexpr DeviceKind kKind = DeviceKind::Cuda;

  static constexpr auto cudaDeviceGetAttribute = &::cudaDeviceGetAttribute;
  static constexpr auto cudaDriverGetVersion = &::cudaDriverGetVersion;
  static constexpr auto cudaEventCreateWithFlags = &::cudaEventCreateWithFlags;
  static constexpr auto cudaEventDestroy = &::cudaEventDestroy;
  static constexpr auto cudaEventQuery = &::cudaEventQuery;
  static constexpr auto cudaEventRecord = &::cudaEventRecord;
  static constexpr auto cudaEventSynchronize = &::cudaEventSynchronize;
  static constexpr auto cudaFree = &::cudaFree;
  static constexpr auto cudaFreeHost = &::cudaFreeHost;
  static constexpr auto cudaGetDeviceCount = &::cudaGetDeviceCount;
  static constexpr auto cudaGetErrorName = &::cudaGetErrorName;
  static constexpr auto cudaGraphDestroy = &::cudaGraphDestroy;
  static constexpr auto cudaGraphExecDestroy = &::cudaGraphExecDestroy;
  static constexpr auto cudaGraphInstantiate = &::cudaGraphInstantiate;
  static constexpr auto cudaGraphLaunch = &::cudaGraphLaunch;
  static constexpr auto cudaStreamBeginCapture = &::cudaStreamBeginCapture;
  static constexpr auto cudaStreamEndCapture = &::cudaStreamEndCapture;
  static constexpr auto cudaMalloc = &::cudaMalloc;
  static constexpr auto cudaMallocHost = &::cudaMallocHost;
  static constexpr auto cudaMemcpyAsync = &::cudaMemcpyAsync;
  static constexpr auto cudaMemcpyPeerAsync = &::cudaMemcpyPeerAsync;
  static constexpr auto cudaMemGetInfo = &::cudaMemGetInfo;
  static constexpr auto cudaRuntimeGetVersion = &::cudaRuntimeGetVersion;
  static constexpr auto cudaSetDevice = &::cudaSetDevice;
  static constexpr auto cudaStreamCreateWithFlags = &::cudaStreamCreateWithFlags;
  static constexpr auto cudaStreamDestroy = &::cudaStreamDestroy;
  static constexpr auto cudaStreamSynchronize = &::cudaStreamSynchronize;
  static constexpr auto cudaStreamWaitEvent = &::cudaStreamWaitEvent;
  static const char* deviceName(int device, cudaDeviceProp* props) {
    return ::cudaGetDeviceProperties(props, device) == cudaSuccess ? props->name : "unknown";
  }
  // Nothing to count on a GPU.
  struct OpScope {
    explicit OpScope(const char*) {}
  };

  MLA_RUNTIME_KERNELS(kernels)

  template <class Fn>
  static void runOp(const char*, std::vector<OpOutput>, Fn&& launchAll) {
    launchAll([] {});
  }
  static DecodePlanOptions planOptions() { return DecodePlanOptions{}; }
};

}  // namespace mla::cuda
