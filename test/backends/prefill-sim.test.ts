// The prefill kernels under the cuda-sim emulator, beyond the shared prefill suite (which runs every op on cuda-sim
// under three thread orders): which kernels run, the small-shared-memory tile shapes, refused shapes, no host
// synchronisation, and the global-memory traffic the emulator counts: each key/value tile read once per query tile
// (and the shared rope key once per tile for all heads of a CTA), causal tiles past the diagonal never read.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends, gatherLatentCache, mergeAttentionStates, MlaError, mlaPrefill, Stream, Tensor, upProjectKv } from 'mla-kernels';
import { native, type SimSettings } from '../../lib/native.js';
import { refMlaPrefill } from '../../lib/reference.js';
import { countNaN, dense, intTensor, randomTensor, REL_BOUND, relErr, Rng, testSeed } from '../helpers.js';

const seed = testSeed('prefill-sim');
const SIM = 'cuda-sim:0' as const;
const sim = backends().find((b) => b.name === 'cuda-sim')!;
const DEFAULTS: SimSettings = { checkOrders: true, seed, smallConfig: false, numSms: 8, splitRows: 0, batchInvariant: false, deviceMemoryBytes: 4 * 2 ** 30, numDevices: 2 };
const configure = (s: SimSettings) => native().simConfigure!(s);
const lastOp = () => native().simLastOp!();
const cumulative = (lens: number[]): number[] => lens.reduce((acc, x) => [...acc, acc[acc.length - 1] + x], [0]);

/** A prefill problem on the emulator's device, drawn on the host (the reference reads those values). */
function problem(rng: Rng, o: { qLens: number[]; kvLens: number[]; heads: number; nope?: number; rope?: number; vDim?: number; dtype?: 'bf16' | 'f16' }) {
  const nope = o.nope ?? 128, rope = o.rope ?? 64, vDim = o.vDim ?? 128, dtype = o.dtype ?? 'bf16';
  const totalQ = o.qLens.reduce((a, b) => a + b, 0), totalKv = o.kvLens.reduce((a, b) => a + b, 0);
  const put = (x: ReturnType<typeof randomTensor>) => ({ t: x.t.to(SIM), dense: x.dense });
  return {
    ...o, nope, rope, vDim, dtype, totalQ, totalKv,
    q: put(randomTensor(rng, [totalQ, o.heads, nope + rope], dtype)),
    kNope: put(randomTensor(rng, [totalKv, o.heads, nope], dtype)),
    kPe: put(randomTensor(rng, [totalKv, rope], dtype)),
    v: put(randomTensor(rng, [totalKv, o.heads, vDim], dtype)),
    cuSeqLensQ: intTensor(cumulative(o.qLens)),
    cuSeqLensKv: intTensor(cumulative(o.kvLens)),
    softmaxScale: 1 / Math.sqrt(nope + rope),
  };
}
type Problem = ReturnType<typeof problem>;

describe.runIf(sim.available)('cuda-sim: prefill kernels under emulation', () => {
  let stream: Stream;
  beforeAll(() => {
    stream = new Stream(SIM);
    configure(DEFAULTS);
  });
  afterAll(() => {
    configure(DEFAULTS);
    stream.dispose();
  });

  async function prefillAndCheck(p: Problem, causal: boolean) {
    const r = mlaPrefill({ q: p.q.t, kNope: p.kNope.t, kPe: p.kPe.t, v: p.v.t, cuSeqLensQ: p.cuSeqLensQ, cuSeqLensKv: p.cuSeqLensKv, softmaxScale: p.softmaxScale, causal, stream });
    const got = await r.out.toFloat32();
    const record = lastOp();
    expect(countNaN(got)).toBe(0);
    const ref = refMlaPrefill({ q: p.q.dense, kNope: p.kNope.dense, kPe: p.kPe.dense, v: p.v.dense, cuSeqLensQ: dense(p.cuSeqLensQ), cuSeqLensKv: dense(p.cuSeqLensKv), softmaxScale: p.softmaxScale, causal });
    expect(relErr(got, ref.out), `qLens [${p.qLens}] kvLens [${p.kvLens}] heads ${p.heads} (seed ${seed})`).toBeLessThanOrEqual(REL_BOUND[p.dtype]);
    return record;
  }

  it('the emulator runs every prefill kernel under three thread orders', async () => {
    const rng = new Rng(seed);
    const p = problem(rng, { qLens: [20, 5], kvLens: [40, 5], heads: 3, nope: 32, rope: 16, vDim: 32 });
    const rec = await prefillAndCheck(p, true);
    expect(rec.op).toBe('mlaPrefill');
    expect(rec.ordersChecked).toBe(3);
    expect(rec.launches.map((l) => l.kernel)).toEqual(['mlaPrefillKernel']);
    expect(rec.launches[0].threads).toBe(256); // 4 warps of rows x 2 heads
    expect(rec.launches[0].fiberSwitches).toBeGreaterThan(0);
    const kvC = randomTensor(rng, [9, 32], 'bf16').t.to(SIM);
    const up = upProjectKv({ kvC, wUk: randomTensor(rng, [3, 32, 32], 'bf16').t.to(SIM), wUv: randomTensor(rng, [3, 32, 32], 'bf16').t.to(SIM), stream });
    await up.v.read();
    expect(lastOp().launches.map((l) => l.kernel)).toEqual(['gemmNtKernel']);
    expect(lastOp().ordersChecked).toBe(3);
    const cache = randomTensor(rng, [4, 4, 48], 'bf16').t.to(SIM);
    await gatherLatentCache({ cache, blockTable: intTensor([3, 1, 0, 2], [2, 2]), cuSeqLens: intTensor([0, 5, 8]), kvLoraRank: 32, numRows: 9, stream }).kPe.read();
    expect(lastOp().launches.map((l) => l.kernel)).toEqual(['gatherLatentCacheKernel']);
    const lse = Tensor.fromValues([1, -Infinity, 2, 3, 0, -Infinity], [3, 2], 'f32').to(SIM);
    const o = randomTensor(rng, [3, 2, 32], 'bf16').t.to(SIM);
    await mergeAttentionStates({ outA: o, lseA: lse, outB: o, lseB: lse, stream }).out.read();
    expect(lastOp().launches.map((l) => l.kernel)).toEqual(['mergeAttentionStatesKernel']);
    // Padding rows of q get their own small kernel.
    const padded = problem(rng, { qLens: [3], kvLens: [4], heads: 2, nope: 16, rope: 16, vDim: 16 });
    const q = Tensor.zeros([5, 2, 32], 'bf16', { device: SIM });
    await mlaPrefill({ q, kNope: padded.kNope.t, kPe: padded.kPe.t, v: padded.v.t, cuSeqLensQ: padded.cuSeqLensQ, cuSeqLensKv: padded.cuSeqLensKv, softmaxScale: 0.2, causal: true, stream }).lse.read();
    expect(lastOp().launches.map((l) => l.kernel)).toEqual(['mlaPrefillKernel', 'prefillPadKernel']);
  });

  it('the small tile shapes of ~100 KB shared-memory GPUs (one head per CTA, 3 stages) give the same results', async () => {
    const rng = new Rng(seed + 1);
    configure({ ...DEFAULTS, smallConfig: true });
    try {
      const rec = await prefillAndCheck(problem(rng, { qLens: [70, 1, 0], kvLens: [100, 1, 3], heads: 3 }), true);
      expect(rec.launches[0].threads).toBe(128);
      await prefillAndCheck(problem(rng, { qLens: [17, 40], kvLens: [33, 0], heads: 2, nope: 48, rope: 0, vDim: 40, dtype: 'f16' }), false);
    } finally {
      configure(DEFAULTS);
    }
  });

  it('refuses what the CUDA kernels do not take, before queuing anything: E_UNSUPPORTED naming the limit', async () => {
    const rng = new Rng(seed + 2);
    const refused = (fn: () => unknown, mentions: string) => {
      try {
        fn();
        expect.fail('expected E_UNSUPPORTED');
      } catch (e) {
        expect(e).toBeInstanceOf(MlaError);
        expect((e as MlaError).code, (e as MlaError).message).toBe('E_UNSUPPORTED');
        expect((e as MlaError).message).toContain(mentions);
      }
    };
    const args = (p: Problem) => ({ q: p.q.t, kNope: p.kNope.t, kPe: p.kPe.t, v: p.v.t, cuSeqLensQ: p.cuSeqLensQ, cuSeqLensKv: p.cuSeqLensKv, softmaxScale: 0.2, stream });
    refused(() => mlaPrefill(args(problem(rng, { qLens: [2], kvLens: [2], heads: 1, nope: 24, rope: 8, vDim: 16 }))), 'nopeDim and ropeDim must be multiples of 16');
    refused(() => mlaPrefill(args(problem(rng, { qLens: [2], kvLens: [2], heads: 1, nope: 16, rope: 16, vDim: 256 }))), 'vHeadDim a multiple of 8 up to 128');
    const q32 = Tensor.zeros([2, 1, 32], 'f32', { device: SIM });
    const p = problem(rng, { qLens: [2], kvLens: [2], heads: 1, nope: 16, rope: 16, vDim: 16 });
    refused(() => mlaPrefill({ ...args(p), q: q32, kNope: Tensor.zeros([2, 1, 16], 'f32', { device: SIM }), kPe: Tensor.zeros([2, 16], 'f32', { device: SIM }), v: Tensor.zeros([2, 1, 16], 'f32', { device: SIM }) }), 'bf16 or f16');
    refused(() => upProjectKv({ kvC: Tensor.zeros([2, 20], 'bf16', { device: SIM }), wUk: Tensor.zeros([1, 16, 20], 'bf16', { device: SIM }), wUv: Tensor.zeros([1, 16, 20], 'bf16', { device: SIM }), stream }), 'kvLoraRank must be a multiple of 8');
    const fp8 = Tensor.zeros([2, 4, 48], 'fp8_e4m3', { device: SIM });
    refused(() => gatherLatentCache({ cache: fp8, blockTable: intTensor([0], [1, 1]), cuSeqLens: intTensor([0, 3]), kvLoraRank: 32, dtype: 'f32', stream }), 'bf16 or f16');
  });

  it('mlaPrefill, gatherLatentCache, upProjectKv and mergeAttentionStates only enqueue: no host synchronisation', async () => {
    const rng = new Rng(seed + 3);
    configure({ ...DEFAULTS, checkOrders: false });
    try {
      const syncs = async (op: string, run: () => unknown) => {
        run();
        await stream.synchronize();
        expect(lastOp().op).toBe(op);
        return lastOp().hostSyncs;
      };
      const p = problem(rng, { qLens: [10, 3], kvLens: [30, 3], heads: 2, nope: 32, rope: 16, vDim: 32 });
      expect(await syncs('mlaPrefill', () => mlaPrefill({ q: p.q.t, kNope: p.kNope.t, kPe: p.kPe.t, v: p.v.t, cuSeqLensQ: p.cuSeqLensQ, cuSeqLensKv: p.cuSeqLensKv, softmaxScale: 0.2, causal: true, stream }))).toBe(0);
      const cache = randomTensor(rng, [4, 4, 48], 'bf16').t.to(SIM);
      expect(await syncs('gatherLatentCache', () => gatherLatentCache({ cache, blockTable: intTensor([0, 1, 2, 3], [2, 2]), cuSeqLens: intTensor([0, 5, 8]), kvLoraRank: 32, stream }))).toBe(0);
      const kvC = randomTensor(rng, [9, 32], 'bf16').t.to(SIM);
      const w = randomTensor(rng, [2, 32, 32], 'bf16').t.to(SIM);
      expect(await syncs('upProjectKv', () => upProjectKv({ kvC, wUk: w, wUv: w, stream }))).toBe(0);
      const lse = Tensor.fromValues([1, 2, 3, 4], [2, 2], 'f32').to(SIM);
      const o = randomTensor(rng, [2, 2, 32], 'bf16').t.to(SIM);
      expect(await syncs('mergeAttentionStates', () => mergeAttentionStates({ outA: o, lseA: lse, outB: o, lseB: lse, stream }))).toBe(0);
    } finally {
      configure(DEFAULTS);
    }
  });
});

describe.runIf(sim.available)('cuda-sim: global-memory traffic of prefill (emulator counts)', () => {
  let stream: Stream;
  beforeAll(() => {
    stream = new Stream(SIM);
    configure({ ...DEFAULTS, checkOrders: false });
  });
  afterAll(() => {
    configure(DEFAULTS);
    stream.dispose();
  });

  /**
   * The bytes a tiled prefill must move: per CTA (blockM queries x `heads` heads of one sequence) its queries once
   * and, once, every key its last query sees: per head kNope and v, and the rope key once for all the CTA's heads;
   * plus the outputs (the work list is read with plain loads, which the emulator does not count). `once` is every
   * input byte read once, the least any kernel could move, for the log.
   */
  function tiledBytes(p: Problem, causal: boolean, blockM: number, heads: number): { tiled: number; once: number } {
    const e = 2;
    let tiled = 0, once = 0;
    p.qLens.forEach((qLen, b) => {
      const kvLen = p.kvLens[b];
      once += kvLen * (p.heads * (p.nope + p.vDim) + p.rope) * e;
      for (let i0 = 0; i0 < qLen; i0 += blockM) {
        const rows = Math.min(blockM, qLen - i0);
        const keys = causal ? kvLen - qLen + i0 + rows : kvLen;
        for (let h = 0; h < p.heads; h += heads) {
          const hs = Math.min(heads, p.heads - h);
          tiled += rows * hs * (p.nope + p.rope) * e + keys * (hs * (p.nope + p.vDim) + p.rope) * e;
        }
      }
    });
    const outputs = p.totalQ * p.heads * (p.vDim * e + 4);
    return { tiled: tiled + outputs, once: once + p.totalQ * p.heads * (p.nope + p.rope) * e + outputs };
  }

  for (const [name, small] of [['large tiles (2 heads per CTA)', false], ['small tiles (1 head per CTA)', true]] as const)
    for (const causal of [true, false])
      it(`${name}, DeepSeek dims, 16 heads, ${causal ? 'causal prompts of 256 and 130' : 'a 192-token chunk over 300 context rows'}: each K/V tile read once per query tile`, async () => {
        configure({ ...DEFAULTS, checkOrders: false, smallConfig: small });
        const rng = new Rng(seed + (small ? 10 : 20) + (causal ? 1 : 0));
        const p = causal ? problem(rng, { qLens: [256, 130], kvLens: [256, 130], heads: 16 }) : problem(rng, { qLens: [192], kvLens: [300], heads: 16 });
        mlaPrefill({ q: p.q.t, kNope: p.kNope.t, kPe: p.kPe.t, v: p.v.t, cuSeqLensQ: p.cuSeqLensQ, cuSeqLensKv: p.cuSeqLensKv, softmaxScale: p.softmaxScale, causal, stream });
        await stream.synchronize();
        const rec = lastOp();
        const moved = rec.bytesRead + rec.bytesWritten;
        const { tiled, once } = tiledBytes(p, causal, 64, small ? 1 : 2);
        console.log(`[cuda-sim prefill traffic] ${name}, ${causal ? 'causal' : 'chunk'}: ${moved} bytes; tiled minimum ${tiled} (ratio ${(moved / tiled).toFixed(4)}); each byte once ${once} (ratio ${(moved / once).toFixed(2)})`);
        // Exactly the tiled minimum up to rounding: no K/V tile read twice by a CTA, the rope key once per CTA (not
        // per head), no tile past a CTA's causal limit. The bound is 1.1x.
        expect(moved / tiled).toBeGreaterThanOrEqual(1);
        expect(moved / tiled).toBeLessThanOrEqual(1.01);
        configure({ ...DEFAULTS, checkOrders: false });
      });

  it('gather moves each gathered row once (and writes zero rows past them); merge reads both states once', async () => {
    const rng = new Rng(seed + 30);
    const cache = randomTensor(rng, [16, 16, 576], 'bf16').t.to(SIM);
    const table = intTensor(rng.shuffle(Array.from({ length: 16 }, (_, i) => i)), [2, 8]);
    gatherLatentCache({ cache, blockTable: table, cuSeqLens: intTensor([0, 100, 180]), seqStarts: intTensor([20, 0]), kvLoraRank: 512, numRows: 190, stream });
    await stream.synchronize();
    let rec = lastOp();
    const rowBytes = 576 * 2;
    // Reads: each row, and per row the index lookups of its warp's lane 0 (cuSeqLens twice per search step, a block id).
    expect(rec.bytesWritten).toBe(190 * rowBytes);
    expect(rec.bytesRead).toBeGreaterThanOrEqual(180 * rowBytes);
    expect(rec.bytesRead).toBeLessThanOrEqual(180 * rowBytes + 190 * 64);
    const outA = randomTensor(rng, [50, 16, 128], 'bf16').t.to(SIM);
    const lse = Tensor.fromValues(Array.from({ length: 800 }, () => rng.next()), [50, 16], 'f32').to(SIM);
    mergeAttentionStates({ outA, lseA: lse, outB: outA, lseB: lse, stream });
    await stream.synchronize();
    rec = lastOp();
    expect(rec.bytesRead).toBe(2 * 800 * (128 * 2 + 4));
    expect(rec.bytesWritten).toBe(800 * (128 * 2 + 4));
  });
});

it.runIf(!sim.available)('cuda-sim is built by npm test (cmake-js build)', () => {
  expect.fail(`cuda-sim unavailable: ${sim.reason}`);
});
