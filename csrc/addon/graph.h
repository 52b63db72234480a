// A captured graph (Stream.capture): the operations a stream recorded, validated, with the buffers they use kept
// alive. Each replay reads the caller's index arrays again, validates every operation as if it were called now,
// replans a decode whose sequence lengths changed (once per distinct lengths, shared by every layer), and queues the
// whole graph as one operation of its stream; the backend runs it (the CUDA backend as a CUDA graph).
#pragma once
#include <napi.h>

#include <memory>
#include <vector>

#include "../core/backend.h"
#include "device_buffer.h"

namespace mla::addon {

class StreamWrap;

class GraphWrap : public Napi::ObjectWrap<GraphWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // A new NativeGraph of `stream` (a NativeStream) holding `ops`; takes the buffers in `retained` into use.
  static Napi::Object Create(Napi::Env env, Napi::Value stream, std::vector<GraphOp> ops, Retained retained);
  explicit GraphWrap(const Napi::CallbackInfo& info);
  // Collected without dispose(): the buffers' use is not returned. Their objects may already be finalised (at
  // teardown the order is arbitrary), and a buffer no longer referenced frees its memory when it is collected anyway.
  ~GraphWrap() override = default;

  // replayGraph(stream, graph, deps) -> ticket.
  friend Napi::Value ReplayGraph(const Napi::CallbackInfo& info);

 private:
  Napi::Value NumOps(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  void release();

  Napi::ObjectReference stream_;
  std::vector<GraphOp> ops_;
  Retained retained_;
  bool disposed_ = false;
  // The backend's state of this graph; shared with queued replays, which may outlive the graph.
  std::shared_ptr<std::unique_ptr<GraphState>> state_ = std::make_shared<std::unique_ptr<GraphState>>();
};

Napi::Value ReplayGraph(const Napi::CallbackInfo& info);

}  // namespace mla::addon
