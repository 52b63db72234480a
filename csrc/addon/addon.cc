// N-API glue: JS values in, C++ views and parameter structs out; mla::Error out as MlaError.
// No arithmetic here: validation lives in core/ops.cc, kernels in the backends.
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/backend.h"
#include "../core/errors.h"
#include "../core/ops.h"
#include "js_error.h"
#include "device_buffer.h"
#include "graph.h"
#include "stream.h"
#include "../cpu/cpu_info.h"

#ifdef MLA_WITH_CUDA_SIM
#include "../cuda/plan.h"
#include "../cuda/sim_backend.h"
#endif

namespace mla::addon {
namespace {

// Tensor descriptors come from lib/tensor.ts: { data: TypedArray | buffer: NativeDeviceBuffer, dtype, shape, device }.
// The checks here only make sure a descriptor cannot point outside its own memory.
TensorView toView(const Napi::Object& params, const char* name, bool optional, Retained* keepAlive) {
  TensorView v;
  v.name = name;
  Napi::Value value = params.Get(name);
  if (value.IsUndefined() || value.IsNull()) {
    if (optional) return v;
    throw Error(ErrorCode::Argument, std::string(name) + " is required");
  }
  if (!value.IsObject()) throw Error(ErrorCode::Argument, std::string(name) + " must be a Tensor");
  Napi::Object desc = value.As<Napi::Object>();
  Napi::Value data = desc.Get("data"), buffer = desc.Get("buffer"), dtype = desc.Get("dtype"), shape = desc.Get("shape"),
              device = desc.Get("device");
  if (!(data.IsTypedArray() || buffer.IsObject()) || !dtype.IsString() || !shape.IsArray() || !device.IsString())
    throw Error(ErrorCode::Argument, std::string(name) + " must be a Tensor");
  if (!parseDType(dtype.As<Napi::String>().Utf8Value(), &v.dtype))
    throw Error(ErrorCode::DType, std::string(name) + " has an unknown dtype");
  const std::string deviceName = device.As<Napi::String>().Utf8Value();
  if (deviceName != "cpu" && deviceName.rfind("cuda:", 0) != 0 && deviceName.rfind("cuda-sim:", 0) != 0)
    throw Error(ErrorCode::Device, std::string(name) + " has an unknown device '" + deviceName + "'");
  v.device = parseDevice(deviceName, name);
  Napi::Array dims = shape.As<Napi::Array>();
  if (dims.Length() > static_cast<uint32_t>(kMaxDims))
    throw Error(ErrorCode::Shape, std::string(name) + " has more than " + std::to_string(kMaxDims) + " dimensions");
  v.ndim = static_cast<int>(dims.Length());
  for (int i = 0; i < v.ndim; ++i) {
    double d = dims.Get(static_cast<uint32_t>(i)).ToNumber().DoubleValue();
    if (!(d >= 0 && d <= 2147483647.0) || std::floor(d) != d)
      throw Error(ErrorCode::Shape, std::string(name) + " has an invalid dimension " + std::to_string(d));
    v.shape[i] = static_cast<int64_t>(d);
  }
  DeviceBufferWrap* deviceBuffer = data.IsTypedArray() ? nullptr : DeviceBufferWrap::Unwrap(buffer.As<Napi::Object>());
  if (deviceBuffer && deviceBuffer->released()) throw Error(ErrorCode::Disposed, std::string(name) + " was disposed");
  if (deviceBuffer && v.device != deviceBuffer->backend().device())
    throw Error(ErrorCode::Internal, std::string(name) + ": descriptor device disagrees with its memory");
  const size_t byteLength = deviceBuffer ? deviceBuffer->bytes() : data.As<Napi::TypedArray>().ByteLength();
  // Element count with overflow detection: absurd shapes must not wrap around to a small size.
  const size_t elem = dtypeSize(v.dtype);
  size_t numel = 1;
  bool overflow = false;
  for (int i = 0; i < v.ndim && numel != 0; ++i) {
    const size_t d = static_cast<size_t>(v.shape[i]);
    if (d != 0 && numel > SIZE_MAX / elem / d) overflow = true;
    numel = d == 0 ? 0 : numel * d;
  }
  if (numel == 0) overflow = false;
  if (overflow || numel * elem > byteLength)
    throw Error(ErrorCode::Shape, std::string(name) + " shape " + v.shapeStr() + " is larger than its buffer");
  if (deviceBuffer) {
    v.data = deviceBuffer->data();
    if (keepAlive) {
      keepAlive->refs.push_back(Napi::Persistent(buffer.As<Napi::Object>()));
      keepAlive->buffers.push_back(deviceBuffer);
    }
    return v;
  }
  Napi::TypedArray array = data.As<Napi::TypedArray>();
  v.data = static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
  if (keepAlive) keepAlive->refs.push_back(Napi::Persistent(array.As<Napi::Object>()));
  return v;
}

StreamWrap& toStream(const Napi::Value& v) {
  if (!v.IsObject()) throw Error(ErrorCode::Argument, "stream must be a Stream");
  return *StreamWrap::Unwrap(v.As<Napi::Object>());
}

double getNumber(const Napi::Object& params, const char* name) {
  Napi::Value v = params.Get(name);
  if (!v.IsNumber()) throw Error(ErrorCode::Argument, std::string(name) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

// An optional number: `fallback` when absent.
double getNumber(const Napi::Object& params, const char* name, double fallback) {
  return params.Get(name).IsUndefined() ? fallback : getNumber(params, name);
}

Napi::Array shapeToJs(Napi::Env env, const std::vector<int64_t>& dims) {
  Napi::Array a = Napi::Array::New(env, dims.size());
  for (size_t i = 0; i < dims.size(); ++i) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(dims[i])));
  return a;
}

// --- parameter structs from JS objects ---------------------------------------------------------------
using Refs = Retained;

AppendLatentCacheParams appendParams(const Napi::Object& o, Refs* refs) {
  AppendLatentCacheParams p;
  p.cache = toView(o, "cache", false, refs);
  p.kvC = toView(o, "kvC", false, refs);
  p.kPe = toView(o, "kPe", false, refs);
  p.slotMapping = toView(o, "slotMapping", false, refs);
  p.cacheScale = static_cast<float>(getNumber(o, "cacheScale", 1.0));
  Napi::Value style = o.Get("ropeStyle");
  if (style.IsString()) {
    std::string s = style.As<Napi::String>().Utf8Value();
    if (s == "interleaved") p.ropeStyle = RopeStyle::Interleaved;
    else if (s == "neox") p.ropeStyle = RopeStyle::Neox;
    else throw Error(ErrorCode::Argument, "rope.style must be 'interleaved' or 'neox', got '" + s + "'");
    p.positions = toView(o, "positions", false, refs);
    p.cos = toView(o, "cos", false, refs);
    p.sin = toView(o, "sin", false, refs);
    p.positions.name = "rope.positions";  // as the caller spelled them
    p.cos.name = "rope.cos";
    p.sin.name = "rope.sin";
  }
  return p;
}

MlaDecodeParams decodeParams(const Napi::Object& o, Refs* refs, bool withOutputs) {
  MlaDecodeParams p;
  p.q = toView(o, "q", false, refs);
  p.cache = toView(o, "cache", false, refs);
  p.blockTable = toView(o, "blockTable", false, refs);
  p.seqLens = toView(o, "seqLens", false, refs);
  if (withOutputs) {
    p.out = toView(o, "out", false, refs);
    p.lse = toView(o, "lse", false, refs);
  }
  p.softmaxScale = static_cast<float>(getNumber(o, "softmaxScale"));
  p.cacheScale = static_cast<float>(getNumber(o, "cacheScale", 1.0));
  double rank = getNumber(o, "kvLoraRank");
  if (!(rank >= 1 && rank <= 1e9) || std::floor(rank) != rank)
    throw Error(ErrorCode::Range, "kvLoraRank must be a positive integer, got " + std::to_string(rank));
  p.kvLoraRank = static_cast<int64_t>(rank);
  p.causal = o.Get("causal").ToBoolean().Value();
  Napi::Value plan = o.Get("plan");
  if (plan.IsExternal()) p.plan = *plan.As<Napi::External<std::shared_ptr<const DecodePlanHandle>>>().Data();
  else if (!plan.IsUndefined() && !plan.IsNull()) throw Error(ErrorCode::Argument, "plan must come from planDecode");
  return p;
}

AbsorbQueryParams absorbParams(const Napi::Object& o, Refs* refs, bool withOutputs) {
  AbsorbQueryParams p;
  p.qNope = toView(o, "qNope", false, refs);
  p.wUk = toView(o, "wUk", false, refs);
  p.qPe = toView(o, "qPe", true, refs);
  if (withOutputs) p.out = toView(o, "out", false, refs);
  return p;
}

UnabsorbOutputParams unabsorbParams(const Napi::Object& o, Refs* refs, bool withOutputs) {
  UnabsorbOutputParams p;
  p.oLat = toView(o, "oLat", false, refs);
  p.wUv = toView(o, "wUv", false, refs);
  if (withOutputs) p.out = toView(o, "out", false, refs);
  return p;
}

// Checks that need the stream's backend beyond checkSupported.
void checkForBackend(const MlaDecodeParams& p, const mla::Backend& backend) { validatePlan(p, backend.name()); }
template <class Params>
void checkForBackend(const Params&, const mla::Backend&) {}

// op(stream, params): validates, enqueues on the stream, returns the ticket.
template <class Params, class Build, class Run>
Napi::Value enqueueOp(const Napi::CallbackInfo& info, Build&& build, Run&& run) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    StreamWrap& stream = toStream(info[0]);
    Refs refs;
    Params p = build(info[1].As<Napi::Object>(), &refs);
    mla::Backend* backend = &stream.backend();
    // The kernels read copies of the index arrays, taken before they are checked.
    auto snapshot = std::make_shared<IndexSnapshot>();
    Params checked = p;
    snapshotIndexTensors(checked, *snapshot);
    validate(checked, backend->device());
    checkForBackend(checked, *backend);
    backend->checkSupported(checked);
    if (stream.capturing()) {
      // Recorded as it was given (the caller's index arrays are read again at each replay); queues nothing.
      if constexpr (std::is_same_v<Params, CopyParams>)
        throw Error(ErrorCode::Argument, "a copy (Tensor.to, read) cannot be captured in a graph: make it before or after the capture");
      else
        stream.captured(GraphOp(p), std::move(refs));
      return Napi::Number::New(info.Env(), 0);
    }
    // Writes on other streams this operation must wait for: [[stream, ticket], ...] from lib/ops.ts.
    std::vector<StreamWrap::Dependency> after = stream.dependencies(info[2], refs);
    uint64_t ticket = stream.enqueue([checked, snapshot, backend, run] { run(*backend, checked); }, std::move(refs), std::move(after));
    return Napi::Number::New(info.Env(), static_cast<double>(ticket));
  });
}

Napi::Value Copy(const Napi::CallbackInfo& info) {
  return enqueueOp<CopyParams>(
      info,
      [](const Napi::Object& o, Refs* r) {
        CopyParams p;
        p.src = toView(o, "src", false, r);
        p.dst = toView(o, "dst", false, r);
        return p;
      },
      [](mla::Backend& b, const CopyParams& p) { b.copy(p); });
}

// memoryStats(device) -> { bytesInUse, peakBytes } of one device's memory ('cuda-sim:1'; a backend name is its device 0).
Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    mla::Backend& backend = getBackend(parseDevice(info[0].ToString().Utf8Value(), "device"), "device");
    DeviceMemory* memory = backend.memory();
    if (!memory) throw Error(ErrorCode::Device, std::string("the ") + backend.name() + " backend works on host memory");
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("bytesInUse", static_cast<double>(memory->bytesInUse()));
    o.Set("peakBytes", static_cast<double>(memory->peakBytes()));
    return o;
  });
}

Napi::Value AppendLatentCache(const Napi::CallbackInfo& info) {
  return enqueueOp<AppendLatentCacheParams>(
      info, [](const Napi::Object& o, Refs* r) { return appendParams(o, r); },
      [](mla::Backend& b, const AppendLatentCacheParams& p) { b.appendLatentCache(p); });
}

Napi::Value MlaDecode(const Napi::CallbackInfo& info) {
  return enqueueOp<MlaDecodeParams>(
      info, [](const Napi::Object& o, Refs* r) { return decodeParams(o, r, true); },
      [](mla::Backend& b, const MlaDecodeParams& p) { b.mlaDecode(p); });
}

Napi::Value AbsorbQuery(const Napi::CallbackInfo& info) {
  return enqueueOp<AbsorbQueryParams>(
      info, [](const Napi::Object& o, Refs* r) { return absorbParams(o, r, true); },
      [](mla::Backend& b, const AbsorbQueryParams& p) { b.absorbQuery(p); });
}

Napi::Value UnabsorbOutput(const Napi::CallbackInfo& info) {
  return enqueueOp<UnabsorbOutputParams>(
      info, [](const Napi::Object& o, Refs* r) { return unabsorbParams(o, r, true); },
      [](mla::Backend& b, const UnabsorbOutputParams& p) { b.unabsorbOutput(p); });
}

// planDecode(stream, { seqLens, numHeads, queryLen, batchInvariant }) -> an opaque plan for mlaDecode, plus what
// it holds for the caller's information.
Napi::Value PlanDecode(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    StreamWrap& stream = toStream(info[0]);
    Napi::Object o = info[1].As<Napi::Object>();
    TensorView seqLens = toView(o, "seqLens", false, nullptr);
    if (seqLens.ndim != 1 || seqLens.dtype != DType::I32 || seqLens.device.kind != DeviceKind::Cpu)
      throw Error(ErrorCode::Shape, "seqLens must be a cpu i32 tensor of shape [batch], got " + std::string(dtypeName(seqLens.dtype)) + " " + seqLens.shapeStr());
    const double heads = getNumber(o, "numHeads"), queryLen = getNumber(o, "queryLen");
    if (!(heads >= 1 && heads <= 65536) || std::floor(heads) != heads) throw Error(ErrorCode::Range, "numHeads must be a positive integer");
    if (!(queryLen >= 1 && queryLen <= 65536) || std::floor(queryLen) != queryLen) throw Error(ErrorCode::Range, "queryLen must be a positive integer");
    const int32_t* lens = seqLens.as<const int32_t>();
    for (int64_t b = 0; b < seqLens.shape[0]; ++b)
      if (lens[b] < 0) throw Error(ErrorCode::Range, "seqLens[" + std::to_string(b) + "] = " + std::to_string(lens[b]) + " is negative");
    std::shared_ptr<const DecodePlanHandle> plan = stream.backend().planDecode(
        seqLens.shape[0], static_cast<int64_t>(queryLen), static_cast<int64_t>(heads), lens, o.Get("batchInvariant").ToBoolean().Value());
    Napi::Object result = Napi::Object::New(env);
    result.Set("handle", Napi::External<std::shared_ptr<const DecodePlanHandle>>::New(
                             env, new std::shared_ptr<const DecodePlanHandle>(plan),
                             [](Napi::Env, std::shared_ptr<const DecodePlanHandle>* p) { delete p; }));
    result.Set("numWorkItems", static_cast<double>(plan->numWorkItems));
    result.Set("numSplitSequences", static_cast<double>(plan->numSplitSequences));
    return result;
  });
}

// outputShapes(op, params): the shapes of the outputs the op would create, after validating inputs.
Napi::Value OutputShapes(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    std::string op = info[0].As<Napi::String>().Utf8Value();
    Napi::Object o = info[1].As<Napi::Object>();
    Napi::Object result = Napi::Object::New(env);
    if (op == "absorbQuery") {
      AbsorbQueryParams p = absorbParams(o, nullptr, false);
      result.Set("out", shapeToJs(env, absorbQueryOutShape(p)));
    } else if (op == "unabsorbOutput") {
      UnabsorbOutputParams p = unabsorbParams(o, nullptr, false);
      result.Set("out", shapeToJs(env, unabsorbOutputOutShape(p)));
    } else if (op == "mlaDecode") {
      MlaDecodeParams p = decodeParams(o, nullptr, false);
      std::vector<int64_t> outShape, lseShape;
      mlaDecodeOutShapes(p, &outShape, &lseShape);
      result.Set("out", shapeToJs(env, outShape));
      result.Set("lse", shapeToJs(env, lseShape));
    } else {
      throw Error(ErrorCode::Internal, "outputShapes: unknown op " + op);
    }
    return result;
  });
}

Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<BackendInfo> list = listBackends();
  Napi::Array arr = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", list[i].name);
    o.Set("available", list[i].available);
    o.Set("reason", list[i].reason);
    Napi::Array devices = Napi::Array::New(env, list[i].devices.size());
    for (size_t d = 0; d < list[i].devices.size(); ++d) devices.Set(static_cast<uint32_t>(d), list[i].devices[d]);
    o.Set("devices", devices);
    arr.Set(static_cast<uint32_t>(i), o);
  }
  return arr;
}

// The addon's own tables, so a test can check lib/ agrees with csrc/core/.
Napi::Value Facts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object facts = Napi::Object::New(env);
  Napi::Object dtypes = Napi::Object::New(env);
  for (DType t : kAllDTypes) dtypes.Set(dtypeName(t), Napi::Number::New(env, static_cast<double>(dtypeSize(t))));
  facts.Set("dtypeSizes", dtypes);
  Napi::Array codes = Napi::Array::New(env);
  uint32_t i = 0;
  for (ErrorCode c : kAllErrorCodes) codes.Set(i++, Napi::String::New(env, errorCodeName(c)));
  facts.Set("errorCodes", codes);
  facts.Set("maxDims", Napi::Number::New(env, kMaxDims));
  facts.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return facts;
}

#ifdef MLA_WITH_CUDA_SIM
// Test hooks of the cuda-sim backend: simConfigure({checkOrders, seed, smallConfig, numSms, splitRows,
// batchInvariant, deviceMemoryBytes, numDevices}) and simLastOp() -> the traffic, launches and host
// synchronisations of the last operation.
Napi::Value SimConfigure(const Napi::CallbackInfo& info) {
  Napi::Object o = info[0].As<Napi::Object>();
  cuda::SimSettings s = cuda::simSettings();
  auto num = [&](const char* k, double fallback) { return o.Get(k).IsNumber() ? o.Get(k).As<Napi::Number>().DoubleValue() : fallback; };
  auto flag = [&](const char* k, bool fallback) { return o.Get(k).IsBoolean() ? o.Get(k).As<Napi::Boolean>().Value() : fallback; };
  s.checkOrders = flag("checkOrders", s.checkOrders);
  s.seed = static_cast<uint64_t>(num("seed", static_cast<double>(s.seed)));
  s.smallConfig = flag("smallConfig", s.smallConfig);
  s.numSms = static_cast<int>(num("numSms", s.numSms));
  s.splitRows = static_cast<int>(num("splitRows", s.splitRows));
  s.batchInvariant = flag("batchInvariant", s.batchInvariant);
  s.deviceMemoryBytes = static_cast<size_t>(num("deviceMemoryBytes", static_cast<double>(s.deviceMemoryBytes)));
  s.numDevices = static_cast<int>(num("numDevices", s.numDevices));
  if (s.numDevices < 1 || s.numDevices > 64) s.numDevices = 1;
  cuda::setSimSettings(s);
  return info.Env().Undefined();
}

Napi::Value SimLastOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cuda::SimOpRecord r = cuda::lastSimOp();
  Napi::Object o = Napi::Object::New(env);
  o.Set("op", r.op);
  o.Set("bytesRead", static_cast<double>(r.bytesRead));
  o.Set("bytesWritten", static_cast<double>(r.bytesWritten));
  o.Set("ordersChecked", r.ordersChecked);
  o.Set("hostSyncs", r.hostSyncs);
  Napi::Array launches = Napi::Array::New(env, r.launches.size());
  for (size_t i = 0; i < r.launches.size(); ++i) {
    const cuda::SimLaunch& l = r.launches[i];
    Napi::Object x = Napi::Object::New(env);
    x.Set("kernel", l.kernel);
    x.Set("bytesRead", static_cast<double>(l.bytesRead));
    x.Set("bytesWritten", static_cast<double>(l.bytesWritten));
    x.Set("fiberSwitches", static_cast<double>(l.fiberSwitches));
    x.Set("grid", shapeToJs(env, {l.gridX, l.gridY}));
    x.Set("threads", l.blockX);
    x.Set("seconds", l.seconds);
    launches.Set(static_cast<uint32_t>(i), x);
  }
  o.Set("launches", launches);
  return o;
}

// The decode kernels' tile shapes and dynamic shared memory for a row width, from the kernel source itself
// (scripts/check-cuda.mjs checks them against each GPU's limit).
Napi::Value DecodeKernelShapes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int headDim = info[0].As<Napi::Number>().Int32Value();
  Napi::Object o = Napi::Object::New(env);
  for (auto [name, config] : {std::pair{"large", kernels_sim::DecodeConfig::Large}, std::pair{"small", kernels_sim::DecodeConfig::Small}}) {
    const kernels_sim::DecodeConfigInfo c = kernels_sim::decodeConfigInfo(config);
    Napi::Object x = Napi::Object::New(env);
    x.Set("blockM", c.blockM);
    x.Set("blockN", c.blockN);
    x.Set("stages", c.stages);
    x.Set("threads", c.threads);
    x.Set("smemBytes", kernels_sim::decodeSmemBytes(config, headDim));
    x.Set("smemBytesFp8", kernels_sim::decodeSmemBytes(config, headDim, true));
    o.Set(name, x);
  }
  return o;
}
#endif

// The CPU backend's choice of kernels and thread count (info()), its test hooks, and the benchmark's machine limits.
Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const cpu::CpuStatus s = cpu::cpuStatus();
    Napi::Object o = Napi::Object::New(env);
    o.Set("simd", s.simd);
    o.Set("reason", s.reason);
    o.Set("threads", s.threads);
    Napi::Array supported = Napi::Array::New(env, s.supported.size());
    for (size_t i = 0; i < s.supported.size(); ++i) supported.Set(static_cast<uint32_t>(i), s.supported[i]);
    o.Set("supported", supported);
    o.Set("fmaGflopsPerCore", s.fmaGflopsPerCore);
    o.Set("bf16DotGflopsPerCore", s.bf16DotGflopsPerCore);
    return o;
  });
}

// cpuConfigure({ isa?: string ('' = automatic), splitRows?: number (0 = automatic) }): test hooks.
Napi::Value CpuConfigure(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Object o = info[0].As<Napi::Object>();
    std::string isa;
    int64_t splitRows = 0;
    if (o.Get("isa").IsString()) isa = o.Get("isa").As<Napi::String>().Utf8Value();
    if (o.Get("splitRows").IsNumber()) splitRows = o.Get("splitRows").As<Napi::Number>().Int64Value();
    cpu::cpuConfigure(o.Get("isa").IsString() ? &isa : nullptr, o.Get("splitRows").IsNumber() ? &splitRows : nullptr);
    return info.Env().Undefined();
  });
}

// cpuLimits(bytes): read and copy bandwidth, fp32 FMA and bf16 dot-product rates on all threads (synchronous).
Napi::Value CpuLimits(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const cpu::CpuLimits l = cpu::measureCpuLimits(static_cast<size_t>(info[0].As<Napi::Number>().DoubleValue()));
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("threads", l.threads);
    o.Set("readBytesPerSec", l.readBytesPerSec);
    o.Set("copyBytesPerSec", l.copyBytesPerSec);
    o.Set("fmaFlops", l.fmaFlops);
    o.Set("bf16DotFlops", l.bf16DotFlops);
    return o;
  });
}

#ifdef MLA_WITH_CUDA
// cudaInfo() -> { targets, runtimeVersion, driverVersion, devices: [...], reason } (see lib/native.ts).
Napi::Value CudaInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CudaInfo c = cudaInfo();
  Napi::Object o = Napi::Object::New(env);
  Napi::Array targets = Napi::Array::New(env);
  uint32_t n = 0;
  for (size_t start = 0; start < c.targets.size();) {
    size_t end = c.targets.find(',', start);
    if (end == std::string::npos) end = c.targets.size();
    if (end > start) targets.Set(n++, Napi::String::New(env, "sm_" + c.targets.substr(start, end - start)));
    start = end + 1;
  }
  o.Set("targets", targets);
  o.Set("runtimeVersion", c.runtimeVersion);
  o.Set("driverVersion", c.driverVersion);
  Napi::Array devices = Napi::Array::New(env, c.devices.size());
  for (size_t i = 0; i < c.devices.size(); ++i) {
    const CudaDeviceInfo& d = c.devices[i];
    Napi::Object x = Napi::Object::New(env);
    x.Set("index", d.index);
    x.Set("name", d.name);
    x.Set("computeCapability", std::to_string(d.computeMajor) + "." + std::to_string(d.computeMinor));
    x.Set("totalMemory", static_cast<double>(d.totalMemory));
    x.Set("usable", d.usable);
    if (!d.reason.empty()) x.Set("reason", d.reason);
    devices.Set(static_cast<uint32_t>(i), x);
  }
  o.Set("devices", devices);
  if (!c.reason.empty()) o.Set("reason", c.reason);
  return o;
}
#endif

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  info.Env().GetInstanceData<AddonData>()->errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData(data);
  napi_add_env_cleanup_hook(env, stopStreams, data);
  exports.Set("NativeStream", StreamWrap::Define(env));
  exports.Set("NativeDeviceBuffer", DeviceBufferWrap::Define(env));
  exports.Set("copy", Napi::Function::New(env, Copy));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats));
  exports.Set("appendLatentCache", Napi::Function::New(env, AppendLatentCache));
  exports.Set("mlaDecode", Napi::Function::New(env, MlaDecode));
  exports.Set("absorbQuery", Napi::Function::New(env, AbsorbQuery));
  exports.Set("unabsorbOutput", Napi::Function::New(env, UnabsorbOutput));
  exports.Set("outputShapes", Napi::Function::New(env, OutputShapes));
  exports.Set("planDecode", Napi::Function::New(env, PlanDecode));
  exports.Set("NativeGraph", GraphWrap::Define(env));
  exports.Set("replayGraph", Napi::Function::New(env, ReplayGraph));
  exports.Set("backends", Napi::Function::New(env, Backends));
  exports.Set("facts", Napi::Function::New(env, Facts));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass));
  exports.Set("cpuInfo", Napi::Function::New(env, CpuInfo));
  exports.Set("cpuConfigure", Napi::Function::New(env, CpuConfigure));
  exports.Set("cpuLimits", Napi::Function::New(env, CpuLimits));
#ifdef MLA_WITH_CUDA
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfoJs));
#endif
#ifdef MLA_WITH_CUDA_SIM
  exports.Set("simConfigure", Napi::Function::New(env, SimConfigure));
  exports.Set("simLastOp", Napi::Function::New(env, SimLastOp));
  exports.Set("decodeKernelShapes", Napi::Function::New(env, DecodeKernelShapes));
#endif
  return exports;
}

}  // namespace
}  // namespace mla::addon

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return mla::addon::Init(env, exports); }
NODE_API_MODULE(mla_kernels, InitAddon)
