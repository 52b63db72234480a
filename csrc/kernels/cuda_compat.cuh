// Included first by every kernel source in csrc/kernels/. The same kernel source compiles
//  - under nvcc (__CUDACC__): against the real CUDA headers;
//  - as host C++ (MLA_CUDA_SIM defined by sim/sim.cmake): against the cuda-sim emulation layer, which runs
//    each thread block's threads as fibers on the CPU (see sim/README.md).
//
// Rules for kernel code (so both builds mean the same thing):
//  - tensor-core, ldmatrix, cp.async and global-memory accesses go through csrc/kernels/warp_ops.cuh;
//  - launches go through mla_launch() of csrc/kernels/launch.cuh;
//  - static shared memory: `__shared__ T x[N];` as usual; dynamic shared memory: `MLA_DYNAMIC_SHARED(T, name);`
//    inside the kernel (not `extern __shared__ T name[];`, which cannot be emulated by name in host C++);
//  - no __CUDA_ARCH__-only code paths without an MLA_CUDA_SIM equivalent.
#pragma once

#if defined(__CUDACC__)

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cstdint>

// Dynamic shared memory (size given at launch), 16-byte aligned.
#define MLA_DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]

#elif defined(MLA_CUDA_SIM)

#include "cuda_sim.h"  // sim/cuda_sim.h, on the include path of targets linking mla_sim

#else
#error "csrc/kernels: compile with nvcc, or as host C++ with MLA_CUDA_SIM defined (sim/sim.cmake)"
#endif

#ifndef MLA_HOST_DEVICE
#define MLA_HOST_DEVICE __host__ __device__
#endif
#ifndef MLA_DEVICE_INLINE
#define MLA_DEVICE_INLINE __device__ __forceinline__
#endif
