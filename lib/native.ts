// Loads the addon: MLA_ADDON_PATH when set (tests point it at one build), else node-gyp-build, which takes
// prebuilds/<platform>-<arch>/ first and build/Release/ next. Loaded on first use, so importing the package
// never fails; the first operation says what is missing.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MlaError, type ErrorCode } from './errors.js';

const require = createRequire(import.meta.url);

/** The package's root folder (one up from lib/ or dist/). */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * A tensor as the addon receives it (csrc/addon/marshal.cc, toView): its memory (the TypedArray of a host tensor, the
 * NativeDeviceBuffer of a device tensor) and `meta`, [dtype, device kind, device index, ...shape] numbered as in
 * csrc/core (DTYPE_CODES, DEVICE_KINDS). Descriptors and params are arrays the addon reads by index: through N-API a
 * property read by name makes a new V8 string for the name each time, which was most of an operation's cost.
 */
export type TensorDescriptor = readonly [memory: Float32Array | Int32Array | Uint16Array | Uint8Array | NativeDeviceBuffer, meta: Int32Array];

// Each operation's params, in the order the addon reads them (the arg:: indices of its csrc/addon/op_*.cc). Outputs
// come last: outputShapes takes the inputs alone. The addon keeps the params array of a queued operation (and through
// it every tensor's memory) alive until the operation completes: it must not be changed after the call.
type T = TensorDescriptor;
export type CopyParams = readonly [src: T, dst: T];
export type AppendParams = readonly [cache: T, kvC: T, kPe: T, slotMapping: T, cacheScale: number, ropeStyle?: string, positions?: T, cos?: T, sin?: T];
export type DecodeInputs = readonly [q: T, cache: T, blockTable: T, seqLens: T, softmaxScale: number, kvLoraRank: number, cacheScale: number, causal: boolean, plan: unknown];
export type DecodeParams = readonly [...DecodeInputs, out: T, lse: T];
export type AbsorbInputs = readonly [qNope: T, wUk: T, qPe: T | undefined];
export type AbsorbParams = readonly [...AbsorbInputs, out: T];
export type UnabsorbInputs = readonly [oLat: T, wUv: T];
export type UnabsorbParams = readonly [...UnabsorbInputs, out: T];
export type PlanParams = readonly [seqLens: T, numHeads: number, queryLen: number, batchInvariant: boolean];
export type PrefillInputs = readonly [q: T, kNope: T, kPe: T, v: T, cuSeqLensQ: T, cuSeqLensKv: T, softmaxScale: number, causal: boolean, plan: unknown];
export type PrefillParams = readonly [...PrefillInputs, out: T, lse: T];
/** numRows: the outputs' rows to allocate, -1 for cuSeqLens[batch]. */
export type GatherInputs = readonly [cache: T, blockTable: T, cuSeqLens: T, seqStarts: T | undefined, kvLoraRank: number, cacheScale: number, numRows: number];
export type GatherParams = readonly [...GatherInputs, kvC: T, kPe: T];
export type UpProjectInputs = readonly [kvC: T, wUk: T, wUv: T];
export type UpProjectParams = readonly [...UpProjectInputs, kNope: T, v: T];
export type MergeInputs = readonly [outA: T, lseA: T, outB: T, lseB: T];
export type MergeParams = readonly [...MergeInputs, out: T, lse: T];
export type PlanPrefillParams = readonly [cuSeqLensQ: T, cuSeqLensKv: T, numHeads: number, causal: boolean];
export type SparseDecodeInputs = readonly [q: T, cache: T, indices: T, softmaxScale: number, kvLoraRank: number, cacheScale: number, indicesInPlace: boolean];
export type SparseDecodeParams = readonly [...SparseDecodeInputs, out: T, lse: T];
export type SparsePrefillInputs = readonly [q: T, kv: T, indices: T, softmaxScale: number, kvLoraRank: number, indicesInPlace: boolean];
export type SparsePrefillParams = readonly [...SparsePrefillInputs, out: T, lse: T];
export type AppendIndexerParams = readonly [cache: T, scales: T | undefined, k: T, slotMapping: T];
export type IndexerInputs = readonly [q: T, weights: T, cache: T, scales: T | undefined, blockTable: T, seqLens: T, topk: number, causal: boolean];
export type IndexerParams = readonly [...IndexerInputs, indices: T, scores: T];
/** Writes on other streams an operation waits for: [native stream, ticket]; a negative ticket only orders (a rewrite), a positive one also passes its failure on (a read). */
export type After = [unknown, number][];

export interface NativeDeviceBuffer {
  release(): void;
}

export interface NativeStream {
  backend(): string;
  device(): string;
  dispose(): void;
  /** From now on the stream's operations are validated and recorded, not queued (they return ticket 0). */
  beginCapture(): void;
  /** Ends the capture: the recorded operations as a graph, or undefined when `keep` is false. */
  endCapture(keep: boolean): NativeGraph | undefined;
}

export interface NativeGraph {
  numOps(): number;
  dispose(): void;
}

export interface NativeBackendInfo {
  name: string;
  available: boolean;
  reason: string;
  devices: string[];
}

export interface NativeAddon {
  /** `device`: 'cuda-sim:1', or a backend name for its device 0. */
  NativeStream: new (device: string, onComplete: (ticket: number, code: string | null, message: string | null) => void) => NativeStream;
  NativeDeviceBuffer: new (device: string, bytes: number) => NativeDeviceBuffer;
  copy(stream: NativeStream, params: CopyParams, after?: After): number;
  memoryStats(device: string): { bytesInUse: number; peakBytes: number };
  appendLatentCache(stream: NativeStream, params: AppendParams, after?: After): number;
  mlaDecode(stream: NativeStream, params: DecodeParams, after?: After): number;
  absorbQuery(stream: NativeStream, params: AbsorbParams, after?: After): number;
  unabsorbOutput(stream: NativeStream, params: UnabsorbParams, after?: After): number;
  outputShapes(op: 'mlaDecode', inputs: DecodeInputs): { out: number[]; lse: number[] };
  outputShapes(op: 'absorbQuery', inputs: AbsorbInputs): { out: number[] };
  outputShapes(op: 'unabsorbOutput', inputs: UnabsorbInputs): { out: number[] };
  planDecode(stream: NativeStream, params: PlanParams): { handle: unknown; numWorkItems: number; numSplitSequences: number };
  mlaPrefill(stream: NativeStream, params: PrefillParams, after?: After): number;
  gatherLatentCache(stream: NativeStream, params: GatherParams, after?: After): number;
  upProjectKv(stream: NativeStream, params: UpProjectParams, after?: After): number;
  mergeAttentionStates(stream: NativeStream, params: MergeParams, after?: After): number;
  outputShapes(op: 'mlaPrefill', inputs: PrefillInputs): { out: number[]; lse: number[] };
  outputShapes(op: 'gatherLatentCache', inputs: GatherInputs): { kvC: number[]; kPe: number[] };
  outputShapes(op: 'upProjectKv', inputs: UpProjectInputs): { kNope: number[]; v: number[] };
  outputShapes(op: 'mergeAttentionStates', inputs: MergeInputs): { out: number[]; lse: number[] };
  planPrefill(stream: NativeStream, params: PlanPrefillParams): { handle: unknown; numWorkItems: number };
  mlaSparseDecode(stream: NativeStream, params: SparseDecodeParams, after?: After): number;
  mlaSparsePrefill(stream: NativeStream, params: SparsePrefillParams, after?: After): number;
  appendIndexerCache(stream: NativeStream, params: AppendIndexerParams, after?: After): number;
  lightningIndexer(stream: NativeStream, params: IndexerParams, after?: After): number;
  outputShapes(op: 'mlaSparseDecode', inputs: SparseDecodeInputs): { out: number[]; lse: number[] };
  outputShapes(op: 'mlaSparsePrefill', inputs: SparsePrefillInputs): { out: number[]; lse: number[] };
  outputShapes(op: 'lightningIndexer', inputs: IndexerInputs): { indices: number[]; scores: number[] };
  /** Validates the graph's operations against their index arrays as they are now and queues them as one operation. */
  replayGraph(stream: NativeStream, graph: NativeGraph, after?: After): number;
  backends(): NativeBackendInfo[];
  facts(): { dtypeSizes: Record<string, number>; dtypeCodes: Record<string, number>; deviceKinds: Record<string, number>; errorCodes: string[]; maxDims: number; napiVersion: number; dsMlaTile: number };
  setErrorClass(cls: new (code: ErrorCode, message: string) => MlaError): void;
  /** The argument interface this addon was built for (kInterface in csrc/addon/marshal.h). */
  interface: number;
  // Each backend's own functions (its hooks(), csrc/core/backend.h), present when the build has the backend.
  /** What the CPU backend chose for this processor. */
  cpuInfo(): NativeCpuInfo;
  /**
   * Test and benchmark hooks of the CPU backend: force a SIMD path ('' = automatic), split-KV chunks of splitRows rows
   * (0 = automatic), or append's stores ('auto' = the size rule).
   */
  cpuConfigure(settings: { isa?: string; splitRows?: number; appendStores?: 'stream' | 'regular' | 'auto' }): void;
  /** The benchmark's machine limits on all the pool's threads, with a buffer of `bytes` (synchronous, ~1 s). */
  cpuLimits(bytes: number): { threads: number; readBytesPerSec: number; copyBytesPerSec: number; fmaFlops: number; bf16DotFlops: number };
  /** What the CUDA build and runtime found (builds with the CUDA backend). */
  cudaInfo?(): NativeCudaInfo;
  /** Test hooks of the cuda-sim backend (cmake-js builds with MLA_CUDA_SIM only). */
  simConfigure?(settings: SimSettings): void;
  simLastOp?(): SimOpRecord;
  decodeKernelShapes?(headDim: number): Record<string, { blockM: number; blockN: number; stages: number; threads: number; minBlocksPerSm: number; smemBytes: number; smemBytesFp8: number }>;
  prefillKernelShapes?(dims: { nopeDim: number; ropeDim: number; vHeadDim: number }): Record<'large' | 'small', { blockM: number; heads: number; blockN: number; stages: number; threads: number; smemBytes: number }>;
  /** The decode plan the CUDA backend makes on a device of that SM count and shared memory (the GPU performance model). */
  decodePlan?(shape: { queryLen: number; numHeads: number; seqLens: number[]; numSms: number; smemOptin: number; batchInvariant?: boolean; splitRows?: number }): SimDecodePlan;
  /** How the sparse decode splits each query's `rows` selected rows on a device of that SM count (the GPU performance model). */
  sparseDecodePlan?(shape: { numQueries: number; numHeads: number; kvLoraRank: number; rows: number; numSms: number; batchInvariant?: boolean; splitRows?: number }): { numSplits: number; splitRows: number };
}

export interface SimDecodePlan {
  config: string;
  blockM: number;
  blockN: number;
  numPartials: number;
  /** [batch, mTile, rowBegin, rowEnd, seqLen, partial] per CTA, in launch order. */
  work: [number, number, number, number, number, number][];
  /** [batch, mTile, firstPartial, numPartials] per split sequence and m-tile. */
  combine: [number, number, number, number][];
}

export interface NativeCpuInfo {
  /** The kernels in use, e.g. 'avx512-bf16', 'avx2-fma', 'portable'. */
  simd: string;
  threads: number;
  /** Why this path (detected, forced by MLA_CPU_ISA / cpuConfigure), every path this processor has, fastest first. */
  reason: string;
  supported: string[];
  fmaGflopsPerCore: number;
  bf16DotGflopsPerCore: number;
  /** How append writes cache rows (non-temporal or regular stores, from a one-time calibration per path, or forced) and why. */
  appendStores: string;
  /** Appends writing at least this many bytes use non-temporal stores (-1: none do). */
  streamAboveBytes: number;
}

export interface NativeCudaInfo {
  /** Architectures the kernels were compiled for, e.g. 'sm_80'. */
  targets: string[];
  /** cudaRuntimeGetVersion / cudaDriverGetVersion (e.g. 13000; driver 0 when there is none). */
  runtimeVersion: number;
  driverVersion: number;
  /** Every device the runtime sees, usable or not; computeCapability e.g. '9.0'. */
  devices: { index: number; name: string; computeCapability: string; totalMemory: number; usable: boolean; reason?: string }[];
  /** Why no device is usable (no driver, driver older than the runtime, no device), when none is. */
  reason?: string;
}

export interface SimSettings {
  /** Run every operation under forward, reverse and random thread orders and demand identical bits (default true). */
  checkOrders?: boolean;
  seed?: number;
  /** Decode tiles of the ~100 KB shared-memory GPUs (sm_86, sm_89, sm_120) instead of the large ones. */
  smallConfig?: boolean;
  numSms?: number;
  /** Force split-KV chunks of this many cache rows (0: the planner decides). */
  splitRows?: number;
  batchInvariant?: boolean;
  /** Device memory the emulated cudaMalloc hands out before failing with cudaErrorMemoryAllocation. */
  deviceMemoryBytes?: number;
  /** How many devices the emulated runtime has: cuda-sim:0 ... cuda-sim:(numDevices - 1) (default 2). */
  numDevices?: number;
  /** > 0: the shared memory a block may opt into (overrides smallConfig; e.g. 166912 for sm_80's decode tiles). */
  smemOptin?: number;
  /** >= 0: that block of every launch records its barrier intervals (SimLaunch.profile); -1: none (default). */
  profileBlock?: number;
  /** > 0: the emulated device's compute capability, e.g. 120 (0: one that has the shared memory configured). */
  computeCapability?: number;
}

/** What a launch did on chip, counted by the emulator through the warp_ops.cuh wrappers. */
export interface SimCounters {
  ldmatrixBytes: number;
  /** Shared-memory passes the ldmatrix loads need (one per 8x8 matrix when conflict-free). */
  ldmatrixWavefronts: number;
  sharedLoadBytes: number;
  sharedStoreBytes: number;
  /** Bytes cp.async wrote to shared memory (copied and zero-filled). */
  asyncCopyBytes: number;
  mma: number;
  /** fp8 values converted (per thread). */
  converted: number;
  /** Of them, values a byte permute gathered before a conversion instruction (per thread). */
  permuted: number;
  barriers: number;
}

/** One barrier interval of the profiled block. */
export interface SimPhase extends Omit<SimCounters, 'mma' | 'barriers'> {
  bytesRead: number;
  bytesWritten: number;
  /** mma.sync instructions of each warp of the block in this interval. */
  mmaPerWarp: number[];
  /** The longest chain of dependent mma.sync (each accumulating the previous one's result) of each warp. */
  mmaChainPerWarp: number[];
}

export interface SimLaunch {
  kernel: string;
  bytesRead: number;
  bytesWritten: number;
  fiberSwitches: number;
  grid: number[];
  threads: number;
  seconds: number;
  dynamicSmem: number;
  /** Launched with programmatic dependent launch (may overlap the previous kernel's end). */
  dependentLaunch: boolean;
  counters: SimCounters;
  profile: SimPhase[];
}

export interface SimOpRecord {
  op: string;
  bytesRead: number;
  bytesWritten: number;
  ordersChecked: number;
  /** cudaStreamSynchronize / cudaEventSynchronize calls the operation made (0: it only queued work). */
  hostSyncs: number;
  launches: SimLaunch[];
}

let loaded: { addon: NativeAddon; path: string } | null = null;

// The addon argument interface this library speaks (kInterface in csrc/addon/marshal.h, bumped together).
const ADDON_INTERFACE = 3;

function locate(): string {
  const explicit = process.env.MLA_ADDON_PATH;
  if (explicit) return path.resolve(explicit);
  const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
  return nodeGypBuild.path(packageRoot);
}

/** The addon, loaded on first call. Throws MlaError E_UNSUPPORTED when no build can be found or loaded. */
export function native(): NativeAddon {
  if (loaded) return loaded.addon;
  let file = '';
  try {
    file = locate();
    const addon = require(file) as NativeAddon;
    if (addon.interface !== ADDON_INTERFACE)
      throw new Error(`it was built from another version of mla-kernels (addon interface ${String(addon.interface ?? 'none')}, this library needs ${ADDON_INTERFACE}); rebuild it with npm run build:native`);
    addon.setErrorClass(MlaError);
    loaded = { addon, path: file };
    return addon;
  } catch (e) {
    throw new MlaError(
      'E_UNSUPPORTED',
      `the mla-kernels addon could not be loaded${file ? ` from ${file}` : ''}: ${(e as Error).message}. ` +
        'Reinstall the package (npm rebuild mla-kernels) so a prebuilt binary is used or the CPU addon is built from source.',
    );
  }
}

/** Path of the loaded addon file (loads it if needed). */
export function nativePath(): string {
  native();
  return loaded!.path;
}
