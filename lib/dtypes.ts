/** Element types. The C++ table is csrc/core/dtype.h; a test checks the two agree. */
export type DType = 'f32' | 'f16' | 'bf16' | 'i32' | 'fp8_e4m3' | 'fp8_ds_mla';
/** The types operations compute in. */
export type FloatDType = 'f32' | 'f16' | 'bf16';
/**
 * The types a latent cache may have: a float dtype; `fp8_e4m3` (OCP FP8 e4m3, PyTorch's `float8_e4m3fn`: largest
 * finite 448, no infinities) stored with a per-tensor scale (`cacheScale`); or `fp8_ds_mla`, whole tokens in
 * FlashMLA's DeepSeek-V3.2 layout (vLLM's `fp8_ds_mla`): each row is {@link dsMlaRowBytes} bytes, the latent as e4m3
 * with an fp32 scale per {@link DS_MLA_TILE} values, then the rope part as bf16 (656 bytes for 512 + 64; docs/sparse.md).
 */
export type LatentCacheDType = FloatDType | 'fp8_e4m3' | 'fp8_ds_mla';

/** The latent values sharing one fp32 scale in an `fp8_ds_mla` row (csrc/core/dtype.h's kDsMlaTile; a test checks they agree). */
export const DS_MLA_TILE = 128;

/** Bytes of one token's row of an `fp8_ds_mla` cache: kvLoraRank e4m3, 4 per {@link DS_MLA_TILE} of scales, 2 per rope value. */
export function dsMlaRowBytes(kvLoraRank: number, ropeDim: number): number {
  return kvLoraRank + 4 * Math.floor(kvLoraRank / DS_MLA_TILE) + 2 * ropeDim;
}

/** Bytes per element. */
export const DTYPE_SIZES: Readonly<Record<DType, number>> = { f32: 4, f16: 2, bf16: 2, i32: 4, fp8_e4m3: 1, fp8_ds_mla: 1 };

/** @internal Each dtype's number in tensor descriptors (csrc/core/dtype.h's DType). */
export const DTYPE_CODES: Readonly<Record<DType, number>> = { f32: 0, f16: 1, bf16: 2, i32: 3, fp8_e4m3: 4, fp8_ds_mla: 5 };

/** The TypedArray that holds a dtype's elements: bf16 and f16 are raw 16-bit patterns in a Uint16Array, fp8 bytes in a Uint8Array. */
export type StorageOf<D extends DType> = D extends 'f32' ? Float32Array : D extends 'i32' ? Int32Array : D extends 'fp8_e4m3' | 'fp8_ds_mla' ? Uint8Array : Uint16Array;
export type Storage = Float32Array | Int32Array | Uint16Array | Uint8Array;

export const STORAGE_CLASS: Readonly<Record<DType, new (n: number) => Storage>> = {
  f32: Float32Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  i32: Int32Array,
  fp8_e4m3: Uint8Array,
  fp8_ds_mla: Uint8Array,
};

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZES, x);
}
