#include "sim_backend.h"

#include <cmath>
#include <cstring>
#include <mutex>

#include "../core/backend.h"
#include "../core/errors.h"
#include "cuda_sim_api.h"
#include "plan.h"

namespace mla::cuda {
namespace {

namespace K = ::mla::MLA_KERNEL_NS;

std::mutex gMu;
SimSettings gSettings;
SimOpRecord gLast;

[[noreturn]] void unsupported(const std::string& msg) { throw Error(ErrorCode::Unsupported, "cuda-sim: " + msg); }

K::ElemType elemOf(const TensorView& t, const char* op) {
  if (t.dtype == DType::BF16) return K::ElemType::BF16;
  if (t.dtype == DType::F16) return K::ElemType::F16;
  unsupported(std::string(op) + ": the CUDA kernels take bf16 or f16 tensors, " + t.name + " is " + dtypeName(t.dtype) +
              " (f32 runs on the cpu backend)");
}

struct Buffer {
  void* data;
  size_t bytes;
};

// Runs `launchAll` under each thread order, restoring the outputs in between, and demands identical bits.
template <class Fn>
void runChecked(const char* op, std::vector<Buffer> outputs, Fn&& launchAll) {
  const SimSettings settings = simSettings();
  std::vector<std::vector<uint8_t>> initial, first;
  for (const Buffer& b : outputs) initial.emplace_back(static_cast<uint8_t*>(b.data), static_cast<uint8_t*>(b.data) + b.bytes);
  SimOpRecord record;
  record.op = op;
  const int orders = settings.checkOrders ? 3 : 1;
  for (int o = 0; o < orders; ++o) {
    const cudasim::Order order = cudasim::kAllOrders[o];
    cudasim::ScopedOrder scoped(order, settings.seed);
    if (o > 0)
      for (size_t i = 0; i < outputs.size(); ++i) std::memcpy(outputs[i].data, initial[i].data(), outputs[i].bytes);
    std::vector<SimLaunch> launches;
    try {
      launchAll([&] {
        const cudasim::LaunchRecord& r = cudasim::last_launch();
        launches.push_back(SimLaunch{r.name, r.bytes_read, r.bytes_written, r.fiber_switches, r.grid.x, r.grid.y, r.block.x, r.seconds});
      });
    } catch (const cudasim::SimError& e) {
      throw Error(ErrorCode::Internal, std::string("cuda-sim: ") + op + " under thread order " + cudasim::order_name(order) + ": " + e.what());
    }
    if (o == 0) {
      record.launches = launches;
      for (const SimLaunch& l : launches) {
        record.bytesRead += l.bytesRead;
        record.bytesWritten += l.bytesWritten;
      }
      for (const Buffer& b : outputs) first.emplace_back(static_cast<uint8_t*>(b.data), static_cast<uint8_t*>(b.data) + b.bytes);
      continue;
    }
    for (size_t i = 0; i < outputs.size(); ++i)
      if (std::memcmp(outputs[i].data, first[i].data(), outputs[i].bytes) != 0) {
        std::string kernels;
        for (const SimLaunch& l : launches) kernels += (kernels.empty() ? "" : ", ") + l.kernel;
        throw Error(ErrorCode::Internal, std::string("cuda-sim: ") + op + " (kernels " + kernels + ") wrote different bits under thread order " +
                                             cudasim::order_name(order) + " than forward: a race between threads (missing barrier?)");
      }
  }
  record.ordersChecked = orders;
  std::lock_guard<std::mutex> lock(gMu);
  gLast = std::move(record);
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(ErrorCode::Cuda, std::string("cuda-sim: ") + what + " failed");
}

struct SimPlan final : DecodePlanHandle {
  K::DecodePlan plan;
};

K::DecodePlan makePlan(int64_t batch, int64_t queryLen, int64_t numHeads, const int32_t* seqLens, bool batchInvariant) {
  const SimSettings s = simSettings();
  K::DecodePlanOptions opt;
  opt.numSms = s.numSms;
  opt.splitRows = s.splitRows;
  opt.batchInvariant = batchInvariant || s.batchInvariant;
  opt.config = s.smallConfig ? K::DecodeConfig::Small : K::DecodeConfig::Large;
  return K::makeDecodePlan(static_cast<int>(batch), static_cast<int>(queryLen), static_cast<int>(numHeads), seqLens, opt);
}

class SimBackend final : public Backend {
 public:
  std::shared_ptr<DecodePlanHandle> planDecode(int64_t batch, int64_t queryLen, int64_t numHeads, const int32_t* seqLens,
                                               bool batchInvariant) const override {
    auto plan = std::make_shared<SimPlan>();
    fillPlanHandle(*plan, name(), batch, queryLen, numHeads, seqLens, batchInvariant);
    plan->plan = makePlan(batch, queryLen, numHeads, seqLens, batchInvariant);
    plan->numWorkItems = static_cast<int64_t>(plan->plan.work.size());
    plan->numSplitSequences = static_cast<int64_t>(plan->plan.combine.size());
    return plan;
  }

  const char* name() const override { return "cuda-sim"; }
  Device device() const override { return Device{}; }

  void checkSupported(const AppendLatentCacheParams& p) const override { elemOf(p.cache, "appendLatentCache"); }

  void checkSupported(const MlaDecodeParams& p) const override {
    elemOf(p.q, "mlaDecode");
    if (p.headDim % 16 != 0)
      unsupported("mlaDecode: q's last dimension (kvLoraRank + ropeDim = " + std::to_string(p.headDim) + ") must be a multiple of 16");
    if (p.kvLoraRank % 16 != 0 || p.kvLoraRank > 512)
      unsupported("mlaDecode: kvLoraRank must be a multiple of 16 and at most 512, got " + std::to_string(p.kvLoraRank));
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

  void appendLatentCache(const AppendLatentCacheParams& p) override {
    K::AppendArgs a{};
    a.elem = elemOf(p.cache, "appendLatentCache");
    a.cache = p.cache.data;
    a.kvC = p.kvC.data;
    a.kPe = p.kPe.data;
    a.slotMapping = p.slotMapping.as<const int32_t>();
    a.positions = p.ropeStyle == RopeStyle::None ? nullptr : p.positions.as<const int32_t>();
    a.cos = p.cos.as<const float>();
    a.sin = p.sin.as<const float>();
    a.ropeStyle = static_cast<int>(p.ropeStyle);
    a.numTokens = static_cast<int>(p.numTokens);
    a.kvLoraRank = static_cast<int>(p.kvLoraRank);
    a.ropeDim = static_cast<int>(p.ropeDim);
    runChecked("appendLatentCache", {{p.cache.data, p.cache.nbytes()}}, [&](auto record) {
      check(K::launchAppend(a, nullptr), "appendLatentCache");
      record();
    });
  }

  void mlaDecode(const MlaDecodeParams& p) override {
    const K::ElemType elem = elemOf(p.q, "mlaDecode");
    // A plan from planDecode (validated against these seqLens), or one made for this call.
    const auto* given = dynamic_cast<const SimPlan*>(p.plan.get());
    const K::DecodePlan plan = given ? given->plan : makePlan(p.batch, p.queryLen, p.numHeads, p.seqLens.as<const int32_t>(), false);
    std::vector<float> partialOut(static_cast<size_t>(plan.numPartials) * plan.blockM * p.kvLoraRank);
    std::vector<float> partialLse(static_cast<size_t>(plan.numPartials) * plan.blockM);

    K::DecodeArgs d{};
    d.elem = elem;
    d.config = plan.config;
    d.q = p.q.data;
    d.cache = p.cache.data;
    d.blockTable = p.blockTable.as<const int32_t>();
    d.out = p.out.data;
    d.lse = p.lse.as<float>();
    d.partialOut = partialOut.data();
    d.partialLse = partialLse.data();
    d.work = plan.work.data();
    d.numWork = static_cast<int>(plan.work.size());
    d.queryLen = static_cast<int>(p.queryLen);
    d.numHeads = static_cast<int>(p.numHeads);
    d.headDim = static_cast<int>(p.headDim);
    d.kvLoraRank = static_cast<int>(p.kvLoraRank);
    d.blockSize = static_cast<int>(p.blockSize);
    d.maxBlocksPerSeq = static_cast<int>(p.maxBlocksPerSeq);
    d.causal = p.causal ? 1 : 0;
    d.scaleLog2 = p.softmaxScale * 1.4426950408889634f;

    K::CombineArgs c{};
    c.elem = elem;
    c.partialOut = partialOut.data();
    c.partialLse = partialLse.data();
    c.items = plan.combine.data();
    c.numItems = static_cast<int>(plan.combine.size());
    c.blockM = plan.blockM;
    c.out = p.out.data;
    c.lse = p.lse.as<float>();
    c.queryLen = d.queryLen;
    c.numHeads = d.numHeads;
    c.kvLoraRank = d.kvLoraRank;

    runChecked("mlaDecode", {{p.out.data, p.out.nbytes()}, {p.lse.data, p.lse.nbytes()}}, [&](auto record) {
      check(K::launchDecode(d, nullptr), "mlaDecode");
      if (d.numWork) record();
      check(K::launchCombine(c, nullptr), "mlaDecode combine");
      if (c.numItems) record();
    });
  }

  void absorbQuery(const AbsorbQueryParams& p) override {
    K::HeadGemmArgs a{};
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
    runChecked("absorbQuery", {{p.out.data, p.out.nbytes()}}, [&](auto record) {
      check(K::launchHeadGemm(a, nullptr), "absorbQuery");
      record();
    });
  }

  void unabsorbOutput(const UnabsorbOutputParams& p) override {
    K::HeadGemmArgs a{};
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
    runChecked("unabsorbOutput", {{p.out.data, p.out.nbytes()}}, [&](auto record) {
      check(K::launchHeadGemm(a, nullptr), "unabsorbOutput");
      record();
    });
  }
};

}  // namespace

void setSimSettings(const SimSettings& s) {
  std::lock_guard<std::mutex> lock(gMu);
  gSettings = s;
}

SimSettings simSettings() {
  std::lock_guard<std::mutex> lock(gMu);
  return gSettings;
}

SimOpRecord lastSimOp() {
  std::lock_guard<std::mutex> lock(gMu);
  return gLast;
}

}  // namespace mla::cuda

namespace mla {
Backend& cudaSimBackend() {
  static cuda::SimBackend backend;
  return backend;
}
}  // namespace mla
