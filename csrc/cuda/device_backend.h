// The CUDA backend's host code, written once for both runtimes: DeviceBackend<Runtime> over the real CUDA runtime
// and the kernels nvcc compiled (GpuRuntime, cuda_backend.cc), or over the emulated runtime and the kernels compiled
// for cuda-sim (SimRuntime, sim_backend.cc); runtime.h says what a runtime provides. Device memory, per-worker CUDA
// streams with pinned staging, uploads of the index tensors, the decode plan and its workspace, launches and error
// checks. One backend per device, made on first use. Operations only enqueue: no host synchronisation inside one; the
// stream's worker learns of completion through a Fence (an event recorded after the operation) that the stream waits
// on elsewhere.
#pragma once
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
#include "../core/threads.h"
#include "plan.h"
#include "prefill_plan.h"
#include "runtime.h"

namespace mla::cuda {

template <class Rt>
[[noreturn]] void throwCuda(cudaError_t e, const std::string& what) {
  throw Error(e == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::Cuda, what + " failed: " + Rt::cudaGetErrorName(e));
}
template <class Rt>
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throwCuda<Rt>(e, what);
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

template <class Rt>
DeviceProbe probeDevice(int device) {
  DeviceProbe p;
  Rt::cudaRuntimeGetVersion(&p.runtimeVersion);
  Rt::cudaDriverGetVersion(&p.driverVersion);
  int count = 0;
  const cudaError_t e = Rt::cudaGetDeviceCount(&count);
  if (e == cudaErrorInsufficientDriver) {
    p.reason = std::string(Rt::cudaGetErrorName(e)) + ": " +
               (p.driverVersion == 0 ? "no NVIDIA driver is installed" : "the NVIDIA driver is older than the CUDA " +
                                                                              std::to_string(p.runtimeVersion / 1000) + " runtime of this build; update the driver");
    return p;
  }
  if (e != cudaSuccess) {
    p.reason = std::string(Rt::cudaGetErrorName(e)) + (e == cudaErrorNoDevice ? ": no CUDA device found" : "");
    return p;
  }
  if (device >= count) {
    p.reason = "cudaErrorInvalidDevice: device " + std::to_string(device) + " requested, " + std::to_string(count) + " found";
    return p;
  }
  Rt::cudaDeviceGetAttribute(&p.numSms, cudaDevAttrMultiProcessorCount, device);
  Rt::cudaDeviceGetAttribute(&p.smemOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  Rt::cudaDeviceGetAttribute(&p.computeMajor, cudaDevAttrComputeCapabilityMajor, device);
  Rt::cudaDeviceGetAttribute(&p.computeMinor, cudaDevAttrComputeCapabilityMinor, device);
  cudaDeviceProp props{};
  p.name = Rt::deviceName(device, &props);
  if (p.computeMajor < 8) {
    p.reason = p.name + " is sm_" + std::to_string(p.computeMajor) + std::to_string(p.computeMinor) + "; mla-kernels needs sm_80 or newer";
    return p;
  }
  size_t freeBytes = 0;
  if (Rt::cudaSetDevice(device) == cudaSuccess) Rt::cudaMemGetInfo(&freeBytes, &p.totalMemory);
  p.available = true;
  return p;
}

// Device memory with accounting (bytes in use and the peak), for memoryStats().
template <class Rt>
class CudaMemory final : public DeviceMemory {
 public:
  explicit CudaMemory(int device) : device_(device) {}
  void* allocate(size_t bytes) override {
    void* p = nullptr;
    if (bytes == 0) return nullptr;
    check<Rt>(Rt::cudaSetDevice(device_), "cudaSetDevice");
    const cudaError_t e = Rt::cudaMalloc(&p, bytes);
    if (e != cudaSuccess) throwCuda<Rt>(e, "allocating " + std::to_string(bytes) + " bytes of device memory");
    const size_t now = inUse_ += bytes;
    size_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {}
    return p;
  }
  // cudaFree waits for the device to be idle, so no queued work still reads the memory.
  void release(void* p, size_t bytes) override {
    if (!p) return;
    Rt::cudaSetDevice(device_);
    Rt::cudaFree(p);
    inUse_ -= bytes;
  }
  size_t bytesInUse() const override { return inUse_; }
  size_t peakBytes() const override { return peak_; }

 private:
  int device_;
  std::atomic<size_t> inUse_{0}, peak_{0};
};

// The completion of what a stream had queued when the event was recorded.
template <class Rt>
class CudaFence final : public Fence {
 public:
  explicit CudaFence(cudaEvent_t e) : event(e) {}
  ~CudaFence() override { Rt::cudaEventDestroy(event); }
  CudaFence(const CudaFence&) = delete;
  CudaFence& operator=(const CudaFence&) = delete;
  void wait() const override { check<Rt>(Rt::cudaEventSynchronize(event), "the stream's queued work"); }
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
template <class Rt>
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
    if (stream) Rt::cudaStreamSynchronize(stream);  // the thread exits: nothing of it may still be in flight
    for (StagingSlot& s : slots) {
      if (s.pinned) Rt::cudaFreeHost(s.pinned);
      if (s.copied) Rt::cudaEventDestroy(s.copied);
    }
    if (scratch) memory->release(scratch, scratchBytes);
    if (stream) Rt::cudaStreamDestroy(stream);
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
      check<Rt>(Rt::cudaEventCreateWithFlags(&slot->copied, cudaEventDisableTiming), "cudaEventCreate (staging)");
      nextSlot = slots.size();
    }
    if (!slot) {
      slot = &slots[nextSlot % slots.size()];
      check<Rt>(Rt::cudaEventSynchronize(slot->copied), "waiting for a staging slot");
      nextSlot = nextSlot % slots.size() + 1;
    }
    slot->pending = false;
    if (bytes > slot->bytes) {
      if (slot->pinned) Rt::cudaFreeHost(slot->pinned);
      slot->pinned = nullptr;
      slot->bytes = 0;
      check<Rt>(Rt::cudaMallocHost(&slot->pinned, bytes), "allocating pinned staging memory");
      slot->bytes = bytes;
    }
    return *slot;
  }
  // The copies from `slot` are queued: it is free again once the stream gets past them.
  void staged(StagingSlot& slot) {
    check<Rt>(Rt::cudaEventRecord(slot.copied, stream), "cudaEventRecord (staging)");
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
    const cudaError_t e = Rt::cudaEventQuery(s.copied);
    if (e == cudaErrorNotReady) return false;
    check<Rt>(e, "cudaEventQuery (staging)");
    return true;
  }
};

// memcpy, but a zero-byte copy may name a null pointer (an empty vector or tensor): memcpy's may not.
inline void copyBytes(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

template <class Rt>
class DeviceBackend final : public Backend {
 public:
  explicit DeviceBackend(int device) : device_(device), memory_(device) {}

  const char* name() const override { return Rt::kName; }
  Device device() const override { return Device{Rt::kKind, device_}; }
  DeviceMemory* memory() override { return &memory_; }

  // An fp8 cache is written from, and read against, bf16 or f16 tensors.
  void checkSupported(const AppendLatentCacheParams& p) const override { elemOf(isFp8(p.cache) || isDsMla(p.cache) ? p.kvC : p.cache, "appendLatentCache"); }
  void checkSupported(const MlaDecodeParams& p) const override {
    elemOf(p.q, "mlaDecode");
    if (isDsMla(p.cache)) {  // read by the sparse decode kernel in its dense mode
      if (p.headDim > kSparseMaxHeadDim || p.kvLoraRank > kSparseMaxKvLoraRank)
        unsupported("mlaDecode over an fp8_ds_mla cache: rows of at most " + std::to_string(kSparseMaxHeadDim) + " values with kvLoraRank at most " +
                    std::to_string(kSparseMaxKvLoraRank) + ", got " + std::to_string(p.headDim) + " and " + std::to_string(p.kvLoraRank));
      return;
    }
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
    const DecodeConfig config = decodeConfigFor<Rt>(smemOptin(), kDeepSeekHeadDim);
    plan->plan = makePlan(batch, queryLen, numHeads, seqLens, batchInvariant, config);
    plan->numWorkItems = static_cast<int64_t>(plan->plan.work.size());
    plan->numSplitSequences = static_cast<int64_t>(plan->plan.combine.size());
    return plan;
  }

  // Uploads and device-to-device copies only enqueue; a download waits for its copy (the host reads the result).
  void copy(const CopyParams& p) override {
    WorkerContext<Rt>& ctx = worker();
    const size_t bytes = p.src.nbytes();
    const bool srcHost = p.src.device.kind == DeviceKind::Cpu, dstHost = p.dst.device.kind == DeviceKind::Cpu;
    if (bytes == 0) return;
    if (srcHost && dstHost) {
      std::memcpy(p.dst.data, p.src.data, bytes);
      return;
    }
    if (!srcHost && !dstHost) {
      if (p.src.device != p.dst.device)  // peer to peer: direct where the GPUs allow it, else staged by the driver
        check<Rt>(Rt::cudaMemcpyPeerAsync(p.dst.data, p.dst.device.index, p.src.data, p.src.device.index, bytes, ctx.stream), "peer copy");
      else
        check<Rt>(Rt::cudaMemcpyAsync(p.dst.data, p.src.data, bytes, cudaMemcpyDeviceToDevice, ctx.stream), "device-to-device copy");
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
        check<Rt>(Rt::cudaMemcpyAsync(static_cast<uint8_t*>(p.dst.data) + off, stage, n, cudaMemcpyHostToDevice, ctx.stream), "upload");
        ctx.staged(slot);
      } else {
        check<Rt>(Rt::cudaMemcpyAsync(stage, static_cast<const uint8_t*>(p.src.data) + off, n, cudaMemcpyDeviceToHost, ctx.stream), "download");
        ctx.staged(slot);
        check<Rt>(Rt::cudaEventSynchronize(slot.copied), "download");
        std::memcpy(static_cast<uint8_t*>(p.dst.data) + off, stage, n);
      }
    }
  }

  void appendLatentCache(const AppendLatentCacheParams& p) override {
    typename Rt::OpScope scope("appendLatentCache");
    WorkerContext<Rt>& ctx = worker();
    // The index tensors live on the host: upload slots (and positions) into the worker's scratch.
    const size_t slotsBytes = align16(p.slotMapping.nbytes()), posBytes = p.ropeStyle == RopeStyle::None ? 0 : align16(p.positions.nbytes());
    StagingSlot& slot = ctx.staging(slotsBytes + posBytes + 16);
    uint8_t* stage = static_cast<uint8_t*>(slot.pinned);
    copyBytes(stage, p.slotMapping.data, p.slotMapping.nbytes());
    if (posBytes) copyBytes(stage + slotsBytes, p.positions.data, p.positions.nbytes());
    uint8_t* dev = ctx.deviceScratch(slotsBytes + posBytes + 16);
    check<Rt>(Rt::cudaMemcpyAsync(dev, stage, slotsBytes + posBytes, cudaMemcpyHostToDevice, ctx.stream), "appendLatentCache upload");
    ctx.staged(slot);

    const AppendArgs a = appendArgs(p, dev, posBytes ? dev + slotsBytes : nullptr);
    Rt::runOp("appendLatentCache", {{p.cache.data, p.cache.nbytes()}}, [&](auto record) {
      check<Rt>(Rt::launchAppend(a, ctx.stream), "appendLatentCache launch");
      record();
    });
  }

  void mlaDecode(const MlaDecodeParams& p) override {
    typename Rt::OpScope scope("mlaDecode");
    WorkerContext<Rt>& ctx = worker();
    if (isDsMla(p.cache)) return dsMlaDecode(p, ctx);
    const DecodeConfig config = chooseConfig(static_cast<int>(p.headDim));
    DecodePlan made;
    const DecodePlan& plan = planFor(p, config, made);

    const DecodeWorkspace ws = decodeWorkspace(sizeOf(plan), p.blockTable.nbytes(), plan.blockM, p.kvLoraRank);
    StagingSlot& slot = ctx.staging(ws.uploadBytes + 16);
    uint8_t* stage = static_cast<uint8_t*>(slot.pinned);
    stageDecode(stage, ws, plan, p.blockTable.data, p.blockTable.nbytes());
    uint8_t* dev = ctx.deviceScratch(ws.uploadBytes + ws.partialBytes + 16);
    check<Rt>(Rt::cudaMemcpyAsync(dev, stage, ws.uploadBytes, cudaMemcpyHostToDevice, ctx.stream), "mlaDecode upload");
    ctx.staged(slot);

    check<Rt>(Rt::prepareDecode(config, static_cast<int>(p.headDim)), "cudaFuncSetAttribute (decode shared memory)");
    Rt::runOp("mlaDecode", {{p.out.data, p.out.nbytes()}, {p.lse.data, p.lse.nbytes()}}, [&](auto record) {
      enqueueDecode(p, config, ws, dev, dev + ws.uploadBytes, false, ctx.stream, record);
    });
  }

  void absorbQuery(const AbsorbQueryParams& p) override {
    typename Rt::OpScope scope("absorbQuery");
    WorkerContext<Rt>& ctx = worker();
    const HeadGemmArgs a = absorbArgs(p);
    Rt::runOp("absorbQuery", {{p.out.data, p.out.nbytes()}}, [&](auto record) {
      check<Rt>(Rt::launchHeadGemm(a, ctx.stream), "absorbQuery launch");
      record();
    });
  }

  void unabsorbOutput(const UnabsorbOutputParams& p) override {
    typename Rt::OpScope scope("unabsorbOutput");
    WorkerContext<Rt>& ctx = worker();
    const HeadGemmArgs a = unabsorbArgs(p);
    Rt::runOp("unabsorbOutput", {{p.out.data, p.out.nbytes()}}, [&](auto record) {
      check<Rt>(Rt::launchHeadGemm(a, ctx.stream), "unabsorbOutput launch");
      record();
    });
  }

  // A captured graph runs as a CUDA graph. At the first replay every operation's kernels are captured once, reading
  // their index arrays and plans from one device buffer of the graph's own, with grids as large as any plan of those
  // shapes can need; each replay then uploads that buffer in one copy (block tables, slot mappings, the plans of the
  // current lengths and how many CTAs of each grid have work) and launches the graph: one launch for the step.
  void runGraph(const std::vector<GraphOp>& ops, std::unique_ptr<GraphState>& state) override {
    typename Rt::OpScope scope("graph");
    WorkerContext<Rt>& ctx = worker();
    if (!state) state = captureGraph(ops, ctx);
    const auto& graph = static_cast<const CudaGraphState&>(*state);
    StagingSlot& slot = ctx.staging(graph.indexBytes + 16);
    uint8_t* stage = static_cast<uint8_t*>(slot.pinned);
    std::vector<OpOutput> outputs;
    MlaSparseDecodeParams sparse;
    for (size_t i = 0; i < ops.size(); ++i) {
      const GraphOpLayout& l = graph.layout[i];
      if (const auto* p = std::get_if<MlaDecodeParams>(&ops[i]); p && isDsMla(p->cache)) {
        copyBytes(stage + l.dsMlaTable, p->blockTable.data, p->blockTable.nbytes());
        copyBytes(stage + l.dsMlaLens, p->seqLens.data, p->seqLens.nbytes());
        stageSparseItems(dsMlaDecodeArgs(*p, nullptr, nullptr), l.sparse, stage + l.sparseItems);
        outputs.push_back({p->out.data, p->out.nbytes()});
        outputs.push_back({p->lse.data, p->lse.nbytes()});
      } else if (p) {
        DecodePlan made;
        const DecodePlan& plan = planFor(*p, l.config, made);
        try {
          stageDecode(stage + l.decode, l.workspace, plan, p->blockTable.data, p->blockTable.nbytes());
        } catch (const Error& e) {
          throw Error(e.code(), "graph op " + std::to_string(i) + ": " + e.what());
        }
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
      } else if (const MlaSparseDecodeParams* p = sparseOf(ops[i], sparse)) {
        if (p->indicesOnHost()) copyBytes(stage + l.sparseIndices, p->indices.data, p->indices.nbytes());
        stageSparseItems(sparseDecodeArgs(*p, nullptr), l.sparse, stage + l.sparseItems);
        outputs.push_back({p->out.data, p->out.nbytes()});
        outputs.push_back({p->lse.data, p->lse.nbytes()});
      } else if (const auto* p = std::get_if<AppendIndexerCacheParams>(&ops[i])) {
        copyBytes(stage + l.indexerSlots, p->slotMapping.data, p->slotMapping.nbytes());
        for (const OpOutput& o : indexerAppendOutputs(*p)) outputs.push_back(o);
      } else if (const auto* p = std::get_if<LightningIndexerParams>(&ops[i])) {
        copyBytes(stage + l.indexerTable, p->blockTable.data, p->blockTable.nbytes());
        copyBytes(stage + l.indexerLens, p->seqLens.data, p->seqLens.nbytes());
        outputs.push_back({p->indices.data, p->indices.nbytes()});
        outputs.push_back({p->scores.data, p->scores.nbytes()});
      }
    }
    check<Rt>(Rt::cudaMemcpyAsync(graph.index, stage, graph.indexBytes, cudaMemcpyHostToDevice, ctx.stream), "graph upload");
    ctx.staged(slot);
    Rt::runOp("graph", std::move(outputs), [&](auto) { check<Rt>(Rt::cudaGraphLaunch(graph.exec, ctx.stream), "cudaGraphLaunch"); });
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
  void checkSupported(const GatherLatentCacheParams& p) const override {
    elemOf(p.kvC, "gatherLatentCache");
  }
  void checkSupported(const MlaSparseDecodeParams& p) const override {
    elemOf(p.q, "mlaSparseDecode");
    if (p.headDim > kSparseMaxHeadDim || p.kvLoraRank > kSparseMaxKvLoraRank)
      unsupported("mlaSparseDecode: rows of at most " + std::to_string(kSparseMaxHeadDim) + " values with kvLoraRank at most " +
                  std::to_string(kSparseMaxKvLoraRank) + ", got " + std::to_string(p.headDim) + " and " + std::to_string(p.kvLoraRank));
  }
  void checkSupported(const AppendIndexerCacheParams& p) const override { elemOf(p.k, "appendIndexerCache"); }
  void checkSupported(const LightningIndexerParams& p) const override {
    elemOf(p.q, "lightningIndexer");
    if (p.numHeads > kIndexerMaxHeads || p.indexDim > kIndexerMaxDim)
      unsupported("lightningIndexer: at most " + std::to_string(kIndexerMaxHeads) + " indexer heads of at most " + std::to_string(kIndexerMaxDim) +
                  " values, got " + std::to_string(p.numHeads) + " of " + std::to_string(p.indexDim));
  }
  // Host indices are uploaded first (the worker's scratch); device indices are read where they are.
  void mlaSparseDecode(const MlaSparseDecodeParams& p) override {
    typename Rt::OpScope scope("mlaSparseDecode");
    WorkerContext<Rt>& ctx = worker();
    SparseDecodeArgs a = sparseDecodeArgs(p, p.indices.as<const int32_t>());
    const SparseRoom room = sparseRoom(a, a.topk);
    // Scratch: the upload [host indices | combine items], then the partials of a split.
    const size_t indexBytes = p.indicesOnHost() ? align16(p.indices.nbytes()) : 0, uploadBytes = indexBytes + room.itemBytes;
    uint8_t* dev = ctx.deviceScratch(uploadBytes + room.partialBytes + 16);
    if (uploadBytes) {
      StagingSlot& slot = ctx.staging(uploadBytes + 16);
      uint8_t* stage = static_cast<uint8_t*>(slot.pinned);
      if (indexBytes) copyBytes(stage, p.indices.data, p.indices.nbytes());
      stageSparseItems(a, room, stage + indexBytes);
      check<Rt>(Rt::cudaMemcpyAsync(dev, stage, uploadBytes, cudaMemcpyHostToDevice, ctx.stream), "mlaSparseDecode upload");
      ctx.staged(slot);
      if (indexBytes) a.indices = reinterpret_cast<const int32_t*>(dev);
    }
    Rt::runOp("mlaSparseDecode", {{p.out.data, p.out.nbytes()}, {p.lse.data, p.lse.nbytes()}}, [&](auto record) {
      enqueueSparse(a, room, dev + indexBytes, dev + uploadBytes, ctx.stream, record);
    });
  }
  // The slot mapping is uploaded into the worker's scratch, as appendLatentCache's.
  void appendIndexerCache(const AppendIndexerCacheParams& p) override {
    typename Rt::OpScope scope("appendIndexerCache");
    WorkerContext<Rt>& ctx = worker();
    StagingSlot& slot = ctx.staging(p.slotMapping.nbytes() + 16);
    copyBytes(slot.pinned, p.slotMapping.data, p.slotMapping.nbytes());
    uint8_t* dev = ctx.deviceScratch(p.slotMapping.nbytes() + 16);
    check<Rt>(Rt::cudaMemcpyAsync(dev, slot.pinned, p.slotMapping.nbytes(), cudaMemcpyHostToDevice, ctx.stream), "appendIndexerCache upload");
    ctx.staged(slot);
    const IndexerAppendArgs a = indexerAppendArgs(p, dev);
    Rt::runOp("appendIndexerCache", indexerAppendOutputs(p), [&](auto record) {
      check<Rt>(Rt::launchIndexerAppend(a, ctx.stream), "appendIndexerCache launch");
      if (a.numTokens) record();
    });
  }
  // The block table and lengths are uploaded into the worker's scratch, followed by the score rows of a pass.
  void lightningIndexer(const LightningIndexerParams& p) override {
    typename Rt::OpScope scope("lightningIndexer");
    WorkerContext<Rt>& ctx = worker();
    const size_t tableBytes = align16(p.blockTable.nbytes()), uploadBytes = tableBytes + align16(p.seqLens.nbytes());
    StagingSlot& slot = ctx.staging(uploadBytes + 16);
    uint8_t* stage = static_cast<uint8_t*>(slot.pinned);
    copyBytes(stage, p.blockTable.data, p.blockTable.nbytes());
    copyBytes(stage + tableBytes, p.seqLens.data, p.seqLens.nbytes());
    uint8_t* dev = ctx.deviceScratch(uploadBytes + indexerWorkBytes(p) + 16);
    check<Rt>(Rt::cudaMemcpyAsync(dev, stage, uploadBytes, cudaMemcpyHostToDevice, ctx.stream), "lightningIndexer upload");
    ctx.staged(slot);
    const IndexerArgs a = indexerArgs(p, dev, dev + tableBytes, reinterpret_cast<float*>(dev + uploadBytes));
    Rt::runOp("lightningIndexer", {{p.indices.data, p.indices.nbytes()}, {p.scores.data, p.scores.nbytes()}},
              [&](auto record) { enqueueIndexer(a, ctx.stream, record); });
  }
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
    const PrefillConfig config = Rt::prefillSmemBytes(PrefillConfig::Large, 128, 64, 128) <= smemOptin() ? PrefillConfig::Large : PrefillConfig::Small;
    plan->plan = makePrefillPlan(static_cast<int>(batch), static_cast<int>(numHeads), causal, cuSeqLensQ, cuSeqLensKv, config, Rt::prefillConfigInfo(config));
    plan->numWorkItems = static_cast<int64_t>(plan->plan.work.size());
    return plan;
  }

  void mlaPrefill(const MlaPrefillParams& p) override {
    typename Rt::OpScope scope("mlaPrefill");
    WorkerContext<Rt>& ctx = worker();
    const PrefillConfig config = choosePrefillConfig(p);
    PrefillPlan made;
    const PrefillPlan& plan = prefillPlanFor(p, config, made);
    const size_t workBytes = plan.work.size() * sizeof(PrefillWorkItem);
    StagingSlot& slot = ctx.staging(align16(workBytes) + 16);
    copyBytes(slot.pinned, plan.work.data(), workBytes);
    uint8_t* dev = ctx.deviceScratch(align16(workBytes) + 16);
    check<Rt>(Rt::cudaMemcpyAsync(dev, slot.pinned, workBytes, cudaMemcpyHostToDevice, ctx.stream), "mlaPrefill upload");
    ctx.staged(slot);
    PrefillArgs a = prefillArgs(p, config);
    a.work = reinterpret_cast<const PrefillWorkItem*>(dev);
    a.numWork = static_cast<int>(plan.work.size());
    check<Rt>(Rt::preparePrefill(config, a.nopeDim, a.ropeDim, a.vHeadDim), "cudaFuncSetAttribute (prefill shared memory)");
    Rt::runOp("mlaPrefill", {{p.out.data, p.out.nbytes()}, {p.lse.data, p.lse.nbytes()}}, [&](auto record) {
      check<Rt>(Rt::launchPrefill(a, ctx.stream), "mlaPrefill launch");
      if (a.numWork) record();
      check<Rt>(Rt::launchPrefillPad(a, ctx.stream), "mlaPrefill padding launch");
      if (Rt::prefillHasPadding(a)) record();
    });
  }

  void gatherLatentCache(const GatherLatentCacheParams& p) override {
    typename Rt::OpScope scope("gatherLatentCache");
    WorkerContext<Rt>& ctx = worker();
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
    check<Rt>(Rt::cudaMemcpyAsync(dev, stage, bytes, cudaMemcpyHostToDevice, ctx.stream), "gatherLatentCache upload");
    ctx.staged(slot);
    const GatherArgs g = gatherArgs(p, dev, dev + tableBytes, startsBytes ? dev + tableBytes + cuBytes : nullptr);
    Rt::runOp("gatherLatentCache", {{p.kvC.data, p.kvC.nbytes()}, {p.kPe.data, p.kPe.nbytes()}}, [&](auto record) {
      check<Rt>(Rt::launchGather(g, ctx.stream), "gatherLatentCache launch");
      if (g.numRows) record();
    });
  }

  void upProjectKv(const UpProjectKvParams& p) override {
    typename Rt::OpScope scope("upProjectKv");
    WorkerContext<Rt>& ctx = worker();
    const GemmNtArgs g = upProjectArgs(p);
    Rt::runOp("upProjectKv", {{p.kNope.data, p.kNope.nbytes()}, {p.v.data, p.v.nbytes()}}, [&](auto record) {
      check<Rt>(Rt::launchGemmNt(g, ctx.stream), "upProjectKv launch");
      if (g.M) record();
    });
  }

  void mergeAttentionStates(const MergeAttentionStatesParams& p) override {
    typename Rt::OpScope scope("mergeAttentionStates");
    WorkerContext<Rt>& ctx = worker();
    const MergeArgs m = mergeArgs(p);
    Rt::runOp("mergeAttentionStates", {{p.out.data, p.out.nbytes()}, {p.lse.data, p.lse.nbytes()}}, [&](auto record) {
      check<Rt>(Rt::launchMerge(m, ctx.stream), "mergeAttentionStates launch");
      if (m.rows) record();
    });
  }

  std::shared_ptr<const Fence> recordFence() override {
    WorkerContext<Rt>& ctx = worker();
    cudaEvent_t event = nullptr;
    // Blocking: the stream's completer thread sleeps in cudaEventSynchronize instead of spinning on a core.
    check<Rt>(Rt::cudaEventCreateWithFlags(&event, cudaEventDisableTiming | cudaEventBlockingSync), "cudaEventCreate");
    auto fence = std::make_shared<const CudaFence<Rt>>(event);
    check<Rt>(Rt::cudaEventRecord(event, ctx.stream), "cudaEventRecord");
    return fence;
  }

  // A fence of a CUDA stream (of any device) is waited for on the device; any other on the host.
  void waitFence(const Fence& fence) override {
    if (const auto* event = dynamic_cast<const CudaFence<Rt>*>(&fence))
      check<Rt>(Rt::cudaStreamWaitEvent(worker().stream, event->event, 0), "cudaStreamWaitEvent");
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
    if (Rt::prefillSmemBytes(PrefillConfig::Large, nope, rope, vDim) <= optin) return PrefillConfig::Large;
    if (Rt::prefillSmemBytes(PrefillConfig::Small, nope, rope, vDim) <= optin) return PrefillConfig::Small;
    unsupported("mlaPrefill: dims " + std::to_string(nope) + " + " + std::to_string(rope) + ", v " + std::to_string(vDim) + " need " +
                std::to_string(Rt::prefillSmemBytes(PrefillConfig::Small, nope, rope, vDim)) + " bytes of shared memory; the device allows " + std::to_string(optin));
  }

  // The plan from planPrefill (validated against p's lengths) when it was made for these tiles, used in place; else a
  // new one, made into `made`.
  const PrefillPlan& prefillPlanFor(const MlaPrefillParams& p, PrefillConfig config, PrefillPlan& made) const {
    const auto* given = dynamic_cast<const PrefillPlanState*>(p.plan.get());
    if (given && given->plan.config == config) return given->plan;
    made = makePrefillPlan(static_cast<int>(p.batch), static_cast<int>(p.numHeads), p.causal, p.cuSeqLensQ.as<const int32_t>(),
                           p.cuSeqLensKv.as<const int32_t>(), config, Rt::prefillConfigInfo(config));
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
    g.cacheDsMla = isDsMla(p.cache);
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

  [[noreturn]] void unsupported(const std::string& msg) const { throw Error(ErrorCode::Unsupported, std::string(Rt::kName) + ": " + msg); }

  static bool isFp8(const TensorView& t) { return t.dtype == DType::FP8E4M3; }
  static bool isDsMla(const TensorView& t) { return t.dtype == DType::FP8DSMLA; }

  // The sparse kernel's arguments both a sparse decode and a dense decode over fp8_ds_mla give alike.
  template <class Params>
  SparseDecodeArgs sparseKernelArgs(const Params& p, const char* op) const {
    SparseDecodeArgs a{};
    a.elem = elemOf(p.q, op);
    a.cacheKind = isDsMla(p.cache) ? SparseCache::Fp8DsMla : isFp8(p.cache) ? SparseCache::Fp8 : SparseCache::Elem;
    a.q = p.q.data;
    a.cache = p.cache.data;
    a.out = p.out.data;
    a.lse = p.lse.template as<float>();
    a.numQueries = static_cast<int>(p.batch * p.queryLen);
    a.queryLen = static_cast<int>(p.queryLen);
    a.numHeads = static_cast<int>(p.numHeads);
    a.headDim = static_cast<int>(p.headDim);
    a.kvLoraRank = static_cast<int>(p.kvLoraRank);
    a.rowBytes = p.cache.dim(2) * static_cast<int64_t>(dtypeSize(p.cache.dtype));
    a.scaleLog2 = p.softmaxScale * 1.4426950408889634f;
    return a;
  }
  SparseDecodeArgs sparseDecodeArgs(const MlaSparseDecodeParams& p, const int32_t* indicesOnDevice) const {
    SparseDecodeArgs a = sparseKernelArgs(p, "mlaSparseDecode");
    a.cacheScale = p.cacheScale;
    a.indices = indicesOnDevice;
    a.topk = static_cast<int>(p.topk);
    a.numSlots = p.numSlots();
    a.lseTokenMajor = p.lseTokenMajor ? 1 : 0;
    return a;
  }
  // Dense decode over an fp8_ds_mla cache: the sparse kernel's dense mode, every visible row of each sequence from the
  // block table and lengths (device copies). CUDA cores, split over the capacity of the block table's rows.
  SparseDecodeArgs dsMlaDecodeArgs(const MlaDecodeParams& p, const uint8_t* tableOnDevice, const uint8_t* lensOnDevice) const {
    SparseDecodeArgs a = sparseKernelArgs(p, "mlaDecode");
    a.numSlots = p.numBlocks * p.blockSize;
    a.blockTable = reinterpret_cast<const int32_t*>(tableOnDevice);
    a.seqLens = reinterpret_cast<const int32_t*>(lensOnDevice);
    a.blockSize = static_cast<int>(p.blockSize);
    a.maxBlocksPerSeq = static_cast<int>(p.maxBlocksPerSeq);
    a.causal = p.causal ? 1 : 0;
    return a;
  }
  // How the sparse kernel splits a launch over `rows` rows per query (plan.h's sparseDecodeSplit), and the room a split
  // takes: its combine items (one per query, uploaded) and its partials [partialOut | partialLse].
  struct SparseRoom {
    SparseSplit split;
    size_t itemBytes = 0, partialLse = 0, partialBytes = 0;
  };
  SparseRoom sparseRoom(const SparseDecodeArgs& a, int rows) const {
    SparseRoom r;
    r.split = SparseSplit{1, rows};
    if (a.numQueries == 0 || a.numHeads == 0) return r;
    DecodePlanOptions opt = Rt::planOptions();
    Rt::cudaDeviceGetAttribute(&opt.numSms, cudaDevAttrMultiProcessorCount, device_);
    r.split = sparseDecodeSplit(a.numQueries, a.numHeads, a.kvLoraRank, rows, opt);
    if (r.split.numSplits <= 1) return r;
    const size_t partials = static_cast<size_t>(a.numQueries) * r.split.numSplits * a.numHeads;
    r.itemBytes = align16(static_cast<size_t>(a.numQueries) * sizeof(CombineItem));
    r.partialLse = align16(partials * a.kvLoraRank * sizeof(float));
    r.partialBytes = r.partialLse + align16(partials * sizeof(float));
    return r;
  }
  // A split's combine items: one per query, rows of its heads. A token-major lse is the combine's lse of queries as
  // sequences of one position.
  static void stageSparseItems(const SparseDecodeArgs& a, const SparseRoom& r, uint8_t* upload) {
    if (r.split.numSplits <= 1) return;
    for (int query = 0; query < a.numQueries; ++query) {
      const CombineItem item{a.lseTokenMajor ? query : query / a.queryLen, a.lseTokenMajor ? 0 : query % a.queryLen, query * r.split.numSplits,
                             r.split.numSplits};
      std::memcpy(upload + query * sizeof(CombineItem), &item, sizeof item);
    }
  }
  // Queues the sparse kernel and, split, the decode's combine over `items` (device) and `partials`; record() follows each
  // launch that has work (runOp's).
  template <class Record>
  void enqueueSparse(SparseDecodeArgs a, const SparseRoom& r, const uint8_t* items, uint8_t* partials, cudaStream_t stream, Record&& record) const {
    a.numSplits = r.split.numSplits;
    a.splitRows = r.split.splitRows;
    if (a.numSplits > 1) {
      a.partialOut = reinterpret_cast<float*>(partials);
      a.partialLse = reinterpret_cast<float*>(partials + r.partialLse);
    }
    check<Rt>(Rt::launchSparseDecode(a, stream), "sparse decode launch");
    if (a.numQueries && a.numHeads) record();
    if (a.numSplits <= 1) return;
    CombineArgs c{};
    c.elem = a.elem;
    c.partialOut = a.partialOut;
    c.partialLse = a.partialLse;
    c.items = reinterpret_cast<const CombineItem*>(items);
    c.numItems = a.numQueries;
    c.blockM = a.numHeads;
    c.out = a.out;
    c.lse = a.lse;
    c.queryLen = a.lseTokenMajor ? 1 : a.queryLen;
    c.numHeads = a.numHeads;
    c.kvLoraRank = a.kvLoraRank;
    check<Rt>(Rt::launchCombine(c, stream), "sparse decode combine launch");
    record();
  }
  // The block table and lengths are uploaded into the worker's scratch (a plan, if given, is not needed).
  void dsMlaDecode(const MlaDecodeParams& p, WorkerContext<Rt>& ctx) {
    const size_t tableBytes = align16(p.blockTable.nbytes()), itemsAt = tableBytes + align16(p.seqLens.nbytes());
    const SparseRoom room = sparseRoom(dsMlaDecodeArgs(p, nullptr, nullptr), static_cast<int>(p.maxBlocksPerSeq * p.blockSize));
    const size_t uploadBytes = itemsAt + room.itemBytes;  // [table | lengths | combine items], then a split's partials
    StagingSlot& slot = ctx.staging(uploadBytes + 16);
    uint8_t* stage = static_cast<uint8_t*>(slot.pinned);
    copyBytes(stage, p.blockTable.data, p.blockTable.nbytes());
    copyBytes(stage + tableBytes, p.seqLens.data, p.seqLens.nbytes());
    uint8_t* dev = ctx.deviceScratch(uploadBytes + room.partialBytes + 16);
    const SparseDecodeArgs a = dsMlaDecodeArgs(p, dev, dev + tableBytes);
    stageSparseItems(a, room, stage + itemsAt);
    check<Rt>(Rt::cudaMemcpyAsync(dev, stage, uploadBytes, cudaMemcpyHostToDevice, ctx.stream), "mlaDecode upload");
    ctx.staged(slot);
    Rt::runOp("mlaDecode", {{p.out.data, p.out.nbytes()}, {p.lse.data, p.lse.nbytes()}}, [&](auto record) {
      enqueueSparse(a, room, dev + itemsAt, dev + uploadBytes, ctx.stream, record);
    });
  }
  // --- the lightning indexer ---
  static IndexerAppendArgs indexerAppendArgs(const AppendIndexerCacheParams& p, const uint8_t* slotsOnDevice) {
    IndexerAppendArgs a{};
    a.elem = p.k.dtype == DType::BF16 ? ElemType::BF16 : ElemType::F16;
    a.cacheFp8 = isFp8(p.cache) ? 1 : 0;
    a.k = p.k.data;
    a.slotMapping = reinterpret_cast<const int32_t*>(slotsOnDevice);
    a.cache = p.cache.data;
    a.scales = a.cacheFp8 ? p.scales.as<float>() : nullptr;
    a.numTokens = static_cast<int>(p.numTokens);
    a.indexDim = static_cast<int>(p.indexDim);
    return a;
  }
  static std::vector<OpOutput> indexerAppendOutputs(const AppendIndexerCacheParams& p) {
    std::vector<OpOutput> out{{p.cache.data, p.cache.nbytes()}};
    if (isFp8(p.cache)) out.push_back({p.scales.data, p.scales.nbytes()});
    return out;
  }
  // Score rows of every position a sequence can have (so a graph's replay with other lengths fits), in passes of at
  // most kIndexerPassBytes (at least one row).
  static constexpr size_t kIndexerPassBytes = size_t{64} << 20;
  static int64_t indexerStride(const LightningIndexerParams& p) { return p.maxBlocksPerSeq * p.blockSize; }
  static int64_t indexerRowsPerPass(const LightningIndexerParams& p) {
    const int64_t rowBytes = std::max<int64_t>(1, indexerStride(p) * int64_t{4});
    return std::max<int64_t>(1, std::min<int64_t>(p.batch * p.queryLen, static_cast<int64_t>(kIndexerPassBytes) / rowBytes));
  }
  static size_t indexerWorkBytes(const LightningIndexerParams& p) { return align16(static_cast<size_t>(indexerRowsPerPass(p) * indexerStride(p)) * 4); }
  static IndexerArgs indexerArgs(const LightningIndexerParams& p, const uint8_t* table, const uint8_t* lens, float* work) {
    IndexerArgs a{};
    a.elem = p.q.dtype == DType::BF16 ? ElemType::BF16 : ElemType::F16;
    a.cacheFp8 = isFp8(p.cache) ? 1 : 0;
    a.q = p.q.data;
    a.weights = p.weights.as<const float>();
    a.cache = p.cache.data;
    a.scales = a.cacheFp8 ? p.scales.as<const float>() : nullptr;
    a.blockTable = reinterpret_cast<const int32_t*>(table);
    a.seqLens = reinterpret_cast<const int32_t*>(lens);
    a.work = work;
    a.indices = p.indices.as<int32_t>();
    a.scores = p.scores.as<float>();
    a.numRows = static_cast<int>(p.batch * p.queryLen);  // all rows; enqueueIndexer runs them in passes
    a.queryLen = static_cast<int>(p.queryLen);
    a.numHeads = static_cast<int>(p.numHeads);
    a.indexDim = static_cast<int>(p.indexDim);
    a.blockSize = static_cast<int>(p.blockSize);
    a.maxBlocksPerSeq = static_cast<int>(p.maxBlocksPerSeq);
    a.topk = static_cast<int>(p.topk);
    a.causal = p.causal ? 1 : 0;
    a.workStride = indexerStride(p);
    return a;
  }
  template <class Record>
  static void enqueueIndexer(const IndexerArgs& all, cudaStream_t stream, Record record) {
    const int64_t perPass = std::max<int64_t>(1, static_cast<int64_t>(kIndexerPassBytes) / std::max<int64_t>(1, all.workStride * 4));
    for (int64_t row0 = 0; row0 < all.numRows; row0 += perPass) {
      IndexerArgs a = all;
      a.rowBase = static_cast<int>(row0);
      a.numRows = static_cast<int>(std::min<int64_t>(perPass, all.numRows - row0));
      check<Rt>(Rt::launchIndexerScores(a, stream), "lightningIndexer scores launch");
      record();
      check<Rt>(Rt::launchIndexerTopk(a, stream), "lightningIndexer top-k launch");
      record();
    }
  }

  ElemType elemOf(const TensorView& t, const char* op) const {
    if (t.dtype == DType::BF16) return ElemType::BF16;
    if (t.dtype == DType::F16) return ElemType::F16;
    unsupported(std::string(op) + ": the CUDA kernels take bf16 or f16 tensors, " + t.name + " is " + dtypeName(t.dtype) +
                " (f32 runs on the cpu backend)");
  }

  // The largest decode tiles whose shared memory the device allows for this row width.
  DecodeConfig chooseConfig(int headDim) const {
    const int optin = smemOptin();
    const DecodeConfig config = decodeConfigFor<Rt>(optin, headDim);
    if (Rt::decodeSmemBytes(config, headDim, false) <= optin) return config;
    unsupported("mlaDecode: rows of " + std::to_string(headDim) + " elements need " + std::to_string(Rt::decodeSmemBytes(DecodeConfig::Small, headDim, false)) +
                " bytes of shared memory; the device allows " + std::to_string(optin));
  }

  int smemOptin() const {
    int v = 0;
    Rt::cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_);
    return v;
  }

  DecodePlanOptions planOptionsFor(bool batchInvariant, DecodeConfig config) const {
    DecodePlanOptions opt = Rt::planOptions();
    Rt::cudaDeviceGetAttribute(&opt.numSms, cudaDevAttrMultiProcessorCount, device_);
    opt.batchInvariant = opt.batchInvariant || batchInvariant;
    opt.config = config;
    opt.tiles = Rt::decodeConfigInfo(config);
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
    a.cacheDsMla = isDsMla(p.cache);
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
    int major = 0, minor = 0;
    Rt::cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_);
    Rt::cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device_);
    d.fp8Cvt = d.cacheFp8 && 10 * major + minor >= 89;
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

  // Queues a decode and its combine over workspace `ws`: `upload` is the device copy of its upload, `partials` its
  // partial results. A captured graph launches the workspace's room and the kernels read from the upload's counts
  // how many work and combine items have work (`counted`); a direct call launches its plan's items. record() follows
  // each launch that has work (runOp's).
  template <class Record>
  void enqueueDecode(const MlaDecodeParams& p, DecodeConfig config, const DecodeWorkspace& ws, const uint8_t* upload, uint8_t* partials, bool counted,
                     cudaStream_t stream, Record&& record) const {
    DecodeArgs d = decodeArgs(p, config, reinterpret_cast<const int32_t*>(upload + ws.table));
    d.partialOut = reinterpret_cast<float*>(partials + ws.partialOut);
    d.partialLse = reinterpret_cast<float*>(partials + ws.partialLse);
    d.work = reinterpret_cast<const DecodeWorkItem*>(upload + ws.work);
    d.numWork = ws.room.work;
    if (counted) d.numWorkOnDevice = reinterpret_cast<const int*>(upload + ws.counts);
    CombineArgs c = combineArgs(d, Rt::decodeConfigInfo(config).blockM);
    c.items = reinterpret_cast<const CombineItem*>(upload + ws.combine);
    c.numItems = ws.room.combine;
    if (counted) c.numItemsOnDevice = reinterpret_cast<const int*>(upload + ws.counts) + 1;
    check<Rt>(Rt::launchDecode(d, stream), "mlaDecode launch");
    if (d.numWork) record();
    check<Rt>(Rt::launchCombine(c, stream), "mlaDecode combine launch");
    if (c.numItems) record();
  }

  CombineArgs combineArgs(const DecodeArgs& d, int blockM) const {
    CombineArgs c{};
    int major = 0;
    Rt::cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_);
    c.dependentLaunch = major >= 9;  // programmatic dependent launch: the combine overlaps the decode's end (sm_90+)
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
    DecodeConfig config = DecodeConfig::Large;  // mlaDecode: its tiles, and its workspace's upload at `decode`, sized by
    DecodeWorkspace workspace;                   // the capacity of any plan of its shapes
    size_t decode = 0;
    size_t dsMlaTable = 0, dsMlaLens = 0;        // mlaDecode over an fp8_ds_mla cache
    size_t slots = 0, positions = 0;             // appendLatentCache
    PrefillConfig prefillConfig = PrefillConfig::Large;  // mlaPrefill: counts [work items, usedQ], then the work list
    int prefillCapacity = 0;
    size_t prefillCounts = 0, prefillWork = 0;
    size_t gatherTable = 0, gatherCu = 0, gatherStarts = 0;  // gatherLatentCache
    size_t sparseIndices = 0;                                // mlaSparseDecode / mlaSparsePrefill: host indices
    SparseRoom sparse;                                       // the sparse kernel (sparse decodes, fp8_ds_mla decodes):
    size_t sparseItems = 0;                                  // its split and combine items
    size_t indexerSlots = 0;                                 // appendIndexerCache
    size_t indexerTable = 0, indexerLens = 0;                // lightningIndexer
  };
  // The sparse decode an operation is (a sparse prefill's, made into `made`), or null.
  static const MlaSparseDecodeParams* sparseOf(const GraphOp& op, MlaSparseDecodeParams& made) {
    if (const auto* p = std::get_if<MlaSparseDecodeParams>(&op)) return p;
    if (const auto* p = std::get_if<MlaSparsePrefillParams>(&op)) return &(made = sparsePrefillAsDecode(*p));
    return nullptr;
  }
  struct CudaGraphState final : GraphState {
    explicit CudaGraphState(DeviceMemory* m) : memory(m) {}
    ~CudaGraphState() override {
      if (exec) Rt::cudaGraphExecDestroy(exec);
      if (graph) Rt::cudaGraphDestroy(graph);
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

  std::unique_ptr<GraphState> captureGraph(const std::vector<GraphOp>& ops, WorkerContext<Rt>& ctx) {
    auto g = std::make_unique<CudaGraphState>(&memory_);
    size_t partialBytes = 0;
    auto take = [&](size_t bytes) {
      const size_t offset = g->indexBytes;
      g->indexBytes += align16(bytes);
      return offset;
    };
    g->layout.resize(ops.size());
    MlaSparseDecodeParams sparse;
    for (size_t i = 0; i < ops.size(); ++i) {
      GraphOpLayout& l = g->layout[i];
      if (const auto* p = std::get_if<MlaDecodeParams>(&ops[i]); p && isDsMla(p->cache)) {
        l.dsMlaTable = take(p->blockTable.nbytes());
        l.dsMlaLens = take(p->seqLens.nbytes());
        l.sparse = sparseRoom(dsMlaDecodeArgs(*p, nullptr, nullptr), static_cast<int>(p->maxBlocksPerSeq * p->blockSize));
        l.sparseItems = take(l.sparse.itemBytes);
        partialBytes = std::max(partialBytes, l.sparse.partialBytes);
      } else if (p) {
        l.config = chooseConfig(static_cast<int>(p->headDim));
        const DecodePlanCapacity capacity =
            decodePlanCapacity(static_cast<int>(p->batch), static_cast<int>(p->queryLen), static_cast<int>(p->numHeads),
                               static_cast<int>(p->maxBlocksPerSeq * p->blockSize), planOptionsFor(p->plan && p->plan->batchInvariant, l.config));
        l.workspace = decodeWorkspace(capacity, p->blockTable.nbytes(), Rt::decodeConfigInfo(l.config).blockM, p->kvLoraRank);
        l.decode = take(l.workspace.uploadBytes);
        partialBytes = std::max(partialBytes, l.workspace.partialBytes);
        check<Rt>(Rt::prepareDecode(l.config, static_cast<int>(p->headDim)), "cudaFuncSetAttribute (decode shared memory)");
      } else if (const auto* p = std::get_if<AppendLatentCacheParams>(&ops[i])) {
        l.slots = take(p->slotMapping.nbytes());
        if (p->ropeStyle != RopeStyle::None) l.positions = take(p->positions.nbytes());
      } else if (const auto* p = std::get_if<MlaPrefillParams>(&ops[i])) {
        l.prefillConfig = choosePrefillConfig(*p);
        l.prefillCapacity = prefillPlanCapacity(static_cast<int>(p->batch), static_cast<int>(p->totalQ), static_cast<int>(p->numHeads),
                                                Rt::prefillConfigInfo(l.prefillConfig));
        l.prefillCounts = take(2 * sizeof(int32_t));
        l.prefillWork = take(size_t(l.prefillCapacity) * sizeof(PrefillWorkItem));
        check<Rt>(Rt::preparePrefill(l.prefillConfig, static_cast<int>(p->nopeDim), static_cast<int>(p->ropeDim), static_cast<int>(p->vHeadDim)),
              "cudaFuncSetAttribute (prefill shared memory)");
      } else if (const auto* p = std::get_if<GatherLatentCacheParams>(&ops[i])) {
        l.gatherTable = take(p->blockTable.nbytes());
        l.gatherCu = take(p->cuSeqLens.nbytes());
        if (p->seqStarts.present()) l.gatherStarts = take(p->seqStarts.nbytes());
      } else if (const MlaSparseDecodeParams* p = sparseOf(ops[i], sparse)) {
        if (p->indicesOnHost()) l.sparseIndices = take(p->indices.nbytes());
        const SparseDecodeArgs a = sparseDecodeArgs(*p, nullptr);
        l.sparse = sparseRoom(a, a.topk);
        l.sparseItems = take(l.sparse.itemBytes);
        partialBytes = std::max(partialBytes, l.sparse.partialBytes);
      } else if (const auto* p = std::get_if<AppendIndexerCacheParams>(&ops[i])) {
        l.indexerSlots = take(p->slotMapping.nbytes());
      } else if (const auto* p = std::get_if<LightningIndexerParams>(&ops[i])) {
        l.indexerTable = take(p->blockTable.nbytes());
        l.indexerLens = take(p->seqLens.nbytes());
        partialBytes = std::max(partialBytes, indexerWorkBytes(*p));
      }
    }
    // The operations of one graph run one after another, so the decodes share one area for partial results.
    g->bufferBytes = g->indexBytes + partialBytes + 16;
    g->buffer = memory_.allocate(g->bufferBytes);
    g->index = static_cast<uint8_t*>(g->buffer);
    uint8_t* partials = g->index + g->indexBytes;

    check<Rt>(Rt::cudaStreamBeginCapture(ctx.stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    try {
      for (size_t i = 0; i < ops.size(); ++i) {
        const GraphOpLayout& l = g->layout[i];
        const uint8_t* base = g->index;
        if (const auto* p = std::get_if<MlaDecodeParams>(&ops[i]); p && isDsMla(p->cache)) {
          enqueueSparse(dsMlaDecodeArgs(*p, base + l.dsMlaTable, base + l.dsMlaLens), l.sparse, base + l.sparseItems, partials, ctx.stream, [] {});
        } else if (p) {
          enqueueDecode(*p, l.config, l.workspace, base + l.decode, partials, true, ctx.stream, [] {});
        } else if (const auto* p = std::get_if<AppendLatentCacheParams>(&ops[i])) {
          const AppendArgs a = appendArgs(*p, base + l.slots, p->ropeStyle != RopeStyle::None ? base + l.positions : nullptr);
          check<Rt>(Rt::launchAppend(a, ctx.stream), "appendLatentCache launch (graph capture)");
        } else if (const auto* p = std::get_if<AbsorbQueryParams>(&ops[i])) {
          check<Rt>(Rt::launchHeadGemm(absorbArgs(*p), ctx.stream), "absorbQuery launch (graph capture)");
        } else if (const auto* p = std::get_if<UnabsorbOutputParams>(&ops[i])) {
          check<Rt>(Rt::launchHeadGemm(unabsorbArgs(*p), ctx.stream), "unabsorbOutput launch (graph capture)");
        } else if (const auto* p = std::get_if<MlaPrefillParams>(&ops[i])) {
          PrefillArgs a = prefillArgs(*p, l.prefillConfig);
          a.work = reinterpret_cast<const PrefillWorkItem*>(base + l.prefillWork);
          a.numWork = l.prefillCapacity;
          a.numWorkOnDevice = reinterpret_cast<const int*>(base + l.prefillCounts);
          a.usedQOnDevice = reinterpret_cast<const int*>(base + l.prefillCounts) + 1;
          check<Rt>(Rt::launchPrefill(a, ctx.stream), "mlaPrefill launch (graph capture)");
          check<Rt>(Rt::launchPrefillPad(a, ctx.stream), "mlaPrefill padding launch (graph capture)");
        } else if (const auto* p = std::get_if<GatherLatentCacheParams>(&ops[i])) {
          const GatherArgs g = gatherArgs(*p, base + l.gatherTable, base + l.gatherCu, p->seqStarts.present() ? base + l.gatherStarts : nullptr);
          check<Rt>(Rt::launchGather(g, ctx.stream), "gatherLatentCache launch (graph capture)");
        } else if (const auto* p = std::get_if<UpProjectKvParams>(&ops[i])) {
          check<Rt>(Rt::launchGemmNt(upProjectArgs(*p), ctx.stream), "upProjectKv launch (graph capture)");
        } else if (const auto* p = std::get_if<MergeAttentionStatesParams>(&ops[i])) {
          check<Rt>(Rt::launchMerge(mergeArgs(*p), ctx.stream), "mergeAttentionStates launch (graph capture)");
        } else if (const MlaSparseDecodeParams* p = sparseOf(ops[i], sparse)) {
          const int32_t* indices = p->indicesOnHost() ? reinterpret_cast<const int32_t*>(base + l.sparseIndices) : p->indices.as<const int32_t>();
          enqueueSparse(sparseDecodeArgs(*p, indices), l.sparse, base + l.sparseItems, partials, ctx.stream, [] {});
        } else if (const auto* p = std::get_if<AppendIndexerCacheParams>(&ops[i])) {
          check<Rt>(Rt::launchIndexerAppend(indexerAppendArgs(*p, base + l.indexerSlots), ctx.stream), "appendIndexerCache launch (graph capture)");
        } else if (const auto* p = std::get_if<LightningIndexerParams>(&ops[i])) {
          enqueueIndexer(indexerArgs(*p, base + l.indexerTable, base + l.indexerLens, reinterpret_cast<float*>(partials)), ctx.stream, [] {});
        }
      }
    } catch (...) {
      cudaGraph_t broken = nullptr;
      Rt::cudaStreamEndCapture(ctx.stream, &broken);  // the stream leaves capture mode whatever went wrong
      if (broken) Rt::cudaGraphDestroy(broken);
      throw;
    }
    check<Rt>(Rt::cudaStreamEndCapture(ctx.stream, &g->graph), "cudaStreamEndCapture");
    check<Rt>(Rt::cudaGraphInstantiate(&g->exec, g->graph, 0), "cudaGraphInstantiate");
    return g;
  }

  // The calling worker thread's context on this device (a stream's worker serves one device).
  WorkerContext<Rt>& worker() {
    thread_local std::map<const DeviceBackend*, std::unique_ptr<WorkerContext<Rt>>> contexts;
    std::unique_ptr<WorkerContext<Rt>>& ctx = contexts[this];
    if (!ctx) {
      auto c = std::make_unique<WorkerContext<Rt>>();
      c->device = device_;
      c->memory = &memory_;
      check<Rt>(Rt::cudaSetDevice(device_), "cudaSetDevice");
      check<Rt>(Rt::cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate");
      ctx = std::move(c);
    }
    return *ctx;
  }

  int device_;
  CudaMemory<Rt> memory_;
};

// The backend of one device, made on first use and kept for the life of the process.
template <class Rt>
DeviceBackend<Rt>& backendOfDevice(int device) {
  static std::mutex mu;
  static auto& backends = neverDestroyed<std::map<int, std::unique_ptr<DeviceBackend<Rt>>>>();
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<DeviceBackend<Rt>>& b = backends[device];
  if (!b) b = std::make_unique<DeviceBackend<Rt>>(device);
  return *b;
}

}  // namespace mla::cuda
