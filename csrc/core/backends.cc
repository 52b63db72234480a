#include "backend.h"

#include "errors.h"
#include "../cpu/cpu_info.h"

namespace mla {

std::vector<BackendInfo> listBackends() {
  std::vector<BackendInfo> list;
  const cpu::CpuStatus cpuNow = cpu::cpuStatus();
  list.push_back({"cpu", true, cpuNow.simd + " kernels on " + std::to_string(cpuNow.threads) + " threads, fp32 accumulation (" + cpuNow.reason + ")"});
#ifdef MLA_WITH_CUDA_SIM
  list.push_back({"cuda-sim", true, "the CUDA kernel source run under the SIMT emulator (tests only)"});
#else
  list.push_back({"cuda-sim", false, "not built: the emulator is part of the cmake-js build with MLA_CUDA_SIM=ON (npm test), not of the node-gyp fallback"});
#endif
#ifdef MLA_WITH_CUDA
  list.push_back(cudaBackendInfo());
#else
  list.push_back({"cuda", false, "not built: this addon was compiled without nvcc (the node-gyp fallback, or MLA_CUDA=OFF)"});
#endif
  return list;
}

Backend& getBackend(const std::string& name) {
  if (name == "cpu") return cpuBackend();
#ifdef MLA_WITH_CUDA_SIM
  if (name == "cuda-sim") return cudaSimBackend();
#endif
#ifdef MLA_WITH_CUDA
  if (name == "cuda" && cudaBackendInfo().available) return cudaBackend();
#endif
  for (const BackendInfo& info : listBackends())
    if (info.name == name) throw Error(ErrorCode::Unsupported, "backend '" + name + "' is unavailable: " + info.reason);
  throw Error(ErrorCode::Argument, "backend must be 'cpu', 'cuda-sim' or 'cuda', got '" + name + "'");
}

}  // namespace mla
