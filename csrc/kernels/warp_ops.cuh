// The only way kernels use tensor-core (mma.sync), ldmatrix, cp.async and global-memory instructions.
// Each wrapper has its CUDA definition (inline PTX, sm_80+) and its cuda-sim definition side by side.
//
// Emulated semantics (MLA_CUDA_SIM):
//  - mma / ldmatrix are warp collectives: all 32 lanes must call them (mask 0xffffffff, as .sync.aligned demands);
//    the last lane to arrive computes the whole warp's result from the per-lane fragments laid out exactly as in
//    the PTX ISA (groupID = lane >> 2, threadID_in_group = lane % 4), so a wrong fragment layout gives wrong
//    numbers, as on the GPU. mma accumulates in fp32, k ascending (the products of bf16/f16 inputs are exact).
//  - ldmatrix checks that every row address it uses is 16-byte aligned and inside shared memory.
//  - cp.async: issuing counts the global bytes (src-size 0 reads and counts nothing); the copy LANDS at a time
//    chosen by the thread order (sim/README.md), anywhere the GPU may land it, between issue and the
//    cp_async_wait<N>() / cp_async_wait_all() retiring its commit group: forward at that wait (the latest: a read
//    of the destination before it sees the shared-memory poison, NaN), reverse at issue (the earliest; as reverse
//    and random orders also let a warp run ahead of the others up to its next __syncthreads, a copy into a stage
//    other warps may still be reading, e.g. with a pipeline's trailing __syncthreads() missing, overwrites their
//    data), random per copy (at issue, at the issuing thread's next scheduling point, or at the wait). A correct
//    kernel writes the same bits in every order. Copies not landed when the issuing thread exits are dropped.
//  - ld_global / st_global (and __ldg, cp.async) count bytes into the launch's traffic record; ldmatrix (bytes and
//    the shared-memory passes its bank groups need), ld_shared / st_shared, cp.async destination bytes and mma count
//    into its on-chip counters (cudasim::Traffic), which the GPU performance model reads.
#pragma once

#include "cuda_compat.cuh"

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace mla {
namespace warp {

// ---------------------------------------------------------------------------------------------------------------
// Shared-memory address of a generic pointer (for PTX operands).
MLA_DEVICE_INLINE uint32_t smem_addr(const void* p) {
#if defined(__CUDACC__)
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
#else
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(p));
#endif
}

// Packing two 16-bit values into one 32-bit fragment register (lo = element with the lower index).
MLA_DEVICE_INLINE uint32_t pack_b16(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

#if !defined(__CUDACC__)
namespace sim_impl {
inline float b16_to_float(uint16_t bits, bool is_f16) {
  if (is_f16) {
    __half_raw r;
    r.x = bits;
    return __half2float(__half(r));
  }
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct MmaIn {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
};

// D = A (16x16, row) * B (16x8, col) + C (16x8), per the PTX ISA m16n8k16 .f16/.bf16 fragment layouts:
//   A: a_i, i = 0..7 (reg i/2, half i%2): row = g (+8 if i in {2,3,6,7}), col = 2t + (i&1) (+8 if i >= 4)
//   B: b_i, i = 0..3 (reg i/2, half i%2): row = 2t + (i&1) (+8 if i >= 2), col = g
//   C/D: c_i, i = 0..3: row = g (+8 if i >= 2), col = 2t + (i&1)
template <bool IsF16>
inline void mma_fn(::cudasim::detail::WarpCall& c) {
  if (c.present != 0xffffffffu)
    ::cudasim::detail::fail("mma.sync.m16n8k16: all 32 lanes of the warp must execute it (mask 0xffffffff)");
  float A[16][16], B[16][8], C[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    MmaIn in;
    std::memcpy(&in, c.in[lane], sizeof in);
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 8; ++i) {
      const uint16_t bits = static_cast<uint16_t>(in.a[i / 2] >> (16 * (i % 2)));
      const int row = g + (((i >> 1) & 1) ? 8 : 0);
      const int col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
      A[row][col] = b16_to_float(bits, IsF16);
    }
    for (int i = 0; i < 4; ++i) {
      const uint16_t bits = static_cast<uint16_t>(in.b[i / 2] >> (16 * (i % 2)));
      const int row = 2 * t + (i & 1) + (i >= 2 ? 8 : 0);
      B[row][g] = b16_to_float(bits, IsF16);
    }
    for (int i = 0; i < 4; ++i) C[g + (i >= 2 ? 8 : 0)][2 * t + (i & 1)] = in.c[i];
  }
  ::cudasim::detail::count_mma();
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    float d[4];
    for (int i = 0; i < 4; ++i) {
      const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
      float acc = C[row][col];
      for (int k = 0; k < 16; ++k) acc = std::fma(A[row][k], B[k][col], acc);
      d[i] = acc;
    }
    std::memcpy(c.out[lane], d, sizeof d);
  }
}

template <bool IsF16>
inline void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  MmaIn in;
  std::memcpy(in.a, a, sizeof in.a);
  std::memcpy(in.b, b, sizeof in.b);
  std::memcpy(in.c, c, sizeof in.c);
  float out[4];
  ::cudasim::detail::warp_collective(0xffffffffu, &mma_fn<IsF16>, 0, &in, sizeof in, out, sizeof out,
                                     IsF16 ? "mma.m16n8k16.f16" : "mma.m16n8k16.bf16");
  ::cudasim::detail::count_mma_chain(d, c);
  std::memcpy(d, out, sizeof out);
}

// ldmatrix .m8n8 .b16: matrix j's 8 row addresses come from lanes 8j..8j+7; lane l receives, in register j,
// rows/cols (g = l>>2, t = l%4): {M_j[g][2t], M_j[g][2t+1]}; with .trans {M_j[2t][g], M_j[2t+1][g]}.
template <int Count, bool Trans>
inline void ldmatrix_fn(::cudasim::detail::WarpCall& c) {
  if (c.present != 0xffffffffu)
    ::cudasim::detail::fail("ldmatrix.sync: all 32 lanes of the warp must execute it (mask 0xffffffff)");
  const uint16_t* rows[4][8];
  uint64_t wavefronts = 0;
  for (int j = 0; j < Count; ++j) {
    // Shared memory serves one 8x8 matrix (8 rows of 16 bytes) per pass when its rows fall in distinct 16-byte bank
    // groups (32 banks of 4 bytes); rows sharing a group take one pass each.
    int perGroup[8] = {0, 0, 0, 0, 0, 0, 0, 0}, most = 0;
    for (int r = 0; r < 8; ++r) {
      const void* p;
      std::memcpy(&p, c.in[8 * j + r], sizeof p);
      const int group = static_cast<int>((reinterpret_cast<uintptr_t>(p) >> 4) & 7);
      most = std::max(most, ++perGroup[group]);
    }
    wavefronts += static_cast<uint64_t>(most);
  }
  ::cudasim::detail::count_ldmatrix(uint64_t{128} * Count, wavefronts);
  for (int j = 0; j < Count; ++j)
    for (int r = 0; r < 8; ++r) {
      const void* p;
      std::memcpy(&p, c.in[8 * j + r], sizeof p);
      if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
        ::cudasim::detail::fail("ldmatrix: row address of lane " + std::to_string(8 * j + r) +
                                " is not 16-byte aligned");
      if (!::cudasim::detail::is_shared(p, 16))
        ::cudasim::detail::fail("ldmatrix: row address of lane " + std::to_string(8 * j + r) +
                                " is not in shared memory");
      rows[j][r] = static_cast<const uint16_t*>(p);
    }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    uint32_t regs[4] = {0, 0, 0, 0};
    for (int j = 0; j < Count; ++j) {
      uint16_t lo, hi;
      if (Trans) {
        lo = rows[j][2 * t][g];
        hi = rows[j][2 * t + 1][g];
      } else {
        lo = rows[j][g][2 * t];
        hi = rows[j][g][2 * t + 1];
      }
      regs[j] = pack_b16(lo, hi);
    }
    std::memcpy(c.out[lane], regs, sizeof regs);
  }
}

template <int Count, bool Trans>
inline void ldmatrix(uint32_t* d, const void* row_ptr) {
  uint32_t out[4];
  static const char* const name = Count == 1 ? (Trans ? "ldmatrix.x1.trans" : "ldmatrix.x1")
                                  : Count == 2 ? (Trans ? "ldmatrix.x2.trans" : "ldmatrix.x2")
                                               : (Trans ? "ldmatrix.x4.trans" : "ldmatrix.x4");
  ::cudasim::detail::warp_collective(0xffffffffu, &ldmatrix_fn<Count, Trans>, 0, &row_ptr, sizeof row_ptr, out,
                                     sizeof out, name);
  for (int j = 0; j < Count; ++j) d[j] = out[j];
}
}  // namespace sim_impl
#endif

// ---------------------------------------------------------------------------------------------------------------
// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32: d = a * b + c (d may alias c).
MLA_DEVICE_INLINE void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                         const float (&c)[4]) {
#if defined(__CUDACC__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#else
  sim_impl::mma<false>(d, a, b, c);
#endif
}

MLA_DEVICE_INLINE void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                        const float (&c)[4]) {
#if defined(__CUDACC__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#else
  sim_impl::mma<true>(d, a, b, c);
#endif
}

// The same, chosen by element type: mma_m16n8k16<__nv_bfloat16>(…) / mma_m16n8k16<__half>(…).
template <class T>
MLA_DEVICE_INLINE void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                    const float (&c)[4]) {
  static_assert(std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value,
                "mma_m16n8k16: element type must be __nv_bfloat16 or __half");
  if constexpr (std::is_same<T, __half>::value) {
    mma_m16n8k16_f16(d, a, b, c);
  } else {
    mma_m16n8k16_bf16(d, a, b, c);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16. `row_ptr` is this lane's row address (16 bytes of
// shared memory, 16-byte aligned): lanes 0-7 give matrix 0's rows, 8-15 matrix 1's, 16-23 matrix 2's, 24-31 matrix
// 3's (x1 uses lanes 0-7, x2 lanes 0-15; the other lanes' addresses are ignored but every lane must call).
MLA_DEVICE_INLINE void ldmatrix_x1(uint32_t& d0, const void* row_ptr) {
#if defined(__CUDACC__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(d0) : "r"(smem_addr(row_ptr)));
#else
  sim_impl::ldmatrix<1, false>(&d0, row_ptr);
#endif
}
MLA_DEVICE_INLINE void ldmatrix_x2(uint32_t& d0, uint32_t& d1, const void* row_ptr) {
#if defined(__CUDACC__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(d0), "=r"(d1)
               : "r"(smem_addr(row_ptr)));
#else
  uint32_t d[2];
  sim_impl::ldmatrix<2, false>(d, row_ptr);
  d0 = d[0];
  d1 = d[1];
#endif
}
MLA_DEVICE_INLINE void ldmatrix_x4(uint32_t& d0, uint32_t& d1, uint32_t& d2, uint32_t& d3, const void* row_ptr) {
#if defined(__CUDACC__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d0), "=r"(d1), "=r"(d2), "=r"(d3)
               : "r"(smem_addr(row_ptr)));
#else
  uint32_t d[4];
  sim_impl::ldmatrix<4, false>(d, row_ptr);
  d0 = d[0];
  d1 = d[1];
  d2 = d[2];
  d3 = d[3];
#endif
}
MLA_DEVICE_INLINE void ldmatrix_x1_trans(uint32_t& d0, const void* row_ptr) {
#if defined(__CUDACC__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(d0) : "r"(smem_addr(row_ptr)));
#else
  sim_impl::ldmatrix<1, true>(&d0, row_ptr);
#endif
}
MLA_DEVICE_INLINE void ldmatrix_x2_trans(uint32_t& d0, uint32_t& d1, const void* row_ptr) {
#if defined(__CUDACC__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(d0), "=r"(d1)
               : "r"(smem_addr(row_ptr)));
#else
  uint32_t d[2];
  sim_impl::ldmatrix<2, true>(d, row_ptr);
  d0 = d[0];
  d1 = d[1];
#endif
}
MLA_DEVICE_INLINE void ldmatrix_x4_trans(uint32_t& d0, uint32_t& d1, uint32_t& d2, uint32_t& d3,
                                         const void* row_ptr) {
#if defined(__CUDACC__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d0), "=r"(d1), "=r"(d2), "=r"(d3)
               : "r"(smem_addr(row_ptr)));
#else
  uint32_t d[4];
  sim_impl::ldmatrix<4, true>(d, row_ptr);
  d0 = d[0];
  d1 = d[1];
  d2 = d[2];
  d3 = d[3];
#endif
}
// Array forms.
MLA_DEVICE_INLINE void ldmatrix_x2(uint32_t (&d)[2], const void* p) { ldmatrix_x2(d[0], d[1], p); }
MLA_DEVICE_INLINE void ldmatrix_x4(uint32_t (&d)[4], const void* p) { ldmatrix_x4(d[0], d[1], d[2], d[3], p); }
MLA_DEVICE_INLINE void ldmatrix_x2_trans(uint32_t (&d)[2], const void* p) { ldmatrix_x2_trans(d[0], d[1], p); }
MLA_DEVICE_INLINE void ldmatrix_x4_trans(uint32_t (&d)[4], const void* p) {
  ldmatrix_x4_trans(d[0], d[1], d[2], d[3], p);
}

// ---------------------------------------------------------------------------------------------------------------
// cp.async.cg.shared.global, 16 bytes (both addresses 16-byte aligned), then commit / wait groups.
// Emulated landing time (see the top of this file): forward order at the retiring wait, reverse order at issue,
// random order per copy either; the bytes are counted at issue in every order.
MLA_DEVICE_INLINE void cp_async_16(void* smem_dst, const void* gmem_src) {
#if defined(__CUDACC__)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem_dst)), "l"(gmem_src) : "memory");
#else
  ::cudasim::detail::cp_async_issue(smem_dst, gmem_src, 16, 16);
#endif
}
// With src-size: copies `src_bytes` (0..16) bytes and zero-fills the rest of the 16; with 0 the source is not
// read at all (may point anywhere, e.g. past the end of a tensor for an out-of-range row).
MLA_DEVICE_INLINE void cp_async_16_zfill(void* smem_dst, const void* gmem_src, unsigned src_bytes) {
#if defined(__CUDACC__)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem_dst)), "l"(gmem_src),
               "r"(src_bytes)
               : "memory");
#else
  ::cudasim::detail::cp_async_issue(smem_dst, gmem_src, src_bytes, 16);
#endif
}
// Predicated form: pred false → the 16 destination bytes are zeroed and nothing is read.
MLA_DEVICE_INLINE void cp_async_16_pred(void* smem_dst, const void* gmem_src, bool pred) {
  cp_async_16_zfill(smem_dst, gmem_src, pred ? 16u : 0u);
}
MLA_DEVICE_INLINE void cp_async_commit() {
#if defined(__CUDACC__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
  ::cudasim::detail::cp_async_commit();
#endif
}
// Wait until at most N of this thread's committed groups are pending (the newest N). Other threads' copies need
// a __syncthreads() after their wait, as on the GPU.
template <int N>
MLA_DEVICE_INLINE void cp_async_wait() {
  static_assert(N >= 0 && N <= 7, "cp.async.wait_group N: 0..7");
#if defined(__CUDACC__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#else
  ::cudasim::detail::cp_async_wait(N);
#endif
}
MLA_DEVICE_INLINE void cp_async_wait_all() {
#if defined(__CUDACC__)
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#else
  ::cudasim::detail::cp_async_wait(-1);
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// Global memory. T: any trivially copyable type (scalars, __half, __nv_bfloat16, float2/float4/int4/uint4, …).
// ld_global: plain (coherent) load; ld_global_nc: read-only path (ld.global.nc: the data must not be written by
// any thread during the kernel); st_global: plain store. Emulated: counted in the launch's traffic record.
template <class T>
MLA_DEVICE_INLINE T ld_global(const T* p) {
#if !defined(__CUDACC__)
  ::cudasim::detail::count_read(sizeof(T));
#endif
  return *p;
}

template <class T>
MLA_DEVICE_INLINE T ld_global_nc(const T* p) {
  static_assert(std::is_trivially_copyable<T>::value, "ld_global_nc: trivially copyable types only");
#if defined(__CUDACC__)
  if constexpr (sizeof(T) == 16 && alignof(T) >= 16) {
    uint4 r;
    asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    T v;
    memcpy(&v, &r, sizeof v);
    return v;
  } else if constexpr (sizeof(T) == 8 && alignof(T) >= 8) {
    uint2 r;
    asm volatile("ld.global.nc.v2.u32 {%0,%1}, [%2];\n" : "=r"(r.x), "=r"(r.y) : "l"(p));
    T v;
    memcpy(&v, &r, sizeof v);
    return v;
  } else if constexpr (sizeof(T) == 4 && alignof(T) >= 4) {
    uint32_t r;
    asm volatile("ld.global.nc.u32 %0, [%1];\n" : "=r"(r) : "l"(p));
    T v;
    memcpy(&v, &r, sizeof v);
    return v;
  } else if constexpr (sizeof(T) == 2 && alignof(T) >= 2) {
    unsigned short r;
    asm volatile("ld.global.nc.u16 %0, [%1];\n" : "=h"(r) : "l"(p));
    T v;
    memcpy(&v, &r, sizeof v);
    return v;
  } else {
    return *p;
  }
#else
  ::cudasim::detail::count_read(sizeof(T));
  return *p;
#endif
}

template <class T>
MLA_DEVICE_INLINE void st_global(T* p, const T& v) {
#if !defined(__CUDACC__)
  ::cudasim::detail::count_write(sizeof(T));
#endif
  *p = v;
}

// Shared memory through plain loads and stores, for the kernels' own data (not ldmatrix / cp.async). Emulated: the
// address must lie in shared memory, and the bytes are counted (per thread) in the launch's on-chip counters.
template <class T>
MLA_DEVICE_INLINE void st_shared(T* p, const T& v) {
#if !defined(__CUDACC__)
  if (!::cudasim::detail::is_shared(p, sizeof(T))) ::cudasim::detail::fail("st_shared: the address is not in shared memory");
  ::cudasim::detail::count_smem_store(sizeof(T));
#endif
  *p = v;
}
template <class T>
MLA_DEVICE_INLINE T ld_shared(const T* p) {
#if !defined(__CUDACC__)
  if (!::cudasim::detail::is_shared(p, sizeof(T))) ::cudasim::detail::fail("ld_shared: the address is not in shared memory");
  ::cudasim::detail::count_smem_load(sizeof(T));
#endif
  return *p;
}

// Programmatic dependent launch (sm_90+; no-ops before, and under emulation, where launches run one after another).
// griddep_wait: in a kernel launched with mla_launch_dependent, wait until the previous kernel on the stream has
// completed and its memory is visible; griddep_launch_dependents: this CTA lets the next such kernel be scheduled.
MLA_DEVICE_INLINE void griddep_wait() {
#if defined(__CUDACC__) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
MLA_DEVICE_INLINE void griddep_launch_dependents() {
#if defined(__CUDACC__) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether the code being compiled may use the sm_89+ fp8 conversion instructions (cvt_f16x2_e4m3x2): the device pass
// of an sm_89+ target, and the emulator (which runs both decode paths, chosen by the simulated compute capability).
#if defined(__CUDACC__)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
inline constexpr bool kArchHasFp8Cvt = true;
#else
inline constexpr bool kArchHasFp8Cvt = false;
#endif
#else
inline constexpr bool kArchHasFp8Cvt = true;
#endif

// cvt.rn.f16x2.e4m3x2 (sm_89+): two e4m3 bytes (byte 0 = the low half of the result) to f16x2, exactly; an e4m3 NaN
// (0x7F, 0xFF) gives the f16 NaN 0x7FFF. Only where kArchHasFp8Cvt (elsewhere it traps). Emulated: counts 2 values
// converted (the model's conversion work).
MLA_DEVICE_INLINE uint32_t cvt_f16x2_e4m3x2(uint32_t two) {
#if defined(__CUDACC__)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  uint32_t d;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(d) : "h"(static_cast<unsigned short>(two)));
  return d;
#else
  (void)two;
  __trap();
  return 0;
#endif
#else
  auto one = [](uint32_t b) -> uint32_t {
    const uint32_t mag = b & 0x7fu, sign = (b & 0x80u) << 8;
    if (mag == 0x7fu) return 0x7fffu;
    if (mag >= 8u) return sign | (((mag >> 3) + 8u) << 10) | ((mag & 7u) << 7);  // normal: exponent bias 7 -> 15
    if (mag == 0u) return sign;
    int e = 0;  // subnormal m * 2^-9: normalise the 3-bit mantissa
    uint32_t m = mag;
    while (!(m & 8u)) { m <<= 1; ++e; }
    return sign | ((9u - static_cast<uint32_t>(e)) << 10) | ((m & 7u) << 7);  // 2^(3-e-9), f16 bias 15
  };
  ::cudasim::detail::count_converted(2);
  return one(two & 0xffu) | (one((two >> 8) & 0xffu) << 16);
#endif
}

// The emulator's count of fp8 values a kernel converts in software (the performance model's conversion work); no
// code on the GPU. cvt_f16x2_e4m3x2 counts its own.
MLA_DEVICE_INLINE void count_fp8_converted(int values) {
#if !defined(__CUDACC__)
  ::cudasim::detail::count_converted(static_cast<uint64_t>(values));
#else
  (void)values;
#endif
}
// The same for the values a byte permute gathers into a cvt_f16x2_e4m3x2 operand.
MLA_DEVICE_INLINE void count_fp8_permuted(int values) {
#if !defined(__CUDACC__)
  ::cudasim::detail::count_permuted(static_cast<uint64_t>(values));
#else
  (void)values;
#endif
}

// 16-byte vector forms (pointers 16-byte aligned).
MLA_DEVICE_INLINE uint4 ld_global_16(const void* p) { return ld_global(static_cast<const uint4*>(p)); }
MLA_DEVICE_INLINE uint4 ld_global_nc_16(const void* p) { return ld_global_nc(static_cast<const uint4*>(p)); }
MLA_DEVICE_INLINE void st_global_16(void* p, const uint4& v) { st_global(static_cast<uint4*>(p), v); }

}  // namespace warp
}  // namespace mla

// Kernels may use the wrappers unqualified.
using namespace mla::warp;
