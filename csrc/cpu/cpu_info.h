// The CPU backend (cpu_backend.cc) as cpu_provider.cc lists it: the backend, what it chose for this processor, its
// test hooks, and the machine-limit measurements of the benchmark (the hooks cpuInfo, cpuConfigure, cpuLimits).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mla {
class Backend;
}

namespace mla::cpu {

Backend& cpuBackend();

struct CpuStatus {
  std::string simd;                    // the kernels ops use now: avx512-bf16 | avx512 | avx2-fma | neon | portable
  std::string reason;                  // why (detected, forced by MLA_CPU_ISA or cpuConfigure, dot vs FMA speed)
  std::vector<std::string> supported;  // every path this processor can run, fastest first
  int threads = 1;                     // the pool's threads (MLA_NUM_THREADS overrides the core count)
  double fmaGflopsPerCore = 0, bf16DotGflopsPerCore = 0;  // the one-core calibration behind the automatic choice
  std::string appendStores;            // how append writes cache rows (the calibrated choice, or forced) and why
  int64_t streamAboveBytes = -1;       // appends writing at least this many bytes use non-temporal stores (-1: none)
};

CpuStatus cpuStatus();

// Test and benchmark hooks. isa: a path name forces it for every later op ("" returns to MLA_CPU_ISA / automatic);
// splitRows > 0 forces split-KV chunks of that many rows (0: automatic); appendStores "stream" or "regular" forces
// append's stores ("" or "auto": the size rule). Throws mla::Error for an unknown or unsupported path or store mode.
void cpuConfigure(const std::string* isa, const int64_t* splitRows, const std::string* appendStores = nullptr);

struct CpuLimits {
  int threads = 1;
  double readBytesPerSec = 0;   // a large buffer read by every thread
  double copyBytesPerSec = 0;   // memcpy, counting bytes read plus bytes written
  double fmaFlops = 0;          // fp32 FMA loop on every thread
  double bf16DotFlops = 0;      // vdpbf16ps loop on every thread (0 without AVX512_BF16)
};

// Measures the limits on all the pool's threads with a buffer of `bytes` (at least 64 MiB is sensible).
CpuLimits measureCpuLimits(size_t bytes);

}  // namespace mla::cpu
