// cuda-sim runtime: the block scheduler (threads as fibers), barriers, warp collectives, cp.async, shared-memory
// poison and the launch API. See README.md in this directory for the model.
#include "cuda_sim.h"
#include "sim_fiber.h"

#include <dlfcn.h>
#include <link.h>

#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <sstream>
#include <vector>

// The static __shared__ region of this module (see mla_sim_shared.ld). Absent (null) when no kernel of the module
// has static shared memory.
extern "C" char __start_mla_sim_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_mla_sim_shared[] __attribute__((weak, visibility("hidden")));

namespace cudasim {

const char* order_name(Order o) {
  switch (o) {
    case Order::Forward: return "forward";
    case Order::Reverse: return "reverse";
    case Order::Random: return "random";
  }
  return "?";
}

namespace detail {
thread_local ThreadCtx tctx;
}

namespace {

using detail::tctx;
using detail::WarpCall;
using detail::WarpFn;

constexpr unsigned char kPoisonByte = 0xFF;  // 0xFFFF.. is a NaN as f32, f16 and bf16

struct Settings {
  Order order = Order::Forward;
  uint64_t seed = 0;
  bool strict = false;
  long long profile_block = -1;
};
thread_local Settings tl_settings;
thread_local LaunchRecord tl_last;
thread_local std::vector<PhaseCounts> tl_profile;  // the running launch's profiled block
thread_local uint64_t tl_switches = 0;

struct FiberAbort {};  // thrown inside a blocked fiber to unwind it (not a std::exception on purpose)

enum class TState : uint8_t { NotStarted, Runnable, Barrier, Warp, Exited };

struct CpCopy {
  unsigned char* dst;
  const unsigned char* src;
  unsigned n;
  unsigned total;
};

struct WarpOp {
  WarpFn fn = nullptr;
  int param = 0;
  unsigned mask = 0;
  unsigned arrived = 0;
  const char* what = "";
  unsigned char in[32][detail::kWarpIn];
};

struct Block;

struct SimThread {
  fiber::Fiber fib;
  Block* block = nullptr;
  unsigned linear = 0;
  uint3 idx{0, 0, 0};
  unsigned warp = 0;
  unsigned lane = 0;
  TState st = TState::NotStarted;
  bool abort = false;
  int pred = 0;
  WarpOp* op = nullptr;
  unsigned char out[detail::kWarpOut];
  std::vector<CpCopy> open_group;               // issued, not committed, not landed
  std::deque<std::vector<CpCopy>> groups;        // committed groups (copies not landed yet), oldest first
  std::vector<CpCopy> at_yield;                  // Random order: copies landing when this thread next blocks
};

struct Warp {
  unsigned live = 0;
  std::vector<WarpOp*> pending;
};

struct Launch {
  const char* name = "";
  dim3 grid, block;
  size_t dyn_bytes = 0;
  detail::KernelThunk thunk = nullptr;
  void* ctx = nullptr;
  Order order = Order::Forward;
  uint64_t seed = 0;
  bool strict = false;
  long long profile_block = -1;
};

struct Block {
  Launch* L = nullptr;
  uint3 idx{0, 0, 0};
  unsigned nthreads = 0;
  std::vector<SimThread> threads;
  std::vector<Warp> warps;
  unsigned live = 0;
  unsigned at_barrier = 0;
  int barrier_count = 0;
  bool barrier_all = false;
  bool barrier_any = false;
  bool failed = false;
  std::string error;
  std::vector<std::unique_ptr<WarpOp>> op_store;
  std::vector<WarpOp*> op_free;
  uint64_t rng = 0;
  // Run-ahead scheduling (Reverse, Random): the runnable thread of best rank always runs next.
  bool run_ahead = false;
  std::vector<unsigned> by_rank;   // rank -> linear thread index
  std::vector<unsigned> rank_of;   // linear thread index -> rank
  std::vector<uint64_t> ready;     // bit per rank: NotStarted or Runnable and not running

  void mark_ready(const SimThread& t);
  int take_ready() {  // best-ranked ready thread (removed from the set), or -1
    for (size_t w = 0; w < ready.size(); ++w)
      if (ready[w]) {
        const unsigned b = static_cast<unsigned>(__builtin_ctzll(ready[w]));
        ready[w] &= ready[w] - 1;
        return static_cast<int>(by_rank[w * 64 + b]);
      }
    return -1;
  }

  WarpOp* new_op() {
    if (op_free.empty()) {
      op_store.emplace_back(new WarpOp());
      return op_store.back().get();
    }
    WarpOp* o = op_free.back();
    op_free.pop_back();
    return o;
  }
};

void Block::mark_ready(const SimThread& t) {
  if (!run_ahead) return;
  const unsigned r = rank_of[t.linear];
  ready[r / 64] |= uint64_t(1) << (r % 64);
}

// A blocked thread may continue.
void make_runnable(Block& B, SimThread& t) {
  t.st = TState::Runnable;
  B.mark_ready(t);
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

std::string where(const Launch& L, const uint3& b) {
  return fmt("kernel '%s' block (%u,%u,%u)", L.name, b.x, b.y, b.z);
}
std::string where(const SimThread& t) {
  return where(*t.block->L, t.block->idx) + fmt(" thread (%u,%u,%u)", t.idx.x, t.idx.y, t.idx.z);
}

SimThread* current() { return static_cast<SimThread*>(tctx.thread); }

SimThread& require_thread(const char* fn) {
  SimThread* t = current();
  if (!t) throw SimError(std::string("cuda-sim: ") + fn + " called outside a kernel launch");
  return *t;
}

void record_error(Block& B, const std::string& msg) {
  if (!B.failed) {
    B.failed = true;
    B.error = msg;
  }
}

// A cp.async copy lands: src-size bytes from global memory, the rest of cp-size zero-filled.
void cp_land(const CpCopy& c) {
  if (c.n) std::memcpy(c.dst, c.src, c.n);
  if (c.total > c.n) std::memset(c.dst + c.n, 0, c.total - c.n);
}
void cp_land_at_yield(SimThread& t) {
  for (const CpCopy& c : t.at_yield) cp_land(c);
  t.at_yield.clear();
}

// Block the calling fiber until the scheduler resumes it.
void block_current(SimThread& t) {
  cp_land_at_yield(t);  // the thread's copies due "at its next scheduling point" land before others run
  fiber::suspend(t.fib);
  if (t.abort) throw FiberAbort{};
}

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// ----- static shared memory region of this module, per OS thread ------------------------------------------------
struct StaticRegion {
  bool computed = false;
  unsigned char* begin = nullptr;
  size_t size = 0;
};
thread_local StaticRegion tl_static;

struct TlsQuery {
  uintptr_t tmpl = 0;
  void* block = nullptr;
  size_t offset = 0;
  bool found = false;
};

int tls_cb(dl_phdr_info* info, size_t, void* data) {
  auto* q = static_cast<TlsQuery*>(data);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_TLS) continue;
    const uintptr_t start = info->dlpi_addr + ph.p_vaddr;
    if (q->tmpl >= start && q->tmpl < start + ph.p_memsz) {
      q->block = info->dlpi_tls_data;
      q->offset = q->tmpl - start;
      q->found = true;
      return 1;
    }
  }
  return 0;
}

const StaticRegion& static_region() {
  StaticRegion& r = tl_static;
  if (r.computed) return r;
  r.computed = true;
  const uintptr_t b = reinterpret_cast<uintptr_t>(__start_mla_sim_shared);
  const uintptr_t e = reinterpret_cast<uintptr_t>(__stop_mla_sim_shared);
  if (!b || !e || e <= b) return r;
  volatile unsigned touch = tctx.grid_dim.x;  // touch this module's TLS block so that it exists in this thread
  (void)touch;
  TlsQuery q;
  q.tmpl = reinterpret_cast<uintptr_t>(__start_mla_sim_shared);
  dl_iterate_phdr(&tls_cb, &q);
  if (!q.found || !q.block)
    throw SimError("cuda-sim: cannot locate the static __shared__ (mla_sim_shared) TLS region of this module");
  r.begin = static_cast<unsigned char*>(q.block) + q.offset;
  r.size = static_cast<size_t>(e - b);
  return r;
}

// ----- warp collectives -----------------------------------------------------------------------------------------
bool op_ready(const Warp& W, const WarpOp& op) {
  const unsigned need = op.mask & W.live;
  return (op.arrived & need) == need;
}

// Run the collective for all lanes that came and release the waiting ones (all but `runner`).
void op_complete(Block& B, Warp& W, unsigned warp_index, WarpOp* op, SimThread* runner) {
  WarpCall c;
  c.mask = op->mask;
  c.present = op->arrived & W.live;
  c.param = op->param;
  c.in = op->in;
  const unsigned base = warp_index * 32;
  for (unsigned l = 0; l < 32; ++l)
    c.out[l] = ((c.present >> l) & 1u) ? B.threads[base + l].out : nullptr;
  // Remove from pending first: fn may throw.
  for (size_t i = 0; i < W.pending.size(); ++i)
    if (W.pending[i] == op) {
      W.pending.erase(W.pending.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  for (unsigned l = 0; l < 32; ++l) {
    if (!((c.present >> l) & 1u)) continue;
    SimThread& t = B.threads[base + l];
    t.op = nullptr;
    if (&t != runner && t.st == TState::Warp) make_runnable(B, t);
  }
  B.op_free.push_back(op);
  op->fn(c);
}

void exit_thread(SimThread& t) {
  Block& B = *t.block;
  t.st = TState::Exited;
  B.live -= 1;
  Warp& W = B.warps[t.warp];
  W.live &= ~(1u << t.lane);
  t.open_group.clear();  // copies not landed yet when the issuing thread exits are dropped
  t.groups.clear();
  t.at_yield.clear();
  if (B.L->strict && B.at_barrier > 0 && !B.failed)
    record_error(B, where(t) + fmt(": exited while %u thread(s) of the block wait at __syncthreads (strict barriers)",
                                   B.at_barrier));
  // Collectives that only waited for this lane complete without it.
  bool again = true;
  while (again) {
    again = false;
    for (WarpOp* op : W.pending) {
      if (op_ready(W, *op)) {
        op_complete(B, W, t.warp, op, &t);
        again = true;
        break;
      }
    }
  }
}

void fiber_main(void* arg) {
  SimThread& t = *static_cast<SimThread*>(arg);
  fiber::entered(t.fib);
  Block& B = *t.block;
  try {
    B.L->thunk(B.L->ctx);
  } catch (const FiberAbort&) {
  } catch (const SimError& e) {
    record_error(B, e.what());
  } catch (const std::exception& e) {
    record_error(B, where(t) + ": exception escaped the kernel: " + e.what());
  } catch (...) {
    record_error(B, where(t) + ": unknown exception escaped the kernel");
  }
  try {
    if (!t.abort) exit_thread(t);
  } catch (const SimError& e) {
    record_error(B, e.what());
  } catch (...) {
    record_error(B, where(t) + ": exception while exiting");
  }
  if (t.st != TState::Exited) {
    t.st = TState::Exited;
  }
  fiber::finish(t.fib);
}

void resume_thread(SimThread& t) {
  Block& B = *t.block;
  tctx.thread_idx = t.idx;
  tctx.linear_tid = t.linear;
  tctx.thread = &t;
  if (t.st == TState::NotStarted) fiber::prepare(t.fib, &fiber_main, &t);
  t.st = TState::Runnable;
  tl_switches += 2;
  fiber::resume(t.fib);
  tctx.thread = nullptr;
  (void)B;
}

std::string describe_deadlock(Block& B) {
  std::ostringstream os;
  os << where(*B.L, B.idx) << ": deadlock: " << B.live << " live thread(s), none can proceed";
  if (B.at_barrier) os << "; " << B.at_barrier << " wait at __syncthreads";
  int shown = 0;
  for (unsigned w = 0; w < B.warps.size(); ++w) {
    for (WarpOp* op : B.warps[w].pending) {
      if (shown++ >= 8) break;
      const unsigned missing = (op->mask & B.warps[w].live) & ~op->arrived;
      os << fmt("; warp %u: %s(mask 0x%08x) reached by lanes 0x%08x, waiting for lanes 0x%08x", w, op->what, op->mask,
                op->arrived, missing);
      for (unsigned l = 0; l < 32; ++l) {
        if (!((missing >> l) & 1u)) continue;
        const SimThread& m = B.threads[w * 32 + l];
        os << fmt(" (lane %u is %s)", l,
                  m.st == TState::Barrier ? "at __syncthreads"
                  : m.st == TState::Warp  ? (m.op ? m.op->what : "in a warp collective")
                                          : "elsewhere");
        break;
      }
    }
  }
  os << " (a barrier or warp collective not reached by all live threads)";
  return os.str();
}

// Unwind every fiber of the block that is suspended mid-kernel.
void abort_block(Block& B) {
  for (SimThread& t : B.threads) {
    if (t.st == TState::NotStarted || t.st == TState::Exited) continue;
    t.abort = true;
    tctx.thread_idx = t.idx;
    tctx.thread = &t;
    tl_switches += 2;
    fiber::resume(t.fib);
    tctx.thread = nullptr;
    t.st = TState::Exited;
  }
  for (SimThread& t : B.threads) fiber::unpoison(t.fib.stack);
}

// Random order: a fresh random ranking of the block's threads (only when none is ready: ranks index `ready`).
void draw_ranks(Block& B) {
  const unsigned n = B.nthreads;
  for (unsigned i = 0; i < n; ++i) B.by_rank[i] = i;
  for (unsigned i = n; i > 1; --i) std::swap(B.by_rank[i - 1], B.by_rank[splitmix(B.rng) % i]);
  for (unsigned i = 0; i < n; ++i) B.rank_of[B.by_rank[i]] = i;
}

void run_block(Block& B) {
  Launch& L = *B.L;
  const unsigned n = B.nthreads;
  // Fresh state.
  B.live = n;
  B.at_barrier = 0;
  B.failed = false;
  B.error.clear();
  for (Warp& W : B.warps) {
    for (WarpOp* op : W.pending) B.op_free.push_back(op);
    W.pending.clear();
  }
  for (unsigned w = 0; w < B.warps.size(); ++w) {
    const unsigned lanes = std::min(32u, n - w * 32);
    B.warps[w].live = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
  }
  for (SimThread& t : B.threads) {
    t.st = TState::NotStarted;
    t.abort = false;
    t.op = nullptr;
    t.open_group.clear();
    t.groups.clear();
    t.at_yield.clear();
  }
  uint64_t rs = L.seed ^ (0xD1B54A32D192ED03ull * (1 + B.idx.x + L.grid.x * (B.idx.y + L.grid.y * uint64_t(B.idx.z))));
  B.rng = splitmix(rs);

  // Profiling (set_profile_block): this block's barrier intervals, from its start.
  const long long linear_block = B.idx.x + static_cast<long long>(L.grid.x) * (B.idx.y + static_cast<long long>(L.grid.y) * B.idx.z);
  tctx.phase = nullptr;
  if (linear_block == L.profile_block) {
    tl_profile.clear();
    tl_profile.emplace_back();
    tctx.phase = &tl_profile.back();
  }
  tctx.mma_depth.clear();
  struct PhaseReset {
    ~PhaseReset() { tctx.phase = nullptr; }
  } phase_reset;

  // Poison shared memory.
  const StaticRegion& sr = static_region();
  if (sr.size) std::memset(sr.begin, kPoisonByte, sr.size);
  if (L.dyn_bytes) std::memset(tctx.dyn_smem, kPoisonByte, L.dyn_bytes);

  // Release the threads waiting at a completed __syncthreads (every live thread is there).
  auto release_barrier = [&]() {
    int count = 0, all = 1, any = 0;
    for (SimThread& t : B.threads) {
      if (t.st != TState::Barrier) continue;
      count += t.pred != 0;
      all &= t.pred != 0;
      any |= t.pred != 0;
    }
    B.barrier_count = count;
    B.barrier_all = all != 0;
    B.barrier_any = any != 0;
    B.at_barrier = 0;
    tctx.traffic.barriers += 1;
    if (tctx.phase) {  // a profiled block: the next barrier interval starts
      tl_profile.emplace_back();
      tctx.phase = &tl_profile.back();
      tctx.mma_depth.clear();
    }
    if (L.order == Order::Random) draw_ranks(B);  // a new run-ahead order for every barrier interval
    for (SimThread& t : B.threads)
      if (t.st == TState::Barrier) make_runnable(B, t);
  };

  if (B.run_ahead) {
    // Reverse / Random: always resume the best-ranked runnable thread, so a warp runs as far as it can (to a
    // __syncthreads, or a warp collective its other lanes have not reached) before worse-ranked warps run.
    if (L.order == Order::Reverse) {
      for (unsigned i = 0; i < n; ++i) B.by_rank[i] = n - 1 - i;
      for (unsigned i = 0; i < n; ++i) B.rank_of[B.by_rank[i]] = i;
    } else {
      draw_ranks(B);
    }
    std::fill(B.ready.begin(), B.ready.end(), 0);
    for (SimThread& t : B.threads) B.mark_ready(t);
    while (B.live > 0) {
      const int next = B.take_ready();
      if (next < 0) {
        if (B.at_barrier == B.live) {
          release_barrier();
          continue;
        }
        record_error(B, describe_deadlock(B));
        break;
      }
      SimThread& t = B.threads[static_cast<unsigned>(next)];
      if (t.st != TState::NotStarted && t.st != TState::Runnable) continue;
      resume_thread(t);
      if (B.failed) break;
    }
  } else {
    // Forward: rounds; every runnable thread runs once per round, in ascending order (warps advance in step).
    std::vector<SimThread*> list;
    list.reserve(n);
    while (B.live > 0) {
      list.clear();
      for (SimThread& t : B.threads)
        if (t.st == TState::NotStarted || t.st == TState::Runnable) list.push_back(&t);
      if (list.empty()) {
        if (B.at_barrier == B.live) {
          release_barrier();
          continue;
        }
        record_error(B, describe_deadlock(B));
        break;
      }
      for (SimThread* t : list) {
        if (t->st != TState::NotStarted && t->st != TState::Runnable) continue;
        resume_thread(*t);
        if (B.failed) break;
      }
      if (B.failed) break;
    }
  }
  if (B.failed) {
    abort_block(B);
    throw SimError(B.error);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
namespace detail {

void fail(const std::string& what) {
  SimThread* t = current();
  if (!t) throw SimError("cuda-sim: " + what);
  throw SimError(where(*t) + ": " + what);
}

void not_in_kernel(const char* fn) { require_thread(fn); }

long long clock_ticks() {
  return static_cast<long long>(std::chrono::steady_clock::now().time_since_epoch().count());
}

int syncthreads_op(int pred, int op) {
  SimThread& t = require_thread("__syncthreads");
  Block& B = *t.block;
  t.pred = pred;
  t.st = TState::Barrier;
  B.at_barrier += 1;
  block_current(t);
  // Released. The next barrier cannot complete before this thread arrives again, so B's fields are still ours.
  switch (op) {
    case 1: return B.barrier_count;
    case 2: return B.barrier_all ? 1 : 0;
    case 3: return B.barrier_any ? 1 : 0;
    default: return 0;
  }
}

void warp_collective(unsigned mask, WarpFn fn, int param, const void* in, size_t in_bytes, void* out,
                     size_t out_bytes, const char* what) {
  SimThread& t = require_thread(what);
  Block& B = *t.block;
  if (in_bytes > kWarpIn || out_bytes > kWarpOut) fail(std::string(what) + ": operand too large for the emulator");
  if (!((mask >> t.lane) & 1u))
    fail(fmt("%s: the calling lane %u is not in its mask 0x%08x", what, t.lane, mask));
  Warp& W = B.warps[t.warp];
  WarpOp* op = nullptr;
  for (WarpOp* p : W.pending)
    if (p->mask == mask) {
      op = p;
      break;
    }
  if (op && (op->fn != fn || op->param != param)) {
    fail(fmt("lanes of mask 0x%08x disagree: lane %u calls %s while lanes 0x%08x wait in %s (different warp "
             "collectives or widths with the same mask)",
             mask, t.lane, what, op->arrived, op->what));
  }
  if (!op) {
    op = B.new_op();
    op->fn = fn;
    op->param = param;
    op->mask = mask;
    op->arrived = 0;
    op->what = what;
    W.pending.push_back(op);
  }
  if (in_bytes) std::memcpy(op->in[t.lane], in, in_bytes);
  op->arrived |= 1u << t.lane;
  t.op = op;
  if (op_ready(W, *op)) {
    op_complete(B, W, t.warp, op, &t);
  } else {
    t.st = TState::Warp;
    block_current(t);
  }
  if (out_bytes) std::memcpy(out, t.out, out_bytes);
}

unsigned lane_id() { return require_thread("lane_id").lane; }

unsigned live_lanes() {
  SimThread& t = require_thread("__activemask");
  return t.block->warps[t.warp].live;
}

namespace {
struct ShflIn {
  uint64_t bits;
  int32_t operand;
};
void shfl_fn(WarpCall& c) {
  const int mode = c.param & 0xff;
  const int width = c.param >> 8;
  for (unsigned l = 0; l < 32; ++l) {
    if (!c.out[l]) continue;
    ShflIn me;
    std::memcpy(&me, c.in[l], sizeof me);
    const int lane = static_cast<int>(l);
    const int seg_lo = lane & ~(width - 1);
    const int seg_hi = seg_lo + width - 1;
    int j = lane;
    bool ok = true;
    switch (mode) {
      case kShflIdx: j = seg_lo + (me.operand & (width - 1)); break;
      case kShflUp: j = lane - me.operand; ok = j >= seg_lo; break;
      case kShflDown: j = lane + me.operand; ok = j <= seg_hi; break;
      case kShflXor: j = lane ^ me.operand; ok = j <= seg_hi; break;
    }
    if (!ok || j < 0 || j > 31) j = lane;
    uint64_t r = 0;  // a source lane that did not take part gives an undefined value: 0 here
    if ((c.present >> j) & 1u) {
      ShflIn src;
      std::memcpy(&src, c.in[j], sizeof src);
      r = src.bits;
    }
    std::memcpy(c.out[l], &r, sizeof r);
  }
}
void vote_fn(WarpCall& c) {
  unsigned ballot = 0;
  for (unsigned l = 0; l < 32; ++l) {
    if (!((c.present >> l) & 1u)) continue;
    int p;
    std::memcpy(&p, c.in[l], sizeof p);
    if (p) ballot |= 1u << l;
  }
  unsigned r = ballot;
  if (c.param == kVoteAny) r = ballot != 0;
  if (c.param == kVoteAll) r = ballot == c.present;
  for (unsigned l = 0; l < 32; ++l)
    if (c.out[l]) std::memcpy(c.out[l], &r, sizeof r);
}
void reduce_fn(WarpCall& c) {
  bool first = true;
  unsigned r = 0;
  for (unsigned l = 0; l < 32; ++l) {
    if (!((c.present >> l) & 1u)) continue;
    unsigned v;
    std::memcpy(&v, c.in[l], sizeof v);
    if (first) {
      r = v;
      first = false;
      continue;
    }
    switch (c.param) {
      case kRedAdd: r += v; break;
      case kRedMin: r = static_cast<unsigned>(std::min(static_cast<int>(r), static_cast<int>(v))); break;
      case kRedMax: r = static_cast<unsigned>(std::max(static_cast<int>(r), static_cast<int>(v))); break;
      case kRedUMin: r = std::min(r, v); break;
      case kRedUMax: r = std::max(r, v); break;
      case kRedAnd: r &= v; break;
      case kRedOr: r |= v; break;
      case kRedXor: r ^= v; break;
    }
  }
  for (unsigned l = 0; l < 32; ++l)
    if (c.out[l]) std::memcpy(c.out[l], &r, sizeof r);
}
void match_fn(WarpCall& c) {
  for (unsigned l = 0; l < 32; ++l) {
    if (!c.out[l]) continue;
    uint64_t me;
    std::memcpy(&me, c.in[l], 8);
    unsigned m = 0;
    for (unsigned k = 0; k < 32; ++k) {
      if (!((c.present >> k) & 1u)) continue;
      uint64_t v;
      std::memcpy(&v, c.in[k], 8);
      if (v == me) m |= 1u << k;
    }
    std::memcpy(c.out[l], &m, sizeof m);
  }
}
void nop_fn(WarpCall&) {}
}  // namespace

uint64_t shfl(unsigned mask, uint64_t bits, int operand, int width, int mode) {
  static const char* names[4] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail(fmt("%s: width %d is not a power of two in [1, 32]", names[mode & 3], width));
  ShflIn in{bits, operand};
  uint64_t out = 0;
  warp_collective(mask, &shfl_fn, mode | (width << 8), &in, sizeof in, &out, sizeof out, names[mode & 3]);
  return out;
}

unsigned vote(unsigned mask, int pred, int mode) {
  static const char* names[3] = {"__ballot_sync", "__any_sync", "__all_sync"};
  unsigned out = 0;
  warp_collective(mask, &vote_fn, mode, &pred, sizeof pred, &out, sizeof out, names[mode]);
  return out;
}

unsigned reduce(unsigned mask, unsigned value, int mode) {
  unsigned out = 0;
  warp_collective(mask, &reduce_fn, mode, &value, sizeof value, &out, sizeof out, "__reduce_*_sync");
  return out;
}

unsigned match_any(unsigned mask, uint64_t value) {
  unsigned out = 0;
  warp_collective(mask, &match_fn, 0, &value, sizeof value, &out, sizeof out, "__match_any_sync");
  return out;
}

// ----- cp.async ---------------------------------------------------------------------------------------------------
bool is_shared(const void* p, size_t bytes) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (tctx.dyn_smem && c >= tctx.dyn_smem && c + bytes <= tctx.dyn_smem + tctx.dyn_smem_bytes) return true;
  const StaticRegion& sr = static_region();
  return sr.size && c >= sr.begin && c + bytes <= sr.begin + sr.size;
}

void cp_async_issue(void* smem_dst, const void* gmem_src, unsigned copy_bytes, unsigned total_bytes) {
  SimThread& t = require_thread("cp.async");
  if (copy_bytes > total_bytes) fail(fmt("cp.async: src-size %u exceeds cp-size %u", copy_bytes, total_bytes));
  if (reinterpret_cast<uintptr_t>(smem_dst) % total_bytes != 0)
    fail(fmt("cp.async: shared destination %p not aligned to %u bytes", smem_dst, total_bytes));
  if (copy_bytes && reinterpret_cast<uintptr_t>(gmem_src) % total_bytes != 0)
    fail(fmt("cp.async: global source %p not aligned to %u bytes", gmem_src, total_bytes));
  if (!is_shared(smem_dst, total_bytes))
    fail(fmt("cp.async: destination %p (%u bytes) is not in shared memory", smem_dst, total_bytes));
  if (copy_bytes) count_read(copy_bytes);  // traffic: counted at issue, whatever the landing time
  tctx.traffic.smem_async_bytes += total_bytes;
  if (tctx.phase) tctx.phase->smem_async_bytes += total_bytes;
  const CpCopy c{static_cast<unsigned char*>(smem_dst), static_cast<const unsigned char*>(gmem_src), copy_bytes,
                 total_bytes};
  // Landing time (see cp_async_wait): the only times a correct kernel cannot tell apart are those between issue and
  // the wait retiring the group, so each thread order takes a different one and the order check compares them.
  switch (t.block->L->order) {
    case Order::Forward: t.open_group.push_back(c); break;  // at the retiring wait (the latest)
    case Order::Reverse: cp_land(c); break;                 // at issue (the earliest)
    case Order::Random:
      switch (splitmix(t.block->rng) % 3) {
        case 0: cp_land(c); break;                 // at issue
        case 1: t.at_yield.push_back(c); break;    // at the thread's next scheduling point (or its next wait)
        default: t.open_group.push_back(c); break; // at the retiring wait
      }
      break;
  }
}

void cp_async_commit() {
  SimThread& t = require_thread("cp.async.commit_group");
  t.groups.emplace_back(std::move(t.open_group));  // (copies landed at issue leave an emptier, still counted group)
  t.open_group.clear();
}

void cp_async_wait(int n) {
  SimThread& t = require_thread("cp.async.wait_group");
  if (n < 0) {
    if (!t.open_group.empty()) cp_async_commit();
    n = 0;
  }
  cp_land_at_yield(t);
  while (t.groups.size() > static_cast<size_t>(n)) {
    for (const CpCopy& c : t.groups.front()) cp_land(c);
    t.groups.pop_front();
  }
}

// ----- launch -----------------------------------------------------------------------------------------------------
LaunchRecord launch_impl(const char* name, dim3 grid, dim3 block, size_t dynamic_smem, KernelThunk thunk, void* ctx) {
  if (tctx.thread) throw SimError(std::string("kernel '") + name + "': launched from inside a kernel (unsupported)");
  Launch L;
  L.name = name ? name : "?";
  L.grid = grid;
  L.block = block;
  L.dyn_bytes = dynamic_smem;
  L.thunk = thunk;
  L.ctx = ctx;
  L.order = tl_settings.order;
  L.seed = tl_settings.seed;
  L.strict = tl_settings.strict;
  L.profile_block = tl_settings.profile_block;

  const uint64_t nthreads = uint64_t(block.x) * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || nthreads > 1024 || block.z > 64 || grid.x == 0 ||
      grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    throw SimError(fmt("kernel '%s': invalid launch configuration grid (%u,%u,%u) block (%u,%u,%u)", L.name, grid.x,
                       grid.y, grid.z, block.x, block.y, block.z));
  if (dynamic_smem > 232448)
    throw SimError(fmt("kernel '%s': %zu bytes of dynamic shared memory exceed the 227 KiB of any GPU", L.name,
                       dynamic_smem));

  LaunchRecord rec;
  rec.name = L.name;
  rec.grid = grid;
  rec.block = block;
  rec.dynamic_smem = dynamic_smem;
  rec.order = static_cast<int>(L.order);
  rec.seed = L.seed;
  rec.static_smem = static_region().size;
  rec.dependent_launch = ScopedDependentLaunch::active();
  const Traffic before = tctx.traffic;
  const uint64_t sw_before = tl_switches;
  const auto t0 = std::chrono::steady_clock::now();

  // Dynamic shared memory: exactly the requested size on the heap, so ASan sees accesses past it.
  std::unique_ptr<unsigned char[], void (*)(unsigned char*)> dyn(
      static_cast<unsigned char*>(::operator new[](dynamic_smem ? dynamic_smem : 1, std::align_val_t(128))),
      [](unsigned char* p) { ::operator delete[](p, std::align_val_t(128)); });

  Block B;
  B.L = &L;
  B.nthreads = static_cast<unsigned>(nthreads);
  B.threads.resize(nthreads);
  B.warps.resize((nthreads + 31) / 32);
  B.run_ahead = L.order != Order::Forward;
  B.by_rank.resize(nthreads);
  B.rank_of.resize(nthreads);
  B.ready.assign((nthreads + 63) / 64, 0);
  for (unsigned i = 0; i < nthreads; ++i) {
    SimThread& t = B.threads[i];
    t.block = &B;
    t.linear = i;
    t.idx = uint3{i % block.x, (i / block.x) % block.y, static_cast<unsigned>(i / (uint64_t(block.x) * block.y))};
    t.warp = i / 32;
    t.lane = i % 32;
  }

  struct StackGuard {
    Block& B;
    size_t acquired = 0;
    ~StackGuard() {
      for (size_t i = 0; i < acquired; ++i) fiber::release_stack(B.threads[i].fib.stack);
    }
  } stacks{B};
  for (SimThread& t : B.threads) {
    t.fib.stack = fiber::acquire_stack();
    stacks.acquired++;
  }

  struct CtxGuard {
    detail::ThreadCtx saved;
    CtxGuard() : saved(tctx) {}
    ~CtxGuard() {
      Traffic tr = tctx.traffic;
      tctx = saved;
      tctx.traffic = tr;
    }
  } ctx_guard;
  tctx.grid_dim = grid;
  tctx.block_dim = block;
  tctx.dyn_smem = dynamic_smem ? dyn.get() : nullptr;
  tctx.dyn_smem_bytes = dynamic_smem;

  auto finish_record = [&]() {
    rec.bytes_read = tctx.traffic.bytes_read - before.bytes_read;
    rec.bytes_written = tctx.traffic.bytes_written - before.bytes_written;
    rec.loads = tctx.traffic.loads - before.loads;
    rec.stores = tctx.traffic.stores - before.stores;
    const Traffic& now = tctx.traffic;
    rec.counters = Traffic{rec.bytes_read, rec.bytes_written, rec.loads, rec.stores,
                           now.smem_ldmatrix_bytes - before.smem_ldmatrix_bytes,
                           now.smem_ldmatrix_wavefronts - before.smem_ldmatrix_wavefronts,
                           now.smem_load_bytes - before.smem_load_bytes,
                           now.smem_store_bytes - before.smem_store_bytes,
                           now.smem_async_bytes - before.smem_async_bytes,
                           now.mma - before.mma,
                           now.converted - before.converted,
                           now.permuted - before.permuted,
                           now.barriers - before.barriers};
    if (L.profile_block >= 0) rec.profile = std::move(tl_profile);
    tl_profile.clear();
    rec.fiber_switches = tl_switches - sw_before;
    rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    tl_last = rec;
  };

  try {
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          B.idx = uint3{bx, by, bz};
          tctx.block_idx = B.idx;
          run_block(B);
        }
  } catch (...) {
    finish_record();
    throw;
  }
  finish_record();
  return rec;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------------------------
void set_order(Order o, uint64_t seed) {
  tl_settings.order = o;
  tl_settings.seed = seed;
}
Order order() { return tl_settings.order; }
uint64_t order_seed() { return tl_settings.seed; }

ScopedOrder::ScopedOrder(Order o, uint64_t seed)
    : prev_order_(static_cast<int>(tl_settings.order)), prev_seed_(tl_settings.seed) {
  set_order(o, seed);
}
ScopedOrder::~ScopedOrder() { set_order(static_cast<Order>(prev_order_), prev_seed_); }

void set_strict_barriers(bool strict) { tl_settings.strict = strict; }
void set_profile_block(long long linear_block) { tl_settings.profile_block = linear_block; }
namespace {
thread_local bool tl_dependent = false;
}
ScopedDependentLaunch::ScopedDependentLaunch(bool dependent) : prev_(tl_dependent) { tl_dependent = dependent; }
ScopedDependentLaunch::~ScopedDependentLaunch() { tl_dependent = prev_; }
bool ScopedDependentLaunch::active() { return tl_dependent; }
long long profile_block() { return tl_settings.profile_block; }
bool strict_barriers() { return tl_settings.strict; }

Traffic traffic() { return tctx.traffic; }
void reset_traffic() { tctx.traffic = Traffic{}; }
const LaunchRecord& last_launch() { return tl_last; }
uint64_t total_fiber_switches() { return tl_switches; }
std::vector<std::function<void()>>*& capture_list() {
  thread_local std::vector<std::function<void()>>* list = nullptr;
  return list;
}

}  // namespace cudasim

void __syncwarp(unsigned mask) {
  ::cudasim::detail::warp_collective(mask, &::cudasim::detail::nop_fn, 0, nullptr, 0, nullptr, 0, "__syncwarp");
}
