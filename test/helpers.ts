// Shared test tools: seeded random data (the seed is printed), error norms, poison, backend list.
import { createRequire } from 'node:module';
import { afterAll, expect } from 'vitest';
import { backends, bf16ToFloat32, f16ToFloat32, MlaError, Tensor, type BackendName, type DeviceName, type ErrorCode, type FloatDType } from '../lib/index.js';
import type { Storage } from '../lib/dtypes.js';
import { native } from '../lib/native.js';
import type { Dense } from '../lib/reference.js';

/** The seed of this test file: MLA_TEST_SEED to replay a failure, else fresh per run. */
export function testSeed(file: string): number {
  const seed = process.env.MLA_TEST_SEED ? Number(process.env.MLA_TEST_SEED) : (Math.random() * 2 ** 32) >>> 0;
  console.log(`[${file}] seed ${seed} (replay with MLA_TEST_SEED=${seed})`);
  return seed;
}

/**
 * A suite that forces the addon's test hooks: its seed (testSeed), the addon, the CPU paths this processor has, and the
 * hooks (CPU path and split size, cuda-sim's split size and thread orders) put back to their defaults after its tests.
 */
export function hookedSuite(file: string) {
  const seed = testSeed(file);
  const addon = native();
  afterAll(() => {
    addon.simConfigure?.({ splitRows: 0, checkOrders: true });
    addon.cpuConfigure?.({ isa: '', splitRows: 0 });
  });
  return { seed, addon, isas: (addon.cpuInfo?.().supported ?? ['portable']) as string[] };
}

/** mulberry32: small, fast, good enough for test data. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)];
  }
  /** Roughly normal values (sum of uniforms), scaled. */
  normal(n: number, scale = 1): number[] {
    return Array.from({ length: n }, () => (this.next() + this.next() + this.next() - 1.5) * 2 * scale);
  }
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [xs[i], xs[j]] = [xs[j], xs[i]];
    }
    return xs;
  }
}

/** Bound on ‖out − ref‖ / ‖ref‖ per dtype: fp32 accumulation, output rounded to the dtype. */
export const REL_BOUND: Record<FloatDType, number> = { f32: 1e-5, f16: 2e-3, bf16: 1.2e-2 };
export const FLOAT_DTYPES: readonly FloatDType[] = ['f32', 'bf16', 'f16'];

export function relErr(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (out[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** A random tensor of a dtype and the exact values it holds (after rounding), for the reference. */
export function randomTensor(rng: Rng, shape: number[], dtype: FloatDType, scale = 1): { t: Tensor<FloatDType>; dense: Dense } {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = Tensor.fromValues(rng.normal(n, scale), shape, dtype);
  return { t, dense: { data: exactValues(t), shape } };
}

/** The values a tensor holds, read synchronously (only for tensors no operation is writing). */
export function exactValues(t: Tensor): Float64Array {
  const data = t._descriptor('t')[0] as Storage;
  if (t.dtype === 'bf16') return Float64Array.from(bf16ToFloat32(data as Uint16Array));
  if (t.dtype === 'f16') return Float64Array.from(f16ToFloat32(data as Uint16Array));
  return Float64Array.from(data);
}

const wrapped = new WeakMap<Tensor, Int32Array>();

/** An i32 tensor wrapping a new Int32Array of `values` (the caller's array: {@link arrayOf} gives it back). */
export function intTensor(values: number[], shape: number[] = [values.length]): Tensor<'i32'> {
  const array = Int32Array.from(values);
  const t = Tensor.from(array, shape);
  wrapped.set(t, array);
  return t;
}

/** The array an {@link intTensor} wraps, which a test rewrites in place as a model runner would. */
export function arrayOf(t: Tensor<'i32'>): Int32Array {
  const array = wrapped.get(t);
  if (!array) throw new Error('arrayOf: not a tensor made by intTensor');
  return array;
}

export function dense(t: Tensor): Dense {
  return { data: exactValues(t), shape: t.shape };
}

/** A tensor filled with NaN bit patterns (0xFFFF... per element) so unwritten elements show. */
export function poisoned<D extends FloatDType | 'f32'>(shape: readonly number[], dtype: D): Tensor<D> {
  const t = Tensor.zeros(shape, dtype);
  const data = t._descriptor('poison')[0] as Storage;
  new Uint8Array(data.buffer, data.byteOffset, data.byteLength).fill(0xff);
  return t;
}

export function countNaN(xs: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < xs.length; i++) if (Number.isNaN(xs[i])) n++;
  return n;
}

/** A tensor (made on the host) moved to where the stream computes; index tensors stay on the host. */
export function onDevice<T extends Tensor>(t: T, stream: { device: DeviceName }): T {
  return t.to(stream.device) as T;
}

/** Backends the shared suite runs on: MLA_TEST_BACKENDS (comma list) or every one this build has. */
export function suiteBackends(): { name: BackendName; available: boolean; reason: string }[] {
  const list = backends();
  const wanted = process.env.MLA_TEST_BACKENDS?.split(',').map((s) => s.trim());
  return wanted ? list.filter((b) => wanted.includes(b.name)) : list;
}

/**
 * Sizes each backend takes: the CPU any size; the CUDA kernels (cuda, cuda-sim) bf16/f16 and multiples of 16
 * for the mma dimensions (docs/guide/paged-cache.md, "Dtypes and shapes"). The shared suite draws its random shapes from these.
 */
export interface ShapeRules {
  dtypes: readonly FloatDType[];
  kvLoraRank(rng: Rng): number;
  ropeDim(rng: Rng, atLeastOne?: boolean): number; // always even
  nopeDim(rng: Rng): number;
  vHeadDim(rng: Rng): number;
}

export function shapeRules(backend: BackendName): ShapeRules {
  if (backend === 'cpu')
    return {
      dtypes: FLOAT_DTYPES,
      kvLoraRank: (rng) => rng.int(8, 64),
      ropeDim: (rng, atLeastOne) => 2 * rng.int(atLeastOne ? 1 : 0, 8),
      nopeDim: (rng) => rng.int(8, 32),
      vHeadDim: (rng) => rng.int(8, 32),
    };
  return {
    dtypes: ['bf16', 'f16'],
    kvLoraRank: (rng) => 16 * rng.int(1, 4),
    ropeDim: (rng, atLeastOne) => 16 * rng.int(atLeastOne ? 1 : 0, 1),
    nopeDim: (rng) => 16 * rng.int(1, 2),
    vHeadDim: (rng) => 8 * rng.int(1, 4),
  };
}

/** Whether onnxruntime-node (a devDependency, the benchmark's peer) can be loaded here. */
export function hasOnnxRuntime(): boolean {
  try {
    createRequire(import.meta.url)('onnxruntime-node');
    return true;
  } catch {
    return false;
  }
}

/** `fn` throws an MlaError with `code` whose message contains (or matches) each of `mentions`. */
export function expectMlaError(fn: () => unknown, code: ErrorCode, ...mentions: (string | RegExp)[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected MlaError ${code}`).toBeInstanceOf(MlaError);
  const err = caught as MlaError;
  expect(err.code, err.message).toBe(code);
  for (const m of mentions) {
    if (typeof m === 'string') expect(err.message).toContain(m);
    else expect(err.message).toMatch(m);
  }
}
