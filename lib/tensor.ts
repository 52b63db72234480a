import { DTYPE_SIZES, STORAGE_CLASS, isDType, type DType, type Storage, type StorageOf } from './dtypes.js';
import { MlaError } from './errors.js';
import { bf16ToFloat32, f16ToFloat32, toBf16Array, toF16Array } from './half.js';
import type { TensorDescriptor } from './native.js';
import type { Stream } from './stream.js';

/** Where a tensor's memory lives. */
export type DeviceName = 'cpu';

const MAX_DIMS = 6;

function storageDType(data: unknown): DType | 'f16|bf16' | null {
  if (data instanceof Float32Array) return 'f32';
  if (data instanceof Int32Array) return 'i32';
  if (data instanceof Uint16Array) return 'f16|bf16';
  return null;
}

function checkShape(shape: unknown, what: string): number[] {
  if (!Array.isArray(shape) || shape.length > MAX_DIMS)
    throw new MlaError('E_SHAPE', `${what}: shape must be an array of at most ${MAX_DIMS} dimensions, got ${String(shape)}`);
  for (const d of shape)
    if (!Number.isInteger(d) || d < 0 || d > 0x7fffffff)
      throw new MlaError('E_SHAPE', `${what}: every dimension must be an integer >= 0, got [${shape.join(', ')}]`);
  return [...shape];
}

function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * A dense, row-major tensor. On the CPU its memory is a TypedArray (bf16 and f16 as 16-bit patterns in a
 * Uint16Array): {@link Tensor.from} wraps one without copying. Operations write tensors asynchronously on a
 * stream; {@link Tensor.read} waits for those writes. After {@link Tensor.dispose} (or the end of a `using`
 * block) any use is an `E_DISPOSED` error. CPU memory is garbage-collected memory, so a tensor that is never
 * disposed is freed by the garbage collector.
 */
export class Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly device: DeviceName = 'cpu';
  #data: StorageOf<D> | null;
  #lastWrite: { stream: Stream; ticket: number } | null = null;

  private constructor(data: StorageOf<D>, shape: number[], dtype: D) {
    this.#data = data;
    this.shape = Object.freeze(shape);
    this.dtype = dtype;
  }

  /**
   * Wraps a TypedArray without copying. The dtype follows the array (Float32Array: f32, Int32Array: i32)
   * and must be given for a Uint16Array ('bf16' or 'f16'). The array must hold exactly the shape's elements.
   * The array is read by operations when they run: do not change it while one that reads it is queued.
   */
  static from(data: Float32Array, shape: readonly number[], dtype?: 'f32'): Tensor<'f32'>;
  static from(data: Int32Array, shape: readonly number[], dtype?: 'i32'): Tensor<'i32'>;
  static from<D extends 'bf16' | 'f16'>(data: Uint16Array, shape: readonly number[], dtype: D): Tensor<D>;
  static from(data: Storage, shape: readonly number[], dtype?: DType): Tensor {
    const kind = storageDType(data);
    if (kind === null)
      throw new MlaError('E_DTYPE', `Tensor.from: data must be a Float32Array, Int32Array or Uint16Array, got ${describe(data)}`);
    const dims = checkShape(shape, 'Tensor.from');
    let dt: DType;
    if (kind === 'f16|bf16') {
      if (dtype !== 'bf16' && dtype !== 'f16')
        throw new MlaError('E_DTYPE', `Tensor.from: a Uint16Array holds bf16 or f16; pass dtype 'bf16' or 'f16' (got ${String(dtype)})`);
      dt = dtype;
    } else {
      if (dtype !== undefined && dtype !== kind)
        throw new MlaError('E_DTYPE', `Tensor.from: dtype '${String(dtype)}' does not match a ${describe(data)} (holds ${kind})`);
      dt = kind;
    }
    if (numelOf(dims) !== data.length)
      throw new MlaError('E_SHAPE', `Tensor.from: shape [${dims.join(', ')}] has ${numelOf(dims)} elements, the array ${data.length}`);
    return new Tensor(data as never, dims, dt as never);
  }

  /** A new zero-filled tensor. */
  static zeros<D extends DType>(shape: readonly number[], dtype: D): Tensor<D> {
    if (!isDType(dtype)) throw new MlaError('E_DTYPE', `Tensor.zeros: dtype must be f32, f16, bf16 or i32, got ${String(dtype)}`);
    const dims = checkShape(shape, 'Tensor.zeros');
    const n = numelOf(dims);
    if (n * DTYPE_SIZES[dtype] > 2 ** 31)
      throw new MlaError('E_OOM', `Tensor.zeros: [${dims.join(', ')}] ${dtype} is ${n * DTYPE_SIZES[dtype]} bytes, over the 2 GiB limit of one CPU tensor`);
    return new Tensor(new STORAGE_CLASS[dtype](n) as StorageOf<D>, dims, dtype);
  }

  /** A new tensor of `dtype` holding `values` rounded to it (round to nearest even). */
  static fromValues<D extends DType>(values: ArrayLike<number>, shape: readonly number[], dtype: D): Tensor<D> {
    const t = Tensor.zeros(shape, dtype);
    if (values.length !== t.numel)
      throw new MlaError('E_SHAPE', `Tensor.fromValues: shape [${shape.join(', ')}] has ${t.numel} elements, values ${values.length}`);
    const data = t.#data as Storage;
    if (dtype === 'bf16') data.set(toBf16Array(values));
    else if (dtype === 'f16') data.set(toF16Array(values));
    else data.set(values);
    return t;
  }

  get numel(): number {
    return numelOf(this.shape);
  }

  get nbytes(): number {
    return this.numel * DTYPE_SIZES[this.dtype];
  }

  get disposed(): boolean {
    return this.#data === null;
  }

  /** A copy of the elements, after every queued write to this tensor has finished. */
  async read(): Promise<StorageOf<D>> {
    const data = this.#live('tensor');
    if (this.#lastWrite) await this.#lastWrite.stream._waitFor(this.#lastWrite.ticket);
    return data.slice() as StorageOf<D>;
  }

  /** The elements as float32 (bf16/f16 expanded exactly), after queued writes finish. */
  async toFloat32(): Promise<Float32Array> {
    const data = (await this.read()) as Storage;
    if (this.dtype === 'bf16') return bf16ToFloat32(data as Uint16Array);
    if (this.dtype === 'f16') return f16ToFloat32(data as Uint16Array);
    return Float32Array.from(data);
  }

  /** Releases the tensor; queued operations that use it still complete. */
  dispose(): void {
    this.#data = null;
    this.#lastWrite = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }

  /** @internal The addon's view of this tensor; `name` is the argument's name for errors. */
  _descriptor(name: string): TensorDescriptor {
    return { data: this.#live(name), dtype: this.dtype, shape: this.shape, device: this.device };
  }

  /** @internal Records that `stream` writes this tensor in the operation with `ticket`. */
  _markWritten(stream: Stream, ticket: number): void {
    this.#lastWrite = { stream, ticket };
  }

  #live(name: string): StorageOf<D> {
    if (this.#data === null) throw new MlaError('E_DISPOSED', `${name} was disposed`);
    return this.#data;
  }
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (typeof x === 'object') return (x as object).constructor?.name ?? 'object';
  return typeof x;
}
