// The CUDA kernels under emulation, beyond the shared suite (which already runs every op on cuda-sim under three
// thread orders): split-KV and its combine, batch invariance, the small-shared-memory tile shapes, refused
// shapes, and the global-memory traffic of decode counted by the emulator.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { absorbQuery, appendLatentCache, backends, fromFp8E4M3Bits, memoryStats, MlaError, mlaDecode, planDecode, Stream, Tensor, toFp8E4M3Array, unabsorbOutput } from 'mla-kernels';
import { native, type SimSettings } from '../../lib/native.js';
import { refAbsorbQuery, refAppendLatentCache, refMlaDecode, refUnabsorbOutput } from '../../lib/reference.js';
import { countNaN, dense, exactValues, expectMlaError, intTensor, poisoned, randomTensor, REL_BOUND, relErr, Rng, testSeed } from '../helpers.js';

const seed = testSeed('cuda-sim');
const SIM_DEVICE = 'cuda-sim:0' as const;
const sim = backends().find((b) => b.name === 'cuda-sim')!;

function configure(s: SimSettings): void {
  native().simConfigure!(s);
}
const DEFAULTS: SimSettings = { checkOrders: true, seed, smallConfig: false, smemOptin: 0, computeCapability: 0, numSms: 8, splitRows: 0, batchInvariant: false, deviceMemoryBytes: 4 * 2 ** 30, numDevices: 2 };

/** A paged decode problem with contiguous-but-shuffled blocks; returns the inputs and a runner. */
function problem(rng: Rng, o: { heads: number; queryLen?: number; kvLoraRank: number; ropeDim: number; lens: number[]; blockSize: number; dtype?: 'bf16' | 'f16'; fp8Cache?: boolean; qScale?: number; qRowScales?: number[]; softmaxScale?: number; device?: `cuda-sim:${number}` }) {
  const dtype = o.dtype ?? 'bf16';
  const width = o.kvLoraRank + o.ropeDim;
  const queryLen = o.queryLen ?? 1;
  const perSeq = o.lens.map((l) => Math.max(1, Math.ceil(l / o.blockSize)));
  const maxBlocks = Math.max(...perSeq);
  const numBlocks = perSeq.reduce((a, b) => a + b, 0);
  const ids = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const table: number[] = [];
  let next = 0;
  for (const n of perSeq) for (let j = 0; j < maxBlocks; j++) table.push(j < n ? ids[next++] : 0);
  // Drawn on the host (the reference reads those values), computed on the emulator's device.
  const toSim = (x: { t: Tensor<'bf16' | 'f16' | 'f32'>; dense: { data: ArrayLike<number>; shape: readonly number[] } }) => ({ t: x.t.to(o.device ?? SIM_DEVICE), dense: x.dense });
  const fp8 = (shape: number[]) => {
    const bytes = toFp8E4M3Array(rng.normal(shape.reduce((a, b) => a * b, 1), 2));
    return { t: Tensor.from(bytes, shape).to(o.device ?? SIM_DEVICE), dense: { data: Float64Array.from(bytes, fromFp8E4M3Bits), shape } };
  };
  const cache = o.fp8Cache ? fp8([numBlocks, o.blockSize, width]) : toSim(randomTensor(rng, [numBlocks, o.blockSize, width], dtype));
  const qShape = [o.lens.length, queryLen, o.heads, width];
  let qHost = randomTensor(rng, qShape, dtype, o.qScale);
  if (o.qRowScales) {  // head h's rows times qRowScales[h % length] (powers of two: exact)
    const s = o.qRowScales;
    const t = Tensor.fromValues(Float64Array.from(qHost.dense.data, (x, i) => x * s[Math.floor(i / width) % o.heads % s.length]), qShape, dtype);
    qHost = { t, dense: { data: exactValues(t), shape: qShape } };
  }
  const q = toSim(qHost);
  const blockTable = intTensor(table, [o.lens.length, maxBlocks]);
  const seqLens = intTensor(o.lens);
  const softmaxScale = o.softmaxScale ?? 1 / Math.sqrt(width);
  return { ...o, cache, q, blockTable, seqLens, softmaxScale, dtype, queryLen, width };
}

describe.runIf(sim.available)('cuda-sim: CUDA kernels under emulation', () => {
  let stream: Stream;
  beforeAll(() => {
    stream = new Stream('cuda-sim');
    configure(DEFAULTS);
  });
  afterAll(() => {
    configure(DEFAULTS);
    stream.dispose();
  });

  async function decodeAndCheck(p: ReturnType<typeof problem>, causal = false) {
    const out = poisoned([p.lens.length, p.queryLen, p.heads, p.kvLoraRank], p.dtype).to(SIM_DEVICE);
    const lse = poisoned([p.lens.length, p.heads, p.queryLen], 'f32').to(SIM_DEVICE);
    mlaDecode({ q: p.q.t, cache: p.cache.t, blockTable: p.blockTable, seqLens: p.seqLens, softmaxScale: p.softmaxScale, kvLoraRank: p.kvLoraRank, causal, out, lse, stream });
    const got = await out.toFloat32();
    const gotLse = await lse.toFloat32();
    expect(countNaN(got)).toBe(0);
    const ref = refMlaDecode({ q: p.q.dense, cache: p.cache.dense, blockTable: dense(p.blockTable), seqLens: dense(p.seqLens), softmaxScale: p.softmaxScale, kvLoraRank: p.kvLoraRank, causal });
    expect(relErr(got, ref.out), `out (seed ${seed})`).toBeLessThanOrEqual(REL_BOUND[p.dtype]);
    for (let i = 0; i < ref.lse.length; i++)
      if (ref.lse[i] === -Infinity) expect(gotLse[i]).toBe(-Infinity);
      else expect(Math.abs(gotLse[i] - ref.lse[i])).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(ref.lse[i])));
    return { out, lse, got, record: native().simLastOp!() };
  }

  it('the emulator really runs the decode kernels under three thread orders', async () => {
    const rng = new Rng(seed);
    await decodeAndCheck(problem(rng, { heads: 4, kvLoraRank: 32, ropeDim: 16, lens: [40], blockSize: 16 }));
    const rec = native().simLastOp!();
    expect(rec.op).toBe('mlaDecode');
    expect(rec.ordersChecked).toBe(3);
    expect(rec.launches.map((l) => l.kernel)).toContain('mlaDecodeKernel');
    expect(rec.launches[0].fiberSwitches).toBeGreaterThan(0);
  });

  it('split-KV: forced small splits, merged by the combine kernel, with causal queries and empty splits', async () => {
    const rng = new Rng(seed + 1);
    for (const splitRows of [32, 64]) {
      configure({ ...DEFAULTS, splitRows });
      for (const queryLen of [1, 3]) {
        const p = problem(rng, { heads: 5, queryLen, kvLoraRank: 64, ropeDim: 16, lens: [150, 0, 33, 97], blockSize: 16 });
        const { record } = await decodeAndCheck(p, queryLen > 1);
        expect(record.launches.map((l) => l.kernel)).toContain('mlaCombineKernel');
      }
    }
    configure(DEFAULTS);
  });

  it('the combine: one warp per query row (no CTAs for padding rows), launched dependent on the decode on sm_90+', async () => {
    const rng = new Rng(seed + 8);
    for (const [computeCapability, dependent] of [[90, true], [120, true], [86, false], [80, false]] as const) {
      configure({ ...DEFAULTS, splitRows: 32, computeCapability, smemOptin: computeCapability === 90 ? 232448 : 101376 });
      const { record } = await decodeAndCheck(problem(rng, { heads: 6, kvLoraRank: 64, ropeDim: 16, lens: [100, 7], blockSize: 16 }));
      const combine = record.launches.find((l) => l.kernel === 'mlaCombineKernel')!;
      expect(combine.dependentLaunch, `sm_${computeCapability}`).toBe(dependent);
      expect(combine.grid).toEqual([1, 2]); // one split sequence; 6 rows in CTAs of 4 warps
      expect(combine.threads).toBe(128);
    }
    configure(DEFAULTS);
  });

  it('batchInvariant: a sequence gives the same bits whatever else is in the batch', async () => {
    const rng = new Rng(seed + 2);
    configure({ ...DEFAULTS, batchInvariant: true, checkOrders: false });
    const alone = problem(rng, { heads: 8, kvLoraRank: 64, ropeDim: 16, lens: [2100], blockSize: 64 });
    const a = await decodeAndCheck(alone);
    // The same sequence (same cache blocks) next to two others, with another SM count.
    configure({ ...DEFAULTS, batchInvariant: true, checkOrders: false, numSms: 3 });
    const width = alone.width;
    const otherCache = randomTensor(rng, [40, 64, width], 'bf16');
    const cacheData = new Uint16Array(alone.cache.t.numel + otherCache.t.numel);
    cacheData.set(await alone.cache.t.read());
    cacheData.set(await otherCache.t.read(), alone.cache.t.numel);
    const nb = alone.cache.t.shape[0];
    const cache = Tensor.from(cacheData, [nb + 40, 64, width], 'bf16').to(SIM_DEVICE);
    const q = randomTensor(rng, [3, 1, 8, width], 'bf16');
    const qData = await q.t.read();
    qData.set(await alone.q.t.read(), 8 * width); // sequence 1 is the one from before
    const table = await alone.blockTable.read();
    const rows = table.length;
    const blockTable = intTensor([...Array.from({ length: rows }, (_, i) => nb + i), ...table, ...Array.from({ length: rows }, (_, i) => nb + 39 - (i % 40))], [3, rows]);
    const { out } = mlaDecode({ q: Tensor.from(qData, [3, 1, 8, width], 'bf16').to(SIM_DEVICE), cache, blockTable, seqLens: intTensor([1900, 2100, 700]), softmaxScale: alone.softmaxScale, kvLoraRank: 64, stream });
    const together = await out.read();
    const single = await a.out.read();
    const sequence1 = together.subarray(8 * 64, 16 * 64); // [batch 1][query 0][8 heads][64]
    expect(Buffer.compare(Buffer.from(sequence1.buffer, sequence1.byteOffset, sequence1.byteLength), Buffer.from(single.buffer))).toBe(0);
    expect(native().simLastOp!().launches.map((l) => l.kernel)).toContain('mlaCombineKernel'); // it was split
    configure(DEFAULTS);
  });

  it('planDecode: one plan per step, shared by every layer; refused once the lengths change', async () => {
    const rng = new Rng(seed + 5);
    configure({ ...DEFAULTS, numSms: 16 });
    const p = problem(rng, { heads: 16, kvLoraRank: 64, ropeDim: 16, lens: [900, 40, 0], blockSize: 16 });
    const plan = planDecode({ seqLens: p.seqLens, numHeads: 16, stream });
    expect(plan.backend).toBe('cuda-sim');
    expect(plan.numWorkItems).toBeGreaterThan(3); // the long sequence is split
    expect(plan.numSplitSequences).toBe(1);
    const run = () => mlaDecode({ q: p.q.t, cache: p.cache.t, blockTable: p.blockTable, seqLens: p.seqLens, softmaxScale: p.softmaxScale, kvLoraRank: 64, plan, stream });
    const layer1 = await run().out.read();
    const layer2 = await run().out.read();
    expect(Buffer.compare(Buffer.from(layer1.buffer), Buffer.from(layer2.buffer))).toBe(0);
    const ref = refMlaDecode({ q: p.q.dense, cache: p.cache.dense, blockTable: dense(p.blockTable), seqLens: dense(p.seqLens), softmaxScale: p.softmaxScale, kvLoraRank: 64 });
    expect(relErr(exactValues(Tensor.from(layer1, [3, 1, 16, 64], 'bf16')), ref.out)).toBeLessThanOrEqual(REL_BOUND.bf16);
    const nextStep = intTensor([901, 41, 1]);
    expect(() => mlaDecode({ q: p.q.t, cache: p.cache.t, blockTable: p.blockTable, seqLens: nextStep, softmaxScale: 0.1, kvLoraRank: 64, plan, stream })).toThrow(/plan was made for seqLens\[0\] = 900, but it is 901/);
    const cpuPlan = planDecode({ seqLens: p.seqLens, numHeads: 16, stream: new Stream('cpu') });
    expect(() => mlaDecode({ q: p.q.t, cache: p.cache.t, blockTable: p.blockTable, seqLens: p.seqLens, softmaxScale: 0.1, kvLoraRank: 64, plan: cpuPlan, stream })).toThrow(/plan was made for the cpu backend/);
    expect(() => mlaDecode({ q: p.q.t, cache: p.cache.t, blockTable: p.blockTable, seqLens: p.seqLens, softmaxScale: 0.1, kvLoraRank: 64, plan: planDecode({ seqLens: p.seqLens, numHeads: 8, stream }), stream })).toThrow(/plan was made for batch 3, queryLen 1, 8 heads/);
    const invariant = planDecode({ seqLens: p.seqLens, numHeads: 16, batchInvariant: true, stream });
    expect(invariant.numWorkItems).toBe(3); // 900 rows fit one fixed-size chunk: no split
    configure(DEFAULTS);
  });

  it('device memory: accounted in memoryStats, freed by dispose, E_OOM naming the CUDA error when it runs out', async () => {
    await stream.synchronize();
    const before = memoryStats(SIM_DEVICE).bytesInUse;
    const t = Tensor.empty([1000, 576], 'bf16', { device: SIM_DEVICE });
    expect(t.device).toBe(SIM_DEVICE);
    expect(memoryStats(SIM_DEVICE).bytesInUse).toBe(before + 1000 * 576 * 2);
    expect(memoryStats(SIM_DEVICE).peakBytes).toBeGreaterThanOrEqual(before + 1000 * 576 * 2);
    t.dispose();
    expect(memoryStats(SIM_DEVICE).bytesInUse).toBe(before);
    await expect(t.read()).rejects.toMatchObject({ code: 'E_DISPOSED' });
    configure({ ...DEFAULTS, deviceMemoryBytes: 64 << 20 });
    try {
      expect(() => Tensor.empty([1 << 20, 576], 'bf16', { device: SIM_DEVICE })).toThrow(/cudaErrorMemoryAllocation/);
      try {
        Tensor.empty([1 << 20, 576], 'bf16', { device: SIM_DEVICE });
      } catch (e) {
        expect((e as MlaError).code).toBe('E_OOM');
      }
    } finally {
      configure(DEFAULTS);
    }
    // Round trip through device memory, and memoryStats refuses the host.
    const host = Tensor.fromValues([1, 2, 3, 4.5], [4], 'f32');
    expect(Array.from(await host.to(SIM_DEVICE).read())).toEqual([1, 2, 3, 4.5]);
    expect(() => memoryStats('cpu')).toThrow(/host memory/);
  });

  it('every tile configuration gives the reference results: wide (sm_90, sm_100), large (sm_80), small (~99 KB GPUs), with bf16, f16 and fp8 caches', async () => {
    const rng = new Rng(seed + 3);
    for (const [config, smemOptin, threads] of [['wide', 232448, 256], ['large', 166912, 256], ['small', 101376, 128]] as const) {
      configure({ ...DEFAULTS, smemOptin });
      expect(native().decodePlan!({ queryLen: 1, numHeads: 8, seqLens: [100], numSms: 8, smemOptin }).config).toBe(config); // narrow rows too
      const { record } = await decodeAndCheck(problem(rng, { heads: 40, kvLoraRank: 64, ropeDim: 16, lens: [70, 5, 0], blockSize: 3 }));
      expect(record.launches.find((l) => l.kernel === 'mlaDecodeKernel')!.threads).toBe(threads);
      await decodeAndCheck(problem(rng, { heads: 3, queryLen: 2, kvLoraRank: 32, ropeDim: 0, lens: [50, 17], blockSize: 16, dtype: 'f16' }), true);
      // fp8: converted in place by the loader warps (before B1 in small) where the device lacks cvt.rn.f16x2.e4m3x2
      // (sm_80, sm_86, or an sm_80 build's PTX on a newer GPU), else converted in registers from ldmatrix'ed bytes
      // (sm_89+), which stores no converted tile in shared memory.
      const stores: Record<number, number> = {};
      for (const computeCapability of [80, 89]) {
        configure({ ...DEFAULTS, smemOptin, computeCapability });
        for (const dtype of ['bf16', 'f16'] as const) {
          const { record: r } = await decodeAndCheck(problem(rng, { heads: 17, kvLoraRank: 128, ropeDim: 32, lens: [300, 9], blockSize: 32, dtype, fp8Cache: true }));
          stores[computeCapability] = r.launches.find((l) => l.kernel === 'mlaDecodeKernel')!.counters.sharedStoreBytes;
        }
        // a warp's last 16 columns alone (kvLoraRank 80), a Q past f16's range and one far below it
        await decodeAndCheck(problem(rng, { heads: 5, kvLoraRank: 80, ropeDim: 16, lens: [40], blockSize: 16, dtype: 'f16', fp8Cache: true }));
        for (const qScale of [2 ** 20, 2 ** -30])
          await decodeAndCheck(problem(rng, { heads: 9, kvLoraRank: 64, ropeDim: 32, lens: [70], blockSize: 16, fp8Cache: true, qScale }));
      }
      expect(stores[89], config).toBeLessThan(stores[80] / 2);
    }
    configure(DEFAULTS);
  });

  it("DeepSeek's dims (512 + 64, compile-time in the kernels) in every tile configuration: padded m-tiles, causal queries, splits, fp8", async () => {
    const rng = new Rng(seed + 10);
    for (const smemOptin of [232448, 166912, 101376]) {
      configure({ ...DEFAULTS, smemOptin, splitRows: 64 });
      await decodeAndCheck(problem(rng, { heads: 20, kvLoraRank: 512, ropeDim: 64, lens: [150, 0, 37], blockSize: 64 }));
      await decodeAndCheck(problem(rng, { heads: 3, queryLen: 2, kvLoraRank: 512, ropeDim: 64, lens: [70], blockSize: 16, dtype: 'f16' }), true);
      for (const computeCapability of [80, 120]) {
        configure({ ...DEFAULTS, smemOptin, splitRows: 64, computeCapability });
        await decodeAndCheck(problem(rng, { heads: 16, kvLoraRank: 512, ropeDim: 64, lens: [100, 9], blockSize: 64, fp8Cache: true }));
        await decodeAndCheck(problem(rng, { heads: 3, queryLen: 2, kvLoraRank: 512, ropeDim: 64, lens: [70], blockSize: 16, dtype: 'f16', fp8Cache: true }), true);
      }
    }
    configure(DEFAULTS);
  });

  it('fp8 on sm_89+: Q rows of very different magnitudes in one CTA (2^20 beside 2^-30), a scale per row at DeepSeek dims, one per CTA at runtime dims', async () => {
    const rng = new Rng(seed + 11);
    const qRowScales = [2 ** 20, 2 ** -30, 1, 2 ** -12, 2 ** 7]; // 5: a warp's rows (kWarps apart) differ too
    for (const smemOptin of [232448, 166912, 101376]) {
      configure({ ...DEFAULTS, smemOptin, computeCapability: 89 });
      // DeepSeek's dims stage Q a row per warp, each row scaled into f16 by its own power of two: with a softmax
      // scale of 2^30 the 2^-30 rows' logits are of order 1 (a CTA-wide scale set by the 2^20 rows leaves them zero in
      // f16, their softmax uniform) and the other rows' are one-hot.
      for (const softmaxScale of [undefined, 2 ** 30 / 24])
        await decodeAndCheck(problem(rng, { heads: 40, kvLoraRank: 512, ropeDim: 64, lens: [90, 33], blockSize: 16, fp8Cache: true, qRowScales, softmaxScale }));
      // Runtime dims scale the CTA's Q by its largest |q|: the small rows lose precision, not their (near-uniform) softmax.
      await decodeAndCheck(problem(rng, { heads: 12, kvLoraRank: 64, ropeDim: 32, lens: [90, 33], blockSize: 16, fp8Cache: true, qRowScales }));
    }
    configure(DEFAULTS);
  });

  it('refuses what the CUDA kernels do not take before queuing anything: E_UNSUPPORTED naming the limit', async () => {
    const rng = new Rng(seed + 4);
    const expectRefused = (fn: () => unknown, mentions: string) => {
      try {
        fn();
        expect.fail('expected E_UNSUPPORTED');
      } catch (e) {
        expect(e).toBeInstanceOf(MlaError);
        expect((e as MlaError).code).toBe('E_UNSUPPORTED');
        expect((e as MlaError).message).toContain(mentions);
      }
    };
    const p = problem(rng, { heads: 2, kvLoraRank: 24, ropeDim: 8, lens: [5], blockSize: 4 });
    const out = poisoned([1, 1, 2, 24], 'bf16').to(SIM_DEVICE);
    expectRefused(() => mlaDecode({ q: p.q.t, cache: p.cache.t, blockTable: p.blockTable, seqLens: p.seqLens, softmaxScale: 0.1, kvLoraRank: 24, out, stream }), 'multiple of 16');
    expect(countNaN(await out.toFloat32())).toBe(out.numel); // nothing written
    const f = problem(rng, { heads: 2, kvLoraRank: 32, ropeDim: 0, lens: [5], blockSize: 4 });
    const q32 = Tensor.fromValues(Array.from(f.q.dense.data), f.q.t.shape, 'f32').to(SIM_DEVICE);
    const cache32 = Tensor.fromValues(Array.from(f.cache.dense.data), f.cache.t.shape, 'f32').to(SIM_DEVICE);
    expectRefused(() => mlaDecode({ q: q32, cache: cache32, blockTable: f.blockTable, seqLens: f.seqLens, softmaxScale: 0.1, kvLoraRank: 32, stream }), 'bf16 or f16');
    expectRefused(() => mlaDecode({ q: f.q.t, cache: f.cache.t, blockTable: f.blockTable, seqLens: f.seqLens, softmaxScale: 0.1, kvLoraRank: 8, stream }), 'kvLoraRank must be a multiple of 16');
  });
});

describe.runIf(sim.available)('decode planner (csrc/cuda/plan.cc, the plan each GPU gets)', () => {
  const H100 = { numSms: 132, smemOptin: 232448 };
  const plan = (heads: number, lens: number[], device = H100) => native().decodePlan!({ queryLen: 1, numHeads: heads, seqLens: lens, ...device });
  const ctasPerSequence = (p: ReturnType<typeof plan>, b: number) => p.work.filter((w) => w[0] === b).length;

  it('batch 1 with a long context uses every SM; a batch that fills them alone is not split', () => {
    const long = plan(128, [32768]);
    expect(long.work.length).toBeGreaterThan(0.9 * 132);
    expect(long.work.length).toBeLessThanOrEqual(132);
    expect(plan(16, [32768]).work.length).toBeGreaterThan(0.9 * 132);
    // 64 sequences x 2 m-tiles = 128 CTAs on 132 SMs: splitting (e.g. 4000 + 96 rows) would add partials, not speed.
    const full = plan(128, new Array(64).fill(4096));
    expect(full.work.length).toBe(128);
    expect(full.combine.length).toBe(0);
    // Splits are whole tiles of near-equal length (no short remnant).
    const sizes = long.work.map((w) => w[3] - w[2]);
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(long.blockN);
    for (const w of long.work) expect(w[2] % long.blockN).toBe(0);
  });

  it('the sparse decode splits a query\'s rows only while its CTAs leave SMs idle, into near-equal chunks of at least 64 rows', () => {
    const sparse = (numQueries: number, numHeads: number, rows: number, numSms = H100.numSms) =>
      native().sparseDecodePlan!({ numQueries, numHeads, kvLoraRank: 512, rows, numSms });
    const rng = new Rng(seed + 11);
    for (let trial = 0; trial < 100; trial++) {
      const queries = rng.int(1, 80), heads = rng.pick([16, 64, 128]), rows = rng.int(1, 2048), sms = rng.pick([46, 108, 132, 148]);
      const s = sparse(queries, heads, rows, sms);
      const ctas = queries * Math.ceil(heads / 16);
      expect(s.numSplits * s.splitRows).toBeGreaterThanOrEqual(rows);
      if (s.numSplits > 1) {
        expect((s.numSplits - 1) * s.splitRows).toBeLessThan(rows);
        expect(s.splitRows).toBeGreaterThanOrEqual(64);
        expect(ctas * (s.numSplits - 1)).toBeLessThan(2 * sms); // one split fewer would not have filled two CTAs per SM
      }
    }
    expect(sparse(1, 16, 2048)).toEqual({ numSplits: 32, splitRows: 64 });
    expect(sparse(64, 128, 2048).numSplits).toBe(1);
    expect(() => native().sparseDecodePlan!({ numQueries: 1, numHeads: 16, kvLoraRank: 512, rows: 64 } as never)).toThrow(/sparseDecodePlan: numSms/);
  });

  it('every plan covers each sequence\'s rows exactly once per m-tile, with the combine\'s partials, within the captured capacity', () => {
    const rng = new Rng(seed + 7);
    for (let trial = 0; trial < 200; trial++) {
      const heads = rng.pick([1, 3, 16, 40, 64, 128]), batch = rng.int(1, 20);
      const lens = Array.from({ length: batch }, () => (rng.next() < 0.1 ? 0 : rng.int(1, rng.pick([100, 5000, 70000]))));
      const device = { numSms: rng.pick([1, 8, 72, 132, 170]), smemOptin: rng.pick([101376, 166912, 232448]) };
      const p = plan(heads, lens, device);
      const mTiles = Math.ceil(heads / p.blockM);
      const where = `seed ${seed} trial ${trial}: heads ${heads}, lens ${lens}, ${device.numSms} SMs`;
      expect(p.work.length, where).toBeLessThanOrEqual(batch * mTiles + 4 * device.numSms);
      for (let b = 0; b < batch; b++)
        for (let mt = 0; mt < mTiles; mt++) {
          const mine = p.work.filter((w) => w[0] === b && w[1] === mt).sort((x, y) => x[2] - y[2]);
          expect(mine[0][2], where).toBe(0);
          for (let i = 1; i < mine.length; i++) expect(mine[i][2], where).toBe(mine[i - 1][3]);
          expect(mine[mine.length - 1][3], where).toBe(lens[b]);
          const item = p.combine.find((c) => c[0] === b && c[1] === mt);
          if (mine.length === 1) expect([mine[0][5], item], where).toEqual([-1, undefined]);
          else expect(mine.map((w) => w[5]).sort((x, y) => x - y), where).toEqual(Array.from({ length: item![3] }, (_, i) => item![2] + i));
        }
      expect(new Set(p.work.filter((w) => w[5] >= 0).map((w) => w[5])).size, where).toBe(p.numPartials);
      // Launch order: longest first, and the m-tiles of one split side by side (they read the same rows).
      for (let i = 1; i < p.work.length; i++) expect(p.work[i - 1][3] - p.work[i - 1][2], where).toBeGreaterThanOrEqual(p.work[i][3] - p.work[i][2]);
      for (let i = 0; i + 1 < p.work.length; i++)
        if (p.work[i][1] + 1 < mTiles && ctasPerSequence(p, p.work[i][0]) > mTiles) expect(p.work[i + 1].slice(0, 4), where).toEqual([p.work[i][0], p.work[i][1] + 1, p.work[i][2], p.work[i][3]]);
    }
  });
});

describe.runIf(sim.available)('cuda-sim: global-memory traffic of one decode (emulator counts)', () => {
  let stream: Stream;
  beforeAll(() => {
    stream = new Stream('cuda-sim');
    configure({ ...DEFAULTS, checkOrders: false });
  });
  afterAll(() => {
    configure(DEFAULTS);
    stream.dispose();
  });

  /** The least a decode can move: each cache row once, q once, out, lse, and the split partials written and read. */
  function minimumBytes(p: ReturnType<typeof problem>, rec: ReturnType<NonNullable<ReturnType<typeof native>['simLastOp']>>): number {
    const rows = p.lens.reduce((a, b) => a + b, 0);
    const M = p.heads * p.queryLen;
    const q = p.lens.length * M * p.width * 2;
    const out = p.lens.length * M * p.kvLoraRank * 2;
    const lse = p.lens.length * M * 4;
    const combine = rec.launches.find((l) => l.kernel === 'mlaCombineKernel');
    const partials = combine ? 2 * combine.bytesRead : 0; // written by decode, read by combine
    return rows * p.width * 2 + q + out + lse + partials;
  }

  it('on-chip work (emulator counts): no mma for padding query rows, ldmatrix free of bank conflicts, three barriers per tile', async () => {
    configure({ ...DEFAULTS, checkOrders: false, splitRows: 1 << 30 }); // one CTA per m-tile, wide tiles (64 x 64)
    const rng = new Rng(seed + 9);
    for (const heads of [16, 40, 128]) {
      const p = problem(rng, { heads, kvLoraRank: 512, ropeDim: 64, lens: [256], blockSize: 64 });
      mlaDecode({ q: p.q.t, cache: p.cache.t, blockTable: p.blockTable, seqLens: p.seqLens, softmaxScale: p.softmaxScale, kvLoraRank: 512, stream });
      await stream.synchronize();
      const decode = native().simLastOp!().launches.find((l) => l.kernel === 'mlaDecodeKernel')!;
      const tiles = 256 / 64;
      // Per tile and m16 tile of real rows: S (16 x 64 over 576) and O (16 x 512 over 64) in m16n8k16 instructions.
      const m16 = Math.ceil(heads / 16);
      expect(decode.counters.mma, `${heads} heads`).toBe(tiles * m16 * ((64 / 8) * (576 / 16) + (512 / 8) * (64 / 16)));
      expect(decode.counters.ldmatrixWavefronts * 128).toBe(decode.counters.ldmatrixBytes);
      expect(decode.counters.barriers).toBe(decode.grid[0] * (3 * tiles + 1));
    }
    // The longest chain of dependent mma per warp and tile: Q·Kᵀ's k-steps (576 / 16), in two chains where a warp has
    // at most four accumulator tiles (large, small); P·V's 64 / 16 k-steps.
    for (const [smemOptin, qkChain, pvChain] of [[232448, 36, 4], [166912, 18, 2], [101376, 18, 1]] as const) {
      configure({ ...DEFAULTS, checkOrders: false, splitRows: 1 << 30, smemOptin, profileBlock: 0 });
      const p = problem(rng, { heads: 64, kvLoraRank: 512, ropeDim: 64, lens: [256], blockSize: 64 });
      mlaDecode({ q: p.q.t, cache: p.cache.t, blockTable: p.blockTable, seqLens: p.seqLens, softmaxScale: p.softmaxScale, kvLoraRank: 512, stream });
      await stream.synchronize();
      const profile = native().simLastOp!().launches.find((l) => l.kernel === 'mlaDecodeKernel')!.profile;
      const chains = new Set(profile.map((ph) => Math.max(0, ...ph.mmaChainPerWarp)));
      expect([...chains].sort((a, b) => a - b), `smemOptin ${smemOptin}`).toEqual([0, pvChain, qkChain].filter((x, i, a) => a.indexOf(x) === i).sort((a, b) => a - b));
    }
    configure({ ...DEFAULTS, checkOrders: false, profileBlock: -1 });
  });

  for (const [heads, queryLen, bound] of [[16, 1, 1.05], [32, 2, 1.05], [64, 1, 1.05], [128, 1, 2.1]] as const)
    it(`${heads} heads x queryLen ${queryLen}, DeepSeek dims 512 + 64, bf16: at most ${bound}x the minimum`, async () => {
      const rng = new Rng(seed + heads);
      const p = problem(rng, { heads, queryLen, kvLoraRank: 512, ropeDim: 64, lens: [4096, 2500], blockSize: 64 });
      mlaDecode({ q: p.q.t, cache: p.cache.t, blockTable: p.blockTable, seqLens: p.seqLens, softmaxScale: p.softmaxScale, kvLoraRank: 512, stream });
      await stream.synchronize();
      const rec = native().simLastOp!();
      const moved = rec.bytesRead + rec.bytesWritten;
      const min = minimumBytes(p, rec);
      console.log(`[cuda-sim traffic] ${heads} heads x ${queryLen}: ${moved} bytes, minimum ${min}, ratio ${(moved / min).toFixed(4)}; launches ${rec.launches.map((l) => `${l.kernel} grid ${l.grid.join('x')}`).join(', ')}`);
      expect(moved / min).toBeLessThanOrEqual(bound);
      expect(moved / min).toBeGreaterThanOrEqual(1);
    });
});

describe.runIf(sim.available)('cuda-sim: several devices (SimSettings.numDevices)', () => {
  const seedDevices = seed + 100;
  beforeAll(() => configure({ ...DEFAULTS, checkOrders: false }));
  afterAll(() => configure(DEFAULTS));

  it('backends() lists the devices; a stream, its outputs and its memory are on the device it names', async () => {
    expect(backends().find((b) => b.name === 'cuda-sim')!.devices).toEqual(['cuda-sim:0', 'cuda-sim:1']);
    expect(backends().find((b) => b.name === 'cpu')!.devices).toEqual(['cpu']);
    using s1 = new Stream('cuda-sim:1');
    expect(s1.device).toBe('cuda-sim:1');
    expect(s1.backend).toBe('cuda-sim');
    expect(new Stream('cuda-sim').device).toBe('cuda-sim:0');
    await s1.synchronize();
    const before0 = memoryStats('cuda-sim:0');
    const before1 = memoryStats('cuda-sim:1');
    const rng = new Rng(seedDevices);
    const p = problem(rng, { heads: 4, kvLoraRank: 32, ropeDim: 16, lens: [40, 7], blockSize: 16, device: 'cuda-sim:1' });
    expect(p.q.t.device).toBe('cuda-sim:1');
    const { out, lse } = mlaDecode({ q: p.q.t, cache: p.cache.t, blockTable: p.blockTable, seqLens: p.seqLens, softmaxScale: p.softmaxScale, kvLoraRank: p.kvLoraRank, stream: s1 });
    expect(out.device).toBe('cuda-sim:1');
    const got = await out.toFloat32();
    const ref = refMlaDecode({ q: p.q.dense, cache: p.cache.dense, blockTable: dense(p.blockTable), seqLens: dense(p.seqLens), softmaxScale: p.softmaxScale, kvLoraRank: p.kvLoraRank });
    expect(relErr(got, ref.out), `out (seed ${seedDevices})`).toBeLessThanOrEqual(REL_BOUND.bf16);
    expect(native().simLastOp!().op).toBe('mlaDecode');
    const inputs = p.q.t.nbytes + p.cache.t.nbytes + out.nbytes + lse.nbytes;
    expect(memoryStats('cuda-sim:1').bytesInUse).toBeGreaterThanOrEqual(before1.bytesInUse + inputs);
    // Device 0 took nothing (it may have given back the scratch of earlier tests' streams, whose workers exit late).
    const after0 = memoryStats('cuda-sim:0');
    expect(after0.bytesInUse).toBeLessThanOrEqual(before0.bytesInUse);
    expect(after0.peakBytes).toBe(before0.peakBytes);
    // Between devices a tensor goes through host memory.
    const back = p.cache.t.to('cuda-sim:0');
    expect(back.device).toBe('cuda-sim:0');
    expect(Buffer.compare(Buffer.from((await back.read()).buffer), Buffer.from((await p.cache.t.read()).buffer))).toBe(0);
    back.dispose();
    expect(memoryStats('cuda-sim:0').bytesInUse).toBeLessThanOrEqual(after0.bytesInUse);
  });

  it('appendLatentCache, absorbQuery and unabsorbOutput on cuda-sim:1 match the reference', async () => {
    using s1 = new Stream('cuda-sim:1');
    const rng = new Rng(seedDevices + 1);
    const dev = <T extends Tensor>(t: T) => t.to('cuda-sim:1') as T;
    const cache = randomTensor(rng, [3, 4, 48], 'bf16');
    const kvC = randomTensor(rng, [5, 32], 'bf16');
    const kPe = randomTensor(rng, [5, 16], 'bf16');
    const slotMapping = intTensor([0, 5, 11, -1, 7]);
    const cacheOnDevice = dev(cache.t);
    appendLatentCache({ cache: cacheOnDevice, kvC: dev(kvC.t), kPe: dev(kPe.t), slotMapping, stream: s1 });
    const ref = refAppendLatentCache({ cache: cache.dense, kvC: kvC.dense, kPe: kPe.dense, slotMapping: dense(slotMapping) });
    expect(relErr(await cacheOnDevice.toFloat32(), ref)).toBe(0);
    const qNope = randomTensor(rng, [3, 2, 16], 'bf16');
    const wUk = randomTensor(rng, [2, 16, 32], 'bf16', 0.2);
    const q = absorbQuery({ qNope: dev(qNope.t), wUk: dev(wUk.t), stream: s1 });
    expect(q.device).toBe('cuda-sim:1');
    expect(relErr(await q.toFloat32(), refAbsorbQuery({ qNope: qNope.dense, wUk: wUk.dense }))).toBeLessThanOrEqual(REL_BOUND.bf16);
    const oLat = randomTensor(rng, [3, 2, 32], 'bf16');
    const wUv = randomTensor(rng, [2, 16, 32], 'bf16', 0.2);
    const o = unabsorbOutput({ oLat: dev(oLat.t), wUv: dev(wUv.t), stream: s1 });
    expect(relErr(await o.toFloat32(), refUnabsorbOutput({ oLat: oLat.dense, wUv: wUv.dense }))).toBeLessThanOrEqual(REL_BOUND.bf16);
  });

  it('copies between devices are peer to peer, on the destination\'s stream, and wait for the source\'s writes', async () => {
    const rng = new Rng(seedDevices + 3);
    using s0 = new Stream('cuda-sim:0');
    using s1 = new Stream('cuda-sim:1');
    const host = randomTensor(rng, [3, 5, 16], 'bf16');
    // Written on device 0 by an operation (o = I·oLat per head) still queued when the copy is made.
    const oLat = host.t.to('cuda-sim:0', { stream: s0 });
    const identity = Tensor.fromValues(Array.from({ length: 5 * 16 * 16 }, (_, i) => ((i % 256) % 17 === 0 ? 1 : 0)), [5, 16, 16], 'bf16');
    const on0 = unabsorbOutput({ oLat, wUv: identity.to('cuda-sim:0', { stream: s0 }), stream: s0 });
    const on1 = on0.to('cuda-sim:1', { stream: s1 });
    expect(on1.device).toBe('cuda-sim:1');
    expect(Array.from(await on1.toFloat32())).toEqual(Array.from(host.dense.data));
    const into1 = Tensor.zeros([3, 5, 16], 'bf16', { device: 'cuda-sim:1' });
    into1.copyFrom(oLat, { stream: s1 });
    expect(Array.from(await into1.toFloat32())).toEqual(Array.from(host.dense.data));
    // A third device's tensor is neither side's stream device: refused.
    configure({ ...DEFAULTS, checkOrders: false, numDevices: 3 });
    try {
      const on2 = Tensor.zeros([3, 5, 16], 'bf16', { device: 'cuda-sim:2' });
      expectMlaError(() => on2.copyFrom(oLat, { stream: s1 }), 'E_DEVICE', 'src is on cuda-sim:0 but the stream runs on cuda-sim:1');
    } finally {
      configure({ ...DEFAULTS, checkOrders: false });
    }
  });

  it('a device beyond the count, and tensors of two devices in one op: E_DEVICE naming the argument', () => {
    expectMlaError(() => new Stream('cuda-sim:2'), 'E_DEVICE', 'cuda-sim:2', '2 devices');
    expectMlaError(() => Tensor.empty([4], 'bf16', { device: 'cuda-sim:2' }), 'E_DEVICE', 'device is cuda-sim:2', '2 devices');
    expectMlaError(() => Tensor.zeros([4], 'f32').to('cuda-sim:7'), 'E_DEVICE', 'cuda-sim:7');
    expectMlaError(() => memoryStats('cuda-sim:2'), 'E_DEVICE', 'cuda-sim:2');
    const rng = new Rng(seedDevices + 2);
    const p = problem(rng, { heads: 2, kvLoraRank: 32, ropeDim: 16, lens: [9], blockSize: 4, device: 'cuda-sim:1' });
    const q0 = p.q.t.to('cuda-sim:0');
    using s1 = new Stream('cuda-sim:1');
    using s0 = new Stream('cuda-sim:0');
    const args = { blockTable: p.blockTable, seqLens: p.seqLens, softmaxScale: p.softmaxScale, kvLoraRank: 32 };
    expectMlaError(() => mlaDecode({ q: q0, cache: p.cache.t, ...args, stream: s1 }), 'E_DEVICE', 'q is on cuda-sim:0', 'cuda-sim:1');
    expectMlaError(() => mlaDecode({ q: q0, cache: p.cache.t, ...args, stream: s0 }), 'E_DEVICE', 'cache is on cuda-sim:1', 'cuda-sim:0');
    const out0 = Tensor.empty([1, 1, 2, 32], 'bf16', { device: 'cuda-sim:0' });
    expectMlaError(() => mlaDecode({ q: p.q.t, cache: p.cache.t, ...args, out: out0, stream: s1 }), 'E_DEVICE', 'out is on cuda-sim:0');
    // More devices when the emulated runtime has more.
    configure({ ...DEFAULTS, checkOrders: false, numDevices: 3 });
    try {
      using s2 = new Stream('cuda-sim:2');
      expect(s2.device).toBe('cuda-sim:2');
      expect(backends().find((b) => b.name === 'cuda-sim')!.devices).toHaveLength(3);
    } finally {
      configure({ ...DEFAULTS, checkOrders: false });
    }
  });
});

describe.runIf(sim.available)('cuda-sim: operations only enqueue (no host synchronisation inside one)', () => {
  beforeAll(() => configure({ ...DEFAULTS, checkOrders: false }));
  afterAll(() => configure(DEFAULTS));

  it('mlaDecode, appendLatentCache, absorbQuery and unabsorbOutput make zero cudaStreamSynchronize / cudaEventSynchronize calls', async () => {
    using stream = new Stream('cuda-sim:0');
    const rng = new Rng(seed + 200);
    const syncsOf = async (op: string, run: () => unknown) => {
      run();
      await stream.synchronize();
      const rec = native().simLastOp!();
      expect(rec.op).toBe(op);
      return rec.hostSyncs;
    };
    const p = problem(rng, { heads: 4, kvLoraRank: 32, ropeDim: 16, lens: [70, 3], blockSize: 16 });
    const kvC = randomTensor(rng, [2, 32], 'bf16').t.to(SIM_DEVICE);
    const kPe = randomTensor(rng, [2, 16], 'bf16').t.to(SIM_DEVICE);
    expect(await syncsOf('appendLatentCache', () => appendLatentCache({ cache: p.cache.t, kvC, kPe, slotMapping: intTensor([3, 60]), stream }))).toBe(0);
    expect(await syncsOf('mlaDecode', () => mlaDecode({ q: p.q.t, cache: p.cache.t, blockTable: p.blockTable, seqLens: p.seqLens, softmaxScale: p.softmaxScale, kvLoraRank: 32, stream }))).toBe(0);
    configure({ ...DEFAULTS, checkOrders: false, splitRows: 32 }); // with the combine kernel too
    expect(await syncsOf('mlaDecode', () => mlaDecode({ q: p.q.t, cache: p.cache.t, blockTable: p.blockTable, seqLens: p.seqLens, softmaxScale: p.softmaxScale, kvLoraRank: 32, stream }))).toBe(0);
    configure({ ...DEFAULTS, checkOrders: false });
    const qNope = randomTensor(rng, [2, 4, 16], 'bf16').t.to(SIM_DEVICE);
    const wUk = randomTensor(rng, [4, 16, 32], 'bf16').t.to(SIM_DEVICE);
    expect(await syncsOf('absorbQuery', () => absorbQuery({ qNope, wUk, stream }))).toBe(0);
    const oLat = randomTensor(rng, [2, 4, 32], 'bf16').t.to(SIM_DEVICE);
    const wUv = randomTensor(rng, [4, 16, 32], 'bf16').t.to(SIM_DEVICE);
    expect(await syncsOf('unabsorbOutput', () => unabsorbOutput({ oLat, wUv, stream }))).toBe(0);
  });

  it('many operations queued on two streams, each reading what the other wrote, give the results of running them one by one', async () => {
    const rng = new Rng(seed + 201);
    using a = new Stream('cuda-sim:0');
    using b = new Stream('cuda-sim:0');
    const qNope = randomTensor(rng, [3, 2, 16], 'bf16');
    const wUk = randomTensor(rng, [2, 16, 32], 'bf16', 0.2);
    const wUv = randomTensor(rng, [2, 16, 32], 'bf16', 0.2);
    const wUkD = wUk.t.to(SIM_DEVICE);
    const wUvD = wUv.t.to(SIM_DEVICE);
    // a: q_lat = absorb(qNope); b: o = unabsorb(q_lat) (a dependency on a), repeated with fresh outputs.
    const results: Tensor[] = [];
    for (let i = 0; i < 12; i++) {
      const qLat = absorbQuery({ qNope: qNope.t.to(SIM_DEVICE, { stream: a }), wUk: wUkD, stream: a });
      results.push(unabsorbOutput({ oLat: qLat, wUv: wUvD, stream: b }));
    }
    const qLatRef = refAbsorbQuery({ qNope: qNope.dense, wUk: wUk.dense });
    const oRef = refUnabsorbOutput({ oLat: { data: qLatRef, shape: [3, 2, 32] }, wUv: wUv.dense });
    const first = await results[0].read();
    expect(relErr(await results[0].toFloat32(), oRef)).toBeLessThanOrEqual(3 * REL_BOUND.bf16);
    for (const r of results) expect(Buffer.compare(Buffer.from((await r.read()).buffer), Buffer.from(first.buffer))).toBe(0);
  });
});

it.runIf(!sim.available)('cuda-sim is built by npm test (cmake-js build)', () => {
  expect.fail(`cuda-sim unavailable: ${sim.reason}`);
});
