// cuda-sim: the CUDA device environment for kernel source compiled as host C++ (g++, C++17).
//
// Included (only) through csrc/kernels/cuda_compat.cuh when MLA_CUDA_SIM is defined. It provides what a kernel
// sees under nvcc: threadIdx/blockIdx/blockDim/gridDim, the execution-space keywords, static and dynamic shared
// memory, barriers, warp collectives, atomics, __ldg, the vector types and the toolkit's __half / __nv_bfloat16,
// and the fast-math intrinsics. The scheduler behind it lives in sim_runtime.cc; see README.md in this directory.
#pragma once

#ifndef MLA_CUDA_SIM
#error "cuda_sim.h is the cuda-sim emulation header: build with MLA_CUDA_SIM defined (sim/sim.cmake does)"
#endif
#ifdef __CUDACC__
#error "cuda_sim.h must not be compiled by nvcc"
#endif

// System headers first: the intrinsic macros defined below must not reach them.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <new>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <type_traits>
#include <utility>

// The toolkit's own headers: dim3, uint3, float4…, cudaError_t, cudaStream_t, __half, __nv_bfloat16 (host code).
#include <vector_types.h>
#include <vector_functions.h>
#include <driver_types.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// ---------------------------------------------------------------------------------------------------------------
// Execution-space keywords. The toolkit defines them as GNU attributes g++ does not know; replace them.
#undef __host__
#undef __device__
#undef __global__
#undef __shared__
#undef __constant__
#undef __managed__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#undef __grid_constant__
#define __host__
#define __device__
#define __global__
#define __constant__
#define __managed__
#define __grid_constant__
#define __forceinline__ inline __attribute__((always_inline))
// __noinline__ is left undefined: libstdc++ spells __attribute__((__noinline__)) in headers kernels may include.
#define __launch_bounds__(...)
#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif
// __restrict__ is a g++ keyword already.

#define MLA_SIM_CAT2_(a, b) a##b
#define MLA_SIM_CAT_(a, b) MLA_SIM_CAT2_(a, b)

// Static shared memory: `__shared__ T x[N];` becomes a function-static thread_local (one copy per OS thread, shared
// by the block's fibers, which all run on that OS thread). Such variables are collected in the TLS section
// `mla_sim_shared` (directly, or via sim/mla_sim_shared.ld for template/inline functions, whose statics are
// COMDAT and ignore the section attribute) so the runtime can fill them with the NaN poison at every block start.
// The leading dummy declaration turns `extern __shared__` (dynamic shared memory, whose name cannot be bound to a
// per-launch buffer in host C++) into a compile error naming the fix: use MLA_DYNAMIC_SHARED(T, name).
#define __shared__                                                                                               \
  __attribute__((unused)) constexpr int MLA_SIM_CAT_(MLA_SIM_extern_shared_is_unsupported_use_MLA_DYNAMIC_SHARED_, \
                                              __COUNTER__) = 0;                                                  \
  static thread_local __attribute__((section("mla_sim_shared"), aligned(16)))

// Dynamic shared memory (the size given at launch). Spelled the same way for nvcc in cuda_compat.cuh.
#define MLA_DYNAMIC_SHARED(T, name) T* const name = ::cudasim::detail::dynamic_smem<T>()

#ifndef warpSize
#define warpSize 32
#endif

// The host-side API of the emulator (launch, thread order, traffic counters, SimError).
#include "cuda_sim_api.h"

namespace cudasim {

namespace detail {

struct ThreadCtx {
  uint3 thread_idx{0, 0, 0};
  uint3 block_idx{0, 0, 0};
  dim3 block_dim{1, 1, 1};
  dim3 grid_dim{1, 1, 1};
  unsigned linear_tid = 0;     // threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)
  void* thread = nullptr;      // the running emulated thread (nullptr outside a kernel)
  unsigned char* dyn_smem = nullptr;
  size_t dyn_smem_bytes = 0;
  Traffic traffic;             // cumulative, this OS thread (reset by reset_traffic())
  PhaseCounts* phase = nullptr;  // the current barrier interval of a profiled block (set_profile_block), else null
  // While profiling: each accumulator's chain depth in the current interval, by its address (every emulated thread's
  // registers are distinct objects); cleared when an interval starts.
  std::unordered_map<const void*, uint32_t> mma_depth;
};
extern thread_local ThreadCtx tctx;

[[noreturn]] void fail(const std::string& what);  // throws SimError naming kernel / block / thread
void not_in_kernel(const char* fn);                // throws if called outside a kernel

template <class T>
inline T* dynamic_smem() {
  return reinterpret_cast<T*>(tctx.dyn_smem);
}

inline void count_read(size_t n) {
  tctx.traffic.bytes_read += n;
  tctx.traffic.loads += 1;
  if (tctx.phase) {
    tctx.phase->bytes_read += n;
    tctx.phase->loads += 1;
  }
}
inline void count_write(size_t n) {
  tctx.traffic.bytes_written += n;
  tctx.traffic.stores += 1;
  if (tctx.phase) tctx.phase->bytes_written += n;
}
// The on-chip counters (Traffic); kernels count through the warp_ops.cuh wrappers.
inline void count_ldmatrix(uint64_t bytes, uint64_t wavefronts) {
  tctx.traffic.smem_ldmatrix_bytes += bytes;
  tctx.traffic.smem_ldmatrix_wavefronts += wavefronts;
  if (tctx.phase) {
    tctx.phase->smem_ldmatrix_bytes += bytes;
    tctx.phase->smem_ldmatrix_wavefronts += wavefronts;
  }
}
inline void count_smem_load(size_t n) {
  tctx.traffic.smem_load_bytes += n;
  if (tctx.phase) tctx.phase->smem_load_bytes += n;
}
inline void count_smem_store(size_t n) {
  tctx.traffic.smem_store_bytes += n;
  if (tctx.phase) tctx.phase->smem_store_bytes += n;
}
inline void count_converted(uint64_t values) {
  tctx.traffic.converted += values;
  if (tctx.phase) tctx.phase->converted += values;
}
inline void count_permuted(uint64_t values) {
  tctx.traffic.permuted += values;
  if (tctx.phase) tctx.phase->permuted += values;
}
// One warp-level mma, counted for the warp of the calling thread (the lane that completes the collective).
inline void count_mma() {
  tctx.traffic.mma += 1;
  if (tctx.phase) {
    const unsigned w = tctx.linear_tid / 32;
    if (tctx.phase->mma_per_warp.size() <= w) tctx.phase->mma_per_warp.resize(w + 1, 0);
    tctx.phase->mma_per_warp[w] += 1;
  }
}

// A lane's mma d = a·b + c of a profiled block: d's chain is one longer than c's (the mma waits for c).
inline void count_mma_chain(const void* d, const void* c) {
  if (!tctx.phase) return;
  const auto it = tctx.mma_depth.find(c);
  const uint32_t depth = (it == tctx.mma_depth.end() ? 0 : it->second) + 1;
  tctx.mma_depth[d] = depth;
  const unsigned w = tctx.linear_tid / 32;
  auto& chains = tctx.phase->mma_chain_per_warp;
  if (chains.size() <= w) chains.resize(w + 1, 0);
  if (chains[w] < depth) chains[w] = depth;
}

// Barriers. op: 0 plain, 1 count, 2 and, 3 or.
int syncthreads_op(int pred, int op);

// Generic warp collective. Every live lane of `mask` calls it with the same fn/param; the lane arriving last runs
// `fn` once for all of them (inputs frozen at arrival), then each lane gets its `out` bytes. Lanes of `mask` that
// have exited are absent (present mask tells who came).
constexpr size_t kWarpIn = 64;
constexpr size_t kWarpOut = 32;
struct WarpCall {
  unsigned mask;      // as requested
  unsigned present;   // lanes that arrived (mask minus exited lanes)
  int param;
  unsigned char (*in)[kWarpIn];
  unsigned char* out[32];  // per lane, kWarpOut bytes (nullptr for absent lanes)
};
using WarpFn = void (*)(WarpCall&);
void warp_collective(unsigned mask, WarpFn fn, int param, const void* in, size_t in_bytes, void* out,
                     size_t out_bytes, const char* what);

unsigned lane_id();
unsigned live_lanes();  // live lanes of the calling thread's warp

// cp.async emulation: a copy lands between its issue and the cp_async_wait retiring its group, when depends on the
// thread order (README.md); its global bytes are counted at issue.
void cp_async_issue(void* smem_dst, const void* gmem_src, unsigned copy_bytes, unsigned total_bytes);
void cp_async_commit();
void cp_async_wait(int n_newest_pending);  // n < 0: wait_all (also the open group)

// Shared-memory address checks (for ldmatrix / cp.async destinations).
bool is_shared(const void* p, size_t bytes);

template <class T>
inline uint64_t to_bits64(const T& v) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffled type must be <= 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits64(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

// Shuffle modes (param of the shuffle collective: mode | (width << 8)); the per-lane input is {value, operand}.
enum ShflMode { kShflIdx = 0, kShflUp = 1, kShflDown = 2, kShflXor = 3 };
uint64_t shfl(unsigned mask, uint64_t bits, int operand, int width, int mode);
enum VoteMode { kVoteBallot = 0, kVoteAny = 1, kVoteAll = 2 };
unsigned vote(unsigned mask, int pred, int mode);
enum ReduceMode { kRedAdd = 0, kRedMin, kRedMax, kRedUMin, kRedUMax, kRedAnd, kRedOr, kRedXor };
unsigned reduce(unsigned mask, unsigned value, int mode);
unsigned match_any(unsigned mask, uint64_t value);

}  // namespace detail
}  // namespace cudasim

// ---------------------------------------------------------------------------------------------------------------
// Built-in variables.
#define threadIdx (static_cast<const uint3&>(::cudasim::detail::tctx.thread_idx))
#define blockIdx (static_cast<const uint3&>(::cudasim::detail::tctx.block_idx))
#define blockDim (static_cast<const dim3&>(::cudasim::detail::tctx.block_dim))
#define gridDim (static_cast<const dim3&>(::cudasim::detail::tctx.grid_dim))

// ---------------------------------------------------------------------------------------------------------------
// Barriers and warp collectives.
inline void __syncthreads() { ::cudasim::detail::syncthreads_op(0, 0); }
inline int __syncthreads_count(int pred) { return ::cudasim::detail::syncthreads_op(pred, 1); }
inline int __syncthreads_and(int pred) { return ::cudasim::detail::syncthreads_op(pred, 2); }
inline int __syncthreads_or(int pred) { return ::cudasim::detail::syncthreads_op(pred, 3); }
void __syncwarp(unsigned mask = 0xffffffffu);
inline unsigned __activemask() { return ::cudasim::detail::live_lanes(); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned) {}

template <class T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32) {
  return ::cudasim::detail::from_bits64<T>(
      ::cudasim::detail::shfl(mask, ::cudasim::detail::to_bits64(var), srcLane, width, ::cudasim::detail::kShflIdx));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return ::cudasim::detail::from_bits64<T>(::cudasim::detail::shfl(mask, ::cudasim::detail::to_bits64(var),
                                                                   static_cast<int>(delta), width,
                                                                   ::cudasim::detail::kShflUp));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return ::cudasim::detail::from_bits64<T>(::cudasim::detail::shfl(mask, ::cudasim::detail::to_bits64(var),
                                                                   static_cast<int>(delta), width,
                                                                   ::cudasim::detail::kShflDown));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32) {
  return ::cudasim::detail::from_bits64<T>(
      ::cudasim::detail::shfl(mask, ::cudasim::detail::to_bits64(var), laneMask, width, ::cudasim::detail::kShflXor));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return ::cudasim::detail::vote(mask, pred, ::cudasim::detail::kVoteBallot);
}
inline int __any_sync(unsigned mask, int pred) {
  return static_cast<int>(::cudasim::detail::vote(mask, pred, ::cudasim::detail::kVoteAny));
}
inline int __all_sync(unsigned mask, int pred) {
  return static_cast<int>(::cudasim::detail::vote(mask, pred, ::cudasim::detail::kVoteAll));
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned v) {
  return ::cudasim::detail::reduce(mask, v, ::cudasim::detail::kRedAdd);
}
inline int __reduce_add_sync(unsigned mask, int v) {
  return static_cast<int>(::cudasim::detail::reduce(mask, static_cast<unsigned>(v), ::cudasim::detail::kRedAdd));
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned v) {
  return ::cudasim::detail::reduce(mask, v, ::cudasim::detail::kRedUMin);
}
inline int __reduce_min_sync(unsigned mask, int v) {
  return static_cast<int>(::cudasim::detail::reduce(mask, static_cast<unsigned>(v), ::cudasim::detail::kRedMin));
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v) {
  return ::cudasim::detail::reduce(mask, v, ::cudasim::detail::kRedUMax);
}
inline int __reduce_max_sync(unsigned mask, int v) {
  return static_cast<int>(::cudasim::detail::reduce(mask, static_cast<unsigned>(v), ::cudasim::detail::kRedMax));
}
inline unsigned __reduce_and_sync(unsigned mask, unsigned v) {
  return ::cudasim::detail::reduce(mask, v, ::cudasim::detail::kRedAnd);
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned v) {
  return ::cudasim::detail::reduce(mask, v, ::cudasim::detail::kRedOr);
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v) {
  return ::cudasim::detail::reduce(mask, v, ::cudasim::detail::kRedXor);
}
template <class T>
inline unsigned __match_any_sync(unsigned mask, T value) {
  return ::cudasim::detail::match_any(mask, ::cudasim::detail::to_bits64(value));
}

// ---------------------------------------------------------------------------------------------------------------
// Atomics (fibers never interleave inside one, but several OS threads may run launches at once: use real atomics).
namespace cudasim {
namespace detail {
template <class T, class F>
inline T atomic_rmw(T* p, F f) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomic on 4 or 8 bytes");
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  U* up = reinterpret_cast<U*>(p);
  U old_bits = __atomic_load_n(up, __ATOMIC_RELAXED);
  for (;;) {
    T old_v;
    std::memcpy(&old_v, &old_bits, sizeof(T));
    T new_v = f(old_v);
    U new_bits;
    std::memcpy(&new_bits, &new_v, sizeof(T));
    if (__atomic_compare_exchange_n(up, &old_bits, new_bits, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return old_v;
  }
}
}  // namespace detail
}  // namespace cudasim

#define MLA_SIM_ATOMIC_INT(T)                                                                                     \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }                          \
  inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }                          \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }                        \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }                          \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }                            \
  inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }                          \
  inline T atomicMax(T* p, T v) {                                                                               \
    return ::cudasim::detail::atomic_rmw(p, [v](T o) { return o > v ? o : v; });                               \
  }                                                                                                             \
  inline T atomicMin(T* p, T v) {                                                                               \
    return ::cudasim::detail::atomic_rmw(p, [v](T o) { return o < v ? o : v; });                               \
  }                                                                                                             \
  inline T atomicCAS(T* p, T cmp, T v) {                                                                        \
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                         \
    return cmp;                                                                                                 \
  }
MLA_SIM_ATOMIC_INT(int)
MLA_SIM_ATOMIC_INT(unsigned int)
MLA_SIM_ATOMIC_INT(unsigned long long)
#undef MLA_SIM_ATOMIC_INT
inline long long atomicMax(long long* p, long long v) {
  return ::cudasim::detail::atomic_rmw(p, [v](long long o) { return o > v ? o : v; });
}
inline long long atomicMin(long long* p, long long v) {
  return ::cudasim::detail::atomic_rmw(p, [v](long long o) { return o < v ? o : v; });
}
inline float atomicAdd(float* p, float v) {
  return ::cudasim::detail::atomic_rmw(p, [v](float o) { return o + v; });
}
inline double atomicAdd(double* p, double v) {
  return ::cudasim::detail::atomic_rmw(p, [v](double o) { return o + v; });
}
inline float atomicExch(float* p, float v) {
  return ::cudasim::detail::atomic_rmw(p, [v](float) { return v; });
}
// CUDA's float atomicMax/atomicMin exist from sm_90 on; emulate them (NaN handling as fmaxf/fminf).
inline float atomicMax(float* p, float v) {
  return ::cudasim::detail::atomic_rmw(p, [v](float o) { return ::fmaxf(o, v); });
}
inline float atomicMin(float* p, float v) {
  return ::cudasim::detail::atomic_rmw(p, [v](float o) { return ::fminf(o, v); });
}
inline unsigned atomicInc(unsigned* p, unsigned limit) {
  return ::cudasim::detail::atomic_rmw(p, [limit](unsigned o) { return o >= limit ? 0u : o + 1u; });
}
inline unsigned atomicDec(unsigned* p, unsigned limit) {
  return ::cudasim::detail::atomic_rmw(p, [limit](unsigned o) { return (o == 0u || o > limit) ? limit : o - 1u; });
}
#define MLA_SIM_ATOMIC_SCOPED(name) \
  template <class... A>             \
  inline auto name##_block(A... a) { return name(a...); } \
  template <class... A>             \
  inline auto name##_system(A... a) { return name(a...); }
MLA_SIM_ATOMIC_SCOPED(atomicAdd)
MLA_SIM_ATOMIC_SCOPED(atomicMax)
MLA_SIM_ATOMIC_SCOPED(atomicMin)
MLA_SIM_ATOMIC_SCOPED(atomicCAS)
MLA_SIM_ATOMIC_SCOPED(atomicExch)
#undef MLA_SIM_ATOMIC_SCOPED

// ---------------------------------------------------------------------------------------------------------------
// Read-only global loads (counted as global traffic like the warp_ops.cuh loads).
template <class T>
inline T __ldg(const T* p) {
  ::cudasim::detail::count_read(sizeof(T));
  return *p;
}
template <class T>
inline T __ldcg(const T* p) {
  ::cudasim::detail::count_read(sizeof(T));
  return *p;
}
template <class T>
inline T __ldcs(const T* p) {
  ::cudasim::detail::count_read(sizeof(T));
  return *p;
}
template <class T>
inline T __ldlu(const T* p) {
  ::cudasim::detail::count_read(sizeof(T));
  return *p;
}

// ---------------------------------------------------------------------------------------------------------------
// Integer / bit intrinsics.
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  return (x >> 16) | (x << 16);
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned sh) {
  const uint64_t v = (static_cast<uint64_t>(hi) << 32) | lo;
  return static_cast<unsigned>((v << (sh & 31)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned sh) {
  const uint64_t v = (static_cast<uint64_t>(hi) << 32) | lo;
  return static_cast<unsigned>(v >> (sh & 31));
}
inline int __mul24(int a, int b) { return (a << 8 >> 8) * (b << 8 >> 8); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<int64_t>(a) * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; std::memcpy(&x, &f, 4); return x; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }
inline double __longlong_as_double(long long x) { double d; std::memcpy(&d, &x, 8); return d; }
inline long long __double_as_longlong(double d) { long long x; std::memcpy(&x, &d, 8); return x; }

// min / max as CUDA's device overloads (mixed signed/unsigned pick unsigned, like CUDA).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(int a, unsigned b) { return min(static_cast<unsigned>(a), b); }
inline unsigned max(int a, unsigned b) { return max(static_cast<unsigned>(a), b); }
inline unsigned min(unsigned a, int b) { return min(a, static_cast<unsigned>(b)); }
inline unsigned max(unsigned a, int b) { return max(a, static_cast<unsigned>(b)); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return ::fminf(a, b); }
inline float max(float a, float b) { return ::fmaxf(a, b); }
inline double min(double a, double b) { return ::fmin(a, b); }
inline double max(double a, double b) { return ::fmax(a, b); }

// ---------------------------------------------------------------------------------------------------------------
// Float intrinsics. The GPU's approximate versions are emulated by the accurate ones (or their defining formula);
// results can differ from a GPU in the last bits, which the package's tolerances allow for.
namespace cudasim {
namespace math {
inline float expf_fast(float x) { return ::exp2f(x * 1.4426950408889634f); }
inline float exp10f_fast(float x) { return ::exp2f(x * 3.3219280948873623f); }
inline float logf_fast(float x) { return ::log2f(x) * 0.6931471805599453f; }
inline float log2f_fast(float x) { return ::log2f(x); }
inline float log10f_fast(float x) { return ::log2f(x) * 0.3010299956639812f; }
inline float powf_fast(float x, float y) { return ::exp2f(y * ::log2f(x)); }
inline void sincosf_fast(float x, float* s, float* c) { *s = ::sinf(x); *c = ::cosf(x); }
}  // namespace math
}  // namespace cudasim
// glibc declares __expf, __logf, … as its own internal functions: define these names as macros, not functions.
#define __expf(x) ::cudasim::math::expf_fast(x)
#define __exp10f(x) ::cudasim::math::exp10f_fast(x)
#define __logf(x) ::cudasim::math::logf_fast(x)
#define __log2f(x) ::cudasim::math::log2f_fast(x)
#define __log10f(x) ::cudasim::math::log10f_fast(x)
#define __powf(x, y) ::cudasim::math::powf_fast(x, y)
#define __sinf(x) ::sinf(x)
#define __cosf(x) ::cosf(x)
#define __tanf(x) ::tanf(x)
#define __sincosf(x, s, c) ::cudasim::math::sincosf_fast(x, s, c)

inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return ::sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / ::sqrtf(x); }
inline float rsqrtf(float x) { return 1.0f / ::sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / ::sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / ::cbrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return ::fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline int __float2int_rn(float x) { return static_cast<int>(::nearbyintf(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(::floorf(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(::ceilf(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(::nearbyintf(x)); }
inline unsigned __float2uint_rz(float x) { return static_cast<unsigned>(x); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;

namespace cudasim {
namespace detail {
long long clock_ticks();
}
}  // namespace cudasim
inline long long clock64() { return ::cudasim::detail::clock_ticks(); }

// ---------------------------------------------------------------------------------------------------------------
// The few runtime-API calls a kernel's host-side launcher may make (internal linkage: no clash with libcudart).
namespace {
[[maybe_unused]] inline cudaError_t cudaGetLastError() { return cudaSuccess; }
[[maybe_unused]] inline cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
[[maybe_unused]] inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : "cuda-sim: error";
}
template <class F>
[[maybe_unused]] inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
  return cudaSuccess;
}
}  // namespace
