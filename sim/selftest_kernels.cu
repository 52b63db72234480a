// cuda-sim self-test kernels. Written as real CUDA kernels (this file also compiles with nvcc, sm_80+), run here
// under the emulator by selftest.cc.
#include "cuda_compat.cuh"
#include "warp_ops.cuh"
#include "launch.cuh"

#include "selftest_kernels.h"

namespace mla_selftest {

// ----------------------------------------------------------------------------------------------------------------
template <bool F16>
__global__ void mma_kernel(const uint32_t* a, const uint32_t* b, const float* c, float* d) {
  const int lane = threadIdx.x;
  uint32_t fa[4], fb[2];
  float fc[4], fd[4];
  for (int i = 0; i < 4; ++i) fa[i] = ld_global(a + 4 * lane + i);
  for (int i = 0; i < 2; ++i) fb[i] = ld_global(b + 2 * lane + i);
  for (int i = 0; i < 4; ++i) fc[i] = ld_global(c + 4 * lane + i);
  if (F16) {
    mma_m16n8k16_f16(fd, fa, fb, fc);
  } else {
    mma_m16n8k16<__nv_bfloat16>(fd, fa, fb, fc);
  }
  for (int i = 0; i < 4; ++i) st_global(d + 4 * lane + i, fd[i]);
}

cudaError_t run_mma(bool f16, const uint32_t* a, const uint32_t* b, const float* c, float* d) {
  if (f16) return mla_launch(mma_kernel<true>, "mma_kernel<f16>", dim3(1), dim3(32), 0, nullptr, a, b, c, d);
  return mla_launch(mma_kernel<false>, "mma_kernel<bf16>", dim3(1), dim3(32), 0, nullptr, a, b, c, d);
}

// A 16x16 (row-major) and B 16x8 ([k][n]) in shared memory, fragments by ldmatrix, one mma, D by fragment layout.
template <bool F16>
__global__ void mma_ldmatrix_kernel(const uint16_t* A, const uint16_t* B, float* D) {
  __shared__ __align__(16) uint16_t sA[16 * 16];
  __shared__ __align__(16) uint16_t sB[16 * 8];
  const int lane = threadIdx.x;
  for (int i = lane; i < 16 * 16; i += 32) sA[i] = ld_global(A + i);
  for (int i = lane; i < 16 * 8; i += 32) sB[i] = ld_global(B + i);
  __syncthreads();
  uint32_t fa[4], fb[2];
  ldmatrix_x4(fa, &sA[(lane % 16) * 16 + (lane / 16) * 8]);
  ldmatrix_x2_trans(fb, &sB[(lane % 16) * 8]);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  if (F16) {
    mma_m16n8k16<__half>(acc, fa, fb, acc);
  } else {
    mma_m16n8k16_bf16(acc, fa, fb, acc);
  }
  const int g = lane >> 2, t = lane & 3;
  st_global(D + g * 8 + 2 * t, acc[0]);
  st_global(D + g * 8 + 2 * t + 1, acc[1]);
  st_global(D + (g + 8) * 8 + 2 * t, acc[2]);
  st_global(D + (g + 8) * 8 + 2 * t + 1, acc[3]);
}

cudaError_t run_mma_ldmatrix_gemm(bool f16, const uint16_t* A, const uint16_t* B, float* D) {
  if (f16) return mla_launch(mma_ldmatrix_kernel<true>, "mma_ldmatrix_kernel<f16>", dim3(1), dim3(32), 0, nullptr, A, B, D);
  return mla_launch(mma_ldmatrix_kernel<false>, "mma_ldmatrix_kernel<bf16>", dim3(1), dim3(32), 0, nullptr, A, B, D);
}

// ----------------------------------------------------------------------------------------------------------------
// Matrices in shared memory with a padded row stride of 24 elements (48 bytes, 16-byte aligned rows).
template <int Count, bool Trans>
__global__ void ldmatrix_kernel(const uint16_t* mats, const int* row_of_lane, uint32_t* out) {
  __shared__ __align__(16) uint16_t s[4 * 8 * 24];
  const int lane = threadIdx.x;
  for (int i = lane; i < 4 * 64; i += 32) {
    const int m = i / 64, r = (i / 8) % 8, c = i % 8;
    s[(m * 8 + r) * 24 + c] = ld_global(mats + i);
  }
  __syncthreads();
  const int m = lane / 8;
  const void* p = &s[(m * 8 + ld_global(row_of_lane + lane)) * 24];
  uint32_t d[4] = {0, 0, 0, 0};
  if (Count == 1) {
    if (Trans) ldmatrix_x1_trans(d[0], p); else ldmatrix_x1(d[0], p);
  } else if (Count == 2) {
    if (Trans) ldmatrix_x2_trans(d[0], d[1], p); else ldmatrix_x2(d[0], d[1], p);
  } else {
    if (Trans) ldmatrix_x4_trans(d[0], d[1], d[2], d[3], p); else ldmatrix_x4(d[0], d[1], d[2], d[3], p);
  }
  for (int j = 0; j < 4; ++j) st_global(out + 4 * lane + j, d[j]);
}

cudaError_t run_ldmatrix(int count, bool trans, const uint16_t* mats, const int* row_of_lane, uint32_t* out) {
  const dim3 g(1), b(32);
  if (count == 1 && !trans) return mla_launch(ldmatrix_kernel<1, false>, "ldmatrix_x1", g, b, 0, nullptr, mats, row_of_lane, out);
  if (count == 2 && !trans) return mla_launch(ldmatrix_kernel<2, false>, "ldmatrix_x2", g, b, 0, nullptr, mats, row_of_lane, out);
  if (count == 4 && !trans) return mla_launch(ldmatrix_kernel<4, false>, "ldmatrix_x4", g, b, 0, nullptr, mats, row_of_lane, out);
  if (count == 1 && trans) return mla_launch(ldmatrix_kernel<1, true>, "ldmatrix_x1_trans", g, b, 0, nullptr, mats, row_of_lane, out);
  if (count == 2 && trans) return mla_launch(ldmatrix_kernel<2, true>, "ldmatrix_x2_trans", g, b, 0, nullptr, mats, row_of_lane, out);
  return mla_launch(ldmatrix_kernel<4, true>, "ldmatrix_x4_trans", g, b, 0, nullptr, mats, row_of_lane, out);
}

// ----------------------------------------------------------------------------------------------------------------
__global__ void cvt_e4m3x2_kernel(const uint16_t* in, uint32_t* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) st_global(out + i, cvt_f16x2_e4m3x2(ld_global(in + i)));
}

cudaError_t run_cvt_e4m3x2(const uint16_t* in, uint32_t* out, int n) {
  return mla_launch(cvt_e4m3x2_kernel, "cvt_e4m3x2", dim3((n + 127) / 128), dim3(128), 0, nullptr, in, out, n);
}

__global__ void shfl_kernel(int mode, int width, unsigned mask, const int* in, const int* op, int* out) {
  const int tid = threadIdx.x;
  const int lane = tid % 32;
  if (!((mask >> lane) & 1u)) {
    st_global(out + tid, -1);
    return;
  }
  const int v = ld_global(in + tid);
  const int o = ld_global(op + tid);
  int r = 0;
  switch (mode) {
    case 0: r = __shfl_sync(mask, v, o, width); break;
    case 1: r = __shfl_up_sync(mask, v, static_cast<unsigned>(o), width); break;
    case 2: r = __shfl_down_sync(mask, v, static_cast<unsigned>(o), width); break;
    default: r = __shfl_xor_sync(mask, v, o, width); break;
  }
  st_global(out + tid, r);
}

cudaError_t run_shfl(int mode, int width, unsigned mask, int threads, const int* in, const int* op, int* out) {
  return mla_launch(shfl_kernel, "shfl_kernel", dim3(1), dim3(threads), 0, nullptr, mode, width, mask, in, op, out);
}

__global__ void shfl_double_kernel(const double* in, double* out) {
  const double v = ld_global(in + threadIdx.x);
  st_global(out + threadIdx.x, __shfl_xor_sync(0xffffffffu, v, 31));
}

cudaError_t run_shfl_double(const double* in, double* out) {
  return mla_launch(shfl_double_kernel, "shfl_double_kernel", dim3(1), dim3(32), 0, nullptr, in, out);
}

__global__ void vote_kernel(unsigned mask, const int* pred, unsigned* ballot, int* any, int* all) {
  const int tid = threadIdx.x;
  if (!((mask >> (tid % 32)) & 1u)) {
    st_global(ballot + tid, 0xdeadbeefu);
    st_global(any + tid, static_cast<int>(0xdeadbeef));
    st_global(all + tid, static_cast<int>(0xdeadbeef));
    return;
  }
  const int p = ld_global(pred + tid);
  st_global(ballot + tid, __ballot_sync(mask, p));
  st_global(any + tid, __any_sync(mask, p));
  st_global(all + tid, __all_sync(mask, p));
}

cudaError_t run_vote(unsigned mask, int threads, const int* pred, unsigned* ballot, int* any, int* all) {
  return mla_launch(vote_kernel, "vote_kernel", dim3(1), dim3(threads), 0, nullptr, mask, pred, ballot, any, all);
}

// ----------------------------------------------------------------------------------------------------------------
__global__ void atomics_kernel(const float* values, int* icounter, float* fsum, int* imax, int* imin,
                               unsigned* cas_counter, int* exch_last) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const float v = ld_global(values + i);
  atomicAdd(icounter, 1);
  atomicAdd(fsum, v);
  atomicMax(imax, static_cast<int>(v * 1000.0f));
  atomicMin(imin, static_cast<int>(v * 1000.0f));
  unsigned old = *cas_counter, assumed;
  do {
    assumed = old;
    old = atomicCAS(cas_counter, assumed, assumed + 1u);
  } while (old != assumed);
  atomicExch(exch_last, i);
}

cudaError_t run_atomics(int blocks, int threads, const float* values, int* icounter, float* fsum, int* imax,
                        int* imin, unsigned* cas_counter, int* exch_last) {
  return mla_launch(atomics_kernel, "atomics_kernel", dim3(blocks), dim3(threads), 0, nullptr, values, icounter,
                    fsum, imax, imin, cas_counter, exch_last);
}

// ----------------------------------------------------------------------------------------------------------------
// Two threads per row (one 16-byte chunk each); rows in two commit groups (first half, second half).
__global__ void cp_async_kernel(const float* in, int rows, int valid_rows, float* out) {
  MLA_DYNAMIC_SHARED(float, smem);
  const int tid = threadIdx.x;
  const int row = tid / 2, chunk = tid % 2;
  const int half = rows / 2;
  // group 0: rows [0, half); group 1: rows [half, rows)
  for (int g = 0; g < 2; ++g) {
    const bool mine = g == 0 ? row < half : row >= half;
    if (mine) {
      const bool valid = row < valid_rows;
      const float* src = in + (valid ? row : 0) * 8 + chunk * 4;
      cp_async_16_zfill(smem + row * 8 + chunk * 4, src, valid ? 16u : 0u);
    }
    cp_async_commit();
  }
  cp_async_wait<1>();  // group 0 done (this thread's), group 1 may be pending
  __syncthreads();
  cp_async_wait<0>();
  __syncthreads();
  for (int k = 0; k < 4; ++k) st_global(out + row * 8 + chunk * 4 + k, smem[row * 8 + chunk * 4 + k]);
}

cudaError_t run_cp_async(const float* in, int rows, int valid_rows, float* out) {
  return mla_launch(cp_async_kernel, "cp_async_kernel", dim3(1), dim3(2 * rows), rows * 8 * sizeof(float), nullptr,
                    in, rows, valid_rows, out);
}

// ----------------------------------------------------------------------------------------------------------------
// A 2-stage cp.async pipeline over `tiles` tiles of 512 floats (one block of 128 threads, a 16-byte chunk each):
// while tile `it` is consumed from one stage, tile it+1 streams into the other. Consuming: in step k every thread
// reads a float from warp k's chunks, adds its neighbour lane's (a warp collective between the reads, as ldmatrix /
// mma are in the real kernels) and folds it into its accumulator. The trailing __syncthreads() is what keeps the
// next iteration's cp.async (into the stage just read) from landing while slower warps still read that stage;
// TrailingSync = false is the deliberately wrong version (run_bad_cp_async_pipeline_war).
template <bool TrailingSync>
__global__ void __launch_bounds__(128) cp_async_pipeline_kernel(const float* in, int tiles, float* out) {
  __shared__ __align__(16) float stage[2][512];
  const int t = threadIdx.x;
  // One block, and threadIdx is the only access to the emulator's thread context in this kernel: in it, g++ 12 -O3
  // with -fsanitize=undefined drops the null test of a second access to that thread_local (reported as "member
  // access within null pointer of type 'struct ThreadCtx'").
  const float* src = in;
  cp_async_16(&stage[0][4 * t], src + 4 * t);
  cp_async_commit();
  float acc = 0.f;
  for (int it = 0; it < tiles; ++it) {
    if (it + 1 < tiles) cp_async_16(&stage[(it + 1) % 2][4 * t], src + (it + 1) * 512 + 4 * t);
    cp_async_commit();
    cp_async_wait<1>();  // this thread's chunk of tile `it` has landed
    __syncthreads();     // … and every other thread's
    const float* tile = stage[it % 2];
    for (int k = 0; k < 4; ++k) {
      float v = tile[k * 128 + (t * 37 + it) % 128];
      v += __shfl_xor_sync(0xffffffffu, v, 1);
      acc = acc * 0.5f + v;
    }
    if (TrailingSync) __syncthreads();  // the stage just read is the target of the next iteration's cp.async
  }
  cp_async_wait<0>();
  out[t] = acc;  // (plain store: see `src` above)
}

cudaError_t run_cp_async_pipeline(const float* in, int tiles, float* out) {
  return mla_launch(cp_async_pipeline_kernel<true>, "cp_async_pipeline_kernel", dim3(1), dim3(128), 0, nullptr, in,
                    tiles, out);
}

// ----------------------------------------------------------------------------------------------------------------
// Block reduction of a 1024-element chunk per block: per-thread partial sums, warp shuffle tree, warp partials in
// static shared memory, the first warp finishes.
template <int Threads>
__global__ void __launch_bounds__(Threads) block_reduce_kernel(const float* in, int n, float* out) {
  __shared__ float warp_sums[Threads / 32];
  const int tid = threadIdx.x;
  const int base = blockIdx.x * 1024;
  float s = 0.f;
  for (int i = tid; i < 1024; i += Threads)
    if (base + i < n) s += ld_global_nc(in + base + i);
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (tid % 32 == 0) warp_sums[tid / 32] = s;
  __syncthreads();
  if (tid < 32) {
    float w = tid < Threads / 32 ? warp_sums[tid] : 0.f;
    for (int off = 16; off > 0; off >>= 1) w += __shfl_down_sync(0xffffffffu, w, off);
    if (tid == 0) st_global(out + blockIdx.x, w);
  }
}

cudaError_t run_block_reduce(int threads, const float* in, int n, float* out) {
  const dim3 grid((n + 1023) / 1024);
  if (threads == 64) return mla_launch(block_reduce_kernel<64>, "block_reduce<64>", grid, dim3(64), 0, nullptr, in, n, out);
  if (threads == 128) return mla_launch(block_reduce_kernel<128>, "block_reduce<128>", grid, dim3(128), 0, nullptr, in, n, out);
  return mla_launch(block_reduce_kernel<256>, "block_reduce<256>", grid, dim3(256), 0, nullptr, in, n, out);
}

// ----------------------------------------------------------------------------------------------------------------
// n floats: the first (n/4)*4 through 16-byte vector loads/stores, the tail through scalar ones.
__global__ void traffic_copy_kernel(const float* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int nvec = n / 4;
  if (i < nvec) {
    uint4 v = ld_global_nc_16(in + 4 * i);
    float4 f;
    memcpy(&f, &v, 16);
    f.x *= 2.f; f.y *= 2.f; f.z *= 2.f; f.w *= 2.f;
    memcpy(&v, &f, 16);
    st_global_16(out + 4 * i, v);
  }
  const int t = 4 * nvec + i;
  if (i < n - 4 * nvec) st_global(out + t, 2.f * ld_global(in + t));
}

__global__ void onchip_counts_kernel(const uint8_t* in, float* out) {
  MLA_DYNAMIC_SHARED(uint8_t, smem);  // 2 KiB: [0, 1024) cp.async, [1024, 1280) floats
  float* f = reinterpret_cast<float*>(smem + 1024);
  const int t = threadIdx.x, warp = t / 32, lane = t % 32;
  cp_async_16(smem + 16 * t, in + 16 * t);  // 64 threads x 16 bytes
  cp_async_wait_all();
  st_shared(f + t, static_cast<float>(t));
  __syncthreads();
  uint32_t r[4];
  if (warp == 0) ldmatrix_x4(r, smem + 16 * (lane % 32));  // 4 matrices, rows 16 bytes apart: one pass each
  else ldmatrix_x1(r[0], smem + 128 * (lane % 8));          // 8 rows 128 bytes apart, one bank group: 8 passes
  const float v = ld_shared(f + (63 - t));
  float d[4] = {0.f, 0.f, 0.f, 0.f};
  const uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  for (int i = 0; i < (warp == 0 ? 2 : 1); ++i) mma_m16n8k16_bf16(d, a, b, d);
  __syncthreads();
  st_global(out + blockIdx.x * 64 + t, v + d[0]);
}

cudaError_t run_onchip_counts(const uint8_t* in, float* out) {
  return mla_launch(onchip_counts_kernel, "onchip_counts_kernel", dim3(2), dim3(64), 2048, nullptr, in, out);
}

cudaError_t run_traffic_copy(const float* in, float* out, int n) {
  const int threads = 64;
  const int blocks = (n / 4 + threads) / threads + 1;
  return mla_launch(traffic_copy_kernel, "traffic_copy_kernel", dim3(blocks), dim3(threads), 0, nullptr, in, out, n);
}

__global__ void syncthreads_count_kernel(const int* pred, int* out) {
  const int p = ld_global(pred + threadIdx.x);
  const int c = __syncthreads_count(p);
  const int a = __syncthreads_and(p);
  const int o = __syncthreads_or(p);
  if (threadIdx.x == 0) {
    st_global(out + 0, c);
    st_global(out + 1, a);
    st_global(out + 2, o);
  }
}

cudaError_t run_syncthreads_count(int threads, const int* pred, int* out) {
  return mla_launch(syncthreads_count_kernel, "syncthreads_count_kernel", dim3(1), dim3(threads), 0, nullptr, pred, out);
}

__global__ void shfl_after_exit_kernel(int live_lanes, const int* in, int* out) {
  const int lane = threadIdx.x % 32;
  if (lane >= live_lanes) return;
  const int v = ld_global(in + threadIdx.x);
  // Lanes past live_lanes have exited: a full-mask shuffle among the remaining lanes must still complete.
  const int r = __shfl_sync(0xffffffffu, v, 0);
  __syncwarp();
  st_global(out + threadIdx.x, r);
}

cudaError_t run_shfl_after_exit(int live_lanes, const int* in, int* out) {
  return mla_launch(shfl_after_exit_kernel, "shfl_after_exit_kernel", dim3(1), dim3(64), 0, nullptr, live_lanes, in, out);
}

__global__ void barrier_loop_kernel(int iters, int* out) {
  __shared__ int s[1024];
  int acc = 0;
  for (int it = 0; it < iters; ++it) {
    s[threadIdx.x] = it + threadIdx.x;
    __syncthreads();
    acc += s[(threadIdx.x + 1) % blockDim.x];
    __syncthreads();
  }
  st_global(out + blockIdx.x * blockDim.x + threadIdx.x, acc);
}

cudaError_t run_barrier_loop(int blocks, int threads, int iters, int* out) {
  return mla_launch(barrier_loop_kernel, "barrier_loop_kernel", dim3(blocks), dim3(threads), 0, nullptr, iters, out);
}

// ----------------------------------------------------------------------------------------------------------------
// Deliberately wrong kernels.

// (1) The __syncthreads between the increment and the neighbour's read is missing.
__global__ void bad_missing_sync_kernel(const float* in, float* out) {
  __shared__ float s[256];
  const int t = threadIdx.x, n = blockDim.x;
  s[t] = ld_global(in + t);
  __syncthreads();
  s[t] = s[t] + 1.0f;
  // __syncthreads();   <- missing
  st_global(out + t, s[(t + 1) % n]);
}

cudaError_t run_bad_missing_sync(const float* in, float* out, int threads) {
  return mla_launch(bad_missing_sync_kernel, "bad_missing_sync_kernel", dim3(1), dim3(threads), 0, nullptr, in, out);
}

// (2) One element past the end.
__global__ void bad_oob_write_kernel(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) st_global(out + i, 1.0f);  // should be i < n
}

cudaError_t run_bad_oob_write(float* out, int n) {
  return mla_launch(bad_oob_write_kernel, "bad_oob_write_kernel", dim3((n + 64) / 64), dim3(64), 0, nullptr, out, n);
}

__global__ void bad_oob_read_kernel(const float* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) st_global(out + i, ld_global(in + i + 1));  // reads in[n]
}

cudaError_t run_bad_oob_read(const float* in, float* out, int n) {
  return mla_launch(bad_oob_read_kernel, "bad_oob_read_kernel", dim3((n + 63) / 64), dim3(64), 0, nullptr, in, out, n);
}

__global__ void bad_oob_dynamic_shared_kernel(float* out, int n) {
  MLA_DYNAMIC_SHARED(float, smem);
  const int t = threadIdx.x;
  smem[t + 1] = static_cast<float>(t);  // the last thread writes smem[n], past the n floats requested
  __syncthreads();
  if (t < n) st_global(out + t, smem[t]);
}

cudaError_t run_bad_oob_dynamic_shared(float* out, int n) {
  return mla_launch(bad_oob_dynamic_shared_kernel, "bad_oob_dynamic_shared_kernel", dim3(1), dim3(n),
                    n * sizeof(float), nullptr, out, n);
}

// (3) Only the first half of the shared buffer is written, every thread reads its own slot.
__global__ void bad_uninit_static_kernel(const float* in, float* out) {
  __shared__ float s[256];
  const int t = threadIdx.x;
  if (t < static_cast<int>(blockDim.x) / 2) s[t] = ld_global(in + t);
  __syncthreads();
  st_global(out + t, s[t]);
}

cudaError_t run_bad_uninit_static(const float* in, float* out, int threads) {
  return mla_launch(bad_uninit_static_kernel, "bad_uninit_static_kernel", dim3(1), dim3(threads), 0, nullptr, in, out);
}

template <int N>
__global__ void bad_uninit_static_template_kernel(const float* in, float* out) {
  __shared__ __nv_bfloat16 s[N];
  const int t = threadIdx.x;
  if (t % 2 == 0) s[t] = __float2bfloat16(ld_global(in + t));
  __syncthreads();
  st_global(out + t, __bfloat162float(s[t]));
}

cudaError_t run_bad_uninit_static_template(const float* in, float* out) {
  return mla_launch(bad_uninit_static_template_kernel<64>, "bad_uninit_static_template_kernel<64>", dim3(1),
                    dim3(64), 0, nullptr, in, out);
}

__global__ void bad_uninit_dynamic_kernel(const float* in, float* out) {
  MLA_DYNAMIC_SHARED(__half, s);
  const int t = threadIdx.x;
  if (t != 3) s[t] = __float2half(ld_global(in + t));
  __syncthreads();
  st_global(out + t, __half2float(s[t]));
}

cudaError_t run_bad_uninit_dynamic(const float* in, float* out, int threads) {
  return mla_launch(bad_uninit_dynamic_kernel, "bad_uninit_dynamic_kernel", dim3(1), dim3(threads),
                    threads * sizeof(__half), nullptr, in, out);
}

__global__ void bad_uninit_other_block_kernel(const float* in, float* out) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  if (blockIdx.x == 0) s[t] = ld_global(in + t);  // later blocks rely on block 0's shared memory: wrong
  __syncthreads();
  st_global(out + blockIdx.x * 64 + t, s[t]);
}

cudaError_t run_bad_uninit_other_block(const float* in, float* out, int blocks) {
  return mla_launch(bad_uninit_other_block_kernel, "bad_uninit_other_block_kernel", dim3(blocks), dim3(64), 0,
                    nullptr, in, out);
}

// (4) Lanes 0-15 of warp 0 wait at the block barrier, lanes 16-31 in a full-warp shuffle: neither completes.
__global__ void bad_barrier_deadlock_kernel(int* out) {
  const int t = threadIdx.x;
  int v = t;
  if (t < 16) {
    __syncthreads();
  } else {
    v = __shfl_sync(0xffffffffu, v, 0);
    __syncthreads();
  }
  st_global(out + t, v);
}

cudaError_t run_bad_barrier_deadlock(int* out) {
  return mla_launch(bad_barrier_deadlock_kernel, "bad_barrier_deadlock_kernel", dim3(1), dim3(64), 0, nullptr, out);
}

__global__ void bad_early_exit_kernel(int* out) {
  __shared__ int s[256];
  const int t = threadIdx.x;
  if (t >= 32) return;  // the other threads wait at a barrier these never reach
  s[t] = t;
  __syncthreads();
  st_global(out + t, s[(t + 1) % 32]);
}

cudaError_t run_bad_early_exit(int* out, int threads) {
  return mla_launch(bad_early_exit_kernel, "bad_early_exit_kernel", dim3(1), dim3(threads), 0, nullptr, out);
}

// (5) The shared tile is read before cp_async_wait.
__global__ void bad_cp_async_no_wait_kernel(const float* in, float* out) {
  __shared__ __align__(16) float s[32 * 4];
  const int t = threadIdx.x;
  cp_async_16(&s[4 * t], in + 4 * t);
  cp_async_commit();
  // cp_async_wait<0>(); __syncthreads();   <- missing
  for (int k = 0; k < 4; ++k) st_global(out + 4 * t + k, s[4 * t + k]);
  cp_async_wait<0>();
}

cudaError_t run_bad_cp_async_no_wait(const float* in, float* out) {
  return mla_launch(bad_cp_async_no_wait_kernel, "bad_cp_async_no_wait_kernel", dim3(1), dim3(32), 0, nullptr, in, out);
}

// (6) The 2-stage cp.async pipeline without its trailing __syncthreads(): a warp that finishes reading a stage
// issues the cp.async of tile it+2 into it while other warps may still be reading it (write-after-read race).
cudaError_t run_bad_cp_async_pipeline_war(const float* in, int tiles, float* out) {
  return mla_launch(cp_async_pipeline_kernel<false>, "bad_cp_async_pipeline_war_kernel", dim3(1), dim3(128), 0,
                    nullptr, in, tiles, out);
}

__global__ void bad_shfl_mask_kernel(int* out) {
  const int t = threadIdx.x;
  // Lane 5 passes a mask without its own bit.
  const unsigned mask = t == 5 ? 0xffffffdfu : 0xffffffffu;
  st_global(out + t, __shfl_sync(mask, t, 0));
}

cudaError_t run_bad_shfl_mask(int* out) {
  return mla_launch(bad_shfl_mask_kernel, "bad_shfl_mask_kernel", dim3(1), dim3(32), 0, nullptr, out);
}

__global__ void bad_ldmatrix_global_kernel(const uint16_t* g, uint32_t* out) {
  uint32_t d;
  ldmatrix_x1(d, g + (threadIdx.x % 8) * 8);  // a global pointer: not shared memory
  st_global(out + threadIdx.x, d);
}

cudaError_t run_bad_ldmatrix_global(const uint16_t* g, uint32_t* out) {
  return mla_launch(bad_ldmatrix_global_kernel, "bad_ldmatrix_global_kernel", dim3(1), dim3(32), 0, nullptr, g, out);
}

}  // namespace mla_selftest
