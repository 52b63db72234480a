// The backends of this build, in the order backends() lists them: the one place that says which backends a build
// has. Each build compiles it with its own definitions (binding.gyp: the CPU backend only; CMakeLists.txt: cuda-sim
// with MLA_WITH_CUDA_SIM, cuda with MLA_WITH_CUDA when nvcc is found).
#include "core/backend.h"

namespace mla {

BackendProvider& cpuProvider();      // cpu/cpu_provider.cc
BackendProvider& cudaSimProvider();  // cuda/sim_backend.cc
BackendProvider& cudaProvider();     // cuda/cuda_backend.cc

const std::vector<BackendProvider*>& buildBackends() {
  static const std::vector<BackendProvider*> list = [] {
#ifdef MLA_WITH_CUDA_SIM
    BackendProvider* sim = &cudaSimProvider();
#else
    static AbsentBackend absentSim(DeviceKind::CudaSim,
                                   "the emulator is part of the cmake-js build with MLA_CUDA_SIM=ON (npm test), not of the node-gyp fallback");
    BackendProvider* sim = &absentSim;
#endif
#ifdef MLA_WITH_CUDA
    BackendProvider* cuda = &cudaProvider();
#else
    // What to do comes with it: the linux-arm64 prebuild (Grace Hopper / Blackwell servers) is CPU-only by design.
    static AbsentBackend absentCuda(DeviceKind::Cuda,
                                    "this addon was compiled without nvcc (the CPU-only linux-arm64 prebuild, the node-gyp fallback, or "
                                    "MLA_CUDA=OFF); to use an NVIDIA GPU, build it from source with your CUDA toolkit (nvcc, cmake, a C++17 "
                                    "compiler): `npx cmake-js rebuild` in the package folder, node_modules/mla-kernels");
    BackendProvider* cuda = &absentCuda;
#endif
    return std::vector<BackendProvider*>{&cpuProvider(), sim, cuda};
  }();
  return list;
}

}  // namespace mla
