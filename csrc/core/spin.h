// Spinning before sleeping: a thread with nothing to do checks for work for a short while before it waits on a
// condition variable. Waking a sleeping thread goes through the kernel (in a VM often an interrupt to a halted
// virtual CPU), which costs more than a small decode; decode steps come back to back, so the threads are usually
// still spinning when the next operation arrives.
#pragma once
#include <chrono>
#include <thread>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace mla {

constexpr std::chrono::microseconds kSpin{200};

inline void cpuRelax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until ready() or kSpin has passed; true when ready. Yields now and then: a runnable thread that has work
// (the JS thread, say, on a machine with few cores) goes first.
template <class Ready>
bool spinUntil(Ready ready) {
  const auto end = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpuRelax();
    }
    if (std::chrono::steady_clock::now() >= end) return ready();
    std::this_thread::yield();
  }
}

}  // namespace mla
