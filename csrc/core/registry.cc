// The backends of the build (buildBackends()), found by device.
#include "backend.h"

#include "errors.h"

namespace mla {

namespace {
std::string joined(const std::vector<std::string>& xs) {
  std::string s;
  for (const std::string& x : xs) s += (s.empty() ? "" : ", ") + x;
  return s;
}
}  // namespace

std::vector<BackendInfo> listBackends() {
  std::vector<BackendInfo> list;
  for (BackendProvider* p : buildBackends()) list.push_back(p->info());
  return list;
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
  if (s.find(':') != std::string::npos)
    throw Error(ErrorCode::Device, argName + " has an unknown device '" + s + "' (expected 'cuda:N' or 'cuda-sim:N')");
  throw Error(ErrorCode::Argument, argName + " must be 'cpu', 'cuda-sim' or 'cuda', or a device 'cuda:N' or 'cuda-sim:N', got '" + s + "'");
}

void requireDevice(const BackendInfo& info, const Device& device, const std::string& argName) {
  if (!info.available) throw Error(ErrorCode::Unsupported, "backend '" + info.name + "' is unavailable: " + info.reason);
  for (const std::string& d : info.devices)
    if (d == device.str()) return;
  throw Error(ErrorCode::Device, argName + " is " + device.str() + ", but " + info.name + " has " + std::to_string(info.devices.size()) + " device" +
                                     (info.devices.size() == 1 ? "" : "s") + " here (" + joined(info.devices) + ")");
}

Backend& getBackend(const Device& device, const std::string& argName) {
  for (BackendProvider* p : buildBackends())
    if (p->kind() == device.kind) return p->backend(device.index, argName);
  throw Error(ErrorCode::Internal, "no backend for " + device.str());
}

Backend& AbsentBackend::backend(int index, const std::string& argName) {
  requireDevice(info(), Device{kind_, index}, argName);
  throw Error(ErrorCode::Internal, "no backend for " + Device{kind_, index}.str());
}

std::vector<BackendHook> backendHooks() {
  std::vector<BackendHook> hooks;
  for (BackendProvider* p : buildBackends())
    for (BackendHook& h : p->hooks()) hooks.push_back(std::move(h));
  return hooks;
}

}  // namespace mla
