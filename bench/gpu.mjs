#!/usr/bin/env node
// Decode on a real GPU (run through `npm run bench:gpu`, which checks there is one), for every shape of
// bench/gpu-shapes.mjs, MEASURED beside the performance MODEL of scripts/model-gpu.mjs for this architecture (with this
// device's SM count), so the first run says how far the model is off. Each row: the median, over 7 rounds, of the
// time per call of 20 calls queued back to back on one stream (one plan, as a model runner shares it across layers;
// each call uploads its block table and plan and launches decode and, when split, combine), then the bytes and FLOP
// FlashMLA's benchmark counts for it. Results go to bench/results/gpu-<date>.json. Needs a cmake-js build (cuda-sim
// for the model's counts).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Stream, Tensor, mlaDecode, planDecode, backends } from '../dist/index.js';
import { native } from '../dist/native.js';
import * as api from '../dist/index.js';
import { BLOCK_SIZE, GPU_SHAPES, KV_LORA_RANK, ROPE_DIM, shapeWork } from './gpu-shapes.mjs';
import { modelForDevice } from '../scripts/model-gpu.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cuda = backends().find((b) => b.name === 'cuda');
const device = /sm_(\d+), (\d+) SMs/.exec(cuda.reason);
let model = new Map();
if (!native().decodePlan) console.log('no model: this addon has no cuda-sim (build it with cmake-js: npm run build)');
else if (!device) console.log(`no model: the device's architecture and SM count are not in "${cuda.reason}"`);
else {
  const { note, results } = await modelForDevice({ arch: Number(device[1]), sms: Number(device[2]), ctx: { api, addon: native() } });
  model = new Map(results.map((r) => [`${r.heads}/${r.batch}/${r.context}/${r.cache}`, r]));
  console.log(note);
}

const stream = new Stream('cuda');
const width = KV_LORA_RANK + ROPE_DIM;
const rows = [];
console.log('heads batch context cache | measured µs  TB/s  TFLOPS | model µs  TB/s  TFLOPS | measured / model');
for (const shape of GPU_SHAPES) {
  const { heads, batch, context, cache: dtype } = shape;
  const blocksPerSeq = context / BLOCK_SIZE;
  const cache = Tensor.empty([batch * blocksPerSeq, BLOCK_SIZE, width], dtype, { device: stream.device });
  const q = Tensor.zeros([batch, 1, heads, width], 'bf16', { device: stream.device });
  const blockTable = Tensor.from(Int32Array.from({ length: batch * blocksPerSeq }, (_, i) => i), [batch, blocksPerSeq]);
  const seqLens = Tensor.from(new Int32Array(batch).fill(context), [batch]);
  const plan = planDecode({ seqLens, numHeads: heads, stream });
  const run = () => mlaDecode({ q, cache, blockTable, seqLens, softmaxScale: 0.07, kvLoraRank: KV_LORA_RANK, plan, stream });
  for (let i = 0; i < 5; i++) run();
  await stream.synchronize();
  const rounds = [];
  for (let r = 0; r < 7; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 20; i++) run();
    await stream.synchronize();
    rounds.push(Number(process.hrtime.bigint() - t0) / 1e3 / 20);
  }
  rounds.sort((a, b) => a - b);
  const us = rounds[rounds.length >> 1];
  const { bytes, flop } = shapeWork(shape);
  const m = model.get(`${heads}/${batch}/${context}/${dtype}`);
  const row = { heads, batch, context, cache: dtype, measuredUs: us, measuredTBps: bytes / us / 1e6, measuredTflops: flop / us / 1e6, modelUs: m?.us, modelTBps: m?.tbps, modelTflops: m?.tflops };
  rows.push(row);
  const f = (x, d = 1) => (x === undefined ? '-' : x.toFixed(d));
  console.log(`${String(heads).padStart(5)} ${String(batch).padStart(5)} ${String(context).padStart(7)} ${dtype.padEnd(8)} | measured ${f(us).padStart(8)} ${f(row.measuredTBps, 2).padStart(5)} ${f(row.measuredTflops).padStart(7)} | model ${f(m?.us).padStart(8)} ${f(m?.tbps, 2).padStart(5)} ${f(m?.tflops).padStart(7)} | ${m ? (us / m.us).toFixed(2) : '-'}`);
  cache.dispose();
  q.dispose();
}
mkdirSync(path.join(root, 'bench', 'results'), { recursive: true });
const file = path.join(root, 'bench', 'results', `gpu-${new Date().toISOString().slice(0, 10)}.json`);
writeFileSync(file, JSON.stringify({ device: cuda.reason, note: 'measured: this GPU; model: scripts/model-gpu.mjs', rows }, null, 2));
console.log(`wrote ${file}`);
stream.dispose();
