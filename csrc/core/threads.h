// Starting a thread: the system's refusal (threads, or memory for their stacks, exhausted) becomes mla::Error E_OOM
// saying why, never an exception out of a constructor. MLA_THREAD_LIMIT (for tests) caps how many threads
// mla-kernels runs at once, so that refusal can be reached without exhausting the machine.
#pragma once
#include <atomic>
#include <climits>
#include <cstdlib>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "errors.h"

namespace mla {

namespace detail {
inline std::atomic<int> liveThreads{0};
inline int threadLimit() {
  static const int limit = [] {
    const char* env = std::getenv("MLA_THREAD_LIMIT");
    const int n = env ? std::atoi(env) : 0;
    return n > 0 ? n : INT_MAX;
  }();
  return limit;
}
}  // namespace detail

// An object the threads of mla-kernels use, made once and never destroyed: exit() runs static destructors while
// stream and pool threads may still be inside an operation (process.exit() on Node's main thread tears no
// environment down first, so no cleanup hook stops them).
template <class T, class... Args>
T& neverDestroyed(Args&&... args) {
  return *new T(std::forward<Args>(args)...);
}

// std::thread(fn), or mla::Error E_OOM naming `what` and the reason. fn must not throw.
template <class Fn>
std::thread startThread(const char* what, Fn&& fn) {
  auto refused = [what](const std::string& why) {
    return Error(ErrorCode::OutOfMemory, std::string("could not start ") + what + ": " + why +
                                             " (the process is out of threads or of memory for their stacks; dispose streams it no longer uses)");
  };
  if (detail::liveThreads.fetch_add(1) >= detail::threadLimit()) {
    detail::liveThreads.fetch_sub(1);
    throw refused("Resource temporarily unavailable (MLA_THREAD_LIMIT=" + std::to_string(detail::threadLimit()) + ")");
  }
  try {
    return std::thread([run = std::forward<Fn>(fn)]() mutable {
      run();
      detail::liveThreads.fetch_sub(1);
    });
  } catch (const std::system_error& e) {
    detail::liveThreads.fetch_sub(1);
    throw refused(e.what());
  }
}

}  // namespace mla
