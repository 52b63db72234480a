#include "backend.h"

#include "errors.h"
#include "../cpu/cpu_info.h"

namespace mla {

namespace {
std::vector<std::string> simDeviceNames() {
  std::vector<std::string> names;
#ifdef MLA_WITH_CUDA_SIM
  for (int d = 0; d < cudaSimDeviceCount(); ++d) names.push_back(Device{DeviceKind::CudaSim, d}.str());
#endif
  return names;
}

std::string joined(const std::vector<std::string>& xs) {
  std::string s;
  for (const std::string& x : xs) s += (s.empty() ? "" : ", ") + x;
  return s;
}
}  // namespace

static BackendInfo cudaSimInfo() {
#ifdef MLA_WITH_CUDA_SIM
  return {"cuda-sim", true, "the CUDA kernel source run under the SIMT emulator (tests only)", simDeviceNames()};
#else
  return {"cuda-sim", false, "not built: the emulator is part of the cmake-js build with MLA_CUDA_SIM=ON (npm test), not of the node-gyp fallback", {}};
#endif
}

static BackendInfo cudaInfoLine() {
#ifdef MLA_WITH_CUDA
  return cudaBackendInfo();
#else
  return {"cuda", false, "not built: this addon was compiled without nvcc (the node-gyp fallback, or MLA_CUDA=OFF)", {}};
#endif
}

std::vector<BackendInfo> listBackends() {
  const cpu::CpuStatus cpuNow = cpu::cpuStatus();
  return {{"cpu", true, cpuNow.simd + " kernels on " + std::to_string(cpuNow.threads) + " threads, fp32 accumulation (" + cpuNow.reason + ")", {"cpu"}},
          cudaSimInfo(), cudaInfoLine()};
}

Device parseDevice(const std::string& s, const std::string& argName) {
  if (s == "cpu") return Device{};
  if (s == "cuda") return Device{DeviceKind::Cuda, 0};
  if (s == "cuda-sim") return Device{DeviceKind::CudaSim, 0};
  for (auto [prefix, kind] : {std::pair{std::string("cuda:"), DeviceKind::Cuda}, std::pair{std::string("cuda-sim:"), DeviceKind::CudaSim}}) {
    if (s.rfind(prefix, 0) != 0) continue;
    const size_t n = prefix.size();
    if (s.size() > n && s.size() < n + 4 && s.find_first_not_of("0123456789", n) == std::string::npos) return Device{kind, std::stoi(s.substr(n))};
    throw Error(ErrorCode::Device, argName + " has an unknown device '" + s + "' (expected " + prefix + "N)");
  }
  throw Error(ErrorCode::Argument, argName + " must be 'cpu', 'cuda-sim' or 'cuda', or a device 'cuda:N' or 'cuda-sim:N', got '" + s + "'");
}

Backend& getBackend(const Device& device, const std::string& argName) {
  if (device.kind == DeviceKind::Cpu) return cpuBackend();
  const BackendInfo info = device.kind == DeviceKind::Cuda ? cudaInfoLine() : cudaSimInfo();
  if (!info.available) throw Error(ErrorCode::Unsupported, "backend '" + info.name + "' is unavailable: " + info.reason);
  bool served = false;
  for (const std::string& d : info.devices) served = served || d == device.str();
  if (!served)
    throw Error(ErrorCode::Device, argName + " is " + device.str() + ", but " + info.name + " has " + std::to_string(info.devices.size()) +
                                       " device" + (info.devices.size() == 1 ? "" : "s") + " here (" + joined(info.devices) + ")");
#ifdef MLA_WITH_CUDA_SIM
  if (device.kind == DeviceKind::CudaSim) return cudaSimBackend(device.index);
#endif
#ifdef MLA_WITH_CUDA
  if (device.kind == DeviceKind::Cuda) return cudaBackend(device.index);
#endif
  throw Error(ErrorCode::Internal, "no backend for " + device.str());
}

}  // namespace mla
