// The CUDA backend on a GPU: cuda_backend_impl.inl over the real CUDA runtime (linked statically) and the kernels
// compiled by nvcc for sm_80 ... sm_120.
#define MLA_KERNELS_DEVICE_API 1
#include <algorithm>
#include <string>
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

// The usable GPUs, probed once: a device whose probe fails (too old, not visible) serves nothing.
BackendInfo cudaBackendInfo() {
  static const BackendInfo info = [] {
    BackendInfo b{"cuda", false, "", {}};
    int count = 0;
    if (kernels::rt::cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
    std::string unusable;
    for (int d = 0; d < std::max(count, 1); ++d) {
      const kernels::DeviceProbe p = kernels::probeDevice(d);
      const std::string device = Device{DeviceKind::Cuda, d}.str();
      if (!p.available) {
        unusable += (unusable.empty() ? "" : "; ") + (count > 1 ? device + ": " : std::string()) + p.reason;
        continue;
      }
      b.devices.push_back(device);
      b.reason += (b.reason.empty() ? "" : "; ") + device + " " + p.name + ", sm_" + std::to_string(p.computeMajor) + std::to_string(p.computeMinor) + ", " +
                  std::to_string(p.numSms) + " SMs, " + std::to_string(p.totalMemory >> 20) + " MiB";
    }
    b.available = !b.devices.empty();
    if (!b.available) b.reason = unusable;
    return b;
  }();
  return info;
}

Backend& cudaBackend(int device) { return kernels::backendOfDevice("cuda", DeviceKind::Cuda, device); }

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
