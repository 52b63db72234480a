/**
 * Multi-head Latent Attention (the attention of DeepSeek-V2/V3/R1/V3.2) for Node.js: tensors on the CPU or a GPU, streams
 * and captured graphs, and the operations of an MLA layer — the paged latent-cache append, the absorbed decode, the
 * per-head absorb and unabsorb products. The guide is docs/README.md in the package.
 * @module mla-kernels
 */
export { MlaError, ERROR_CODES, type ErrorCode } from './errors.js';
export { DTYPE_SIZES, DS_MLA_TILE, dsMlaRowBytes, type DType, type FloatDType, type LatentCacheDType, type StorageOf } from './dtypes.js';
export {
  toBf16Bits,
  fromBf16Bits,
  toF16Bits,
  fromF16Bits,
  toBf16Array,
  toF16Array,
  bf16ToFloat32,
  f16ToFloat32,
  toFp8E4M3Bits,
  fromFp8E4M3Bits,
  toFp8E4M3Array,
  fp8E4M3ToFloat32,
} from './half.js';
export type { AddonBuild, CudaDeviceInfo, CudaInfo } from './info.js';
export { backends, defaultBackend, defaultDevice, memoryStats, type BackendName, type BackendInfo, type DeviceName } from './device.js';
export { Tensor, type AllocateOptions, type ScaleOption } from './tensor.js';
export { Stream, Graph, defaultStream } from './stream.js';
export {
  appendLatentCache,
  mlaDecode,
  absorbQuery,
  unabsorbOutput,
  planDecode,
  DecodePlan,
  type PlanDecodeOptions,
  type AppendLatentCacheOptions,
  type MlaDecodeOptions,
  type MlaDecodeResult,
  type AbsorbQueryOptions,
  type UnabsorbOutputOptions,
  type RopeOptions,
  type StreamOptions,
  type LatentAttentionOptions,
} from './ops.js';
export {
  mlaPrefill,
  planPrefill,
  PrefillPlan,
  gatherLatentCache,
  upProjectKv,
  mergeAttentionStates,
  type MlaPrefillOptions,
  type MlaPrefillResult,
  type PlanPrefillOptions,
  type GatherLatentCacheOptions,
  type GatheredDType,
  type UpProjectKvOptions,
  type MergeAttentionStatesOptions,
} from './prefill.js';
export {
  mlaSparseDecode,
  mlaSparsePrefill,
  appendIndexerCache,
  lightningIndexer,
  type MlaSparseDecodeOptions,
  type MlaSparsePrefillOptions,
  type MlaSparsePrefillResult,
  type AppendIndexerCacheOptions,
  type LightningIndexerOptions,
  type LightningIndexerResult,
} from './sparse.js';
export { info, type Info } from './info.js';
