// cuda-sim fibers; see sim_fiber.h.
#include "sim_fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#ifdef MLA_SIM_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace cudasim {
namespace fiber {

namespace {

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

size_t compute_stack_size() {
#ifdef MLA_SIM_ASAN
  size_t kb = 1024;  // ASan frames are several times larger (redzones)
#else
  size_t kb = 256;
#endif
  if (const char* e = std::getenv("MLA_SIM_STACK_KB")) {
    const long v = std::strtol(e, nullptr, 10);
    if (v >= 64) kb = static_cast<size_t>(v);
  }
  const size_t p = page_size();
  return (kb * 1024 + p - 1) / p * p;
}

struct StackPool {
  std::vector<Stack> free;
  ~StackPool() {
    for (const Stack& s : free) munmap(s.lo - page_size(), s.size + page_size());
  }
};
thread_local StackPool tl_pool;

// The scheduler's stack as ASan knows it (learnt from the first switch into a fiber).
struct SchedulerStack {
  const void* bottom = nullptr;
  size_t size = 0;
  void* fake = nullptr;
};
thread_local SchedulerStack tl_sched;

#ifndef MLA_SIM_UCONTEXT
thread_local void* tl_sched_sp = nullptr;
#else
thread_local ucontext_t tl_sched_uc;
#endif

}  // namespace

size_t stack_size() {
  static const size_t s = compute_stack_size();
  return s;
}

Stack acquire_stack() {
  StackPool& pool = tl_pool;
  if (!pool.free.empty()) {
    Stack s = pool.free.back();
    pool.free.pop_back();
    return s;
  }
  const size_t sz = stack_size();
  const size_t guard = page_size();
  void* m = mmap(nullptr, sz + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  mprotect(m, guard, PROT_NONE);
  Stack s;
  s.lo = static_cast<char*>(m) + guard;
  s.size = sz;
  return s;
}

void release_stack(const Stack& s) { tl_pool.free.push_back(s); }

void unpoison(const Stack& s) {
#ifdef MLA_SIM_ASAN
  __asan_unpoison_memory_region(s.lo, s.size);
#else
  (void)s;
#endif
}

// ---------------------------------------------------------------------------------------------------------------
#ifndef MLA_SIM_UCONTEXT

extern "C" void mla_sim_switch_x64(void** save_sp, void* new_sp);
extern "C" void mla_sim_fiber_start_x64();

// rdi = where to save the current stack pointer, rsi = stack pointer to switch to.
// Saved on the stack: rbp rbx r12-r15 and an 8-byte slot with MXCSR (low 4 bytes) and the x87 control word.
asm(R"(
  .text
  .p2align 4
  .globl mla_sim_switch_x64
  .hidden mla_sim_switch_x64
  .type mla_sim_switch_x64, @function
mla_sim_switch_x64:
  .cfi_startproc
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .cfi_endproc
  .size mla_sim_switch_x64, .-mla_sim_switch_x64

  .p2align 4
  .globl mla_sim_fiber_start_x64
  .hidden mla_sim_fiber_start_x64
  .type mla_sim_fiber_start_x64, @function
mla_sim_fiber_start_x64:
  .cfi_startproc
  .cfi_undefined rip
  movq %r12, %rdi
  callq *%r13
  ud2
  .cfi_endproc
  .size mla_sim_fiber_start_x64, .-mla_sim_fiber_start_x64
)");

void prepare(Fiber& f, Entry entry, void* arg) {
  f.entry = entry;
  f.arg = arg;
  f.asan_fake_stack = nullptr;
  char* top = f.stack.lo + f.stack.size;  // page aligned, so 16-byte aligned
  uint64_t* s = reinterpret_cast<uint64_t*>(top);
  uint32_t mxcsr;
  uint16_t fcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fcw));
  s[-1] = 0;
  s[-2] = 0;
  s[-3] = reinterpret_cast<uint64_t>(&mla_sim_fiber_start_x64);  // popped by ret: rsp = top-16 (16-aligned)
  s[-4] = 0;                                                      // rbp: ends frame-pointer walks
  s[-5] = 0;                                                      // rbx
  s[-6] = reinterpret_cast<uint64_t>(arg);                        // r12
  s[-7] = reinterpret_cast<uint64_t>(entry);                      // r13
  s[-8] = 0;                                                      // r14
  s[-9] = 0;                                                      // r15
  s[-10] = static_cast<uint64_t>(mxcsr) | (static_cast<uint64_t>(fcw) << 32);
  f.sp = &s[-10];
}

static inline void raw_to_fiber(Fiber& f) { mla_sim_switch_x64(&tl_sched_sp, f.sp); }
static inline void raw_to_scheduler(Fiber& f) { mla_sim_switch_x64(&f.sp, tl_sched_sp); }

#else  // ucontext

namespace {
thread_local Fiber* tl_resuming = nullptr;
void uc_trampoline() {
  Fiber* f = tl_resuming;
  f->entry(f->arg);
  std::abort();
}
}  // namespace

void prepare(Fiber& f, Entry entry, void* arg) {
  getcontext(&f.uc);
  f.uc.uc_stack.ss_sp = f.stack.lo;
  f.uc.uc_stack.ss_size = f.stack.size;
  f.uc.uc_link = nullptr;
  f.entry = entry;
  f.arg = arg;
  f.asan_fake_stack = nullptr;
  makecontext(&f.uc, &uc_trampoline, 0);
}

static inline void raw_to_fiber(Fiber& f) {
  tl_resuming = &f;
  swapcontext(&tl_sched_uc, &f.uc);
}
static inline void raw_to_scheduler(Fiber& f) { swapcontext(&f.uc, &tl_sched_uc); }

#endif

// ---------------------------------------------------------------------------------------------------------------
void entered(Fiber& f) {
#ifdef MLA_SIM_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &tl_sched.bottom, &tl_sched.size);
#else
  (void)f;
#endif
}

void resume(Fiber& f) {
#ifdef MLA_SIM_ASAN
  __sanitizer_start_switch_fiber(&tl_sched.fake, f.stack.lo, f.stack.size);
#endif
  raw_to_fiber(f);
#ifdef MLA_SIM_ASAN
  __sanitizer_finish_switch_fiber(tl_sched.fake, nullptr, nullptr);
#endif
}

void suspend(Fiber& f) {
#ifdef MLA_SIM_ASAN
  __sanitizer_start_switch_fiber(&f.asan_fake_stack, tl_sched.bottom, tl_sched.size);
#endif
  raw_to_scheduler(f);
#ifdef MLA_SIM_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake_stack, &tl_sched.bottom, &tl_sched.size);
#endif
}

void finish(Fiber& f) {
#ifdef MLA_SIM_ASAN
  // This frame never returns: clear the shadow of what remains on the stack, then leave for good.
  __asan_handle_no_return();
  __sanitizer_start_switch_fiber(nullptr, tl_sched.bottom, tl_sched.size);
#endif
  raw_to_scheduler(f);
  __builtin_unreachable();
}

}  // namespace fiber
}  // namespace cudasim
