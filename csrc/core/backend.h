// What every backend implements, and how the addon reaches the backends of a build. Operations arrive validated.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "ops.h"
#include "value.h"

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

// Records what a prefill plan was made for.
inline void fillPrefillPlanHandle(PrefillPlanHandle& plan, const std::string& backend, int64_t batch, int64_t numHeads, bool causal,
                                  const int32_t* cuSeqLensQ, const int32_t* cuSeqLensKv) {
  plan.backend = backend;
  plan.batch = batch;
  plan.numHeads = numHeads;
  plan.causal = causal;
  plan.cuSeqLensQ.assign(cuSeqLensQ, cuSeqLensQ + batch + 1);
  plan.cuSeqLensKv.assign(cuSeqLensKv, cuSeqLensKv + batch + 1);
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

// Completion of the device work an operation queued (a recorded CUDA event).
class Fence {
 public:
  virtual ~Fence() = default;
  // Blocks the calling thread until the work is done; throws mla::Error (E_CUDA) when it failed.
  virtual void wait() const = 0;
};

// One operation of a captured graph (Stream.capture), validated again before each replay.
using GraphOp = std::variant<AppendLatentCacheParams, MlaDecodeParams, AbsorbQueryParams, UnabsorbOutputParams, MlaPrefillParams,
                             GatherLatentCacheParams, UpProjectKvParams, MergeAttentionStatesParams, MlaSparseDecodeParams,
                             MlaSparsePrefillParams, AppendIndexerCacheParams, LightningIndexerParams>;
inline const char* graphOpName(const GraphOp& op) {
  static const char* const names[] = {"appendLatentCache", "mlaDecode", "absorbQuery", "unabsorbOutput",
                                      "mlaPrefill", "gatherLatentCache", "upProjectKv", "mergeAttentionStates",
                                      "mlaSparseDecode", "mlaSparsePrefill", "appendIndexerCache", "lightningIndexer"};
  return names[op.index()];
}

// What a backend keeps of a captured graph between replays (the CUDA backend: its instantiated CUDA graph).
class GraphState {
 public:
  virtual ~GraphState() = default;
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
  virtual void checkSupported(const MlaPrefillParams&) const {}
  virtual void checkSupported(const GatherLatentCacheParams&) const {}
  virtual void checkSupported(const UpProjectKvParams&) const {}
  virtual void checkSupported(const MergeAttentionStatesParams&) const {}
  virtual void checkSupported(const MlaSparseDecodeParams&) const {}
  virtual void checkSupported(const MlaSparsePrefillParams& p) const { checkSupported(sparsePrefillAsDecode(p)); }
  virtual void checkSupported(const AppendIndexerCacheParams&) const {}
  virtual void checkSupported(const LightningIndexerParams&) const {}

  // Plans the split of one decode step. The default plan only records what it was made for: the CPU backend
  // splits per call.
  virtual std::shared_ptr<DecodePlanHandle> planDecode(int64_t batch, int64_t queryLen, int64_t numHeads, const int32_t* seqLens,
                                                       bool batchInvariant) const {
    auto plan = std::make_shared<DecodePlanHandle>();
    fillPlanHandle(*plan, name(), batch, queryLen, numHeads, seqLens, batchInvariant);
    return plan;
  }

  // Plans the split of one prefill step (cuSeqLensQ / cuSeqLensKv: batch + 1 validated cumulative lengths). The
  // default plan only records what it was made for: the CPU backend splits per call.
  virtual std::shared_ptr<PrefillPlanHandle> planPrefill(int64_t batch, int64_t numHeads, bool causal, const int32_t* cuSeqLensQ,
                                                         const int32_t* cuSeqLensKv) const {
    auto plan = std::make_shared<PrefillPlanHandle>();
    fillPrefillPlanHandle(*plan, name(), batch, numHeads, causal, cuSeqLensQ, cuSeqLensKv);
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
  virtual void mlaPrefill(const MlaPrefillParams& p) = 0;
  virtual void gatherLatentCache(const GatherLatentCacheParams& p) = 0;
  virtual void upProjectKv(const UpProjectKvParams& p) = 0;
  virtual void mergeAttentionStates(const MergeAttentionStatesParams& p) = 0;
  virtual void mlaSparseDecode(const MlaSparseDecodeParams& p) = 0;
  // The sparse prefill is the sparse decode sparsePrefillAsDecode() describes.
  void mlaSparsePrefill(const MlaSparsePrefillParams& p) { mlaSparseDecode(sparsePrefillAsDecode(p)); }
  virtual void appendIndexerCache(const AppendIndexerCacheParams& p) = 0;
  virtual void lightningIndexer(const LightningIndexerParams& p) = 0;

  // Runs a captured graph's operations in order, as one operation of the stream. `state` is this graph's own (null
  // at the first replay). The default runs each operation as if called alone.
  virtual void runGraph(const std::vector<GraphOp>& ops, std::unique_ptr<GraphState>& state) {
    (void)state;
    for (const GraphOp& op : ops) std::visit([this](const auto& p) { run(p); }, op);
  }

  // Called by a stream's worker after each operation: marks the completion of what the worker has queued on the
  // device so far. Null when operations finish before they return (cpu).
  virtual std::shared_ptr<const Fence> recordFence() { return nullptr; }
  // Called by a stream's worker before an operation that depends on `fence` (from any stream): the worker's later
  // device work waits for it. The default waits on the host.
  virtual void waitFence(const Fence& fence) { fence.wait(); }

 private:
  void run(const AppendLatentCacheParams& p) { appendLatentCache(p); }
  void run(const MlaDecodeParams& p) { mlaDecode(p); }
  void run(const AbsorbQueryParams& p) { absorbQuery(p); }
  void run(const UnabsorbOutputParams& p) { unabsorbOutput(p); }
  void run(const MlaPrefillParams& p) { mlaPrefill(p); }
  void run(const GatherLatentCacheParams& p) { gatherLatentCache(p); }
  void run(const UpProjectKvParams& p) { upProjectKv(p); }
  void run(const MergeAttentionStatesParams& p) { mergeAttentionStates(p); }
  void run(const MlaSparseDecodeParams& p) { mlaSparseDecode(p); }
  void run(const MlaSparsePrefillParams& p) { mlaSparsePrefill(p); }
  void run(const AppendIndexerCacheParams& p) { appendIndexerCache(p); }
  void run(const LightningIndexerParams& p) { lightningIndexer(p); }
};

struct BackendInfo {
  std::string name;      // "cpu", "cuda-sim", "cuda"
  bool available = false;
  std::string reason;    // why it is unavailable, or what it runs on
  std::vector<std::string> devices;  // the devices it serves here: "cpu", or "cuda:0", "cuda:1", ...
};

// A function a backend exports through the addon under `name` (cpuInfo, simConfigure, ...): its information for
// `npx mla-kernels info`, test hooks and the benchmark's measurements. Plain values in and out; throws mla::Error.
struct BackendHook {
  const char* name;
  std::function<Value(const Value& argument)> call;
};

// One kind of backend (cpu, cuda-sim, cuda) as a build has it: what it is here, the backend of each of its devices,
// and its hooks. The build's list is buildBackends() (csrc/build_backends.cc); core knows them only through this.
class BackendProvider {
 public:
  virtual ~BackendProvider() = default;
  virtual DeviceKind kind() const = 0;
  // Whether it can run here, why not or on what, and the devices it serves.
  virtual BackendInfo info() = 0;
  // The backend of device `index` of this kind; throws mla::Error (E_UNSUPPORTED when unavailable, E_DEVICE naming
  // `argName` when there is no such device; requireDevice() below does both).
  virtual Backend& backend(int index, const std::string& argName) = 0;
  virtual std::vector<BackendHook> hooks() { return {}; }
};

// A backend this build does not have: unavailable, saying why ("not built: " + reason).
class AbsentBackend final : public BackendProvider {
 public:
  AbsentBackend(DeviceKind kind, std::string reason) : kind_(kind), reason_(std::move(reason)) {}
  DeviceKind kind() const override { return kind_; }
  BackendInfo info() override { return {deviceKindName(kind_), false, "not built: " + reason_, {}}; }
  Backend& backend(int index, const std::string& argName) override;

 private:
  DeviceKind kind_;
  std::string reason_;
};

// The backends of this build, in the order backends() lists them. Defined by csrc/build_backends.cc, the one list.
const std::vector<BackendProvider*>& buildBackends();

std::vector<BackendInfo> listBackends();
// "cpu", "cuda:N" or "cuda-sim:N"; a backend name ("cuda", "cuda-sim") means its device 0. Throws mla::Error naming
// `argName`: E_DEVICE for a malformed device, E_ARGUMENT for an unknown name.
Device parseDevice(const std::string& deviceOrBackend, const std::string& argName);
// The backend serving `device`. Throws mla::Error: E_UNSUPPORTED saying why the backend is unavailable, E_DEVICE
// naming `argName` and how many devices there are when the index is beyond them.
Backend& getBackend(const Device& device, const std::string& argName);
// The checks of getBackend against a provider's info(), for BackendProvider::backend.
void requireDevice(const BackendInfo& info, const Device& device, const std::string& argName);
// Every hook of every backend of the build.
std::vector<BackendHook> backendHooks();

}  // namespace mla
