#!/usr/bin/env node
// Append against a copy of the same bytes, alternately in one process, through the same stream and synchronize: the
// ratio issue 21's append goal asks for, free of the full bench's other rows. Pin it on a shared machine, e.g.
//
//   MLA_NUM_THREADS=1 taskset -c 0 node bench/append-ab.mjs [--tokens 32768] [--rounds 9] [--reps 9] [--dtype bf16]
//
// Per round: append with each store kind forced, a memcpy (Tensor.copyFrom) of one cache's bytes, and a one-token
// append (the fixed cost of a call). Prints each one's median over the rounds, the append / copy ratios (bytes read +
// written counted alike: rows read and written; slots, positions and cos/sin are left out of both), and a checksum
// of the cache after one append: a change that keeps append bit-identical keeps it.
import { parseArgs } from 'node:util';
import { Stream, Tensor, appendLatentCache } from '../dist/index.js';
import { native } from '../dist/native.js';
import { randomArray } from './decode-data.mjs';
import { cpuModel, load, median as medianOf } from './machine.mjs';

const { values } = parseArgs({ options: {
  tokens: { type: 'string', default: '32768' }, rounds: { type: 'string', default: '9' }, reps: { type: 'string', default: '9' },
  dtype: { type: 'string', default: 'bf16' }, rope: { type: 'string', default: 'interleaved' }, only: { type: 'string' }, maxpos: { type: 'string', default: '4096' }, offset: { type: 'string', default: '0' },
} });
const tokens = +values.tokens, rounds = +values.rounds, reps = +values.reps, dtype = values.dtype;
const KV = 512, ROPE = 64, WIDTH = KV + ROPE, BLOCK = 64, MAXPOS = +values.maxpos;
const addon = native();
const eb = dtype === 'f32' ? 4 : 2;
// Shared memory throughout: Tensor.from wraps it without a copy per call.
const shared = (Ctor, n, f) => { const a = new Ctor(new SharedArrayBuffer(n * Ctor.BYTES_PER_ELEMENT)); for (let i = 0; i < n; i++) a[i] = f(i); return a; };
let seed = 12345;
const fill = (n) => randomArray(dtype, n, seed++);
const numBlocks = Math.ceil(tokens / BLOCK);
// --offset elements: the cache's rows start that far past the allocation (whose alignment the allocator decides).
const cache = Tensor.from(fill(numBlocks * BLOCK * WIDTH + +values.offset).subarray(+values.offset), [numBlocks, BLOCK, WIDTH], dtype);
const copySrc = Tensor.from(fill(numBlocks * BLOCK * WIDTH), [numBlocks, BLOCK, WIDTH], dtype);
const kvC = Tensor.from(fill(tokens * KV), [tokens, KV], dtype);
const kPe = Tensor.from(fill(tokens * ROPE), [tokens, ROPE], dtype);
const slotMapping = Tensor.from(shared(Int32Array, tokens, (i) => i), [tokens]);
const table = (fn) => shared(Float32Array, MAXPOS * ROPE / 2, (i) => fn(i * 0.001));
const cos = Tensor.from(table(Math.cos), [MAXPOS, ROPE / 2]), sin = Tensor.from(table(Math.sin), [MAXPOS, ROPE / 2]);
const positions = Tensor.from(shared(Int32Array, tokens, (i) => i % MAXPOS), [tokens]);
const one = { kvC: Tensor.from(fill(KV), [1, KV], dtype), kPe: Tensor.from(fill(ROPE), [1, ROPE], dtype), slotMapping: Tensor.from(Int32Array.of(7), [1]), positions: Tensor.from(Int32Array.of(3), [1]) };
const stream = new Stream('cpu');
const rope = values.rope === 'none' ? undefined : (t) => ({ positions: t, cos, sin, style: values.rope });

const runs = {
  stream: async () => { addon.cpuConfigure({ appendStores: 'stream' }); appendLatentCache({ cache, kvC, kPe, slotMapping, rope: rope?.(positions), stream }); await stream.synchronize(); },
  regular: async () => { addon.cpuConfigure({ appendStores: 'regular' }); appendLatentCache({ cache, kvC, kPe, slotMapping, rope: rope?.(positions), stream }); await stream.synchronize(); },
  copy: async () => { cache.copyFrom(copySrc, { stream }); await stream.synchronize(); },
  tiny: async () => { addon.cpuConfigure({ appendStores: 'auto' }); appendLatentCache({ cache, kvC: one.kvC, kPe: one.kPe, slotMapping: one.slotMapping, rope: rope?.(one.positions), stream }); await stream.synchronize(); },
};
if (values.only) for (const k of Object.keys(runs)) if (!values.only.split(',').includes(k)) runs[k] = async () => {};
const perRound = Object.fromEntries(Object.keys(runs).map((k) => [k, []]));
for (const run of Object.values(runs)) for (let i = 0; i < 2; i++) await run();
for (let r = 0; r < rounds; r++)
  for (const [name, run] of Object.entries(runs)) {
    const ms = [];
    for (let i = 0; i < reps; i++) { const t0 = process.hrtime.bigint(); await run(); ms.push(Number(process.hrtime.bigint() - t0) / 1e6); }
    perRound[name].push(medianOf(ms));
  }
addon.cpuConfigure({ appendStores: 'auto' });
await runs.stream();
const bytes = new Uint8Array((await cache.toFloat32()).buffer);
let h = 0x811c9dc5;
for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 16777619) >>> 0;
const rowBytes = tokens * WIDTH * eb * 2, copyBytes = numBlocks * BLOCK * WIDTH * eb * 2;
const ms = Object.fromEntries(Object.entries(perRound).map(([k, v]) => [k, medianOf(v)]));
const gbs = (b, t) => +(b / t / 1e6).toFixed(1);
console.log(JSON.stringify({
  cpu: cpuModel, threads: addon.cpuInfo().threads, dtype, tokens, load: load(),
  ms: Object.fromEntries(Object.entries(ms).map(([k, v]) => [k, +v.toFixed(3)])),
  gbPerSec: { stream: gbs(rowBytes, ms.stream), regular: gbs(rowBytes, ms.regular), copy: gbs(copyBytes, ms.copy) },
  ofCopy: { stream: +(gbs(rowBytes, ms.stream) / gbs(copyBytes, ms.copy)).toFixed(3), regular: +(gbs(rowBytes, ms.regular) / gbs(copyBytes, ms.copy)).toFixed(3) },
  checksum: h.toString(16),
}));
stream.dispose();
