// The module: per-environment state, then each file's exports. N-API glue only: marshalling (marshal.cc), the ops
// (op_*.cc), streams, graphs and device buffers, the backends' hooks (hooks.cc) and info (info.cc); validation lives
// in core/ops.cc and the kernels in the backends, reached only through core/backend.h.
#include <napi.h>

#include "env.h"
#include "graph.h"
#include "stream.h"
#include "device_buffer.h"

namespace mla::addon {

// Each file's exports; an op adds its line here (docs/architecture.md).
void exportInfo(Napi::Env env, Napi::Object exports);
void exportHooks(Napi::Env env, Napi::Object exports);
void exportOutputShapes(Napi::Env env, Napi::Object exports);
void exportCopy(Napi::Env env, Napi::Object exports);
void exportAppendLatentCache(Napi::Env env, Napi::Object exports);
void exportMlaDecode(Napi::Env env, Napi::Object exports);
void exportAbsorbQuery(Napi::Env env, Napi::Object exports);
void exportUnabsorbOutput(Napi::Env env, Napi::Object exports);
void exportMlaPrefill(Napi::Env env, Napi::Object exports);
void exportGatherLatentCache(Napi::Env env, Napi::Object exports);
void exportUpProjectKv(Napi::Env env, Napi::Object exports);
void exportMergeAttentionStates(Napi::Env env, Napi::Object exports);
void exportMlaSparse(Napi::Env env, Napi::Object exports);
void exportLightningIndexer(Napi::Env env, Napi::Object exports);

namespace {

constexpr void (*kExports[])(Napi::Env, Napi::Object) = {
    exportInfo, exportHooks, exportOutputShapes, exportCopy, exportAppendLatentCache, exportMlaDecode,
    exportAbsorbQuery, exportUnabsorbOutput, exportMlaPrefill, exportGatherLatentCache, exportUpProjectKv, exportMergeAttentionStates,
    exportMlaSparse, exportLightningIndexer,
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  initEnv(env);
  exports.Set("NativeStream", StreamWrap::Define(env));
  exports.Set("NativeDeviceBuffer", DeviceBufferWrap::Define(env));
  exports.Set("NativeGraph", GraphWrap::Define(env));
  exports.Set("replayGraph", Napi::Function::New(env, ReplayGraph));
  for (auto exportFrom : kExports) exportFrom(env, exports);
  return exports;
}

}  // namespace
}  // namespace mla::addon

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return mla::addon::Init(env, exports); }
NODE_API_MODULE(mla_kernels, InitAddon)
