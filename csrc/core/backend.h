// What every backend implements, and which backends this build has. Operations arrive validated.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "ops.h"

namespace mla {

// Records what a plan was made for (every backend's plan starts with this).
inline void fillPlanHandle(DecodePlanHandle& plan, const std::string& backend, int64_t batch, int64_t queryLen, int64_t numHeads,
                           const int32_t* seqLens, bool batchInvariant) {
  plan.backend = backend;
  plan.batch = batch;
  plan.queryLen = queryLen;
  plan.numHeads = numHeads;
  plan.seqLens.assign(seqLens, seqLens + batch);
  plan.batchInvariant = batchInvariant;
}

// Device memory of a backend whose device is not the host (cuda, cuda-sim).
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  // Throws mla::Error E_OOM (with the CUDA error name) when the device has no room.
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* ptr, size_t bytes) = 0;
  virtual size_t bytesInUse() const = 0;
  virtual size_t peakBytes() const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Where the backend's kernels read and write memory (cuda-sim runs CUDA kernels on host memory).
  virtual Device device() const = 0;

  // Throw mla::Error (E_UNSUPPORTED) for valid input this backend cannot run; called before anything is queued.
  virtual void checkSupported(const AppendLatentCacheParams&) const {}
  virtual void checkSupported(const MlaDecodeParams&) const {}
  virtual void checkSupported(const AbsorbQueryParams&) const {}
  virtual void checkSupported(const UnabsorbOutputParams&) const {}
  virtual void checkSupported(const CopyParams&) const {}

  // Plans the split of one decode step. The default plan only records what it was made for: the CPU backend
  // splits per call.
  virtual std::shared_ptr<DecodePlanHandle> planDecode(int64_t batch, int64_t queryLen, int64_t numHeads, const int32_t* seqLens,
                                                       bool batchInvariant) const {
    auto plan = std::make_shared<DecodePlanHandle>();
    fillPlanHandle(*plan, name(), batch, queryLen, numHeads, seqLens, batchInvariant);
    return plan;
  }

  virtual void appendLatentCache(const AppendLatentCacheParams& p) = 0;
  // Host <-> device and device <-> device copies, in stream order. The CPU copies host to host.
  virtual void copy(const CopyParams& p) = 0;
  // The backend's device memory, or null when it works on host memory (cpu).
  virtual DeviceMemory* memory() { return nullptr; }
  virtual void mlaDecode(const MlaDecodeParams& p) = 0;
  virtual void absorbQuery(const AbsorbQueryParams& p) = 0;
  virtual void unabsorbOutput(const UnabsorbOutputParams& p) = 0;
};

struct BackendInfo {
  std::string name;      // "cpu", "cuda-sim", "cuda"
  bool available = false;
  std::string reason;    // why it is unavailable, or what it runs on
};

std::vector<BackendInfo> listBackends();
// The backend by name, or throws mla::Error (E_UNSUPPORTED) saying why it is unavailable.
Backend& getBackend(const std::string& name);

// Defined by each backend's translation unit.
Backend& cpuBackend();
Backend& cudaSimBackend();  // only in builds with MLA_WITH_CUDA_SIM
Backend& cudaBackend();     // only in builds with MLA_WITH_CUDA
BackendInfo cudaBackendInfo();  // whether a usable GPU was found, or why not (MLA_WITH_CUDA builds)

// What the CUDA runtime sees (MLA_WITH_CUDA builds): for `npx mla-kernels info`.
struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int computeMajor = 0, computeMinor = 0, numSms = 0;
  size_t totalMemory = 0;
  bool usable = false;
  std::string reason;
};
struct CudaInfo {
  std::string targets;  // the architectures compiled for, e.g. "80,86,89,90,100,120"
  int runtimeVersion = 0, driverVersion = 0;
  std::vector<CudaDeviceInfo> devices;
  std::string reason;  // why no device is usable, when none is
};
CudaInfo cudaInfo();

}  // namespace mla
