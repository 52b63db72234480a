// N-API glue: JS values in, C++ views and parameter structs out; mla::Error out as MlaError.
// No arithmetic here: validation lives in core/ops.cc, kernels in the backends.
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <iterator>
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
#include "../kernels/prefill_kernels.h"
#endif

namespace mla::addon {
namespace {

// Operations receive arrays, read by index in the order lib/native.ts gives (TensorDescriptor, DecodeParams, ...),
// not objects read by name: through N-API a read by name makes a new V8 string for the name every time (~1.2K
// instructions), and keeping the strings across calls needs references to strings (N-API 10; Node 20 has 9).
// What each call costs is in bench/overhead.mjs.

// The address of a TypedArray's first element and its length in bytes, in one N-API call (Napi::TypedArray makes
// four for the same). False when `v` is not a TypedArray.
bool typedArrayMemory(const Napi::Value& v, void** data, size_t* bytes, napi_typedarray_type* type = nullptr) {
  napi_typedarray_type t;
  size_t length = 0;
  if (napi_get_typedarray_info(v.Env(), v, &t, &length, data, nullptr, nullptr) != napi_ok) return false;
  size_t elementBytes = 8;  // float64, bigint64
  switch (t) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: elementBytes = 1; break;
    case napi_int16_array: case napi_uint16_array: elementBytes = 2; break;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: elementBytes = 4; break;
    default: break;
  }
  *bytes = length * elementBytes;
  if (type) *type = t;
  return true;
}

// A tensor descriptor, from lib/tensor.ts: [memory, meta] where memory is the TypedArray of a host tensor or the
// NativeDeviceBuffer of a device tensor, and meta an Int32Array [dtype, device kind, device index, ...shape] with
// the codes of csrc/core (DType, DeviceKind). The checks here only make sure a descriptor cannot point outside its
// own memory.
TensorView toView(const Napi::Array& params, uint32_t index, const char* name, bool optional, Retained* keepAlive) {
  TensorView v;
  v.name = name;
  Napi::Value value = params.Get(index);
  if (!value.IsArray()) {  // the other checks only then: each is an N-API call
    if (value.IsUndefined() || value.IsNull()) {
      if (optional) return v;
      throw Error(ErrorCode::Argument, std::string(name) + " is required");
    }
    throw Error(ErrorCode::Argument, std::string(name) + " must be a Tensor");
  }
  Napi::Array desc = value.As<Napi::Array>();
  Napi::Value memory = desc.Get(0u);
  void* metaData = nullptr;
  size_t metaBytes = 0;
  napi_typedarray_type metaType;
  if (!typedArrayMemory(desc.Get(1u), &metaData, &metaBytes, &metaType) || metaType != napi_int32_array || metaBytes < 3 * sizeof(int32_t))
    throw Error(ErrorCode::Argument, std::string(name) + " must be a Tensor");
  const int32_t* meta = static_cast<const int32_t*>(metaData);
  const int ndim = static_cast<int>(metaBytes / sizeof(int32_t)) - 3;
  if (meta[0] < 0 || meta[0] >= static_cast<int32_t>(std::size(kAllDTypes)))
    throw Error(ErrorCode::DType, std::string(name) + " has an unknown dtype");
  v.dtype = static_cast<DType>(meta[0]);
  if (meta[1] < 0 || meta[1] >= static_cast<int32_t>(std::size(kAllDeviceKinds)) || meta[2] < 0 ||
      (meta[1] == static_cast<int32_t>(DeviceKind::Cpu) && meta[2] != 0))
    throw Error(ErrorCode::Device, std::string(name) + " has an unknown device (kind " + std::to_string(meta[1]) + ", index " + std::to_string(meta[2]) + ")");
  v.device = Device{static_cast<DeviceKind>(meta[1]), meta[2]};
  if (ndim > kMaxDims)
    throw Error(ErrorCode::Shape, std::string(name) + " has more than " + std::to_string(kMaxDims) + " dimensions");
  v.ndim = ndim;
  for (int i = 0; i < ndim; ++i) {
    if (meta[3 + i] < 0) throw Error(ErrorCode::Shape, std::string(name) + " has an invalid dimension " + std::to_string(meta[3 + i]));
    v.shape[i] = meta[3 + i];
  }
  void* hostData = nullptr;
  size_t byteLength = 0;
  const bool host = typedArrayMemory(memory, &hostData, &byteLength);
  if (!host && !memory.IsObject()) throw Error(ErrorCode::Argument, std::string(name) + " must be a Tensor");
  DeviceBufferWrap* deviceBuffer = host ? nullptr : DeviceBufferWrap::Unwrap(memory.As<Napi::Object>());
  if (deviceBuffer && deviceBuffer->released()) throw Error(ErrorCode::Disposed, std::string(name) + " was disposed");
  if (deviceBuffer && v.device != deviceBuffer->backend().device())
    throw Error(ErrorCode::Internal, std::string(name) + ": descriptor device disagrees with its memory");
  if (deviceBuffer) byteLength = deviceBuffer->bytes();
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
  v.data = deviceBuffer ? deviceBuffer->data() : hostData;
  // The memory itself is kept alive through the params array (enqueueOp).
  if (keepAlive && deviceBuffer) keepAlive->buffers.push_back(deviceBuffer);
  return v;
}

StreamWrap& toStream(const Napi::Value& v) {
  if (!v.IsObject()) throw Error(ErrorCode::Argument, "stream must be a Stream");
  return *StreamWrap::Unwrap(v.As<Napi::Object>());
}

double getNumber(const Napi::Array& params, uint32_t index, const char* name) {
  Napi::Value v = params.Get(index);
  if (!v.IsNumber()) throw Error(ErrorCode::Argument, std::string(name) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

// An operation's params array (info[1]).
Napi::Array paramsOf(const Napi::Value& v) {
  if (!v.IsArray()) throw Error(ErrorCode::Internal, "params must be an array (see lib/native.ts)");
  return v.As<Napi::Array>();
}

Napi::Array shapeToJs(Napi::Env env, const std::vector<int64_t>& dims) {
  Napi::Array a = Napi::Array::New(env, dims.size());
  for (size_t i = 0; i < dims.size(); ++i) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(dims[i])));
  return a;
}

// --- parameter structs from JS objects ---------------------------------------------------------------
using Refs = Retained;

// Indices of each operation's params: the order of AppendParams, DecodeParams, ... in lib/native.ts.
// The shape of what lib/ passes (argument arrays, tensor descriptors). Bumped with every change to it: lib/native.ts
// refuses an addon of another interface, which would otherwise misread its arguments (a stale build in a checkout).
constexpr int kInterface = 3;
namespace appendArg { enum : uint32_t { cache, kvC, kPe, slotMapping, cacheScale, ropeStyle, positions, cos, sin }; }
namespace decodeArg { enum : uint32_t { q, cache, blockTable, seqLens, softmaxScale, kvLoraRank, cacheScale, causal, plan, out, lse }; }
namespace absorbArg { enum : uint32_t { qNope, wUk, qPe, out }; }
namespace unabsorbArg { enum : uint32_t { oLat, wUv, out }; }
namespace copyArg { enum : uint32_t { src, dst }; }
namespace planArg { enum : uint32_t { seqLens, numHeads, queryLen, batchInvariant }; }
namespace prefillArg { enum : uint32_t { q, kNope, kPe, v, cuSeqLensQ, cuSeqLensKv, softmaxScale, causal, plan, out, lse }; }
namespace gatherArg { enum : uint32_t { cache, blockTable, cuSeqLens, seqStarts, kvLoraRank, cacheScale, numRows, kvC, kPe }; }
namespace upProjectArg { enum : uint32_t { kvC, wUk, wUv, kNope, v }; }
namespace mergeArg { enum : uint32_t { outA, lseA, outB, lseB, out, lse }; }
namespace planPrefillArg { enum : uint32_t { cuSeqLensQ, cuSeqLensKv, numHeads, causal }; }

AppendLatentCacheParams appendParams(const Napi::Array& o, Refs* refs) {
  AppendLatentCacheParams p;
  p.cache = toView(o, appendArg::cache, "cache", false, refs);
  p.kvC = toView(o, appendArg::kvC, "kvC", false, refs);
  p.kPe = toView(o, appendArg::kPe, "kPe", false, refs);
  p.slotMapping = toView(o, appendArg::slotMapping, "slotMapping", false, refs);
  p.cacheScale = static_cast<float>(getNumber(o, appendArg::cacheScale, "cacheScale"));
  Napi::Value style = o.Get(appendArg::ropeStyle);
  if (style.IsString()) {
    std::string s = style.As<Napi::String>().Utf8Value();
    if (s == "interleaved") p.ropeStyle = RopeStyle::Interleaved;
    else if (s == "neox") p.ropeStyle = RopeStyle::Neox;
    else throw Error(ErrorCode::Argument, "rope.style must be 'interleaved' or 'neox', got '" + s + "'");
    // As the caller spelled them.
    p.positions = toView(o, appendArg::positions, "rope.positions", false, refs);
    p.cos = toView(o, appendArg::cos, "rope.cos", false, refs);
    p.sin = toView(o, appendArg::sin, "rope.sin", false, refs);
  }
  return p;
}

MlaDecodeParams decodeParams(const Napi::Array& o, Refs* refs, bool withOutputs) {
  MlaDecodeParams p;
  p.q = toView(o, decodeArg::q, "q", false, refs);
  p.cache = toView(o, decodeArg::cache, "cache", false, refs);
  p.blockTable = toView(o, decodeArg::blockTable, "blockTable", false, refs);
  p.seqLens = toView(o, decodeArg::seqLens, "seqLens", false, refs);
  if (withOutputs) {
    p.out = toView(o, decodeArg::out, "out", false, refs);
    p.lse = toView(o, decodeArg::lse, "lse", false, refs);
  }
  p.softmaxScale = static_cast<float>(getNumber(o, decodeArg::softmaxScale, "softmaxScale"));
  p.cacheScale = static_cast<float>(getNumber(o, decodeArg::cacheScale, "cacheScale"));
  double rank = getNumber(o, decodeArg::kvLoraRank, "kvLoraRank");
  if (!(rank >= 1 && rank <= 1e9) || std::floor(rank) != rank)
    throw Error(ErrorCode::Range, "kvLoraRank must be a positive integer, got " + std::to_string(rank));
  p.kvLoraRank = static_cast<int64_t>(rank);
  p.causal = o.Get(decodeArg::causal).ToBoolean().Value();
  Napi::Value plan = o.Get(decodeArg::plan);
  if (plan.IsExternal()) p.plan = *plan.As<Napi::External<std::shared_ptr<const DecodePlanHandle>>>().Data();
  else if (!plan.IsUndefined() && !plan.IsNull()) throw Error(ErrorCode::Argument, "plan must come from planDecode");
  return p;
}

AbsorbQueryParams absorbParams(const Napi::Array& o, Refs* refs, bool withOutputs) {
  AbsorbQueryParams p;
  p.qNope = toView(o, absorbArg::qNope, "qNope", false, refs);
  p.wUk = toView(o, absorbArg::wUk, "wUk", false, refs);
  p.qPe = toView(o, absorbArg::qPe, "qPe", true, refs);
  if (withOutputs) p.out = toView(o, absorbArg::out, "out", false, refs);
  return p;
}

UnabsorbOutputParams unabsorbParams(const Napi::Array& o, Refs* refs, bool withOutputs) {
  UnabsorbOutputParams p;
  p.oLat = toView(o, unabsorbArg::oLat, "oLat", false, refs);
  p.wUv = toView(o, unabsorbArg::wUv, "wUv", false, refs);
  if (withOutputs) p.out = toView(o, unabsorbArg::out, "out", false, refs);
  return p;
}

// --- prefill ops' parameter structs ---
// A prefill plan's External carries this tag: a decode plan (or anything else) passed as one is refused, not misread.
constexpr napi_type_tag kPrefillPlanTag = {0x6d6c612d70726566ull, 0x696c6c2d706c616eull};

int64_t positiveInteger(const Napi::Array& o, uint32_t index, const char* name) {
  const double x = getNumber(o, index, name);
  if (!(x >= 1 && x <= 1e9) || std::floor(x) != x) throw Error(ErrorCode::Range, std::string(name) + " must be a positive integer, got " + std::to_string(x));
  return static_cast<int64_t>(x);
}

MlaPrefillParams prefillParams(const Napi::Array& o, Refs* refs, bool withOutputs) {
  MlaPrefillParams p;
  p.q = toView(o, prefillArg::q, "q", false, refs);
  p.kNope = toView(o, prefillArg::kNope, "kNope", false, refs);
  p.kPe = toView(o, prefillArg::kPe, "kPe", false, refs);
  p.v = toView(o, prefillArg::v, "v", false, refs);
  p.cuSeqLensQ = toView(o, prefillArg::cuSeqLensQ, "cuSeqLensQ", false, refs);
  p.cuSeqLensKv = toView(o, prefillArg::cuSeqLensKv, "cuSeqLensKv", false, refs);
  if (withOutputs) {
    p.out = toView(o, prefillArg::out, "out", false, refs);
    p.lse = toView(o, prefillArg::lse, "lse", false, refs);
  }
  p.softmaxScale = static_cast<float>(getNumber(o, prefillArg::softmaxScale, "softmaxScale"));
  p.causal = o.Get(prefillArg::causal).ToBoolean().Value();
  Napi::Value plan = o.Get(prefillArg::plan);
  if (plan.IsExternal()) {
    bool tagged = false;
    napi_check_object_type_tag(o.Env(), plan, &kPrefillPlanTag, &tagged);
    if (!tagged) throw Error(ErrorCode::Argument, "plan must come from planPrefill");
    p.plan = *plan.As<Napi::External<std::shared_ptr<const PrefillPlanHandle>>>().Data();
  } else if (!plan.IsUndefined() && !plan.IsNull()) {
    throw Error(ErrorCode::Argument, "plan must come from planPrefill");
  }
  return p;
}

GatherLatentCacheParams gatherParams(const Napi::Array& o, Refs* refs, bool withOutputs) {
  GatherLatentCacheParams p;
  p.cache = toView(o, gatherArg::cache, "cache", false, refs);
  p.blockTable = toView(o, gatherArg::blockTable, "blockTable", false, refs);
  p.cuSeqLens = toView(o, gatherArg::cuSeqLens, "cuSeqLens", false, refs);
  p.seqStarts = toView(o, gatherArg::seqStarts, "seqStarts", true, refs);
  p.kvLoraRank = positiveInteger(o, gatherArg::kvLoraRank, "kvLoraRank");
  p.cacheScale = static_cast<float>(getNumber(o, gatherArg::cacheScale, "cacheScale"));
  const double rows = getNumber(o, gatherArg::numRows, "numRows");
  if (rows != -1 && (!(rows >= 0 && rows <= 0x7fffffff) || std::floor(rows) != rows))
    throw Error(ErrorCode::Range, "numRows must be an integer >= 0, got " + std::to_string(rows));
  p.requestedRows = static_cast<int64_t>(rows);
  if (withOutputs) {
    p.kvC = toView(o, gatherArg::kvC, "kvC", false, refs);
    p.kPe = toView(o, gatherArg::kPe, "kPe", false, refs);
  }
  return p;
}

UpProjectKvParams upProjectParams(const Napi::Array& o, Refs* refs, bool withOutputs) {
  UpProjectKvParams p;
  p.kvC = toView(o, upProjectArg::kvC, "kvC", false, refs);
  p.wUk = toView(o, upProjectArg::wUk, "wUk", false, refs);
  p.wUv = toView(o, upProjectArg::wUv, "wUv", false, refs);
  if (withOutputs) {
    p.kNope = toView(o, upProjectArg::kNope, "kNope", false, refs);
    p.v = toView(o, upProjectArg::v, "v", false, refs);
  }
  return p;
}

MergeAttentionStatesParams mergeParams(const Napi::Array& o, Refs* refs, bool withOutputs) {
  MergeAttentionStatesParams p;
  p.outA = toView(o, mergeArg::outA, "outA", false, refs);
  p.lseA = toView(o, mergeArg::lseA, "lseA", false, refs);
  p.outB = toView(o, mergeArg::outB, "outB", false, refs);
  p.lseB = toView(o, mergeArg::lseB, "lseB", false, refs);
  if (withOutputs) {
    p.out = toView(o, mergeArg::out, "out", false, refs);
    p.lse = toView(o, mergeArg::lse, "lse", false, refs);
  }
  return p;
}

// Checks that need the stream's backend beyond checkSupported.
void checkForBackend(const MlaDecodeParams& p, const mla::Backend& backend) { validatePlan(p, backend.name()); }
void checkForBackend(const MlaPrefillParams& p, const mla::Backend& backend) { validatePlan(p, backend.name()); }
template <class Params>
void checkForBackend(const Params&, const mla::Backend&) {}

// op(stream, params): validates, enqueues on the stream, returns the ticket.
template <class Params, class Build, class Run>
Napi::Value enqueueOp(const Napi::CallbackInfo& info, Build&& build, Run&& run) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    StreamWrap& stream = toStream(info[0]);
    Refs refs;
    Napi::Array params = paramsOf(info[1]);
    Params p = build(params, &refs);
    // One reference keeps every tensor's memory alive until the operation completes: the params array holds their
    // descriptors (lib/ makes a new array per call and never changes it), and a reference per tensor costs more.
    refs.refs.push_back(Napi::Persistent(params.As<Napi::Object>()));
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
      [](const Napi::Array& o, Refs* r) {
        CopyParams p;
        p.src = toView(o, copyArg::src, "src", false, r);
        p.dst = toView(o, copyArg::dst, "dst", false, r);
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
      info, [](const Napi::Array& o, Refs* r) { return appendParams(o, r); },
      [](mla::Backend& b, const AppendLatentCacheParams& p) { b.appendLatentCache(p); });
}

Napi::Value MlaDecode(const Napi::CallbackInfo& info) {
  return enqueueOp<MlaDecodeParams>(
      info, [](const Napi::Array& o, Refs* r) { return decodeParams(o, r, true); },
      [](mla::Backend& b, const MlaDecodeParams& p) { b.mlaDecode(p); });
}

Napi::Value AbsorbQuery(const Napi::CallbackInfo& info) {
  return enqueueOp<AbsorbQueryParams>(
      info, [](const Napi::Array& o, Refs* r) { return absorbParams(o, r, true); },
      [](mla::Backend& b, const AbsorbQueryParams& p) { b.absorbQuery(p); });
}

Napi::Value UnabsorbOutput(const Napi::CallbackInfo& info) {
  return enqueueOp<UnabsorbOutputParams>(
      info, [](const Napi::Array& o, Refs* r) { return unabsorbParams(o, r, true); },
      [](mla::Backend& b, const UnabsorbOutputParams& p) { b.unabsorbOutput(p); });
}

// planDecode(stream, { seqLens, numHeads, queryLen, batchInvariant }) -> an opaque plan for mlaDecode, plus what
// it holds for the caller's information.
Napi::Value PlanDecode(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    StreamWrap& stream = toStream(info[0]);
    Napi::Array o = paramsOf(info[1]);
    TensorView seqLens = toView(o, planArg::seqLens, "seqLens", false, nullptr);
    if (seqLens.ndim != 1 || seqLens.dtype != DType::I32 || seqLens.device.kind != DeviceKind::Cpu)
      throw Error(ErrorCode::Shape, "seqLens must be a cpu i32 tensor of shape [batch], got " + std::string(dtypeName(seqLens.dtype)) + " " + seqLens.shapeStr());
    const double heads = getNumber(o, planArg::numHeads, "numHeads"), queryLen = getNumber(o, planArg::queryLen, "queryLen");
    if (!(heads >= 1 && heads <= 65536) || std::floor(heads) != heads) throw Error(ErrorCode::Range, "numHeads must be a positive integer");
    if (!(queryLen >= 1 && queryLen <= 65536) || std::floor(queryLen) != queryLen) throw Error(ErrorCode::Range, "queryLen must be a positive integer");
    const int32_t* lens = seqLens.as<const int32_t>();
    for (int64_t b = 0; b < seqLens.shape[0]; ++b)
      if (lens[b] < 0) throw Error(ErrorCode::Range, "seqLens[" + std::to_string(b) + "] = " + std::to_string(lens[b]) + " is negative");
    std::shared_ptr<const DecodePlanHandle> plan = stream.backend().planDecode(
        seqLens.shape[0], static_cast<int64_t>(queryLen), static_cast<int64_t>(heads), lens, o.Get(planArg::batchInvariant).ToBoolean().Value());
    Napi::Object result = Napi::Object::New(env);
    result.Set("handle", Napi::External<std::shared_ptr<const DecodePlanHandle>>::New(
                             env, new std::shared_ptr<const DecodePlanHandle>(plan),
                             [](Napi::Env, std::shared_ptr<const DecodePlanHandle>* p) { delete p; }));
    result.Set("numWorkItems", static_cast<double>(plan->numWorkItems));
    result.Set("numSplitSequences", static_cast<double>(plan->numSplitSequences));
    return result;
  });
}

// --- prefill ops ---
Napi::Value MlaPrefill(const Napi::CallbackInfo& info) {
  return enqueueOp<MlaPrefillParams>(
      info, [](const Napi::Array& o, Refs* r) { return prefillParams(o, r, true); },
      [](mla::Backend& b, const MlaPrefillParams& p) { b.mlaPrefill(p); });
}

Napi::Value GatherLatentCache(const Napi::CallbackInfo& info) {
  return enqueueOp<GatherLatentCacheParams>(
      info, [](const Napi::Array& o, Refs* r) { return gatherParams(o, r, true); },
      [](mla::Backend& b, const GatherLatentCacheParams& p) { b.gatherLatentCache(p); });
}

Napi::Value UpProjectKv(const Napi::CallbackInfo& info) {
  return enqueueOp<UpProjectKvParams>(
      info, [](const Napi::Array& o, Refs* r) { return upProjectParams(o, r, true); },
      [](mla::Backend& b, const UpProjectKvParams& p) { b.upProjectKv(p); });
}

Napi::Value MergeAttentionStates(const Napi::CallbackInfo& info) {
  return enqueueOp<MergeAttentionStatesParams>(
      info, [](const Napi::Array& o, Refs* r) { return mergeParams(o, r, true); },
      [](mla::Backend& b, const MergeAttentionStatesParams& p) { b.mergeAttentionStates(p); });
}

// planPrefill(stream, [cuSeqLensQ, cuSeqLensKv, numHeads, causal]) -> an opaque plan for mlaPrefill (tagged), plus
// what it holds for the caller's information.
Napi::Value PlanPrefill(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    StreamWrap& stream = toStream(info[0]);
    Napi::Array o = paramsOf(info[1]);
    TensorView cuQ = toView(o, planPrefillArg::cuSeqLensQ, "cuSeqLensQ", false, nullptr);
    TensorView cuKv = toView(o, planPrefillArg::cuSeqLensKv, "cuSeqLensKv", false, nullptr);
    validateCuSeqLens(cuQ);
    validateCuSeqLens(cuKv);
    const int64_t batch = cuQ.shape[0] - 1;
    if (cuKv.shape[0] != batch + 1)
      throw Error(ErrorCode::Shape, "cuSeqLensKv must have shape [" + std::to_string(batch + 1) + "] (batch + 1, from cuSeqLensQ), got " + cuKv.shapeStr());
    const int64_t heads = positiveInteger(o, planPrefillArg::numHeads, "numHeads");
    const bool causal = o.Get(planPrefillArg::causal).ToBoolean().Value();
    const int32_t* q = cuQ.as<const int32_t>();
    const int32_t* kv = cuKv.as<const int32_t>();
    for (int64_t b = 0; causal && b < batch; ++b)
      if (kv[b + 1] - kv[b] < q[b + 1] - q[b])
        throw Error(ErrorCode::Range, "causal: sequence " + std::to_string(b) + " has " + std::to_string(q[b + 1] - q[b]) + " queries but " +
                                          std::to_string(kv[b + 1] - kv[b]) + " keys; a causal prefill needs at least as many keys as queries");
    std::shared_ptr<const PrefillPlanHandle> plan = stream.backend().planPrefill(batch, heads, causal, q, kv);
    Napi::Object result = Napi::Object::New(env);
    auto handle = Napi::External<std::shared_ptr<const PrefillPlanHandle>>::New(
        env, new std::shared_ptr<const PrefillPlanHandle>(plan), [](Napi::Env, std::shared_ptr<const PrefillPlanHandle>* p) { delete p; });
    napi_type_tag_object(env, handle, &kPrefillPlanTag);
    result.Set("handle", handle);
    result.Set("numWorkItems", static_cast<double>(plan->numWorkItems));
    return result;
  });
}

// outputShapes(op, params): the shapes of the outputs the op would create, after validating inputs.
Napi::Value OutputShapes(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    std::string op = info[0].As<Napi::String>().Utf8Value();
    Napi::Array o = paramsOf(info[1]);
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
    } else if (op == "mlaPrefill") {
      MlaPrefillParams p = prefillParams(o, nullptr, false);
      std::vector<int64_t> outShape, lseShape;
      mlaPrefillOutShapes(p, &outShape, &lseShape);
      result.Set("out", shapeToJs(env, outShape));
      result.Set("lse", shapeToJs(env, lseShape));
    } else if (op == "gatherLatentCache") {
      GatherLatentCacheParams p = gatherParams(o, nullptr, false);
      std::vector<int64_t> kvCShape, kPeShape;
      gatherLatentCacheOutShapes(p, &kvCShape, &kPeShape);
      result.Set("kvC", shapeToJs(env, kvCShape));
      result.Set("kPe", shapeToJs(env, kPeShape));
    } else if (op == "upProjectKv") {
      UpProjectKvParams p = upProjectParams(o, nullptr, false);
      std::vector<int64_t> kNopeShape, vShape;
      upProjectKvOutShapes(p, &kNopeShape, &vShape);
      result.Set("kNope", shapeToJs(env, kNopeShape));
      result.Set("v", shapeToJs(env, vShape));
    } else if (op == "mergeAttentionStates") {
      MergeAttentionStatesParams p = mergeParams(o, nullptr, false);
      std::vector<int64_t> outShape, lseShape;
      mergeAttentionStatesOutShapes(p, &outShape, &lseShape);
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
  Napi::Object dtypeCodes = Napi::Object::New(env);
  for (DType t : kAllDTypes) dtypeCodes.Set(dtypeName(t), Napi::Number::New(env, static_cast<double>(t)));
  facts.Set("dtypeCodes", dtypeCodes);
  Napi::Object deviceKinds = Napi::Object::New(env);
  for (DeviceKind k : kAllDeviceKinds) deviceKinds.Set(deviceKindName(k), Napi::Number::New(env, static_cast<double>(k)));
  facts.Set("deviceKinds", deviceKinds);
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

// The prefill kernels' tile shapes and dynamic shared memory for these dims, from the kernel source itself
// (scripts/check-cuda.mjs checks them against each GPU's limit): prefillKernelShapes(nopeDim, ropeDim, vHeadDim).
Napi::Value PrefillKernelShapes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int nope = info[0].As<Napi::Number>().Int32Value(), rope = info[1].As<Napi::Number>().Int32Value(), vDim = info[2].As<Napi::Number>().Int32Value();
  Napi::Object o = Napi::Object::New(env);
  for (auto [name, config] : {std::pair{"large", kernels_sim::PrefillConfig::Large}, std::pair{"small", kernels_sim::PrefillConfig::Small}}) {
    const kernels_sim::PrefillConfigInfo c = kernels_sim::prefillConfigInfo(config);
    Napi::Object x = Napi::Object::New(env);
    x.Set("blockM", c.blockM);
    x.Set("heads", c.heads);
    x.Set("blockN", c.blockN);
    x.Set("stages", c.stages);
    x.Set("threads", c.threads);
    x.Set("smemBytes", kernels_sim::prefillSmemBytes(config, nope, rope, vDim));
    o.Set(name, x);
  }
  o.Set("gemmNtSmemBytes", kernels_sim::gemmNtSmemBytes());
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
  exports.Set("mlaPrefill", Napi::Function::New(env, MlaPrefill));
  exports.Set("gatherLatentCache", Napi::Function::New(env, GatherLatentCache));
  exports.Set("upProjectKv", Napi::Function::New(env, UpProjectKv));
  exports.Set("mergeAttentionStates", Napi::Function::New(env, MergeAttentionStates));
  exports.Set("planPrefill", Napi::Function::New(env, PlanPrefill));
  exports.Set("NativeGraph", GraphWrap::Define(env));
  exports.Set("replayGraph", Napi::Function::New(env, ReplayGraph));
  exports.Set("backends", Napi::Function::New(env, Backends));
  exports.Set("facts", Napi::Function::New(env, Facts));
  exports.Set("interface", Napi::Number::New(env, kInterface));
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
  exports.Set("prefillKernelShapes", Napi::Function::New(env, PrefillKernelShapes));
#endif
  return exports;
}

}  // namespace
}  // namespace mla::addon

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return mla::addon::Init(env, exports); }
NODE_API_MODULE(mla_kernels, InitAddon)
