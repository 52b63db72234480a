#!/usr/bin/env node
// node bench/append-stores.mjs [--paths avx512-bf16,avx2-fma] [--sizes 1,4,16,64,256]: append with non-temporal
// stores against regular stores, per SIMD path and size (MiB of cache rows written), on this processor; the
// measurement behind the CPU backend's run-time store rule (docs/performance-cpu.md). Alternates the two store kinds
// five times per cell and keeps the best median of each; prints GB/s (bytes read + written) and the copy bandwidth
// (memcpy of 256 MiB) measured beside them.
import os from 'node:os';
import { Stream, Tensor, appendLatentCache } from '../dist/index.js';
import { native } from '../dist/native.js';
import { cpuModel, load } from './machine.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const addon = native();
const info = addon.cpuInfo();
const paths = opt('--paths', info.supported.filter((p) => p !== 'portable').join(',')).split(',');
const sizesMiB = opt('--sizes', '1,4,16,64,256').split(',').map(Number);
const KV = 512, ROPE = 64, WIDTH = KV + ROPE, BLOCK = 64;
const stream = new Stream('cpu');

async function best(run, reps) {
  for (let i = 0; i < 2; i++) await run(); // warm-up: pages mapped, caches in their steady state
  const times = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    await run();
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b)[times.length >> 1];
}

console.log(`append stores: ${cpuModel}, ${os.cpus().length} cores, ${info.threads} threads; append stores (automatic path): ${info.appendStores}; load ${load()}`);
console.log('| path | dtype | MiB written | non-temporal GB/s | regular GB/s | regular / non-temporal | copy GB/s |');
console.log('|---|---|---|---|---|---|---|');
for (const isa of paths) {
  addon.cpuConfigure({ isa });
  console.log(`| ${isa} | | | | | automatic: ${addon.cpuInfo().appendStores} | |`);
  const copy = addon.cpuLimits(256 * 2 ** 20).copyBytesPerSec;
  for (const dtype of ['bf16', 'f32']) {
    const eb = dtype === 'f32' ? 4 : 2;
    for (const mib of sizesMiB) {
      const tokens = Math.max(BLOCK, Math.round((mib * 2 ** 20) / (WIDTH * eb) / BLOCK) * BLOCK);
      const Ctor = dtype === 'f32' ? Float32Array : Uint16Array;
      const mk = (n) => { const a = new Ctor(new SharedArrayBuffer(n * eb)); for (let i = 0; i < n; i += 97) a[i] = dtype === 'f32' ? i % 7 : 0x3f80; return a; };
      const cache = Tensor.from(mk(tokens * WIDTH), [tokens / BLOCK, BLOCK, WIDTH], dtype);
      const kvC = Tensor.from(mk(tokens * KV), [tokens, KV], dtype);
      const kPe = Tensor.from(mk(tokens * ROPE), [tokens, ROPE], dtype);
      const slotMapping = Tensor.from(Int32Array.from({ length: tokens }, (_, i) => i), [tokens]);
      const run = async () => { appendLatentCache({ cache, kvC, kPe, slotMapping, stream }); await stream.synchronize(); };
      const bytes = tokens * WIDTH * eb * 2 + tokens * 4;
      const ms = { stream: Infinity, regular: Infinity };
      const reps = Math.max(3, Math.min(30, Math.round(200 / mib)));
      for (let k = 0; k < 5; k++)
        for (const mode of ['stream', 'regular']) {
          addon.cpuConfigure({ appendStores: mode });
          ms[mode] = Math.min(ms[mode], await best(run, reps));
        }
      addon.cpuConfigure({ appendStores: 'auto' });
      const gb = (t) => (bytes / (t / 1e3) / 1e9).toFixed(1);
      console.log(`| ${isa} | ${dtype} | ${((tokens * WIDTH * eb) / 2 ** 20).toFixed(1)} | ${gb(ms.stream)} | ${gb(ms.regular)} | ${(ms.stream / ms.regular).toFixed(2)} | ${(copy / 1e9).toFixed(1)} |`);
      for (const t of [cache, kvC, kPe, slotMapping]) t.dispose?.();
    }
  }
}
addon.cpuConfigure({ isa: '', appendStores: 'auto' });
stream.dispose();
console.log(`load after: ${load()}`);
