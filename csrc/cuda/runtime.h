// What DeviceBackend<Runtime> (device_backend.h) needs of a runtime: a struct of static members,
//  - kName, kKind: the backend's name ("cuda", "cuda-sim") and device kind;
//  - the CUDA runtime calls the backend makes, under their CUDA names (cudaMalloc, cudaMemcpyAsync,
//    cudaStreamBeginCapture, ...), deviceName(device, props), and OpScope, which marks the body of an operation;
//  - the kernels of mla_kernels.h (decodeConfigInfo, launchDecode, launchPrefill, ...), through MLA_RUNTIME_KERNELS below;
//  - runOp(op, outputs, launchAll): runs an operation's launches, launchAll(record) calling record() after each
//    launch: once on a GPU; under every thread order, comparing the outputs' bits, under emulation;
//  - planOptions(): the decode plan's defaults (the emulator's test settings under cuda-sim).
// GpuRuntime (gpu_runtime.h) is the real runtime with the kernels nvcc compiled; SimRuntime (sim_runtime.h) the
// emulated runtime with the kernels compiled as host C++.
#pragma once
#include <cstddef>

namespace mla::cuda {

// The kernels of mla_kernels.h as static members of a runtime, taken from namespace `ns` (mla::kernels on a GPU,
// mla::kernels_sim under emulation): the one list of what a runtime forwards to its kernels.
#define MLA_RUNTIME_KERNELS(ns)                                     \
  static constexpr auto decodeConfigInfo = &ns::decodeConfigInfo;   \
  static constexpr auto decodeSmemBytes = &ns::decodeSmemBytes;     \
  static constexpr auto prepareDecode = &ns::prepareDecode;         \
  static constexpr auto launchDecode = &ns::launchDecode;           \
  static constexpr auto launchCombine = &ns::launchCombine;         \
  static constexpr auto launchAppend = &ns::launchAppend;           \
  static constexpr auto launchHeadGemm = &ns::launchHeadGemm;       \
  static constexpr auto prefillConfigInfo = &ns::prefillConfigInfo; \
  static constexpr auto prefillSmemBytes = &ns::prefillSmemBytes;   \
  static constexpr auto preparePrefill = &ns::preparePrefill;       \
  static constexpr auto launchPrefill = &ns::launchPrefill;         \
  static constexpr auto prefillHasPadding = &ns::prefillHasPadding; \
  static constexpr auto launchPrefillPad = &ns::launchPrefillPad;   \
  static constexpr auto launchGather = &ns::launchGather;           \
  static constexpr auto launchGemmNt = &ns::launchGemmNt;           \
  static constexpr auto launchMerge = &ns::launchMerge;             \
  static constexpr auto launchSparseDecode = &ns::launchSparseDecode; \
  static constexpr auto launchIndexerAppend = &ns::launchIndexerAppend; \
  static constexpr auto launchIndexerScores = &ns::launchIndexerScores; \
  static constexpr auto launchIndexerTopk = &ns::launchIndexerTopk;

// An output of an operation: what runOp compares between thread orders under emulation.
struct OpOutput {
  void* data;
  size_t bytes;
};

}  // namespace mla::cuda
