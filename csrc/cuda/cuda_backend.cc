// The CUDA backend on a GPU: cuda_backend_impl.inl over the real CUDA runtime (linked statically) and the kernels
// compiled by nvcc for sm_80 ... sm_120.
#define MLA_KERNELS_DEVICE_API 1
#include <vector>

#include "plan.h"
#include "runtime_api.h"

namespace mla::kernels {
namespace {

struct OpOutput {
  void* data;
  size_t bytes;
};

template <class Fn>
void runOp(const char*, std::vector<OpOutput>, Fn&& launchAll) {
  launchAll([] {});
}

DecodePlanOptions planOptions() { return DecodePlanOptions{}; }

}  // namespace
}  // namespace mla::kernels

#include "cuda_backend_impl.inl"

namespace mla {

static kernels::CudaBackendImpl& instance() {
  static kernels::CudaBackendImpl backend("cuda", DeviceKind::Cuda, 0);
  return backend;
}

Backend& cudaBackend() { return instance(); }

BackendInfo cudaBackendInfo() {
  static const kernels::DeviceProbe probe = instance().probe();
  if (!probe.available) return BackendInfo{"cuda", false, probe.reason};
  return BackendInfo{"cuda", true, probe.name + ", sm_" + std::to_string(probe.computeMajor) + std::to_string(probe.computeMinor) + ", " +
                                       std::to_string(probe.numSms) + " SMs, " + std::to_string(probe.totalMemory >> 20) + " MiB"};
}

CudaInfo cudaInfo() {
  CudaInfo info;
  info.targets = MLA_CUDA_TARGETS;
  kernels::rt::cudaRuntimeGetVersion(&info.runtimeVersion);
  kernels::rt::cudaDriverGetVersion(&info.driverVersion);
  int count = 0;
  if (kernels::rt::cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
  for (int d = 0; d < count; ++d) {
    const kernels::DeviceProbe p = kernels::probeDevice(d);
    info.devices.push_back(CudaDeviceInfo{d, p.name, p.computeMajor, p.computeMinor, p.numSms, p.totalMemory, p.available, p.reason});
  }
  const kernels::DeviceProbe first = kernels::probeDevice(0);
  if (!first.available) info.reason = first.reason;
  return info;
}

}  // namespace mla
