// Tensors: host memory (a TypedArray over shared memory) or device memory (the addon's NativeDeviceBuffer), with the
// last write queued to each, and their descriptors for the addon. The lifetime rule is docs/lifetime.md.
import { types } from 'node:util';
import { DEVICE_KINDS, backendOf, type DeviceName } from './device.js';
import { DTYPE_CODES, DTYPE_SIZES, STORAGE_CLASS, isDType, type DType, type Storage, type StorageOf } from './dtypes.js';
import { MlaError } from './errors.js';
import { bf16ToFloat32, f16ToFloat32, fp8E4M3ToFloat32, toBf16Array, toF16Array, toFp8E4M3Array } from './half.js';
import { native, type NativeDeviceBuffer, type TensorDescriptor } from './native.js';
import { defaultStream, refuseWhileCapturing, type Stream, type Written } from './stream.js';

/** The scale of an `fp8_e4m3` tensor, given where it is made (other dtypes take none: a type error, and E_ARGUMENT). */
export interface ScaleOption<D extends DType = DType> {
  /**
   * `fp8_e4m3` only: each element's value is its stored e4m3 value times `scale` (finite, > 0, used in float32;
   * default 1). The scale stays with the tensor: operations read and write an fp8 cache with it.
   */
  scale?: D extends 'fp8_e4m3' ? number : never;
}

export interface AllocateOptions<D extends DType = DType> extends ScaleOption<D> {
  /** Default 'cpu'. */
  device?: DeviceName;
}

const MAX_DIMS = 6;

function storageDType(data: unknown): DType | 'f16|bf16' | 'fp8_e4m3|fp8_ds_mla' | null {
  if (data instanceof Float32Array) return 'f32';
  if (data instanceof Int32Array) return 'i32';
  if (data instanceof Uint16Array) return 'f16|bf16';
  if (data instanceof Uint8Array) return 'fp8_e4m3|fp8_ds_mla';
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

type StorageFrom = new (buffer: ArrayBufferLike, byteOffset?: number, length?: number) => Storage;
// ES2024's resizable ArrayBuffers and growable SharedArrayBuffers (Node 20 has them; the ES2022 lib does not type them).
type Resizable = { resizable?: boolean; maxByteLength?: number };
type Growable = SharedArrayBuffer & { growable?: boolean; grow(bytes: number): void };

/**
 * Host memory the package allocates: a SharedArrayBuffer's, which no JS can detach, transfer (only share) or shrink,
 * so an operation that holds the array holds the memory.
 */
function sharedStorage<D extends DType>(dtype: D, n: number, what: string): StorageOf<D> {
  const bytes = n * DTYPE_SIZES[dtype];
  let buffer: SharedArrayBuffer;
  try {
    buffer = new SharedArrayBuffer(bytes);
  } catch (e) {
    throw new MlaError('E_OOM', `${what}: could not allocate ${bytes} bytes of host memory (${(e as Error).message})`);
  }
  return new (STORAGE_CLASS[dtype] as unknown as StorageFrom)(buffer) as StorageOf<D>;
}

// The shared-memory mirror of each ordinary ArrayBuffer that Tensor.from wraps, shared by every tensor over that
// buffer (at the same offsets, so the addon still sees when two of them overlap). A resizable buffer gets a growable
// mirror of the same maximum, which grows in place.
const mirrors = new WeakMap<ArrayBufferLike, SharedArrayBuffer>();

function mirrorOf(buffer: ArrayBufferLike, end: number, what: string): SharedArrayBuffer {
  let mirror = mirrors.get(buffer) as Growable | undefined;
  try {
    if (!mirror) {
      const { resizable, maxByteLength } = buffer as Resizable;
      const options = resizable ? { maxByteLength } : undefined;
      const bytes = Math.max(end, buffer.byteLength);
      mirror = new (SharedArrayBuffer as unknown as new (bytes: number, options?: { maxByteLength?: number }) => Growable)(bytes, options);
      mirrors.set(buffer, mirror);
    }
    if (mirror.byteLength < end) {
      if (!mirror.growable) throw new RangeError(`the mirror of a ${mirror.byteLength}-byte buffer cannot hold ${end} bytes`);
      mirror.grow(end);
    }
  } catch (e) {
    throw new MlaError('E_OOM', `${what}: could not allocate ${end} bytes of host memory to mirror the array (${(e as Error).message})`);
  }
  return mirror;
}

/** @internal Whether `x` is a Tensor this module made (instanceof also accepts Object.create(Tensor.prototype)). */
export let isTensor: (x: unknown) => x is Tensor;

/**
 * A dense, row-major tensor. On the CPU its memory is a TypedArray (bf16 and f16 as 16-bit patterns in a
 * Uint16Array): {@link Tensor.from} wraps one. On a GPU it is device memory: make it with {@link Tensor.empty} or
 * {@link Tensor.to}. Operations write tensors asynchronously on a stream; {@link Tensor.read} waits for those writes.
 * After {@link Tensor.dispose} (or the end of a `using` block) any use is an `E_DISPOSED` error. A tensor never
 * disposed is freed by the garbage collector (device memory through the addon's finaliser), never while a queued
 * operation or a captured graph uses it.
 */
export class Tensor<D extends DType = DType> implements Written {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly device: DeviceName;
  /** What a stored element is multiplied by to give its value: an `fp8_e4m3` tensor's scale ({@link ScaleOption}), 1 for other dtypes. */
  readonly scale: number;
  // Host memory: shared memory the package made or the caller gave, or the caller's array over an ordinary
  // ArrayBuffer, which operations use through #mirror (docs/lifetime.md).
  #data: StorageOf<D> | null;
  #mirror: StorageOf<D> | null = null;
  // Where the caller's array lies in its ArrayBuffer: it is there while buffer.byteLength >= end. (Not the array's
  // own length: optimised code has been seen to read a detached array's old length.)
  #source: { buffer: ArrayBufferLike; end: number } | null = null;
  // A write to #mirror whose result has not reached #data yet: until it completes, #mirror is the newer one.
  #mirrorAhead: { stream: Stream; ticket: number } | null = null;
  #buffer: NativeDeviceBuffer | null;
  #lastWrite: { stream: Stream; ticket: number } | null = null;
  #descriptor: TensorDescriptor | null = null;
  #label = 'tensor'; // the argument it was last passed as, for errors of a graph replay

  private constructor(memory: { data: StorageOf<D> } | { buffer: NativeDeviceBuffer; device: DeviceName }, shape: number[], dtype: D, scale: number) {
    this.#data = 'data' in memory ? memory.data : null;
    this.#buffer = 'buffer' in memory ? memory.buffer : null;
    this.device = 'buffer' in memory ? memory.device : 'cpu';
    this.shape = Object.freeze(shape);
    this.dtype = dtype;
    this.scale = scale;
  }

  /**
   * Wraps a TypedArray. The dtype follows the array (Float32Array: f32, Int32Array: i32, Uint8Array: fp8_e4m3 bit
   * patterns, with their `scale`, or the bytes of an fp8_ds_mla cache when that dtype is given) and must be given for a Uint16Array ('bf16' or 'f16'). The array must hold exactly
   * the shape's elements. An array over a SharedArrayBuffer is the tensor's memory, without copying: operations read
   * and write it when they run, so do not change it while one that uses it is queued. An array over an ordinary
   * ArrayBuffer (which JS may detach, transfer or shrink at any moment) stays the caller's: each operation reads it as
   * it is at the call (a copy into shared memory the operation holds), and a write reaches it when the writing
   * operation completes. Detached, it is an `E_DISPOSED` error. See docs/lifetime.md.
   */
  static from(data: Float32Array, shape: readonly number[], dtype?: 'f32'): Tensor<'f32'>;
  static from(data: Int32Array, shape: readonly number[], dtype?: 'i32'): Tensor<'i32'>;
  static from<D extends 'bf16' | 'f16'>(data: Uint16Array, shape: readonly number[], dtype: D): Tensor<D>;
  static from(data: Uint8Array, shape: readonly number[], dtype?: 'fp8_e4m3', options?: ScaleOption<'fp8_e4m3'>): Tensor<'fp8_e4m3'>;
  static from(data: Uint8Array, shape: readonly number[], dtype: 'fp8_ds_mla'): Tensor<'fp8_ds_mla'>;
  static from(data: Storage, shape: readonly number[], dtype?: DType, options?: ScaleOption): Tensor {
    const kind = storageDType(data);
    if (kind === null)
      throw new MlaError('E_DTYPE', `Tensor.from: data must be a Float32Array, Int32Array, Uint16Array or Uint8Array, got ${describe(data)}`);
    const dims = checkShape(shape, 'Tensor.from');
    let dt: DType;
    if (kind === 'f16|bf16') {
      if (dtype !== 'bf16' && dtype !== 'f16')
        throw new MlaError('E_DTYPE', `Tensor.from: a Uint16Array holds bf16 or f16; pass dtype 'bf16' or 'f16' (got ${String(dtype)})`);
      dt = dtype;
    } else if (kind === 'fp8_e4m3|fp8_ds_mla') {
      if (dtype !== undefined && dtype !== 'fp8_e4m3' && dtype !== 'fp8_ds_mla')
        throw new MlaError('E_DTYPE', `Tensor.from: a Uint8Array holds fp8_e4m3 or fp8_ds_mla, not '${String(dtype)}'`);
      dt = dtype ?? 'fp8_e4m3';
    } else {
      if (dtype !== undefined && dtype !== kind)
        throw new MlaError('E_DTYPE', `Tensor.from: dtype '${String(dtype)}' does not match a ${describe(data)} (holds ${kind})`);
      dt = kind;
    }
    if (numelOf(dims) !== data.length)
      throw new MlaError('E_SHAPE', `Tensor.from: shape [${dims.join(', ')}] has ${numelOf(dims)} elements, the array ${data.length}${data.byteLength === 0 && data.length === 0 ? ' (is its ArrayBuffer detached?)' : ''}`);
    const t = new Tensor({ data: data as never }, dims, dt as never, scaleOf('Tensor.from', dt, options?.scale));
    if (!types.isSharedArrayBuffer(data.buffer)) {
      const mirror = mirrorOf(data.buffer, data.byteOffset + data.byteLength, 'Tensor.from');
      t.#mirror = new (data.constructor as StorageFrom)(mirror, data.byteOffset, data.length) as never;
      t.#source = { buffer: data.buffer, end: data.byteOffset + data.byteLength };
    }
    return t;
  }

  /** A new zero-filled tensor (on a device: zeros uploaded on the device's default stream). */
  static zeros<D extends DType>(shape: readonly number[], dtype: D, options: AllocateOptions<D> = {}): Tensor<D> {
    if (!isDType(dtype)) throw new MlaError('E_DTYPE', `Tensor.zeros: dtype must be f32, f16, bf16, i32, fp8_e4m3 or fp8_ds_mla, got ${String(dtype)}`);
    const dims = checkShape(shape, 'Tensor.zeros');
    const n = numelOf(dims);
    const device = options.device ?? 'cpu';
    const scale = scaleOf('Tensor.zeros', dtype, options.scale);
    // The upload is this call's own (explicitly on the default stream), so it is allowed inside a capture.
    if (device !== 'cpu') return Tensor.zeros(dims, dtype, { scale: options.scale } as ScaleOption<D>).to(device, { stream: defaultStream(device) });
    if (n * DTYPE_SIZES[dtype] > 2 ** 31)
      throw new MlaError('E_OOM', `Tensor.zeros: [${dims.join(', ')}] ${dtype} is ${n * DTYPE_SIZES[dtype]} bytes, over the 2 GiB limit of one CPU tensor`);
    return new Tensor({ data: sharedStorage(dtype, n, 'Tensor.zeros') }, dims, dtype, scale);
  }

  /** A new tensor whose contents are undefined until written (zeros on the CPU). */
  static empty<D extends DType>(shape: readonly number[], dtype: D, options: AllocateOptions<D> = {}): Tensor<D> {
    const device = options.device ?? 'cpu';
    if (device === 'cpu') return Tensor.zeros(shape, dtype, { scale: options.scale } as ScaleOption<D>);
    if (!isDType(dtype)) throw new MlaError('E_DTYPE', `Tensor.empty: dtype must be f32, f16, bf16, i32, fp8_e4m3 or fp8_ds_mla, got ${String(dtype)}`);
    const dims = checkShape(shape, 'Tensor.empty');
    const scale = scaleOf('Tensor.empty', dtype, options.scale);
    backendOf(device);
    const buffer = new (native().NativeDeviceBuffer)(device, numelOf(dims) * DTYPE_SIZES[dtype]);
    return new Tensor({ buffer, device }, dims, dtype, scale);
  }

  /**
   * This tensor on `device`: itself when it is there already, else a copy queued on `stream` (by default the stream
   * that last wrote this tensor, or the default stream of the device). Between two GPUs the copy is peer to peer,
   * on the destination's stream; between a GPU and a cuda-sim device it goes through host memory.
   */
  to(device: DeviceName, options: { stream?: Stream } = {}): Tensor<D> {
    Tensor.#check(this, 'to');
    this.#live('tensor');
    if (device === this.device) return this;
    if (device !== 'cpu' && this.device !== 'cpu' && backendOf(device) !== backendOf(this.device)) return this.to('cpu').to(device, options);
    const stream = options.stream ?? this.#streamFor(device === 'cpu' ? this.device : device);
    const dst = Tensor.empty(this.shape, this.dtype, { device, scale: this.dtype === 'fp8_e4m3' ? this.scale : undefined } as AllocateOptions<D>);
    const params = [this._descriptor('src'), dst._descriptor('dst')] as const;
    stream._submit([this], [dst], (s, after) => native().copy(s, params, after));
    return dst;
  }

  /**
   * Copies `src` (same dtype, scale and element count; on the host or on this tensor's device) into this tensor, queued on
   * `stream` (by default the one that last wrote this tensor, or the default stream of its device). Returns this
   * tensor. This is how the inputs of a captured graph are updated in place between replays.
   */
  copyFrom(src: Tensor<D>, options: { stream?: Stream } = {}): this {
    Tensor.#check(this, 'copyFrom');
    this.#live('tensor');
    if (!isTensor(src)) throw new MlaError('E_ARGUMENT', `copyFrom: src must be a Tensor, got ${describe(src)}`);
    if (src.scale !== this.scale)
      throw new MlaError('E_DTYPE', `copyFrom: src has scale ${src.scale}, this tensor ${this.scale}: the same bytes would stand for other values`);
    const stream = options.stream ?? this.#streamFor(this.device === 'cpu' ? src.device : this.device);
    stream._submit([src], [this], (s, after) => native().copy(s, [src._descriptor('src'), this._descriptor('dst')], after));
    return this;
  }

  /** A new tensor of `dtype` holding `values` rounded to it (round to nearest even; for fp8, each value / scale in float32). */
  static fromValues<D extends DType>(values: ArrayLike<number>, shape: readonly number[], dtype: D, options: ScaleOption<D> = {}): Tensor<D> {
    const t = Tensor.zeros(shape, dtype, { scale: options.scale } as ScaleOption<D>);
    if (values.length !== t.numel)
      throw new MlaError('E_SHAPE', `Tensor.fromValues: shape [${shape.join(', ')}] has ${t.numel} elements, values ${values.length}`);
    const data = t.#data!;
    if (dtype === 'bf16') data.set(toBf16Array(values));
    else if (dtype === 'f16') data.set(toF16Array(values));
    else if (dtype === 'fp8_e4m3') data.set(toFp8E4M3Array(t.scale === 1 ? values : Float32Array.from(values, (v) => Math.fround(v) / Math.fround(t.scale))));
    else data.set(values);
    return t;
  }

  get numel(): number {
    Tensor.#check(this, 'numel');
    return numelOf(this.shape);
  }

  get nbytes(): number {
    return this.numel * DTYPE_SIZES[this.dtype];
  }

  get disposed(): boolean {
    Tensor.#check(this, 'disposed');
    return this.#data === null && this.#buffer === null;
  }

  /**
   * A copy of the stored elements (in host memory, an ordinary TypedArray), after every queued write to this tensor
   * has finished: bf16 and f16 as their 16-bit patterns (a Uint16Array), fp8 as bytes without the scale;
   * {@link toFloat32} gives the values. Rejects with the error of a failed write, and with `E_DISPOSED` when the array
   * a Tensor.from tensor wraps was detached. Refused inside {@link Stream.capture} (nothing recorded has run yet).
   */
  read(): Promise<StorageOf<D>> {
    refuseWhileCapturing('read()');
    try {
      Tensor.#check(this, 'read');
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#read();
  }

  async #read(): Promise<StorageOf<D>> {
    this.#live('tensor');
    const data = this.#data;
    if (data) {
      const n = this.numel, label = this.#label, source = this.#source;
      const last = this.#lastWrite;
      if (last) await last.stream._waitFor(last.ticket);
      // The caller's array may have been detached meanwhile (shared memory never is).
      if (source !== null && source.buffer.byteLength < source.end) throw this.#detached(`read: ${label}`);
      return data.slice(0, n) as StorageOf<D>;
    }
    const host = this.to('cpu');
    await host.#lastWrite!.stream._waitFor(host.#lastWrite!.ticket);
    return host.#data!.slice() as StorageOf<D>;
  }

  /**
   * The values as float32 (bf16/f16 expanded exactly; fp8 times the scale, in float32), after queued writes finish.
   * An fp8_ds_mla tensor holds packed token rows, not elements: read() returns its bytes (mla-kernels/reference's
   * unpackDsMlaCache decodes them).
   */
  toFloat32(): Promise<Float32Array> {
    refuseWhileCapturing('toFloat32()');
    if (this.dtype === 'fp8_ds_mla')
      return Promise.reject(new MlaError('E_DTYPE', 'toFloat32: an fp8_ds_mla tensor holds packed token rows (e4m3, fp32 scales, bf16); read() returns its bytes'));
    return this.read().then((stored) => {
      const data = stored as Storage;
      if (this.dtype === 'bf16') return bf16ToFloat32(data as Uint16Array);
      if (this.dtype === 'f16') return f16ToFloat32(data as Uint16Array);
      if (this.dtype !== 'fp8_e4m3') return Float32Array.from(data);
      const values = fp8E4M3ToFloat32(data as Uint8Array);
      const scale = Math.fround(this.scale); // a float32 product, as the kernels'
      if (scale !== 1) for (let i = 0; i < values.length; i++) values[i] *= scale;
      return values;
    });
  }

  /** Releases the tensor; queued operations that use it still complete (device memory is freed after them). */
  dispose(): void {
    Tensor.#check(this, 'dispose');
    this.#buffer?.release();
    this.#buffer = null;
    this.#data = null;
    this.#mirror = null;
    this.#source = null;
    this.#descriptor = null;
    this.#lastWrite = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    if (!isTensor(this)) return '[not a Tensor]';
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }

  /**
   * @internal The addon's view of this tensor for an operation being called now; `name` is the argument's name for
   * errors. A Tensor.from tensor over an ordinary ArrayBuffer is brought up to date first (_prepare).
   */
  _descriptor(name: string): TensorDescriptor {
    this._prepare(name);
    // Made once: a tensor's memory, dtype, device and shape never change. Frozen: a queued operation holds its memory
    // through it.
    return (this.#descriptor ??= Object.freeze(tensorDescriptor(this.#buffer ?? this.#mirror ?? this.#data!, this.dtype, this.device, this.shape)) as TensorDescriptor);
  }

  /**
   * @internal Before an operation (or a graph replay) uses this tensor as argument `name`: E_DISPOSED (after
   * `context`, naming the argument) when it was disposed or its array detached; the mirror of a caller's ordinary
   * array takes the array's values, unless a queued write to the mirror has not reached the array yet (then the
   * mirror is the newer one).
   */
  _prepare(name: string, context = ''): void {
    if (this.#data === null && this.#buffer === null) throw new MlaError('E_DISPOSED', `${context}${name} was disposed`);
    this.#label = name;
    const mirror = this.#mirror, source = this.#source;
    if (mirror === null || source === null) return;
    if (source.buffer.byteLength < source.end) throw this.#detached(`${context}${name}`);
    const data = this.#data!;
    if (this.#mirrorAhead === null) mirror.set(data.length === mirror.length ? data : data.subarray(0, mirror.length));
  }

  /** @internal The argument this tensor was last passed as. */
  _label(): string {
    return this.#label;
  }

  /** @internal The last queued write to this tensor, if any. */
  _lastWrite(): { stream: Stream; ticket: number } | null {
    return this.#lastWrite;
  }

  /** @internal Records that `stream` writes this tensor in the operation with `ticket`. */
  _markWritten(stream: Stream, ticket: number): void {
    this.#lastWrite = { stream, ticket };
    if (this.#mirror === null) return;
    const write = { stream, ticket };
    this.#mirrorAhead = write;
    const data = this.#data!, mirror = this.#mirror, source = this.#source!;
    stream._afterComplete(ticket, (failed) => {
      if (this.#mirrorAhead !== write) return; // a later write brings it back
      this.#mirrorAhead = null;
      // A failed write leaves the array as it was; a detached (or shrunk) array cannot take the result, which read()
      // and the next use report.
      if (!failed && source.buffer.byteLength >= source.end) data.set(mirror);
    });
  }

  #live(name: string): void {
    if (this.disposed) throw new MlaError('E_DISPOSED', `${name} was disposed`);
  }

  #detached(name: string): MlaError {
    return new MlaError('E_DISPOSED', `${name} was detached: the ArrayBuffer of the array it wraps (Tensor.from) was transferred, detached or shrunk`);
  }

  // Tensor's methods on an object that is not one (Object.create(Tensor.prototype), a structured clone): E_ARGUMENT.
  static #check(t: unknown, what: string): void {
    if (isTensor(t)) return;
    const made = typeof t === 'object' && t !== null && Object.getPrototypeOf(t) === Tensor.prototype ? 'an object with Tensor.prototype' : describe(t);
    throw new MlaError('E_ARGUMENT', `Tensor.${what}: called on ${made}, which is not a Tensor (make one with Tensor.from, zeros, empty or fromValues)`);
  }

  static {
    isTensor = (x: unknown): x is Tensor => typeof x === 'object' && x !== null && #data in x;
  }

  // The stream a copy involving `device` runs on: the one that last wrote this tensor when it reaches that device.
  #streamFor(device: DeviceName): Stream {
    refuseWhileCapturing('a copy (to, copyFrom) without { stream }', 'it would run at once, unrecorded');
    const last = this.#lastWrite?.stream;
    if (last && !last.disposed && last.device === device) return last;
    return defaultStream(device);
  }
}

// The scale a tensor of `dtype` is made with.
function scaleOf(what: string, dtype: DType, scale: unknown): number {
  if (scale === undefined) return 1;
  if (dtype !== 'fp8_e4m3') throw new MlaError('E_ARGUMENT', `${what}: scale applies to fp8_e4m3 tensors only, not ${dtype}`);
  const f = typeof scale === 'number' ? Math.fround(scale) : NaN;
  if (!(f > 0 && f < Infinity)) throw new MlaError('E_RANGE', `${what}: scale must be a finite number > 0 in float32, got ${String(scale)}`);
  return scale as number;
}

/** @internal A tensor descriptor (see TensorDescriptor in native.ts). */
export function tensorDescriptor(memory: TensorDescriptor[0], dtype: DType, device: DeviceName, shape: readonly number[]): TensorDescriptor {
  const index = device === 'cpu' ? 0 : Number(device.slice(device.indexOf(':') + 1));
  return [memory, Int32Array.of(DTYPE_CODES[dtype], DEVICE_KINDS[backendOf(device)], index, ...shape)];
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (typeof x === 'object') return (x as object).constructor?.name ?? 'object';
  return typeof x;
}
