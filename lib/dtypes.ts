/** Element types. The C++ table is csrc/core/dtype.h; a test checks the two agree. */
export type DType = 'f32' | 'f16' | 'bf16' | 'i32';
export type FloatDType = 'f32' | 'f16' | 'bf16';

/** Bytes per element. */
export const DTYPE_SIZES: Readonly<Record<DType, number>> = { f32: 4, f16: 2, bf16: 2, i32: 4 };

/** @internal Each dtype's number in tensor descriptors (csrc/core/dtype.h's DType). */
export const DTYPE_CODES: Readonly<Record<DType, number>> = { f32: 0, f16: 1, bf16: 2, i32: 3 };

/** The TypedArray that holds a dtype's elements: bf16 and f16 are raw 16-bit patterns in a Uint16Array. */
export type StorageOf<D extends DType> = D extends 'f32' ? Float32Array : D extends 'i32' ? Int32Array : Uint16Array;
export type Storage = Float32Array | Int32Array | Uint16Array;

export const STORAGE_CLASS: Readonly<Record<DType, new (n: number) => Storage>> = {
  f32: Float32Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  i32: Int32Array,
};

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZES, x);
}
