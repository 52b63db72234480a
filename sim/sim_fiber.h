// cuda-sim fibers: cooperative contexts on one OS thread, with a pool of reusable stacks.
// x86-64: a hand-written switch (callee-saved registers + MXCSR/x87 control word, no syscall);
// elsewhere (or with -DMLA_SIM_UCONTEXT): ucontext (swapcontext does a sigprocmask syscall per switch).
// Under AddressSanitizer every switch is announced with __sanitizer_start/finish_switch_fiber.
#pragma once

#include <cstddef>
#include <cstdint>

#if !defined(MLA_SIM_UCONTEXT) && !(defined(__x86_64__) && defined(__linux__))
#define MLA_SIM_UCONTEXT 1
#endif
#ifdef MLA_SIM_UCONTEXT
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define MLA_SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MLA_SIM_ASAN 1
#endif
#endif

namespace cudasim {
namespace fiber {

struct Stack {
  char* lo = nullptr;  // lowest usable address (a PROT_NONE guard page lies below)
  size_t size = 0;
};

// Stacks are mmap'ed (MAP_NORESERVE, guard page below) and kept per OS thread for reuse.
Stack acquire_stack();
void release_stack(const Stack& s);
size_t stack_size();

struct Fiber {
#ifdef MLA_SIM_UCONTEXT
  ucontext_t uc;
#else
  void* sp = nullptr;
#endif
  Stack stack;
  void* asan_fake_stack = nullptr;
  void (*entry)(void*) = nullptr;
  void* arg = nullptr;
};

using Entry = void (*)(void* arg);

// Prepare `f` (whose stack is set) to run entry(arg) at its first resume().
void prepare(Fiber& f, Entry entry, void* arg);
// From the scheduler (the OS thread's own stack): run `f` until it calls suspend() or finish().
void resume(Fiber& f);
// From inside fiber `f`: go back to the scheduler; returns at the next resume(f).
void suspend(Fiber& f);
// From inside fiber `f`, for good (its stack may be reused at once).
[[noreturn]] void finish(Fiber& f);
// First thing a fiber's entry function must call (ASan bookkeeping of the switch that started it).
void entered(Fiber& f);
// Clear ASan's shadow of a stack whose fiber was abandoned (no-op without ASan).
void unpoison(const Stack& s);

}  // namespace fiber
}  // namespace cudasim
