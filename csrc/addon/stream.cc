#include "stream.h"

#include <new>
#include <set>

#include "../core/errors.h"
#include "../core/spin.h"
#include "../core/threads.h"
#include "graph.h"
#include "guard.h"
#include "marshal.h"

namespace mla::addon {

void stopStreams(AddonData& data) {
  const std::set<StreamWrap*> streams = data.streams;  // stop() and join() do not touch the set
  for (StreamWrap* s : streams) s->stop();
  for (StreamWrap* s : streams) s->join();
}

Napi::Function StreamWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeStream",
                     {InstanceMethod<&StreamWrap::BackendName>("backend"), InstanceMethod<&StreamWrap::DeviceName>("device"),
                      InstanceMethod<&StreamWrap::Dispose>("dispose"), InstanceMethod<&StreamWrap::BeginCapture>("beginCapture"),
                      InstanceMethod<&StreamWrap::EndCapture>("endCapture")});
}

StreamWrap::StreamWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StreamWrap>(info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    backend_ = &getBackend(parseDevice(info[0].ToString().Utf8Value(), "device"), "device");
    if (!info[1].IsFunction()) throw Error(ErrorCode::Internal, "NativeStream: onComplete must be a function");
    napi_value name;
    if (napi_create_string_utf8(env, "mla-kernels stream", NAPI_AUTO_LENGTH, &name) != napi_ok ||
        napi_create_threadsafe_function(env, info[1], nullptr, name, 0, 1, nullptr, nullptr, nullptr, onDone, &tsfn_) != napi_ok) {
      tsfn_ = nullptr;
      throw Error(ErrorCode::OutOfMemory, "could not make the stream's completion channel (napi_create_threadsafe_function failed)");
    }
    napi_unref_threadsafe_function(env, tsfn_);  // only pending work keeps the event loop alive
    data_ = env.GetInstanceData<AddonData>();
    try {
      worker_ = startThread("the stream's worker thread", [this] { workerLoop(); });
    } catch (...) {
      releaseTsfn();
      throw;
    }
    data_->streams.insert(this);  // last: nothing after the thread has started may throw
  });
}

StreamWrap::~StreamWrap() {
  contained("destroying a stream", [this] {
    stop();
    join();
    if (data_) data_->streams.erase(this);
  });
}

void StreamWrap::stop() {
  std::deque<Task> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    dropped.swap(queue_);
    queued_.store(0, std::memory_order_release);
  }
  cv_.notify_all();
}

void StreamWrap::join() {
  if (worker_.joinable()) worker_.join();
  if (completer_.joinable()) completer_.join();
  for (Completion& c : completions_) delete c.done;  // never reported: the environment is going away
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

bool StreamWrap::failedBy(uint64_t ticket, std::string* code, std::string* message) {
  std::lock_guard<std::mutex> lock(mu_);
  if (failedTicket_ == 0 || failedTicket_ > ticket) return false;
  *code = failedCode_;
  *message = failedMessage_;
  return true;
}

void StreamWrap::recordFailure(const Done& done) {
  std::lock_guard<std::mutex> lock(mu_);
  if (done.ok || (failedTicket_ != 0 && failedTicket_ <= done.ticket)) return;
  failedTicket_ = done.ticket;
  failedCode_ = done.code;
  failedMessage_ = done.message;
}

void StreamWrap::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  cv_.notify_all();
}

void StreamWrap::releaseTsfn() {
  if (!tsfnReleased_.exchange(true) && tsfn_) napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
}

std::vector<StreamWrap::Dependency> StreamWrap::dependencies(const Napi::Value& deps, Retained& refs) {
  std::vector<Dependency> after;
  if (!deps.IsArray()) return after;
  Napi::Array list = deps.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); ++i) {
    Napi::Value entry = list.Get(i);
    if (!entry.IsArray()) throw Error(ErrorCode::Internal, "a dependency must be [stream, ticket]");
    Napi::Array d = entry.As<Napi::Array>();
    Napi::Value other = d.Get(0u), ticket = d.Get(1u);
    if (!other.IsObject() || !ticket.IsNumber()) throw Error(ErrorCode::Internal, "a dependency must be [stream, ticket]");
    StreamWrap* stream = &unwrapped<StreamWrap>(other, "a dependency names no stream");
    if (stream == this) continue;
    refs.refs.push_back(Napi::Persistent(other.As<Napi::Object>()));  // keeps the other stream alive
    const double t = ticket.As<Napi::Number>().DoubleValue();
    after.push_back({stream, static_cast<uint64_t>(t < 0 ? -t : t), t > 0});
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
  const uint64_t ticket = nextTicket_;
  // Everything that may throw before the task is queued: a failed call queues nothing and keeps nothing.
  Task task{ticket, std::move(work), std::move(after), std::make_unique<Done>(Done{this, ticket})};
  auto slot = retained_.emplace(ticket, std::move(retained)).first;
  try {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(task));
    queued_.store(queue_.size(), std::memory_order_release);
  } catch (...) {
    retained_.erase(slot);
    throw;
  }
  ++nextTicket_;
  for (DeviceBufferWrap* b : slot->second.buffers) b->use();
  if (pending_++ == 0) {
    napi_ref_threadsafe_function(Env(), tsfn_);
    uint32_t count = 0;
    napi_reference_ref(Env(), napi_ref(*this), &count);  // the stream object lives while it has work
  }
  cv_.notify_all();  // other threads wait on cv_ too: notify_one could wake one of them instead of the worker
  return ticket;
}

// Runs one task; whatever goes wrong is its failure, reported with its completion.
void StreamWrap::runTask(Task& task) {
  Done& done = *task.done;
  try {
    for (const Dependency& d : task.after) {
      std::shared_ptr<const Fence> fence = d.stream->waitLaunched(d.ticket);
      std::string code, message;
      if (d.reads && d.stream->failedBy(d.ticket, &code, &message)) {
        done.fail(code, message + " (in an operation on " + d.stream->backend().device().str() + " whose writes this one waits for)");
        return;
      }
      if (fence) backend_->waitFence(*fence);
    }
    task.work();
  } catch (const Error& e) {
    done.fail(errorCodeName(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    done.fail("E_OOM", "out of host memory while running the operation");
  } catch (const std::exception& e) {
    done.fail("E_INTERNAL", e.what());
  } catch (...) {
    done.fail("E_INTERNAL", "an unknown C++ exception while running the operation");
  }
}

void StreamWrap::workerLoop() {
  contained("a stream's worker thread", [this] {
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
      runTask(task);
      Done* done = task.done.release();
      // Even after a failure: the buffers it was given stay alive until what it queued is done.
      std::shared_ptr<const Fence> fence;
      try {
        fence = backend_->recordFence();
      } catch (const Error& e) {
        done->fail(errorCodeName(e.code()), e.what());
      } catch (...) {
        done->fail("E_INTERNAL", "recording the operation's fence failed");
      }
      recordFailure(*done);  // before launched_ moves: a dependent that sees the ticket launched sees its failure
      bool viaCompleter = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        launched_ = task.ticket;
        if (fence && !completer_.joinable() && !noCompleter_) {
          try {
            completer_ = startThread("a stream's completion thread", [this] { completerLoop(); });
          } catch (...) {
            noCompleter_ = true;
          }
        }
        // Once there is a completer every completion goes through it, so they stay in ticket order.
        viaCompleter = completer_.joinable();
        if (viaCompleter) {
          try {
            if (fence) fences_[task.ticket] = fence;
            completions_.push_back(Completion{done, fence});
          } catch (...) {
            viaCompleter = false;  // out of memory: wait for this fence here instead
            fences_.erase(task.ticket);
          }
        }
      }
      cv_.notify_all();
      if (!viaCompleter) {
        if (fence) {
          try {
            fence->wait();
          } catch (const Error& e) {
            done->fail(errorCodeName(e.code()), e.what());
          } catch (...) {
            done->fail("E_INTERNAL", "waiting for the operation's device work failed");
          }
          recordFailure(*done);
        }
        post(done);
      }
    }
  });
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
  contained("a stream's completion thread", [this] {
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
          c.done->fail(errorCodeName(e.code()), e.what());
        } catch (...) {
          c.done->fail("E_INTERNAL", "waiting for the operation's device work failed");
        }
        recordFailure(*c.done);
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        fences_.erase(c.done->ticket);
      }
      post(c.done);
    }
  });
  releaseTsfn();  // after the last completion was queued to the main thread
}

void StreamWrap::post(Done* done) {
  // napi_closing once the environment is being torn down: the completion is never delivered.
  if (napi_call_threadsafe_function(tsfn_, done, napi_tsfn_nonblocking) != napi_ok) delete done;
}

// The thread-safe function's callback, on the main thread; `env` is null when Node drops what is still queued at
// teardown. Nothing may throw out of it (it is called from C), and nothing calls into JS once teardown has begun.
void StreamWrap::onDone(napi_env env, napi_value callback, void*, void* data) {
  std::unique_ptr<Done> done(static_cast<Done*>(data));
  if (env == nullptr || !done) return;
  contained("delivering a completion", [&] { done->stream->completed(env, callback, *done); });
}

void StreamWrap::completed(napi_env env, napi_value callback, const Done& done) {
  auto it = retained_.find(done.ticket);
  if (it != retained_.end()) {
    for (DeviceBufferWrap* b : it->second.buffers) b->done();
    retained_.erase(it);
  }
  if (--pending_ == 0) {
    napi_unref_threadsafe_function(env, tsfn_);
    uint32_t count = 0;
    napi_reference_unref(env, napi_ref(*this), &count);  // Unref() without its exception on failure
    reapIfClosed();
  }
  if (data_ && data_->tearingDown) return;
  napi_value args[3];
  if (napi_create_double(env, static_cast<double>(done.ticket), &args[0]) != napi_ok) return;
  if (done.ok) {
    napi_get_null(env, &args[1]);
    napi_get_null(env, &args[2]);
  } else if (napi_create_string_utf8(env, done.code.c_str(), done.code.size(), &args[1]) != napi_ok ||
             napi_create_string_utf8(env, done.message.c_str(), done.message.size(), &args[2]) != napi_ok) {
    return;
  }
  napi_value undefined, result;
  napi_get_undefined(env, &undefined);
  // Fails (and leaves nothing thrown) when the environment is terminating; a JS exception from the callback is
  // Node's to report as uncaught.
  napi_call_function(env, undefined, callback, 3, args, &result);
}

Napi::Value StreamWrap::BackendName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), backend_->name());
}

Napi::Value StreamWrap::DeviceName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), backend_->device().str());
}

Napi::Value StreamWrap::Dispose(const Napi::CallbackInfo& info) {
  close();
  reapIfClosed();
  return info.Env().Undefined();
}

// A disposed stream with nothing pending: its threads are exiting (or have); joining them now gives their stacks
// back at once, not when the stream object is collected.
void StreamWrap::reapIfClosed() {
  if (pending_ != 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closing_) return;
  }
  join();
}

}  // namespace mla::addon
