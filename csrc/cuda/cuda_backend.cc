// The cuda backend: DeviceBackend over the real CUDA runtime (linked statically) and the kernels nvcc compiled for
// every architecture of csrc/kernels/architectures.txt; its line in backends() and its hook cudaInfo().
#define MLA_KERNELS_DEVICE_API 1
#include <algorithm>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "device_backend.h"
#include "gpu_runtime.h"

namespace mla {
namespace cuda {
namespace {

using Rt = GpuRuntime;

// The usable GPUs, probed once: a device whose probe fails (too old, not visible) serves nothing.
BackendInfo probedInfo() {
  static const BackendInfo info = [] {
    BackendInfo b{"cuda", false, "", {}};
    int count = 0;
    if (Rt::cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
    std::string unusable;
    for (int d = 0; d < std::max(count, 1); ++d) {
      const DeviceProbe p = probeDevice<Rt>(d);
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

// cudaInfo() -> { targets, runtimeVersion, driverVersion, devices: [...], reason } (NativeCudaInfo in lib/native.ts).
Value cudaInfo() {
  Value::List targets;
  const std::string list = MLA_CUDA_TARGETS;  // the architectures compiled for, e.g. "80,86,89,90,100,120"
  for (size_t start = 0; start < list.size();) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    if (end > start) targets.push_back("sm_" + list.substr(start, end - start));
    start = end + 1;
  }
  int runtimeVersion = 0, driverVersion = 0, count = 0;
  Rt::cudaRuntimeGetVersion(&runtimeVersion);
  Rt::cudaDriverGetVersion(&driverVersion);
  if (Rt::cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
  Value::List devices;
  for (int d = 0; d < count; ++d) {
    const DeviceProbe p = probeDevice<Rt>(d);
    Value::Record x{{"index", d},
                    {"name", p.name},
                    {"computeCapability", std::to_string(p.computeMajor) + "." + std::to_string(p.computeMinor)},
                    {"totalMemory", p.totalMemory},
                    {"usable", p.available}};
    if (!p.reason.empty()) x.emplace_back("reason", p.reason);
    devices.push_back(std::move(x));
  }
  Value::Record info{{"targets", std::move(targets)}, {"runtimeVersion", runtimeVersion}, {"driverVersion", driverVersion}, {"devices", std::move(devices)}};
  const DeviceProbe first = probeDevice<Rt>(0);
  if (!first.available) info.emplace_back("reason", first.reason);
  return info;
}

class CudaProvider final : public BackendProvider {
 public:
  DeviceKind kind() const override { return DeviceKind::Cuda; }
  BackendInfo info() override { return probedInfo(); }
  Backend& backend(int index, const std::string& argName) override {
    requireDevice(probedInfo(), Device{DeviceKind::Cuda, index}, argName);
    return backendOfDevice<Rt>(index);
  }
  std::vector<BackendHook> hooks() override {
    return {{"cudaInfo", [](const Value&) { return cudaInfo(); }}};
  }
};

}  // namespace
}  // namespace cuda

BackendProvider& cudaProvider() {
  static cuda::CudaProvider& provider = neverDestroyed<cuda::CudaProvider>();
  return provider;
}

}  // namespace mla
