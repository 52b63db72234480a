#!/usr/bin/env node
// npm run bench [-- --quick] [-- --no-peers] [-- --docs] [-- --rows <regex> [--merge]] [-- --pairs N] [-- --results <dir>]: CPU decode, prefill, sparse decode and append against this machine's limits and against peers,
// all measured in this run. Prints a table and writes bench/results/cpu-latest-<processor>-<path>.json (cpu-quick-latest-…
// for --quick; the key is bench/cpu-results.mjs's resultKey) and an SVG chart beside it: per row, our fraction of the
// roofline beside each peer's, one panel per dtype × heads.
//
// Per decode row: median time of timed runs after warm-up; tokens/s (query tokens), cache bytes/s, FLOP/s, and the
// fraction of the roofline = max(bytes / read bandwidth, FLOPs / arithmetic peak) / time, where both limits are measured
// by this run on all threads (a large buffer read; the fastest loop the row's dtype can use on the path in use: the
// path's fp32 FMA loop, or for bf16 rows on the avx512-bf16 path the faster of that and a bf16 dot-product loop).
// The limits are sampled several times through the run (at the start, between groups of rows, before append, at the
// end) and the best sample of each is used: on a shared machine one sample can be 20% low, and the machine's limit is
// the most it reaches. Ratios are computed once every sample is in; the JSON keeps all samples. Each row is also rated
// against the limits measured next to it (the arithmetic peak just before and after the row, the read bandwidth
// sampled before and after its group): where the two ratios differ, the machine's speed moved during the run.
// Append (rows "append bf16", "append f32": 32768 tokens of DeepSeek's row, interleaved RoPE) counts as bytes the rows
// read and written and the slot and position indices (the cos/sin tables, 1 MiB, stay in the caches: not counted). Its
// "of copy" figure is paired: 8 times, append and the copy limit's memcpy of 256 MiB (same pool threads) run side by
// side, and the row shows the median of the 8 ratios; the ratio against the run's best copy sample stays beside it.
// Peers run the same shapes on the same data, are checked against our output first, and are printed as our speed-up:
// the naive TypeScript reference (small shapes), onnxruntime-node (an ONNX graph built here), PyTorch (Debian's
// python3-torch, when /usr/bin/python3 can import torch).
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Stream, Tensor, absorbQuery, appendIndexerCache, appendLatentCache, info, lightningIndexer, mlaDecode, mlaPrefill, mlaSparseDecode, unabsorbOutput, upProjectKv } from '../dist/index.js';
import { native } from '../dist/native.js';
import { refMlaDecode, refMlaSparseDecode } from '../dist/reference.js';
import { attentionOnnx, mlaDecodeOnnx } from './onnx-graph.mjs';
import { cpuModel, load, median as middle } from './machine.mjs';
import { appendTableLines, chartSvg, resultKey, sparseTableLines, targetLines, withAppendTable, withSparseTable, withTargets, writeDocs } from './cpu-results.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const noPeers = args.includes('--no-peers');
// --rows <regex>: only the rows whose label ("bf16 h16 q1 b8 ctx4096", "prefill bf16 h16 n2048", "sparse bf16 h16 ctx8192",
// "append bf16") matches, for development; not --docs.
const rowFilter = args.includes('--rows') ? new RegExp(args[args.indexOf('--rows') + 1]) : null;
// --rounds N: the grid is timed N times over, minutes apart (default: 2 for a full run, 1 for --quick or --rows). Each
// row keeps, for us and for every peer alike, its round with the lowest median. A shared VM has slow phases lasting
// seconds to minutes (seen here: one core's decode at 78 ms for 3 s, then 54 ms, while an FMA loop measured
// 192-217 GFLOP/s throughout); a row timed once can fall in one. The limits are taken the same way (best sample).
const rounds = args.includes('--rounds') ? Math.max(1, Math.floor(+args[args.indexOf('--rounds') + 1]) || 1) : quick || rowFilter ? 1 : 2;
// --merge (with --rows matching sparse or append rows only, e.g. '^append'): the rows measured go into the stored result
// of this machine type (its full result, else its quick one), replacing rows of the same label and keeping every other
// row, so the sparse grid or the append rows can be measured on their own and shown with the rest; --docs then rewrites
// the docs from the stored results.
const merge = args.includes('--merge');
if (merge && !rowFilter) throw new Error('--merge takes --rows <regex> (the sparse or append rows to measure)');
if (rowFilter && !merge && args.includes('--docs')) throw new Error('--docs takes a full run (or --rows ... --merge): drop --rows');
if (args.includes('--results') && args.includes('--docs')) throw new Error('--docs points at bench/results: drop --results');
const addon = native();
const cpu = addon.cpuInfo();
const threads = cpu.threads;
const KV = 512, ROPE = 64, WIDTH = KV + ROPE, BLOCK = 64;
const SCALE = 1 / Math.sqrt(192);
const BOUND = { f32: 1e-4, bf16: 3e-2 }; // peer vs ours (the peers round P and the output their own way)
const PEER_FLOP_CAP = quick ? 2e10 : 2.5e10; // larger rows run without peers (time), listed in the notes
const REF_FLOP_CAP = 1e8;
const notes = [];

// --- machine -----------------------------------------------------------------------------------------------------
const cpuinfo = (() => { try { return readFileSync('/proc/cpuinfo', 'utf8'); } catch { return ''; } })();
const flags = cpuinfo.match(/flags\s*:\s*(.*)/)?.[1].split(' ') ?? [];
// Family and model tell processor types apart where the model name does not (a VM's "AMD EPYC" is Zen 3 or Zen 5).
const cpuField = (name) => { const m = cpuinfo.match(new RegExp(`^${name}\\s*:\\s*(\\d+)`, 'm')); return m ? +m[1] : undefined; };
const machine = {
  cpu: cpuModel, family: cpuField('cpu family'), model: cpuField('model'), cores: os.cpus().length, threads, memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
  isa: cpu.simd, isaReason: cpu.reason, supported: cpu.supported,
  avx512: flags.includes('avx512f'), avx512bf16: flags.includes('avx512_bf16'),
  loadBefore: load(), date: new Date().toISOString(), node: process.version, addon: info().addon,
};

// --- progress ------------------------------------------------------------------------------------------------------
let done = 0, total = 1;
function progress(label) {
  if (!process.stderr.isTTY && done % 4 !== 0 && done !== total) return;
  const w = 30, f = Math.round((done / total) * w);
  const line = `[${'#'.repeat(f)}${'.'.repeat(w - f)}] ${done}/${total} ${label}`;
  if (process.stderr.isTTY) process.stderr.write(`\r${line.padEnd(110).slice(0, 110)}`);
  else process.stderr.write(`${line}\n`);
}

// --- limits ------------------------------------------------------------------------------------------------------
const LIMIT_KEYS = ['readBytesPerSec', 'copyBytesPerSec', 'fmaFlops', 'bf16DotFlops'];
const limitSamples = [];
function sampleLimits(at) {
  const t0 = performance.now();
  const l = addon.cpuLimits(quick ? 256 * 2 ** 20 : 1024 * 2 ** 20);
  limitSamples.push({ at, date: new Date().toISOString(), load1: +os.loadavg()[0].toFixed(2), seconds: +((performance.now() - t0) / 1e3).toFixed(2), ...l });
}
// The best of every sample, per limit (a limit is what the machine can reach, so a low sample is noise).
function bestLimits() {
  const best = { threads: limitSamples[0].threads };
  for (const k of LIMIT_KEYS) best[k] = Math.max(...limitSamples.map((x) => x[k]));
  return best;
}
// The arithmetic peak right before and after each row (a small buffer: compute loops only matter here, ~50 ms):
// on a shared machine the peak moves by 20-40% within minutes, and each row is also rated against the peak around
// it, beside the run's best.
function peakNow(dtype) {
  return peakOf(addon.cpuLimits(4 * 2 ** 20), dtype);
}
// The peak a row is rated against: the fastest loop its dtype can use on this path. Only the avx512-bf16 path's bf16
// rows use vdpbf16ps; an f32 row (or any row on another path) has the fp32 FMA loop of the path's own vector width
// (cpuLimits measures the path in use, so a forced avx2-fma run is rated against 256-bit FMAs).
const dotUsable = cpu.simd === 'avx512-bf16';
function peakOf(l, dtype) {
  return dtype === 'bf16' && dotUsable ? Math.max(l.fmaFlops, l.bf16DotFlops) : l.fmaFlops;
}
process.stderr.write(`measuring this machine's limits on ${threads} threads (again between groups of rows and at the end)...\n`);
sampleLimits('start');

// --- data helpers --------------------------------------------------------------------------------------------------
// The big arrays the operations read lie in shared memory: Tensor.from wraps those without a copy per call (an
// ordinary ArrayBuffer's it mirrors, docs/lifetime.md).
const sharedArray = (Ctor, n) => new Ctor(new SharedArrayBuffer(n * Ctor.BYTES_PER_ELEMENT));

function fillRandom(arr, dtype, seed) {
  // Random values for the first chunk, then doubled copies (fast for multi-GB caches).
  const n = Math.min(arr.length, 1 << 20);
  let s = seed >>> 0;
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    const x = (s / 4294967296 - 0.5) * 2;
    if (dtype === 'f32') arr[i] = x;
    else { f[0] = x; arr[i] = u[0] >>> 16; }
  }
  for (let have = n; have < arr.length; have *= 2) arr.copyWithin(have, 0, Math.min(have, arr.length - have));
}
const toF32 = (arr, dtype) => {
  if (dtype === 'f32') return arr;
  const out = new Float32Array(arr.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < arr.length; i++) u[i] = arr[i] << 16;
  return out;
};
function relErr(a, b) {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) { num += (a[i] - b[i]) ** 2; den += b[i] ** 2; }
  return Math.sqrt(num / (den || 1));
}
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

const WARMUP_SEC = 0.03;
async function timeIt(run, budgetSec) {
  const t0 = performance.now();
  await run();
  const first = (performance.now() - t0) / 1e3;
  const reps = Math.max(3, Math.min(20, Math.floor(budgetSec / Math.max(first, 1e-4))));
  // Warm-up: WARMUP_SEC and at least two runs. After a pause, this VM's cores take a few ms to come up to speed
  // (seen here: a 0.2 ms decode ran 0.58 ms at its first repetition, 0.30 ms after twenty).
  for (let i = 0, t0w = performance.now(); i < 2 || performance.now() - t0w < WARMUP_SEC * 1e3; i++) await run();
  const times = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    await run();
    times.push((performance.now() - t) / 1e3);
  }
  return { median: median(times), reps };
}

// --- peers -----------------------------------------------------------------------------------------------------------
let ort = null;
if (!noPeers) {
  try {
    ort = (await import('onnxruntime-node')).default ?? (await import('onnxruntime-node'));
  } catch (e) {
    notes.push(`onnxruntime-node not installed (${e.message.split('\n')[0]}): its column is empty`);
  }
}
let torch = null;
if (!noPeers) {
  const probe = spawnSync('/usr/bin/python3', ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
  if (probe.status === 0) {
    const proc = spawn('/usr/bin/python3', [path.join(root, 'bench', 'torch_peer.py')], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: proc.stdout });
    const waiting = [];
    lines.on('line', (l) => waiting.shift()?.(JSON.parse(l)));
    const ready = new Promise((res) => waiting.push(res)); // its first line, once torch is imported
    torch = { version: probe.stdout.trim(), proc, ask: (job) => new Promise((res) => { waiting.push(res); proc.stdin.write(`${JSON.stringify(job)}\n`); }) };
    await ready;
  } else notes.push('PyTorch: /usr/bin/python3 cannot import torch (apt-get install python3-torch): its column is empty');
}
const shm = path.join(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), `mla-bench-${process.pid}`);
mkdirSync(shm, { recursive: true });

// --- decode rows -------------------------------------------------------------------------------------------------------
const grid = quick
  ? { dtypes: ['bf16', 'f32'], heads: [16, 128], queryLens: [1], batches: [1, 8], contexts: [512, 4096] }
  : { dtypes: ['bf16', 'f32'], heads: [16, 128], queryLens: [1, 2], batches: [1, 8, 32], contexts: [512, 4096, 32768] };
const shapes = [];
for (const dtype of grid.dtypes) for (const heads of grid.heads) for (const queryLen of grid.queryLens)
  for (const batch of grid.batches) for (const context of grid.contexts) shapes.push({ dtype, heads, queryLen, batch, context });
const memBudget = os.totalmem() * 0.5;
const rows = [];
const skipped = [];
total = shapes.length * rounds + 2;
const stream = new Stream('cpu');

if (merge && shapes.some((sh) => rowFilter.test(`${sh.dtype} h${sh.heads} q${sh.queryLen} b${sh.batch} ctx${sh.context}`)))
  throw new Error('--merge stores sparse and append rows only: the --rows regex matches decode rows');
const rowOf = new Map(); // label -> row, filled over the rounds
let group = null;
for (let round = 0; round < rounds; round++)
for (const sh of shapes) {
  const { dtype, heads, queryLen, batch, context } = sh;
  const g = `${dtype} h${heads} q${queryLen}`;
  if (rowFilter && !rowFilter.test(`${g} b${batch} ctx${context}`)) { done++; continue; }
  if (group !== null && g !== group) {
    progress(`measuring limits before ${g}`);
    sampleLimits(`before ${g}${rounds > 1 ? `, round ${round + 1}` : ''}`);
  }
  group = g;
  const eb = dtype === 'f32' ? 4 : 2;
  const cacheBytes = batch * context * WIDTH * eb;
  const M = queryLen * heads;
  const flops = 2 * batch * M * context * (WIDTH + KV);
  const peerMem = batch * context * WIDTH * 4 * 2 + batch * M * context * 4 * 3;
  if (cacheBytes * 1.3 > memBudget) {
    if (round === 0) skipped.push({ ...sh, why: `cache ${(cacheBytes / 2 ** 30).toFixed(1)} GiB > half the memory` });
    done++;
    continue;
  }
  const label = `${dtype} h${heads} q${queryLen} b${batch} ctx${context}`;
  progress(rounds > 1 ? `${label} (round ${round + 1}/${rounds})` : label);
  const blocksPerSeq = context / BLOCK, numBlocks = batch * blocksPerSeq;
  const cacheArr = sharedArray(dtype === 'f32' ? Float32Array : Uint16Array, numBlocks * BLOCK * WIDTH);
  fillRandom(cacheArr, dtype, 1234 + context);
  const qArr = sharedArray(dtype === 'f32' ? Float32Array : Uint16Array, batch * M * WIDTH);
  fillRandom(qArr, dtype, 99 + heads);
  // Blocks in a shuffled order (a paged cache is not contiguous).
  const perm = Int32Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = numBlocks - 1; i > 0; i--) { const j = (i * 2654435761) % (i + 1); [perm[i], perm[j]] = [perm[j], perm[i]]; }
  const cache = Tensor.from(cacheArr, [numBlocks, BLOCK, WIDTH], dtype);
  const q = Tensor.from(qArr, [batch, queryLen, heads, WIDTH], dtype);
  const blockTable = Tensor.from(perm, [batch, blocksPerSeq]);
  const seqLens = Tensor.from(new Int32Array(batch).fill(context), [batch]);
  const out = Tensor.empty([batch, queryLen, heads, KV], dtype);
  const lse = Tensor.empty([batch, heads, queryLen], 'f32');
  const causal = queryLen > 1;
  const run = async () => { mlaDecode({ q, cache, blockTable, seqLens, softmaxScale: SCALE, kvLoraRank: KV, causal, out, lse, stream }); await stream.synchronize(); };
  const peakBefore = peakNow(dtype);
  const ours = await timeIt(run, quick ? 0.5 : 1.5);
  const peakAfter = peakNow(dtype);
  const oursOut = await out.toFloat32();
  const bytes = cacheBytes + batch * M * (WIDTH + KV) * eb;
  // Speeds, roofline and bound are filled in at the end, from the row's best round and the run's best limits.
  let row = rowOf.get(label);
  if (!row) {
    row = { ...sh, kernel: cpu.simd, ms: null, reps: null, cacheBytes, bytes, flops, flopPerByte: flops / bytes, roofline: null, bound: null, rounds: [], peers: {} };
    rowOf.set(label, row);
    rows.push(row);
  }
  // adjacent: the peak measured around this timing and the read bandwidth sampled before and after its group
  row.rounds.push({ ms: ours.median * 1e3, reps: ours.reps, peakFlops: Math.max(peakBefore, peakAfter), sample: limitSamples.length - 1 });
  // A peer's timing of this round; the row keeps its fastest round (its error: the largest of any round).
  const peerTime = (name, ms, relErr, dtype_) => {
    const had = row.peers[name];
    row.peers[name] = { ms: had ? Math.min(had.ms, ms) : ms, msRounds: [...(had?.msRounds ?? []), ms], relErr: Math.max(had?.relErr ?? 0, relErr), dtype: dtype_ };
  };

  // Peers see the same data, each sequence's rows gathered contiguous ([B, N, D]): easier for them than paging.
  const wantPeers = !noPeers && flops <= PEER_FLOP_CAP && peerMem < memBudget;
  if (!noPeers && !wantPeers && round === 0) notes.push(`${label}: peers not run (${(flops / 1e9).toFixed(0)} GFLOP per step, above the peer cap of ${PEER_FLOP_CAP / 1e9} GFLOP)`);
  let kContig = null;
  if (wantPeers) {
    kContig = dtype === 'f32' ? new Float32Array(batch * context * WIDTH) : new Uint16Array(batch * context * WIDTH);
    const rowEls = BLOCK * WIDTH;
    for (let b = 0; b < batch; b++)
      for (let j = 0; j < blocksPerSeq; j++) kContig.set(cacheArr.subarray(perm[b * blocksPerSeq + j] * rowEls, (perm[b * blocksPerSeq + j] + 1) * rowEls), (b * blocksPerSeq + j) * rowEls);
  }
  const check = (name, got) => {
    const e = relErr(got, oursOut);
    if (!(e <= BOUND[dtype])) throw new Error(`${name} disagrees with mla-kernels on ${label}: relative error ${e.toExponential(2)}`);
    return e;
  };
  if (wantPeers && flops <= REF_FLOP_CAP) {
    const ref = refMlaDecode({
      q: { data: Float64Array.from(toF32(qArr, dtype)), shape: [batch, queryLen, heads, WIDTH] },
      cache: { data: Float64Array.from(toF32(cacheArr, dtype)), shape: [numBlocks, BLOCK, WIDTH] },
      blockTable: { data: Float64Array.from(perm), shape: [batch, blocksPerSeq] }, seqLens: { data: new Float64Array(batch).fill(context), shape: [batch] },
      softmaxScale: SCALE, kvLoraRank: KV, causal,
    });
    const err = check('reference', ref.out);
    const t0 = performance.now();
    refMlaDecode({ q: { data: Float64Array.from(toF32(qArr, dtype)), shape: [batch, queryLen, heads, WIDTH] }, cache: { data: Float64Array.from(toF32(cacheArr, dtype)), shape: [numBlocks, BLOCK, WIDTH] }, blockTable: { data: Float64Array.from(perm), shape: [batch, blocksPerSeq] }, seqLens: { data: new Float64Array(batch).fill(context), shape: [batch] }, softmaxScale: SCALE, kvLoraRank: KV, causal });
    const sec = (performance.now() - t0) / 1e3;
    peerTime('reference', sec * 1e3, err, 'f64');
  }
  if (wantPeers && ort) {
    try {
      const model = mlaDecodeOnnx({ batch, rows: M, context, width: WIDTH, kvLoraRank: KV, scale: SCALE, causal });
      const session = await ort.InferenceSession.create(model, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential' });
      const feeds = {
        // onnxruntime-node refuses memory it does not own outright (a SharedArrayBuffer: "Invalid argument"): a copy.
        Q: new ort.Tensor('float32', dtype === 'f32' ? Float32Array.from(qArr) : toF32(qArr, dtype), [batch, M, WIDTH]),
        K: new ort.Tensor('float32', toF32(kContig, dtype), [batch, context, WIDTH]),
      };
      if (causal) {
        const mask = new Float32Array(M * context);
        for (let m = 0; m < M; m++) { const t = Math.floor(m / heads), lim_ = context - queryLen + 1 + t; for (let n = lim_; n < context; n++) mask[m * context + n] = -Infinity; }
        feeds.mask = new ort.Tensor('float32', mask, [M, context]);
      }
      const res = await session.run(feeds);
      const err = check('onnxruntime', res.O.data);
      const t = await timeIt(() => session.run(feeds), quick ? 0.5 : 1.5);
      peerTime('onnxruntime', t.median * 1e3, err, 'f32');
      await session.release?.();
    } catch (e) {
      notes.push(`${label}: onnxruntime failed: ${e.message.split('\n')[0]}`);
    }
  }
  if (wantPeers && torch) {
    const files = { q: path.join(shm, 'q.bin'), k: path.join(shm, 'k.bin'), out: path.join(shm, 'o.bin') };
    writeFileSync(files.q, Buffer.from(qArr.buffer, qArr.byteOffset, qArr.byteLength));
    writeFileSync(files.k, Buffer.from(kContig.buffer, kContig.byteOffset, kContig.byteLength));
    const job = { ...files, threads, batch, rows: M, context, width: WIDTH, kvLoraRank: KV, dtype, scale: SCALE, causal, queryLen, warmup: 1, reps: 5 };
    const first = await torch.ask({ ...job, reps: 1, warmup: 0 });
    job.reps = Math.max(first.times[0] > 2 ? 1 : 3, Math.min(15, Math.floor((quick ? 0.5 : 1.5) / Math.max(first.times[0], 1e-4))));
    job.warmup = Math.max(1, Math.ceil(WARMUP_SEC / Math.max(first.times[0], 1e-4))); // as timeIt's (it runs once more before)
    const ans = await torch.ask(job);
    const got = new Float32Array(readFileSync(files.out).buffer.slice(0));
    try {
      const err = check('pytorch', got);
      const sec = median(ans.times);
      peerTime('pytorch', sec * 1e3, err, dtype);
    } catch (e) {
      notes.push(e.message);
    }
  }
  for (const t of [cache, q, blockTable, seqLens, out, lse]) t.dispose();
  done++;
}

// --- prefill rows ----------------------------------------------------------------------------------------------------
// A causal prompt of N tokens through one layer's attention, both ways, on the same weights and tokens:
//   prefill form: upProjectKv (per-head keys and values from the latent rows) + mlaPrefill;
//   decode path:  absorbQuery + mlaDecode (causal, queryLen N, over the N cached rows) + unabsorbOutput.
// Per head that is 160·N² + 131072·N multiply-adds against 544·N² + 131072·N (DeepSeek dims). The two outputs are
// checked against each other, and the peers (multi-head attention on per-head keys made for them) against ours,
// before anything is timed; peers are compared with mlaPrefill alone (they do the attention only).
const NOPE = 128, V_DIM = 128, QK = NOPE + ROPE;
const PREFILL_SCALE = 1 / Math.sqrt(QK);
const DECODE_PATH_FLOP_CAP = quick ? 3e11 : 2e12; // above it the decode path is not timed (its time is noted)
const prefillGrid = quick ? { dtypes: ['bf16', 'f32'], heads: [16], prompts: [512, 2048] } : { dtypes: ['bf16', 'f32'], heads: [16, 128], prompts: [512, 2048, 8192] };
const prefillShapes = [];
for (const dtype of prefillGrid.dtypes) for (const heads of prefillGrid.heads) for (const tokens of prefillGrid.prompts) prefillShapes.push({ dtype, heads, tokens });
const prefillLabel = (sh) => `prefill ${sh.dtype} h${sh.heads} n${sh.tokens}`;
const prefillWanted = prefillShapes.filter((sh) => !rowFilter || rowFilter.test(prefillLabel(sh)));
if (merge && prefillWanted.length) throw new Error('--merge stores sparse and append rows only: the --rows regex matches prefill rows');
total += prefillWanted.length;
const prefillRows = [];
if (prefillWanted.length) {
  progress('measuring limits before prefill');
  sampleLimits('before prefill');
}
for (const sh of prefillWanted) {
  const { dtype, heads, tokens: N } = sh;
  const label = prefillLabel(sh);
  progress(label);
  const eb = dtype === 'f32' ? 4 : 2;
  const mk = (n, seed) => { const a = sharedArray(dtype === 'f32' ? Float32Array : Uint16Array, n); fillRandom(a, dtype, seed); return a; };
  const T = (arr, shape) => Tensor.from(arr, shape, dtype);
  // Weights scaled as a trained kv_b_proj keeps keys and values O(1): entries of about 1/sqrt(kvLoraRank).
  const weights = (shape, seed) => Tensor.fromValues(toF32(mk(shape.reduce((a, b) => a * b, 1), seed), dtype).map((x) => x / Math.sqrt(KV)), shape, dtype);
  const kvCArr = mk(N * KV, 11), kPeArr = mk(N * ROPE, 12), qNopeArr = mk(N * heads * NOPE, 13), qPeArr = mk(N * heads * ROPE, 14);
  const kvC = T(kvCArr, [N, KV]), kPe = T(kPeArr, [N, ROPE]);
  const wUk = weights([heads, NOPE, KV], 15), wUv = weights([heads, V_DIM, KV], 16);
  // q = [q_nope, q_pe] per token and head for the prefill form; the same numbers as qNope / qPe for the decode path.
  const qArr = sharedArray(dtype === 'f32' ? Float32Array : Uint16Array, N * heads * QK);
  for (let i = 0; i < N * heads; i++) {
    qArr.set(qNopeArr.subarray(i * NOPE, (i + 1) * NOPE), i * QK);
    qArr.set(qPeArr.subarray(i * ROPE, (i + 1) * ROPE), i * QK + NOPE);
  }
  const q = T(qArr, [N, heads, QK]);
  const cu = Tensor.from(Int32Array.of(0, N), [2]);
  const kNope = Tensor.empty([N, heads, NOPE], dtype), v = Tensor.empty([N, heads, V_DIM], dtype);
  const out = Tensor.empty([N, heads, V_DIM], dtype), lse = Tensor.empty([N, heads], 'f32');
  const attention = () => mlaPrefill({ q, kNope, kPe, v, cuSeqLensQ: cu, cuSeqLensKv: cu, softmaxScale: PREFILL_SCALE, causal: true, out, lse, stream });
  const layer = async () => { upProjectKv({ kvC, wUk, wUv, kNope, v, stream }); attention(); await stream.synchronize(); };
  const pairs = (N * (N + 1)) / 2;
  const upFlops = 2 * N * KV * heads * (NOPE + V_DIM);
  const attnFlops = 2 * heads * pairs * (QK + V_DIM);
  const flops = upFlops + attnFlops;
  // The least it moves: latent rows and weights read, per-head keys and values written and read back, q read,
  // out and lse written.
  const bytes = (N * (KV + ROPE) + heads * (NOPE + V_DIM) * KV + 2 * N * heads * (NOPE + V_DIM) + N * heads * (QK + V_DIM)) * eb + N * heads * 4;
  const budget = quick ? 0.5 : 1.5;
  await layer();
  const oursOut = await out.toFloat32();
  const tLayer = await timeIt(layer, budget);
  const tAttn = await timeIt(async () => { attention(); await stream.synchronize(); }, budget);
  const row = { ...sh, kernel: cpu.simd, label, ms: tLayer.median * 1e3, attentionMs: tAttn.median * 1e3, reps: tLayer.reps, flops, attentionFlops: attnFlops, bytes, peers: {}, decodePath: null };

  // The decode path on the same weights and tokens (the latent rows appended to a paged cache first).
  const decodeFlops = 2 * heads * pairs * (WIDTH + KV) + 2 * 2 * N * heads * NOPE * KV;
  if (decodeFlops <= DECODE_PATH_FLOP_CAP) {
    const numBlocks = Math.ceil(N / BLOCK);
    const cache = Tensor.zeros([numBlocks, BLOCK, WIDTH], dtype);
    appendLatentCache({ cache, kvC, kPe, slotMapping: Tensor.from(Int32Array.from({ length: N }, (_, i) => i), [N]), stream });
    const blockTable = Tensor.from(Int32Array.from({ length: numBlocks }, (_, i) => i), [1, numBlocks]);
    const seqLens = Tensor.from(Int32Array.of(N), [1]);
    const qNope = T(qNopeArr, [1, N, heads, NOPE]), qPe = T(qPeArr, [1, N, heads, ROPE]);
    const qLat = Tensor.empty([1, N, heads, WIDTH], dtype), oLat = Tensor.empty([1, N, heads, KV], dtype), lseD = Tensor.empty([1, heads, N], 'f32');
    const o = Tensor.empty([1, N, heads, V_DIM], dtype);
    const decodePath = async () => {
      absorbQuery({ qNope, wUk, qPe, out: qLat, stream });
      mlaDecode({ q: qLat, cache, blockTable, seqLens, softmaxScale: PREFILL_SCALE, kvLoraRank: KV, causal: true, out: oLat, lse: lseD, stream });
      unabsorbOutput({ oLat, wUv, out: o, stream });
      await stream.synchronize();
    };
    await decodePath();
    const e = relErr(await o.toFloat32(), oursOut);
    if (!(e <= 3 * BOUND[dtype])) throw new Error(`the decode path disagrees with the prefill form on ${label}: relative error ${e.toExponential(2)}`);
    const t = await timeIt(decodePath, budget);
    row.decodePath = { ms: t.median * 1e3, reps: t.reps, flops: decodeFlops, relErr: e, speedup: t.median / tLayer.median };
    for (const x of [cache, blockTable, seqLens, qNope, qPe, qLat, oLat, lseD, o]) x.dispose();
  } else {
    notes.push(`${label}: decode path not timed (${(decodeFlops / 1e12).toFixed(1)} TFLOP per prompt, above the cap of ${DECODE_PATH_FLOP_CAP / 1e12} TFLOP)`);
  }

  // Peers: attention over per-head keys [kNope, kPe] and values made for them ([H, N, .] layouts), on the same data.
  const peerFlops = 2 * heads * N * N * (QK + V_DIM); // they compute the masked half too
  const peerMem = heads * N * N * 4 * 3 + heads * N * (QK + V_DIM) * 4 * 2;
  const wantPeers = !noPeers && peerFlops <= PEER_FLOP_CAP && peerMem < memBudget;
  if (!noPeers && !wantPeers) notes.push(`${label}: peers not run (${(peerFlops / 1e9).toFixed(0)} GFLOP, ${(peerMem / 2 ** 30).toFixed(1)} GiB per prompt, above the caps)`);
  if (wantPeers && (ort || torch)) {
    const kN = await kNope.toFloat32(), vv = await v.toFloat32(), qf = toF32(qArr, dtype), pe = toF32(kPeArr, dtype);
    const Qh = new Float32Array(heads * N * QK), Kh = new Float32Array(heads * N * QK), Vh = new Float32Array(heads * N * V_DIM);
    for (let t = 0; t < N; t++)
      for (let h = 0; h < heads; h++) {
        Qh.set(qf.subarray((t * heads + h) * QK, (t * heads + h + 1) * QK), (h * N + t) * QK);
        Kh.set(kN.subarray((t * heads + h) * NOPE, (t * heads + h + 1) * NOPE), (h * N + t) * QK);
        Kh.set(pe.subarray(t * ROPE, (t + 1) * ROPE), (h * N + t) * QK + NOPE);
        Vh.set(vv.subarray((t * heads + h) * V_DIM, (t * heads + h + 1) * V_DIM), (h * N + t) * V_DIM);
      }
    // Peers answer [H, N, V]; ours is [N, H, V].
    const ourHeadMajor = new Float32Array(heads * N * V_DIM);
    for (let t = 0; t < N; t++) for (let h = 0; h < heads; h++) ourHeadMajor.set(oursOut.subarray((t * heads + h) * V_DIM, (t * heads + h + 1) * V_DIM), (h * N + t) * V_DIM);
    const check = (name, got) => {
      const e = relErr(got, ourHeadMajor);
      if (!(e <= BOUND[dtype])) throw new Error(`${name} disagrees with mla-kernels on ${label}: relative error ${e.toExponential(2)}`);
      return e;
    };
    if (ort) {
      try {
        const session = await ort.InferenceSession.create(attentionOnnx({ heads, queries: N, keys: N, width: QK, vWidth: V_DIM, scale: PREFILL_SCALE, causal: true }),
          { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential' });
        const mask = new Float32Array(N * N);
        for (let i = 0; i < N; i++) for (let j = i + 1; j < N; j++) mask[i * N + j] = -Infinity;
        const feeds = { Q: new ort.Tensor('float32', Qh, [heads, N, QK]), K: new ort.Tensor('float32', Kh, [heads, N, QK]), V: new ort.Tensor('float32', Vh, [heads, N, V_DIM]), mask: new ort.Tensor('float32', mask, [N, N]) };
        const res = await session.run(feeds);
        const err = check('onnxruntime', res.O.data);
        const t = await timeIt(() => session.run(feeds), budget);
        row.peers.onnxruntime = { ms: t.median * 1e3, relErr: err, dtype: 'f32', speedup: t.median / tAttn.median };
        await session.release?.();
      } catch (e) {
        if (/disagrees/.test(e.message)) throw e;
        notes.push(`${label}: onnxruntime failed: ${e.message.split('\n')[0]}`);
      }
    }
    if (torch) {
      const raw = (f32) => (dtype === 'f32' ? f32 : Uint16Array.from(new Uint32Array(f32.buffer), (u) => u >>> 16)); // bf16: truncation of exact values
      const files = { q: path.join(shm, 'q.bin'), k: path.join(shm, 'k.bin'), v: path.join(shm, 'v.bin'), out: path.join(shm, 'o.bin') };
      for (const [f, a] of [[files.q, raw(Qh)], [files.k, raw(Kh)], [files.v, raw(Vh)]]) writeFileSync(f, Buffer.from(a.buffer, a.byteOffset, a.byteLength));
      const job = { kind: 'sdpa', ...files, threads, heads, tokens: N, width: QK, vWidth: V_DIM, dtype, scale: PREFILL_SCALE, causal: true, warmup: 1, reps: 3 };
      const ans = await torch.ask(job);
      try {
        const err = check('pytorch', new Float32Array(readFileSync(files.out).buffer.slice(0)));
        const sec = median(ans.times);
        row.peers.pytorch = { ms: sec * 1e3, relErr: err, dtype, speedup: sec / tAttn.median };
      } catch (e) {
        notes.push(e.message);
      }
    }
  }
  prefillRows.push(row);
  for (const x of [kvC, kPe, wUk, wUv, q, cu, kNope, v, out, lse]) x.dispose();
  done++;
}

// --- sparse rows (DeepSeek-V3.2) -----------------------------------------------------------------------------------
// One decode step of one sequence at context N: the lightning indexer (64 heads of 128 over N fp8 keys with their
// scales, top-2048) and the sparse decode over the 2048 rows it selects, against the dense decode of the same context
// on the same cache (bf16). The sparse output is checked against the float64 reference on the selected rows first.
const SPARSE_TOPK = 2048, INDEX_HEADS = 64, INDEX_DIM = 128;
const sparseGrid = quick ? { heads: [16], contexts: [8192] } : { heads: [16, 128], contexts: [8192, 32768, 131072] };
const sparseShapes = [];
for (const heads of sparseGrid.heads) for (const context of sparseGrid.contexts) sparseShapes.push({ dtype: 'bf16', heads, context });
const sparseLabel = (sh) => `sparse ${sh.dtype} h${sh.heads} ctx${sh.context}`;
const sparseWanted = sparseShapes.filter((sh) => !rowFilter || rowFilter.test(sparseLabel(sh)));
total += sparseWanted.length;
const sparseRows = [];
if (sparseWanted.length) {
  progress('measuring limits before sparse');
  sampleLimits('before sparse');
}
for (const sh of sparseWanted) {
  const { dtype, heads, context } = sh;
  const label = sparseLabel(sh);
  progress(label);
  const numBlocks = context / BLOCK;
  // Shared memory, as the decode rows': an ordinary array would be copied into its mirror at every call (the whole cache).
  const mk = (n, seed) => { const a = sharedArray(Uint16Array, n); fillRandom(a, dtype, seed); return a; };
  const cacheArr = mk(numBlocks * BLOCK * WIDTH, 7 + context);
  const cache = Tensor.from(cacheArr, [numBlocks, BLOCK, WIDTH], dtype);
  const qArr = mk(heads * WIDTH, 11 + heads);
  const q = Tensor.from(qArr, [1, 1, heads, WIDTH], dtype);
  const perm = Int32Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = numBlocks - 1; i > 0; i--) { const j = (i * 2654435761) % (i + 1); [perm[i], perm[j]] = [perm[j], perm[i]]; }
  const blockTable = Tensor.from(perm, [1, numBlocks]);
  const seqLens = Tensor.from(Int32Array.of(context), [1]);
  const keyCache = Tensor.zeros([numBlocks, BLOCK, INDEX_DIM], 'fp8_e4m3');
  const keyScales = Tensor.zeros([numBlocks, BLOCK], 'f32');
  appendIndexerCache({ cache: keyCache, scales: keyScales, k: Tensor.from(mk(context * INDEX_DIM, 3), [context, INDEX_DIM], dtype), slotMapping: Tensor.from(Int32Array.from({ length: context }, (_, i) => i), [context]), stream });
  const indexQ = Tensor.from(mk(INDEX_HEADS * INDEX_DIM, 5), [1, 1, INDEX_HEADS, INDEX_DIM], dtype);
  const weights = Tensor.from(new Float32Array(INDEX_HEADS).map((_, i) => ((i * 37) % 11) / 11 - 0.3), [1, 1, INDEX_HEADS]);
  const sel = lightningIndexer({ q: indexQ, weights, cache: keyCache, scales: keyScales, blockTable, seqLens, topk: SPARSE_TOPK, stream });
  const out = Tensor.empty([1, 1, heads, KV], dtype), lse = Tensor.empty([1, heads, 1], 'f32');
  mlaSparseDecode({ q, cache, indices: sel.indices, softmaxScale: SCALE, kvLoraRank: KV, out, lse, stream });
  // Checked against the reference on the selected rows (a cache of just those rows, in order).
  const slots = (await sel.indices.read()).filter((x) => x >= 0);
  const picked = new Float64Array(slots.length * WIDTH);
  const cacheF32 = toF32(cacheArr, dtype);
  slots.forEach((slot, r) => { for (let c = 0; c < WIDTH; c++) picked[r * WIDTH + c] = cacheF32[slot * WIDTH + c]; });
  const ref = refMlaSparseDecode({ q: { data: Float64Array.from(toF32(qArr, dtype)), shape: [1, 1, heads, WIDTH] }, cache: { data: picked, shape: [slots.length, 1, WIDTH] },
    indices: { data: Int32Array.from(slots, (_, r) => r), shape: [1, 1, slots.length] }, softmaxScale: SCALE, kvLoraRank: KV });
  const err = relErr(await out.toFloat32(), ref.out);
  if (!(err <= BOUND[dtype])) throw new Error(`mlaSparseDecode disagrees with the reference on ${label}: relative error ${err.toExponential(2)}`);
  const budget = quick ? 0.5 : 1.5;
  const tIndexer = await timeIt(async () => { lightningIndexer({ q: indexQ, weights, cache: keyCache, scales: keyScales, blockTable, seqLens, topk: SPARSE_TOPK, indices: sel.indices, scores: sel.scores, stream }); await stream.synchronize(); }, budget);
  const tSparse = await timeIt(async () => { mlaSparseDecode({ q, cache, indices: sel.indices, softmaxScale: SCALE, kvLoraRank: KV, out, lse, stream }); await stream.synchronize(); }, budget);
  const tDense = await timeIt(async () => { mlaDecode({ q, cache, blockTable, seqLens, softmaxScale: SCALE, kvLoraRank: KV, out, lse, stream }); await stream.synchronize(); }, budget);
  const rowsRead = Math.min(SPARSE_TOPK, context);
  sparseRows.push({
    ...sh, label, topk: SPARSE_TOPK, relErr: err,
    sparse: { ms: tSparse.median * 1e3, reps: tSparse.reps, bytes: rowsRead * (WIDTH * 2 + 4) + heads * (WIDTH + KV) * 2, flops: 2 * heads * rowsRead * (WIDTH + KV) },
    dense: { ms: tDense.median * 1e3, reps: tDense.reps, bytes: context * WIDTH * 2 + heads * (WIDTH + KV) * 2, flops: 2 * heads * context * (WIDTH + KV) },
    indexer: { ms: tIndexer.median * 1e3, reps: tIndexer.reps, bytes: context * (INDEX_DIM + 4) + SPARSE_TOPK * 8, flops: 2 * INDEX_HEADS * INDEX_DIM * context },
  });
  for (const x of [cache, q, blockTable, seqLens, keyCache, keyScales, indexQ, weights, sel.indices, sel.scores, out, lse]) x.dispose();
  done++;
}

// --- append --------------------------------------------------------------------------------------------------------
// Rows "append bf16" and "append f32" (--rows matches these labels too). Each row is rated against a copy measured right
// beside it: the machine's memory speed swings by a third from minute to minute, so the run's best copy sample against
// append's own window rates one fast moment of the copy against an average one of append.
const appendLabel = (dtype) => `append ${dtype}`;
const appendWanted = ['bf16', 'f32'].filter((dtype) => !rowFilter || rowFilter.test(appendLabel(dtype)));
// --pairs N: append / copy pairs per append row (default 8; the test of the merge passes 2 for CI's time).
const APPEND_PAIRS = args.includes('--pairs') ? Math.max(1, Math.floor(+args[args.indexOf('--pairs') + 1]) || 8) : 8;
// The copy beside each append: 256 MiB, far past the caches (Zen 5, two threads: a copy the size of append's rows,
// 38-75 MB, ran at 57-105 GB/s from one call to the next, the L3 holding part of it), and like the run's 1 GiB limit
// samples past glibc 2.36's non-temporal threshold there (127 MiB per memcpy; each thread copies half), so both copy
// with non-temporal stores, as append does. About 1.8 s a pair, mostly mapping the buffers' pages.
const PAIR_COPY_BYTES = 256 * 2 ** 20;
if (appendWanted.length) {
  progress('measuring limits before append');
  sampleLimits('before append');
}
total += appendWanted.length - 2;
const appendRows = [];
for (const dtype of appendWanted) {
  progress(appendLabel(dtype));
  const tokens = quick ? 8192 : 32768, eb = dtype === 'f32' ? 4 : 2;
  const numBlocks = tokens / BLOCK;
  const mk = (n) => { const a = sharedArray(dtype === 'f32' ? Float32Array : Uint16Array, n); fillRandom(a, dtype, n); return a; };
  const cache = Tensor.from(mk(numBlocks * BLOCK * WIDTH), [numBlocks, BLOCK, WIDTH], dtype);
  const kvC = Tensor.from(mk(tokens * KV), [tokens, KV], dtype);
  const kPe = Tensor.from(mk(tokens * ROPE), [tokens, ROPE], dtype);
  const slots = Int32Array.from({ length: tokens }, (_, i) => i);
  const slotMapping = Tensor.from(slots, [tokens]);
  const maxPos = 4096;
  const table = (f) => { const a = sharedArray(Float32Array, maxPos * ROPE / 2); for (let i = 0; i < a.length; i++) a[i] = f(i); return a; };
  const cos = Tensor.from(table(Math.cos), [maxPos, ROPE / 2]);
  const sin = Tensor.from(table(Math.sin), [maxPos, ROPE / 2]);
  const positions = Tensor.from(Int32Array.from({ length: tokens }, (_, i) => i % maxPos), [tokens]);
  const run = async () => { appendLatentCache({ cache, kvC, kPe, slotMapping, rope: { positions, cos, sin, style: 'interleaved' }, stream }); await stream.synchronize(); };
  // Bytes counted are memory traffic: the rows read (kvC, kPe) and written (cache), and the slot and position indices.
  // The cos/sin tables (4096 positions, 1 MiB) are read from the caches, not memory, and are not counted.
  const rowBytes = tokens * WIDTH * eb;
  const bytes = 2 * rowBytes + tokens * 4 * 2;
  // The automatic store choice, and each store kind forced, alternated three times over (best median of each): the
  // comparison the run-time rule rests on, on this processor and path.
  const ms = { auto: Infinity, stream: Infinity, regular: Infinity };
  for (let k = 0; k < 3; k++)
    for (const mode of Object.keys(ms)) {
      addon.cpuConfigure({ appendStores: mode });
      try { ms[mode] = Math.min(ms[mode], (await timeIt(run, 0.3)).median * 1e3); } finally { addon.cpuConfigure({ appendStores: 'auto' }); }
    }
  // Paired with the copy limit: APPEND_PAIRS times, append (best of 5 calls after 2 warm-up calls) and the copy limit's
  // memcpy (best of 5, on the same pool threads) of PAIR_COPY_BYTES, in alternating order; the row's figure is the
  // median of the per-pair ratios.
  const pairs = [];
  const appendBest = async () => {
    const times = [];
    for (let i = 0; i < 7; i++) { const t = performance.now(); await run(); if (i >= 2) times.push(performance.now() - t); }
    return Math.min(...times);
  };
  for (let k = 0; k < APPEND_PAIRS; k++) {
    let appendMs, copyBytesPerSec;
    if (k % 2 === 0) { appendMs = await appendBest(); copyBytesPerSec = addon.cpuLimits(PAIR_COPY_BYTES).copyBytesPerSec; }
    else { copyBytesPerSec = addon.cpuLimits(PAIR_COPY_BYTES).copyBytesPerSec; appendMs = await appendBest(); }
    pairs.push({ appendMs, copyBytesPerSec, ratio: bytes / (appendMs / 1e3) / copyBytesPerSec });
  }
  const written = rowBytes;
  appendRows.push({ label: appendLabel(dtype), dtype, tokens, ms: ms.auto, bytes, bytesCounted: 'rows read + written, slot and position indices (cos/sin tables: cached, not counted)',
    bytesPerSec: bytes / (ms.auto / 1e3), ofCopyPaired: middle(pairs.map((x) => x.ratio)), pairs, ofCopy: null,
    stores: cpu.streamAboveBytes >= 0 && written >= cpu.streamAboveBytes ? 'stream' : 'regular', streamMs: ms.stream, regularMs: ms.regular });
  for (const t of [cache, kvC, kPe, slotMapping, cos, sin, positions]) t.dispose();
  done++;
}
progress('measuring limits at the end');
sampleLimits('end');
progress('done');
process.stderr.write('\n');

// Ratios against the best limits now that every sample is in.
const lim = bestLimits();
const peak = peakOf(lim, 'bf16');
const limits = { ...lim, peakFlops: peak, peakFrom: peak > lim.fmaFlops ? 'bf16 dot (vdpbf16ps)' : 'fp32 FMA', f32PeakFlops: lim.fmaFlops, samples: limitSamples };
// Each row's best round, and our speed-up over each peer's best round.
for (const r of rows) {
  const best = r.rounds.reduce((a, b) => (b.ms < a.ms ? b : a));
  const sec = best.ms / 1e3;
  Object.assign(r, { ms: best.ms, reps: best.reps, tokensPerSec: (r.batch * r.queryLen) / sec, cacheBytesPerSec: r.cacheBytes / sec, flopsPerSec: r.flops / sec });
  r.adjacent = { peakFlops: best.peakFlops, sample: best.sample, readBytesPerSec: null, roofline: null };
  for (const p of Object.values(r.peers)) p.speedup = p.ms / r.ms;
}
for (const r of rows) {
  const rowPeak = peakOf(lim, r.dtype);
  r.roofline = Math.max(r.bytes / lim.readBytesPerSec, r.flops / rowPeak) / (r.ms / 1e3);
  r.bound = r.bytes / lim.readBytesPerSec > r.flops / rowPeak ? 'memory' : 'compute';
  // A peer's own fraction of the roofline: twice its speed needs twice that fraction from us.
  for (const p of Object.values(r.peers)) p.roofline = r.roofline / p.speedup;
}
for (const r of rows) {
  const a = r.adjacent;
  a.readBytesPerSec = Math.max(limitSamples[a.sample].readBytesPerSec, limitSamples[a.sample + 1].readBytesPerSec);
  a.roofline = Math.max(r.bytes / a.readBytesPerSec, r.flops / a.peakFlops) / (r.ms / 1e3);
}
for (const r of prefillRows) {
  const sec = r.ms / 1e3;
  Object.assign(r, { tokensPerSec: r.tokens / sec, flopsPerSec: r.flops / sec, attentionFlopsPerSec: r.attentionFlops / (r.attentionMs / 1e3) });
  r.roofline = Math.max(r.bytes / lim.readBytesPerSec, r.flops / peak) / sec;
  r.rooflineFp32 = Math.max(r.bytes / lim.readBytesPerSec, r.flops / lim.fmaFlops) / sec; // against the fp32 FMA peak the kernels use
  for (const p of Object.values(r.peers)) p.roofline = (Math.max(r.bytes / lim.readBytesPerSec, r.attentionFlops / peak) / (r.attentionMs / 1e3)) / p.speedup;
}
for (const r of sparseRows)
  for (const part of [r.sparse, r.dense, r.indexer]) part.roofline = Math.max(part.bytes / lim.readBytesPerSec, part.flops / peak) / (part.ms / 1e3);
// Beside the paired figure, append's best median against the run's best copy sample (the figure before the pairs).
for (const a of appendRows) a.ofCopy = a.bytesPerSec / lim.copyBytesPerSec;
stream.dispose();
torch?.proc.stdin.end();
rmSync(shm, { recursive: true, force: true });
machine.loadAfter = load();

// --- report --------------------------------------------------------------------------------------------------------
const G = (x) => (x / 1e9).toFixed(x >= 1e11 ? 0 : 1);
const ratio = (p) => (p ? `${p.speedup.toFixed(p.speedup >= 10 ? 0 : 1)}x` : '—');
const lines = [];
lines.push(`mla-kernels CPU benchmark, ${machine.date.slice(0, 16).replace('T', ' ')} UTC, ${quick ? 'quick' : 'full'} run` +
  (rounds > 1 ? `, ${rounds} rounds (each row and each peer at its fastest round)` : ''));
lines.push(`machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB; load average ${machine.loadBefore} before, ${machine.loadAfter} after`);
lines.push(`kernels: ${cpu.simd} (${cpu.reason}); ${threads} threads`);
lines.push(`limits (this run, ${lim.threads} threads, best of ${limitSamples.length} samples): read ${G(lim.readBytesPerSec)} GB/s, copy ${G(lim.copyBytesPerSec)} GB/s, fp32 FMA ${G(lim.fmaFlops)} GFLOP/s, bf16 dot ${G(lim.bf16DotFlops)} GFLOP/s → peak of bf16 rows ${G(peak)} (${limits.peakFrom}), of f32 rows ${G(lim.fmaFlops)} (fp32 FMA)`);
// How far the samples spread: the lowest sample as a fraction of the best, per limit.
const lowest = (k) => (lim[k] > 0 ? Math.min(...limitSamples.map((x) => x[k])) / lim[k] : 1).toFixed(2);
lines.push(`limit samples (start, between groups of rows, before append, end): lowest / best: read ${lowest('readBytesPerSec')}, copy ${lowest('copyBytesPerSec')}, fp32 FMA ${lowest('fmaFlops')}` +
  (lim.bf16DotFlops > 0 ? `, bf16 dot ${lowest('bf16DotFlops')}` : ''));
lines.push('');
if (rows.length) lines.push('| dtype | heads | qLen | batch | context | ms | tokens/s | cache GB/s | GFLOP/s | FLOP/B | roofline: best limits / adjacent | vs ref | vs onnxruntime | vs PyTorch |');
if (rows.length) lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows)
  lines.push(`| ${r.dtype} | ${r.heads} | ${r.queryLen} | ${r.batch} | ${r.context} | ${r.ms.toFixed(r.ms < 10 ? 3 : 1)} | ${r.tokensPerSec.toFixed(0)} | ${G(r.cacheBytesPerSec)} | ${G(r.flopsPerSec)} | ${r.flopPerByte.toFixed(0)} | ${r.roofline.toFixed(2)} / ${r.adjacent.roofline.toFixed(2)} (${r.bound}) | ${ratio(r.peers.reference)} | ${ratio(r.peers.onnxruntime)} | ${ratio(r.peers.pytorch)} |`);
if (rows.length) lines.push('');
if (appendRows.length) lines.push(...appendTableLines({ appendRows }));
if (prefillRows.length) {
  lines.push('');
  lines.push('| prefill (causal prompt, one layer) | heads | tokens | ms: up-projection + attention | attention ms | tokens/s | GFLOP/s (attention) | roofline: peak / fp32 FMA | decode path ms | speed-up over the decode path | vs onnxruntime | vs PyTorch |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of prefillRows)
    lines.push(`| ${r.dtype} | ${r.heads} | ${r.tokens} | ${r.ms.toFixed(1)} | ${r.attentionMs.toFixed(1)} | ${r.tokensPerSec.toFixed(0)} | ${G(r.flopsPerSec)} (${G(r.attentionFlopsPerSec)}) | ${r.roofline.toFixed(2)} / ${r.rooflineFp32.toFixed(2)} | ` +
      `${r.decodePath ? r.decodePath.ms.toFixed(1) : '—'} | ${r.decodePath ? `${r.decodePath.speedup.toFixed(2)}x` : '—'} | ${ratio(r.peers.onnxruntime)} | ${ratio(r.peers.pytorch)} |`);
}
if (sparseRows.length) lines.push('', ...sparseTableLines({ sparseRows }));
// Targets (the goals: bench/cpu-results.mjs's GOALS).
lines.push('');
lines.push(...targetLines({ rows, appendRows }));
// Prefill: the layer's attention in multi-head form against the decode path, >= 2x at 2048 tokens and >= 2.5x at 8192.
const prefillTargets = prefillRows.filter((r) => r.decodePath && r.tokens >= 2048);
if (prefillRows.length)
  lines.push(`          prefill speed-up over the decode path >=2x at 2048 tokens, >=2.5x at 8192: ` +
    (prefillTargets.length ? prefillTargets.map((r) => `${r.dtype} h${r.heads} n${r.tokens} ${r.decodePath.speedup.toFixed(2)}x${r.decodePath.speedup >= (r.tokens >= 8192 ? 2.5 : 2) ? '' : ' (missed)'}`).join(', ') : 'no row of 2048 tokens or more timed both ways'));
if (torch) lines.push(`peers: PyTorch ${torch.version} (bmm → softmax → bmm, ${threads} threads, same dtype)`);
if (ort) lines.push(`peers: onnxruntime-node ${ortVersion()} (MatMul → Mul → [Add mask] → Softmax → MatMul graph built by bench/onnx-graph.mjs; f32 only: ORT's CPU MatMul has no bf16)`);
if (skipped.length) lines.push(`skipped: ${skipped.map((s) => `${s.dtype} h${s.heads} q${s.queryLen} b${s.batch} ctx${s.context} (${s.why})`).join('; ')}`);
for (const n of notes) lines.push(`note: ${n}`);
console.log(lines.join('\n'));

function ortVersion() {
  try { return JSON.parse(readFileSync(path.join(root, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')).version; } catch { return '?'; }
}

// --- files ---------------------------------------------------------------------------------------------------------
// --results <dir>: where the files go (the test of this script writes to a temporary directory).
const dir = args.includes('--results') ? path.resolve(args[args.indexOf('--results') + 1]) : path.join(root, 'bench', 'results');
mkdirSync(dir, { recursive: true });
const result = { machine, limits, quick, rounds, rows, prefillRows, sparseRows, appendRows, skipped, notes, table: lines.join('\n') };
if (merge) {
  const key = resultKey(machine);
  const target = [`cpu-latest-${key}.json`, `cpu-quick-latest-${key}.json`].map((f) => path.join(dir, f)).find((f) => existsSync(f));
  if (!target) throw new Error(`--merge: no stored result of ${key} in ${dir} to merge into (a full or quick run makes one)`);
  const stored = JSON.parse(readFileSync(target, 'utf8'));
  if (sparseRows.length) {
    const byLabel = new Map((stored.sparseRows ?? []).map((r) => [r.label, r]));
    for (const r of sparseRows) byLabel.set(r.label, { ...r, run: machine.date });
    stored.sparseRows = [...byLabel.values()].sort((a, b) => a.heads - b.heads || a.context - b.context);
    const { samples, ...runLimits } = limits;
    stored.sparseRuns = [...(stored.sparseRuns ?? []).filter((x) => stored.sparseRows.some((r) => r.run === x.machine.date)), { machine, limits: runLimits, limitSamples: samples }];
    stored.table = withSparseTable(stored.table, sparseTableLines(stored));
  }
  if (appendRows.length) {
    const byDtype = new Map((stored.appendRows ?? []).map((a) => [a.dtype, a]));
    for (const a of appendRows) byDtype.set(a.dtype, { ...a, run: machine.date });
    stored.appendRows = ['bf16', 'f32'].filter((d) => byDtype.has(d)).map((d) => byDtype.get(d));
    const { samples, ...runLimits } = limits;
    stored.appendRuns = [...(stored.appendRuns ?? []).filter((x) => stored.appendRows.some((a) => a.run === x.machine.date)), { machine, limits: runLimits, limitSamples: samples }];
    stored.table = withAppendTable(stored.table, appendTableLines(stored));
  }
  stored.table = withTargets(stored.table, targetLines(stored));
  writeFileSync(target, JSON.stringify(stored, null, 2));
  const what = [sparseRows.length && `${sparseRows.length} sparse rows`, appendRows.length && `${appendRows.length} append rows`].filter(Boolean).join(' and ');
  console.log(`\nmerged ${what} into ${path.relative(root, target).startsWith('..') ? target : path.relative(root, target)} (its other rows kept)`);
  if (args.includes('--docs')) {
    writeDocs(dir);
    console.log('updated the benchmark block of docs/performance-cpu.md');
  }
  process.exit(0);
}
// The latest whole run of each machine type (processor and SIMD path) stays in the repository under its key; a
// --rows run is a development run, stamped with its date, and leaves the latest results alone.
const base = rowFilter ? `cpu-rows-${machine.date.slice(0, 19).replace(/[:T]/g, '-')}` : `cpu${quick ? '-quick' : ''}-latest-${resultKey(machine)}`;
writeFileSync(path.join(dir, `${base}.json`), JSON.stringify(result, null, 2));
writeFileSync(path.join(dir, `${base}.svg`), await chartSvg(result));
const shown = path.relative(root, path.join(dir, base));
console.log(`\nwrote ${shown.startsWith('..') ? path.join(dir, base) : shown}.json and .svg`);

// --docs (full runs): the benchmark block of docs/performance-cpu.md, one table per machine type from the latest
// result of each.
if (args.includes('--docs') && !quick) {
  writeDocs(dir);
  console.log('updated the benchmark block of docs/performance-cpu.md');
}
