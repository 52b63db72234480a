// DeepSeek Sparse Attention (V3.2): the fp8_ds_mla cache layout (append byte for byte against the TypeScript encoder,
// ±448 saturation, dense decode reading it), sparse decode over physical slots (duplicates, padding, all-padding
// rows, indices shared across queries, every cache dtype, equal to dense decode bit for bit when it selects every
// row), sparse prefill, the lightning indexer and its key cache (exact on integer data, ties to the earlier
// position, causal, topk past the sequence), the whole flow indexer -> decode on one stream and in a graph, bad
// inputs and lifetimes. CPU on every SIMD path this processor has; the device kernels under cuda-sim (every thread
// order; dense decode over fp8_ds_mla direct, planned and captured), the indexer's against the reference exactly on integer data and its key-cache bytes against the cpu's.
import { afterAll, describe, expect, it } from 'vitest';
import {
  appendIndexerCache,
  appendLatentCache,
  dsMlaRowBytes,
  type FloatDType,
  fromFp8E4M3Bits,
  gatherLatentCache,
  lightningIndexer,
  mlaDecode,
  mlaSparseDecode,
  mlaSparsePrefill,
  planDecode,
  Stream,
  Tensor,
  toFp8E4M3Array,
} from 'mla-kernels';
import {
  type Dense,
  encodeDsMlaRow,
  encodeIndexerKey,
  refLightningIndexer,
  refMlaDecode,
  refMlaSparseDecode,
  unpackDsMlaCache,
} from '../../lib/reference.js';
import { arrayOf, countNaN, exactValues, expectMlaError, hookedSuite, intTensor, poisoned, randomTensor, REL_BOUND, relErr, Rng, suiteBackends } from '../helpers.js';

const { seed, addon, isas } = hookedSuite('sparse');

type CacheKind = 'q' | 'fp8_e4m3' | 'fp8_ds_mla';

// A paged latent cache of random rows and the values it holds (dequantised), [numBlocks, blockSize, width].
function latentCache(rng: Rng, kind: CacheKind, dtype: FloatDType, numBlocks: number, blockSize: number, rank: number, ropeDim: number) {
  const slots = numBlocks * blockSize, width = rank + ropeDim;
  if (kind === 'fp8_ds_mla') {
    const rowBytes = dsMlaRowBytes(rank, ropeDim);
    const bytes = new Uint8Array(slots * rowBytes);
    for (let s = 0; s < slots; s++) bytes.set(encodeDsMlaRow(rng.normal(rank, 0.5 + 4 * rng.next()), rng.normal(ropeDim)), s * rowBytes);
    const shape = [numBlocks, blockSize, rowBytes];
    return { cache: Tensor.from(bytes, shape, 'fp8_ds_mla'), values: unpackDsMlaCache(bytes, shape, rank), cacheScale: 1 };
  }
  if (kind === 'fp8_e4m3') {
    const cacheScale = 0.01 + 0.05 * rng.next();
    const bytes = toFp8E4M3Array(rng.normal(slots * width, 40));
    return {
      cache: Tensor.from(bytes, [numBlocks, blockSize, width], 'fp8_e4m3', { scale: cacheScale }),
      values: { data: Float64Array.from(bytes, (b) => fromFp8E4M3Bits(b) * Math.fround(cacheScale)), shape: [numBlocks, blockSize, width] },
      cacheScale,
    };
  }
  const r = randomTensor(rng, [numBlocks, blockSize, width], dtype);
  return { cache: r.t, values: r.dense, cacheScale: 1 };
}

function expectLse(got: Float32Array, want: Float64Array, what: string) {
  for (let i = 0; i < want.length; i++)
    if (want[i] === -Infinity) expect(got[i], `${what}: lse ${i}`).toBe(-Infinity);
    else expect(Math.abs(got[i] - want[i]), `${what}: lse ${i}, seed ${seed}`).toBeLessThan(2e-3 * Math.max(1, Math.abs(want[i])));
}

// Random indices [batch, queryLen, topk] over `slots`: duplicates, -1 padding in between, one query with nothing.
function randomIndices(rng: Rng, batch: number, queryLen: number, topk: number, slots: number): number[] {
  const idx = Array.from({ length: batch * queryLen * topk }, () => (rng.next() < 0.2 ? -1 : rng.int(0, slots - 1)));
  for (let k = 0; k < topk; k++) idx[(batch * queryLen - 1) * topk + k] = -1; // the last query selects nothing
  idx[1] = idx[0] = Math.max(idx[0], 0); // a slot named twice
  return idx;
}

// A lightning indexer over small integers (every score exact in f32, ties common): its key cache appended on
// `stream`, its arguments there, and the reference's selection.
interface IndexerCase { dtype: FloatDType; lens: number[]; queryLen: number; topk: number; causal: boolean; blockSize: number; heads?: number }
function integerIndexer(rng: Rng, c: IndexerCase, stream: Stream) {
  const on = <T extends Tensor>(t: T) => (stream.device === 'cpu' ? t : (t.to(stream.device) as T));
  const batch = c.lens.length, heads = c.heads ?? 4, indexDim = 24, maxBlocks = Math.ceil(Math.max(...c.lens) / c.blockSize) + 1;
  const numBlocks = batch * maxBlocks;
  const ints = (n: number, m: number) => Array.from({ length: n }, () => rng.int(-m, m));
  const q = Tensor.fromValues(ints(batch * c.queryLen * heads * indexDim, 2), [batch, c.queryLen, heads, indexDim], c.dtype);
  const weights = Tensor.fromValues(ints(batch * c.queryLen * heads, 2), [batch, c.queryLen, heads], 'f32');
  const keys = Tensor.fromValues(ints(numBlocks * c.blockSize * indexDim, 1), [numBlocks * c.blockSize, indexDim], c.dtype);
  const cache = on(Tensor.zeros([numBlocks, c.blockSize, indexDim], c.dtype));
  appendIndexerCache({ cache, k: on(keys), slotMapping: intTensor(Array.from({ length: numBlocks * c.blockSize }, (_, i) => i)), stream });
  const table = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const ref = refLightningIndexer({
    q: { data: exactValues(q), shape: q.shape },
    weights: { data: exactValues(weights), shape: weights.shape },
    cache: { data: exactValues(keys), shape: cache.shape },
    blockTable: { data: table, shape: [batch, maxBlocks] },
    seqLens: { data: c.lens, shape: [batch] },
    topk: c.topk,
    causal: c.causal,
  });
  const args = { q: on(q), weights: on(weights), cache, blockTable: intTensor(table, [batch, maxBlocks]), seqLens: intTensor(c.lens), topk: c.topk, causal: c.causal, stream };
  return { args, ref, batch, heads, indexDim, maxBlocks };
}

// The indexer's selection against the reference's scores where f32 rounding may reorder near-ties: every selected
// position scores within rounding of the topk-th best, every one left out no better, in increasing position order.
function expectNearTopk(
  gotIdx: Int32Array,
  gotScores: Float32Array,
  all: Float64Array[],
  o: { lens: number[]; table: number[]; maxBlocks: number; blockSize: number; topk: number; queryLen: number },
) {
  const { lens, table, maxBlocks, blockSize, topk, queryLen } = o;
  for (let row = 0; row < all.length; row++) {
    const b = Math.floor(row / queryLen);
    const scoresOfRow = all[row];
    const positionOf = new Map<number, number>();
    for (let p = 0; p < lens[b]; p++) positionOf.set(table[b * maxBlocks + Math.floor(p / blockSize)] * blockSize + (p % blockSize), p);
    const sorted = Array.from(scoresOfRow).sort((x, y) => y - x);
    const tau = sorted[Math.min(topk, scoresOfRow.length) - 1];
    const tol = 1e-4 * Math.max(1, Math.abs(sorted[0] ?? 0));
    const chosen: number[] = [];
    for (let j = 0; j < topk; j++) {
      const slot = gotIdx[row * topk + j];
      if (j >= scoresOfRow.length) {
        expect(slot).toBe(-1);
        expect(gotScores[row * topk + j]).toBe(-Infinity);
        continue;
      }
      const p = positionOf.get(slot)!;
      expect(p, `row ${row} slot ${slot}, seed ${seed}`).toBeLessThan(scoresOfRow.length);
      expect(scoresOfRow[p]).toBeGreaterThanOrEqual(tau - tol);
      expect(Math.abs(gotScores[row * topk + j] - scoresOfRow[p])).toBeLessThanOrEqual(tol);
      chosen.push(p);
    }
    expect(chosen).toEqual([...chosen].sort((x, y) => x - y));
    expect(new Set(chosen).size).toBe(chosen.length);
    for (let p = 0; p < scoresOfRow.length; p++) if (!chosen.includes(p)) expect(scoresOfRow[p], `seed ${seed}`).toBeLessThanOrEqual(tau + tol);
  }
}

// The fp8 key cache appended on `stream` from random bf16 keys, the indexer over it (causal, two query positions),
// its selection checked against the reference on the cache's values; returns the keys and the cache's bytes.
async function fp8IndexerCase(rng: Rng, stream: Stream, heads: number, indexDim: number) {
  const on = <T extends Tensor>(t: T) => (stream.device === 'cpu' ? t : (t.to(stream.device) as T));
  const batch = 2, queryLen = 2, blockSize = 8, lens = [70, 33], maxBlocks = 10, topk = 16;
  const numBlocks = batch * maxBlocks;
  const q = randomTensor(rng, [batch, queryLen, heads, indexDim], 'bf16');
  const weights = randomTensor(rng, [batch, queryLen, heads], 'f32');
  const k = randomTensor(rng, [numBlocks * blockSize, indexDim], 'bf16', 2);
  const cache = on(Tensor.zeros([numBlocks, blockSize, indexDim], 'fp8_e4m3'));
  const scales = on(Tensor.zeros([numBlocks, blockSize], 'f32'));
  appendIndexerCache({ cache, scales, k: on(k.t), slotMapping: intTensor(Array.from({ length: numBlocks * blockSize }, (_, i) => i)), stream });
  const table = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const { indices, scores } = lightningIndexer({ q: on(q.t), weights: on(weights.t), cache, scales, blockTable: intTensor(table, [batch, maxBlocks]), seqLens: intTensor(lens), topk, causal: true, stream });
  const bytes = (await cache.read()) as Uint8Array;
  const scaleValues = (await scales.read()) as Float32Array;
  const keyValues = Float64Array.from(bytes, (b, i) => fromFp8E4M3Bits(b) * scaleValues[Math.floor(i / indexDim)]);
  const ref = refLightningIndexer({ q: q.dense, weights: weights.dense, cache: { data: keyValues, shape: cache.shape }, blockTable: { data: table, shape: [batch, maxBlocks] }, seqLens: { data: lens, shape: [batch] }, topk, causal: true });
  expectNearTopk((await indices.read()) as Int32Array, await scores.toFloat32(), ref.all, { lens, table, maxBlocks, blockSize, topk, queryLen });
  return { keys: k.dense.data, bytes, scaleValues, numKeys: numBlocks * blockSize };
}

describe.each(isas)('sparse attention on cpu (%s)', (isa) => {
  const stream = () => {
    addon.cpuConfigure!({ isa, splitRows: 0 });
    return new Stream('cpu');
  };

  it.each(['bf16', 'f32', 'f16'] as const)('appendLatentCache into fp8_ds_mla writes the encoder\'s bytes (%s), ±448 saturation, zero tiles', async (dtype) => {
    const s = stream();
    const rng = new Rng(seed + 1);
    const rank = 256, ropeDim = 16, blockSize = 3, numBlocks = 5, tokens = 8;
    const rowBytes = dsMlaRowBytes(rank, ropeDim);
    expect(rowBytes).toBe(rank + 8 + 32);
    expect(dsMlaRowBytes(512, 64)).toBe(656);
    const kvValues = rng.normal(tokens * rank, 3);
    for (let c = 0; c < 128; c++) kvValues[c] = c % 2 ? 3000 : -3000; // a tile at ±amax: every byte saturates to ±448
    for (let c = 128; c < 256; c++) kvValues[c] = 0; // a zero tile: scale FLT_MIN, bytes 0
    kvValues[rank + 5] = 20000; // one large value among small ones
    const kvC = Tensor.fromValues(kvValues, [tokens, rank], dtype);
    const kPe = randomTensor(rng, [tokens, ropeDim], dtype, 2);
    const slots = rng.shuffle(Array.from({ length: numBlocks * blockSize }, (_, i) => i)).slice(0, tokens);
    slots[3] = -1;
    const initial = Uint8Array.from({ length: numBlocks * blockSize * rowBytes }, () => rng.int(0, 255));
    const cache = Tensor.from(initial.slice(), [numBlocks, blockSize, rowBytes], 'fp8_ds_mla');
    appendLatentCache({ cache, kvC, kPe: kPe.t, slotMapping: intTensor(slots), stream: s });
    const got = (await cache.read()) as Uint8Array;
    const want = initial.slice();
    const kv = exactValues(kvC);
    for (let i = 0; i < tokens; i++)
      if (slots[i] >= 0) want.set(encodeDsMlaRow(kv.subarray(i * rank, (i + 1) * rank), kPe.dense.data.slice(i * ropeDim, (i + 1) * ropeDim) as ArrayLike<number>), slots[i] * rowBytes);
    expect(Buffer.from(got).equals(Buffer.from(want)), `seed ${seed}`).toBe(true);
    const row0 = got.subarray(slots[0] * rowBytes);
    for (let c = 0; c < 128; c++) expect(row0[c], `byte ${c}`).toBe(c % 2 ? 0x7e : 0xfe);
    for (let c = 128; c < 256; c++) expect(row0[c] & 0x7f).toBe(0);
    expect(new DataView(row0.buffer, row0.byteOffset).getFloat32(rank + 4, true)).toBe(2 ** -126);
    // The values read back are the inputs to e4m3's precision: 3 mantissa bits (1/16 of the value), and below e4m3's
    // smallest normal (2^-6 times the tile's scale) half its subnormal step, 2^-10 times the scale.
    const back = unpackDsMlaCache(got, cache.shape, rank);
    const width = rank + ropeDim;
    for (let i = 4; i < tokens; i++) {
      const row = new DataView(got.buffer, got.byteOffset + slots[i] * rowBytes);
      for (let c = 0; c < rank; c++) {
        const tileScale = row.getFloat32(rank + 4 * Math.floor(c / 128), true);
        expect(Math.abs(back.data[slots[i] * width + c] - kv[i * rank + c]), `token ${i}, value ${c}, seed ${seed}`).toBeLessThanOrEqual(Math.max(Math.abs(kv[i * rank + c]) / 16, tileScale * 2 ** -10) + 1e-30);
      }
    }
    s.dispose();
  });

  it('dense mlaDecode reads an fp8_ds_mla cache (causal, 2 query positions, split)', async () => {
    const s = stream();
    addon.cpuConfigure!({ isa, splitRows: 16 });
    const rng = new Rng(seed + 2);
    for (const dtype of ['bf16', 'f32'] as const) {
      const heads = 3, rank = 128, ropeDim = 16, blockSize = 8, lens = [37, 0, 11], maxBlocks = 5, queryLen = 2;
      const { cache, values } = latentCache(rng, 'fp8_ds_mla', dtype, lens.length * maxBlocks, blockSize, rank, ropeDim);
      const table = rng.shuffle(Array.from({ length: lens.length * maxBlocks }, (_, i) => i));
      const q = randomTensor(rng, [lens.length, queryLen, heads, rank + ropeDim], dtype, 0.3);
      const out = poisoned([lens.length, queryLen, heads, rank], dtype);
      const lse = poisoned([lens.length, heads, queryLen], 'f32');
      const args = { blockTable: intTensor(table, [lens.length, maxBlocks]), seqLens: intTensor(lens), softmaxScale: 0.1, kvLoraRank: rank, causal: true };
      mlaDecode({ q: q.t, cache, ...args, out, lse, stream: s });
      const ref = refMlaDecode({ q: q.dense, cache: values, blockTable: { data: table, shape: [lens.length, maxBlocks] }, seqLens: { data: lens, shape: [3] }, softmaxScale: 0.1, kvLoraRank: rank, causal: true });
      const got = await out.toFloat32();
      expect(countNaN(got)).toBe(0);
      expect(relErr(got, ref.out), `${dtype}, seed ${seed}`).toBeLessThan(REL_BOUND[dtype]);
      expectLse(await lse.toFloat32(), ref.lse, dtype);
    }
    s.dispose();
  });

  const kinds: [CacheKind, FloatDType][] = [
    ['q', 'f32'],
    ['q', 'bf16'],
    ['q', 'f16'],
    ['fp8_e4m3', 'bf16'],
    ['fp8_ds_mla', 'bf16'],
    ['fp8_ds_mla', 'f32'],
  ];
  it.each(kinds)('mlaSparseDecode over a %s cache, %s queries: duplicates, padding, an empty query, indices shared by queries, split', async (kind, dtype) => {
    const s = stream();
    const rng = new Rng(seed + 3);
    for (const splitRows of [0, 16]) {
      addon.cpuConfigure!({ isa, splitRows });
      const batch = 2, queryLen = 2, heads = 5, rank = 128, ropeDim = 16, blockSize = 7, numBlocks = 9, topk = 40;
      const { cache, values } = latentCache(rng, kind, dtype, numBlocks, blockSize, rank, ropeDim);
      const indices = randomIndices(rng, batch, queryLen, topk, numBlocks * blockSize);
      for (let k = 0; k < topk; k++) indices[topk + k] = indices[k]; // query 1 of sequence 0 selects what query 0 does
      const q = randomTensor(rng, [batch, queryLen, heads, rank + ropeDim], dtype, 0.3);
      const out = poisoned([batch, queryLen, heads, rank], dtype);
      const lse = poisoned([batch, heads, queryLen], 'f32');
      mlaSparseDecode({ q: q.t, cache, indices: intTensor(indices, [batch, queryLen, topk]), softmaxScale: 0.12, kvLoraRank: rank, out, lse, stream: s });
      const ref = refMlaSparseDecode({ q: q.dense, cache: values, indices: { data: indices, shape: [batch, queryLen, topk] }, softmaxScale: 0.12, kvLoraRank: rank });
      const got = await out.toFloat32();
      expect(countNaN(got), 'unwritten outputs').toBe(0);
      expect(relErr(got, ref.out), `splitRows ${splitRows}, seed ${seed}`).toBeLessThan(REL_BOUND[dtype]);
      const gotLse = await lse.toFloat32();
      expectLse(gotLse, ref.lse, `splitRows ${splitRows}`);
      // The query that selects nothing: zeros and -Infinity.
      const last = got.subarray(((batch * queryLen - 1) * heads) * rank);
      expect(last.every((x) => x === 0)).toBe(true);
      for (let h = 0; h < heads; h++) expect(gotLse[(1 * heads + h) * queryLen + 1]).toBe(-Infinity);
    }
    s.dispose();
  });

  it.each(['f32', 'bf16'] as const)('mlaSparseDecode selecting every row in order is mlaDecode bit for bit (%s)', async (dtype) => {
    const s = stream();
    const rng = new Rng(seed + 4);
    for (const splitRows of [0, 64]) {
      addon.cpuConfigure!({ isa, splitRows });
      const heads = 16, rank = 128, ropeDim = 64, blockSize = 16, lens = [150, 77], maxBlocks = 10;
      const { cache } = latentCache(rng, 'q', dtype, lens.length * maxBlocks, blockSize, rank, ropeDim);
      const table = rng.shuffle(Array.from({ length: lens.length * maxBlocks }, (_, i) => i));
      const topk = Math.max(...lens) + 5; // past the longer sequence: padding at the end
      const indices: number[] = [];
      lens.forEach((len, b) => {
        for (let k = 0; k < topk; k++) indices.push(k < len ? table[b * maxBlocks + Math.floor(k / blockSize)] * blockSize + (k % blockSize) : -1);
      });
      const q = randomTensor(rng, [lens.length, 1, heads, rank + ropeDim], dtype, 0.3);
      const dense = mlaDecode({ q: q.t, cache, blockTable: intTensor(table, [lens.length, maxBlocks]), seqLens: intTensor(lens), softmaxScale: 0.07, kvLoraRank: rank, stream: s });
      const sparse = mlaSparseDecode({ q: q.t, cache, indices: intTensor(indices, [lens.length, 1, topk]), softmaxScale: 0.07, kvLoraRank: rank, stream: s });
      expect(Buffer.from((await sparse.out.read()).buffer).equals(Buffer.from((await dense.out.read()).buffer)), `splitRows ${splitRows}, seed ${seed}`).toBe(true);
      expect(Array.from(await sparse.lse.toFloat32())).toEqual(Array.from(await dense.lse.toFloat32()));
    }
    s.dispose();
  });

  // Integer queries, keys and weights: every score is exact in f32, so the selection (ties included) is exact.
  const indexerCases = [
    { name: 'bf16, one query per sequence, topk past the sequence', dtype: 'bf16' as const, lens: [40, 3, 0], queryLen: 1, topk: 12, causal: false, blockSize: 5 },
    { name: 'f32, causal, 3 query positions', dtype: 'f32' as const, lens: [29, 64], queryLen: 3, topk: 7, causal: true, blockSize: 16 },
    // 20 heads: SIMD vectors of heads and a scalar tail on every CPU path; many ties at the topk-th score.
    { name: 'bf16, 20 heads, 600 positions, topk 100', dtype: 'bf16' as const, lens: [600, 150], queryLen: 1, topk: 100, causal: false, blockSize: 64, heads: 20 },
  ];
  it.each(indexerCases)('lightningIndexer is exact on integer data: $name', async (c) => {
    const s = stream();
    const { args, ref } = integerIndexer(new Rng(seed + 5), c, s);
    const { indices, scores } = lightningIndexer(args);
    expect(Array.from((await indices.read()) as Int32Array), `seed ${seed}`).toEqual(Array.from(ref.indices));
    expect(Array.from(await scores.toFloat32())).toEqual(Array.from(ref.scores));
    s.dispose();
  });

  it('lightningIndexer over an fp8 key cache: the selection within f32 rounding of the reference\'s', async () => {
    const s = stream();
    const indexDim = 32;
    const { keys, bytes, scaleValues, numKeys } = await fp8IndexerCase(new Rng(seed + 6), s, 20, indexDim);
    // The key cache holds each key as the encoder writes it, byte for byte, with its scale.
    for (let i = 0; i < numKeys; i++) {
      const e = encodeIndexerKey(keys.slice(i * indexDim, (i + 1) * indexDim) as ArrayLike<number>);
      expect(Array.from(bytes.subarray(i * indexDim, (i + 1) * indexDim)), `key ${i}`).toEqual(Array.from(e.bytes));
      expect(scaleValues[i]).toBe(e.scale);
    }
    s.dispose();
  });

  it('lightningIndexer at DeepSeek-V3.2\'s index dim (128) with 64 query lanes (32 heads × 2 positions): the selection within f32 rounding', async () => {
    const s = stream();
    await fp8IndexerCase(new Rng(seed + 7), s, 32, 128);
    s.dispose();
  });
});

// DeepSeek-V3.2's step: append the latent row (fp8_ds_mla) and the indexer key, select with the indexer, attend to
// the selection. On a device backend (`device`) the inputs and caches live there.
function flow(rng: Rng, dtype: FloatDType, device?: Stream) {
  const batch = 2, heads = 4, indexerHeads = 4, rank = 128, ropeDim = 16, indexDim = 16, blockSize = 8, maxBlocks = 6, topk = 10;
  const lens = [37, 20];
  const numBlocks = batch * maxBlocks;
  const table = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const slotMapping: number[] = [];
  lens.forEach((len, b) => {
    for (let p = 0; p < len; p++) slotMapping.push(table[b * maxBlocks + Math.floor(p / blockSize)] * blockSize + (p % blockSize));
  });
  const ints = (n: number, m: number) => Array.from({ length: n }, () => rng.int(-m, m));
  const tokens = slotMapping.length;
  const at = <T extends Tensor>(t: T) => (device ? (t.to(device.device) as T) : t);
  const host = {
    q: randomTensor(rng, [batch, 1, heads, rank + ropeDim], dtype, 0.3).t,
    indexQ: Tensor.fromValues(ints(batch * indexerHeads * indexDim, 2), [batch, 1, indexerHeads, indexDim], dtype),
    weights: Tensor.fromValues(ints(batch * indexerHeads, 2), [batch, 1, indexerHeads], 'f32'),
  };
  return {
    lens, table, topk, rank, host,
    latent: at(Tensor.zeros([numBlocks, blockSize, dsMlaRowBytes(rank, ropeDim)], 'fp8_ds_mla')) as Tensor,
    kvC: at(randomTensor(rng, [tokens, rank], dtype).t),
    kPe: at(randomTensor(rng, [tokens, ropeDim], dtype).t),
    keyCache: at(Tensor.zeros([numBlocks, blockSize, indexDim], dtype)),
    keys: at(Tensor.fromValues(ints(tokens * indexDim, 1), [tokens, indexDim], dtype)),
    slotMapping: intTensor(slotMapping),
    indexQ: at(host.indexQ),
    weights: at(host.weights),
    q: at(host.q),
    blockTable: intTensor(table, [batch, maxBlocks]),
    seqLens: intTensor(lens),
  };
}
type Flow = ReturnType<typeof flow>;
function step(f: Flow, stream: Stream) {
  appendLatentCache({ cache: f.latent, kvC: f.kvC, kPe: f.kPe, slotMapping: f.slotMapping, stream });
  appendIndexerCache({ cache: f.keyCache, k: f.keys, slotMapping: f.slotMapping, stream });
  const { indices } = lightningIndexer({ q: f.indexQ, weights: f.weights, cache: f.keyCache, blockTable: f.blockTable, seqLens: f.seqLens, topk: f.topk, stream });
  return { indices, ...mlaSparseDecode({ q: f.q, cache: f.latent, indices, softmaxScale: 0.1, kvLoraRank: f.rank, stream }) };
}
async function reference(f: Flow) {
  const keys = Float64Array.from(await f.keyCache.toFloat32()); // appended after the latent rows: every append has run
  const ref = refLightningIndexer({
    q: { data: exactValues(f.host.indexQ), shape: f.indexQ.shape },
    weights: { data: exactValues(f.host.weights), shape: f.weights.shape },
    cache: { data: keys, shape: f.keyCache.shape },
    blockTable: { data: f.table, shape: f.blockTable.shape },
    seqLens: { data: f.lens, shape: [f.lens.length] },
    topk: f.topk,
  });
  const values = unpackDsMlaCache((await f.latent.read()) as Uint8Array, f.latent.shape, f.rank);
  return { indices: ref.indices, ...refMlaSparseDecode({ q: { data: exactValues(f.host.q), shape: f.q.shape }, cache: values, indices: { data: ref.indices, shape: [f.lens.length, 1, f.topk] }, softmaxScale: 0.1, kvLoraRank: f.rank }) };
}

// The step captured as a graph on `stream` and replayed: the indices and outputs of the step run directly.
async function expectReplayedLike(f: Flow, stream: Stream, wantIdx: number[], want: Float32Array) {
  let captured: ReturnType<typeof step> | undefined;
  const graph = stream.capture(() => {
    captured = step(f, stream);
  });
  graph.replay();
  expect(Array.from((await captured!.indices.read()) as Int32Array)).toEqual(wantIdx);
  expect(Array.from(await captured!.out.toFloat32())).toEqual(Array.from(want));
  graph.dispose();
}

describe('sparse attention flow on cpu', () => {
  it.each(['bf16', 'f32'] as const)('append, indexer and sparse decode queued on one stream read each other\'s outputs in order (%s)', async (dtype) => {
    const stream = new Stream('cpu');
    const f = flow(new Rng(seed + 7), dtype);
    const got = step(f, stream);
    const ref = await reference(f);
    expect(Array.from((await got.indices.read()) as Int32Array), `seed ${seed}`).toEqual(Array.from(ref.indices));
    expect(relErr(await got.out.toFloat32(), ref.out), `seed ${seed}`).toBeLessThan(REL_BOUND[dtype]);
    expectLse(await got.lse.toFloat32(), ref.lse, dtype);
    stream.dispose();
  });

  it('the same step captured as a graph replays to the same outputs', async () => {
    const stream = new Stream('cpu');
    const f = flow(new Rng(seed + 8), 'bf16');
    const direct = step(f, stream);
    const want = await direct.out.toFloat32();
    await expectReplayedLike(f, stream, Array.from((await direct.indices.read()) as Int32Array), want);
    stream.dispose();
  });

  it('mlaSparsePrefill over a dense kv is the sparse decode of its rows', async () => {
    const stream = new Stream('cpu');
    const rng = new Rng(seed + 9);
    const tokens = 6, heads = 3, rank = 32, ropeDim = 8, numKv = 25, topk = 9;
    const q = randomTensor(rng, [tokens, heads, rank + ropeDim], 'f32');
    const kv = randomTensor(rng, [numKv, rank + ropeDim], 'f32');
    const indices = randomIndices(rng, 1, tokens, topk, numKv);
    const out = poisoned([tokens, heads, rank], 'f32');
    const lse = poisoned([tokens, heads], 'f32');
    mlaSparsePrefill({ q: q.t, kv: kv.t, indices: intTensor(indices, [tokens, topk]), softmaxScale: 0.2, kvLoraRank: rank, out, lse, stream });
    const ref = refMlaSparseDecode({ q: { data: q.dense.data, shape: [1, tokens, heads, rank + ropeDim] }, cache: { data: kv.dense.data, shape: [numKv, 1, rank + ropeDim] }, indices: { data: indices, shape: [1, tokens, topk] }, softmaxScale: 0.2, kvLoraRank: rank });
    expect(relErr(await out.toFloat32(), ref.out), `seed ${seed}`).toBeLessThan(REL_BOUND.f32);
    // The prefill's lse is [token, head]; the reference's [1, head, token].
    const gotLse = await lse.toFloat32();
    expectLse(Float32Array.from({ length: tokens * heads }, (_, i) => gotLse[(i % tokens) * heads + Math.floor(i / tokens)]), ref.lse, 'prefill');
    stream.dispose();
  });
});

describe('sparse attention: bad inputs and lifetimes', () => {
  const rank = 128, ropeDim = 16, blockSize = 4, numBlocks = 3, heads = 2;
  const make = () => ({
    q: Tensor.zeros([1, 1, heads, rank + ropeDim], 'bf16'),
    cache: Tensor.zeros([numBlocks, blockSize, dsMlaRowBytes(rank, ropeDim)], 'fp8_ds_mla') as Tensor,
    indices: intTensor([0, 11, -1], [1, 1, 3]),
    softmaxScale: 0.1,
    kvLoraRank: rank,
  });

  it('mlaSparseDecode refuses what it cannot compute, naming the argument', () => {
    const o = make();
    expectMlaError(() => mlaSparseDecode({ ...o, indices: intTensor([0, 12, -1], [1, 1, 3]) }), 'E_RANGE', 'indices[0][0][1] = 12', 'a slot of cache ([0, 12))');
    expectMlaError(() => mlaSparseDecode({ ...o, indices: intTensor([0, -2, -1], [1, 1, 3]) }), 'E_RANGE', 'indices[0][0][1] = -2');
    expectMlaError(() => mlaSparseDecode({ ...o, indices: intTensor([0, 1], [1, 2, 1]) }), 'E_SHAPE', 'indices');
    expectMlaError(() => mlaSparseDecode({ ...o, indices: Tensor.zeros([1, 1, 3], 'f32') as never }), 'E_DTYPE', 'indices');
    expectMlaError(() => mlaSparseDecode({ ...o, indices: intTensor([], [1, 1, 0]) }), 'E_SHAPE', 'topk');
    expectMlaError(() => mlaSparseDecode({ ...o, cacheScale: 2 } as never), 'E_ARGUMENT', 'cacheScale is not an option');
    expectMlaError(() => Tensor.zeros([numBlocks, blockSize, dsMlaRowBytes(rank, ropeDim)], 'fp8_ds_mla', { scale: 2 } as never), 'E_ARGUMENT', 'scale applies to fp8_e4m3 tensors only');
    expectMlaError(() => mlaSparseDecode({ ...o, softmaxScale: 0 }), 'E_RANGE', 'softmaxScale');
    expectMlaError(() => mlaSparseDecode({ ...o, cache: Tensor.zeros([numBlocks, blockSize, 100], 'fp8_ds_mla') }), 'E_SHAPE', 'cache', 'fp8_ds_mla');
    // kvLoraRank must fill whole 128-value scale tiles.
    expectMlaError(
      () => mlaSparseDecode({ ...o, q: Tensor.zeros([1, 1, heads, 80], 'bf16'), kvLoraRank: 64, cache: Tensor.zeros([numBlocks, blockSize, 96], 'fp8_ds_mla') }),
      'E_SHAPE',
      'kvLoraRank must be a multiple of 128',
    );
    // FlashMLA's 656-byte rows given as plain fp8_e4m3: the likely mistake is named.
    expectMlaError(
      () => mlaSparseDecode({ ...o, q: Tensor.zeros([1, 1, heads, 576], 'bf16'), kvLoraRank: 512, cache: Tensor.zeros([numBlocks, blockSize, 656], 'fp8_e4m3') }),
      'E_DTYPE',
      'make it an fp8_ds_mla tensor',
    );
    expectMlaError(() => mlaSparseDecode({ ...o, out: Tensor.zeros([1, 1, heads, rank], 'f32') }), 'E_DTYPE', 'out');
    expectMlaError(() => mlaSparsePrefill({ q: Tensor.zeros([2, heads, 40], 'f32'), kv: Tensor.zeros([5, 40], 'f32'), indices: intTensor([0, 5], [2, 1]), softmaxScale: 0.1, kvLoraRank: 32 }), 'E_RANGE', 'indices[1][0] = 5', 'a row of kv');
  });

  it('appendLatentCache into fp8_ds_mla refuses bad inputs', () => {
    const cache = Tensor.zeros([numBlocks, blockSize, dsMlaRowBytes(rank, ropeDim)], 'fp8_ds_mla');
    const kvC = Tensor.zeros([2, rank], 'bf16'), kPe = Tensor.zeros([2, ropeDim], 'bf16');
    expectMlaError(() => appendLatentCache({ cache, kvC, kPe, slotMapping: intTensor([0, 12]) }), 'E_RANGE', 'slotMapping[1] = 12');
    expectMlaError(() => appendLatentCache({ cache, kvC, kPe, slotMapping: intTensor([0, 1]), cacheScale: 0.5 } as never), 'E_ARGUMENT', 'cacheScale is not an option');
    expectMlaError(() => appendLatentCache({ cache, kvC, kPe: Tensor.zeros([2, 8], 'bf16'), slotMapping: intTensor([0, 1]) }), 'E_SHAPE', 'cache');

  });

  const indexerBackends = ['cpu', ...suiteBackends().filter((b) => b.available && b.name !== 'cpu').map((b) => b.name)];
  it.each(indexerBackends)('the indexer ops refuse bad inputs on %s, naming the argument, before anything is queued', (name) => {
    const stream = new Stream(name as never);
    const dev = <T extends Tensor>(t: T) => t.to(stream.device) as T;
    const keyCache = dev(Tensor.zeros([numBlocks, blockSize, 16], 'fp8_e4m3'));
    const k = dev(Tensor.zeros([2, 16], 'bf16'));
    const scales = dev(Tensor.zeros([numBlocks, blockSize], 'f32'));
    expectMlaError(() => appendIndexerCache({ cache: keyCache, k, slotMapping: intTensor([0, 1]), stream }), 'E_ARGUMENT', 'scales is required');
    expectMlaError(() => appendIndexerCache({ cache: dev(Tensor.zeros([numBlocks, blockSize, 16], 'bf16')), scales, k, slotMapping: intTensor([0, 1]), stream }), 'E_ARGUMENT', 'scales applies to an fp8_e4m3');
    expectMlaError(() => appendIndexerCache({ cache: keyCache, scales, k, slotMapping: intTensor([3, 3]), stream }), 'E_RANGE', 'repeats');
    expectMlaError(() => appendIndexerCache({ cache: keyCache, scales, k, slotMapping: intTensor([0, 12]), stream }), 'E_RANGE', 'slotMapping[1] = 12');
    expectMlaError(() => appendIndexerCache({ cache: keyCache, scales: dev(Tensor.zeros([numBlocks], 'f32')), k, slotMapping: intTensor([0, 1]), stream }), 'E_SHAPE', 'scales');

    const ix = {
      q: dev(Tensor.zeros([1, 1, 2, 16], 'bf16')),
      weights: dev(Tensor.zeros([1, 1, 2], 'f32')),
      cache: dev(Tensor.zeros([numBlocks, blockSize, 16], 'bf16')),
      blockTable: intTensor([0, 1], [1, 2]),
      seqLens: intTensor([8]),
      topk: 4,
      stream,
    };
    expectMlaError(() => lightningIndexer({ ...ix, seqLens: intTensor([9]) }), 'E_RANGE', 'seqLens[0] = 9');
    expectMlaError(() => lightningIndexer({ ...ix, blockTable: intTensor([0, 3], [1, 2]) }), 'E_RANGE', 'blockTable[0][1] = 3');
    expectMlaError(() => lightningIndexer({ ...ix, topk: 0 }), 'E_RANGE', 'topk');
    expectMlaError(() => lightningIndexer({ ...ix, weights: dev(Tensor.zeros([1, 1, 3], 'f32')) }), 'E_SHAPE', 'weights');
    expectMlaError(() => lightningIndexer({ ...ix, cache: dev(Tensor.zeros([numBlocks, blockSize, 8], 'bf16')) }), 'E_SHAPE', 'cache');
    expectMlaError(() => lightningIndexer({ ...ix, causal: 1 as never }), 'E_ARGUMENT', 'causal');
    expectMlaError(() => lightningIndexer({ ...ix, indices: dev(intTensor([0, 0, 0], [1, 1, 3])) }), 'E_SHAPE', 'indices');
    expectMlaError(() => lightningIndexer({ ...ix, scales }), 'E_ARGUMENT', 'scales');
    if (name !== 'cpu') {
      // Tensors where the stream's kernels cannot reach them.
      expectMlaError(() => lightningIndexer({ ...ix, q: Tensor.zeros([1, 1, 2, 16], 'bf16') }), 'E_DEVICE', 'q is on cpu');
      expectMlaError(() => appendIndexerCache({ cache: keyCache, scales, k: Tensor.zeros([2, 16], 'bf16'), slotMapping: intTensor([0, 1]), stream }), 'E_DEVICE', 'k is on cpu');
    }
    stream.dispose();
  });

  it('inputs disposed and host indices overwritten right after the call: the queued ops compute what was asked', async () => {
    const stream = new Stream('cpu');
    const rng = new Rng(seed + 10);
    const o = make();
    const { cache, values } = latentCache(rng, 'fp8_ds_mla', 'bf16', numBlocks, blockSize, rank, ropeDim);
    const q = randomTensor(rng, [1, 1, heads, rank + ropeDim], 'bf16');
    const ref = refMlaSparseDecode({ q: q.dense, cache: values, indices: { data: [0, 11, -1], shape: [1, 1, 3] }, softmaxScale: 0.1, kvLoraRank: rank });
    const { out } = mlaSparseDecode({ ...o, q: q.t, cache, stream });
    (o.indices._descriptor('t')[0] as Int32Array).set([1 << 30, -7, 5]);
    q.t.dispose();
    cache.dispose();
    expect(relErr(await out.toFloat32(), ref.out), `seed ${seed}`).toBeLessThan(REL_BOUND.bf16);

    const ix = { q: Tensor.fromValues([1, 0, 0, 0], [1, 1, 1, 4], 'f32'), weights: Tensor.fromValues([1], [1, 1, 1], 'f32'), cache: Tensor.fromValues([1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0], [4, 1, 4], 'f32'), blockTable: intTensor([3, 2, 1, 0], [1, 4]), seqLens: intTensor([4]), topk: 2 };
    const r = lightningIndexer({ ...ix, stream });
    (ix.blockTable._descriptor('t')[0] as Int32Array).set([9, 9, 9, 9]);
    (ix.seqLens._descriptor('t')[0] as Int32Array).set([1 << 30]);
    ix.q.dispose();
    ix.cache.dispose();
    // Positions 0..3 hold keys 4, 3, 2, 1 (blocks 3, 2, 1, 0): the two largest scores are positions 0 and 1.
    expect(Array.from((await r.indices.read()) as Int32Array)).toEqual([3, 2]);
    expect(Array.from(await r.scores.toFloat32())).toEqual([4, 3]);
    stream.dispose();
  });

  it('indices written by a queued operation are read after it, and a slot outside the cache there counts as padding', async () => {
    const stream = new Stream('cpu');
    const rng = new Rng(seed + 11);
    const { cache, values } = latentCache(rng, 'q', 'f32', numBlocks, blockSize, rank, ropeDim);
    const q = randomTensor(rng, [1, 1, heads, rank + ropeDim], 'f32');
    // An op's output as indices: mlaSparseDecode cannot check them at the call (the indexer has not run yet).
    const ix = lightningIndexer({ q: Tensor.zeros([1, 1, 1, 4], 'f32'), weights: Tensor.zeros([1, 1, 1], 'f32'), cache: Tensor.zeros([numBlocks, blockSize, 4], 'f32'), blockTable: intTensor([0, 1, 2], [1, 3]), seqLens: intTensor([12]), topk: 3, stream });
    await ix.indices.read();
    (ix.indices._descriptor('t')[0] as Int32Array).set([5, 999, -1]);
    const { out, lse } = mlaSparseDecode({ q: q.t, cache, indices: ix.indices, softmaxScale: 0.1, kvLoraRank: rank, stream });
    const ref = refMlaSparseDecode({ q: q.dense, cache: values, indices: { data: [5, -1, -1], shape: [1, 1, 3] }, softmaxScale: 0.1, kvLoraRank: rank });
    expect(relErr(await out.toFloat32(), ref.out)).toBeLessThan(REL_BOUND.f32);
    expectLse(await lse.toFloat32(), ref.lse, 'in place');
    stream.dispose();
  });

  const devices = suiteBackends().filter((b) => b.available && b.name !== 'cpu');
  it.each(devices.map((b) => b.name))('%s refuses f32 and too wide indexers, f32 fp8_ds_mla appends and f32 or too wide fp8_ds_mla dense decodes with E_UNSUPPORTED before queueing anything', (name) => {
    const stream = new Stream(name as never);
    const dev = <T extends Tensor>(t: T) => t.to(stream.device) as T;
    const o = make();
    expectMlaError(() => appendIndexerCache({ cache: dev(Tensor.zeros([2, 2, 16], 'f32')), k: dev(Tensor.zeros([1, 16], 'f32')), slotMapping: intTensor([0]), stream }), 'E_UNSUPPORTED', 'appendIndexerCache', 'bf16 or f16');
    const indexer = (heads: number, dim: number, dtype: 'bf16' | 'f32') => () =>
      lightningIndexer({ q: dev(Tensor.zeros([1, 1, heads, dim], dtype)), weights: dev(Tensor.zeros([1, 1, heads], 'f32')), cache: dev(Tensor.zeros([2, 2, dim], dtype)), blockTable: intTensor([0], [1, 1]), seqLens: intTensor([2]), topk: 1, stream });
    expectMlaError(indexer(2, 16, 'f32'), 'E_UNSUPPORTED', 'lightningIndexer', 'bf16 or f16');
    expectMlaError(indexer(65, 16, 'bf16'), 'E_UNSUPPORTED', 'lightningIndexer', 'at most 64 indexer heads of at most 128 values, got 65 of 16');
    expectMlaError(indexer(2, 136, 'bf16'), 'E_UNSUPPORTED', 'got 2 of 136');
    expectMlaError(
      () => appendLatentCache({ cache: dev(o.cache), kvC: dev(Tensor.zeros([1, rank], 'f32')), kPe: dev(Tensor.zeros([1, ropeDim], 'f32')), slotMapping: intTensor([0]), stream }),
      'E_UNSUPPORTED',
      'bf16 or f16',
    );
    const dense = { blockTable: intTensor([0], [1, 1]), seqLens: intTensor([1]), softmaxScale: 0.1, stream };
    expectMlaError(() => mlaDecode({ ...dense, q: dev(Tensor.zeros([1, 1, heads, rank + ropeDim], 'f32')), cache: dev(o.cache), kvLoraRank: rank }), 'E_UNSUPPORTED', 'mlaDecode', 'bf16 or f16');
    const wide = dev(Tensor.zeros([numBlocks, blockSize, dsMlaRowBytes(640, ropeDim)], 'fp8_ds_mla'));
    expectMlaError(() => mlaDecode({ ...dense, q: dev(Tensor.zeros([1, 1, heads, 640 + ropeDim], 'bf16')), cache: wide, kvLoraRank: 640 }), 'E_UNSUPPORTED', 'fp8_ds_mla', `kvLoraRank at most 512, got ${640 + ropeDim} and 640`);
    const indices = intTensor([0, 1, -1], [1, 1, 3]);
    expectMlaError(() => mlaSparseDecode({ ...o, indices, q: dev(Tensor.zeros([1, 1, heads, 640], 'bf16')), kvLoraRank: 576, cache: dev(Tensor.zeros([2, 2, 640], 'bf16')), stream }), 'E_UNSUPPORTED', 'kvLoraRank at most 512');
    expectMlaError(() => mlaSparseDecode({ ...o, q: dev(Tensor.zeros([1, 1, heads, rank + ropeDim], 'f32')), cache: dev(o.cache), stream }), 'E_UNSUPPORTED', 'bf16 or f16');
    stream.dispose();
  });
});

const sim = suiteBackends().find((b) => b.name === 'cuda-sim' && b.available);
describe.runIf(sim)('sparse decode on cuda-sim (every thread order checked by the emulator)', () => {
  afterAll(() => addon.simConfigure?.({ checkOrders: true, splitRows: 0 }));
  const kinds: [CacheKind, 'bf16' | 'f16', boolean][] = [
    ['q', 'bf16', false],
    ['q', 'f16', true],
    ['fp8_e4m3', 'bf16', false],
    ['fp8_ds_mla', 'bf16', true],
    ['fp8_ds_mla', 'f16', false],
  ];
  it.each(kinds)('a %s cache, %s queries (indices on the device: %s): the reference, and each selected row read once per 16-head group', async (kind, dtype, indicesOnDevice) => {
    addon.simConfigure!({ checkOrders: true });
    const stream = new Stream('cuda-sim');
    const rng = new Rng(seed + 20);
    const batch = 2, queryLen = 2, heads = 20, rank = 128, ropeDim = 64, blockSize = 7, numBlocks = 6, topk = 24;
    const { cache, values } = latentCache(rng, kind, dtype, numBlocks, blockSize, rank, ropeDim);
    const indices = randomIndices(rng, batch, queryLen, topk, numBlocks * blockSize);
    if (indicesOnDevice) indices[5] = numBlocks * blockSize + 3; // not checked on the device: outside the cache counts as padding
    const ix = intTensor(indices, [batch, queryLen, topk]);
    const q = randomTensor(rng, [batch, queryLen, heads, rank + ropeDim], dtype, 0.3);
    const out = poisoned([batch, queryLen, heads, rank], dtype).to(stream.device);
    const lse = poisoned([batch, heads, queryLen], 'f32').to(stream.device);
    const args = { q: q.t.to(stream.device), cache: cache.to(stream.device), indices: indicesOnDevice ? ix.to(stream.device) : ix, softmaxScale: 0.12, kvLoraRank: rank, out, lse, stream };
    await stream.synchronize();
    mlaSparseDecode(args);
    const got = await out.toFloat32();
    const rec = addon.simLastOp!();
    const ref = refMlaSparseDecode({ q: q.dense, cache: values, indices: { data: indices.map((x) => (x >= numBlocks * blockSize ? -1 : x)), shape: [batch, queryLen, topk] }, softmaxScale: 0.12, kvLoraRank: rank });
    expect(countNaN(got), 'unwritten outputs').toBe(0);
    expect(relErr(got, ref.out), `seed ${seed}`).toBeLessThan(REL_BOUND[dtype]);
    expectLse(await lse.toFloat32(), ref.lse, kind);
    // Traffic (emulator counts): q once; each index, and each valid selected row, once per head group; out and lse once.
    const rowBytes = cache.shape[2] * (kind === 'q' ? 2 : 1);
    const valid = indices.filter((x) => x >= 0 && x < numBlocks * blockSize).length;
    const groups = Math.ceil(heads / 16);
    const read = batch * queryLen * heads * (rank + ropeDim) * 2 + (indices.length * 4 + valid * rowBytes) * groups;
    expect(rec.bytesRead, JSON.stringify(rec.launches)).toBe(read);
    expect(rec.bytesWritten).toBe(batch * queryLen * heads * (rank * 2 + 4));
    stream.dispose();
  });

  // Split over the selected slots (chunks of 5 of 24, the last shorter; a chunk of padding only): fp32 partials merged
  // by the decode's combine kernel, the reference's result; a sparse prefill's token-major lse too, and rows of 376
  // bytes (not 16-byte pieces: copied to shared memory without cp.async).
  it.each([['fp8_ds_mla', 'bf16', false, 64], ['q', 'f16', true, 60]] as const)('a %s cache, %s queries, split over the slots (a prefill, token-major lse: %s; ropeDim %d)', async (kind, dtype, prefill, ropeDim) => {
    addon.simConfigure!({ checkOrders: true, splitRows: 5 });
    const stream = new Stream('cuda-sim');
    const rng = new Rng(seed + 25);
    const tokens = 4, heads = 20, rank = 128, blockSize = 7, numBlocks = 6, topk = 24, slots = numBlocks * blockSize;
    const { cache, values } = latentCache(rng, kind, dtype, numBlocks, blockSize, rank, ropeDim);
    const indices = randomIndices(rng, 1, tokens, topk, slots);
    for (let k = 5; k < 10; k++) indices[k] = -1; // the second chunk of the first query is padding only
    const q = randomTensor(rng, prefill ? [tokens, heads, rank + ropeDim] : [1, tokens, heads, rank + ropeDim], dtype, 0.3);
    const out = poisoned(prefill ? [tokens, heads, rank] : [1, tokens, heads, rank], dtype).to(stream.device);
    const lse = poisoned(prefill ? [tokens, heads] : [1, heads, tokens], 'f32').to(stream.device);
    const common = { q: q.t.to(stream.device), softmaxScale: 0.12, kvLoraRank: rank, out, lse, stream };
    if (prefill) mlaSparsePrefill({ ...common, kv: Tensor.from((await cache.read()) as Uint16Array, [slots, rank + ropeDim], dtype).to(stream.device), indices: intTensor(indices, [tokens, topk]) });
    else mlaSparseDecode({ ...common, cache: cache.to(stream.device), indices: intTensor(indices, [1, tokens, topk]) });
    const got = await out.toFloat32();
    expect(addon.simLastOp!().launches.map((l) => l.kernel)).toEqual(['mlaSparseDecodeKernel', 'mlaCombineKernel']);
    const ref = refMlaSparseDecode({ q: { data: q.dense.data, shape: [1, tokens, heads, rank + ropeDim] }, cache: values, indices: { data: indices, shape: [1, tokens, topk] }, softmaxScale: 0.12, kvLoraRank: rank });
    expect(countNaN(got), 'unwritten outputs').toBe(0);
    expect(relErr(got, ref.out), `seed ${seed}`).toBeLessThan(REL_BOUND[dtype]);
    const gotLse = await lse.toFloat32();
    expectLse(prefill ? Float32Array.from({ length: tokens * heads }, (_, i) => gotLse[(i % tokens) * heads + Math.floor(i / tokens)]) : gotLse, ref.lse, kind);
    addon.simConfigure!({ splitRows: 0 });
    stream.dispose();
  });

  it.each([['bf16', false], ['f16', true]] as const)('appendLatentCache into fp8_ds_mla on the device (%s, rope %s): the cpu\'s bytes, ±448 saturation, zero tiles', async (dtype, rope) => {
    addon.simConfigure!({ checkOrders: true });
    const stream = new Stream('cuda-sim');
    const rng = new Rng(seed + 22);
    const rank = 256, ropeDim = 16, blockSize = 3, numBlocks = 4, tokens = 6, maxPos = 10;
    const rowBytes = dsMlaRowBytes(rank, ropeDim);
    const kvValues = rng.normal(tokens * rank, 3);
    for (let c = 0; c < 128; c++) kvValues[c] = c % 2 ? 3000 : -3000; // f16's range: still every byte ±448
    for (let c = 128; c < 256; c++) kvValues[c] = 0;
    const kvC = Tensor.fromValues(kvValues, [tokens, rank], dtype);
    const kPe = randomTensor(rng, [tokens, ropeDim], dtype, 2).t;
    const slots = rng.shuffle(Array.from({ length: numBlocks * blockSize }, (_, i) => i)).slice(0, tokens);
    slots[2] = -1;
    const angles = Array.from({ length: maxPos * (ropeDim / 2) }, (_, i) => Math.floor(i / (ropeDim / 2)) * 0.37 * (1 + (i % (ropeDim / 2))));
    const ropeOption = rope ? { positions: intTensor(Array.from({ length: tokens }, (_, i) => (i * 3) % maxPos)), cos: Tensor.fromValues(angles.map(Math.cos), [maxPos, ropeDim / 2], 'f32'), sin: Tensor.fromValues(angles.map(Math.sin), [maxPos, ropeDim / 2], 'f32'), style: 'neox' as const } : undefined;
    const initial = Uint8Array.from({ length: numBlocks * blockSize * rowBytes }, () => rng.int(0, 255));
    const run = async (s: Stream) => {
      const on = <T extends Tensor>(t: T) => t.to(s.device) as T;
      const cache = on(Tensor.from(initial.slice(), [numBlocks, blockSize, rowBytes], 'fp8_ds_mla'));
      const r = ropeOption && { ...ropeOption, cos: on(ropeOption.cos), sin: on(ropeOption.sin) };
      appendLatentCache({ cache, kvC: on(kvC), kPe: on(kPe), slotMapping: intTensor(slots), rope: r, stream: s });
      return (await cache.read()) as Uint8Array;
    };
    const want = await run(new Stream('cpu'));
    const got = await run(stream);
    const ropeAt = rank + 4 * (rank / 128);
    for (let slot = 0; slot < numBlocks * blockSize; slot++) {
      const g = got.subarray(slot * rowBytes, (slot + 1) * rowBytes), w = want.subarray(slot * rowBytes, (slot + 1) * rowBytes);
      // The latent and its scales byte for byte; the rope part (rotated in f32 on both, contracted differently) within
      // one bf16 step.
      expect(Buffer.from(g.subarray(0, ropeAt)).equals(Buffer.from(w.subarray(0, ropeAt))), `slot ${slot}, seed ${seed}`).toBe(true);
      const gr = new Uint16Array(g.slice(ropeAt).buffer), wr = new Uint16Array(w.slice(ropeAt).buffer);
      for (let c = 0; c < ropeDim; c++) expect(Math.abs(gr[c] - wr[c]), `slot ${slot} rope ${c}`).toBeLessThanOrEqual(rope ? 1 : 0);
    }
    const row0 = got.subarray(slots[0] * rowBytes);
    for (let c = 0; c < 128; c++) expect(row0[c]).toBe(c % 2 ? 0x7e : 0xfe);
    stream.dispose();
  });

  it.each(['bf16', 'f16'] as const)('gatherLatentCache from fp8_ds_mla on the device (%s rows): the cpu\'s values bit for bit, zero rows past the gathered', async (dtype) => {
    addon.simConfigure!({ checkOrders: true });
    const stream = new Stream('cuda-sim');
    const rng = new Rng(seed + 23);
    const rank = 256, ropeDim = 32, blockSize = 4, numBlocks = 6, lens = [9, 0, 6], maxBlocks = 3, numRows = 17;
    const { cache, values } = latentCache(rng, 'fp8_ds_mla', dtype, numBlocks, blockSize, rank, ropeDim);
    const table = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i)).concat([0, 1, 2]).slice(0, lens.length * maxBlocks);
    const cu = lens.reduce((acc, n) => [...acc, acc[acc.length - 1] + n], [0]);
    const run = (s: Stream) => {
      const kvC = poisoned([numRows, rank], dtype).to(s.device), kPe = poisoned([numRows, ropeDim], dtype).to(s.device);
      gatherLatentCache({ cache: cache.to(s.device), blockTable: intTensor(table, [lens.length, maxBlocks]), cuSeqLens: intTensor(cu), kvLoraRank: rank, kvC, kPe, stream: s });
      return Promise.all([kvC.read(), kPe.read()]);
    };
    const [wantC, wantP] = await run(new Stream('cpu'));
    const [gotC, gotP] = await run(stream);
    expect(Buffer.from(gotC.buffer).equals(Buffer.from(wantC.buffer)), `seed ${seed}`).toBe(true);
    expect(Buffer.from(gotP.buffer).equals(Buffer.from(wantP.buffer))).toBe(true);
    // Against the decoded cache: row r of sequence b is its position r - cu[b].
    const width = rank + ropeDim, want: number[] = [];
    lens.forEach((n, b) => {
      for (let p = 0; p < n; p++) {
        const slot = table[b * maxBlocks + Math.floor(p / blockSize)] * blockSize + (p % blockSize);
        want.push(...values.data.slice(slot * width, slot * width + rank));
      }
    });
    const got = await Tensor.from(gotC as Uint16Array, [numRows, rank], dtype).toFloat32();
    expect(relErr(got.subarray(0, want.length), want), `seed ${seed}`).toBeLessThan(REL_BOUND[dtype]);
    expect(got.subarray(want.length).every((x) => x === 0)).toBe(true);
    stream.dispose();
  });

  // The sparse kernel's dense mode: every visible row of each sequence from the block table (a page size of 7, ragged
  // and empty sequences, causal queries that see nothing), directly, with a plan and in a graph whose replays read new
  // lengths; the reference, and the cpu's result.
  it.each([['bf16', 2, true, 0], ['f16', 1, false, 0], ['bf16', 2, true, 6]] as const)('dense mlaDecode over fp8_ds_mla on the device (%s, queryLen %d, causal %s, split every %d rows): direct, planned, captured', async (dtype, queryLen, causal, splitRows) => {
    addon.simConfigure!({ checkOrders: true, splitRows });
    const stream = new Stream('cuda-sim');
    const rng = new Rng(seed + 24);
    const heads = 20, rank = 256, ropeDim = 64, blockSize = 7, maxBlocks = 4, lens = [23, 0, 1, 17], batch = lens.length;
    const { cache, values } = latentCache(rng, 'fp8_ds_mla', dtype, batch * maxBlocks, blockSize, rank, ropeDim);
    const table = rng.shuffle(Array.from({ length: batch * maxBlocks }, (_, i) => i));
    const q = randomTensor(rng, [batch, queryLen, heads, rank + ropeDim], dtype, 0.3);
    const blockTable = intTensor(table, [batch, maxBlocks]), seqLens = intTensor(lens);
    const devQ = q.t.to(stream.device), devCache = cache.to(stream.device);
    const args = { blockTable, seqLens, softmaxScale: 0.11, kvLoraRank: rank, causal };
    const check = async (got: { out: Tensor; lse: Tensor }, now: number[], what: string) => {
      const ref = refMlaDecode({ q: q.dense, cache: values, blockTable: { data: table, shape: [batch, maxBlocks] }, seqLens: { data: now, shape: [batch] }, softmaxScale: args.softmaxScale, kvLoraRank: rank, causal });
      const out = await got.out.toFloat32();
      expect(countNaN(out), `${what}: unwritten outputs`).toBe(0);
      expect(relErr(out, ref.out), `${what}, seed ${seed}`).toBeLessThan(REL_BOUND[dtype]);
      const lse = await got.lse.toFloat32();
      expectLse(lse, ref.lse, what);
      return { out, lse };
    };
    const poisonedOut = () => ({ out: poisoned([batch, queryLen, heads, rank], dtype).to(stream.device), lse: poisoned([batch, heads, queryLen], 'f32').to(stream.device) });
    const direct = poisonedOut();
    mlaDecode({ q: devQ, cache: devCache, ...args, ...direct, stream });
    const got = await check(direct, lens, 'direct');
    if (splitRows) expect(addon.simLastOp!().launches.map((l) => l.kernel)).toEqual(['mlaSparseDecodeKernel', 'mlaCombineKernel']);
    const cpu = new Stream('cpu');
    const onCpu = mlaDecode({ q: q.t, cache, ...args, stream: cpu });
    expect(relErr(got.out, await onCpu.out.toFloat32()), `against the cpu, seed ${seed}`).toBeLessThan(REL_BOUND[dtype]);
    const cpuLse = await onCpu.lse.toFloat32();
    expectLse(got.lse, Float64Array.from(cpuLse), 'against the cpu');
    cpu.dispose();

    const planned = poisonedOut();
    mlaDecode({ q: devQ, cache: devCache, ...args, ...planned, plan: planDecode({ seqLens, numHeads: heads, queryLen, stream }), stream });
    await check(planned, lens, 'planned');

    const captured = poisonedOut();
    const graph = stream.capture(() => void mlaDecode({ q: devQ, cache: devCache, ...args, ...captured, stream }));
    for (const now of [lens, [5, 28, 0, 9]]) {
      arrayOf(seqLens).set(now);
      graph.replay();
      await check(captured, now, `replay ${now}`);
    }
    graph.dispose();
    addon.simConfigure!({ splitRows: 0 });
    stream.dispose();
  });

  it('a captured sparse decode reads its host indices again at each replay; sparse prefill on the device', async () => {
    const stream = new Stream('cuda-sim');
    const rng = new Rng(seed + 21);
    const rank = 128, ropeDim = 64, blockSize = 4, numBlocks = 5, heads = 3, topk = 6;
    const { cache, values } = latentCache(rng, 'q', 'bf16', numBlocks, blockSize, rank, ropeDim);
    const q = randomTensor(rng, [1, 1, heads, rank + ropeDim], 'bf16', 0.3);
    const ix = intTensor(randomIndices(rng, 1, 2, topk, numBlocks * blockSize).slice(0, topk), [1, 1, topk]);
    const devCache = cache.to(stream.device), devQ = q.t.to(stream.device);
    let res: ReturnType<typeof mlaSparseDecode> | undefined;
    const graph = stream.capture(() => {
      res = mlaSparseDecode({ q: devQ, cache: devCache, indices: ix, softmaxScale: 0.1, kvLoraRank: rank, stream });
    });
    for (let step = 0; step < 2; step++) {
      const now = Array.from({ length: topk }, () => rng.int(-1, numBlocks * blockSize - 1));
      arrayOf(ix).set(now);
      graph.replay();
      const ref = refMlaSparseDecode({ q: q.dense, cache: values, indices: { data: now, shape: [1, 1, topk] }, softmaxScale: 0.1, kvLoraRank: rank });
      expect(relErr(await res!.out.toFloat32(), ref.out), `step ${step}, seed ${seed}`).toBeLessThan(REL_BOUND.bf16);
    }
    graph.dispose();

    const tokens = 5, numKv = 9;
    const pq = randomTensor(rng, [tokens, heads, rank + ropeDim], 'bf16', 0.3);
    const kv = randomTensor(rng, [numKv, rank + ropeDim], 'bf16');
    const pix = randomIndices(rng, 1, tokens, topk, numKv);
    const { out, lse } = mlaSparsePrefill({ q: pq.t.to(stream.device), kv: kv.t.to(stream.device), indices: intTensor(pix, [tokens, topk]), softmaxScale: 0.1, kvLoraRank: rank, stream });
    const ref = refMlaSparseDecode({ q: { data: pq.dense.data, shape: [1, tokens, heads, rank + ropeDim] }, cache: { data: kv.dense.data, shape: [numKv, 1, rank + ropeDim] }, indices: { data: pix, shape: [1, tokens, topk] }, softmaxScale: 0.1, kvLoraRank: rank });
    expect(relErr(await out.toFloat32(), ref.out), `seed ${seed}`).toBeLessThan(REL_BOUND.bf16);
    const gotLse = await lse.toFloat32();
    expectLse(Float32Array.from({ length: tokens * heads }, (_, i) => gotLse[(i % tokens) * heads + Math.floor(i / tokens)]), ref.lse, 'prefill');
    stream.dispose();
  });
});

describe.runIf(sim)('lightning indexer on cuda-sim (every thread order checked by the emulator)', () => {
  afterAll(() => addon.simConfigure?.({ checkOrders: true }));

  it.each([['bf16', false], ['f16', true]] as const)('appendIndexerCache (%s keys, fp8 cache: %s) writes the cpu\'s bytes, skips negative slots, touches nothing else', async (dtype, fp8) => {
    addon.simConfigure!({ checkOrders: true });
    const stream = new Stream('cuda-sim');
    const rng = new Rng(seed + 30);
    const numBlocks = 4, blockSize = 3, indexDim = 40, tokens = 7;
    const k = randomTensor(rng, [tokens, indexDim], dtype, 3);
    const slots = rng.shuffle(Array.from({ length: numBlocks * blockSize }, (_, i) => i)).slice(0, tokens);
    slots[2] = -1;
    const cacheDtype = fp8 ? 'fp8_e4m3' : dtype;
    const initial = Tensor.fromValues(rng.normal(numBlocks * blockSize * indexDim), [numBlocks, blockSize, indexDim], cacheDtype);
    const initialScales = Tensor.fromValues(rng.normal(numBlocks * blockSize), [numBlocks, blockSize], 'f32');
    const run = async (s: Stream) => {
      const cache = initial.to(s.device);
      const scales = fp8 ? initialScales.to(s.device) : undefined;
      appendIndexerCache({ cache, scales, k: k.t.to(s.device), slotMapping: intTensor(slots), stream: s });
      return { bytes: Buffer.from((await cache.read()).buffer), scales: scales ? Array.from((await scales.read()) as Float32Array) : [] };
    };
    const want = await run(new Stream('cpu'));
    const got = await run(stream);
    expect(got.bytes.equals(want.bytes), `seed ${seed}`).toBe(true);
    expect(got.scales).toEqual(want.scales);
    if (fp8) {
      const e = encodeIndexerKey(k.dense.data.slice(0, indexDim) as ArrayLike<number>);
      expect(Array.from(got.bytes.subarray(slots[0] * indexDim, (slots[0] + 1) * indexDim))).toEqual(Array.from(e.bytes));
      expect(got.scales[slots[0]]).toBe(e.scale);
    }
    stream.dispose();
  });

  // Integer data: every score is exact in f32 on both sides, so the selection is the reference's exactly, ties (many:
  // small integers, ReLU zeros, negative weights) to the earlier position; rows past 256 positions give each thread
  // of the top-k CTA several positions.
  const cases = [
    { name: 'bf16, one query per sequence, topk past a sequence, an empty one', dtype: 'bf16' as const, lens: [40, 3, 0], queryLen: 1, topk: 12, causal: false, blockSize: 5 },
    { name: 'f16, causal, 3 query positions', dtype: 'f16' as const, lens: [29, 64], queryLen: 3, topk: 7, causal: true, blockSize: 16 },
    { name: 'bf16, 600 positions, topk 100', dtype: 'bf16' as const, lens: [600], queryLen: 1, topk: 100, causal: false, blockSize: 64 },
  ];
  it.each(cases)('lightningIndexer is the reference exactly on integer data: $name', async (c) => {
    addon.simConfigure!({ checkOrders: true });
    const stream = new Stream('cuda-sim');
    const { args, ref, batch, heads, indexDim, maxBlocks } = integerIndexer(new Rng(seed + 31), c, stream);
    const indices = intTensor(new Array(batch * c.queryLen * c.topk).fill(-2), [batch, c.queryLen, c.topk]).to(stream.device);
    const scores = poisoned([batch, c.queryLen, c.topk], 'f32').to(stream.device);
    lightningIndexer({ ...args, indices, scores });
    const got = Array.from((await indices.read()) as Int32Array);
    const rec = addon.simLastOp!();
    expect(got.filter((x) => x === -2).length, 'unwritten indices').toBe(0);
    // Traffic (emulator counts). Scores: per CTA (query row × 64 positions) its sequence's length; where it has
    // positions, the row's queries and weights once; per visible position its block-table entry and key once.
    // Top-k: the length; the visible scores read once when they all fit, else six times (four radix passes, the
    // count, the write); a table entry per selected position; indices and scores written once.
    const visible = c.lens.flatMap((len) => Array.from({ length: c.queryLen }, (_, t) => (c.causal ? Math.max(0, Math.min(len, len - c.queryLen + 1 + t)) : len)));
    const chunks = Math.ceil((maxBlocks * c.blockSize) / 64);
    const sum = (f: (v: number) => number) => visible.reduce((acc, v) => acc + f(v), 0);
    const [scoresLaunch, topkLaunch] = rec.launches;
    expect(scoresLaunch.bytesRead, JSON.stringify(rec.launches.map((l) => l.kernel))).toBe(visible.length * chunks * 4 + sum((v) => Math.ceil(v / 64) * heads * (indexDim * 2 + 4) + v * (4 + indexDim * 2)));
    expect(scoresLaunch.bytesWritten).toBe(sum((v) => v * 4));
    expect(topkLaunch.bytesRead).toBe(sum((v) => 4 + (v <= c.topk ? v * 4 : 6 * v * 4) + Math.min(v, c.topk) * 4));
    expect(topkLaunch.bytesWritten).toBe(visible.length * c.topk * 8);
    expect(got, `seed ${seed}`).toEqual(Array.from(ref.indices));
    const gotScores = await scores.toFloat32();
    expect(countNaN(gotScores), 'unwritten scores').toBe(0);
    expect(Array.from(gotScores)).toEqual(Array.from(ref.scores));
    stream.dispose();
  });

  it('lightningIndexer over an fp8 key cache written on the device (40 heads of 128): the selection within f32 rounding of the reference\'s', async () => {
    addon.simConfigure!({ checkOrders: true });
    const stream = new Stream('cuda-sim');
    await fp8IndexerCase(new Rng(seed + 32), stream, 40, 128);
    stream.dispose();
  });

  it('append, indexer and sparse decode on one device stream, then captured as a graph: the reference, and the replay the same', async () => {
    addon.simConfigure!({ checkOrders: false });
    const stream = new Stream('cuda-sim');
    const f = flow(new Rng(seed + 33), 'bf16', stream);
    const got = step(f, stream);
    const ref = await reference(f);
    const wantIdx = Array.from((await got.indices.read()) as Int32Array);
    expect(wantIdx, `seed ${seed}`).toEqual(Array.from(ref.indices));
    const want = await got.out.toFloat32();
    expect(relErr(want, ref.out), `seed ${seed}`).toBeLessThan(REL_BOUND.bf16);
    expectLse(await got.lse.toFloat32(), ref.lse, 'device flow');
    await expectReplayedLike(f, stream, wantIdx, want);
    stream.dispose();
  });
});
