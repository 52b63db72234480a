// One way to launch a kernel: `kernel<<<grid, block, smem, stream>>>(args...)` under nvcc, the cuda-sim emulator
// under MLA_CUDA_SIM (where the stream is ignored and blocks run on the calling OS thread, synchronously).
//
//   cudaError_t e = mla_launch(my_kernel<64>, "my_kernel<64>", grid, block, smem_bytes, stream, a, b, n);
//
// Returns the launch error (cudaGetLastError() after the launch) under nvcc; under emulation it returns
// cudaSuccess or throws cudasim::SimError (deadlock, misuse of a wrapper, bad configuration …) naming the kernel.
// Kernel arguments are converted to the kernel's parameter types, as with <<<>>>.
//
// mla_launch_dependent(kernel, name, grid, block, smem, stream, dependent, args...): the same, and when `dependent`
// (sm_90+ only) with programmatic dependent launch: the kernel may start before the previous one on the stream has
// ended, and must call griddep_wait() (warp_ops.cuh) before reading its results. The emulator records the flag.
#pragma once

#include "cuda_compat.cuh"

#include <cstddef>
#include <utility>

#if defined(__CUDACC__)

// Optional hook, e.g. for a debug build that synchronizes after every launch: define before including this file
// a function-like macro MLA_LAUNCH_CHECK(name, err) evaluating to a cudaError_t.
#ifndef MLA_LAUNCH_CHECK
#define MLA_LAUNCH_CHECK(name, err) (err)
#endif

template <typename... Params, typename... Args>
inline cudaError_t mla_launch(void (*kernel)(Params...), const char* name, dim3 grid, dim3 block,
                              size_t dynamic_smem_bytes, cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "mla_launch: wrong number of kernel arguments");
  (void)name;
  kernel<<<grid, block, dynamic_smem_bytes, stream>>>(static_cast<Params>(std::forward<Args>(args))...);
  cudaError_t err = cudaGetLastError();
  return MLA_LAUNCH_CHECK(name, err);
}

template <typename... Params, typename... Args>
inline cudaError_t mla_launch_dependent(void (*kernel)(Params...), const char* name, dim3 grid, dim3 block,
                                        size_t dynamic_smem_bytes, cudaStream_t stream, bool dependent, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "mla_launch_dependent: wrong number of kernel arguments");
  if (!dependent) return mla_launch(kernel, name, grid, block, dynamic_smem_bytes, stream, std::forward<Args>(args)...);
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = dynamic_smem_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  cudaError_t err = cudaLaunchKernelEx(&config, kernel, static_cast<Params>(std::forward<Args>(args))...);
  if (err == cudaSuccess) err = cudaGetLastError();
  return MLA_LAUNCH_CHECK(name, err);
}

#else  // MLA_CUDA_SIM

template <typename... Params, typename... Args>
inline cudaError_t mla_launch(void (*kernel)(Params...), const char* name, dim3 grid, dim3 block,
                              size_t dynamic_smem_bytes, cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "mla_launch: wrong number of kernel arguments");
  (void)stream;
  // While the calling thread captures a CUDA graph, launches are recorded, not run (cudasim::capture_list).
  if (std::vector<std::function<void()>>* captured = ::cudasim::capture_list()) {
    const bool dependent = ::cudasim::ScopedDependentLaunch::active();
    captured->push_back([=] {
      ::cudasim::ScopedDependentLaunch flag(dependent);
      ::cudasim::launch(name, kernel, grid, block, dynamic_smem_bytes, args...);
    });
    return cudaSuccess;
  }
  ::cudasim::launch(name, kernel, grid, block, dynamic_smem_bytes, std::forward<Args>(args)...);
  return cudaSuccess;
}

template <typename... Params, typename... Args>
inline cudaError_t mla_launch_dependent(void (*kernel)(Params...), const char* name, dim3 grid, dim3 block,
                                        size_t dynamic_smem_bytes, cudaStream_t stream, bool dependent, Args&&... args) {
  ::cudasim::ScopedDependentLaunch flag(dependent);
  return mla_launch(kernel, name, grid, block, dynamic_smem_bytes, stream, std::forward<Args>(args)...);
}

#endif
