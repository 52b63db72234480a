// The cuda-sim backend: DeviceBackend (device_backend.h) over the emulated runtime of sim_runtime.h and the CUDA
// kernels of csrc/kernels/ compiled for the SIMT emulator of sim/, on host memory. For tests: each operation runs
// under every thread order (forward, reverse, seeded random) and must write the same bits; the global-memory traffic
// of the last operation is recorded. Hooks: simConfigure(settings), simLastOp(), decodeKernelShapes(headDim),
// prefillKernelShapes(dims), decodePlan(shape), sparseDecodePlan(shape).
#include <algorithm>
#include <cstring>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "../core/backend.h"
#include "../core/errors.h"
#include "../core/threads.h"
#include "cuda_sim_api.h"
#include "device_backend.h"
#include "sim_runtime.h"

namespace mla::cuda {

// The emulator's settings and records (simConfigure, simLastOp), named here rather than in an anonymous namespace:
// SimRuntime::runOp, of external linkage, uses them.
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
  bool dependentLaunch = false;                // programmatic dependent launch
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

namespace {

std::mutex gMu;
SimSettings& gSettings = neverDestroyed<SimSettings>();
SimOpRecord& gLast = neverDestroyed<SimOpRecord>();
struct SimAllocation {
  int device;
  size_t bytes;
};
std::unordered_map<void*, SimAllocation>& gAllocations = neverDestroyed<std::unordered_map<void*, SimAllocation>>();
std::unordered_map<int, size_t>& gAllocated = neverDestroyed<std::unordered_map<int, size_t>>();  // bytes per device
thread_local const char* tOp = nullptr;      // the operation this thread is running (SimRuntime::OpScope)
thread_local int tHostSyncs = 0;             // host synchronisations it made so far
thread_local std::function<void()>* tLaunchObserver = nullptr;  // runOp's record of each launch, while it runs

SimSettings simSettings() {
  std::lock_guard<std::mutex> lock(gMu);
  return gSettings;
}

}  // namespace

// --- the emulated runtime (sim_runtime.h) --------------------------------------------------------------------------
template <class Fn>
void SimRuntime::runOp(const char* op, std::vector<OpOutput> outputs, Fn&& launchAll) {
  const SimSettings settings = simSettings();
  std::vector<std::vector<uint8_t>> initial, first;
  for (const OpOutput& b : outputs) initial.emplace_back(static_cast<uint8_t*>(b.data), static_cast<uint8_t*>(b.data) + b.bytes);
  SimOpRecord record;
  record.op = op;
  const int orders = settings.checkOrders ? 3 : 1;
  for (int o = 0; o < orders; ++o) {
    const cudasim::Order order = cudasim::kAllOrders[o];
    cudasim::ScopedOrder scoped(order, settings.seed);
    cudasim::set_profile_block(settings.profileBlock);
    if (o > 0)
      for (size_t i = 0; i < outputs.size(); ++i)
        if (outputs[i].bytes) std::memcpy(outputs[i].data, initial[i].data(), outputs[i].bytes);
    std::vector<SimLaunch> launches;
    try {
      std::function<void()> recordLaunch = [&] {
        const cudasim::LaunchRecord& r = cudasim::last_launch();
        launches.push_back(SimLaunch{r.name, r.bytes_read, r.bytes_written, r.fiber_switches, r.grid.x, r.grid.y, r.block.x, r.seconds,
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
      for (const SimLaunch& l : launches) {
        record.bytesRead += l.bytesRead;
        record.bytesWritten += l.bytesWritten;
      }
      for (const OpOutput& b : outputs) first.emplace_back(static_cast<uint8_t*>(b.data), static_cast<uint8_t*>(b.data) + b.bytes);
      continue;
    }
    for (size_t i = 0; i < outputs.size(); ++i)
      if (outputs[i].bytes && std::memcmp(outputs[i].data, first[i].data(), outputs[i].bytes) != 0) {
        std::string kernels;
        for (const SimLaunch& l : launches) kernels += (kernels.empty() ? "" : ", ") + l.kernel;
        throw Error(ErrorCode::Internal, std::string("cuda-sim: ") + op + " (kernels " + kernels + ") wrote different bits under thread order " +
                                             cudasim::order_name(order) + " than forward: a race between threads (missing barrier?)");
      }
  }
  record.ordersChecked = orders;
  record.hostSyncs = tHostSyncs;  // so far; OpScope adds those after the launches
  std::lock_guard<std::mutex> lock(gMu);
  gLast = std::move(record);
}

DecodePlanOptions SimRuntime::planOptions() {
  const SimSettings s = simSettings();
  DecodePlanOptions o;
  o.splitRows = s.splitRows;
  o.batchInvariant = s.batchInvariant;
  return o;
}

int SimRuntime::simDeviceCount() { return simSettings().numDevices; }

int& SimRuntime::simCurrentDevice() {
  thread_local int device = 0;
  return device;
}

void SimRuntime::countHostSync() {
  if (tOp) ++tHostSyncs;
}

SimRuntime::OpScope::OpScope(const char* name) : op(name) {
  tOp = name;
  tHostSyncs = 0;
}

SimRuntime::OpScope::~OpScope() {
  tOp = nullptr;
  std::lock_guard<std::mutex> lock(gMu);
  if (gLast.op == op) gLast.hostSyncs = tHostSyncs;
}

SimRuntime::SimDeviceSpec SimRuntime::simDeviceSpec() {
  const SimSettings s = simSettings();
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

cudaError_t SimRuntime::cudaMalloc(void** p, size_t bytes) {
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

cudaError_t SimRuntime::cudaFree(void* p) {
  if (!p) return cudaSuccess;
  std::lock_guard<std::mutex> lock(gMu);
  auto it = gAllocations.find(p);
  if (it == gAllocations.end()) return cudaErrorInvalidValue;
  gAllocated[it->second.device] -= it->second.bytes;
  gAllocations.erase(it);
  std::free(p);
  return cudaSuccess;
}

cudaError_t SimRuntime::cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t) {
  for (const std::function<void()>& launch : reinterpret_cast<const SimGraph*>(exec)->launches) {
    launch();
    if (tLaunchObserver) (*tLaunchObserver)();
  }
  return cudaSuccess;
}

cudaError_t SimRuntime::cudaMemGetInfo(size_t* freeBytes, size_t* total) {
  std::lock_guard<std::mutex> lock(gMu);
  *total = gSettings.deviceMemoryBytes;
  *freeBytes = *total - std::min(*total, gAllocated[simCurrentDevice()]);
  return cudaSuccess;
}

// --- the provider and its hooks ------------------------------------------------------------------------------------
namespace {

double numberOr(const Value& o, const char* key, double fallback) {
  const Value* v = o.get(key);
  return v && v->isNumber() ? v->number() : fallback;
}
bool flagOr(const Value& o, const char* key, bool fallback) {
  const Value* v = o.get(key);
  return v && v->isBool() ? v->boolean() : fallback;
}

// simConfigure({checkOrders, seed, smallConfig, smemOptin, computeCapability, numSms, splitRows, batchInvariant,
// deviceMemoryBytes, numDevices, profileBlock}): the settings given change, the others stay.
Value configure(const Value& o) {
  std::lock_guard<std::mutex> lock(gMu);
  SimSettings& s = gSettings;
  s.checkOrders = flagOr(o, "checkOrders", s.checkOrders);
  s.seed = static_cast<uint64_t>(numberOr(o, "seed", static_cast<double>(s.seed)));
  s.smallConfig = flagOr(o, "smallConfig", s.smallConfig);
  s.numSms = static_cast<int>(numberOr(o, "numSms", s.numSms));
  s.splitRows = static_cast<int>(numberOr(o, "splitRows", s.splitRows));
  s.batchInvariant = flagOr(o, "batchInvariant", s.batchInvariant);
  s.deviceMemoryBytes = static_cast<size_t>(numberOr(o, "deviceMemoryBytes", static_cast<double>(s.deviceMemoryBytes)));
  s.numDevices = static_cast<int>(numberOr(o, "numDevices", s.numDevices));
  s.smemOptin = static_cast<int>(numberOr(o, "smemOptin", s.smemOptin));
  s.profileBlock = static_cast<long long>(numberOr(o, "profileBlock", static_cast<double>(s.profileBlock)));
  s.computeCapability = static_cast<int>(numberOr(o, "computeCapability", s.computeCapability));
  if (s.numDevices < 1 || s.numDevices > 64) s.numDevices = 1;
  return {};
}

// The shared-memory and conversion counts a launch's counters (cudasim::Traffic) and a barrier interval's
// (cudasim::PhaseCounts) have in common.
template <class Counts>
Value::Record onChip(const Counts& t) {
  return Value::Record{{"ldmatrixBytes", t.smem_ldmatrix_bytes},   {"ldmatrixWavefronts", t.smem_ldmatrix_wavefronts},
                       {"sharedLoadBytes", t.smem_load_bytes},     {"sharedStoreBytes", t.smem_store_bytes},
                       {"asyncCopyBytes", t.smem_async_bytes},     {"converted", t.converted},
                       {"permuted", t.permuted}};
}

// simLastOp() -> the traffic, launches (with their on-chip counters and the profiled block's barrier intervals) and
// host synchronisations of the last operation.
Value lastOp() {
  SimOpRecord r;
  {
    std::lock_guard<std::mutex> lock(gMu);
    r = gLast;
  }
  Value::List launches;
  for (const SimLaunch& l : r.launches) {
    Value::Record counters = onChip(l.counters);
    counters.emplace_back("mma", l.counters.mma);
    counters.emplace_back("barriers", l.counters.barriers);
    Value::List profile;
    for (const cudasim::PhaseCounts& ph : l.profile) {
      Value::Record y = onChip(ph);
      y.emplace_back("bytesRead", ph.bytes_read);
      y.emplace_back("loads", ph.loads);
      y.emplace_back("bytesWritten", ph.bytes_written);
      y.emplace_back("mmaPerWarp", Value::List(ph.mma_per_warp.begin(), ph.mma_per_warp.end()));
      y.emplace_back("mmaChainPerWarp", Value::List(ph.mma_chain_per_warp.begin(), ph.mma_chain_per_warp.end()));
      profile.push_back(std::move(y));
    }
    launches.push_back(Value::Record{{"kernel", l.kernel},
                                     {"bytesRead", l.bytesRead},
                                     {"bytesWritten", l.bytesWritten},
                                     {"fiberSwitches", l.fiberSwitches},
                                     {"grid", Value::List{l.gridX, l.gridY}},
                                     {"threads", l.blockX},
                                     {"seconds", l.seconds},
                                     {"dynamicSmem", l.dynamicSmem},
                                     {"dependentLaunch", l.dependentLaunch},
                                     {"counters", std::move(counters)},
                                     {"profile", std::move(profile)}});
  }
  return Value::Record{{"op", r.op},
                       {"bytesRead", r.bytesRead},
                       {"bytesWritten", r.bytesWritten},
                       {"ordersChecked", r.ordersChecked},
                       {"hostSyncs", r.hostSyncs},
                       {"launches", std::move(launches)}};
}

// decodeKernelShapes(headDim): the decode kernels' tile shapes and dynamic shared memory for a row width, from the
// kernel source itself (scripts/check-cuda.mjs checks them against each GPU's limit).
Value decodeKernelShapes(const Value& headDimArg) {
  const int headDim = static_cast<int>(headDimArg.isNumber() ? headDimArg.number() : 0);
  Value::Record shapes;
  for (DecodeConfig config : kAllDecodeConfigs) {
    const DecodeConfigInfo c = SimRuntime::decodeConfigInfo(config);
    shapes.emplace_back(decodeConfigName(config), Value::Record{{"blockM", c.blockM},
                                            {"blockN", c.blockN},
                                            {"stages", c.stages},
                                            {"threads", c.threads},
                                            {"minBlocksPerSm", c.minBlocksPerSm},
                                            {"smemBytes", SimRuntime::decodeSmemBytes(config, headDim, false)},
                                            {"smemBytesFp8", SimRuntime::decodeSmemBytes(config, headDim, true)}});
  }
  return shapes;
}

// prefillKernelShapes({nopeDim, ropeDim, vHeadDim}): the prefill kernels' tile shapes and dynamic shared memory for
// these dims, from the kernel source itself (scripts/check-cuda.mjs checks them against each GPU's limit).
Value prefillKernelShapes(const Value& dims) {
  const auto dim = [&](const char* key) { return static_cast<int>(numberOr(dims, key, 0)); };
  const int nope = dim("nopeDim"), rope = dim("ropeDim"), vDim = dim("vHeadDim");
  Value::Record shapes;
  for (auto [name, config] : {std::pair{"large", PrefillConfig::Large}, std::pair{"small", PrefillConfig::Small}}) {
    const PrefillConfigInfo c = SimRuntime::prefillConfigInfo(config);
    shapes.emplace_back(name, Value::Record{{"blockM", c.blockM},
                                            {"heads", c.heads},
                                            {"blockN", c.blockN},
                                            {"stages", c.stages},
                                            {"threads", c.threads},
                                            {"smemBytes", SimRuntime::prefillSmemBytes(config, nope, rope, vDim)}});
  }
  return shapes;
}

// decodePlan({queryLen, numHeads, seqLens, numSms, smemOptin, batchInvariant, splitRows}) -> the plan the CUDA backend
// makes for a device with that SM count and shared memory (the config it picks for DeepSeek's rows): { config, blockM,
// blockN, work: [batch, mTile, rowBegin, rowEnd, seqLen, partial][], combine: [batch, mTile, firstPartial,
// numPartials][], numPartials }. For the GPU performance model.
int requiredInt(const Value& o, const char* hook, const char* key) {
  const Value* v = o.get(key);
  if (!v || !v->isNumber()) throw Error(ErrorCode::Argument, std::string(hook) + ": " + key + " must be a number");
  return static_cast<int>(v->number());
}

Value decodePlan(const Value& o) {
  const auto integer = [&](const char* key) { return requiredInt(o, "decodePlan", key); };
  std::vector<int32_t> seqLens;
  const Value* lens = o.get("seqLens");
  if (const auto* list = lens ? std::get_if<Value::List>(&lens->v) : nullptr)
    for (const Value& x : *list) seqLens.push_back(static_cast<int32_t>(x.isNumber() ? x.number() : 0));
  else
    throw Error(ErrorCode::Argument, "decodePlan: seqLens must be an array of numbers");
  DecodePlanOptions opt;
  opt.numSms = integer("numSms");
  opt.config = decodeConfigFor<SimRuntime>(integer("smemOptin"), kDeepSeekHeadDim);
  opt.tiles = SimRuntime::decodeConfigInfo(opt.config);
  opt.batchInvariant = flagOr(o, "batchInvariant", false);
  opt.splitRows = static_cast<int>(numberOr(o, "splitRows", 0));
  const DecodePlan plan = makeDecodePlan(static_cast<int>(seqLens.size()), integer("queryLen"), integer("numHeads"), seqLens.data(), opt);
  Value::List work, combine;
  for (const DecodeWorkItem& w : plan.work) work.push_back(Value::List{w.batch, w.mTile, w.rowBegin, w.rowEnd, w.seqLen, w.partial});
  for (const CombineItem& c : plan.combine) combine.push_back(Value::List{c.batch, c.mTile, c.firstPartial, c.numPartials});
  return Value::Record{{"config", decodeConfigName(plan.config)}, {"blockM", plan.blockM}, {"blockN", plan.blockN},
                       {"numPartials", plan.numPartials},      {"work", std::move(work)}, {"combine", std::move(combine)}};
}

// sparseDecodePlan({numQueries, numHeads, kvLoraRank, rows, numSms, batchInvariant, splitRows}) -> { numSplits, splitRows }: how the
// sparse decode splits each query's selected rows on a device with that SM count. For the GPU performance model.
Value sparseDecodePlan(const Value& o) {
  const auto integer = [&](const char* key) { return requiredInt(o, "sparseDecodePlan", key); };
  DecodePlanOptions opt;
  opt.numSms = integer("numSms");
  opt.batchInvariant = flagOr(o, "batchInvariant", false);
  opt.splitRows = static_cast<int>(numberOr(o, "splitRows", 0));
  const SparseSplit s = sparseDecodeSplit(integer("numQueries"), integer("numHeads"), integer("kvLoraRank"), integer("rows"), opt);
  return Value::Record{{"numSplits", s.numSplits}, {"splitRows", s.splitRows}};
}

class CudaSimProvider final : public BackendProvider {
 public:
  DeviceKind kind() const override { return DeviceKind::CudaSim; }
  BackendInfo info() override {
    BackendInfo b{"cuda-sim", true, "the CUDA kernel source run under the SIMT emulator (tests only)", {}};
    for (int d = 0; d < SimRuntime::simDeviceCount(); ++d) b.devices.push_back(Device{DeviceKind::CudaSim, d}.str());
    return b;
  }
  Backend& backend(int index, const std::string& argName) override {
    requireDevice(info(), Device{DeviceKind::CudaSim, index}, argName);
    return backendOfDevice<SimRuntime>(index);
  }
  std::vector<BackendHook> hooks() override {
    return {{"simConfigure", configure}, {"simLastOp", [](const Value&) { return lastOp(); }}, {"decodeKernelShapes", decodeKernelShapes},
            {"prefillKernelShapes", prefillKernelShapes}, {"decodePlan", decodePlan},
            {"sparseDecodePlan", sparseDecodePlan}};
  }
};

}  // namespace
}  // namespace mla::cuda

namespace mla {
BackendProvider& cudaSimProvider() {
  static cuda::CudaSimProvider& provider = neverDestroyed<cuda::CudaSimProvider>();
  return provider;
}
}  // namespace mla
