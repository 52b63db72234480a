#include "stream.h"

#include <new>
#include <set>

#include "../core/errors.h"
#include "../core/spin.h"
#include "graph.h"
#include "guard.h"

namespace mla::addon {
void stopStreams(void* arg) {
  auto* data = static_cast<AddonData*>(arg);
  std::set<StreamWrap*> streams = data->streams;  // shutdown() does not touch the set
  for (StreamWrap* s : streams) s->shutdown();
}

Napi::Function StreamWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeStream",
                     {InstanceMethod<&StreamWrap::BackendName>("backend"), InstanceMethod<&StreamWrap::DeviceName>("device"),
                      InstanceMethod<&StreamWrap::Dispose>("dispose"), InstanceMethod<&StreamWrap::BeginCapture>("beginCapture"),
                      InstanceMethod<&StreamWrap::EndCapture>("endCapture")});
}

StreamWrap::StreamWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StreamWrap>(info) {
  Napi::Env env = info.Env();
  backend_ = guarded(env, [&] { return &getBackend(parseDevice(info[0].ToString().Utf8Value(), "device"), "device"); });
  tsfn_ = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "mla-kernels stream", 0, 1);
  tsfn_.Unref(env);  // only pending work keeps the event loop alive
  data_ = env.GetInstanceData<AddonData>();
  data_->streams.insert(this);
  worker_ = std::thread([this] { workerLoop(); });
}

StreamWrap::~StreamWrap() {
  shutdown();
  data_->streams.erase(this);
}

void StreamWrap::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  if (completer_.joinable()) completer_.join();
  for (Completion& c : completions_) delete c.done;  // never reported: Node is going away
  completions_.clear();
  fences_.clear();
  releaseTsfn();
}

std::shared_ptr<const Fence> StreamWrap::waitLaunched(uint64_t ticket) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return launched_ >= ticket || stop_ || workerExited_; });
  auto it = fences_.find(ticket);
  return it == fences_.end() ? nullptr : it->second;
}

void StreamWrap::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  cv_.notify_all();
}

void StreamWrap::releaseTsfn() {
  if (!tsfnReleased_.exchange(true)) tsfn_.Release();
}

std::vector<StreamWrap::Dependency> StreamWrap::dependencies(const Napi::Value& deps, Retained& refs) {
  std::vector<Dependency> after;
  if (!deps.IsArray()) return after;
  Napi::Array list = deps.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); ++i) {
    Napi::Array d = list.Get(i).As<Napi::Array>();
    Napi::Value other = d.Get(0u);
    if (!other.IsObject()) throw Error(ErrorCode::Internal, "a dependency names no stream");
    StreamWrap* stream = Unwrap(other.As<Napi::Object>());
    if (stream == this) continue;
    refs.refs.push_back(Napi::Persistent(other.As<Napi::Object>()));  // keeps the other stream alive
    after.push_back({stream, static_cast<uint64_t>(d.Get(1u).As<Napi::Number>().DoubleValue())});
  }
  return after;
}

void StreamWrap::captured(GraphOp op, Retained refs) {
  capture_->ops.push_back(std::move(op));
  for (Napi::ObjectReference& r : refs.refs) capture_->retained.refs.push_back(std::move(r));
  for (DeviceBufferWrap* b : refs.buffers) capture_->retained.buffers.push_back(b);
}

Napi::Value StreamWrap::BeginCapture(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (capture_) throw Error(ErrorCode::Argument, "the stream is already capturing a graph");
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_ || closing_) throw Error(ErrorCode::Disposed, "the stream was disposed");
    }
    capture_ = std::make_unique<Capture>();
    return info.Env().Undefined();
  });
}

// endCapture(keep): the graph of what was recorded, or undefined when `keep` is false (the capture failed).
Napi::Value StreamWrap::EndCapture(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (!capture_) throw Error(ErrorCode::Argument, "the stream is not capturing a graph");
    std::unique_ptr<Capture> capture = std::move(capture_);
    if (!info[0].ToBoolean().Value()) return info.Env().Undefined();
    return GraphWrap::Create(info.Env(), Value(), std::move(capture->ops), std::move(capture->retained));
  });
}

uint64_t StreamWrap::enqueue(std::function<void()> work, Retained retained, std::vector<Dependency> after) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || closing_) throw Error(ErrorCode::Disposed, "the stream was disposed");
  }
  const uint64_t ticket = nextTicket_++;
  for (DeviceBufferWrap* b : retained.buffers) b->use();
  retained_.emplace(ticket, std::move(retained));
  if (pending_++ == 0) {
    tsfn_.Ref(Env());
    Ref();  // the stream object lives while it has work
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(Task{ticket, std::move(work), std::move(after)});
    queued_.store(queue_.size(), std::memory_order_release);
  }
  cv_.notify_all();  // other threads wait on cv_ too: notify_one could wake one of them instead of the worker
  return ticket;
}

void StreamWrap::workerLoop() {
  for (;;) {
    Task task;
    spinUntil([this] { return queued_.load(std::memory_order_acquire) > 0; });  // see core/spin.h
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || closing_ || !queue_.empty(); });
      if (stop_ || queue_.empty()) break;
      task = std::move(queue_.front());
      queue_.pop_front();
      queued_.store(queue_.size(), std::memory_order_release);
    }
    auto* done = new Done{this, task.ticket, true, "", ""};
    auto fail = [&](const std::string& code, const std::string& message) {
      if (done->ok) *done = Done{this, task.ticket, false, code, message};
    };
    try {
      for (const Dependency& d : task.after)
        if (std::shared_ptr<const Fence> fence = d.stream->waitLaunched(d.ticket)) backend_->waitFence(*fence);
      task.work();
    } catch (const Error& e) {
      fail(errorCodeName(e.code()), e.what());
    } catch (const std::bad_alloc&) {
      fail("E_OOM", "out of host memory while running the operation");
    } catch (const std::exception& e) {
      fail("E_INTERNAL", e.what());
    }
    // Even after a failure: the buffers it was given stay alive until what it queued is done.
    std::shared_ptr<const Fence> fence;
    try {
      fence = backend_->recordFence();
    } catch (const Error& e) {
      fail(errorCodeName(e.code()), e.what());
    } catch (const std::exception& e) {
      fail("E_INTERNAL", e.what());
    }
    bool viaCompleter = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      launched_ = task.ticket;
      if (fence && !completer_.joinable()) completer_ = std::thread([this] { completerLoop(); });
      // Once there is a completer every completion goes through it, so they stay in ticket order.
      viaCompleter = completer_.joinable();
      if (viaCompleter) {
        if (fence) fences_[task.ticket] = fence;
        completions_.push_back(Completion{done, std::move(fence)});
      }
    }
    cv_.notify_all();
    if (!viaCompleter) post(done);
  }
  bool hasCompleter = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    workerExited_ = true;
    hasCompleter = completer_.joinable();
  }
  cv_.notify_all();
  if (!hasCompleter) releaseTsfn();  // after the last completion was queued to the main thread
}

// Reports each operation complete once its device work is done, in ticket order.
void StreamWrap::completerLoop() {
  for (;;) {
    Completion c;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || workerExited_ || !completions_.empty(); });
      if (stop_ || completions_.empty()) break;
      c = std::move(completions_.front());
      completions_.pop_front();
    }
    if (c.fence) {
      try {
        c.fence->wait();
      } catch (const Error& e) {
        if (c.done->ok) *c.done = Done{this, c.done->ticket, false, errorCodeName(e.code()), e.what()};
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      fences_.erase(c.done->ticket);
    }
    post(c.done);
  }
  releaseTsfn();  // after the last completion was queued to the main thread
}

void StreamWrap::post(Done* done) {
  if (tsfn_.NonBlockingCall(done, onDone) != napi_ok) delete done;  // Node is shutting down
}

void StreamWrap::onDone(Napi::Env env, Napi::Function callback, Done* done) {
  std::unique_ptr<Done> owned(done);
  if (env == nullptr) return;
  StreamWrap* self = done->stream;
  auto it = self->retained_.find(done->ticket);
  if (it != self->retained_.end()) {
    for (DeviceBufferWrap* b : it->second.buffers) b->done();
    self->retained_.erase(it);
  }
  if (--self->pending_ == 0) {
    self->tsfn_.Unref(env);
    self->Unref();
  }
  Napi::Value code = done->ok ? env.Null() : Napi::String::New(env, done->code);
  Napi::Value message = done->ok ? env.Null() : Napi::String::New(env, done->message);
  callback.Call({Napi::Number::New(env, static_cast<double>(done->ticket)), code, message});
}

Napi::Value StreamWrap::BackendName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), backend_->name());
}

Napi::Value StreamWrap::DeviceName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), backend_->device().str());
}

Napi::Value StreamWrap::Dispose(const Napi::CallbackInfo& info) {
  close();
  return info.Env().Undefined();
}

}  // namespace mla::addon
