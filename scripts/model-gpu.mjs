#!/usr/bin/env node
// npm run model:gpu — a performance MODEL of the CUDA decode on each target architecture (no GPU has measured it).
//
// Inputs, per target (scripts/gpu-targets.mjs: one GPU per architecture, its published limits and the labelled
// assumptions) and per benchmark shape (bench/gpu-shapes.mjs):
//   - the plan the CUDA backend makes on that GPU (its SM count and shared memory): the CTAs, their cache rows, the
//     split sequences (addon.decodePlan, the planner's own code);
//   - what the kernels issue, counted by cuda-sim (the emulator running the same kernel source): per cache tile, each
//     barrier interval's ldmatrix passes, shared-memory loads and stores, mma.sync per warp and its longest chain of
//     dependent mma, fp8 values converted (and byte-permuted before a conversion instruction),
//     and the tile's global bytes and cp.async bytes; per CTA the fixed rest (Q, epilogue); per split the combine's
//     bytes. Measured once per (configuration, query rows per CTA, cache dtype) on a short sequence.
// Clocks: a barrier interval takes its slowest pipe — shared memory (128 B/clock), the busiest sub-partition's tensor
// core (mma.sync rate), conversions — or its longest chain of dependent mma, plus a drain latency; a tile is the sum of its intervals, or the CTA's share of
// HBM bandwidth, or the memory latency over the pipeline depth, whichever is longest; CTAs start in launch order on
// free SM slots and share HBM while they run; a split decode adds the combine kernel and the gap between launches.
//
// It also models DeepSeek-V3.2's decode step (the device sparse decode and lightning indexer against this dense decode)
// on sm_90 and sm_80: scripts/model-sparse.mjs, its table in docs/sparse.md.
//   node scripts/model-gpu.mjs [--quick] [--arch 90,86] [--json file] [--markdown] [--write-docs]
// Needs a cmake-js build with cuda-sim (MLA_ADDON_PATH or build-cmake/Release) and `npm run build:ts`.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { COMMON_LIMITS, FLASHMLA, GPU_TARGETS, MODEL_ASSUMPTIONS, denseFp8DecodePath, mmaClkPerSm } from './gpu-targets.mjs';
import { BLOCK_SIZE, GPU_SHAPES, KV_LORA_RANK, ROPE_DIM, shapeKey, shapeWork } from '../bench/gpu-shapes.mjs';
import { runSparseModel, sparseMarkdownTable } from './model-sparse.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WIDTH = KV_LORA_RANK + ROPE_DIM;

async function loadApi() {
  process.env.MLA_ADDON_PATH ??= path.join(root, 'build-cmake', 'Release', 'mla_kernels.node');
  const api = await import(pathToFileURL(path.join(root, 'dist', 'index.js')).href);
  const { native } = await import(pathToFileURL(path.join(root, 'dist', 'native.js')).href);
  const addon = native();
  if (!addon.decodePlan || !addon.simConfigure) throw new Error(`${process.env.MLA_ADDON_PATH} has no cuda-sim: the model needs a cmake-js build`);
  return { api, addon };
}

const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const PHASE_KEYS = ['bytesRead', 'bytesWritten', 'ldmatrixBytes', 'ldmatrixWavefronts', 'sharedLoadBytes', 'sharedStoreBytes', 'asyncCopyBytes', 'converted', 'permuted'];

/** The counts cuda-sim gives for one CTA of `rows` query rows streaming tiles of the configuration `smemOptin` selects. */
export async function measureCounts({ api, addon }, { smemOptin, computeCapability, rows, cache }) {
  const { Stream, Tensor, mlaDecode } = api;
  const plan = addon.decodePlan({ queryLen: 1, numHeads: rows, seqLens: [1], numSms: 1, smemOptin });
  const shape = addon.decodeKernelShapes(WIDTH)[plan.config];
  const stream = new Stream('cuda-sim:0');
  const run = (tiles, splitRows) => {
    addon.simConfigure({ checkOrders: false, numSms: 1, splitRows, batchInvariant: false, smemOptin, computeCapability, profileBlock: 0 });
    const len = tiles * shape.blockN;
    const blocks = Math.ceil(len / BLOCK_SIZE);
    const cacheT = Tensor.zeros([blocks, BLOCK_SIZE, WIDTH], cache, { device: stream.device });
    const q = Tensor.zeros([1, 1, rows, WIDTH], 'bf16', { device: stream.device });
    const blockTable = Tensor.from(Int32Array.from({ length: blocks }, (_, i) => i), [1, blocks]);
    const seqLens = Tensor.from(Int32Array.of(len), [1]);
    mlaDecode({ q, cache: cacheT, blockTable, seqLens, softmaxScale: 0.07, kvLoraRank: KV_LORA_RANK, stream });
    return stream.synchronize().then(() => {
      const launches = addon.simLastOp().launches;
      cacheT.dispose();
      q.dispose();
      return launches;
    });
  };
  const [t1, t2] = [4, 6];
  const a = (await run(t1, 1 << 30)).find((l) => l.kernel === 'mlaDecodeKernel');
  const b = (await run(t2, 1 << 30)).find((l) => l.kernel === 'mlaDecodeKernel');
  const perTile = (b.profile.length - a.profile.length) / (t2 - t1);
  if (!Number.isInteger(perTile) || perTile < 1) throw new Error(`model: ${plan.config}/${rows}/${cache}: ${a.profile.length} and ${b.profile.length} barrier intervals for ${t1} and ${t2} tiles`);
  // Every tile issues the same work, so any perTile consecutive intervals of the steady state are one tile's, rotated.
  const mid = Math.floor((b.profile.length - perTile) / 2);
  const phases = b.profile.slice(mid, mid + perTile).map((p) => ({ ...p }));
  const total = { ...b.counters, bytesRead: b.bytesRead, bytesWritten: b.bytesWritten };
  const tile = {};
  for (const k of PHASE_KEYS) tile[k] = sum(phases.map((p) => p[k]));
  tile.mma = sum(phases.map((p) => sum(p.mmaPerWarp)));
  const fixed = {};
  for (const k of [...PHASE_KEYS, 'mma']) fixed[k] = Math.max(0, total[k] - t2 * tile[k]);
  fixed.barriers = Math.max(0, b.counters.barriers - t2 * perTile);
  // The combine: one split per tile.
  const split = await run(t2, shape.blockN);
  const combine = split.find((l) => l.kernel === 'mlaCombineKernel');
  const splitDecode = split.find((l) => l.kernel === 'mlaDecodeKernel');
  fixed.splitBytesWritten = splitDecode.bytesWritten / splitDecode.grid[0];
  stream.dispose();
  return {
    config: plan.config, blockM: shape.blockM, blockN: shape.blockN, stages: shape.stages, threads: shape.threads, minBlocksPerSm: shape.minBlocksPerSm,
    smemBytes: cache === 'bf16' ? shape.smemBytes : shape.smemBytesFp8,
    phases, tile, fixed, perTile,
    combine: combine && {
      readPerRowSplit: combine.bytesRead / (rows * t2),
      writtenPerRow: combine.bytesWritten / rows,
      ctas: combine.grid[0] * combine.grid[1],
      threads: combine.threads,
      barriers: combine.counters.barriers / (combine.grid[0] * combine.grid[1]),
      pdl: combine.dependentLaunch,
    },
  };
}

/** Clocks of one tile's on-chip work on a target: per barrier interval its slowest pipe, and the totals. */
function tileClocks(t, counts, fp8Cost) {
  const mmaSmsp = mmaClkPerSm(t) * COMMON_LIMITS.smsp;
  const smemOf = (p) => (p.ldmatrixWavefronts * 128 + p.sharedLoadBytes + p.sharedStoreBytes) / COMMON_LIMITS.smemBytesPerClk;
  const mmaOf = (p) => {
    const per = new Array(COMMON_LIMITS.smsp).fill(0);
    p.mmaPerWarp.forEach((n, w) => (per[w % COMMON_LIMITS.smsp] += n));
    return per;
  };
  const aluOf = (p) => (p.converted * fp8Cost.instr + (p.permuted ?? 0) * MODEL_ASSUMPTIONS.fp8PermuteInstrPerValue) / fp8Cost.perClk;
  // A warp's longest chain of dependent mma (each waiting for the previous result) takes its latency per link.
  const chainOf = (p) => Math.max(0, ...(p.mmaChainPerWarp ?? [])) * MODEL_ASSUMPTIONS.mmaLatencyClk;
  let work = 0;
  const mmaTotal = new Array(COMMON_LIMITS.smsp).fill(0);
  let smemTotal = counts.tile.asyncCopyBytes / COMMON_LIMITS.smemBytesPerClk, aluTotal = 0;
  for (const p of counts.phases) {
    const m = mmaOf(p);
    m.forEach((n, s) => (mmaTotal[s] += n));
    work += Math.max(smemOf(p), Math.max(...m) * mmaSmsp, aluOf(p), chainOf(p));
    smemTotal += smemOf(p);
    aluTotal += aluOf(p);
  }
  return { work, latency: counts.perTile * MODEL_ASSUMPTIONS.phaseLatencyClk, smem: smemTotal, mma: Math.max(...mmaTotal) * mmaSmsp, alu: aluTotal };
}

function fp8CostFor(t, cache) {
  if (cache === 'bf16') return { instr: 0, perClk: 1 };
  return { instr: MODEL_ASSUMPTIONS.fp8DecodeInstrPerValue[denseFp8DecodePath(t.arch)], perClk: COMMON_LIMITS.aluPerClk };
}

/** The modelled run of one shape on one target. */
export function modelShape(t, shape, plan, countsOf) {
  const clock = t.clockMHz * 1e6;
  const hbmPerClk = (MODEL_ASSUMPTIONS.hbmEfficiency * t.hbmGBps * 1e9) / clock;
  const memLatencyClk = (MODEL_ASSUMPTIONS.memLatencyNs * 1e-9) * clock;
  const M = shape.heads;
  const fp8Cost = fp8CostFor(t, shape.cache);
  const share = new Map();
  for (const w of plan.work) share.set(`${w[0]}/${w[2]}/${w[3]}`, (share.get(`${w[0]}/${w[2]}/${w[3]}`) ?? 0) + 1);
  const ctas = plan.work.map((w) => {
    const rows = Math.min(plan.blockM, M - w[1] * plan.blockM);
    const c = countsOf(rows);
    const tiles = Math.ceil((w[3] - w[2]) / c.blockN);
    const clk = tileClocks(t, c, fp8Cost);
    const nShare = share.get(`${w[0]}/${w[2]}/${w[3]}`);
    const fixedWork = Math.max(
      (c.fixed.ldmatrixWavefronts * 128 + c.fixed.sharedLoadBytes + c.fixed.sharedStoreBytes + c.fixed.asyncCopyBytes) / COMMON_LIMITS.smemBytesPerClk,
      (c.fixed.mma / COMMON_LIMITS.smsp) * mmaClkPerSm(t) * COMMON_LIMITS.smsp,
    );
    const fixedBytes = c.fixed.bytesRead + (w[5] >= 0 ? c.fixed.splitBytesWritten : c.fixed.bytesWritten);
    return {
      tiles, remaining: tiles, clk, c,
      // HBM bytes per tile: the cache rows once per group of CTAs sharing them, plus this CTA's Q and results spread over its tiles
      bytesPerTile: c.tile.bytesRead / nShare + c.tile.bytesWritten + (tiles ? fixedBytes / tiles : 0),
      startDelay: memLatencyClk + fixedWork + c.fixed.barriers * MODEL_ASSUMPTIONS.phaseLatencyClk,
      latencyBound: memLatencyClk / Math.max(1, c.stages - 1),
    };
  });
  const c0 = countsOf(Math.min(plan.blockM, M));
  // CTAs per SM: by shared memory and threads, and by registers no more than the kernel's __launch_bounds__ sizes them for.
  const occupancy = Math.max(1, Math.min(
    Math.floor(t.smemPerSm / (c0.smemBytes + COMMON_LIMITS.reservedSmemPerBlock)),
    Math.floor(t.threadsPerSm / c0.threads),
    c0.minBlocksPerSm,
  ));
  const slots = t.sms * occupancy;

  // Fluid simulation: CTAs enter free slots in launch order; each active CTA advances at the rate its SM's pipes and
  // the memory latency allow, all scaled down together when their HBM demand exceeds the bandwidth.
  let now = 0, next = 0;
  const active = [];
  const bound = { hbm: 0, onchip: 0, latency: 0 };
  while (next < ctas.length || active.length) {
    while (active.length < slots && next < ctas.length) {
      const x = ctas[next++];
      x.readyAt = now + x.startDelay;
      active.push(x);
    }
    const perSm = Math.min(occupancy, Math.ceil(active.length / t.sms));
    let demand = 0;
    for (const x of active) {
      if (x.readyAt > now || x.remaining <= 0) { x.rate = 0; continue; }
      const onchip = Math.max(x.clk.work + x.clk.latency, perSm * Math.max(x.clk.smem, x.clk.mma, x.clk.alu));
      x.limit = onchip >= x.latencyBound ? 'onchip' : 'latency';
      x.rate = 1 / Math.max(onchip, x.latencyBound);
      demand += x.rate * x.bytesPerTile;
    }
    const scale = demand > hbmPerClk ? hbmPerClk / demand : 1;
    let step = Infinity;
    for (const x of active) {
      if (x.readyAt > now) step = Math.min(step, x.readyAt - now);
      else if (x.remaining > 0) step = Math.min(step, x.remaining / (x.rate * scale));
      else step = 0;
    }
    if (!Number.isFinite(step)) step = 0;
    for (const x of active) {
      if (x.readyAt <= now && x.remaining > 0) {
        x.remaining -= x.rate * scale * step;
        bound[scale < 1 ? 'hbm' : x.limit] += x.rate * scale * step;
        if (x.remaining < 1e-9) x.remaining = 0;
      }
    }
    now += step;
    for (let i = active.length - 1; i >= 0; --i) if (active[i].remaining <= 0 && active[i].readyAt <= now) active.splice(i, 1);
  }
  let clocks = now;

  // The combine kernel: its bytes through HBM, its CTAs in waves of a few memory round trips each, after a gap.
  let combineUs = 0;
  if (plan.combine.length) {
    const cc = c0.combine;
    let bytes = 0;
    for (const [, mt, , n] of plan.combine) {
      const rows = Math.min(plan.blockM, M - mt * plan.blockM);
      bytes += rows * (n * cc.readPerRowSplit + cc.writtenPerRow);
    }
    const combineCtas = plan.combine.length * cc.ctas;
    const waves = Math.ceil(combineCtas / (t.sms * Math.floor(t.threadsPerSm / cc.threads)));
    const combineClk = Math.max(bytes / hbmPerClk, waves * (2 * memLatencyClk + cc.barriers * MODEL_ASSUMPTIONS.phaseLatencyClk));
    combineUs = (combineClk / clock) * 1e6 + (cc.pdl ? MODEL_ASSUMPTIONS.kernelGapPdlUs : MODEL_ASSUMPTIONS.kernelGapUs);
  }
  const decodeUs = (clocks / clock) * 1e6;
  const us = decodeUs + combineUs;
  const { bytes, flop } = shapeWork(shape);
  const flashUs = Math.max(bytes / (FLASHMLA.bandwidthFraction * t.hbmGBps * 1e9), flop / (FLASHMLA.computeFraction * t.bf16DenseTflops * 1e12)) * 1e6;
  const tiles = sum(ctas.map((x) => x.tiles));
  const limit = Object.entries(bound).sort((a, b) => b[1] - a[1])[0][0];
  return {
    arch: t.arch, gpu: t.gpu, ...shape, config: plan.config, ctas: plan.work.length, ctasPerSm: plan.work.length / t.sms, occupancy,
    smsUsed: Math.min(plan.work.length, t.sms), splitSequences: plan.combine.length, tiles,
    us, decodeUs, combineUs, tbps: bytes / us / 1e6, tflops: flop / us / 1e6, ofFlashMla: flashUs / us, limit,
  };
}

/** Models the shapes on the targets; counts are measured once per (smem opt-in, rows per CTA, cache). */
export async function runModel({ archs = Object.keys(GPU_TARGETS).map(Number), quick = false, log = () => {}, ctx, shapes = GPU_SHAPES } = {}) {
  ctx ??= await loadApi();
  const cache = new Map();
  const results = [];
  for (const arch of archs) {
    const t = GPU_TARGETS[arch];
    for (const shape of shapes.filter((s) => !quick || s.quick)) {
      const plan = ctx.addon.decodePlan({ queryLen: 1, numHeads: shape.heads, seqLens: new Array(shape.batch).fill(shape.context), numSms: t.sms, smemOptin: t.smemOptin });
      const countsOf = (rows) => {
        const key = `${t.arch}/${rows}/${shape.cache}`;
        if (!cache.has(key)) throw new Error(`model: counts for ${key} not measured`);
        return cache.get(key);
      };
      for (let mt = 0; mt * plan.blockM < shape.heads; ++mt) {
        const rows = Math.min(plan.blockM, shape.heads - mt * plan.blockM);
        const key = `${t.arch}/${rows}/${shape.cache}`;
        if (!cache.has(key)) {
          log(`measuring sm_${t.arch}'s ${plan.config} configuration, ${rows} query rows, ${shape.cache} cache under cuda-sim`);
          cache.set(key, await measureCounts(ctx, { smemOptin: t.smemOptin, computeCapability: t.arch, rows, cache: shape.cache }));
        }
      }
      results.push(modelShape(t, shape, plan, countsOf));
    }
  }
  ctx.addon.simConfigure({ checkOrders: true, numSms: 8, splitRows: 0, smemOptin: 0, computeCapability: 0, profileBlock: -1 });
  return { results, counts: Object.fromEntries(cache) };
}

/** The model of the shapes on a device seen by the CUDA backend (bench:gpu): its architecture's GPU with its SM count. */
export async function modelForDevice({ arch, sms, quick = false, ctx }) {
  const target = GPU_TARGETS[arch];
  if (!target) return { note: `no model for sm_${arch} (modelled: ${Object.keys(GPU_TARGETS).map((a) => `sm_${a}`).join(', ')})`, results: [] };
  const key = `${arch}:${sms}`;
  GPU_TARGETS[key] = { ...target, sms };
  try {
    const { results } = await runModel({ archs: [key], quick, ctx });
    return { note: `model: ${target.gpu}'s limits (scripts/gpu-targets.mjs) with this device's ${sms} SMs`, results };
  } finally {
    delete GPU_TARGETS[key];
  }
}

const fmt = (x, d) => (x >= 100 ? x.toFixed(0) : x.toFixed(d));
export function markdownTable(results) {
  const lines = [
    '| arch (GPU) | heads | batch | context | cache | config | CTAs (per SM) | model µs | model TB/s | model TFLOPS | model of FlashMLA | limit |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of results)
    lines.push(`| sm_${r.arch} (${r.gpu}) | ${r.heads} | ${r.batch} | ${r.context} | ${r.cache} | ${r.config} | ${r.ctas} (${r.ctasPerSm.toFixed(2)}) | ${fmt(r.us, 1)} | ${r.tbps.toFixed(2)} | ${fmt(r.tflops, 1)} | ${(100 * r.ofFlashMla).toFixed(0)}% | ${r.limit} |`);
  return lines.join('\n');
}

/**
 * The sparse decode step's model (scripts/model-sparse.mjs) on the targets `archs` (default sm_90 and sm_80), with the
 * dense decode of the same context (one sequence, bf16 cache) from this file's model.
 */
export async function runSparse({ archs = [90, 80], quick = false, log = () => {}, ctx } = {}) {
  ctx ??= await loadApi();
  const denseUs = async (t, shape) => {
    const dense = { heads: shape.heads, batch: shape.batch, context: shape.context, cache: 'bf16', quick: true };
    const { results } = await runModel({ archs: [t.arch], shapes: [dense], ctx });
    return results[0].us;
  };
  try {
    return await runSparseModel({ targets: archs.map((a) => GPU_TARGETS[a]), quick, ctx, denseUs, log });
  } finally {
    ctx.addon.simConfigure({ checkOrders: true, numSms: 8, splitRows: 0, smemOptin: 0, computeCapability: 0, profileBlock: -1 });
  }
}

export const SPARSE_DOC_START = '<!-- sparse-model:start -->';
export const SPARSE_DOC_END = '<!-- sparse-model:end -->';

export const DOC_START = '<!-- model:start -->';
export const DOC_END = '<!-- model:end -->';

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const opt = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
  const archs = opt('--arch')?.split(',').map(Number);
  const { results, counts } = await runModel({ archs, quick: args.includes('--quick'), log: (m) => console.error(m) });
  const sparseArchs = (archs ?? [90, 80]).filter((a) => a === 80 || a === 90);
  const sparse = sparseArchs.length ? await runSparse({ archs: sparseArchs, quick: args.includes('--quick'), log: (m) => console.error(m) }) : { rows: [], counts: {} };
  console.log('GPU decode performance MODEL (no GPU has measured any of these figures; see docs/gpu.md)\n');
  console.log(markdownTable(results));
  if (sparse.rows.length) {
    console.log('\nDeepSeek-V3.2 decode step (top-2048, one sequence) performance MODEL (no GPU has measured any of these figures; see docs/sparse.md)\n');
    console.log(sparseMarkdownTable(sparse.rows));
  }
  const out = opt('--json') ?? path.join(root, 'bench', 'results', 'gpu-model.json');
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ kind: 'model', assumptions: MODEL_ASSUMPTIONS, targets: GPU_TARGETS, flashmla: { gbps: FLASHMLA.gbps, tflops: FLASHMLA.tflops, bandwidthFraction: FLASHMLA.bandwidthFraction, computeFraction: FLASHMLA.computeFraction }, results, counts, sparse }, null, 2));
  console.error(`wrote ${out}`);
  if (args.includes('--write-docs')) {
    const doc = path.join(root, 'docs', 'gpu.md');
    const text = readFileSync(doc, 'utf8');
    const a = text.indexOf(DOC_START), b = text.indexOf(DOC_END);
    if (a < 0 || b < a) throw new Error(`${doc}: no ${DOC_START} ... ${DOC_END} block`);
    writeFileSync(doc, text.slice(0, a + DOC_START.length) + '\n' + markdownTable(results) + '\n' + text.slice(b));
    console.error(`updated ${doc}`);
    if (sparse.rows.length) {
      const sdoc = path.join(root, 'docs', 'sparse.md');
      const st = readFileSync(sdoc, 'utf8');
      const sa = st.indexOf(SPARSE_DOC_START), sb = st.indexOf(SPARSE_DOC_END);
      if (sa < 0 || sb < sa) throw new Error(`${sdoc}: no ${SPARSE_DOC_START} ... ${SPARSE_DOC_END} block`);
      writeFileSync(sdoc, st.slice(0, sa + SPARSE_DOC_START.length) + '\n' + sparseMarkdownTable(sparse.rows) + '\n' + st.slice(sb));
      console.error(`updated ${sdoc}`);
    }
  }
}
