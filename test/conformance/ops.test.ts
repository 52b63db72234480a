// The shared correctness suite: every operation on every backend this build has, against lib/reference.ts,
// on random small shapes drawn afresh each run (seed printed), outputs poisoned before each run.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { absorbQuery, appendLatentCache, mlaDecode, Stream, Tensor, unabsorbOutput, type FloatDType } from 'mla-kernels';
import {
  refAbsorbQuery,
  refAppendLatentCache,
  refMlaDecode,
  refUnabsorbedAttention,
  refUnabsorbOutput,
  visibleRows,
} from '../../lib/reference.js';
import { countNaN, dense, exactValues, FLOAT_DTYPES, intTensor, poisoned, randomTensor, REL_BOUND, relErr, Rng, onDevice, shapeRules, suiteBackends, testSeed, type ShapeRules } from '../helpers.js';

const seed = testSeed('ops');
const LSE_TOL = 1e-4; // lse is computed in fp32 from exactly represented inputs, whatever the dtype

interface PagedLayout {
  blockTable: Tensor<'i32'>;
  seqLens: Tensor<'i32'>;
  numBlocks: number;
  lens: number[];
}

/** Scatters sequences over shuffled cache blocks; unused table entries hold -7 to prove they are not read. */
function pagedLayout(rng: Rng, lens: number[], blockSize: number): PagedLayout {
  const used = lens.map((l) => Math.ceil(l / blockSize));
  const maxBlocks = Math.max(1, ...used) + rng.int(0, 2);
  const numBlocks = used.reduce((a, b) => a + b, 0) + rng.int(1, 3);
  const ids = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const table: number[] = [];
  let next = 0;
  for (const u of used) for (let j = 0; j < maxBlocks; j++) table.push(j < u ? ids[next++] : -7);
  return { blockTable: intTensor(table, [lens.length, maxBlocks]), seqLens: intTensor(lens), numBlocks, lens };
}

interface DecodeCase {
  rules: ShapeRules;
  lens: number[];
  blockSize: number;
  queryLen: number;
  causal: boolean;
  heads?: number;
}

async function checkDecode(stream: Stream, rng: Rng, dtype: FloatDType, c: DecodeCase): Promise<void> {
  const heads = c.heads ?? rng.int(1, 8);
  const kvLoraRank = c.rules.kvLoraRank(rng);
  const ropeDim = c.rules.ropeDim(rng);
  const width = kvLoraRank + ropeDim;
  const layout = pagedLayout(rng, c.lens, c.blockSize);
  const cache = randomTensor(rng, [layout.numBlocks, c.blockSize, width], dtype);
  const q = randomTensor(rng, [c.lens.length, c.queryLen, heads, width], dtype);
  const softmaxScale = (0.5 + rng.next() * 1.5) / Math.sqrt(width);
  const out = onDevice(poisoned([c.lens.length, c.queryLen, heads, kvLoraRank], dtype), stream);
  const lse = onDevice(poisoned([c.lens.length, heads, c.queryLen], 'f32'), stream);
  const what = `${dtype} lens [${c.lens}] blockSize ${c.blockSize} queryLen ${c.queryLen} causal ${c.causal} heads ${heads} kvLoraRank ${kvLoraRank} ropeDim ${ropeDim} (seed ${seed})`;

  const result = mlaDecode({ q: onDevice(q.t, stream), cache: onDevice(cache.t, stream), blockTable: layout.blockTable, seqLens: layout.seqLens, softmaxScale, kvLoraRank, causal: c.causal, out, lse, stream });
  expect(result.out).toBe(out);
  const got = await out.toFloat32();
  const gotLse = await lse.toFloat32();
  expect(countNaN(got), `unwritten out elements, ${what}`).toBe(0);
  expect(countNaN(gotLse), `unwritten lse elements, ${what}`).toBe(0);

  const ref = refMlaDecode({ q: q.dense, cache: cache.dense, blockTable: dense(layout.blockTable), seqLens: dense(layout.seqLens), softmaxScale, kvLoraRank, causal: c.causal });
  expect(relErr(got, ref.out), `out, ${what}`).toBeLessThanOrEqual(REL_BOUND[dtype]);
  for (let i = 0; i < ref.lse.length; i++) {
    if (ref.lse[i] === -Infinity) expect(gotLse[i], `lse[${i}] of an empty row, ${what}`).toBe(-Infinity);
    else expect(Math.abs(gotLse[i] - ref.lse[i]), `lse[${i}], ${what}`).toBeLessThanOrEqual(LSE_TOL * Math.max(1, Math.abs(ref.lse[i])));
  }
  // Rows that see nothing are exactly zero.
  for (let b = 0; b < c.lens.length; b++)
    for (let t = 0; t < c.queryLen; t++)
      if (visibleRows(c.lens[b], c.queryLen, t, c.causal) === 0) {
        const base = (b * c.queryLen + t) * heads * kvLoraRank;
        expect(Array.from(got.subarray(base, base + heads * kvLoraRank)).every((v) => v === 0), `zero output, ${what}`).toBe(true);
      }
}

function randomLens(rng: Rng, batch: number, max: number): number[] {
  return Array.from({ length: batch }, () => rng.int(0, max));
}

function ropeTables(rng: Rng, maxPositions: number, ropeDim: number): { cos: Tensor<'f32'>; sin: Tensor<'f32'> } {
  const half = ropeDim / 2;
  const base = 100 + rng.int(0, 10000);
  const angles = Array.from({ length: maxPositions * half }, (_, i) => Math.floor(i / half) * base ** (-(i % half) / half));
  return {
    cos: Tensor.fromValues(angles.map(Math.cos), [maxPositions, half], 'f32'),
    sin: Tensor.fromValues(angles.map(Math.sin), [maxPositions, half], 'f32'),
  };
}

for (const backend of suiteBackends()) {
  if (!backend.available) {
    if (backend.name === 'cpu') it('cpu backend is available', () => expect(backend.reason).toBe('available'));
    // Only the cuda and cuda-sim backends can be absent from a build; say so visibly.
    else it.skip(`${backend.name} backend: unavailable in this build (${backend.reason})`, () => {}); // cuda or cuda-sim
    continue;
  }

  describe(`${backend.name} backend`, () => {
    const rules = shapeRules(backend.name);
    let stream: Stream;
    beforeAll(() => {
      stream = new Stream(backend.name);
    });
    afterAll(() => stream.dispose());

    for (const dtype of FLOAT_DTYPES.filter((d) => !rules.dtypes.includes(d)))
      // Only the CUDA kernels (cuda, cuda-sim) lack a dtype; cuda-sim.test.ts checks they refuse it with E_UNSUPPORTED.
      it.skip(`${dtype} on ${backend.name}: the cuda kernels take bf16 and f16 only`, () => {});

    for (const dtype of rules.dtypes) {
      it(`mlaDecode ${dtype}: random shapes, block sizes 1, 3, 16, mixed lengths`, async () => {
        const rng = new Rng(seed + 1);
        for (const blockSize of [1, 3, 16])
          for (let trial = 0; trial < 3; trial++)
            await checkDecode(stream, rng, dtype, { rules, lens: randomLens(rng, rng.int(1, 4), 45), blockSize, queryLen: 1, causal: false });
      });

      it(`mlaDecode ${dtype}: lengths 0, 1, exactly one block, several blocks plus one`, async () => {
        const rng = new Rng(seed + 2);
        for (const blockSize of [1, 3, 16]) {
          await checkDecode(stream, rng, dtype, { rules, lens: [0, 1, blockSize, 2 * blockSize + 1], blockSize, queryLen: 1, causal: false });
          await checkDecode(stream, rng, dtype, { rules, lens: [0], blockSize, queryLen: 2, causal: true });
        }
      });

      it(`mlaDecode ${dtype}: queryLen 1-4, causal and not`, async () => {
        const rng = new Rng(seed + 3);
        for (const queryLen of [1, 2, 3, 4])
          for (const causal of [true, false])
            // Lengths below queryLen leave the first causal queries with no rows: zero output, lse -Infinity.
            await checkDecode(stream, rng, dtype, { rules, lens: [rng.int(0, 3), rng.int(5, 40), queryLen], blockSize: rng.pick([1, 3, 16]), queryLen, causal });
      });

      it(`appendLatentCache ${dtype}: writes only its slots (plain, interleaved and neox RoPE)`, async () => {
        const rng = new Rng(seed + 4);
        for (const style of [undefined, 'interleaved', 'neox'] as const) {
          const kvLoraRank = rules.kvLoraRank(rng);
          const ropeDim = rules.ropeDim(rng, style !== undefined);
          const blockSize = rng.pick([1, 3, 16]);
          const numBlocks = rng.int(2, 6);
          const numTokens = rng.int(1, Math.min(12, numBlocks * blockSize));
          const cache = randomTensor(rng, [numBlocks, blockSize, kvLoraRank + ropeDim], dtype, 5); // sentinel contents
          const before = new Uint8Array((await cache.t.read()).buffer);
          const deviceCache = onDevice(cache.t, stream);
          const kvC = randomTensor(rng, [numTokens, kvLoraRank], dtype);
          const kPe = randomTensor(rng, [numTokens, ropeDim], dtype);
          const slots = rng.shuffle(Array.from({ length: numBlocks * blockSize }, (_, i) => i)).slice(0, numTokens);
          slots.forEach((_, i) => { if (rng.next() < 0.2) slots[i] = -1; }); // padding tokens
          const slotMapping = intTensor(slots);
          const maxPositions = rng.int(8, 64);
          const tables = ropeTables(rng, maxPositions, ropeDim);
          const positions = intTensor(Array.from({ length: numTokens }, () => rng.int(0, maxPositions - 1)));
          const rope = style ? { positions, cos: onDevice(tables.cos, stream), sin: onDevice(tables.sin, stream), style } : undefined;
          appendLatentCache({ cache: deviceCache, kvC: onDevice(kvC.t, stream), kPe: onDevice(kPe.t, stream), slotMapping, rope, stream });
          const afterData = await deviceCache.read();

          const ref = refAppendLatentCache({
            cache: cache.dense, kvC: kvC.dense, kPe: kPe.dense, slotMapping: dense(slotMapping),
            rope: rope && { positions: dense(positions), cos: dense(tables.cos), sin: dense(tables.sin), style: rope.style },
          });
          const what = `${dtype} rope ${style ?? 'none'} kvLoraRank ${kvLoraRank} ropeDim ${ropeDim} blockSize ${blockSize} (seed ${seed})`;
          const got = exactValues(Tensor.from(afterData as never, cache.t.shape, dtype as never));
          const after = new Uint8Array(afterData.buffer);
          const rowBytes = before.length / (numBlocks * blockSize);
          const written = new Set(slots.filter((s) => s >= 0));
          for (let s = 0; s < numBlocks * blockSize; s++) {
            const w = kvLoraRank + ropeDim;
            if (!written.has(s)) {
              expect(Buffer.compare(before.subarray(s * rowBytes, (s + 1) * rowBytes), after.subarray(s * rowBytes, (s + 1) * rowBytes)), `slot ${s} not in slotMapping changed, ${what}`).toBe(0);
            } else {
              // The latent part is copied exactly; the rope part is exact without RoPE, rounded once with it.
              expect(Array.from(got.subarray(s * w, s * w + kvLoraRank)), `latent of slot ${s}, ${what}`).toEqual(Array.from(ref.subarray(s * w, s * w + kvLoraRank)));
              const pe = got.subarray(s * w + kvLoraRank, (s + 1) * w);
              const refPe = ref.subarray(s * w + kvLoraRank, (s + 1) * w);
              if (style) expect(relErr(pe, refPe), `rope part of slot ${s}, ${what}`).toBeLessThanOrEqual(REL_BOUND[dtype]);
              else expect(Array.from(pe), `rope part of slot ${s}, ${what}`).toEqual(Array.from(refPe));
            }
          }
        }
      });

      it(`absorbQuery and unabsorbOutput ${dtype}: per-head products, any leading dimensions`, async () => {
        const rng = new Rng(seed + 5);
        for (let trial = 0; trial < 4; trial++) {
          const heads = rng.int(1, 8);
          const nope = rules.nopeDim(rng);
          const kvLoraRank = rules.kvLoraRank(rng);
          const ropeDim = trial % 2 ? 0 : rules.ropeDim(rng, true);
          const vHeadDim = rules.vHeadDim(rng);
          const lead = trial < 2 ? [rng.int(1, 5)] : [rng.int(1, 3), rng.int(1, 3)];
          const what = `${dtype} lead [${lead}] heads ${heads} nope ${nope} kvLoraRank ${kvLoraRank} ropeDim ${ropeDim} vHeadDim ${vHeadDim} (seed ${seed})`;
          const qNope = randomTensor(rng, [...lead, heads, nope], dtype);
          const wUk = randomTensor(rng, [heads, nope, kvLoraRank], dtype, 0.2);
          const qPe = ropeDim ? randomTensor(rng, [...lead, heads, ropeDim], dtype) : undefined;
          const qOut = onDevice(poisoned([...lead, heads, kvLoraRank + ropeDim], dtype), stream);
          expect(absorbQuery({ qNope: onDevice(qNope.t, stream), wUk: onDevice(wUk.t, stream), qPe: qPe && onDevice(qPe.t, stream), out: qOut, stream })).toBe(qOut);
          const q = await qOut.toFloat32();
          expect(countNaN(q), `unwritten absorbQuery output, ${what}`).toBe(0);
          expect(relErr(q, refAbsorbQuery({ qNope: qNope.dense, wUk: wUk.dense, qPe: qPe?.dense })), `absorbQuery, ${what}`).toBeLessThanOrEqual(REL_BOUND[dtype]);

          const oLat = randomTensor(rng, [...lead, heads, kvLoraRank], dtype);
          const wUv = randomTensor(rng, [heads, vHeadDim, kvLoraRank], dtype, 0.2);
          const o = unabsorbOutput({ oLat: onDevice(oLat.t, stream), wUv: onDevice(wUv.t, stream), stream }); // allocated output
          expect(o.device).toBe(stream.device);
          expect(o.shape).toEqual([...lead, heads, vHeadDim]);
          const got = await o.toFloat32();
          expect(relErr(got, refUnabsorbOutput({ oLat: oLat.dense, wUv: wUv.dense })), `unabsorbOutput, ${what}`).toBeLessThanOrEqual(REL_BOUND[dtype]);
        }
      });

      it(`identity ${dtype}: unabsorbOutput(mlaDecode(absorbQuery(q))) equals un-absorbed attention`, async () => {
        const rng = new Rng(seed + 6);
        for (let trial = 0; trial < 3; trial++) {
          const heads = rng.int(1, 6);
          const nope = rules.nopeDim(rng);
          const ropeDim = rules.ropeDim(rng);
          const kvLoraRank = rules.kvLoraRank(rng);
          const vHeadDim = rules.vHeadDim(rng);
          const queryLen = rng.int(1, 3);
          const blockSize = rng.pick([1, 3, 16]);
          const lens = [rng.int(queryLen, 30), rng.int(0, 30), rng.int(queryLen, 30)];
          const causal = queryLen > 1;
          const layout = pagedLayout(rng, lens, blockSize);
          const width = kvLoraRank + ropeDim;
          // Fill the cache through appendLatentCache, as a model would.
          const cache = Tensor.zeros([layout.numBlocks, blockSize, width], dtype, { device: stream.device });
          const table = exactValues(layout.blockTable);
          const slots: number[] = [];
          lens.forEach((len, b) => {
            for (let s = 0; s < len; s++) slots.push(table[b * layout.blockTable.shape[1] + Math.floor(s / blockSize)] * blockSize + (s % blockSize));
          });
          const kvC = randomTensor(rng, [slots.length, kvLoraRank], dtype);
          const kPe = randomTensor(rng, [slots.length, ropeDim], dtype);
          appendLatentCache({ cache, kvC: onDevice(kvC.t, stream), kPe: onDevice(kPe.t, stream), slotMapping: intTensor(slots), stream });

          const qNope = randomTensor(rng, [lens.length, queryLen, heads, nope], dtype);
          const qPe = randomTensor(rng, [lens.length, queryLen, heads, ropeDim], dtype);
          const wUk = randomTensor(rng, [heads, nope, kvLoraRank], dtype, 0.3);
          const wUv = randomTensor(rng, [heads, vHeadDim, kvLoraRank], dtype, 0.3);
          const softmaxScale = 1 / Math.sqrt(nope + ropeDim);
          const q = absorbQuery({ qNope: onDevice(qNope.t, stream), wUk: onDevice(wUk.t, stream), qPe: onDevice(qPe.t, stream), stream });
          const { out: oLat } = mlaDecode({ q, cache, blockTable: layout.blockTable, seqLens: layout.seqLens, softmaxScale, kvLoraRank, causal, stream });
          const o = unabsorbOutput({ oLat, wUv: onDevice(wUv.t, stream), stream });
          const got = await o.toFloat32();

          const ref = refUnabsorbedAttention({
            qNope: qNope.dense, qPe: qPe.dense, cache: { data: await cache.toFloat32(), shape: cache.shape },
            blockTable: dense(layout.blockTable), seqLens: dense(layout.seqLens), wUk: wUk.dense, wUv: wUv.dense, softmaxScale, causal,
          });
          // Three roundings to the dtype on the way (q_lat, o_lat, o): allow three times the one-op bound.
          expect(relErr(got, ref.out), `${dtype} heads ${heads} nope ${nope} ropeDim ${ropeDim} kvLoraRank ${kvLoraRank} queryLen ${queryLen} lens [${lens}] (seed ${seed})`).toBeLessThanOrEqual(3 * REL_BOUND[dtype]);
        }
      });
    }

    it('mlaDecode: many heads and a long sequence (several tiles, 128 heads like DeepSeek-V3)', async () => {
      const rng = new Rng(seed + 7);
      await checkDecode(stream, rng, 'bf16', { rules, lens: [300, 77], blockSize: 16, queryLen: 1, causal: false, heads: 128 });
    });
  });
}
