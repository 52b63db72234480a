// cuda-sim: the CUDA backend's host code (cuda_backend_impl.inl) and kernels (csrc/kernels/) run under the SIMT
// emulator of test/sim/, over an emulated CUDA runtime (runtime_api.h) whose device memory is host memory.
// For tests, every operation runs under each thread order (forward, reverse, seeded random) and must write the
// same bits; the global-memory traffic of the last operation is recorded.
#include "sim_backend.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "../core/errors.h"
#include "cuda_sim_api.h"
#include "plan.h"
#include "runtime_api.h"

namespace mla::kernels_sim {
namespace {

std::mutex gMu;
cuda::SimSettings gSettings;
cuda::SimOpRecord gLast;
struct SimAllocation {
  int device;
  size_t bytes;
};
std::unordered_map<void*, SimAllocation> gAllocations;
std::unordered_map<int, size_t> gAllocated;  // bytes per device
thread_local const char* tOp = nullptr;      // the operation this thread is running (rt::OpScope)
thread_local int tHostSyncs = 0;             // host synchronisations it made so far
thread_local std::function<void()>* tLaunchObserver = nullptr;  // runOp's record of each launch, while it runs

struct OpOutput {
  void* data;
  size_t bytes;
};

// Runs `launchAll` under each thread order, restoring the outputs in between, and demands identical bits.
template <class Fn>
void runOp(const char* op, std::vector<OpOutput> outputs, Fn&& launchAll) {
  const cuda::SimSettings settings = cuda::simSettings();
  std::vector<std::vector<uint8_t>> initial, first;
  for (const OpOutput& b : outputs) initial.emplace_back(static_cast<uint8_t*>(b.data), static_cast<uint8_t*>(b.data) + b.bytes);
  cuda::SimOpRecord record;
  record.op = op;
  const int orders = settings.checkOrders ? 3 : 1;
  for (int o = 0; o < orders; ++o) {
    const cudasim::Order order = cudasim::kAllOrders[o];
    cudasim::ScopedOrder scoped(order, settings.seed);
    cudasim::set_profile_block(settings.profileBlock);
    if (o > 0)
      for (size_t i = 0; i < outputs.size(); ++i)
        if (outputs[i].bytes) std::memcpy(outputs[i].data, initial[i].data(), outputs[i].bytes);
    std::vector<cuda::SimLaunch> launches;
    try {
      std::function<void()> recordLaunch = [&] {
        const cudasim::LaunchRecord& r = cudasim::last_launch();
        launches.push_back(cuda::SimLaunch{r.name, r.bytes_read, r.bytes_written, r.fiber_switches, r.grid.x, r.grid.y, r.block.x, r.seconds,
                                           r.dynamic_smem, r.dependent_launch, r.counters, r.profile});
      };
      tLaunchObserver = &recordLaunch;  // the launches of a replayed graph report themselves
      struct Reset {
        ~Reset() { tLaunchObserver = nullptr; }
      } reset;
      launchAll(recordLaunch);
    } catch (const cudasim::SimError& e) {
      throw Error(ErrorCode::Internal, std::string("cuda-sim: ") + op + " under thread order " + cudasim::order_name(order) + ": " + e.what());
    }
    if (o == 0) {
      record.launches = launches;
      for (const cuda::SimLaunch& l : launches) {
        record.bytesRead += l.bytesRead;
        record.bytesWritten += l.bytesWritten;
      }
      for (const OpOutput& b : outputs) first.emplace_back(static_cast<uint8_t*>(b.data), static_cast<uint8_t*>(b.data) + b.bytes);
      continue;
    }
    for (size_t i = 0; i < outputs.size(); ++i)
      if (outputs[i].bytes && std::memcmp(outputs[i].data, first[i].data(), outputs[i].bytes) != 0) {
        std::string kernels;
        for (const cuda::SimLaunch& l : launches) kernels += (kernels.empty() ? "" : ", ") + l.kernel;
        throw Error(ErrorCode::Internal, std::string("cuda-sim: ") + op + " (kernels " + kernels + ") wrote different bits under thread order " +
                                             cudasim::order_name(order) + " than forward: a race between threads (missing barrier?)");
      }
  }
  record.ordersChecked = orders;
  record.hostSyncs = tHostSyncs;  // so far; rt::OpScope adds those after the launches
  std::lock_guard<std::mutex> lock(gMu);
  gLast = std::move(record);
}

DecodePlanOptions planOptions() {
  const cuda::SimSettings s = cuda::simSettings();
  DecodePlanOptions o;
  o.splitRows = s.splitRows;
  o.batchInvariant = s.batchInvariant;
  return o;
}

}  // namespace

namespace rt {
int simDeviceCount() { return cuda::simSettings().numDevices; }

int& simCurrentDevice() {
  thread_local int device = 0;
  return device;
}

void countHostSync() {
  if (tOp) ++tHostSyncs;
}

OpScope::OpScope(const char* name) : op(name) {
  tOp = name;
  tHostSyncs = 0;
}

OpScope::~OpScope() {
  tOp = nullptr;
  std::lock_guard<std::mutex> lock(gMu);
  if (gLast.op == op) gLast.hostSyncs = tHostSyncs;
}

SimDeviceSpec simDeviceSpec() {
  const cuda::SimSettings s = cuda::simSettings();
  // The shared memory of an sm_90-class device, or of the ~100 KB sm_86 / sm_89 / sm_120 class.
  // The shared memory of sm_90 / sm_100 (227 KB), sm_80 (163 KB) or the ~99 KB class (sm_86, sm_89, sm_120), and a
  // compute capability that has it.
  const int smem = s.smemOptin > 0 ? s.smemOptin : s.smallConfig ? 101376 : 232448;
  int major = smem > 200000 ? 9 : 8, minor = smem < 160000 ? 6 : 0;
  if (s.computeCapability > 0) {
    major = s.computeCapability / 10;
    minor = s.computeCapability % 10;
  }
  return SimDeviceSpec{s.numSms, smem, s.deviceMemoryBytes, major, minor};
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  const size_t rounded = (bytes + 255) / 256 * 256;
  const int device = simCurrentDevice();
  std::lock_guard<std::mutex> lock(gMu);
  if (gAllocated[device] + rounded > gSettings.deviceMemoryBytes) return cudaErrorMemoryAllocation;
  *p = std::aligned_alloc(256, rounded == 0 ? 256 : rounded);
  if (!*p) return cudaErrorMemoryAllocation;
  gAllocations[*p] = SimAllocation{device, rounded};
  gAllocated[device] += rounded;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  std::lock_guard<std::mutex> lock(gMu);
  auto it = gAllocations.find(p);
  if (it == gAllocations.end()) return cudaErrorInvalidValue;
  gAllocated[it->second.device] -= it->second.bytes;
  gAllocations.erase(it);
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t) {
  for (const std::function<void()>& launch : reinterpret_cast<const SimGraph*>(exec)->launches) {
    launch();
    if (tLaunchObserver) (*tLaunchObserver)();
  }
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* freeBytes, size_t* total) {
  std::lock_guard<std::mutex> lock(gMu);
  *total = gSettings.deviceMemoryBytes;
  *freeBytes = *total - std::min(*total, gAllocated[simCurrentDevice()]);
  return cudaSuccess;
}
}  // namespace rt

}  // namespace mla::kernels_sim

#include "cuda_backend_impl.inl"

namespace mla {
namespace cuda {
void setSimSettings(const SimSettings& s) {
  std::lock_guard<std::mutex> lock(kernels_sim::gMu);
  kernels_sim::gSettings = s;
}
SimSettings simSettings() {
  std::lock_guard<std::mutex> lock(kernels_sim::gMu);
  return kernels_sim::gSettings;
}
SimOpRecord lastSimOp() {
  std::lock_guard<std::mutex> lock(kernels_sim::gMu);
  return kernels_sim::gLast;
}
}  // namespace cuda

int cudaSimDeviceCount() { return kernels_sim::rt::simDeviceCount(); }

Backend& cudaSimBackend(int device) {
  return kernels_sim::backendOfDevice("cuda-sim", DeviceKind::CudaSim, device);
}
}  // namespace mla
