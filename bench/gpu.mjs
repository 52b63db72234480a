#!/usr/bin/env node
// Decode on a real GPU (run through `npm run bench:gpu`, which checks there is one): DeepSeek dims (512 + 64, bf16),
// heads 16 and 128, batch 1 / 8 / 32, context 512 / 4096 / 32768; median of timed runs after warm-up, with the
// cache bytes moved per second. Results go to bench/results/gpu-<date>.json. Every number printed was measured here.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Stream, Tensor, mlaDecode, planDecode, backends } from '../dist/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const stream = new Stream('cuda');
const rows = [];
const kvLoraRank = 512, ropeDim = 64, width = kvLoraRank + ropeDim, blockSize = 64;
for (const heads of [16, 128])
  for (const batch of [1, 8, 32])
    for (const context of [512, 4096, 32768]) {
      const blocksPerSeq = context / blockSize;
      const cache = Tensor.empty([batch * blocksPerSeq, blockSize, width], 'bf16', { device: stream.device });
      const q = Tensor.zeros([batch, 1, heads, width], 'bf16', { device: stream.device });
      const blockTable = Tensor.from(Int32Array.from({ length: batch * blocksPerSeq }, (_, i) => i), [batch, blocksPerSeq]);
      const seqLens = Tensor.from(new Int32Array(batch).fill(context), [batch]);
      const plan = planDecode({ seqLens, numHeads: heads, stream });
      const run = () => mlaDecode({ q, cache, blockTable, seqLens, softmaxScale: 0.07, kvLoraRank, plan, stream });
      for (let i = 0; i < 3; i++) run();
      await stream.synchronize();
      const times = [];
      for (let i = 0; i < 20; i++) {
        const t0 = process.hrtime.bigint();
        run();
        await stream.synchronize();
        times.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      times.sort((a, b) => a - b);
      const ms = times[times.length >> 1];
      const bytes = batch * context * width * 2;
      rows.push({ heads, batch, context, medianMs: ms, cacheGBps: bytes / ms / 1e6 });
      console.log(`heads ${heads} batch ${batch} context ${context}: ${ms.toFixed(3)} ms, ${(bytes / ms / 1e6).toFixed(1)} GB/s of cache (measured; includes the host round trip of synchronize)`);
      cache.dispose();
      q.dispose();
    }
mkdirSync(path.join(root, 'bench', 'results'), { recursive: true });
const file = path.join(root, 'bench', 'results', `gpu-${new Date().toISOString().slice(0, 10)}.json`);
writeFileSync(file, JSON.stringify({ device: backends().find((b) => b.name === 'cuda').reason, rows }, null, 2));
console.log(`wrote ${file}`);
stream.dispose();
