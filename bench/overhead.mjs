#!/usr/bin/env node
// Per-call host overhead of the operations on small shapes (where it is not hidden behind the kernel): what one
// call costs the caller's thread to check its arguments and queue the work, not the kernel's time.
//
//   node bench/overhead.mjs [--ops mlaDecode,appendLatentCache,absorbQuery,unabsorbOutput] [--alloc]
//       wall clock: median per-call time over batches of calls (the stream is drained between batches, untimed)
//   valgrind --tool=callgrind --separate-threads=yes --dump-before='*addon*Facts*' \
//       node bench/overhead.mjs --calls N [--warmup W] [--ops op] [--alloc]
//       W calls (default 500: the JIT settles), facts(), N calls and a synchronize, facts() again: the second dump
//       (<out>.2-01, the main thread) holds the N calls alone, completions included; its instructions / N are the cost
//       of a call. Start-up is left out: its JIT and GC vary from run to run by more than 2000 calls cost.
// --alloc lets the op allocate its outputs (as the demo does), which adds outputShapes and Tensor.empty.
// --shared puts the arrays Tensor.from wraps on a SharedArrayBuffer, which operations use as they are; by default
// they are ordinary ArrayBuffers, which each call copies into their shared-memory mirrors (docs/lifetime.md).
// --dist <dir> measures another checkout's build (its dist/; MLA_ADDON_PATH names its addon): bench/overhead-ab.mjs.
// Shapes: DeepSeek's latent 512 + rope 64, 16 heads, batch 1, queryLen 1, 512 cached rows, bf16, on the cpu.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, fallback) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : fallback; };
const dist = opt('--dist', null);
const load = (file) => import(dist ? pathToFileURL(path.resolve(dist, file)).href : `../dist/${file}`);
const { Stream, Tensor, absorbQuery, appendLatentCache, mlaDecode, unabsorbOutput } = await load('index.js');
const { native } = await load('native.js');
const ops = opt('--ops', 'mlaDecode,appendLatentCache,absorbQuery,unabsorbOutput').split(',');
const calls = opt('--calls', null);
const warmup = Number(opt('--warmup', 500));
const alloc = args.includes('--alloc');
const shared = args.includes('--shared');
const array = (Ctor, n) => (shared ? new Ctor(new SharedArrayBuffer(n * Ctor.BYTES_PER_ELEMENT)) : new Ctor(n));
const KV = 512, ROPE = 64, WIDTH = KV + ROPE, NOPE = 128, V = 128, HEADS = 16, BLOCK = 64, CONTEXT = 512;

// The CPU time of this (the main) thread in ns, where Linux gives it: what the calls cost the caller, completions
// included, however busy the machine is with other work (wall-clock medians are not, on a shared machine).
const threadCpuNs = (() => {
  const read = () => Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
  try {
    return read() > 0 ? read : null;
  } catch {
    return null;
  }
})();

const stream = new Stream('cpu');
const bf16 = (n, seed) => {
  const a = array(Uint16Array, n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (s * 1664525 + 1013904223) >>> 0; a[i] = 0x3c00 + (s >>> 25); } // values in [2^-7, 2^-6)
  return a;
};
const t = (shape, seed) => Tensor.from(bf16(shape.reduce((a, b) => a * b, 1), seed), shape, 'bf16');

const cache = t([CONTEXT / BLOCK, BLOCK, WIDTH], 1);
const calls_ = {
  mlaDecode: () => {
    const q = t([1, 1, HEADS, WIDTH], 2);
    const table = array(Int32Array, CONTEXT / BLOCK);
    table.set(Int32Array.from({ length: CONTEXT / BLOCK }, (_, i) => i));
    const blockTable = Tensor.from(table, [1, CONTEXT / BLOCK]);
    const seqLens = Tensor.from(array(Int32Array, 1).fill(CONTEXT), [1]);
    const out = alloc ? undefined : Tensor.empty([1, 1, HEADS, KV], 'bf16');
    const lse = alloc ? undefined : Tensor.empty([1, HEADS, 1], 'f32');
    return () => mlaDecode({ q, cache, blockTable, seqLens, softmaxScale: 0.07, kvLoraRank: KV, out, lse, stream });
  },
  appendLatentCache: () => {
    const kvC = t([1, KV], 3), kPe = t([1, ROPE], 4);
    const slotMapping = Tensor.from(array(Int32Array, 1).fill(CONTEXT - 1), [1]);
    const positions = Tensor.from(array(Int32Array, 1).fill(CONTEXT - 1), [1]);
    const cos = Tensor.from(array(Float32Array, CONTEXT * ROPE / 2).fill(1), [CONTEXT, ROPE / 2]);
    const sin = Tensor.from(array(Float32Array, CONTEXT * ROPE / 2), [CONTEXT, ROPE / 2]);
    return () => appendLatentCache({ cache, kvC, kPe, slotMapping, rope: { positions, cos, sin, style: 'interleaved' }, stream });
  },
  absorbQuery: () => {
    const qNope = t([1, HEADS, NOPE], 5), qPe = t([1, HEADS, ROPE], 6), wUk = t([HEADS, NOPE, KV], 7);
    const out = alloc ? undefined : Tensor.empty([1, HEADS, WIDTH], 'bf16');
    return () => absorbQuery({ qNope, wUk, qPe, out, stream });
  },
  unabsorbOutput: () => {
    const oLat = t([1, HEADS, KV], 8), wUv = t([HEADS, V, KV], 9);
    const out = alloc ? undefined : Tensor.empty([1, HEADS, V], 'bf16');
    return () => unabsorbOutput({ oLat, wUv, out, stream });
  },
};

for (const name of ops) {
  const call = calls_[name]?.();
  if (!call) throw new Error(`unknown op ${name}`);
  if (calls !== null) {
    for (let i = 0; i < warmup; i++) call();
    await stream.synchronize();
    native().facts(); // start of the measured region (callgrind --dump-before)
    for (let i = 0; i < Number(calls); i++) call();
    await stream.synchronize();
    native().facts(); // its end
    continue;
  }
  for (let i = 0; i < 500; i++) call(); // warm-up (JIT, allocator)
  await stream.synchronize();
  const per = [];
  const cpu0 = threadCpuNs?.();
  for (let b = 0; b < 60; b++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 100; i++) call();
    per.push(Number(process.hrtime.bigint() - t0) / 100 / 1e3);
    await stream.synchronize();
  }
  const cpu = threadCpuNs ? `; main thread CPU ${((threadCpuNs() - cpu0) / 6000 / 1e3).toFixed(2)} µs per call, completions included` : '';
  per.sort((a, b) => a - b);
  console.log(`${name}${alloc ? ' (allocating outputs)' : ''}${shared ? ' (shared memory)' : ''}: ${per[per.length >> 1].toFixed(2)} µs per call (median of 60 batches of 100; p10 ${per[6].toFixed(2)}, p90 ${per[54].toFixed(2)})${cpu}`);
}
stream.dispose();
