// The GPU performance MODEL of DeepSeek-V3.2's decode step (issue 22), beside model-gpu.mjs's dense decode: the
// device sparse decode (csrc/kernels/sparse.cu) over top-2048 rows and the lightning indexer (csrc/kernels/indexer.cu:
// its scores kernel and its top-k kernel) of one sequence, against the dense decode of the same context. No GPU has
// measured any of it.
//
// Inputs: cuda-sim's counts of one CTA of each real kernel, per barrier interval (global bytes, shared-memory bytes,
// fp8 values converted), taken on small runs and scaled, since the emulator would take minutes on the full shapes:
//   - sparse decode: one CTA (up to 16 heads) over T1 and T2 selected rows; the intervals of the T2 - T1 rows between
//     (whole stages of rows) are the difference, the rest is the CTA's fixed work. The step runs ceil(heads / 16) head
//     groups times the split over the rows (plan.cc's sparseDecodeSplit itself, through cuda-sim's sparseDecodePlan
//     hook), one CTA per SM at a time, then the decode's combine kernel over the partials.
//   - indexer scores: one CTA of 64 keys (every CTA of the grid does the same); the grid has ceil(context / 64).
//   - indexer top-k: one CTA per query row over V1 and V2 visible scores (topk below both, so the radix select runs);
//     each interval's counts are affine in the visible count, so they are extrapolated to the context.
// Clocks, per barrier interval: its slowest on-chip pipe (shared memory at 128 B/clock, the fp8 conversions' integer
// work), plus its memory round trips, plus the barrier drain. A thread waits for its plain loads, which overlap only
// as far as the compiler unrolls the loop issuing them, taken as nvcc's default unrolling by LOADS_OVERLAPPED; so an
// interval costs ceil(plain global loads per thread / LOADS_OVERLAPPED) round trips (cuda-sim counts the loads per
// interval). The sparse decode's rows come by cp.async (16-byte pieces, asyncCopyBytes) one stage ahead: their round
// trip overlaps the stage before, so its stages take the longer of their intervals and one round trip each. The
// sparse decode and the top-k
// run one CTA per SM, so their time is that chain; the indexer's scores run many CTAs per SM, so there an SM's time is
// its CTAs' shared-memory work or their chains (the resident ones overlapping theirs), whichever is longer.
// These kernels use CUDA cores only (no mma): their FP32 FMAs and warp shuffles are not counted by cuda-sim; every FMA
// of their inner loops comes with a shared-memory load, which is the pipe the model times.
import { readFileSync } from 'node:fs';
import { COMMON_LIMITS, FLASHMLA, MODEL_ASSUMPTIONS, fp8DecodePath } from './gpu-targets.mjs';
import { BLOCK_SIZE, KV_LORA_RANK, ROPE_DIM } from '../bench/gpu-shapes.mjs';

const WIDTH = KV_LORA_RANK + ROPE_DIM;
export const SPARSE_TOPK = 2048, INDEX_HEADS = 64, INDEX_DIM = 128;
/** The sparse grid: heads (16: DeepSeek-V3.2 at tensor-parallel 8; 128: one GPU) x context, top-2048, one sequence. */
export const SPARSE_SHAPES = [];
for (const heads of [16, 128]) for (const context of [8192, 32768, 131072]) SPARSE_SHAPES.push({ heads, context, batch: 1, quick: heads === 16 && context === 8192 });
/** Caches the sparse decode is modelled over: bf16 (the CPU benchmark's) and fp8_ds_mla (V3.2's own layout). */
export const SPARSE_CACHES = ['bf16', 'fp8_ds_mla'];
// A thread's global loads that overlap in flight: nvcc unrolls a loop of unknown trip count by 4 by default (model).
export const LOADS_OVERLAPPED = 4;

/** A kernel's static shared memory on an architecture, as ptxas reported it (bench/results/cuda-static.json, check:cuda). */
function staticSmem(kernel, arch) {
  const rows = JSON.parse(readFileSync(new URL('../bench/results/cuda-static.json', import.meta.url), 'utf8')).rows;
  const row = rows.find((r) => r.kernel === kernel && r.arch === arch) ?? rows.find((r) => r.kernel === kernel);
  if (!row) throw new Error(`model: ${kernel} is not in bench/results/cuda-static.json (npm run check:cuda)`);
  return row.staticSmem;
}

const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const KEYS = ['bytesRead', 'bytesWritten', 'loads', 'sharedLoadBytes', 'sharedStoreBytes', 'asyncCopyBytes', 'converted'];
const pick = (p) => Object.fromEntries(KEYS.map((k) => [k, p[k]]));

function simOn(addon, computeCapability, smemOptin) {
  addon.simConfigure({ checkOrders: false, numSms: 1, splitRows: 1 << 30, batchInvariant: false, smemOptin, computeCapability, profileBlock: 0 });
}

/** One sparse-decode CTA's counts: its per-row barrier intervals and its fixed rest. */
export async function measureSparseDecode({ api, addon }, { computeCapability, smemOptin, cache }) {
  const { Stream, Tensor, mlaSparseDecode, dsMlaRowBytes } = api;
  const stream = new Stream('cuda-sim:0');
  const rowBytes = cache === 'fp8_ds_mla' ? dsMlaRowBytes(KV_LORA_RANK, ROPE_DIM) : WIDTH;
  const run = async (rows, heads) => {
    simOn(addon, computeCapability, smemOptin);
    const blocks = Math.ceil(rows / BLOCK_SIZE);
    const cacheT = Tensor.zeros([blocks, BLOCK_SIZE, rowBytes], cache, { device: stream.device });
    const q = Tensor.zeros([1, 1, heads, WIDTH], 'bf16', { device: stream.device });
    const indices = Tensor.from(Int32Array.from({ length: rows }, (_, i) => i), [1, 1, rows]);
    mlaSparseDecode({ q, cache: cacheT, indices, softmaxScale: 0.07, kvLoraRank: KV_LORA_RANK, stream });
    await stream.synchronize();
    const launch = addon.simLastOp().launches.find((l) => l.kernel === 'mlaSparseDecodeKernel');
    for (const t of [cacheT, q, indices]) t.dispose();
    return launch;
  };
  // One CTA's counts (its heads: as many as a launch over one head group gives it), over t1 and t2 rows.
  const [t1, t2] = [8, 16];
  const probe = await run(1, 1);
  const ctaHeads = await (async () => { let h = 1; while ((await run(1, h * 2)).grid[1] === 1 && h < 256) h *= 2; return h; })();
  const a = await run(t1, ctaHeads), b = await run(t2, ctaHeads);
  // CTAs per query position at each head count of the grid, from the launch itself.
  const ctasPerQuery = {};
  for (const heads of new Set(SPARSE_SHAPES.map((x) => x.heads))) ctasPerQuery[heads] = (await run(1, heads)).grid[1];
  stream.dispose();
  if (probe.grid[1] !== 1) throw new Error('model: sparse decode: one head took more than one CTA');
  // The t2 - t1 rows' intervals (whole stages), taken from the middle of the longer run.
  const period = b.profile.length - a.profile.length;
  if (period < 1) throw new Error(`model: sparse decode (${cache}): ${a.profile.length} and ${b.profile.length} barrier intervals for ${t1} and ${t2} rows`);
  const mid = Math.floor((b.profile.length - period) / 2);
  const phases = b.profile.slice(mid, mid + period).map(pick);
  const periodRows = t2 - t1;
  const row = Object.fromEntries(KEYS.map((k) => [k, sum(phases.map((p) => p[k])) / periodRows]));
  const fixed = Object.fromEntries(KEYS.map((k) => [k, sum(b.profile.map((p) => p[k])) - t2 * row[k]]));
  return { kernel: 'mlaSparseDecodeKernel', cache, threads: b.threads, ctaHeads, ctasPerQuery, periodRows, phases, row, fixed, fixedIntervals: b.profile.length - (t2 / periodRows) * period };
}

/** The indexer's counts: one scores CTA (64 keys), and the top-k CTA's intervals as a + b * visible. */
export async function measureIndexer({ api, addon }, { computeCapability, smemOptin }) {
  const { Stream, Tensor, lightningIndexer } = api;
  const stream = new Stream('cuda-sim:0');
  const run = async (visible, topk) => {
    simOn(addon, computeCapability, smemOptin);
    const blocks = Math.ceil(visible / BLOCK_SIZE);
    const keyCache = Tensor.zeros([blocks, BLOCK_SIZE, INDEX_DIM], 'fp8_e4m3', { device: stream.device });
    const scales = Tensor.zeros([blocks, BLOCK_SIZE], 'f32', { device: stream.device });
    const q = Tensor.zeros([1, 1, INDEX_HEADS, INDEX_DIM], 'bf16', { device: stream.device });
    const weights = Tensor.zeros([1, 1, INDEX_HEADS], 'f32', { device: stream.device });
    const blockTable = Tensor.from(Int32Array.from({ length: blocks }, (_, i) => i), [1, blocks]);
    const seqLens = Tensor.from(Int32Array.of(visible), [1]);
    const sel = lightningIndexer({ q, weights, cache: keyCache, scales, blockTable, seqLens, topk, stream });
    await stream.synchronize();
    const launches = addon.simLastOp().launches;
    for (const t of [keyCache, scales, q, weights, blockTable, seqLens, sel.indices, sel.scores]) t.dispose();
    return { scores: launches.find((l) => l.kernel === 'indexerScoresKernel'), topk: launches.find((l) => l.kernel === 'indexerTopkKernel') };
  };
  const [v1, v2, topk] = [512, 1024, 256];
  const a = await run(v1, topk), b = await run(v2, topk);
  stream.dispose();
  if (a.topk.profile.length !== b.topk.profile.length) throw new Error(`model: indexer top-k: ${a.topk.profile.length} and ${b.topk.profile.length} intervals for ${v1} and ${v2} positions`);
  const scoreCta = Object.fromEntries(KEYS.map((k) => [k, sum(a.scores.profile.map((p) => p[k]))]));
  return {
    // the keys one scores CTA takes: the visible positions over the grid's CTAs per query row
    scores: { kernel: 'indexerScoresKernel', threads: a.scores.threads, keysPerCta: v1 / a.scores.grid[1], cta: scoreCta, intervals: a.scores.profile.map(pick),
      staticSmem: staticSmem('indexerScoresKernel<bf16, fp8 cache>', computeCapability) },
    topk: {
      kernel: 'indexerTopkKernel', threads: a.topk.threads, measuredTopk: topk,
      // per interval: counts at 0 visible positions, and per visible position
      intervals: a.topk.profile.map((p, i) => {
        const q = b.topk.profile[i];
        return { at0: Object.fromEntries(KEYS.map((k) => [k, p[k] - ((q[k] - p[k]) / (v2 - v1)) * v1])), perPosition: Object.fromEntries(KEYS.map((k) => [k, (q[k] - p[k]) / (v2 - v1)])) };
      }),
    },
  };
}

/** A barrier interval's on-chip clocks and its wait (round trips and the barrier's drain), by the rule in the header. */
function intervalParts(t, p, threads) {
  const memLatencyClk = MODEL_ASSUMPTIONS.memLatencyNs * 1e-9 * t.clockMHz * 1e6;
  const fp8Instr = MODEL_ASSUMPTIONS.fp8DecodeInstrPerValue[fp8DecodePath(t.arch)];
  const onchip = Math.max((p.sharedLoadBytes + p.sharedStoreBytes) / COMMON_LIMITS.smemBytesPerClk, (p.converted * fp8Instr) / COMMON_LIMITS.aluPerClk);
  const plainLoads = p.loads - (p.asyncCopyBytes ?? 0) / 16;  // cp.async pieces do not wait here
  const roundTrips = plainLoads > 0 ? Math.max(1, Math.ceil(plainLoads / threads / LOADS_OVERLAPPED)) : 0;
  return { onchip, wait: roundTrips * memLatencyClk + MODEL_ASSUMPTIONS.phaseLatencyClk };
}
function intervalClocks(t, p, threads) {
  const { onchip, wait } = intervalParts(t, p, threads);
  return onchip + wait;
}

/**
 * The modelled sparse decode of one sequence: ceil(heads / 16) head groups times `splits` (the real plan's split of
 * its rows on this target), one CTA per SM at a time.
 */
export function modelSparseDecode(t, shape, c, splits) {
  const rows = Math.min(SPARSE_TOPK, shape.context);
  const groups = c.ctasPerQuery[shape.heads];
  const rowsPerCta = Math.ceil(rows / splits);
  // A stage's rows arrive one round trip after they were issued, a stage earlier: each stage takes the longer of its
  // intervals and that round trip.
  const memLatencyClk = MODEL_ASSUMPTIONS.memLatencyNs * 1e-9 * t.clockMHz * 1e6;
  const stages = c.phases.filter((p) => p.asyncCopyBytes > 0).length;
  const periodClk = Math.max(sum(c.phases.map((p) => intervalClocks(t, p, c.threads))), stages * memLatencyClk);
  const perRowClk = periodClk / c.periodRows;
  const ctas = shape.batch * groups * splits;
  // the fixed rest (queries in, outputs out) as one interval plus the drains of its other barriers
  const fixedClk = intervalClocks(t, c.fixed, c.threads) + Math.max(0, c.fixedIntervals - 1) * MODEL_ASSUMPTIONS.phaseLatencyClk;
  const waves = Math.ceil(ctas / t.sms);
  let us = (waves * (fixedClk + rowsPerCta * perRowClk)) / (t.clockMHz * 1e6) * 1e6;
  // Split: fp32 partials out and the combine kernel reading them back, through HBM, after a kernel gap.
  const partialBytes = splits > 1 ? shape.batch * splits * shape.heads * (KV_LORA_RANK + 1) * 4 : 0;
  if (splits > 1) us += MODEL_ASSUMPTIONS.kernelGapUs + (2 * partialBytes) / (MODEL_ASSUMPTIONS.hbmEfficiency * t.hbmGBps * 1e9) * 1e6;
  return { ctas, splits, smsUsed: Math.min(ctas, t.sms), perRowClk, us, bytes: ctas * (c.fixed.bytesRead + c.fixed.bytesWritten) + shape.batch * groups * rows * c.row.bytesRead + 2 * partialBytes };
}

/** The modelled indexer of one query row over `context` keys: the scores kernel, then the top-k kernel. */
export function modelIndexer(t, context, c) {
  const clock = t.clockMHz * 1e6;
  const hbmPerClk = (MODEL_ASSUMPTIONS.hbmEfficiency * t.hbmGBps * 1e9) / clock;
  // Scores: ceil(context / 64) CTAs spread over the SMs; per SM the larger of its shared-memory work and its warps'
  // round-trip chains (CTAs resident together overlap theirs), and the whole grid's bytes through HBM.
  const s = c.scores;
  const ctas = Math.ceil(context / s.keysPerCta);
  const parts = s.intervals.map((p) => intervalParts(t, p, s.threads));
  const smemPerCta = sum(parts.map((x) => x.onchip));
  const chainPerCta = sum(parts.map((x) => x.onchip + x.wait));
  const resident = Math.max(1, Math.min(Math.floor(t.smemPerSm / (s.staticSmem + COMMON_LIMITS.reservedSmemPerBlock)), Math.floor(t.threadsPerSm / s.threads)));
  const ctasPerSm = Math.ceil(ctas / t.sms);
  const bounds = { 'shared memory': ctasPerSm * smemPerCta, latency: Math.ceil(ctasPerSm / resident) * chainPerCta, HBM: (ctas * (s.cta.bytesRead + s.cta.bytesWritten)) / hbmPerClk };
  const [scoresLimit, scoresClk] = Object.entries(bounds).sort((x, y) => y[1] - x[1])[0];
  // Top-k: one CTA, its intervals at this context.
  const k = c.topk;
  let topkClk = 0;
  for (const iv of k.intervals) {
    const p = Object.fromEntries(KEYS.map((key) => [key, Math.max(0, iv.at0[key] + iv.perPosition[key] * context)]));
    topkClk += intervalClocks(t, p, k.threads);
  }
  const scoresUs = (scoresClk / clock) * 1e6, topkUs = (topkClk / clock) * 1e6;
  return { scoresCtas: ctas, scoresUs, topkUs, us: scoresUs + MODEL_ASSUMPTIONS.kernelGapUs + topkUs, scoresLimit };
}

/** FlashMLA-class bound of the sparse decode (reading the selected rows at FlashMLA's dense fraction of HBM bandwidth). */
export function sparseBoundUs(t, shape, cache) {
  const rowBytes = cache === 'fp8_ds_mla' ? 656 : WIDTH * 2;
  const bytes = Math.min(SPARSE_TOPK, shape.context) * rowBytes + shape.heads * (WIDTH + KV_LORA_RANK) * 2;
  return (bytes / (FLASHMLA.bandwidthFraction * t.hbmGBps * 1e9)) * 1e6;
}

export function sparseMarkdownTable(rows) {
  const f = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const lines = [
    '| arch (GPU) | heads | context | model sparse decode µs: bf16 / fp8_ds_mla cache (CTAs) | model indexer µs: scores + top-k | model dense decode µs (bf16) | model step (indexer + sparse, bf16) / dense |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const r of rows)
    lines.push(`| sm_${r.arch} (${r.gpu}) | ${r.heads} | ${r.context} | ${f(r.sparse.bf16.us)} / ${f(r.sparse.fp8_ds_mla.us)} (${r.sparse.bf16.ctas}) | ${f(r.indexer.scoresUs)} + ${f(r.indexer.topkUs)} | ${f(r.denseUs)} | ${((r.indexer.us + r.sparse.bf16.us) / r.denseUs).toFixed(1)}x |`);
  return lines.join('\n');
}

/**
 * Models the sparse grid on the targets: the sparse decode over each cache, the indexer, and the dense decode of the
 * same context (model-gpu.mjs's model of decode.cu, given as `denseUs(t, shape)`). Counts are measured once per target.
 */
export async function runSparseModel({ targets, quick = false, ctx, denseUs, log = () => {} }) {
  const rows = [];
  const counts = {};
  for (const t of targets) {
    log(`measuring sm_${t.arch}'s sparse decode and indexer kernels under cuda-sim`);
    const c = { sparse: {}, indexer: null };
    for (const cache of SPARSE_CACHES) c.sparse[cache] = await measureSparseDecode(ctx, { computeCapability: t.arch, smemOptin: t.smemOptin, cache });
    c.indexer = await measureIndexer(ctx, { computeCapability: t.arch, smemOptin: t.smemOptin });
    counts[t.arch] = c;
    for (const shape of SPARSE_SHAPES.filter((x) => !quick || x.quick)) {
      const plan = ctx.addon.sparseDecodePlan({ numQueries: shape.batch, numHeads: shape.heads, kvLoraRank: KV_LORA_RANK, rows: Math.min(SPARSE_TOPK, shape.context), numSms: t.sms });
      const sparse = Object.fromEntries(SPARSE_CACHES.map((cache) => [cache, { ...modelSparseDecode(t, shape, c.sparse[cache], plan.numSplits), boundUs: sparseBoundUs(t, shape, cache) }]));
      rows.push({ arch: t.arch, gpu: t.gpu, ...shape, topk: SPARSE_TOPK, sparse, indexer: modelIndexer(t, shape.context, c.indexer), denseUs: await denseUs(t, shape) });
    }
  }
  return { rows, counts };
}
