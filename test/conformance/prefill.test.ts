// The prefill operations on every backend this build has (cpu, cuda-sim; cuda on a GPU), against lib/reference.ts:
// random ragged batches (empty sequences, kvLen > qLen, one token, padding rows), every dtype the backend takes,
// DeepSeek's dims and odd ones; the gather, up-projection and merge ops; plans and graph capture; and the agreement of
// the two paths: a prompt prefilled through gather + upProjectKv + mlaPrefill + mergeAttentionStates gives what
// absorbQuery + mlaDecode (causal) + unabsorbOutput give for the same weights and tokens. Outputs are poisoned first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  absorbQuery,
  appendLatentCache,
  gatherLatentCache,
  mergeAttentionStates,
  mlaDecode,
  mlaPrefill,
  planPrefill,
  Stream,
  Tensor,
  unabsorbOutput,
  upProjectKv,
  type FloatDType,
} from 'mla-kernels';
import { refGatherLatentCache, refMergeAttentionStates, refMlaPrefill, refUpProjectKv, type Dense } from '../../lib/reference.js';
import { arrayOf, countNaN, dense, exactValues, intTensor, onDevice, poisoned, randomTensor, REL_BOUND, relErr, Rng, shapeRules, suiteBackends, testSeed, type ShapeRules } from '../helpers.js';

const seed = testSeed('prefill');
const LSE_TOL = 1e-4;

const cumulative = (lens: number[]): number[] => lens.reduce((acc, x) => [...acc, acc[acc.length - 1] + x], [0]);

/** Prefill dims a backend takes: the CUDA kernels want multiples of 16 (nope, rope) and of 8 (v). */
function prefillDims(rules: ShapeRules, rng: Rng): { nope: number; rope: number; vDim: number } {
  return { nope: rules.nopeDim(rng), rope: rules.ropeDim(rng), vDim: rules.vHeadDim(rng) };
}

interface PrefillCase {
  qLens: number[];
  kvLens: number[];
  heads: number;
  nope: number;
  rope: number;
  vDim: number;
  causal: boolean;
  /** Rows of q (and of the keys) past the last sequence. */
  padQ?: number;
  padKv?: number;
}

function checkLse(got: Float32Array, ref: Float64Array, what: string): void {
  for (let i = 0; i < ref.length; i++) {
    if (ref[i] === -Infinity) expect(got[i], `lse[${i}] of a row that sees nothing, ${what}`).toBe(-Infinity);
    else expect(Math.abs(got[i] - ref[i]), `lse[${i}], ${what}`).toBeLessThanOrEqual(LSE_TOL * Math.max(1, Math.abs(ref[i])));
  }
}

async function checkPrefill(stream: Stream, rng: Rng, dtype: FloatDType, c: PrefillCase): Promise<void> {
  const totalQ = c.qLens.reduce((a, b) => a + b, 0) + (c.padQ ?? 0);
  const totalKv = c.kvLens.reduce((a, b) => a + b, 0) + (c.padKv ?? 0);
  const q = randomTensor(rng, [totalQ, c.heads, c.nope + c.rope], dtype);
  const kNope = randomTensor(rng, [totalKv, c.heads, c.nope], dtype);
  const kPe = randomTensor(rng, [totalKv, c.rope], dtype);
  const v = randomTensor(rng, [totalKv, c.heads, c.vDim], dtype);
  const cuSeqLensQ = intTensor(cumulative(c.qLens));
  const cuSeqLensKv = intTensor(cumulative(c.kvLens));
  const softmaxScale = (0.5 + rng.next()) / Math.sqrt(c.nope + c.rope);
  const out = onDevice(poisoned([totalQ, c.heads, c.vDim], dtype), stream);
  const lse = onDevice(poisoned([totalQ, c.heads], 'f32'), stream);
  const what = `${dtype} qLens [${c.qLens}] kvLens [${c.kvLens}] heads ${c.heads} nope ${c.nope} rope ${c.rope} v ${c.vDim} causal ${c.causal} pad ${c.padQ ?? 0}/${c.padKv ?? 0} (seed ${seed})`;
  const dev = <T extends Tensor>(t: T) => onDevice(t, stream);
  const r = mlaPrefill({ q: dev(q.t), kNope: dev(kNope.t), kPe: dev(kPe.t), v: dev(v.t), cuSeqLensQ, cuSeqLensKv, softmaxScale, causal: c.causal, out, lse, stream });
  expect(r.out).toBe(out);
  const got = await out.toFloat32();
  const gotLse = await lse.toFloat32();
  expect(countNaN(got), `unwritten out elements, ${what}`).toBe(0);
  expect(countNaN(gotLse), `unwritten lse elements, ${what}`).toBe(0);
  const ref = refMlaPrefill({ q: q.dense, kNope: kNope.dense, kPe: kPe.dense, v: v.dense, cuSeqLensQ: dense(cuSeqLensQ), cuSeqLensKv: dense(cuSeqLensKv), softmaxScale, causal: c.causal });
  expect(relErr(got, ref.out), `out, ${what}`).toBeLessThanOrEqual(REL_BOUND[dtype]);
  checkLse(gotLse, ref.lse, what);
  // Rows that see nothing (no keys, padding) are exactly zero.
  for (let row = 0; row < totalQ; row++)
    for (let h = 0; h < c.heads; h++)
      if (ref.lse[row * c.heads + h] === -Infinity) {
        const base = (row * c.heads + h) * c.vDim;
        expect(Array.from(got.subarray(base, base + c.vDim)).every((x) => x === 0), `zero output of row ${row}, ${what}`).toBe(true);
      }
}

/** A batch of random lengths: empty sequences, single tokens, kvLen > qLen (context before the new tokens). */
function randomBatch(rng: Rng, causal: boolean, maxLen: number): { qLens: number[]; kvLens: number[] } {
  const batch = rng.int(1, 4);
  const qLens: number[] = [], kvLens: number[] = [];
  for (let b = 0; b < batch; b++) {
    const kind = rng.int(0, 4);
    const q = kind === 0 ? 0 : kind === 1 ? 1 : rng.int(2, maxLen);
    const extra = rng.pick([0, 0, rng.int(1, maxLen)]);
    const kv = causal ? q + extra : kind === 4 ? 0 : rng.int(0, maxLen);
    qLens.push(q);
    kvLens.push(kv);
  }
  return { qLens, kvLens };
}

/** A paged latent cache filled with random rows, and its block table for the given lengths (blocks shuffled). */
function pagedCache(rng: Rng, lens: number[], blockSize: number, width: number, dtype: FloatDType) {
  const used = lens.map((l) => Math.ceil(l / blockSize));
  const maxBlocks = Math.max(1, ...used) + rng.int(0, 1);
  const numBlocks = used.reduce((a, b) => a + b, 0) + rng.int(1, 2);
  const ids = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const table: number[] = [];
  let next = 0;
  for (const u of used) for (let j = 0; j < maxBlocks; j++) table.push(j < u ? ids[next++] : -3);
  return { cache: randomTensor(rng, [numBlocks, blockSize, width], dtype), blockTable: intTensor(table, [lens.length, maxBlocks]) };
}

for (const backend of suiteBackends()) {
  if (!backend.available) {
    if (backend.name === 'cpu') it('cpu backend is available', () => expect(backend.reason).toBe('available'));
    else it.skip(`${backend.name} backend: unavailable in this build (${backend.reason})`, () => {});
    continue;
  }

  describe(`${backend.name} backend: prefill`, () => {
    const rules = shapeRules(backend.name);
    let stream: Stream;
    beforeAll(() => {
      stream = new Stream(backend.name);
    });
    afterAll(() => stream.dispose());
    const dev = <T extends Tensor>(t: T): T => onDevice(t, stream);

    for (const dtype of rules.dtypes) {
      it(`mlaPrefill ${dtype}: random ragged batches, causal and not, padding rows`, async () => {
        const rng = new Rng(seed + 1);
        for (const causal of [true, false])
          for (let trial = 0; trial < 3; trial++) {
            const { qLens, kvLens } = randomBatch(rng, causal, 40);
            await checkPrefill(stream, rng, dtype, { qLens, kvLens, heads: rng.int(1, 5), ...prefillDims(rules, rng), causal, padQ: trial === 1 ? rng.int(1, 3) : 0, padKv: trial === 2 ? 2 : 0 });
          }
      });

      it(`mlaPrefill ${dtype}: DeepSeek dims (nope 128, rope 64, v 128), 16 heads, several tiles of queries and keys`, async () => {
        const rng = new Rng(seed + 2);
        // Several query tiles of either backend (64 on a GPU, 96 on the CPU) and key tiles (32, 64), with context.
        await checkPrefill(stream, rng, dtype, { qLens: [130, 1, 0, 40], kvLens: [130, 40, 9, 100], heads: 16, nope: 128, rope: 64, vDim: 128, causal: true });
        await checkPrefill(stream, rng, dtype, { qLens: [37, 70], kvLens: [150, 0], heads: 16, nope: 128, rope: 64, vDim: 128, causal: false });
      });
    }

    it('mlaPrefill bf16: 128 heads (DeepSeek-V3), a one-token sequence and a chunk with context', async () => {
      const rng = new Rng(seed + 3);
      await checkPrefill(stream, rng, 'bf16', { qLens: [1, 20], kvLens: [1, 60], heads: 128, nope: 128, rope: 64, vDim: 128, causal: true });
    });

    it('mlaPrefill: no rope part (ropeDim 0), odd head counts', async () => {
      const rng = new Rng(seed + 4);
      const nope = backend.name === 'cpu' ? 13 : 32;
      const vDim = backend.name === 'cpu' ? 7 : 24;
      await checkPrefill(stream, rng, rules.dtypes[0], { qLens: [5, 17], kvLens: [9, 17], heads: 3, nope, rope: 0, vDim, causal: true });
    });

    for (const dtype of rules.dtypes)
      it(`gatherLatentCache ${dtype} and fp8: ranges of each sequence (seqStarts), padding rows zero, block sizes 1, 5, 16`, async () => {
        const rng = new Rng(seed + 5);
        for (const blockSize of [1, 5, 16])
          for (const fp8 of [false, true]) {
            const kvLoraRank = rules.kvLoraRank(rng);
            const ropeDim = rules.ropeDim(rng);
            const width = kvLoraRank + ropeDim;
            const lens = [rng.int(0, 40), rng.int(1, 40), 0, rng.int(1, 40)];
            const paged = pagedCache(rng, lens, blockSize, width, dtype);
            const cacheScale = fp8 ? Math.fround(0.5 + rng.next()) : 1;
            const cache = fp8 ? Tensor.fromValues(paged.cache.dense.data, paged.cache.t.shape, 'fp8_e4m3', { scale: cacheScale }) : paged.cache.t;
            const starts = lens.map((l) => rng.int(0, l));
            const counts = lens.map((l, b) => rng.int(0, l - starts[b]));
            const cuSeqLens = intTensor(cumulative(counts));
            const pad = rng.int(0, 3);
            const numRows = counts.reduce((a, b) => a + b, 0) + pad;
            const kvC = dev(poisoned([numRows, kvLoraRank], dtype));
            const kPe = dev(poisoned([numRows, ropeDim], dtype));
            const seqStarts = intTensor(starts);
            const got = gatherLatentCache({ cache: dev(cache), blockTable: paged.blockTable, cuSeqLens, seqStarts, kvLoraRank, kvC, kPe, stream });
            expect(got.kvC).toBe(kvC);
            // The scale travels with the cache: toFloat32 gives its values (stored times scale, in f32, as the kernels).
            const cacheValues = fp8 ? { data: await cache.toFloat32(), shape: cache.shape } : paged.cache.dense;
            const ref = refGatherLatentCache({ cache: cacheValues, blockTable: dense(paged.blockTable), cuSeqLens: dense(cuSeqLens), seqStarts: dense(seqStarts), kvLoraRank, numRows });
            const what = `${dtype}${fp8 ? ' from fp8' : ''} blockSize ${blockSize} lens [${lens}] starts [${starts}] counts [${counts}] pad ${pad} (seed ${seed})`;
            // A copy is exact; an fp8 value times the scale is rounded once to the dtype.
            const c = await kvC.toFloat32();
            const pe = await kPe.toFloat32();
            expect(countNaN(c) + countNaN(pe), `unwritten rows, ${what}`).toBe(0);
            if (!fp8 || dtype === 'f32') {
              expect(Array.from(c), `kvC, ${what}`).toEqual(Array.from(ref.kvC, Math.fround));
              expect(Array.from(pe), `kPe, ${what}`).toEqual(Array.from(ref.kPe, Math.fround));
            } else {
              expect(relErr(c, ref.kvC), `kvC, ${what}`).toBeLessThanOrEqual(REL_BOUND[dtype]);
              expect(relErr(pe, ref.kPe), `kPe, ${what}`).toBeLessThanOrEqual(REL_BOUND[dtype]);
            }
          }
      });

    for (const dtype of rules.dtypes)
      it(`upProjectKv ${dtype}: random shapes and DeepSeek's (kvLoraRank 512, 16 heads)`, async () => {
        const rng = new Rng(seed + 6);
        const shapes = [
          { tokens: rng.int(1, 9), heads: rng.int(1, 5), nope: rules.nopeDim(rng), vDim: rules.vHeadDim(rng), rank: rules.kvLoraRank(rng) },
          { tokens: 0, heads: 2, nope: rules.nopeDim(rng), vDim: rules.vHeadDim(rng), rank: rules.kvLoraRank(rng) },
          { tokens: 70, heads: 3, nope: rules.nopeDim(rng), vDim: rules.vHeadDim(rng), rank: rules.kvLoraRank(rng) },
          { tokens: 20, heads: 16, nope: 128, vDim: 128, rank: 512 },
        ];
        for (const s of shapes) {
          const kvC = randomTensor(rng, [s.tokens, s.rank], dtype);
          const wUk = randomTensor(rng, [s.heads, s.nope, s.rank], dtype, 1 / Math.sqrt(s.rank));
          const wUv = randomTensor(rng, [s.heads, s.vDim, s.rank], dtype, 1 / Math.sqrt(s.rank));
          const kNope = dev(poisoned([s.tokens, s.heads, s.nope], dtype));
          const r = upProjectKv({ kvC: dev(kvC.t), wUk: dev(wUk.t), wUv: dev(wUv.t), kNope, stream }); // v allocated
          expect(r.kNope).toBe(kNope);
          expect(r.v.shape).toEqual([s.tokens, s.heads, s.vDim]);
          const ref = refUpProjectKv({ kvC: kvC.dense, wUk: wUk.dense, wUv: wUv.dense });
          const what = `${dtype} ${JSON.stringify(s)} (seed ${seed})`;
          const gotK = await kNope.toFloat32();
          expect(countNaN(gotK), `unwritten kNope, ${what}`).toBe(0);
          expect(relErr(gotK, ref.kNope), `kNope, ${what}`).toBeLessThanOrEqual(REL_BOUND[dtype]);
          expect(relErr(await r.v.toFloat32(), ref.v), `v, ${what}`).toBeLessThanOrEqual(REL_BOUND[dtype]);
        }
      });

    for (const dtype of rules.dtypes)
      it(`mergeAttentionStates ${dtype}: by log-sum-exp, exact where a part is empty`, async () => {
        const rng = new Rng(seed + 7);
        const tokens = rng.int(1, 30), heads = rng.int(1, 6), width = rules.vHeadDim(rng);
        const outA = randomTensor(rng, [tokens, heads, width], dtype);
        const outB = randomTensor(rng, [tokens, heads, width], dtype);
        // lse values far apart and close, some -Infinity on either side or both (those parts' outputs are zero).
        const kinds = Array.from({ length: tokens * heads }, () => rng.int(0, 5));
        const lseA = kinds.map((k) => (k === 1 || k === 3 ? -Infinity : k === 4 ? 40 * rng.next() : 3 * rng.next()));
        const lseB = kinds.map((k) => (k === 2 || k === 3 ? -Infinity : k === 5 ? -40 * rng.next() : 3 * rng.next()));
        const zeroWhere = (o: { t: Tensor<FloatDType>; dense: Dense }, lse: number[]) => {
          const values = Array.from(o.dense.data, (x, i) => (lse[Math.floor(i / width)] === -Infinity ? 0 : x));
          const t = Tensor.fromValues(values, [tokens, heads, width], dtype);
          return { t, dense: dense(t) };
        };
        const a = zeroWhere(outA, lseA), b = zeroWhere(outB, lseB);
        const lA = Tensor.fromValues(lseA, [tokens, heads], 'f32'), lB = Tensor.fromValues(lseB, [tokens, heads], 'f32');
        const out = dev(poisoned([tokens, heads, width], dtype));
        const r = mergeAttentionStates({ outA: dev(a.t), lseA: dev(lA), outB: dev(b.t), lseB: dev(lB), out, stream });
        const ref = refMergeAttentionStates({ outA: a.dense, lseA: dense(lA), outB: b.dense, lseB: dense(lB) });
        const got = await out.toFloat32();
        const what = `${dtype} tokens ${tokens} heads ${heads} width ${width} (seed ${seed})`;
        expect(countNaN(got), `unwritten out, ${what}`).toBe(0);
        expect(relErr(got, ref.out), `out, ${what}`).toBeLessThanOrEqual(REL_BOUND[dtype]);
        checkLse(await r.lse.toFloat32(), ref.lse, what);
        // An empty part: the other part's values, bit for bit.
        const gotBits = await out.read();
        const aBits = await a.t.read(), bBits = await b.t.read();
        for (let i = 0; i < tokens * heads; i++)
          if (kinds[i] === 1 || kinds[i] === 2) {
            const from = kinds[i] === 1 ? bBits : aBits;
            expect(Array.from(gotBits.subarray(i * width, (i + 1) * width)), `row ${i} copied, ${what}`).toEqual(Array.from(from.subarray(i * width, (i + 1) * width)));
          }
      });

    for (const dtype of rules.dtypes)
      it(`agreement ${dtype}: chunked prefill through the cache equals absorbQuery + mlaDecode (causal) + unabsorbOutput`, async () => {
        const rng = new Rng(seed + 8);
        const heads = rng.int(2, 4), nope = rules.nopeDim(rng), ropeDim = rules.ropeDim(rng, true), kvLoraRank = rules.kvLoraRank(rng), vDim = rules.vHeadDim(rng);
        const blockSize = rng.pick([4, 16]);
        const queryLen = rng.int(2, 12); // new tokens per sequence (mlaDecode takes one queryLen for the batch)
        const context = [rng.int(0, 50), rng.int(1, 50), 0];
        const lens = context.map((c) => c + queryLen);
        const width = kvLoraRank + ropeDim;
        const paged = pagedCache(rng, lens, blockSize, width, dtype);
        const cache = dev(Tensor.zeros(paged.cache.t.shape, dtype));
        const table = exactValues(paged.blockTable);
        const maxBlocks = paged.blockTable.shape[1];
        const slotOf = (b: number, pos: number) => table[b * maxBlocks + Math.floor(pos / blockSize)] * blockSize + (pos % blockSize);
        // The model's latent rows of every token (context and new), appended to the cache as a model does.
        const rows = lens.reduce((a, b) => a + b, 0);
        const kvCAll = randomTensor(rng, [rows, kvLoraRank], dtype);
        const kPeAll = randomTensor(rng, [rows, ropeDim], dtype);
        const slots: number[] = [];
        lens.forEach((len, b) => { for (let s = 0; s < len; s++) slots.push(slotOf(b, s)); });
        appendLatentCache({ cache, kvC: dev(kvCAll.t), kPe: dev(kPeAll.t), slotMapping: intTensor(slots), stream });
        const wUk = randomTensor(rng, [heads, nope, kvLoraRank], dtype, 1 / Math.sqrt(kvLoraRank));
        const wUv = randomTensor(rng, [heads, vDim, kvLoraRank], dtype, 1 / Math.sqrt(kvLoraRank));
        const qNope = randomTensor(rng, [lens.length, queryLen, heads, nope], dtype);
        const qPe = randomTensor(rng, [lens.length, queryLen, heads, ropeDim], dtype);
        const softmaxScale = 1 / Math.sqrt(nope + ropeDim);

        // Decode path.
        const qLat = absorbQuery({ qNope: dev(qNope.t), wUk: dev(wUk.t), qPe: dev(qPe.t), stream });
        const { out: oLat } = mlaDecode({ q: qLat, cache, blockTable: paged.blockTable, seqLens: intTensor(lens), softmaxScale, kvLoraRank, causal: true, stream });
        const viaDecode = await unabsorbOutput({ oLat, wUv: dev(wUv.t), stream }).toFloat32();

        // Prefill path: the new tokens' keys from their latent rows (causal), the context from the cache in chunks
        // (not causal), merged.
        const q = Tensor.fromValues(
          Array.from({ length: lens.length * queryLen * heads }, (_, i) => [
            ...Array.from(qNope.dense.data).slice(i * nope, (i + 1) * nope),
            ...Array.from(qPe.dense.data).slice(i * ropeDim, (i + 1) * ropeDim),
          ]).flat(),
          [lens.length * queryLen, heads, nope + ropeDim],
          dtype,
        );
        const cuQ = intTensor(cumulative(lens.map(() => queryLen)));
        const newRows = Array.from({ length: lens.length }, (_, b) => Array.from({ length: queryLen }, (_, t) => context.slice(0, b).reduce((x, y) => x + y, 0) + b * queryLen + context[b] + t)).flat();
        const pick = (d: Dense, w: number, idx: number[]) => Tensor.fromValues(idx.flatMap((r) => Array.from(d.data).slice(r * w, (r + 1) * w)), [idx.length, w], dtype);
        const fresh = upProjectKv({ kvC: dev(pick(kvCAll.dense, kvLoraRank, newRows)), wUk: dev(wUk.t), wUv: dev(wUv.t), stream });
        let acc = mlaPrefill({ q: dev(q), kNope: fresh.kNope, kPe: dev(pick(kPeAll.dense, ropeDim, newRows)), v: fresh.v, cuSeqLensQ: cuQ, cuSeqLensKv: cuQ, softmaxScale, causal: true, stream });
        const chunk = rng.int(7, 30); // context rows per sequence per chunk
        for (let start = 0; start < Math.max(...context); start += chunk) {
          const counts = context.map((c) => Math.max(0, Math.min(chunk, c - start)));
          const cuKv = intTensor(cumulative(counts));
          const g = gatherLatentCache({ cache, blockTable: paged.blockTable, cuSeqLens: cuKv, seqStarts: intTensor(context.map((c) => Math.min(start, c))), kvLoraRank, stream });
          const up = upProjectKv({ kvC: g.kvC, wUk: dev(wUk.t), wUv: dev(wUv.t), stream });
          const part = mlaPrefill({ q: dev(q), kNope: up.kNope, kPe: g.kPe, v: up.v, cuSeqLensQ: cuQ, cuSeqLensKv: cuKv, softmaxScale, stream });
          acc = mergeAttentionStates({ outA: acc.out, lseA: acc.lse, outB: part.out, lseB: part.lse, stream });
        }
        const viaPrefill = await acc.out.toFloat32();
        expect(countNaN(viaPrefill)).toBe(0);
        // Both paths round to the dtype a few times on the way (q_lat, o_lat / k, v, each merge): within the bound of
        // the composed path (three roundings), as the identity test of ops.test.ts allows.
        expect(relErr(viaPrefill, viaDecode), `${dtype} heads ${heads} nope ${nope} rope ${ropeDim} rank ${kvLoraRank} v ${vDim} queryLen ${queryLen} context [${context}] chunk ${chunk} (seed ${seed})`).toBeLessThanOrEqual(3 * REL_BOUND[dtype]);
      });

    it('planPrefill: one plan per step, shared by the layers; refused once the lengths change', async () => {
      const rng = new Rng(seed + 9);
      const dtype = rules.dtypes[0];
      const { nope, rope, vDim } = prefillDims(rules, rng);
      const qLens = [30, 0, 5], kvLens = [45, 3, 5];
      const cuSeqLensQ = intTensor(cumulative(qLens)), cuSeqLensKv = intTensor(cumulative(kvLens));
      const plan = planPrefill({ cuSeqLensQ, cuSeqLensKv, numHeads: 2, causal: true, stream });
      expect(plan.backend).toBe(backend.name);
      const q = dev(randomTensor(rng, [35, 2, nope + rope], dtype).t);
      const kNope = dev(randomTensor(rng, [53, 2, nope], dtype).t);
      const kPe = dev(randomTensor(rng, [53, rope], dtype).t);
      const v = dev(randomTensor(rng, [53, 2, vDim], dtype).t);
      const run = () => mlaPrefill({ q, kNope, kPe, v, cuSeqLensQ, cuSeqLensKv, softmaxScale: 0.2, causal: true, plan, stream });
      const a = await run().out.read();
      const b = await run().out.read();
      expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(b.buffer))).toBe(0);
      const withoutPlan = await mlaPrefill({ q, kNope, kPe, v, cuSeqLensQ, cuSeqLensKv, softmaxScale: 0.2, causal: true, stream }).out.read();
      expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(withoutPlan.buffer))).toBe(0);
      expect(() => mlaPrefill({ q, kNope, kPe, v, cuSeqLensQ, cuSeqLensKv: intTensor(cumulative([44, 3, 5])), softmaxScale: 0.2, causal: true, plan, stream })).toThrow(
        /plan was made for cuSeqLensKv\[1\] = 45, but it is 44/,
      );
      expect(() => mlaPrefill({ q, kNope, kPe, v, cuSeqLensQ, cuSeqLensKv, softmaxScale: 0.2, plan, stream })).toThrow(/causal true; this prefill has batch 3, 2 heads, causal false/);
    });

    it('graph capture: a chunked-prefill step recorded once and replayed with new lengths gives what the calls give one by one', async () => {
      const rng = new Rng(seed + 10);
      const dtype = rules.dtypes[0];
      const heads = 2, kvLoraRank = rules.kvLoraRank(rng), ropeDim = rules.ropeDim(rng, true), nope = rules.nopeDim(rng), vDim = rules.vHeadDim(rng);
      const blockSize = 8, batch = 2, maxTokens = 24, maxContext = 40;
      const paged = pagedCache(rng, [64, 64], blockSize, kvLoraRank + ropeDim, dtype);
      const cache = dev(paged.cache.t);
      const wUk = dev(randomTensor(rng, [heads, nope, kvLoraRank], dtype, 0.2).t);
      const wUv = dev(randomTensor(rng, [heads, vDim, kvLoraRank], dtype, 0.2).t);
      // Fixed-size inputs, index arrays updated in place between replays.
      const q = dev(randomTensor(rng, [maxTokens, heads, nope + ropeDim], dtype).t);
      const kvCNew = dev(randomTensor(rng, [maxTokens, kvLoraRank], dtype).t);
      const kPeNew = dev(randomTensor(rng, [maxTokens, ropeDim], dtype).t);
      const cuQ = intTensor([0, 0, 0]);
      const cuCtx = intTensor([0, 0, 0]);
      const starts = intTensor([0, 0]);
      const step = () => {
        const fresh = upProjectKv({ kvC: kvCNew, wUk, wUv, stream });
        const self = mlaPrefill({ q, kNope: fresh.kNope, kPe: kPeNew, v: fresh.v, cuSeqLensQ: cuQ, cuSeqLensKv: cuQ, softmaxScale: 0.3, causal: true, stream });
        const g = gatherLatentCache({ cache, blockTable: paged.blockTable, cuSeqLens: cuCtx, seqStarts: starts, kvLoraRank, numRows: maxContext, stream });
        const up = upProjectKv({ kvC: g.kvC, wUk, wUv, stream });
        const ctx = mlaPrefill({ q, kNope: up.kNope, kPe: g.kPe, v: up.v, cuSeqLensQ: cuQ, cuSeqLensKv: cuCtx, softmaxScale: 0.3, stream });
        return mergeAttentionStates({ outA: self.out, lseA: self.lse, outB: ctx.out, lseB: ctx.lse, stream });
      };
      const set = (t: Tensor<'i32'>, values: number[]) => arrayOf(t).set(values);
      let result: ReturnType<typeof step> | undefined;
      const graph = stream.capture(() => {
        result = step();
      });
      expect(graph.numOps).toBe(6);
      for (const [tokens, context, start] of [[[5, 9], [12, 0], [3, 0]], [[0, 24], [7, 33], [0, 10]], [[1, 1], [40, 0], [20, 5]]]) {
        set(cuQ, cumulative(tokens));
        set(cuCtx, cumulative(context));
        set(starts, start);
        graph.replay();
        const replayed = await result!.out.read();
        const replayedLse = await result!.lse.read();
        const eager = step();
        expect(Buffer.compare(Buffer.from(replayed.buffer), Buffer.from((await eager.out.read()).buffer)), `step ${JSON.stringify([tokens, context, start])} (seed ${seed})`).toBe(0);
        expect(Array.from(replayedLse)).toEqual(Array.from(await eager.lse.read()));
      }
      graph.dispose();
    });
  });
}
