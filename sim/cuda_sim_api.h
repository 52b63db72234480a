// cuda-sim host API: launching a kernel under emulation, the thread-order setting, traffic counters.
// Included by cuda_sim.h (so by every kernel TU under MLA_CUDA_SIM); host code of the addon or tests that only
// launch kernels may include it alone. All state is per OS thread (thread_local) or per launch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <vector_types.h>

namespace cudasim {

// Thrown by a launch (after every fiber of the failing block has been unwound) for anything the emulator detects:
// deadlocked or mismatched barriers / warp collectives, misuse of an instruction wrapper, an exception escaping a
// kernel, an invalid launch configuration. The message starts with "kernel '<name>'".
class SimError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Order { Forward, Reverse, Random };
const char* order_name(Order o);
constexpr Order kAllOrders[3] = {Order::Forward, Order::Reverse, Order::Random};

struct Traffic {
  uint64_t bytes_read = 0;     // global-memory bytes loaded through warp_ops.cuh wrappers, __ldg and cp.async
  uint64_t bytes_written = 0;  // global-memory bytes stored through warp_ops.cuh wrappers
  uint64_t loads = 0;          // number of load instructions (per thread)
  uint64_t stores = 0;         // number of store instructions (per thread)
  // The on-chip work of the warp_ops.cuh wrappers, for the GPU performance model (scripts/model-gpu.mjs):
  uint64_t smem_ldmatrix_bytes = 0;      // 128 per 8x8 matrix an ldmatrix loads
  uint64_t smem_ldmatrix_wavefronts = 0; // shared-memory passes those need: per matrix, the most of its 8 row
                                         // addresses in one 16-byte bank group (1 when conflict-free)
  uint64_t smem_load_bytes = 0;          // ld_shared
  uint64_t smem_store_bytes = 0;         // st_shared
  uint64_t smem_async_bytes = 0;         // cp.async destination bytes (copied and zero-filled)
  uint64_t mma = 0;                      // warp-level mma.sync instructions (m16n8k16)
  uint64_t converted = 0;                // fp8 values converted (the fp8 cache conversions, per thread)
  uint64_t permuted = 0;                 // of them, values a byte permute gathered before a conversion instruction
  uint64_t barriers = 0;                 // completed __syncthreads, once per block
};

// The counters of one barrier interval of a profiled block (set_profile_block): what its threads did between two
// completed __syncthreads (the first interval starts at the block's start, the last ends at its exit).
struct PhaseCounts {
  uint64_t bytes_read = 0, bytes_written = 0;
  uint64_t loads = 0;  // global load instructions (per thread), as Traffic's
  uint64_t smem_ldmatrix_bytes = 0, smem_ldmatrix_wavefronts = 0, smem_load_bytes = 0, smem_store_bytes = 0,
           smem_async_bytes = 0;
  uint64_t converted = 0, permuted = 0;
  std::vector<uint32_t> mma_per_warp;  // indexed by warp (linear thread index / 32)
  std::vector<uint32_t> mma_chain_per_warp;  // the longest chain of dependent mma (each accumulating the previous
                                             // one's result) a warp issued in this interval
};

// ----- Thread order --------------------------------------------------------------------------------------------
// Between two barriers the threads of a block run one after the other, each until it blocks (barrier, warp
// collective) or exits. Forward: in rounds, threadIdx ascending (warps advance in step). Reverse: always the runnable
// thread of highest linear index (a warp runs ahead to its next barrier before lower warps run). Random: the same
// run-ahead in a random ranking, redrawn (from `seed` and the block index) at every completed barrier. The order
// also picks when cp.async copies land: at the retiring wait (Forward), at issue (Reverse), per copy either
// (Random); see README.md. The setting is per OS thread.
void set_order(Order order, uint64_t seed = 0);
Order order();
uint64_t order_seed();

// RAII: run a scope under an order, restoring the previous setting after.
class ScopedOrder {
 public:
  ScopedOrder(Order order, uint64_t seed = 0);
  ~ScopedOrder();
  ScopedOrder(const ScopedOrder&) = delete;
  ScopedOrder& operator=(const ScopedOrder&) = delete;

 private:
  int prev_order_;
  uint64_t prev_seed_;
};

// Profiling: the block of this linear index (x + grid.x * (y + grid.y * z)) of every later launch on this OS thread
// records its barrier intervals into LaunchRecord::profile; -1 (the default) profiles none.
void set_profile_block(long long linear_block);
long long profile_block();

// Launches made while one is alive are recorded as programmatic dependent launches (launch.cuh's
// mla_launch_dependent); they run as any other, one after another. Also kept when a graph capture records the launch.
class ScopedDependentLaunch {
 public:
  explicit ScopedDependentLaunch(bool dependent);
  ~ScopedDependentLaunch();
  ScopedDependentLaunch(const ScopedDependentLaunch&) = delete;
  ScopedDependentLaunch& operator=(const ScopedDependentLaunch&) = delete;
  static bool active();

 private:
  bool prev_;
};

// Strict barriers: also an error when a thread exits while other threads of its block wait at __syncthreads
// (undefined behaviour in CUDA; on recent GPUs such a barrier completes without the exited threads, which is the
// default here). Per OS thread; default false.
void set_strict_barriers(bool strict);
bool strict_barriers();

// ----- Launch records and counters -----------------------------------------------------------------------------
struct LaunchRecord {
  std::string name;
  dim3 grid{1, 1, 1};
  dim3 block{1, 1, 1};
  size_t dynamic_smem = 0;
  size_t static_smem = 0;  // size of the poisoned static __shared__ region of the module (all kernels)
  int order = 0;           // static_cast<int>(Order)
  uint64_t seed = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t loads = 0;
  uint64_t stores = 0;
  uint64_t fiber_switches = 0;  // context switches (into and out of fibers) during the launch
  double seconds = 0.0;
  bool dependent_launch = false;     // launched with programmatic dependent launch (mla_launch_dependent)
  Traffic counters;                  // everything Traffic counts, for this launch
  std::vector<PhaseCounts> profile;  // the profiled block's barrier intervals (set_profile_block), else empty
};

// Global-memory traffic through the warp_ops.cuh wrappers (+ __ldg, cp.async), cumulative on this OS thread
// since the last reset_traffic().
Traffic traffic();
void reset_traffic();
// The record of the last launch completed (or failed) on this OS thread.
const LaunchRecord& last_launch();
// Fiber switches on this OS thread since it started.
uint64_t total_fiber_switches();
// Graph capture (the emulated cudaStreamBeginCapture of csrc/cuda/sim_runtime.h): while this OS thread's capture list
// is set, launch.cuh's mla_launch records its launches there instead of running them. Kept here, in the runtime's
// own TU: a thread_local of a kernel TU would lie in the TLS the emulator fills as static shared memory.
std::vector<std::function<void()>>*& capture_list();

namespace detail {
using KernelThunk = void (*)(void* ctx);
LaunchRecord launch_impl(const char* name, dim3 grid, dim3 block, size_t dynamic_smem, KernelThunk thunk, void* ctx);

template <class... P>
struct KernelCall {
  void (*kernel)(P...);
  std::tuple<std::decay_t<P>...> args;
  static void run(void* self) {
    auto* c = static_cast<KernelCall*>(self);
    std::apply(c->kernel, c->args);  // by-value kernel parameters: every thread gets its own copy
  }
};
}  // namespace detail

// Run `kernel` over `grid` x `block` threads with `dynamic_smem` bytes of dynamic shared memory. Blocks run one
// after another on the calling OS thread; each block's threads run as fibers. Throws SimError (message starting
// "kernel '<name>'") for anything detected; the fibers of the failing block are unwound first.
template <class... P, class... A>
LaunchRecord launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t dynamic_smem, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "cudasim::launch: wrong number of kernel arguments");
  detail::KernelCall<P...> call{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
  return detail::launch_impl(name, grid, block, dynamic_smem, &detail::KernelCall<P...>::run, &call);
}

}  // namespace cudasim
