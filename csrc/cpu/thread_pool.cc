#include "thread_pool.h"

#include "../core/spin.h"
#include "../core/threads.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

namespace mla::cpu {

namespace {

struct Job {
  const std::function<void(int64_t)>* fn = nullptr;
  int64_t n = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable cv;
  std::exception_ptr error;

  // Takes and runs indices until none is left; returns when this thread can take no more.
  void work() {
    for (;;) {
      const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n) return;
      try {
        (*fn)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
      }
      if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
        std::lock_guard<std::mutex> lock(mu);
        cv.notify_all();
      }
    }
  }
};

int defaultThreads() {
  if (const char* env = std::getenv("MLA_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return n > 1024 ? 1024 : n;
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n >= 1 ? static_cast<int>(n) : 1;
}

}  // namespace

class ThreadPool {
 public:
  // Starts as many of the threads as the system allows (at least the caller works): exhausted threads make the
  // pool smaller, never an error.
  explicit ThreadPool(int threads) {
    try {
      workers_.reserve(static_cast<size_t>(threads - 1));
      for (int i = 1; i < threads; ++i) workers_.push_back(startThread("a CPU pool thread", [this] { loop(); }));
    } catch (...) {
    }
    threads_ = static_cast<int>(workers_.size()) + 1;
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : workers_) t.join();
  }
  int threads() const { return threads_; }

  void run(int64_t n, const std::function<void(int64_t)>& fn) {
    if (n <= 0) return;
    if (n == 1 || threads_ == 1) {
      for (int64_t i = 0; i < n; ++i) fn(i);
      return;
    }
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->n = n;
    bool sleepers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(job);
      pending_.store(static_cast<int64_t>(jobs_.size()), std::memory_order_release);
      sleepers = sleepers_ > 0;
    }
    if (sleepers) cv_.notify_all();  // spinning workers see pending_ without it
    job->work();
    if (!spinUntil([&] { return job->done.load(std::memory_order_acquire) == n; })) {
      std::unique_lock<std::mutex> lock(job->mu);
      job->cv.wait(lock, [&] { return job->done.load(std::memory_order_acquire) == n; });
    }
    retire(job);
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  void retire(const std::shared_ptr<Job>& job) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = jobs_.begin(); it != jobs_.end(); ++it)
      if (*it == job) {
        jobs_.erase(it);
        break;
      }
    pending_.store(static_cast<int64_t>(jobs_.size()), std::memory_order_release);
  }

  void loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      spinUntil([this] { return pending_.load(std::memory_order_acquire) > 0; });
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (!stop_ && jobs_.empty()) {
          ++sleepers_;  // under mu_: run() reads it under mu_ after pushing, so no wake-up is lost
          cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
          --sleepers_;
        }
        if (stop_) return;
        job = jobs_.front();
      }
      job->work();
      retire(job);  // every index of it is taken: the next thread looks at the next job
    }
  }

  int threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> jobs_;
  std::atomic<int64_t> pending_{0};  // jobs_.size(), read without the lock by spinning workers
  int sleepers_ = 0;                 // workers waiting on cv_ (under mu_)
  bool stop_ = false;
};

ThreadPool& pool() {
  // Never destroyed: worker threads must not be joined from a static destructor while Node tears down.
  static ThreadPool* p = new ThreadPool(defaultThreads());  // bad_alloc: the operation fails with E_OOM, the next one retries
  return *p;
}

int poolThreads() { return pool().threads(); }

void parallelFor(int64_t n, const std::function<void(int64_t)>& fn) { pool().run(n, fn); }

}  // namespace mla::cpu
