// Host-side launchers of the cuda-sim self-test kernels (selftest_kernels.cu). Pointers are device pointers
// (under emulation: ordinary host memory). Each returns the launch error (cudaSuccess under emulation, which
// throws cudasim::SimError instead).
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda_compat.cuh"

namespace mla_selftest {

// One warp: lane l reads its fragments a[4*l..], b[2*l..], c[4*l..], writes d[4*l..].
cudaError_t run_mma(bool f16, const uint32_t* a, const uint32_t* b, const float* c, float* d);
// One warp: A (16x16 row-major) and B (16x8, stored [k][n] row-major) through shared memory and ldmatrix x4 /
// x2.trans into mma fragments; D (16x8 row-major) written by fragment layout.
cudaError_t run_mma_ldmatrix_gemm(bool f16, const uint16_t* A, const uint16_t* B, float* D);
// One warp: `mats` holds 4 matrices of 8x8 b16 (row-major, 64 elements each); row_of_lane[l] is the row (0..7)
// lane l points at in its matrix. out[4*l + j] = register j of lane l.
cudaError_t run_ldmatrix(int count, bool trans, const uint16_t* mats, const int* row_of_lane, uint32_t* out);
// cvt.rn.f16x2.e4m3x2: thread i of n writes out[i] = the f16x2 of the two e4m3 bytes in[i] (low byte: low half).
cudaError_t run_cvt_e4m3x2(const uint16_t* in, uint32_t* out, int n);
// Shuffles: block of `threads`; lanes in `mask` (per warp) shuffle in[tid] with operand op[tid]; others write -1.
// mode: 0 idx, 1 up, 2 down, 3 xor.
cudaError_t run_shfl(int mode, int width, unsigned mask, int threads, const int* in, const int* op, int* out);
cudaError_t run_shfl_double(const double* in, double* out);  // one warp: out[l] = in[31 - l] (xor 31)
// Votes: lanes in mask (per warp) write ballot/any/all of pred[tid]; others write 0xdeadbeef.
cudaError_t run_vote(unsigned mask, int threads, const int* pred, unsigned* ballot, int* any, int* all);
// Atomics over `blocks` x `threads`: counters[0] += 1 (int), fsum += values, max/min of values, CAS-increment.
cudaError_t run_atomics(int blocks, int threads, const float* values, int* icounter, float* fsum, int* imax,
                        int* imin, unsigned* cas_counter, int* exch_last);
// cp.async: `rows` rows of 8 floats (32 bytes = two 16-byte chunks) copied through dynamic shared memory with
// two commit groups; rows >= valid_rows are zero-filled (src-size 0). Block of 2*rows threads.
cudaError_t run_cp_async(const float* in, int rows, int valid_rows, float* out);
// 2-stage cp.async pipeline (static shared memory, one block of 128 threads): consumes `in` as `tiles` tiles of 512
// floats; out[t] = thread t's accumulator (see the kernel for the formula).
cudaError_t run_cp_async_pipeline(const float* in, int tiles, float* out);
// Block reduction (static shared memory + warp shuffles), one block of `threads` per 1024-element chunk.
cudaError_t run_block_reduce(int threads, const float* in, int n, float* out);
// Copy with scaling through ld_global / st_global / 16-byte vector forms: reads exactly 4n bytes, writes 4n.
cudaError_t run_traffic_copy(const float* in, float* out, int n);
// Two blocks of two warps with known on-chip work (see the kernel): cp.async 1 KiB, st_shared / ld_shared 256 bytes
// each, one conflict-free ldmatrix x4 (warp 0) and one x1 whose 8 rows share a bank group (warp 1), 2 + 1 mma.
cudaError_t run_onchip_counts(const uint8_t* in, float* out);
// Block-wide predicate counts: out[0] = __syncthreads_count, out[1] = _and, out[2] = _or.
cudaError_t run_syncthreads_count(int threads, const int* pred, int* out);
// Lanes >= live_lanes of each warp exit at once; the others shuffle with the full mask (must not deadlock).
cudaError_t run_shfl_after_exit(int live_lanes, const int* in, int* out);
// Fiber switch benchmark: `threads` threads, `iters` barriers each, over `blocks` blocks.
cudaError_t run_barrier_loop(int blocks, int threads, int iters, int* out);

// --- deliberately wrong kernels (each must be caught by one check) ---
// (1) missing __syncthreads between a write and a neighbour's read of shared memory: order-dependent output.
cudaError_t run_bad_missing_sync(const float* in, float* out, int threads);
// (2) one element past the end of `out` (n elements): ASan heap-buffer-overflow.
cudaError_t run_bad_oob_write(float* out, int n);
cudaError_t run_bad_oob_read(const float* in, float* out, int n);
// (2b) one element past the dynamic shared memory: ASan heap-buffer-overflow.
cudaError_t run_bad_oob_dynamic_shared(float* out, int n);
// (3) reading shared memory nobody wrote: static (plain and template kernel) and dynamic; per block.
cudaError_t run_bad_uninit_static(const float* in, float* out, int threads);
cudaError_t run_bad_uninit_static_template(const float* in, float* out);  // 64 threads
cudaError_t run_bad_uninit_dynamic(const float* in, float* out, int threads);
cudaError_t run_bad_uninit_other_block(const float* in, float* out, int blocks);  // only block 0 writes
// (4) a barrier not reached by all live threads: half a warp at __syncthreads, the other half in a shuffle.
cudaError_t run_bad_barrier_deadlock(int* out);
// (4b) early exit while others wait at __syncthreads (an error only with strict barriers).
cudaError_t run_bad_early_exit(int* out, int threads);
// (5) reading a cp.async destination before cp_async_wait: sees the poison.
cudaError_t run_bad_cp_async_no_wait(const float* in, float* out);
// (6) the same 2-stage cp.async pipeline without its trailing __syncthreads (write-after-read race on a stage):
// order-dependent output once tiles >= 3.
cudaError_t run_bad_cp_async_pipeline_war(const float* in, int tiles, float* out);
// Misuse caught by the wrappers: a lane calling __shfl_sync with a mask that does not contain it.
cudaError_t run_bad_shfl_mask(int* out);
// ldmatrix from a global-memory pointer.
cudaError_t run_bad_ldmatrix_global(const uint16_t* g, uint32_t* out);

}  // namespace mla_selftest
