// The prefill references against each other and against the decode-side references: multi-head prefill over
// up-projected latent rows equals refUnabsorbedAttention; attention over a split key set merged by log-sum-exp equals
// attention over the whole; gathering rows through a block table equals reading them in order.
import { describe, expect, it } from 'vitest';
import { refGatherLatentCache, refMergeAttentionStates, refMlaPrefill, refUnabsorbedAttention, refUpProjectKv, type Dense } from '../../lib/reference.js';
import { relErr, Rng, testSeed } from '../helpers.js';

const seed = testSeed('prefill-reference');

const denseOf = (data: ArrayLike<number>, shape: number[]): Dense => ({ data, shape });

describe('prefill references', () => {
  it('prefill of up-projected rows equals un-absorbed attention over the cache (causal, kvLen > qLen)', () => {
    const rng = new Rng(seed);
    const heads = 3, nope = 5, ropeDim = 4, vDim = 6, rank = 7, blockSize = 4;
    const lens = [9, 0, 6]; // cached rows per sequence; the last queryLen of them are the new tokens
    const queryLen = 3;
    const maxBlocks = 3;
    const numBlocks = lens.length * maxBlocks;
    const cache = denseOf(rng.normal(numBlocks * blockSize * (rank + ropeDim)), [numBlocks, blockSize, rank + ropeDim]);
    const table = denseOf(Array.from({ length: numBlocks }, (_, i) => (i * 5) % numBlocks), [lens.length, maxBlocks]);
    const wUk = denseOf(rng.normal(heads * nope * rank, 0.3), [heads, nope, rank]);
    const wUv = denseOf(rng.normal(heads * vDim * rank, 0.3), [heads, vDim, rank]);
    const withQueries = lens.map((l) => (l >= queryLen ? queryLen : 0));
    const qNope = rng.normal(lens.length * queryLen * heads * nope);
    const qPe = rng.normal(lens.length * queryLen * heads * ropeDim);
    const scale = 0.4;
    const ref = refUnabsorbedAttention({
      qNope: denseOf(qNope, [lens.length, queryLen, heads, nope]), qPe: denseOf(qPe, [lens.length, queryLen, heads, ropeDim]),
      cache, blockTable: table, seqLens: denseOf(lens, [lens.length]), wUk, wUv, softmaxScale: scale, causal: true,
    });
    // The same through gather + up-projection + prefill, packed (sequences without queries are empty).
    const cuKv = [0];
    const cuQ = [0];
    lens.forEach((l, b) => { cuKv.push(cuKv[b] + l); cuQ.push(cuQ[b] + withQueries[b]); });
    const g = refGatherLatentCache({ cache, blockTable: table, cuSeqLens: denseOf(cuKv, [4]), kvLoraRank: rank });
    const up = refUpProjectKv({ kvC: denseOf(g.kvC, [cuKv[3], rank]), wUk, wUv });
    const q: number[] = [];
    lens.forEach((_, b) => {
      for (let t = 0; t < withQueries[b]; t++)
        for (let h = 0; h < heads; h++) {
          const i = (b * queryLen + t) * heads + h;
          q.push(...qNope.slice(i * nope, (i + 1) * nope), ...qPe.slice(i * ropeDim, (i + 1) * ropeDim));
        }
    });
    const p = refMlaPrefill({
      q: denseOf(q, [cuQ[3], heads, nope + ropeDim]), kNope: denseOf(up.kNope, [cuKv[3], heads, nope]), kPe: denseOf(g.kPe, [cuKv[3], ropeDim]),
      v: denseOf(up.v, [cuKv[3], heads, vDim]), cuSeqLensQ: denseOf(cuQ, [4]), cuSeqLensKv: denseOf(cuKv, [4]), softmaxScale: scale, causal: true,
    });
    let row = 0;
    lens.forEach((_, b) => {
      for (let t = 0; t < withQueries[b]; t++, row++)
        for (let h = 0; h < heads; h++) {
          const i = (b * queryLen + t) * heads + h;
          expect(relErr(p.out.subarray((row * heads + h) * vDim, (row * heads + h + 1) * vDim), ref.out.subarray(i * vDim, (i + 1) * vDim))).toBeLessThan(1e-12);
          expect(p.lse[row * heads + h]).toBeCloseTo(ref.lse[(b * heads + h) * queryLen + t], 10);
        }
    });
  });

  it('attention over a key set split in two, merged by log-sum-exp, equals attention over the whole (empty parts exact)', () => {
    const rng = new Rng(seed + 1);
    const heads = 2, nope = 3, ropeDim = 2, vDim = 4;
    const qLen = [3, 2, 1], ctx = [5, 0, 4], fresh = [3, 2, 0];
    const cu = (xs: number[]) => xs.reduce((acc, x) => [...acc, acc[acc.length - 1] + x], [0]);
    const total = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const make = (rows: number) => ({
      kNope: denseOf(rng.normal(rows * heads * nope), [rows, heads, nope]),
      kPe: denseOf(rng.normal(rows * ropeDim), [rows, ropeDim]),
      v: denseOf(rng.normal(rows * heads * vDim), [rows, heads, vDim]),
    });
    const q = denseOf(rng.normal(total(qLen) * heads * (nope + ropeDim)), [total(qLen), heads, nope + ropeDim]);
    const c = make(total(ctx)), f = make(total(fresh));
    // The whole: per sequence its context rows, then its fresh rows.
    const rows = total(ctx) + total(fresh);
    const kNope: number[] = [], kPe: number[] = [], v: number[] = [];
    const cuC = cu(ctx), cuF = cu(fresh);
    const take = (d: Dense, r: number, width: number) => Array.from(d.data).slice(r * width, (r + 1) * width);
    for (let b = 0; b < 3; b++)
      for (const [part, cuP] of [[c, cuC], [f, cuF]] as const)
        for (let r = cuP[b]; r < cuP[b + 1]; r++) {
          kNope.push(...take(part.kNope, r, heads * nope));
          kPe.push(...take(part.kPe, r, ropeDim));
          v.push(...take(part.v, r, heads * vDim));
        }
    const whole = { kNope: denseOf(kNope, [rows, heads, nope]), kPe: denseOf(kPe, [rows, ropeDim]), v: denseOf(v, [rows, heads, vDim]) };
    const scale = 0.7;
    const cuQ = denseOf(cu(qLen), [4]);
    // Causal over the whole aligns each query bottom-right: the context is visible to every query, the fresh rows
    // causally. Sequence 2 (no fresh rows, one query) sees its whole context.
    const all = refMlaPrefill({ q, ...whole, cuSeqLensQ: cuQ, cuSeqLensKv: denseOf(cu(ctx.map((x, b) => x + fresh[b])), [4]), softmaxScale: scale, causal: true });
    const a = refMlaPrefill({ q, ...c, cuSeqLensQ: cuQ, cuSeqLensKv: denseOf(cuC, [4]), softmaxScale: scale, causal: false });
    const bPart = refMlaPrefill({ q, ...f, cuSeqLensQ: cuQ, cuSeqLensKv: denseOf(cuF, [4]), softmaxScale: scale, causal: true });
    const merged = refMergeAttentionStates({
      outA: denseOf(a.out, [6, heads, vDim]), lseA: denseOf(a.lse, [6, heads]), outB: denseOf(bPart.out, [6, heads, vDim]), lseB: denseOf(bPart.lse, [6, heads]),
    });
    expect(relErr(merged.out, all.out)).toBeLessThan(1e-12);
    for (let i = 0; i < all.lse.length; i++) expect(merged.lse[i]).toBeCloseTo(all.lse[i], 10);
    // Sequence 1 has no context (lse -Infinity in part A): the merge returns part B exactly.
    expect(Array.from(merged.out.subarray(3 * heads * vDim, 5 * heads * vDim))).toEqual(Array.from(bPart.out.subarray(3 * heads * vDim, 5 * heads * vDim)));
    // Both parts empty: zeros and -Infinity.
    const empty = refMergeAttentionStates({ outA: denseOf([0, 0], [1, 2]), lseA: denseOf([-Infinity], [1]), outB: denseOf([0, 0], [1, 2]), lseB: denseOf([-Infinity], [1]) });
    expect(Array.from(empty.out)).toEqual([0, 0]);
    expect(empty.lse[0]).toBe(-Infinity);
  });

  it('gather: seqStarts pick a range of each sequence, padding rows are zero, the cache scale applies', () => {
    const cache = denseOf(Array.from({ length: 4 * 2 * 3 }, (_, i) => i), [4, 2, 3]); // 8 slots of width 3 (rank 2, rope 1)
    const table = denseOf([3, 1, 0, 2], [2, 2]);
    const g = refGatherLatentCache({ cache, blockTable: table, cuSeqLens: denseOf([0, 2, 3], [3]), seqStarts: denseOf([1, 3], [2]), kvLoraRank: 2, numRows: 4, cacheScale: 2 });
    // sequence 0 positions 1, 2 -> slots 7, 2; sequence 1 position 3 -> slot 5 (block 2, offset 1)
    expect(Array.from(g.kvC)).toEqual([42, 44, 12, 14, 30, 32, 0, 0]);
    expect(Array.from(g.kPe)).toEqual([46, 16, 34, 0]);
  });
});
