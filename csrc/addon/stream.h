// A stream: operations run in order on one native worker thread, never on Node's main thread.
// The JS side learns of each completed operation through a thread-safe function; the buffers an
// operation uses are kept alive (persistent references) until it completes.
#pragma once
#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "../core/backend.h"
#include "device_buffer.h"
#include "js_error.h"

namespace mla::addon {

// Stops every stream of an environment when it is torn down (process or worker exit).
void stopStreams(void* addonData);

class StreamWrap : public Napi::ObjectWrap<StreamWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // new NativeStream(backendName, onComplete(ticket, code | null, message | null))
  explicit StreamWrap(const Napi::CallbackInfo& info);
  ~StreamWrap() override;

  Backend& backend() const { return *backend_; }
  // A write on another stream that an operation must wait for: the worker waits until `stream` has completed
  // `ticket` (Tensor records which stream last wrote it).
  struct Dependency {
    StreamWrap* stream;
    uint64_t ticket;
  };
  // Main thread only. Queues `work` to run after `after`; returns its ticket (1, 2, 3, ...).
  uint64_t enqueue(std::function<void()> work, Retained retained, std::vector<Dependency> after = {});
  // Blocks the calling worker until this stream's worker has finished `ticket` (or the stream stops).
  void waitCompleted(uint64_t ticket);
  // Refuses new work; the worker finishes what is queued, then exits.
  void close();
  // Stops the worker after the operation it is running and drops what is queued (process exit).
  void shutdown();

 private:
  struct Task {
    uint64_t ticket;
    std::function<void()> work;
    std::vector<Dependency> after;
  };
  struct Done {
    StreamWrap* stream;
    uint64_t ticket;
    bool ok;
    std::string code, message;
  };

  Napi::Value BackendName(const Napi::CallbackInfo& info);
  Napi::Value DeviceName(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  void workerLoop();
  void releaseTsfn();
  static void onDone(Napi::Env env, Napi::Function callback, Done* done);

  mla::Backend* backend_ = nullptr;
  AddonData* data_ = nullptr;
  Napi::ThreadSafeFunction tsfn_;
  std::atomic<bool> tsfnReleased_{false};
  // Main thread only.
  uint64_t nextTicket_ = 1;
  uint64_t pending_ = 0;
  std::map<uint64_t, Retained> retained_;
  // Shared with the worker.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  uint64_t workerCompleted_ = 0;  // last ticket the worker finished (guarded by mu_)
  bool stop_ = false;     // drop the queue and exit
  bool closing_ = false;  // exit once the queue is empty
  std::thread worker_;
};

}  // namespace mla::addon
