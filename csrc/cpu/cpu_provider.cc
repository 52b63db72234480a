// The CPU backend as the build lists it (cpu_backend.cc runs the operations): its line in backends() and its hooks,
// cpuInfo() for `npx mla-kernels info`, cpuConfigure() for the tests, cpuLimits() for the benchmark.
#include <string>

#include "../core/backend.h"
#include "../core/threads.h"
#include "cpu_info.h"

namespace mla {
namespace {

Value toValue(const std::vector<std::string>& xs) {
  Value::List list;
  for (const std::string& x : xs) list.push_back(x);
  return list;
}

class CpuProvider final : public BackendProvider {
 public:
  DeviceKind kind() const override { return DeviceKind::Cpu; }

  BackendInfo info() override {
    const cpu::CpuStatus s = cpu::cpuStatus();
    return {"cpu", true, s.simd + " kernels on " + std::to_string(s.threads) + " threads, fp32 accumulation (" + s.reason + ")", {"cpu"}};
  }

  Backend& backend(int, const std::string&) override { return cpu::cpuBackend(); }

  std::vector<BackendHook> hooks() override {
    return {
        // cpuInfo() -> the kernels in use, why, every path this processor has, the thread count, the calibration.
        {"cpuInfo",
         [](const Value&) -> Value {
           const cpu::CpuStatus s = cpu::cpuStatus();
           return Value::Record{{"simd", s.simd},
                                {"reason", s.reason},
                                {"threads", s.threads},
                                {"supported", toValue(s.supported)},
                                {"fmaGflopsPerCore", s.fmaGflopsPerCore},
                                {"bf16DotGflopsPerCore", s.bf16DotGflopsPerCore},
                                {"appendStores", s.appendStores},
                                {"streamAboveBytes", static_cast<double>(s.streamAboveBytes)}};
         }},
        // cpuConfigure({ isa?: string ('' = automatic), splitRows?: number (0 = automatic),
        //               appendStores?: 'stream' | 'regular' | 'auto' }).
        {"cpuConfigure",
         [](const Value& settings) -> Value {
           const Value* isa = settings.get("isa");
           const Value* split = settings.get("splitRows");
           const Value* stores = settings.get("appendStores");
           const std::string isaName = isa && isa->isString() ? isa->string() : "";
           const int64_t splitRows = split && split->isNumber() ? static_cast<int64_t>(split->number()) : 0;
           const std::string storeMode = stores && stores->isString() ? stores->string() : "";
           cpu::cpuConfigure(isa && isa->isString() ? &isaName : nullptr, split && split->isNumber() ? &splitRows : nullptr,
                             stores && stores->isString() ? &storeMode : nullptr);
           return {};
         }},
        // cpuLimits(bytes): read and copy bandwidth, fp32 FMA and bf16 dot-product rates on all threads (synchronous).
        {"cpuLimits",
         [](const Value& bytes) -> Value {
           const cpu::CpuLimits l = cpu::measureCpuLimits(static_cast<size_t>(bytes.isNumber() ? bytes.number() : 0));
           return Value::Record{{"threads", l.threads},
                                {"readBytesPerSec", l.readBytesPerSec},
                                {"copyBytesPerSec", l.copyBytesPerSec},
                                {"fmaFlops", l.fmaFlops},
                                {"bf16DotFlops", l.bf16DotFlops}};
         }},
    };
  }
};

}  // namespace

BackendProvider& cpuProvider() {
  static CpuProvider& provider = neverDestroyed<CpuProvider>();
  return provider;
}

}  // namespace mla
