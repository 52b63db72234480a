// The CUDA backend's host code: device memory, per-worker CUDA streams with pinned staging, uploads of the index
// tensors, the decode plan, launches and error checks. One CudaBackendImpl per device, made on first use. Operations
// only enqueue: no host synchronisation inside one; the stream's worker learns of completion through a Fence (an
// event recorded after the operation) that the stream waits on elsewhere. Included by cuda_backend.cc (GPU, real runtime, mla::kernels)
// and by sim_backend.cc (cuda-sim, emulated runtime, mla::kernels_sim). The including file defines, before the
// include `template <class Fn> void runOp(const char* op, std::vector<OpOutput> outputs, Fn&& launchAll)`, which
// runs the launches (once on a GPU; under every thread order with checks under emulation), and
// `DecodePlanOptions planOptions()` (defaults on a GPU; the emulator's settings under cuda-sim).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "../core/backend.h"
#include "../core/errors.h"
#include "plan.h"
#include "prefill_plan.h"
#include "runtime_api.h"

namespace mla::MLA_KERNEL_NS {

[[noreturn]] inline void throwCuda(cudaError_t e, const std::string& what) {
  throw Error(e == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::Cuda, what + " failed: " + rt::cudaGetErrorName(e));
}
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throwCuda(e, what);
}

// What the runtime says about a device, and why it cannot be used when it cannot.
struct DeviceProbe {
  bool available = false;
  std::string reason;
  std::string name;
  int numSms = 0, smemOptin = 0, computeMajor = 0, computeMinor = 0;
  size_t totalMemory = 0;
  int driverVersion = 0, runtimeVersion = 0;
};

inline DeviceProbe probeDevice(int device) {
  DeviceProbe p;
  rt::cudaRuntimeGetVersion(&p.runtimeVersion);
  rt::cudaDriverGetVersion(&p.driverVersion);
  int count = 0;
  const cudaError_t e = rt::cudaGetDeviceCount(&count);
  if (e == cudaErrorInsufficientDriver) {
    p.reason = std::string(rt::cudaGetErrorName(e)) + ": " +
               (p.driverVersion == 0 ? "no NVIDIA driver is installed" : "the NVIDIA driver is older than the CUDA " +
                                                                              std::to_string(p.runtimeVersion / 1000) + " runtime of this build; update the driver");
    return p;
  }
  if (e != cudaSuccess) {
    p.reason = std::string(rt::cudaGetErrorName(e)) + (e == cudaErrorNoDevice ? ": no CUDA device found" : "");
    return p;
  }
  if (device >= count) {
    p.reason = "cudaErrorInvalidDevice: device " + std::to_string(device) + " requested, " + std::to_string(count) + " found";
    return p;
  }
  rt::cudaDeviceGetAttribute(&p.numSms, cudaDevAttrMultiProcessorCount, device);
  rt::cudaDeviceGetAttribute(&p.smemOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  rt::cudaDeviceGetAttribute(&p.computeMajor, cudaDevAttrComputeCapabilityMajor, device);
  rt::cudaDeviceGetAttribute(&p.computeMinor, cudaDevAttrComputeCapabilityMinor, device);
  cudaDeviceProp props{};
  p.name = rt::deviceName(device, &props);
  if (p.computeMajor < 8) {
    p.reason = p.name + " is sm_" + std::to_string(p.computeMajor) + std::to_string(p.computeMinor) + "; mla-kernels needs sm_80 or newer";
    return p;
  }
  size_t freeBytes = 0;
  if (rt::cudaSetDevice(device) == cudaSuccess) rt::cudaMemGetInfo(&freeBytes, &p.totalMemory);
  p.available = true;
  return p;
}

// Device memory with accounting (bytes in use and the peak), for memoryStats().
class CudaMemory final : public DeviceMemory {
 public:
  explicit CudaMemory(int device) : device_(device) {}
  void* allocate(size_t bytes) override {
    void* p = nullptr;
    if (bytes == 0) return nullptr;
    check(rt::cudaSetDevice(device_), "cudaSetDevice");
    const cudaError_t e = rt::cudaMalloc(&p, bytes);
    if (e != cudaSuccess) throwCuda(e, "allocating " + std::to_string(bytes) + " bytes of device memory");
    const size_t now = inUse_ += bytes;
    size_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {}
    return p;
  }
  // cudaFree waits for the device to be idle, so no queued work still reads the memory.
  void release(void* p, size_t bytes) override {
    if (!p) return;
    rt::cudaSetDevice(device_);
    rt::cudaFree(p);
    inUse_ -= bytes;
  }
  size_t bytesInUse() const override { return inUse_; }
  size_t peakBytes() const override { return peak_; }

 private:
  int device_;
  std::atomic<size_t> inUse_{0}, peak_{0};
};

// The completion of what a stream had queued when the event was recorded.
class CudaFence final : public Fence {
 public:
  explicit CudaFence(cudaEvent_t e) : event(e) {}
  ~CudaFence() override { rt::cudaEventDestroy(event); }
  CudaFence(const CudaFence&) = delete;
  CudaFence& operator=(const CudaFence&) = delete;
  void wait() const override { check(rt::cudaEventSynchronize(event), "the stream's queued work"); }
  const cudaEvent_t event;
};

// Pinned host memory an upload copies from. The host may refill it only once the device has copied it: `copied`
// is recorded on the stream after that copy.
struct StagingSlot {
  void* pinned = nullptr;
  size_t bytes = 0;
  cudaEvent_t copied = nullptr;
  bool pending = false;  // `copied` recorded and maybe not yet reached
};

// One per stream worker thread (a worker runs one stream's operations in order): its CUDA stream, a small ring of
// pinned staging slots (so an operation can be staged while the device still copies an earlier one's), and one
// device scratch buffer, which needs no ring: the stream runs the operations that use it one after another.
struct WorkerContext {
  static constexpr size_t kMaxStagingSlots = 4;
  int device = 0;
  cudaStream_t stream = nullptr;
  std::vector<StagingSlot> slots;
  size_t nextSlot = 0;
  void* scratch = nullptr;
  size_t scratchBytes = 0;
  DeviceMemory* memory = nullptr;

  ~WorkerContext() {
    if (stream) rt::cudaStreamSynchronize(stream);  // the thread exits: nothing of it may still be in flight
    for (StagingSlot& s : slots) {
      if (s.pinned) rt::cudaFreeHost(s.pinned);
      if (s.copied) rt::cudaEventDestroy(s.copied);
    }
    if (scratch) memory->release(scratch, scratchBytes);
    if (stream) rt::cudaStreamDestroy(stream);
  }
  // A slot of at least `bytes` the host may write now. Waits for the device only when every slot of a full ring
  // is still being copied from.
  StagingSlot& staging(size_t bytes) {
    StagingSlot* slot = nullptr;
    for (size_t i = 0; i < slots.size() && !slot; ++i) {
      const size_t k = (nextSlot + i) % slots.size();
      if (idle(slots[k])) {
        slot = &slots[k];
        nextSlot = k + 1;
      }
    }
    if (!slot && slots.size() < kMaxStagingSlots) {
      slots.emplace_back();
      slot = &slots.back();
      check(rt::cudaEventCreateWithFlags(&slot->copied, cudaEventDisableTiming), "cudaEventCreate (staging)");
      nextSlot = slots.size();
    }
    if (!slot) {
      slot = &slots[nextSlot % slots.size()];
      check(rt::cudaEventSynchronize(slot->copied), "waiting for a staging slot");
      nextSlot = nextSlot % slots.size() + 1;
    }
    slot->pending = false;
    if (bytes > slot->bytes) {
      if (slot->pinned) rt::cudaFreeHost(slot->pinned);
      slot->pinned = nullptr;
      slot->bytes = 0;
      check(rt::cudaMallocHost(&slot->pinned, bytes), "allocating pinned staging memory");
      slot->bytes = bytes;
    }
    return *slot;
  }
  // The copies from `slot` are queued: it is free again once the stream gets past them.
  void staged(StagingSlot& slot) {
    check(rt::cudaEventRecord(slot.copied, stream), "cudaEventRecord (staging)");
    slot.pending = true;
  }
  uint8_t* deviceScratch(size_t bytes) {
    if (bytes > scratchBytes) {
      if (scratch) memory->release(scratch, scratchBytes);
      scratch = nullptr;
      scratchBytes = 0;
      scratch = memory->allocate(std::max<size_t>(bytes, 1 << 20));
      scratchBytes = std::max<size_t>(bytes, 1 << 20);
    }
    return static_cast<uint8_t*>(scratch);
  }

 private:
  static bool idle(const StagingSlot& s) {
    if (!s.pending) return true;
    const cudaError_t e = rt::cudaEventQuery(s.copied);
    if (e == cudaErrorNotReady) return false;
    check(e, "cudaEventQuery (staging)");
    return true;
  }
};

inline size_t align16(size_t n) { return (n + 15) / 16 * 16; }

// memcpy, but a zero-byte copy may name a null pointer (an empty vector or tensor): memcpy's may not.
inline void copyBytes(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

class CudaBackendImpl final : public Backend {
 public:
  CudaBackendImpl(const char* name, DeviceKind kind, int device) : name_(name), kind_(kind), device_(device), memory_(device) {}

  const char* name() const override { return name_; }
  Device device() const override { return Device{kind_, device_}; }
  DeviceMemory* memory() override { return &memory_; }

  // An fp8 cache is written from, and read against, bf16 or f16 tensors.
  void checkSupported(const AppendLatentCacheParams& p) const override { elemOf(isFp8(p.cache) ? p.kvC : p.cache, "appendLatentCache"); }
  void checkSupported(const MlaDecodeParams& p) const override {
    elemOf(p.q, "mlaDecode");
    if (p.headDim % 16 != 0)
      unsupported("mlaDecode: q's last dimension (kvLoraRank + ropeDim = " + std::to_string(p.headDim) + ") must be a multiple of 16");
    if (p.kvLoraRank % 16 != 0 || p.kvLoraRank > 512)
      unsupported("mlaDecode: kvLoraRank must be a multiple of 16 and at most 512, got " + std::to_string(p.kvLoraRank));
    chooseConfig(static_cast<int>(p.headDim));
  }
  void checkSupported(const AbsorbQueryParams& p) const override {
    elemOf(p.qNope, "absorbQuery");
    if (p.nopeDim % 16 != 0 || p.kvLoraRank % 8 != 0)
      unsupported("absorbQuery: nopeDim must be a multiple of 16 and kvLoraRank of 8, got " + std::to_string(p.nopeDim) + " and " +
                  std::to_string(p.kvLoraRank));
  }
  void checkSupported(const UnabsorbOutputParams& p) const override {
    elemOf(p.oLat, "unabsorbOutput");
    if (p.kvLoraRank % 16 != 0 || p.vHeadDim % 8 != 0)
      unsupported("unabsorbOutput: kvLoraRank must be a multiple of 16 and vHeadDim of 8, got " + std::to_string(p.kvLoraRank) + " and " +
                  std::to_string(p.vHeadDim));
  }

  std::shared_ptr<DecodePlanHandle> planDecode(int64_t batch, int64_t queryLen, int64_t numHeads, const int32_t* seqLens,
                                               bool batchInvariant) const override {
    auto plan = std::make_shared<Plan>();
    fillPlanHandle(*plan, name(), batch, queryLen, numHeads, seqLens, batchInvariant);
    // Planned for DeepSeek's row width (512 + 64); a decode of another width that needs other tiles replans.
    const DecodeConfig config = decodeSmemBytes(DecodeConfig::Large, 576) <= smemOptin() ? DecodeConfig::Large : DecodeConfig::Small;
    plan->plan = makePlan(batch, queryLen, numHeads, seqLens, batchInvariant, config);
    plan->numWorkItems = static_cast<int64_t>(plan->plan.work.size());
    plan->numSplitSequences = static_cast<int64_t>(plan->plan.combine.size());
    return plan;
  }

  // Uploads and device-to-device copies only enqueue; a download waits for its copy (the host reads the result).
  void copy(const CopyParams& p) override {
    WorkerContext& ctx = worker();
    const size_t bytes = p.src.nbytes();
    const bool srcHost = p.src.device.kind == DeviceKind::Cpu, dstHost = p.dst.device.kind == DeviceKind::Cpu;
    if (bytes == 0) return;
    if (srcHost && dstHost) {
      std::memcpy(p.dst.data, p.src.data, bytes);
      return;
    }
    if (!srcHost && !dstHost) {
      if (p.src.device != p.dst.device)  // peer to peer: direct where the GPUs allow it, else staged by the driver
        check(rt::cudaMemcpyPeerAsync(p.dst.data, p.dst.device.index, p.src.data, p.src.device.index, bytes, ctx.stream), "peer copy");
      else
        check(rt::cudaMemcpyAsync(p.dst.data, p.src.data, bytes, cudaMemcpyDeviceToDevice, ctx.stream), "device-to-device copy");
      return;
    }
    // Host memory of JS is pageable: move it through the pinned staging slots in chunks.
    constexpr size_t kChunk = size_t{8} << 20;
    for (size_t off = 0; off < bytes; off += kChunk) {
      const size_t n = std::min(kChunk, bytes - off);
      StagingSlot& slot = ctx.staging(n);
      uint8_t* stage = static_cast<uint8_t*>(slot.pinned);
      if (srcHost) {
        std::memcpy(stage, static_cast<const uint8_t*>(p.src.data) + off, n);
        check(rt::cudaMemcpyAsync(static_cast<uint8_t*>(p.dst.data) + off, stage, n, cudaMemcpyHostToDevice, ctx.stream), "upload");
        ctx.staged(slot);
      } else {
        check(rt::cudaMemcpyAsync(stage, static_cast<const uint8_t*>(p.src.data) + off, n, cudaMemcpyDeviceToHost, ctx.stream), "download");
        ctx.staged(slot);
        check(rt::cudaEventSynchronize(slot.copied), "download");
        std::memcpy(static_cast<uint8_t*>(p.dst.data) + off, stage, n);
      }
    }
  }

  void appendLatentCache(const AppendLatentCacheParams& p) override {
    rt::OpScope scope("appendLatentCache");
    WorkerContext& ctx = worker();
    // The index tensors live on the host: upload slots (and positions) into the worker's scratch.
    const size_t slotsBytes = align16(p.slotMapping.nbytes()), posBytes = p.ropeStyle == RopeStyle::None ? 0 : align16(p.positions.nbytes());
    StagingSlot& slot = ctx.staging(slotsBytes + posBytes + 16);
    uint8_t* stage = static_cast<uint8_t*>(slot.pinned);
    copyBytes(stage, p.slotMapping.data, p.slotMapping.nbytes());
    if (posBytes) copyBytes(stage + slotsBytes, p.positions.data, p.positions.nbytes());
    uint8_t* dev = ctx.deviceScratch(slotsBytes + posBytes + 16);
    check(rt::cudaMemcpyAsync(dev, stage, slotsBytes + posBytes, cudaMemcpyHostToDevice, ctx.stream), "appendLatentCache upload");
    ctx.staged(slot);

    const AppendArgs a = appendArgs(p, dev, posBytes ? dev + slotsBytes : nullptr);
    runOp("appendLatentCache", {{p.cache.data, p.cache.nbytes()}}, [&](auto record) {
      check(launchAppend(a, ctx.stream), "appendLatentCache launch");
      record();
    });
  }

  void mlaDecode(const MlaDecodeParams& p) override {
    rt::OpScope scope("mlaDecode");
    WorkerContext& ctx = worker();
    const DecodeConfig config = chooseConfig(static_cast<int>(p.headDim));
    DecodePlan made;
    const DecodePlan& plan = planFor(p, config, made);

    // Upload [block table | work items | combine items] in one copy; partial results go after them.
    const size_t tableBytes = align16(p.blockTable.nbytes());
    const size_t workBytes = align16(plan.work.size() * sizeof(DecodeWorkItem));
    const size_t combineBytes = align16(plan.combine.size() * sizeof(CombineItem));
    const size_t hostBytes = tableBytes + workBytes + combineBytes;
    const size_t partialOutBytes = align16(size_t(plan.numPartials) * plan.blockM * p.kvLoraRank * sizeof(float));
    const size_t partialLseBytes = align16(size_t(plan.numPartials) * plan.blockM * sizeof(float));
    StagingSlot& slot = ctx.staging(hostBytes + 16);
    uint8_t* stage = static_cast<uint8_t*>(slot.pinned);
    copyBytes(stage, p.blockTable.data, p.blockTable.nbytes());
    copyBytes(stage + tableBytes, plan.work.data(), plan.work.size() * sizeof(DecodeWorkItem));
    copyBytes(stage + tableBytes + workBytes, plan.combine.data(), plan.combine.size() * sizeof(CombineItem));
    uint8_t* dev = ctx.deviceScratch(hostBytes + partialOutBytes + partialLseBytes + 16);
    check(rt::cudaMemcpyAsync(dev, stage, hostBytes, cudaMemcpyHostToDevice, ctx.stream), "mlaDecode upload");
    ctx.staged(slot);

    DecodeArgs d = decodeArgs(p, config, reinterpret_cast<const int32_t*>(dev));
    d.partialOut = reinterpret_cast<float*>(dev + hostBytes);
    d.partialLse = reinterpret_cast<float*>(dev + hostBytes + partialOutBytes);
    d.work = reinterpret_cast<const DecodeWorkItem*>(dev + tableBytes);
    d.numWork = static_cast<int>(plan.work.size());
    CombineArgs c = combineArgs(d, plan.blockM);
    c.items = reinterpret_cast<const CombineItem*>(dev + tableBytes + workBytes);
    c.numItems = static_cast<int>(plan.combine.size());

    check(prepareDecode(config, d.headDim), "cudaFuncSetAttribute (decode shared memory)");
    runOp("mlaDecode", {{p.out.data, p.out.nbytes()}, {p.lse.data, p.lse.nbytes()}}, [&](auto record) {
      check(launchDecode(d, ctx.stream), "mlaDecode launch");
      if (d.numWork) record();
      check(launchCombine(c, ctx.stream), "mlaDecode combine launch");
      if (c.numItems) record();
    });
  }

  void absorbQuery(const AbsorbQueryParams& p) override {
    rt::OpScope scope("absorbQuery");
    WorkerContext& ctx = worker();
    const HeadGemmArgs a = absorbArgs(p);
    runOp("absorbQuery", {{p.out.data, p.out.nbytes()}}, [&](auto record) {
      check(launchHeadGemm(a, ctx.stream), "absorbQuery launch");
      record();
    });
  }

  void unabsorbOutput(const UnabsorbOutputParams& p) override {
    rt::OpScope scope("unabsorbOutput");
    WorkerContext& ctx = worker();
    const HeadGemmArgs a = unabsorbArgs(p);
    runOp("unabsorbOutput", {{p.out.data, p.out.nbytes()}}, [&](auto record) {
      check(launchHeadGemm(a, ctx.stream), "unabsorbOutput launch");
      record();
    });
  }

  // A captured graph runs as a CUDA graph. At the first replay every operation's kernels are captured once, reading
  // their index arrays and plans from one device buffer of the graph's own, with grids as large as any plan of those
  // shapes can need; each replay then uploads that buffer in one copy (block tables, slot mappings, the plans of the
  // current lengths and how many CTAs of each grid have work) and launches the graph: one launch for the step.
  void runGraph(const std::vector<GraphOp>& ops, std::unique_ptr<GraphState>& state) override {
    rt::OpScope scope("graph");
    WorkerContext& ctx = worker();
    if (!state) state = captureGraph(ops, ctx);
    const auto& graph = static_cast<const CudaGraphState&>(*state);
    StagingSlot& slot = ctx.staging(graph.indexBytes + 16);
    uint8_t* stage = static_cast<uint8_t*>(slot.pinned);
    std::vector<OpOutput> outputs;
    for (size_t i = 0; i < ops.size(); ++i) {
      const GraphOpLayout& l = graph.layout[i];
      if (const auto* p = std::get_if<MlaDecodeParams>(&ops[i])) {
        DecodePlan made;
        const DecodePlan& plan = planFor(*p, l.config, made);
        if (plan.work.size() > size_t(l.capacity.work) || plan.combine.size() > size_t(l.capacity.combine) || plan.numPartials > l.capacity.partials)
          throw Error(ErrorCode::Internal, "graph op " + std::to_string(i) + ": the decode plan exceeds the room captured for it");
        const int32_t counts[2] = {static_cast<int32_t>(plan.work.size()), static_cast<int32_t>(plan.combine.size())};
        std::memcpy(stage + l.counts, counts, sizeof counts);
        copyBytes(stage + l.table, p->blockTable.data, p->blockTable.nbytes());
        copyBytes(stage + l.work, plan.work.data(), plan.work.size() * sizeof(DecodeWorkItem));
        copyBytes(stage + l.combine, plan.combine.data(), plan.combine.size() * sizeof(CombineItem));
        outputs.push_back({p->out.data, p->out.nbytes()});
        outputs.push_back({p->lse.data, p->lse.nbytes()});
      } else if (const auto* p = std::get_if<AppendLatentCacheParams>(&ops[i])) {
        copyBytes(stage + l.slots, p->slotMapping.data, p->slotMapping.nbytes());
        if (p->ropeStyle != RopeStyle::None) copyBytes(stage + l.positions, p->positions.data, p->positions.nbytes());
        outputs.push_back({p->cache.data, p->cache.nbytes()});
      } else if (const auto* p = std::get_if<AbsorbQueryParams>(&ops[i])) {
        outputs.push_back({p->out.data, p->out.nbytes()});
      } else if (const auto* p = std::get_if<UnabsorbOutputParams>(&ops[i])) {
        outputs.push_back({p->out.data, p->out.nbytes()});
      } else if (const auto* p = std::get_if<MlaPrefillParams>(&ops[i])) {
        PrefillPlan made;
        const PrefillPlan& plan = prefillPlanFor(*p, l.prefillConfig, made);
        if (plan.work.size() > size_t(l.prefillCapacity))
          throw Error(ErrorCode::Internal, "graph op " + std::to_string(i) + ": the prefill plan exceeds the room captured for it");
        const int32_t counts[2] = {static_cast<int32_t>(plan.work.size()), static_cast<int32_t>(p->usedQ)};
        std::memcpy(stage + l.prefillCounts, counts, sizeof counts);
        copyBytes(stage + l.prefillWork, plan.work.data(), plan.work.size() * sizeof(PrefillWorkItem));
        outputs.push_back({p->out.data, p->out.nbytes()});
        outputs.push_back({p->lse.data, p->lse.nbytes()});
      } else if (const auto* p = std::get_if<GatherLatentCacheParams>(&ops[i])) {
        copyBytes(stage + l.gatherTable, p->blockTable.data, p->blockTable.nbytes());
        copyBytes(stage + l.gatherCu, p->cuSeqLens.data, p->cuSeqLens.nbytes());
        if (p->seqStarts.present()) copyBytes(stage + l.gatherStarts, p->seqStarts.data, p->seqStarts.nbytes());
        outputs.push_back({p->kvC.data, p->kvC.nbytes()});
        outputs.push_back({p->kPe.data, p->kPe.nbytes()});
      } else if (const auto* p = std::get_if<UpProjectKvParams>(&ops[i])) {
        outputs.push_back({p->kNope.data, p->kNope.nbytes()});
        outputs.push_back({p->v.data, p->v.nbytes()});
      } else if (const auto* p = std::get_if<MergeAttentionStatesParams>(&ops[i])) {
        outputs.push_back({p->out.data, p->out.nbytes()});
        outputs.push_back({p->lse.data, p->lse.nbytes()});
      }
    }
    check(rt::cudaMemcpyAsync(graph.index, stage, graph.indexBytes, cudaMemcpyHostToDevice, ctx.stream), "graph upload");
    ctx.staged(slot);
    runOp("graph", std::move(outputs), [&](auto) { check(rt::cudaGraphLaunch(graph.exec, ctx.stream), "cudaGraphLaunch"); });
  }

  // --- prefill ---
  void checkSupported(const MlaPrefillParams& p) const override {
    elemOf(p.q, "mlaPrefill");
    if (p.nopeDim % 16 != 0 || p.ropeDim % 16 != 0)
      unsupported("mlaPrefill: nopeDim and ropeDim must be multiples of 16 (the mma k-steps), got " + std::to_string(p.nopeDim) + " and " +
                  std::to_string(p.ropeDim));
    if (p.headDim > kPrefillMaxQkDim || p.vHeadDim % 8 != 0 || p.vHeadDim > kPrefillMaxVHeadDim)
      unsupported("mlaPrefill: nopeDim + ropeDim must be at most " + std::to_string(kPrefillMaxQkDim) + " and vHeadDim a multiple of 8 up to " +
                  std::to_string(kPrefillMaxVHeadDim) + ", got " + std::to_string(p.headDim) + " and " + std::to_string(p.vHeadDim));
    choosePrefillConfig(p);
  }
  void checkSupported(const GatherLatentCacheParams& p) const override { elemOf(p.kvC, "gatherLatentCache"); }
  void checkSupported(const UpProjectKvParams& p) const override {
    elemOf(p.kvC, "upProjectKv");
    if (p.kvLoraRank % 8 != 0 || p.nopeDim % 2 != 0 || p.vHeadDim % 2 != 0)
      unsupported("upProjectKv: kvLoraRank must be a multiple of 8 and nopeDim and vHeadDim even, got " + std::to_string(p.kvLoraRank) + ", " +
                  std::to_string(p.nopeDim) + " and " + std::to_string(p.vHeadDim));
  }
  void checkSupported(const MergeAttentionStatesParams& p) const override { elemOf(p.outA, "mergeAttentionStates"); }

  std::shared_ptr<PrefillPlanHandle> planPrefill(int64_t batch, int64_t numHeads, bool causal, const int32_t* cuSeqLensQ,
                                                 const int32_t* cuSeqLensKv) const override {
    auto plan = std::make_shared<PrefillPlanState>();
    fillPrefillPlanHandle(*plan, name(), batch, numHeads, causal, cuSeqLensQ, cuSeqLensKv);
    // Planned for DeepSeek's dims (nope 128, rope 64, v 128); a prefill of other dims that needs other tiles replans.
    const PrefillConfig config = prefillSmemBytes(PrefillConfig::Large, 128, 64, 128) <= smemOptin() ? PrefillConfig::Large : PrefillConfig::Small;
    plan->plan = makePrefillPlan(static_cast<int>(batch), static_cast<int>(numHeads), causal, cuSeqLensQ, cuSeqLensKv, config);
    plan->numWorkItems = static_cast<int64_t>(plan->plan.work.size());
    return plan;
  }

  void mlaPrefill(const MlaPrefillParams& p) override {
    rt::OpScope scope("mlaPrefill");
    WorkerContext& ctx = worker();
    const PrefillConfig config = choosePrefillConfig(p);
    PrefillPlan made;
    const PrefillPlan& plan = prefillPlanFor(p, config, made);
    const size_t workBytes = plan.work.size() * sizeof(PrefillWorkItem);
    StagingSlot& slot = ctx.staging(align16(workBytes) + 16);
    copyBytes(slot.pinned, plan.work.data(), workBytes);
    uint8_t* dev = ctx.deviceScratch(align16(workBytes) + 16);
    check(rt::cudaMemcpyAsync(dev, slot.pinned, workBytes, cudaMemcpyHostToDevice, ctx.stream), "mlaPrefill upload");
    ctx.staged(slot);
    PrefillArgs a = prefillArgs(p, config);
    a.work = reinterpret_cast<const PrefillWorkItem*>(dev);
    a.numWork = static_cast<int>(plan.work.size());
    check(preparePrefill(config, a.nopeDim, a.ropeDim, a.vHeadDim), "cudaFuncSetAttribute (prefill shared memory)");
    runOp("mlaPrefill", {{p.out.data, p.out.nbytes()}, {p.lse.data, p.lse.nbytes()}}, [&](auto record) {
      check(launchPrefill(a, ctx.stream), "mlaPrefill launch");
      if (a.numWork) record();
      check(launchPrefillPad(a, ctx.stream), "mlaPrefill padding launch");
      if (prefillHasPadding(a)) record();
    });
  }

  void gatherLatentCache(const GatherLatentCacheParams& p) override {
    rt::OpScope scope("gatherLatentCache");
    WorkerContext& ctx = worker();
    // Upload [block table | cuSeqLens | seqStarts] in one copy.
    const size_t tableBytes = align16(p.blockTable.nbytes()), cuBytes = align16(p.cuSeqLens.nbytes());
    const size_t startsBytes = p.seqStarts.present() ? align16(p.seqStarts.nbytes()) : 0;
    const size_t bytes = tableBytes + cuBytes + startsBytes;
    StagingSlot& slot = ctx.staging(bytes + 16);
    uint8_t* stage = static_cast<uint8_t*>(slot.pinned);
    copyBytes(stage, p.blockTable.data, p.blockTable.nbytes());
    copyBytes(stage + tableBytes, p.cuSeqLens.data, p.cuSeqLens.nbytes());
    if (startsBytes) copyBytes(stage + tableBytes + cuBytes, p.seqStarts.data, p.seqStarts.nbytes());
    uint8_t* dev = ctx.deviceScratch(bytes + 16);
    check(rt::cudaMemcpyAsync(dev, stage, bytes, cudaMemcpyHostToDevice, ctx.stream), "gatherLatentCache upload");
    ctx.staged(slot);
    const GatherArgs g = gatherArgs(p, dev, dev + tableBytes, startsBytes ? dev + tableBytes + cuBytes : nullptr);
    runOp("gatherLatentCache", {{p.kvC.data, p.kvC.nbytes()}, {p.kPe.data, p.kPe.nbytes()}}, [&](auto record) {
      check(launchGather(g, ctx.stream), "gatherLatentCache launch");
      if (g.numRows) record();
    });
  }

  void upProjectKv(const UpProjectKvParams& p) override {
    rt::OpScope scope("upProjectKv");
    WorkerContext& ctx = worker();
    const GemmNtArgs g = upProjectArgs(p);
    runOp("upProjectKv", {{p.kNope.data, p.kNope.nbytes()}, {p.v.data, p.v.nbytes()}}, [&](auto record) {
      check(launchGemmNt(g, ctx.stream), "upProjectKv launch");
      if (g.M) record();
    });
  }

  void mergeAttentionStates(const MergeAttentionStatesParams& p) override {
    rt::OpScope scope("mergeAttentionStates");
    WorkerContext& ctx = worker();
    const MergeArgs m = mergeArgs(p);
    runOp("mergeAttentionStates", {{p.out.data, p.out.nbytes()}, {p.lse.data, p.lse.nbytes()}}, [&](auto record) {
      check(launchMerge(m, ctx.stream), "mergeAttentionStates launch");
      if (m.rows) record();
    });
  }

  std::shared_ptr<const Fence> recordFence() override {
    WorkerContext& ctx = worker();
    cudaEvent_t event = nullptr;
    // Blocking: the stream's completer thread sleeps in cudaEventSynchronize instead of spinning on a core.
    check(rt::cudaEventCreateWithFlags(&event, cudaEventDisableTiming | cudaEventBlockingSync), "cudaEventCreate");
    auto fence = std::make_shared<const CudaFence>(event);
    check(rt::cudaEventRecord(event, ctx.stream), "cudaEventRecord");
    return fence;
  }

  // A fence of a CUDA stream (of any device) is waited for on the device; any other on the host.
  void waitFence(const Fence& fence) override {
    if (const auto* event = dynamic_cast<const CudaFence*>(&fence))
      check(rt::cudaStreamWaitEvent(worker().stream, event->event, 0), "cudaStreamWaitEvent");
    else
      fence.wait();
  }

 private:
  struct Plan final : DecodePlanHandle {
    DecodePlan plan;
  };
  struct PrefillPlanState final : PrefillPlanHandle {
    PrefillPlan plan;
  };

  // The largest prefill tiles whose shared memory the device allows for these dims.
  PrefillConfig choosePrefillConfig(const MlaPrefillParams& p) const {
    const int optin = smemOptin(), nope = static_cast<int>(p.nopeDim), rope = static_cast<int>(p.ropeDim), vDim = static_cast<int>(p.vHeadDim);
    if (prefillSmemBytes(PrefillConfig::Large, nope, rope, vDim) <= optin) return PrefillConfig::Large;
    if (prefillSmemBytes(PrefillConfig::Small, nope, rope, vDim) <= optin) return PrefillConfig::Small;
    unsupported("mlaPrefill: dims " + std::to_string(nope) + " + " + std::to_string(rope) + ", v " + std::to_string(vDim) + " need " +
                std::to_string(prefillSmemBytes(PrefillConfig::Small, nope, rope, vDim)) + " bytes of shared memory; the device allows " + std::to_string(optin));
  }

  // The plan from planPrefill (validated against p's lengths) when it was made for these tiles, used in place; else a
  // new one, made into `made`.
  const PrefillPlan& prefillPlanFor(const MlaPrefillParams& p, PrefillConfig config, PrefillPlan& made) const {
    const auto* given = dynamic_cast<const PrefillPlanState*>(p.plan.get());
    if (given && given->plan.config == config) return given->plan;
    made = makePrefillPlan(static_cast<int>(p.batch), static_cast<int>(p.numHeads), p.causal, p.cuSeqLensQ.as<const int32_t>(),
                           p.cuSeqLensKv.as<const int32_t>(), config);
    return made;
  }

  PrefillArgs prefillArgs(const MlaPrefillParams& p, PrefillConfig config) const {
    PrefillArgs a{};
    a.elem = elemOf(p.q, "mlaPrefill");
    a.config = config;
    a.q = p.q.data;
    a.kNope = p.kNope.data;
    a.kPe = p.kPe.data;
    a.v = p.v.data;
    a.out = p.out.data;
    a.lse = p.lse.as<float>();
    a.numHeads = static_cast<int>(p.numHeads);
    a.nopeDim = static_cast<int>(p.nopeDim);
    a.ropeDim = static_cast<int>(p.ropeDim);
    a.vHeadDim = static_cast<int>(p.vHeadDim);
    a.causal = p.causal ? 1 : 0;
    a.scaleLog2 = p.softmaxScale * 1.4426950408889634f;
    a.totalQ = static_cast<int>(p.totalQ);
    a.usedQ = static_cast<int>(p.usedQ);
    return a;
  }

  GatherArgs gatherArgs(const GatherLatentCacheParams& p, const uint8_t* table, const uint8_t* cu, const uint8_t* starts) const {
    GatherArgs g{};
    g.elem = elemOf(p.kvC, "gatherLatentCache");
    g.cacheFp8 = isFp8(p.cache);
    g.cacheScale = p.cacheScale;
    g.cache = p.cache.data;
    g.blockTable = reinterpret_cast<const int32_t*>(table);
    g.cuSeqLens = reinterpret_cast<const int32_t*>(cu);
    g.seqStarts = reinterpret_cast<const int32_t*>(starts);
    g.kvC = p.kvC.data;
    g.kPe = p.kPe.data;
    g.batch = static_cast<int>(p.batch);
    g.maxBlocksPerSeq = static_cast<int>(p.maxBlocksPerSeq);
    g.blockSize = static_cast<int>(p.blockSize);
    g.kvLoraRank = static_cast<int>(p.kvLoraRank);
    g.ropeDim = static_cast<int>(p.ropeDim);
    g.numRows = static_cast<int>(p.numRows);
    return g;
  }

  GemmNtArgs upProjectArgs(const UpProjectKvParams& p) const {
    GemmNtArgs g{};
    g.elem = elemOf(p.kvC, "upProjectKv");
    g.a = p.kvC.data;
    g.M = static_cast<int>(p.numTokens);
    g.K = static_cast<int>(p.kvLoraRank);
    g.b[0] = p.wUk.data;
    g.c[0] = p.kNope.data;
    g.n[0] = static_cast<int>(p.numHeads * p.nopeDim);
    g.b[1] = p.wUv.data;
    g.c[1] = p.v.data;
    g.n[1] = static_cast<int>(p.numHeads * p.vHeadDim);
    g.count = 2;
    return g;
  }

  MergeArgs mergeArgs(const MergeAttentionStatesParams& p) const {
    MergeArgs m{};
    m.elem = elemOf(p.outA, "mergeAttentionStates");
    m.outA = p.outA.data;
    m.lseA = p.lseA.as<const float>();
    m.outB = p.outB.data;
    m.lseB = p.lseB.as<const float>();
    m.out = p.out.data;
    m.lse = p.lse.as<float>();
    m.rows = p.numRows;
    m.width = static_cast<int>(p.width);
    return m;
  }

  [[noreturn]] void unsupported(const std::string& msg) const { throw Error(ErrorCode::Unsupported, std::string(name_) + ": " + msg); }

  static bool isFp8(const TensorView& t) { return t.dtype == DType::FP8E4M3; }

  ElemType elemOf(const TensorView& t, const char* op) const {
    if (t.dtype == DType::BF16) return ElemType::BF16;
    if (t.dtype == DType::F16) return ElemType::F16;
    unsupported(std::string(op) + ": the CUDA kernels take bf16 or f16 tensors, " + t.name + " is " + dtypeName(t.dtype) +
                " (f32 runs on the cpu backend)");
  }

  // The largest decode tiles whose shared memory the device allows for this row width.
  DecodeConfig chooseConfig(int headDim) const {
    const int optin = smemOptin();
    if (decodeSmemBytes(DecodeConfig::Large, headDim) <= optin) return DecodeConfig::Large;
    if (decodeSmemBytes(DecodeConfig::Small, headDim) <= optin) return DecodeConfig::Small;
    unsupported("mlaDecode: rows of " + std::to_string(headDim) + " elements need " + std::to_string(decodeSmemBytes(DecodeConfig::Small, headDim)) +
                " bytes of shared memory; the device allows " + std::to_string(optin));
  }

  int smemOptin() const {
    int v = 0;
    rt::cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_);
    return v;
  }

  DecodePlanOptions planOptionsFor(bool batchInvariant, DecodeConfig config) const {
    DecodePlanOptions opt = planOptions();
    rt::cudaDeviceGetAttribute(&opt.numSms, cudaDevAttrMultiProcessorCount, device_);
    opt.batchInvariant = opt.batchInvariant || batchInvariant;
    opt.config = config;
    return opt;
  }

  DecodePlan makePlan(int64_t batch, int64_t queryLen, int64_t numHeads, const int32_t* seqLens, bool batchInvariant, DecodeConfig config) const {
    return makeDecodePlan(static_cast<int>(batch), static_cast<int>(queryLen), static_cast<int>(numHeads), seqLens,
                          planOptionsFor(batchInvariant, config));
  }

  // The plan from planDecode (validated against p's seqLens) when its tiles fit this row width, used in place; else a
  // new one, made into `made`.
  const DecodePlan& planFor(const MlaDecodeParams& p, DecodeConfig config, DecodePlan& made) const {
    const auto* given = dynamic_cast<const Plan*>(p.plan.get());
    if (given && given->plan.config == config) return given->plan;
    made = makePlan(p.batch, p.queryLen, p.numHeads, p.seqLens.as<const int32_t>(), p.plan && p.plan->batchInvariant, config);
    return made;
  }

  // --- kernel arguments from validated parameters (device index arrays and plans filled in by the caller) ---
  AppendArgs appendArgs(const AppendLatentCacheParams& p, const uint8_t* slotsOnDevice, const uint8_t* positionsOnDevice) const {
    AppendArgs a{};
    a.elem = elemOf(p.kvC, "appendLatentCache");
    a.cacheFp8 = isFp8(p.cache);
    a.cacheScale = p.cacheScale;
    a.cache = p.cache.data;
    a.kvC = p.kvC.data;
    a.kPe = p.kPe.data;
    a.slotMapping = reinterpret_cast<const int32_t*>(slotsOnDevice);
    a.positions = reinterpret_cast<const int32_t*>(positionsOnDevice);
    a.cos = p.cos.as<const float>();
    a.sin = p.sin.as<const float>();
    a.ropeStyle = static_cast<int>(p.ropeStyle);
    a.numTokens = static_cast<int>(p.numTokens);
    a.kvLoraRank = static_cast<int>(p.kvLoraRank);
    a.ropeDim = static_cast<int>(p.ropeDim);
    return a;
  }

  DecodeArgs decodeArgs(const MlaDecodeParams& p, DecodeConfig config, const int32_t* blockTableOnDevice) const {
    DecodeArgs d{};
    d.elem = elemOf(p.q, "mlaDecode");
    d.config = config;
    d.cacheFp8 = isFp8(p.cache);
    d.cacheScale = p.cacheScale;  // on V in the kernel's epilogue, on K through the score scale below
    d.q = p.q.data;
    d.cache = p.cache.data;
    d.blockTable = blockTableOnDevice;
    d.out = p.out.data;
    d.lse = p.lse.as<float>();
    d.queryLen = static_cast<int>(p.queryLen);
    d.numHeads = static_cast<int>(p.numHeads);
    d.headDim = static_cast<int>(p.headDim);
    d.kvLoraRank = static_cast<int>(p.kvLoraRank);
    d.blockSize = static_cast<int>(p.blockSize);
    d.blockShift = -1;
    for (int s = 0; s < 31; ++s)
      if ((int64_t{1} << s) == p.blockSize) d.blockShift = s;
    d.maxBlocksPerSeq = static_cast<int>(p.maxBlocksPerSeq);
    d.causal = p.causal ? 1 : 0;
    d.scaleLog2 = p.softmaxScale * p.cacheScale * 1.4426950408889634f;
    return d;
  }

  static CombineArgs combineArgs(const DecodeArgs& d, int blockM) {
    CombineArgs c{};
    c.elem = d.elem;
    c.partialOut = d.partialOut;
    c.partialLse = d.partialLse;
    c.blockM = blockM;
    c.out = d.out;
    c.lse = d.lse;
    c.queryLen = d.queryLen;
    c.numHeads = d.numHeads;
    c.kvLoraRank = d.kvLoraRank;
    return c;
  }

  HeadGemmArgs absorbArgs(const AbsorbQueryParams& p) const {
    HeadGemmArgs a{};
    a.elem = elemOf(p.qNope, "absorbQuery");
    a.a = p.qNope.data;
    a.w = p.wUk.data;
    a.wKMajor = true;
    a.out = p.out.data;
    a.tokens = static_cast<int>(p.numTokens);
    a.heads = static_cast<int>(p.numHeads);
    a.K = static_cast<int>(p.nopeDim);
    a.N = static_cast<int>(p.kvLoraRank);
    a.outStride = static_cast<int>(p.kvLoraRank + p.ropeDim);
    a.tail = p.ropeDim ? p.qPe.data : nullptr;
    a.tailWidth = static_cast<int>(p.ropeDim);
    return a;
  }

  HeadGemmArgs unabsorbArgs(const UnabsorbOutputParams& p) const {
    HeadGemmArgs a{};
    a.elem = elemOf(p.oLat, "unabsorbOutput");
    a.a = p.oLat.data;
    a.w = p.wUv.data;
    a.wKMajor = false;
    a.out = p.out.data;
    a.tokens = static_cast<int>(p.numTokens);
    a.heads = static_cast<int>(p.numHeads);
    a.K = static_cast<int>(p.kvLoraRank);
    a.N = static_cast<int>(p.vHeadDim);
    a.outStride = static_cast<int>(p.vHeadDim);
    return a;
  }

  // Where each operation of a captured graph finds its index arrays in the graph's device buffer.
  struct GraphOpLayout {
    DecodeConfig config = DecodeConfig::Large;
    DecodePlanCapacity capacity;
    size_t counts = 0, table = 0, work = 0, combine = 0;  // mlaDecode
    size_t slots = 0, positions = 0;                      // appendLatentCache
    PrefillConfig prefillConfig = PrefillConfig::Large;   // mlaPrefill: counts [work items, usedQ], then the work list
    int prefillCapacity = 0;
    size_t prefillCounts = 0, prefillWork = 0;
    size_t gatherTable = 0, gatherCu = 0, gatherStarts = 0;  // gatherLatentCache
  };
  struct CudaGraphState final : GraphState {
    explicit CudaGraphState(DeviceMemory* m) : memory(m) {}
    ~CudaGraphState() override {
      if (exec) rt::cudaGraphExecDestroy(exec);
      if (graph) rt::cudaGraphDestroy(graph);
      if (buffer) memory->release(buffer, bufferBytes);
    }
    DeviceMemory* memory;
    void* buffer = nullptr;  // [index arrays: indexBytes | partial results of split decodes]
    size_t bufferBytes = 0;
    uint8_t* index = nullptr;
    size_t indexBytes = 0;
    std::vector<GraphOpLayout> layout;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
  };

  std::unique_ptr<GraphState> captureGraph(const std::vector<GraphOp>& ops, WorkerContext& ctx) {
    auto g = std::make_unique<CudaGraphState>(&memory_);
    size_t partialOutBytes = 0, partialLseBytes = 0;
    auto take = [&](size_t bytes) {
      const size_t offset = g->indexBytes;
      g->indexBytes += align16(bytes);
      return offset;
    };
    g->layout.resize(ops.size());
    for (size_t i = 0; i < ops.size(); ++i) {
      GraphOpLayout& l = g->layout[i];
      if (const auto* p = std::get_if<MlaDecodeParams>(&ops[i])) {
        l.config = chooseConfig(static_cast<int>(p->headDim));
        l.capacity = decodePlanCapacity(static_cast<int>(p->batch), static_cast<int>(p->queryLen), static_cast<int>(p->numHeads),
                                        static_cast<int>(p->maxBlocksPerSeq * p->blockSize), planOptionsFor(p->plan && p->plan->batchInvariant, l.config));
        l.counts = take(2 * sizeof(int32_t));
        l.table = take(p->blockTable.nbytes());
        l.work = take(size_t(l.capacity.work) * sizeof(DecodeWorkItem));
        l.combine = take(size_t(l.capacity.combine) * sizeof(CombineItem));
        const size_t rows = size_t(l.capacity.partials) * decodeConfigInfo(l.config).blockM;
        partialOutBytes = std::max(partialOutBytes, align16(rows * p->kvLoraRank * sizeof(float)));
        partialLseBytes = std::max(partialLseBytes, align16(rows * sizeof(float)));
        check(prepareDecode(l.config, static_cast<int>(p->headDim)), "cudaFuncSetAttribute (decode shared memory)");
      } else if (const auto* p = std::get_if<AppendLatentCacheParams>(&ops[i])) {
        l.slots = take(p->slotMapping.nbytes());
        if (p->ropeStyle != RopeStyle::None) l.positions = take(p->positions.nbytes());
      } else if (const auto* p = std::get_if<MlaPrefillParams>(&ops[i])) {
        l.prefillConfig = choosePrefillConfig(*p);
        l.prefillCapacity = prefillPlanCapacity(static_cast<int>(p->batch), static_cast<int>(p->totalQ), static_cast<int>(p->numHeads), l.prefillConfig);
        l.prefillCounts = take(2 * sizeof(int32_t));
        l.prefillWork = take(size_t(l.prefillCapacity) * sizeof(PrefillWorkItem));
        check(preparePrefill(l.prefillConfig, static_cast<int>(p->nopeDim), static_cast<int>(p->ropeDim), static_cast<int>(p->vHeadDim)),
              "cudaFuncSetAttribute (prefill shared memory)");
      } else if (const auto* p = std::get_if<GatherLatentCacheParams>(&ops[i])) {
        l.gatherTable = take(p->blockTable.nbytes());
        l.gatherCu = take(p->cuSeqLens.nbytes());
        if (p->seqStarts.present()) l.gatherStarts = take(p->seqStarts.nbytes());
      }
    }
    // The operations of one graph run one after another, so the decodes share one area for partial results.
    g->bufferBytes = g->indexBytes + partialOutBytes + partialLseBytes + 16;
    g->buffer = memory_.allocate(g->bufferBytes);
    g->index = static_cast<uint8_t*>(g->buffer);
    float* partialOut = reinterpret_cast<float*>(g->index + g->indexBytes);
    float* partialLse = reinterpret_cast<float*>(g->index + g->indexBytes + partialOutBytes);

    check(rt::cudaStreamBeginCapture(ctx.stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    try {
      for (size_t i = 0; i < ops.size(); ++i) {
        const GraphOpLayout& l = g->layout[i];
        const uint8_t* base = g->index;
        if (const auto* p = std::get_if<MlaDecodeParams>(&ops[i])) {
          DecodeArgs d = decodeArgs(*p, l.config, reinterpret_cast<const int32_t*>(base + l.table));
          d.partialOut = partialOut;
          d.partialLse = partialLse;
          d.work = reinterpret_cast<const DecodeWorkItem*>(base + l.work);
          d.numWork = l.capacity.work;
          d.numWorkOnDevice = reinterpret_cast<const int*>(base + l.counts);
          CombineArgs c = combineArgs(d, decodeConfigInfo(l.config).blockM);
          c.items = reinterpret_cast<const CombineItem*>(base + l.combine);
          c.numItems = l.capacity.combine;
          c.numItemsOnDevice = reinterpret_cast<const int*>(base + l.counts) + 1;
          check(launchDecode(d, ctx.stream), "mlaDecode launch (graph capture)");
          check(launchCombine(c, ctx.stream), "mlaDecode combine launch (graph capture)");
        } else if (const auto* p = std::get_if<AppendLatentCacheParams>(&ops[i])) {
          const AppendArgs a = appendArgs(*p, base + l.slots, p->ropeStyle != RopeStyle::None ? base + l.positions : nullptr);
          check(launchAppend(a, ctx.stream), "appendLatentCache launch (graph capture)");
        } else if (const auto* p = std::get_if<AbsorbQueryParams>(&ops[i])) {
          check(launchHeadGemm(absorbArgs(*p), ctx.stream), "absorbQuery launch (graph capture)");
        } else if (const auto* p = std::get_if<UnabsorbOutputParams>(&ops[i])) {
          check(launchHeadGemm(unabsorbArgs(*p), ctx.stream), "unabsorbOutput launch (graph capture)");
        } else if (const auto* p = std::get_if<MlaPrefillParams>(&ops[i])) {
          PrefillArgs a = prefillArgs(*p, l.prefillConfig);
          a.work = reinterpret_cast<const PrefillWorkItem*>(base + l.prefillWork);
          a.numWork = l.prefillCapacity;
          a.numWorkOnDevice = reinterpret_cast<const int*>(base + l.prefillCounts);
          a.usedQOnDevice = reinterpret_cast<const int*>(base + l.prefillCounts) + 1;
          check(launchPrefill(a, ctx.stream), "mlaPrefill launch (graph capture)");
          check(launchPrefillPad(a, ctx.stream), "mlaPrefill padding launch (graph capture)");
        } else if (const auto* p = std::get_if<GatherLatentCacheParams>(&ops[i])) {
          const GatherArgs g = gatherArgs(*p, base + l.gatherTable, base + l.gatherCu, p->seqStarts.present() ? base + l.gatherStarts : nullptr);
          check(launchGather(g, ctx.stream), "gatherLatentCache launch (graph capture)");
        } else if (const auto* p = std::get_if<UpProjectKvParams>(&ops[i])) {
          check(launchGemmNt(upProjectArgs(*p), ctx.stream), "upProjectKv launch (graph capture)");
        } else if (const auto* p = std::get_if<MergeAttentionStatesParams>(&ops[i])) {
          check(launchMerge(mergeArgs(*p), ctx.stream), "mergeAttentionStates launch (graph capture)");
        }
      }
    } catch (...) {
      cudaGraph_t broken = nullptr;
      rt::cudaStreamEndCapture(ctx.stream, &broken);  // the stream leaves capture mode whatever went wrong
      if (broken) rt::cudaGraphDestroy(broken);
      throw;
    }
    check(rt::cudaStreamEndCapture(ctx.stream, &g->graph), "cudaStreamEndCapture");
    check(rt::cudaGraphInstantiate(&g->exec, g->graph, 0), "cudaGraphInstantiate");
    return g;
  }

  // The calling worker thread's context on this device (a stream's worker serves one device).
  WorkerContext& worker() {
    thread_local std::map<const CudaBackendImpl*, std::unique_ptr<WorkerContext>> contexts;
    std::unique_ptr<WorkerContext>& ctx = contexts[this];
    if (!ctx) {
      auto c = std::make_unique<WorkerContext>();
      c->device = device_;
      c->memory = &memory_;
      check(rt::cudaSetDevice(device_), "cudaSetDevice");
      check(rt::cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate");
      ctx = std::move(c);
    }
    return *ctx;
  }

  const char* name_;
  DeviceKind kind_;
  int device_;
  CudaMemory memory_;
};

// The backend of one device, made on first use and kept for the life of the process.
inline CudaBackendImpl& backendOfDevice(const char* name, DeviceKind kind, int device) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<CudaBackendImpl>> backends;
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<CudaBackendImpl>& b = backends[device];
  if (!b) b = std::make_unique<CudaBackendImpl>(name, kind, device);
  return *b;
}

}  // namespace mla::MLA_KERNEL_NS
