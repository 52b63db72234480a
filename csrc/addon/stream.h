// A stream: operations run in order on one native worker thread, never on Node's main thread, on one device.
// On a GPU the worker only queues each operation's device work and goes on to the next; a second thread (the
// completer, started at the first operation that leaves work on the device) waits for each operation's fence and
// reports it complete (when it cannot be started, the worker waits for each fence itself). The JS side learns of each
// completed operation through a thread-safe function; what an operation uses is kept alive until it completes
// (lifetime.h). An operation that waits for a write on another stream which failed (or follows a failure there)
// fails with that error instead of running: failures propagate to every reader, on any stream.
#pragma once
#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../core/backend.h"
#include "device_buffer.h"
#include "guard.h"

namespace mla::addon {

// Stops every stream of an environment when it is torn down (process or worker exit): each stops after the
// operation it is running, drops what is queued and joins its threads.
void stopStreams(AddonData& data);

class StreamWrap : public Napi::ObjectWrap<StreamWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // new NativeStream(device, onComplete(ticket, code | null, message | null)); device 'cuda-sim:1', or a backend
  // name for its device 0
  explicit StreamWrap(const Napi::CallbackInfo& info);
  ~StreamWrap() override;

  Backend& backend() const { return *backend_; }
  // A write on another stream that an operation must wait for (Tensor records which stream last wrote it): the
  // worker waits until `stream` has queued `ticket`, then makes its own device work wait for that ticket's fence.
  struct Dependency {
    StreamWrap* stream;
    uint64_t ticket;
    bool reads;  // the operation reads what that write wrote: its failure is the operation's (else it only rewrites it)
  };
  // Main thread only: the dependencies [[NativeStream, ticket], ...] lib/ passes (disposed streams included: their
  // queued writes still run; a negative ticket: the operation rewrites, not reads, what that write wrote), keeping the
  // other streams alive through `refs`; those on this stream are dropped (its operations run in order anyway).
  std::vector<Dependency> dependencies(const Napi::Value& deps, Retained& refs);
  // Main thread only. Queues `work` to run after `after`; returns its ticket (1, 2, 3, ...).
  uint64_t enqueue(std::function<void()> work, Retained retained, std::vector<Dependency> after = {});
  // Blocks the calling worker until this stream's worker has run `ticket` (or the stream stops); returns the fence
  // of the device work it left, null when there is none or it has completed.
  std::shared_ptr<const Fence> waitLaunched(uint64_t ticket);
  // Capture (Stream.capture in lib/stream.ts), main thread only: between beginCapture() and endCapture() the
  // stream's operations are validated and recorded, not queued; endCapture() returns them as a NativeGraph.
  bool capturing() const { return capture_ != nullptr; }
  void captured(GraphOp op, Retained refs);
  // The first failure of an operation up to `ticket` on this stream (what a dependency on it inherits), if any.
  bool failedBy(uint64_t ticket, std::string* code, std::string* message);
  // Refuses new work; the worker finishes what is queued, then exits.
  void close();
  // Environment teardown: stop() asks the worker to stop after the operation it is running and drops what is
  // queued; join() waits for its threads. stopStreams() stops every stream before it joins any, so a worker that
  // waits for another stream is not left waiting.
  void stop();
  void join();

 private:
  // Made on the main thread with its task, so the worker allocates nothing to report an operation.
  struct Done {
    StreamWrap* stream;
    uint64_t ticket;
    bool ok = true;
    std::string code, message;
    void fail(const std::string& c, const std::string& m) {
      if (!ok) return;
      ok = false;
      code = c;
      message = m;
    }
  };
  struct Task {
    uint64_t ticket = 0;
    std::function<void()> work;
    std::vector<Dependency> after;
    std::unique_ptr<Done> done;
  };
  struct Completion {
    Done* done;
    std::shared_ptr<const Fence> fence;
  };

  Napi::Value BackendName(const Napi::CallbackInfo& info);
  Napi::Value DeviceName(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value BeginCapture(const Napi::CallbackInfo& info);
  Napi::Value EndCapture(const Napi::CallbackInfo& info);
  void workerLoop();
  void runTask(Task& task);
  void completerLoop();
  void post(Done* done);
  void recordFailure(const Done& done);
  void releaseTsfn();
  void reapIfClosed();
  static void onDone(napi_env env, napi_value callback, void* context, void* done);
  void completed(napi_env env, napi_value callback, const Done& done);

  mla::Backend* backend_ = nullptr;
  AddonData* data_ = nullptr;
  napi_threadsafe_function tsfn_ = nullptr;  // raw: node-addon-api's allocates per call and may throw from its callback
  std::atomic<bool> tsfnReleased_{false};
  // Main thread only.
  uint64_t nextTicket_ = 1;
  uint64_t pending_ = 0;
  std::map<uint64_t, Retained> retained_;
  struct Capture {
    std::vector<GraphOp> ops;
    Retained retained;
  };
  std::unique_ptr<Capture> capture_;
  // Shared with the worker.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  std::atomic<size_t> queued_{0};  // queue_.size(), for the worker's spin before it sleeps
  uint64_t launched_ = 0;                                     // last ticket the worker ran
  std::map<uint64_t, std::shared_ptr<const Fence>> fences_;  // of tickets run but not yet completed
  std::deque<Completion> completions_;                        // for the completer, in ticket order
  bool stop_ = false;          // drop the queue and exit
  bool closing_ = false;       // exit once the queue is empty
  bool workerExited_ = false;
  bool noCompleter_ = false;   // the completer could not be started: the worker waits for each fence itself
  // The first failed operation (under mu_): later operations of other streams that wait for this one's writes fail.
  uint64_t failedTicket_ = 0;
  std::string failedCode_, failedMessage_;
  std::thread worker_;
  std::thread completer_;  // started by the worker; joined after it
};

}  // namespace mla::addon
