// The cuda-sim backend: the CUDA kernels of csrc/kernels/ run under the SIMT emulator of test/sim/ on host memory.
// For tests: each operation runs under every thread order (forward, reverse, seeded random) and must give the
// same bits; the global-memory traffic of the last operation is recorded.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_sim_api.h"

namespace mla::cuda {

struct SimSettings {
  bool checkOrders = true;
  uint64_t seed = 1;
  bool smallConfig = false;  // decode tiles of the ~100 KB shared-memory GPUs (sm_86, sm_89, sm_120)
  int smemOptin = 0;         // > 0: the shared memory a block may opt into (overrides smallConfig), e.g. sm_80's
  long long profileBlock = -1;  // >= 0: that block of every launch records its barrier intervals (SimLaunch::profile)
  int computeCapability = 0;    // > 0: the device's, e.g. 120 (else one that has the shared memory above)
  int numSms = 8;            // SM count the decode plan assumes
  int splitRows = 0;         // > 0: force split-KV chunks of this many rows
  bool batchInvariant = false;
  size_t deviceMemoryBytes = size_t{4} << 30;  // per device: what the emulated cudaMalloc hands out before cudaErrorMemoryAllocation
  int numDevices = 2;  // cuda-sim:0 ... cuda-sim:(numDevices - 1), each with the settings above
};

struct SimLaunch {
  std::string kernel;
  uint64_t bytesRead = 0, bytesWritten = 0, fiberSwitches = 0;
  unsigned gridX = 0, gridY = 0, blockX = 0;
  double seconds = 0;
  size_t dynamicSmem = 0;
  bool dependentLaunch = false;  // programmatic dependent launch
  cudasim::Traffic counters;                   // global and on-chip counts of the whole launch
  std::vector<cudasim::PhaseCounts> profile;   // SimSettings::profileBlock's barrier intervals
};

struct SimOpRecord {
  std::string op;
  std::vector<SimLaunch> launches;  // of the forward-order run
  uint64_t bytesRead = 0, bytesWritten = 0;
  int ordersChecked = 0;
  int hostSyncs = 0;  // cudaStreamSynchronize / cudaEventSynchronize calls the operation made (0: it only enqueued)
};

void setSimSettings(const SimSettings& s);
SimSettings simSettings();
SimOpRecord lastSimOp();

}  // namespace mla::cuda
