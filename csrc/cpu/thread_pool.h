// The CPU backend's thread pool: one per process, sized to the cores this process may run on (MLA_NUM_THREADS
// overrides). Several callers (the worker threads of several streams) may run parallelFor at once: each call is a
// job in a shared list; the pool's threads take indices of the oldest job first and the caller works on its own job
// until every index is done, so a call always finishes even when the pool is busy with another stream's job.
#pragma once
#include <cstdint>
#include <functional>

namespace mla::cpu {

class ThreadPool;

// The process's pool (created on first use).
ThreadPool& pool();
// Threads that run a parallelFor (the pool's threads plus the caller).
int poolThreads();
// Runs fn(i) for i in [0, n) on the pool and the calling thread; rethrows the first exception after all are done.
void parallelFor(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace mla::cpu
