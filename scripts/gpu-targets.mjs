// The CUDA target architectures and, for the GPU performance model (scripts/model-gpu.mjs), one representative GPU of
// each with its published limits. check-cuda.mjs takes the shared-memory limits from here. Every figure names its
// source; a figure derived from others says how; what no vendor publishes is in MODEL_ASSUMPTIONS, labelled as such.
//
// Sources:
//   [guide]   CUDA C++ Programming Guide, "Technical Specifications per Compute Capability" (shared memory per SM and
//             per block, threads per SM) and "Shared Memory" (32 banks, each 32 bits wide per clock: 128 B/clock/SM),
//             "Arithmetic Instructions" throughput table (32-bit integer and logical operations: 64 per clock per SM).
//   [a100]    NVIDIA A100 Tensor Core GPU datasheet (SXM4 80 GB: 2,039 GB/s, BF16 312 TFLOPS dense) and the Ampere
//             GA100 whitepaper (108 SMs, 1410 MHz boost).
//   [a10]     NVIDIA A10 datasheet (600 GB/s, BF16 125 TFLOPS dense, 72 SMs) and the Ampere GA102 whitepaper (1695 MHz).
//   [l40s]    NVIDIA L40S datasheet (864 GB/s, BF16 362.05 TFLOPS dense, 142 SMs, 2520 MHz boost).
//   [h100]    NVIDIA H100 datasheet (SXM5: 3.35 TB/s, BF16 989.4 TFLOPS dense) and the Hopper whitepaper (132 SMs;
//             1024 dense FP16/BF16 FMA per clock per SM, so 989.4 TFLOPS is 1830 MHz).
//   [b200]    NVIDIA HGX B200 datasheet (8 TB/s and 4.5 PFLOPS sparse = 2.25 dense BF16 per GPU; 148 SMs from the
//             Blackwell architecture technical brief); the clock is what 2.25 PFLOPS gives at 8192 FLOP per clock per SM.
//   [rtx5090] NVIDIA RTX Blackwell GPU architecture whitepaper, GeForce RTX 5090 (170 SMs, 2407 MHz boost,
//             1,792 GB/s, FP16/BF16 tensor with FP32 accumulate 209.5 TFLOPS dense).
//   [flashmla] FlashMLA README (dense decoding: 3000 GB/s memory-bound, 660 TFLOPS compute-bound, H800 SXM5, CUDA
//             12.8) and its docs/20250422-new-kernel-deep-dive.md (H800: 3.35 TB/s, throttled to ~1600 MHz).

// Per-block opt-in shared memory [guide], by compute capability (also the ones built for but not modelled).
export const SMEM_OPTIN = { 80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 103: 232448, 120: 101376 };

// One GPU per target. mmaClk: clocks per SM for one mma.sync.m16n8k16 with fp32 accumulate (4096 FLOP), from the
// dense BF16 peak: 4096 * SMs * clock / peak. On sm_90 and sm_100 that peak is wgmma's / tcgen05's, which mma.sync
// does not reach: their mmaClk is MODEL_ASSUMPTIONS.mmaSyncClkHopper.
export const GPU_TARGETS = {
  80: { gpu: 'A100 SXM4 80GB', sms: 108, clockMHz: 1410, hbmGBps: 2039, bf16DenseTflops: 312, smemPerSm: 167936, threadsPerSm: 2048, sources: '[a100] [guide]' },
  86: { gpu: 'A10', sms: 72, clockMHz: 1695, hbmGBps: 600, bf16DenseTflops: 125, smemPerSm: 102400, threadsPerSm: 1536, sources: '[a10] [guide]' },
  89: { gpu: 'L40S', sms: 142, clockMHz: 2520, hbmGBps: 864, bf16DenseTflops: 362.05, smemPerSm: 102400, threadsPerSm: 1536, sources: '[l40s] [guide]' },
  90: { gpu: 'H100 SXM5', sms: 132, clockMHz: 1830, hbmGBps: 3350, bf16DenseTflops: 989.4, smemPerSm: 233472, threadsPerSm: 2048, peakIsWgmma: true, sources: '[h100] [guide]' },
  100: { gpu: 'B200', sms: 148, clockMHz: 1856, hbmGBps: 8000, bf16DenseTflops: 2250, smemPerSm: 233472, threadsPerSm: 2048, peakIsWgmma: true, sources: '[b200] [guide]' },
  120: { gpu: 'GeForce RTX 5090', sms: 170, clockMHz: 2407, hbmGBps: 1792, bf16DenseTflops: 209.5, smemPerSm: 102400, threadsPerSm: 1536, sources: '[rtx5090] [guide]' },
};
for (const [arch, t] of Object.entries(GPU_TARGETS)) {
  t.arch = Number(arch);
  t.smemOptin = SMEM_OPTIN[arch];
}

// Limits every target shares [guide].
export const COMMON_LIMITS = {
  smemBytesPerClk: 128, // 32 banks x 4 bytes per clock per SM
  smsp: 4, // sub-partitions (schedulers, tensor cores) per SM
  aluPerClk: 64, // 32-bit integer / logical operations per clock per SM (the software fp8 decode)
  reservedSmemPerBlock: 1024, // shared memory the system reserves per resident block
};

// What no vendor publishes, chosen and labelled here so the first measurement can correct it (bench:gpu prints
// measured beside modelled).
export const MODEL_ASSUMPTIONS = {
  hbmEfficiency: 0.9, // sustained / peak HBM bandwidth: FlashMLA's published 3000 GB/s of the H800's 3.35 TB/s [flashmla]
  memLatencyNs: 600, // a loaded HBM round trip: a CTA keeps (stages - 1) tiles in flight over this
  phaseLatencyClk: 80, // each barrier interval ends with a drain: the last mma / ldmatrix results (~30 clocks) and the barrier
  mmaSyncClkHopper: 1.5, // mma.sync m16n8k16 on sm_90 / sm_100: 2/3 of the wgmma rate per SM (issue 23's figure)
  mmaLatencyClk: 32, // from issuing an mma.sync m16n8k16 (fp32 accumulate) to its result being usable by the next mma of a chain
  kernelGapUs: 1.5, // between two dependent kernels on one stream: the drain of the first and the launch of the second
  kernelGapPdlUs: 0.3, // the same with programmatic dependent launch (the second's launch overlaps the first's tail)
  // fp8 decode, in integer-operation slots (64 per clock per SM) per value: 'bitwise' (fp8x4ToElem): per pair a byte
  // permute and three integer operations (2 per value) and a b16x2 multiply at twice that rate (0.25 per value);
  // 'software', the decode before: 209 PTX instructions per 16 bytes (issue 23's count); 'cvt' (the dense decode on
  // sm_89+): one cvt.rn.f16x2.e4m3x2 per pair, whose rate no vendor publishes, taken as the guide's 16 per clock per SM
  // for conversions not listed otherwise (4 slots per pair, 2 per value).
  fp8DecodeInstrPerValue: { bitwise: 2.25, software: 13, cvt: 2 },
  // Values a byte permute gathers into a cvt operand (V's pairs of tokens): one integer slot per pair.
  fp8PermuteInstrPerValue: 0.5,
  warpToSmsp: 'warp % 4', // how warps are spread over the sub-partitions
  l2Rereads: 'CTAs that read the same cache rows (other m-tiles of one split) run together: only the first read reaches HBM',
};

// FlashMLA's published dense-decode figures [flashmla] as fractions of the H800's limits, which make a roofline on any
// GPU: its bandwidth over the H800's peak (3000 of 3350 GB/s), and its FLOP rate over the H800's dense BF16 peak at
// the clock it ran at (660 of ~865 TFLOPS: 990 throttled to ~1600 MHz, per the deep-dive); on an H100 the latter is
// 660 TFLOPS per clock.
export const FLASHMLA = {
  gbps: 3000,
  tflops: 660,
  device: 'H800 SXM5',
  hbmGBps: 3350,
  throttledPeakTflops: 865,
  get bandwidthFraction() {
    return this.gbps / this.hbmGBps;
  },
  get computeFraction() {
    return this.tflops / this.throttledPeakTflops;
  },
};

// How the sparse decode turns an fp8 cache tile into bf16 / f16 (the same on every architecture): fp8x4ToElem's bit
// operations.
export function fp8DecodePath() {
  return 'bitwise';
}
// How the dense decode (decode.cu) does: the same on sm_80 / sm_86; on sm_89+ cvt.rn.f16x2.e4m3x2 in registers.
export function denseFp8DecodePath(arch) {
  return arch >= 89 ? 'cvt' : 'bitwise';
}

// The clocks per SM of one mma.sync m16n8k16 (4096 FLOP) on a target.
export function mmaClkPerSm(t) {
  if (t.peakIsWgmma) return MODEL_ASSUMPTIONS.mmaSyncClkHopper;
  return (4096 * t.sms * t.clockMHz * 1e6) / (t.bf16DenseTflops * 1e12);
}
