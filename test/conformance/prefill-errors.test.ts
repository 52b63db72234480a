// Bad input to the prefill operations: each case throws MlaError with its code and a message naming the argument,
// and writes nothing. Lifetime: disposed tensors and streams are refused; inputs disposed or index arrays changed
// after the call do not change what the queued operation computes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatherLatentCache, mergeAttentionStates, mlaPrefill, planDecode, planPrefill, Stream, Tensor, upProjectKv, type ErrorCode } from 'mla-kernels';
import { native } from '../../lib/native.js';
import { refMlaPrefill } from '../../lib/reference.js';
import { arrayOf, dense, expectMlaError, intTensor, onDevice, poisoned, randomTensor, REL_BOUND, relErr, Rng, suiteBackends, testSeed } from '../helpers.js';

const seed = testSeed('prefill-errors');

async function bytesOf(t: Tensor): Promise<Uint8Array> {
  return new Uint8Array((await t.read()).buffer);
}

for (const backend of suiteBackends().filter((b) => b.available)) {
  describe(`${backend.name} backend: bad prefill input is refused before anything is written`, () => {
    let stream: Stream;
    beforeAll(() => {
      stream = new Stream(backend.name);
    });
    afterAll(() => stream.dispose());
    const rng = new Rng(seed);
    const dev = <T extends Tensor>(t: T): T => onDevice(t, stream);
    const heads = 2, nope = 16, rope = 16, vDim = 16; // shapes every backend takes
    // Two sequences: 3 queries over 4 keys, 2 queries over 2 keys.
    const make = () => ({
      q: dev(randomTensor(rng, [5, heads, nope + rope], 'bf16').t),
      kNope: dev(randomTensor(rng, [6, heads, nope], 'bf16').t),
      kPe: dev(randomTensor(rng, [6, rope], 'bf16').t),
      v: dev(randomTensor(rng, [6, heads, vDim], 'bf16').t),
      cuSeqLensQ: intTensor([0, 3, 5]),
      cuSeqLensKv: intTensor([0, 4, 6]),
      softmaxScale: 0.2,
      causal: true,
      out: dev(poisoned([5, heads, vDim], 'bf16')),
      lse: dev(poisoned([5, heads], 'f32')),
      stream,
    });
    type P = ReturnType<typeof make>;
    const cases: [string, (o: P) => object, ErrorCode, string][] = [
      ['q of dtype i32', (o) => ({ ...o, q: dev(intTensor(new Array(5 * heads * (nope + rope)).fill(0), [5, heads, nope + rope])) }), 'E_DTYPE', 'q must be f32, f16 or bf16'],
      ['kNope of another dtype', (o) => ({ ...o, kNope: dev(randomTensor(rng, [6, heads, nope], 'f16').t) }), 'E_DTYPE', 'kNope must have the dtype of q'],
      ['v of another dtype', (o) => ({ ...o, v: dev(randomTensor(rng, [6, heads, vDim], 'f32').t) }), 'E_DTYPE', 'v must have the dtype of q'],
      ['q of rank 2', (o) => ({ ...o, q: dev(randomTensor(rng, [5, heads * (nope + rope)], 'bf16').t) }), 'E_SHAPE', 'q must have rank 3'],
      ['kNope with other heads', (o) => ({ ...o, kNope: dev(randomTensor(rng, [6, heads + 1, nope], 'bf16').t) }), 'E_SHAPE', 'kNope dimension 1 must be 2'],
      ['kPe with other rows', (o) => ({ ...o, kPe: dev(randomTensor(rng, [5, rope], 'bf16').t) }), 'E_SHAPE', 'kPe dimension 0 must be 6'],
      ['kPe per head (rank 3)', (o) => ({ ...o, kPe: dev(randomTensor(rng, [6, heads, rope], 'bf16').t) }), 'E_SHAPE', 'kPe must have rank 2'],
      ['q narrower than nope + rope', (o) => ({ ...o, q: dev(randomTensor(rng, [5, heads, nope + rope - 2], 'bf16').t) }), 'E_SHAPE', "q's last dimension must be nopeDim + ropeDim = 16 + 16"],
      ['v with other rows', (o) => ({ ...o, v: dev(randomTensor(rng, [7, heads, vDim], 'bf16').t) }), 'E_SHAPE', 'v dimension 0 must be 6'],
      ['cuSeqLensQ not monotone', (o) => ({ ...o, cuSeqLensQ: intTensor([0, 3, 2]) }), 'E_RANGE', 'cuSeqLensQ[2] = 2 is less than cuSeqLensQ[1] = 3'],
      ['cuSeqLensKv not monotone', (o) => ({ ...o, causal: false, cuSeqLensKv: intTensor([0, 4, 1]) }), 'E_RANGE', 'cuSeqLensKv[2] = 1 is less than cuSeqLensKv[1] = 4'],
      ['cuSeqLensQ not starting at 0', (o) => ({ ...o, cuSeqLensQ: intTensor([1, 3, 5]) }), 'E_RANGE', 'cuSeqLensQ[0] must be 0, got 1'],
      ['cuSeqLensQ past the rows of q', (o) => ({ ...o, cuSeqLensQ: intTensor([0, 3, 6]), cuSeqLensKv: intTensor([0, 4, 6]) }), 'E_RANGE', 'cuSeqLensQ[2] = 6 is past the 5 rows of q'],
      ['cuSeqLensKv past the rows of the keys', (o) => ({ ...o, cuSeqLensKv: intTensor([0, 4, 7]) }), 'E_RANGE', 'cuSeqLensKv[2] = 7 is past the 6 rows of kNope'],
      ['cuSeqLensKv of another batch', (o) => ({ ...o, cuSeqLensKv: intTensor([0, 6]) }), 'E_SHAPE', 'cuSeqLensKv dimension 0 must be 3'],
      ['cuSeqLensQ of dtype f32', (o) => ({ ...o, cuSeqLensQ: Tensor.from(Float32Array.of(0, 3, 5), [3]) }), 'E_DTYPE', 'cuSeqLensQ must be i32'],
      ['cuSeqLensQ of rank 2', (o) => ({ ...o, cuSeqLensQ: intTensor([0, 3, 5, 5], [2, 2]) }), 'E_SHAPE', 'cuSeqLensQ must have rank 1'],
      ['cuSeqLensQ empty', (o) => ({ ...o, cuSeqLensQ: intTensor([]) }), 'E_SHAPE', 'cuSeqLensQ must have batch + 1 >= 1 elements'],
      ['causal with fewer keys than queries', (o) => ({ ...o, cuSeqLensKv: intTensor([0, 5, 6]) }), 'E_RANGE', 'causal: sequence 1 has 2 queries (cuSeqLensQ) but 1 keys'],
      ['softmaxScale 0', (o) => ({ ...o, softmaxScale: 0 }), 'E_RANGE', 'softmaxScale must be a finite number > 0'],
      ['softmaxScale NaN', (o) => ({ ...o, softmaxScale: NaN }), 'E_RANGE', 'softmaxScale must be a finite number > 0'],
      ['softmaxScale missing', (o) => ({ ...o, softmaxScale: undefined }), 'E_ARGUMENT', 'softmaxScale must be a number'],
      ['out of the wrong shape', (o) => ({ ...o, out: dev(poisoned([5, heads, vDim + 1], 'bf16')) }), 'E_SHAPE', 'out must have shape [5, 2, 16]'],
      ['out of the wrong dtype', (o) => ({ ...o, out: dev(poisoned([5, heads, vDim], 'f16')) }), 'E_DTYPE', 'out must have the dtype of q'],
      ['lse of the wrong dtype', (o) => ({ ...o, lse: dev(poisoned([5, heads], 'bf16')) }), 'E_DTYPE', 'lse must be f32'],
      ['lse laid out [heads, tokens]', (o) => ({ ...o, lse: dev(poisoned([heads, 5], 'f32')) }), 'E_SHAPE', 'lse must have shape [5, 2]'],
      ['an unknown option', (o) => ({ ...o, cu_seqlens_q: o.cuSeqLensQ }), 'E_ARGUMENT', "unknown option 'cu_seqlens_q'"],
      ['causal not a boolean', (o) => ({ ...o, causal: 'yes' }), 'E_ARGUMENT', 'causal must be a boolean'],
      ['a plan that is not from planPrefill', (o) => ({ ...o, plan: {} }), 'E_ARGUMENT', 'plan must come from planPrefill'],
      ['a decode plan', (o) => ({ ...o, plan: planDecode({ seqLens: intTensor([4, 2]), numHeads: heads, stream }) }), 'E_ARGUMENT', 'plan must come from planPrefill'],
      ['kNope that is a TypedArray', (o) => ({ ...o, kNope: new Uint16Array(6 * heads * nope) }), 'E_ARGUMENT', 'kNope must be a Tensor'],
      ...(backend.name === 'cpu'
        ? []
        : ([
            ['a host q on a device stream', (o: P) => ({ ...o, q: randomTensor(rng, [5, heads, nope + rope], 'bf16').t }), 'E_DEVICE', 'q is on cpu but the stream runs on'],
            ['cuSeqLensQ on the device', (o: P) => ({ ...o, cuSeqLensQ: dev(intTensor([0, 3, 5])) }), 'E_DEVICE', 'cuSeqLensQ must be a cpu tensor'],
          ] as const)),
    ];
    for (const [what, mutate, code, mentions] of cases)
      it(`mlaPrefill with ${what}: ${code}`, async () => {
        const o = make();
        const before = [await bytesOf(o.out), await bytesOf(o.lse)];
        expectMlaError(() => mlaPrefill(mutate(o) as never), code, mentions);
        await stream.synchronize();
        expect([await bytesOf(o.out), await bytesOf(o.lse)]).toEqual(before);
      });

    it('mlaPrefill: a decode plan handle passed to the addon directly is refused by its type tag, not misread', () => {
      const o = make();
      const d = (t: Tensor, name: string) => t._descriptor(name);
      const decodePlan = planDecode({ seqLens: intTensor([4, 2]), numHeads: heads, stream });
      const params = [d(o.q, 'q'), d(o.kNope, 'k'), d(o.kPe, 'p'), d(o.v, 'v'), d(o.cuSeqLensQ, 'a'), d(o.cuSeqLensKv, 'b'), 0.2, true, decodePlan._handle, d(o.out, 'o'), d(o.lse, 'l')] as const;
      expectMlaError(() => native().mlaPrefill(stream._native(), params), 'E_ARGUMENT', 'plan must come from planPrefill');
    });

    it.runIf(backend.name === 'cpu')('mlaPrefill with out sharing memory with q: E_ARGUMENT', () => {
      const o = make();
      const shared = new Uint16Array(5 * heads * (nope + rope));
      expectMlaError(
        () => mlaPrefill({ ...o, q: Tensor.from(shared, [5, heads, nope + rope], 'bf16'), out: Tensor.from(shared.subarray(0, 5 * heads * vDim), [5, heads, vDim], 'bf16') }),
        'E_ARGUMENT',
        'out shares memory with q',
      );
    });

    it('planPrefill with bad lengths or options', () => {
      const cuQ = intTensor([0, 3, 5]), cuKv = intTensor([0, 4, 6]);
      expectMlaError(() => planPrefill({ cuSeqLensQ: cuQ, cuSeqLensKv: cuKv, numHeads: 0, stream }), 'E_RANGE', 'numHeads must be a positive integer');
      expectMlaError(() => planPrefill({ cuSeqLensQ: intTensor([0, 5, 3]), cuSeqLensKv: cuKv, numHeads: 2, stream }), 'E_RANGE', 'cuSeqLensQ[2] = 3 is less than cuSeqLensQ[1] = 5');
      expectMlaError(() => planPrefill({ cuSeqLensQ: cuQ, cuSeqLensKv: intTensor([0, 6]), numHeads: 2, stream }), 'E_SHAPE', 'cuSeqLensKv must have shape [3]');
      expectMlaError(() => planPrefill({ cuSeqLensQ: cuQ, cuSeqLensKv: intTensor([0, 2, 6]), numHeads: 2, causal: true, stream }), 'E_RANGE', 'causal: sequence 0 has 3 queries but 2 keys');
      expectMlaError(() => planPrefill({ cuSeqLensQ: cuQ, cuSeqLensKv: cuKv, numHeads: 2, causal: 1 as never, stream }), 'E_ARGUMENT', 'causal must be a boolean');
      expectMlaError(() => planPrefill({ cuSeqLensQ: cuQ, numHeads: 2, stream } as never), 'E_ARGUMENT', 'cuSeqLensKv must be a Tensor');
      const plan = planPrefill({ cuSeqLensQ: cuQ, cuSeqLensKv: cuKv, numHeads: heads, causal: true, stream });
      const o = make();
      expect(() => mlaPrefill({ ...o, plan })).not.toThrow();
      expectMlaError(() => mlaPrefill({ ...make(), cuSeqLensQ: intTensor([0, 2, 4]), plan }), 'E_ARGUMENT', 'plan was made for cuSeqLensQ[1] = 3, but it is 2');
      expectMlaError(() => mlaPrefill({ ...make(), plan: planPrefill({ cuSeqLensQ: cuQ, cuSeqLensKv: cuKv, numHeads: heads + 1, causal: true, stream }) }), 'E_ARGUMENT', 'plan was made for batch 2, 3 heads');
    });

    // gatherLatentCache: a cache of 4 blocks of 3 rows, width 32 (rank 16 + rope 16); two sequences.
    const makeGather = () => ({
      cache: dev(randomTensor(rng, [4, 3, 32], 'bf16').t),
      blockTable: intTensor([2, 0, 3, 1], [2, 2]),
      cuSeqLens: intTensor([0, 5, 8]),
      seqStarts: intTensor([1, 0]),
      kvLoraRank: 16,
      kvC: dev(poisoned([8, 16], 'bf16')),
      kPe: dev(poisoned([8, 16], 'bf16')),
      stream,
    });
    type G = ReturnType<typeof makeGather>;
    const gatherCases: [string, (o: G) => object, ErrorCode, string][] = [
      ['a block id outside the cache', (o) => ({ ...o, blockTable: intTensor([2, 4, 3, 1], [2, 2]) }), 'E_RANGE', 'blockTable[0][1] = 4 is not a block of cache'],
      ['a negative block id in use', (o) => ({ ...o, blockTable: intTensor([2, 0, -1, 1], [2, 2]) }), 'E_RANGE', 'blockTable[1][0] = -1'],
      ['rows past the block table', (o) => ({ ...o, seqStarts: intTensor([2, 0]) }), 'E_RANGE', 'seqStarts[0] = 2 with 5 rows (cuSeqLens) reaches position 7, past the 6 rows blockTable holds'],
      ['a negative seqStart', (o) => ({ ...o, seqStarts: intTensor([0, -1]) }), 'E_RANGE', 'seqStarts[1] = -1'],
      ['seqStarts of another batch', (o) => ({ ...o, seqStarts: intTensor([0]) }), 'E_SHAPE', 'seqStarts dimension 0 must be 2'],
      ['cuSeqLens not monotone', (o) => ({ ...o, cuSeqLens: intTensor([0, 5, 4]) }), 'E_RANGE', 'cuSeqLens[2] = 4 is less than cuSeqLens[1] = 5'],
      ['cuSeqLens past the rows of kvC', (o) => ({ ...o, kvC: dev(poisoned([7, 16], 'bf16')), kPe: dev(poisoned([7, 16], 'bf16')) }), 'E_RANGE', 'cuSeqLens[2] = 8 is past the 7 rows of kvC'],
      ['blockTable of another batch', (o) => ({ ...o, blockTable: intTensor([2, 0], [1, 2]) }), 'E_SHAPE', 'blockTable dimension 0 must be 2'],
      ['kvC of another dtype than the cache', (o) => ({ ...o, kvC: dev(poisoned([8, 16], 'f16')) }), 'E_DTYPE', 'kvC must have the dtype of cache'],
      ['kPe of another dtype than kvC', (o) => ({ ...o, kPe: dev(poisoned([8, 16], 'f32')) }), 'E_DTYPE', 'kPe must have the dtype of kvC'],
      ['kvC narrower than kvLoraRank', (o) => ({ ...o, kvC: dev(poisoned([8, 12], 'bf16')) }), 'E_SHAPE', 'kvC dimension 1 must be 16'],
      ['kPe of the wrong width', (o) => ({ ...o, kPe: dev(poisoned([8, 15], 'bf16')) }), 'E_SHAPE', 'kPe must have shape [8, 16]'],
      ['kvLoraRank wider than a cache row', (o) => ({ ...o, kvLoraRank: 33 }), 'E_RANGE', 'kvLoraRank must be in [1, 32]'],
      ['kvLoraRank fractional', (o) => ({ ...o, kvLoraRank: 15.5 }), 'E_RANGE', 'kvLoraRank must be a positive integer'],
      ['a cacheScale option (an fp8 cache carries its scale)', (o) => ({ ...o, cache: dev(Tensor.zeros([4, 3, 32], 'fp8_e4m3')), cacheScale: 2 }), 'E_ARGUMENT', "gatherLatentCache: cacheScale is not an option: an fp8 cache carries its scale, given where it is made: Tensor.zeros(shape, 'fp8_e4m3', { scale })"],
      ['numRows fewer than the rows gathered', (o) => ({ ...o, kvC: undefined, kPe: undefined, numRows: 7 }), 'E_RANGE', 'numRows = 7 is less than the 8 rows'],
      ['a dtype that is not a float dtype', (o) => ({ ...o, kvC: undefined, kPe: undefined, dtype: 'i32' }), 'E_DTYPE', 'dtype must be f32, f16 or bf16'],
    ];
    for (const [what, mutate, code, mentions] of gatherCases)
      it(`gatherLatentCache with ${what}: ${code}`, async () => {
        const o = makeGather();
        const before = [await bytesOf(o.kvC), await bytesOf(o.kPe)];
        expectMlaError(() => gatherLatentCache(mutate(o) as never), code, mentions);
        await stream.synchronize();
        expect([await bytesOf(o.kvC), await bytesOf(o.kPe)]).toEqual(before);
      });

    it('upProjectKv and mergeAttentionStates with disagreeing shapes or dtypes', async () => {
      const kvC = dev(randomTensor(rng, [4, 32], 'bf16').t);
      const wUk = dev(randomTensor(rng, [2, 16, 32], 'bf16').t);
      const wUv = dev(randomTensor(rng, [2, 16, 32], 'bf16').t);
      const kNope = dev(poisoned([4, 2, 16], 'bf16'));
      expectMlaError(() => upProjectKv({ kvC, wUk: dev(randomTensor(rng, [2, 16, 24], 'bf16').t), wUv, stream }), 'E_SHAPE', 'wUk dimension 2 must be 32');
      expectMlaError(() => upProjectKv({ kvC, wUk, wUv: dev(randomTensor(rng, [3, 16, 32], 'bf16').t), stream }), 'E_SHAPE', 'wUv dimension 0 must be 2');
      expectMlaError(() => upProjectKv({ kvC, wUk, wUv: dev(randomTensor(rng, [2, 16, 32], 'f16').t), stream }), 'E_DTYPE', 'wUv must have the dtype of kvC');
      expectMlaError(() => upProjectKv({ kvC: dev(randomTensor(rng, [4, 1, 32], 'bf16').t), wUk, wUv, stream }), 'E_SHAPE', 'kvC must have rank 2');
      expectMlaError(() => upProjectKv({ kvC, wUk, wUv, kNope: dev(poisoned([4, 2, 8], 'bf16')), stream }), 'E_SHAPE', 'kNope must have shape [4, 2, 16]');
      expectMlaError(() => upProjectKv({ kvC, wUk, wUv, kNope, v: dev(poisoned([4, 2, 16], 'f32')), stream }), 'E_DTYPE', 'v must have the dtype of kvC');
      await stream.synchronize();
      expect(Array.from(await bytesOf(kNope)).every((b) => b === 0xff)).toBe(true);

      const outA = dev(randomTensor(rng, [3, 2, 16], 'bf16').t);
      const lseA = dev(Tensor.fromValues([1, 2, 3, 4, 5, 6], [3, 2], 'f32'));
      const out = dev(poisoned([3, 2, 16], 'bf16'));
      expectMlaError(() => mergeAttentionStates({ outA, lseA, outB: dev(randomTensor(rng, [3, 2, 8], 'bf16').t), lseB: lseA, out, stream }), 'E_SHAPE', 'outB must have shape [3, 2, 16]');
      expectMlaError(() => mergeAttentionStates({ outA, lseA, outB: dev(randomTensor(rng, [3, 2, 16], 'f16').t), lseB: lseA, out, stream }), 'E_DTYPE', 'outB must have the dtype of outA');
      expectMlaError(() => mergeAttentionStates({ outA, lseA: dev(Tensor.zeros([2, 3], 'f32')), outB: outA, lseB: lseA, out, stream }), 'E_SHAPE', 'lseA must have shape [3, 2]');
      expectMlaError(() => mergeAttentionStates({ outA, lseA, outB: outA, lseB: dev(Tensor.zeros([3, 2], 'bf16')), out, stream }), 'E_DTYPE', 'lseB must be f32');
      expectMlaError(() => mergeAttentionStates({ outA, lseA, outB: outA, lseB: lseA, out: outA, stream }), 'E_ARGUMENT', 'out shares memory with outA');
      await stream.synchronize();
      expect(Array.from(await bytesOf(out)).every((b) => b === 0xff)).toBe(true);
    });

    it('a disposed input or output, or a disposed stream: E_DISPOSED naming it', () => {
      const o = make();
      o.kPe.dispose();
      expectMlaError(() => mlaPrefill(o), 'E_DISPOSED', 'kPe was disposed');
      const o2 = make();
      o2.lse.dispose();
      expectMlaError(() => mlaPrefill(o2), 'E_DISPOSED', 'lse was disposed');
      const g = makeGather();
      g.cuSeqLens.dispose();
      expectMlaError(() => gatherLatentCache(g), 'E_DISPOSED', 'cuSeqLens was disposed');
      const s = new Stream(backend.name);
      s.dispose();
      expectMlaError(() => mlaPrefill({ ...make(), stream: s }), 'E_DISPOSED', 'stream was disposed');
      expectMlaError(() => planPrefill({ cuSeqLensQ: o.cuSeqLensQ, cuSeqLensKv: o.cuSeqLensKv, numHeads: heads, stream: s }), 'E_DISPOSED', 'stream was disposed');
      expectMlaError(() => upProjectKv({ kvC: dev(Tensor.zeros([1, 16], 'bf16')), wUk: dev(Tensor.zeros([1, 16, 16], 'bf16')), wUv: dev(Tensor.zeros([1, 16, 16], 'bf16')), stream: s }), 'E_DISPOSED', 'stream was disposed');
    });

    it('inputs disposed and index arrays overwritten right after the call: the queued prefill computes what was asked', async () => {
      const o = make();
      const host = async (t: Tensor) => ({ data: await t.toFloat32(), shape: t.shape });
      const ref = refMlaPrefill({ q: await host(o.q), kNope: await host(o.kNope), kPe: await host(o.kPe), v: await host(o.v), cuSeqLensQ: dense(o.cuSeqLensQ), cuSeqLensKv: dense(o.cuSeqLensKv), softmaxScale: 0.2, causal: true });
      await stream.synchronize();
      const { out, lse } = mlaPrefill(o);
      arrayOf(o.cuSeqLensQ).set([7, -100, 1 << 30]);
      arrayOf(o.cuSeqLensKv).set([-5, 1 << 30, 3]);
      for (const t of [o.q, o.kNope, o.kPe, o.v]) t.dispose();
      expect(relErr(await out.toFloat32(), ref.out), `seed ${seed}`).toBeLessThanOrEqual(REL_BOUND.bf16);
      expect((await lse.toFloat32()).every(Number.isFinite)).toBe(true);
    });

    it('a graph whose tensor was disposed refuses to replay; one whose lengths became invalid names the operation', async () => {
      const o = make();
      const graph = stream.capture(() => {
        mlaPrefill(o);
      });
      graph.replay();
      await stream.synchronize();
      arrayOf(o.cuSeqLensKv).set([0, 4, 5]);
      expectMlaError(() => graph.replay(), 'E_RANGE', 'graph op 0 (mlaPrefill): causal: sequence 1 has 2 queries');
      o.v.dispose();
      expectMlaError(() => graph.replay(), 'E_DISPOSED', 'the graph uses it');
      graph.dispose();
    });
  });
}
