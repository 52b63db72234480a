// What the lifetime suite's child processes share (test/conformance/lifetime.test.ts runs them, so that a crash is a
// failed test, not a dead runner). They use the compiled package (dist/) and the addon MLA_ADDON_PATH names.
import { Worker } from 'node:worker_threads';
import * as mla from '../../../dist/index.js';
import { refMlaDecode } from '../../../dist/reference.js';

import { native } from '../../../dist/native.js';

export { mla };
export const backend = process.env.LT_BACKEND ?? 'cpu';
export const device = backend === 'cpu' ? 'cpu' : `${backend}:0`;
// The emulator's check of every thread order would only slow these down.
if (backend === 'cuda-sim') native().simConfigure({ checkOrders: false });
export const BF16_BOUND = 1.2e-2;

/** `t` (made on the host) where the stream computes, as a copy queued on it; index tensors stay on the host. */
export function onDevice(t, stream) {
  return device === 'cpu' ? t : t.to(device, { stream });
}

/** mulberry32 */
export function rng(seed) {
  let s = seed >>> 0;
  const next = () => {
    let t = (s = (s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, normal: (n) => Array.from({ length: n }, () => (next() + next() + next() - 1.5) * 2) };
}

/** A new TypedArray of `kind` over an ordinary ArrayBuffer (resizable when `resizable`), holding `values`. */
export function plainArray(kind, values, resizable = false) {
  const bytes = values.length * kind.BYTES_PER_ELEMENT;
  const a = new kind(resizable ? new ArrayBuffer(bytes, { maxByteLength: bytes }) : new ArrayBuffer(bytes));
  a.set(values);
  return a;
}

/**
 * A decode problem whose inputs are the caller's arrays (bf16 bit patterns, i32 indices) over ordinary ArrayBuffers
 * (resizable ones when `resizable`), and its float64 reference.
 */
export function problem(seed, { batch = 2, heads = 16, rank = 64, rope = 16, lens = [70, 45], blockSize = 16, resizable = false } = {}) {
  const r = rng(seed);
  const width = rank + rope;
  const blocksPer = Math.ceil(Math.max(...lens) / blockSize);
  const numBlocks = batch * blocksPer + 1;
  const q = plainArray(Uint16Array, mla.toBf16Array(r.normal(batch * heads * width)), resizable);
  const cache = plainArray(Uint16Array, mla.toBf16Array(r.normal(numBlocks * blockSize * width)), resizable);
  const order = Array.from({ length: batch * blocksPer }, (_, i) => i + 1).sort(() => r.next() - 0.5);
  const blockTable = plainArray(Int32Array, order, resizable);
  const seqLens = plainArray(Int32Array, lens, resizable);
  const softmaxScale = 1 / Math.sqrt(width);
  const ref = refMlaDecode({
    q: { data: mla.bf16ToFloat32(q), shape: [batch, 1, heads, width] },
    cache: { data: mla.bf16ToFloat32(cache), shape: [numBlocks, blockSize, width] },
    blockTable: { data: blockTable, shape: [batch, blocksPer] },
    seqLens: { data: seqLens, shape: [batch] },
    softmaxScale,
    kvLoraRank: rank,
  });
  return {
    arrays: { q, cache, blockTable, seqLens },
    shapes: { q: [batch, 1, heads, width], cache: [numBlocks, blockSize, width], blockTable: [batch, blocksPer], seqLens: [batch], out: [batch, 1, heads, rank] },
    softmaxScale,
    rank,
    ref,
  };
}

/** mlaDecode's arguments for problem `p` on `stream`: its arrays wrapped, q and the cache where the stream computes. */
export function decodeArgs(p, stream) {
  return {
    q: onDevice(mla.Tensor.from(p.arrays.q, p.shapes.q, 'bf16'), stream),
    cache: onDevice(mla.Tensor.from(p.arrays.cache, p.shapes.cache, 'bf16'), stream),
    blockTable: mla.Tensor.from(p.arrays.blockTable, p.shapes.blockTable),
    seqLens: mla.Tensor.from(p.arrays.seqLens, p.shapes.seqLens),
    softmaxScale: p.softmaxScale,
    kvLoraRank: p.rank,
    stream,
  };
}

// busy()'s decodes: the shape, and how long one takes here (a guess until calibrateBusy() measures it).
const BUSY = device === 'cpu' ? { batch: 4, len: 16384, msPerCall: 4 } : { batch: 1, len: 256, msPerCall: 22 };

function busyDecode(stream) {
  const width = 80, blockSize = 64, blocks = BUSY.len / blockSize;
  const cache = onDevice(mla.Tensor.zeros([blocks, blockSize, width], 'bf16'), stream);
  const q = onDevice(mla.Tensor.zeros([BUSY.batch, 1, 16, width], 'bf16'), stream);
  const blockTable = mla.Tensor.from(Int32Array.from({ length: BUSY.batch * blocks }, (_, i) => i % blocks), [BUSY.batch, blocks]);
  const seqLens = mla.Tensor.from(new Int32Array(BUSY.batch).fill(BUSY.len), [BUSY.batch]);
  return () => mla.mlaDecode({ q, cache, blockTable, seqLens, softmaxScale: 0.1, kvLoraRank: 64, stream });
}

/** Measures how long busy()'s decode takes on this machine and build (a sanitizer's is several times slower). */
export async function calibrateBusy() {
  const stream = new mla.Stream(device);
  const call = busyDecode(stream);
  await call().out.read(); // first use: threads, scratch
  const start = performance.now();
  for (let i = 0; i < 3; i++) call();
  await stream.synchronize();
  BUSY.msPerCall = Math.max(0.5, (performance.now() - start) / 3);
  stream.dispose();
}

/**
 * Queues roughly `ms` milliseconds of decodes on `stream` (package-made tensors), so what is queued next stays queued
 * for a while; the tests also measure that it did.
 */
export function busy(stream, ms = 300) {
  const call = busyDecode(stream);
  for (let i = 0; i < Math.ceil(ms / BUSY.msPerCall); i++) call();
}

/** Garbage-collects and reuses freed memory, so a use after free reads or writes someone else's data. */
export function churn() {
  globalThis.gc?.();
  const keep = [];
  for (let i = 0; i < 64; i++) keep.push(new Uint8Array(4096 << (i % 6)).fill(0x5a));
  globalThis.gc?.();
  return keep.length;
}

// Each way JS takes an ordinary ArrayBuffer from under a typed array: structuredClone with a transfer list, a
// transfer to a Worker that scribbles on it and exits (freeing it), and shrinking a resizable buffer to nothing.
let scribbler = null;
export const DETACH = {
  transfer: (a) => void structuredClone(a.buffer, { transfer: [a.buffer] }),
  worker: (a) => {
    scribbler ??= new Worker("require('node:worker_threads').parentPort.on('message', (b) => new Uint8Array(b).fill(0xff))", { eval: true });
    scribbler.postMessage(a.buffer, [a.buffer]);
  },
  resize: (a) => a.buffer.resize(0),
};
/**
 * The output case of issue 16's cases 1-3: the caller's own array (poisoned) as the output `name` of `call(extra)` —
 * given as the output on the CPU, written by a copy back to the host from a device — taken away by `method` while
 * queued on `stream`. Returns the read of that output, how to use it again and when it was taken.
 */
export function detachOutput(method, resizable, stream, { name, shape, dtype, call }) {
  const outArray = plainArray(dtype === 'f32' ? Float32Array : Uint16Array, new Array(shape.reduce((a, b) => a * b, 1)).fill(0x7fc0), resizable);
  let target;
  let again;
  if (device === 'cpu') {
    target = mla.Tensor.from(outArray, shape, dtype);
    call({ [name]: target });
    again = () => call({ [name]: target });
  } else {
    const out = call({})[name];
    target = mla.Tensor.from(outArray, shape, dtype).copyFrom(out, { stream });
    again = () => target.copyFrom(out, { stream });
  }
  DETACH[method](outArray);
  const detachedAt = performance.now();
  churn();
  return { read: target.read().then(() => 'read resolved'), again, detachedAt };
}

/** Ends the scribbling Worker (its transferred buffers are freed with it). */
export async function endScribbler() {
  const w = scribbler;
  scribbler = null;
  if (w) await w.terminate();
}

/** How a promise ended: 'ok', or 'CODE: message' of the MlaError it rejected with (anything else is a failure). */
export async function outcome(promise) {
  try {
    await promise;
    return 'ok';
  } catch (e) {
    return e instanceof mla.MlaError ? `${e.code}: ${e.message}` : `NOT AN MlaError: ${String(e?.stack ?? e)}`;
  }
}

/** What a promise of a description gave: the description, or 'CODE: message' of the MlaError it rejected with. */
export async function settled(promise) {
  try {
    return await promise;
  } catch (e) {
    return e instanceof mla.MlaError ? `${e.code}: ${e.message}` : `NOT AN MlaError: ${String(e?.stack ?? e)}`;
  }
}

/** What calling `fn` did: 'ok', or 'CODE: message' of the MlaError it threw. */
export function thrown(fn) {
  try {
    fn();
    return 'ok';
  } catch (e) {
    return e instanceof mla.MlaError ? `${e.code}: ${e.message}` : `NOT AN MlaError: ${String(e?.stack ?? e)}`;
  }
}

export function relErr(out, ref) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (out[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** The child's findings, for the test to check: one line, last. */
export function report(result) {
  console.log(`RESULT ${JSON.stringify(result)}`);
}
