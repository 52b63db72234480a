// Bad input: each case must throw MlaError with its code, name the argument, and write nothing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { absorbQuery, appendLatentCache, MlaError, mlaDecode, planDecode, Stream, Tensor, unabsorbOutput, type ErrorCode } from 'mla-kernels';
import { native } from '../../lib/native.js';
import { tensorDescriptor } from '../../lib/tensor.js';
import { expectMlaError, intTensor, onDevice, poisoned, randomTensor, Rng, suiteBackends, testSeed } from '../helpers.js';

const seed = testSeed('errors');

async function bytesOf(t: Tensor): Promise<Uint8Array> {
  return new Uint8Array((await t.read()).buffer);
}

const available = suiteBackends().filter((b) => b.available);
const stream_device_is_host = (name: string) => name === 'cpu';

for (const backend of available) {
  describe(`${backend.name} backend: bad input is refused before anything is written`, () => {
    let stream: Stream;
    beforeAll(() => {
      stream = new Stream(backend.name);
    });
    afterAll(() => stream.dispose());

    // A valid decode problem; each case breaks one thing.
    const rng = new Rng(seed);
    const heads = 2;
    const rank = 16;
    const ropeDim = 16; // width 32: a shape every backend takes
    const width = rank + ropeDim;
    const blockSize = 3;
    const numBlocks = 4;
    // Float tensors live where the stream computes; index tensors on the host.
    const dev = <T extends Tensor>(t: T): T => onDevice(t, stream);
    const make = () => ({
      q: dev(randomTensor(rng, [2, 1, heads, width], 'bf16').t),
      cache: dev(randomTensor(rng, [numBlocks, blockSize, width], 'bf16').t),
      blockTable: intTensor([0, 1, 2, 3], [2, 2]),
      seqLens: intTensor([5, 6]),
      softmaxScale: 0.2,
      kvLoraRank: rank,
      out: dev(poisoned([2, 1, heads, rank], 'bf16')),
      lse: dev(poisoned([2, heads, 1], 'f32')),
      stream,
    });

    const decodeCases: [string, (o: ReturnType<typeof make>) => object, ErrorCode, string | RegExp][] = [
      ['q of dtype i32', (o) => ({ ...o, q: dev(intTensor(new Array(2 * heads * width).fill(0), [2, 1, heads, width])) }), 'E_DTYPE', 'q must be f32, f16 or bf16'],
      ['cache of another dtype than q', (o) => ({ ...o, cache: dev(randomTensor(rng, [numBlocks, blockSize, width], 'f16').t) }), 'E_DTYPE', 'cache must have the dtype of q'],
      ['q of rank 3', (o) => ({ ...o, q: dev(randomTensor(rng, [2, heads, width], 'bf16').t) }), 'E_SHAPE', 'q must have rank 4'],
      ['cache rows narrower than q', (o) => ({ ...o, cache: dev(randomTensor(rng, [numBlocks, blockSize, width - 1], 'bf16').t) }), 'E_SHAPE', 'cache dimension 2 must be 32'],
      ['cache block size 0', (o) => ({ ...o, cache: dev(Tensor.zeros([numBlocks, 0, width], 'bf16')) }), 'E_SHAPE', 'cache block size'],
      ['blockTable batch disagreeing with q', (o) => ({ ...o, blockTable: intTensor([0, 1, 2, 3, 0, 0], [3, 2]) }), 'E_SHAPE', 'blockTable dimension 0 must be 2'],
      ['seqLens of the wrong length', (o) => ({ ...o, seqLens: intTensor([5]) }), 'E_SHAPE', 'seqLens dimension 0 must be 2'],
      ['blockTable of dtype f32', (o) => ({ ...o, blockTable: Tensor.from(new Float32Array(4), [2, 2]) }), 'E_DTYPE', 'blockTable must be i32'],
      ['a block id outside the cache', (o) => ({ ...o, blockTable: intTensor([0, 1, 2, 4], [2, 2]) }), 'E_RANGE', 'blockTable[1][1] = 4 is not a block of cache'],
      ['a negative block id', (o) => ({ ...o, blockTable: intTensor([-1, 1, 2, 3], [2, 2]) }), 'E_RANGE', 'blockTable[0][0] = -1'],
      ['a negative seq length', (o) => ({ ...o, seqLens: intTensor([-1, 6]) }), 'E_RANGE', 'seqLens[0] = -1'],
      ['a seq length past the block table', (o) => ({ ...o, seqLens: intTensor([5, 7]) }), 'E_RANGE', 'seqLens[1] = 7 is outside [0, 6]'],
      ['softmaxScale NaN', (o) => ({ ...o, softmaxScale: NaN }), 'E_RANGE', 'softmaxScale'],
      ['softmaxScale Infinity', (o) => ({ ...o, softmaxScale: Infinity }), 'E_RANGE', 'softmaxScale'],
      ['softmaxScale 0', (o) => ({ ...o, softmaxScale: 0 }), 'E_RANGE', 'softmaxScale'],
      ['softmaxScale negative', (o) => ({ ...o, softmaxScale: -0.1 }), 'E_RANGE', 'softmaxScale'],
      ['softmaxScale missing', (o) => ({ ...o, softmaxScale: undefined }), 'E_ARGUMENT', 'softmaxScale must be a number'],
      ['softmaxScale a string', (o) => ({ ...o, softmaxScale: '0.2' }), 'E_ARGUMENT', 'softmaxScale must be a number'],
      ['kvLoraRank wider than q', (o) => ({ ...o, kvLoraRank: width + 1 }), 'E_RANGE', 'kvLoraRank'],
      ['kvLoraRank fractional', (o) => ({ ...o, kvLoraRank: 7.5 }), 'E_RANGE', 'kvLoraRank'],
      ['out of the wrong shape', (o) => ({ ...o, out: dev(poisoned([2, 1, heads, rank + 1], 'bf16')) }), 'E_SHAPE', 'out must have shape [2, 1, 2, 16]'],
      ['out of the wrong dtype', (o) => ({ ...o, out: dev(poisoned([2, 1, heads, rank], 'f32')) }), 'E_DTYPE', 'out must have the dtype of q'],
      ['lse of the wrong dtype', (o) => ({ ...o, lse: dev(poisoned([2, heads, 1], 'bf16')) }), 'E_DTYPE', 'lse must be f32'],
      ['lse of the wrong shape', (o) => ({ ...o, lse: dev(poisoned([2, 1, heads], 'f32')) }), 'E_SHAPE', 'lse must have shape [2, 2, 1]'],
      ['q that is a TypedArray, not a Tensor', (o) => ({ ...o, q: new Uint16Array(2 * heads * width) }), 'E_ARGUMENT', 'q must be a Tensor'],
      ['an unknown option', (o) => ({ ...o, softmax_scale: 0.2 }), 'E_ARGUMENT', "unknown option 'softmax_scale'"],
      ['causal not a boolean', (o) => ({ ...o, causal: 1 }), 'E_ARGUMENT', 'causal must be a boolean'],
      ['stream not a Stream', (o) => ({ ...o, stream: {} }), 'E_ARGUMENT', 'stream must be a Stream'],
    ];

    for (const [what, mutate, code, mentions] of decodeCases)
      it(`mlaDecode with ${what}: ${code}`, async () => {
        const o = make();
        const before = [await bytesOf(o.out), await bytesOf(o.lse), await bytesOf(o.cache)];
        expectMlaError(() => mlaDecode(mutate(o) as never), code, mentions);
        expect([await bytesOf(o.out), await bytesOf(o.lse), await bytesOf(o.cache)]).toEqual(before);
      });

    it('mlaDecode with a disposed q or out: E_DISPOSED naming it', () => {
      const o = make();
      o.q.dispose();
      expectMlaError(() => mlaDecode(o), 'E_DISPOSED', 'q was disposed');
      const o2 = make();
      o2.out.dispose();
      expectMlaError(() => mlaDecode(o2), 'E_DISPOSED', 'out was disposed');
    });

    it('mlaDecode with a plan that is not from planDecode, or planDecode with bad options: E_ARGUMENT / E_RANGE', () => {
      const o = make();
      expectMlaError(() => mlaDecode({ ...o, plan: {} as never }), 'E_ARGUMENT', 'plan must come from planDecode');
      expectMlaError(() => planDecode({ seqLens: o.seqLens, numHeads: 0, stream }), 'E_RANGE', 'numHeads must be a positive integer');
      expectMlaError(() => planDecode({ seqLens: intTensor([3, -1]), numHeads: 2, stream }), 'E_RANGE', 'seqLens[1] = -1 is negative');
      expectMlaError(() => planDecode({ seqLens: o.seqLens, numHeads: 2, queryLen: 1.5, stream }), 'E_RANGE', 'queryLen must be a positive integer');
      expectMlaError(() => planDecode({ seqLens: o.seqLens, numHeads: 2, batchInvariant: 'yes' as never, stream }), 'E_ARGUMENT', 'batchInvariant must be a boolean');
      const plan = planDecode({ seqLens: o.seqLens, numHeads: heads, stream });
      expect(() => mlaDecode({ ...o, plan })).not.toThrow();
      expectMlaError(() => mlaDecode({ ...o, seqLens: intTensor([5, 5]), plan }), 'E_ARGUMENT', 'plan was made for seqLens[1] = 6');
    });

    // Device tensors are separate allocations: only host memory can be aliased through the API.
    it.runIf(stream_device_is_host(backend.name))('mlaDecode with out sharing memory with q: E_ARGUMENT', () => {
      const o = make();
      const shared = new Uint16Array(2 * heads * width);
      expectMlaError(() => mlaDecode({ ...o, q: Tensor.from(shared, [2, 1, heads, width], 'bf16'), out: Tensor.from(shared.subarray(0, 2 * heads * rank), [2, 1, heads, rank], 'bf16') }), 'E_ARGUMENT', 'out shares memory with q');
    });

    it('a tensor on a device the stream cannot reach: E_DEVICE', () => {
      const o = make();
      const d = (t: Tensor, name: string) => t._descriptor(name);
      const q = tensorDescriptor(new Uint16Array(new SharedArrayBuffer(2 * o.q.numel)), 'bf16', 'cuda:0', o.q.shape);
      const params = [q, d(o.cache, 'cache'), d(o.blockTable, 'b'), d(o.seqLens, 's'), 0.2, rank, 1, false, undefined, d(o.out, 'o'), d(o.lse, 'l')] as const;
      // Through the addon directly: lib/ only makes cpu tensors, the check lives in csrc/core.
      const s = new (native().NativeStream)(backend.name, () => {});
      try {
        expectMlaError(() => native().mlaDecode(s, params), 'E_DEVICE', 'q is on cuda:0');
      } finally {
        s.dispose();
      }
    });

    // appendLatentCache
    const makeAppend = () => {
      const tables = { cos: dev(Tensor.fromValues(new Array(8 * 8).fill(0.5), [8, 8], 'f32')), sin: dev(Tensor.fromValues(new Array(8 * 8).fill(0.5), [8, 8], 'f32')) };
      return {
        cache: dev(randomTensor(rng, [numBlocks, blockSize, width], 'f16').t),
        kvC: dev(randomTensor(rng, [3, rank], 'f16').t),
        kPe: dev(randomTensor(rng, [3, ropeDim], 'f16').t),
        slotMapping: intTensor([4, -1, 11]),
        rope: { positions: intTensor([0, 7, 3]), ...tables, style: 'neox' as 'neox' | 'interleaved' },
        stream,
      };
    };
    const appendCases: [string, (o: ReturnType<typeof makeAppend>) => object, ErrorCode, string][] = [
      ['a slot past the end of the cache', (o) => ({ ...o, slotMapping: intTensor([4, -1, 12]) }), 'E_RANGE', 'slotMapping[2] = 12 is past the end of cache (12 slots)'],
      ['a slot repeated', (o) => ({ ...o, slotMapping: intTensor([4, 5, 4]) }), 'E_RANGE', 'slotMapping[2] = 4 repeats'],
      // out of order in a cache of more than 64 slots per token: the check sorts a copy instead of using a bitmap
      ['a slot repeated in a large cache', (o) => ({ ...o, cache: dev(randomTensor(rng, [64 * numBlocks, blockSize, width], 'f16').t), slotMapping: intTensor([200, 40, 200]) }), 'E_RANGE', 'slotMapping[2] = 200 repeats'],
      ['slotMapping of dtype f32', (o) => ({ ...o, slotMapping: Tensor.from(new Float32Array(3), [3]) }), 'E_DTYPE', 'slotMapping must be i32'],
      ['slotMapping shorter than kvC', (o) => ({ ...o, slotMapping: intTensor([4, 5]) }), 'E_SHAPE', 'slotMapping dimension 0 must be 3'],
      ['kPe with another token count', (o) => ({ ...o, kPe: dev(randomTensor(rng, [2, ropeDim], 'f16').t) }), 'E_SHAPE', 'kPe dimension 0 must be 3'],
      ['kvC of another dtype than the cache', (o) => ({ ...o, kvC: dev(randomTensor(rng, [3, rank], 'bf16').t) }), 'E_DTYPE', 'kPe must have the dtype of kvC'],
      ['a cache row of the wrong width', (o) => ({ ...o, cache: dev(randomTensor(rng, [numBlocks, blockSize, width + 2], 'f16').t) }), 'E_SHAPE', 'cache dimension 2 must be 32'],
      ['a position past the rope tables', (o) => ({ ...o, rope: { ...o.rope, positions: intTensor([0, 8, 8]) } }), 'E_RANGE', 'rope.positions[2] = 8 is outside [0, 8)'],
      ['rope tables of the wrong width', (o) => ({ ...o, rope: { ...o.rope, cos: dev(Tensor.zeros([8, 3], 'f32')) } }), 'E_SHAPE', 'rope.cos dimension 1 must be 8'],
      ['rope tables of dtype bf16', (o) => ({ ...o, rope: { ...o.rope, sin: dev(Tensor.zeros([8, 8], 'bf16')) } }), 'E_DTYPE', 'rope.sin must be f32'],
      ['an unknown rope style', (o) => ({ ...o, rope: { ...o.rope, style: 'gptj' } }), 'E_ARGUMENT', 'rope.style'],
      ['an odd ropeDim with RoPE', (o) => ({ ...o, cache: dev(randomTensor(rng, [numBlocks, blockSize, rank + 3], 'f16').t), kPe: dev(randomTensor(rng, [3, 3], 'f16').t) }), 'E_SHAPE', 'kPe ropeDim (dimension 1) must be even'],
      ...(stream_device_is_host(backend.name)
        ? []
        : [['a host cache on a device stream', (o: ReturnType<typeof makeAppend>) => ({ ...o, cache: randomTensor(rng, [numBlocks, blockSize, width], 'f16').t }), 'E_DEVICE', 'cache is on cpu but the stream runs on'] as const]),
    ];
    for (const [what, mutate, code, mentions] of appendCases)
      it(`appendLatentCache with ${what}: ${code}`, async () => {
        const o = makeAppend();
        const broken = mutate(o) as { cache: Tensor };
        const before = await bytesOf(broken.cache);
        expectMlaError(() => appendLatentCache(broken as never), code, mentions);
        await stream.synchronize();
        expect(await bytesOf(broken.cache)).toEqual(before);
      });

    it('absorbQuery and unabsorbOutput with disagreeing shapes or dtypes', async () => {
      const qNope = randomTensor(rng, [3, heads, 8], 'f32').t;
      expectMlaError(() => absorbQuery({ qNope, wUk: randomTensor(rng, [heads + 1, 8, rank], 'f32').t, stream }), 'E_SHAPE', 'wUk dimension 0 must be 2');
      expectMlaError(() => absorbQuery({ qNope, wUk: randomTensor(rng, [heads, 9, rank], 'f32').t, stream }), 'E_SHAPE', 'wUk dimension 1 must be 8');
      expectMlaError(() => absorbQuery({ qNope, wUk: randomTensor(rng, [heads, 8, rank], 'bf16').t, stream }), 'E_DTYPE', 'wUk must have the dtype of qNope');
      expectMlaError(() => absorbQuery({ qNope, wUk: randomTensor(rng, [heads, 8, rank], 'f32').t, qPe: randomTensor(rng, [4, heads, 4], 'f32').t, stream }), 'E_SHAPE', 'qPe must match qNope');
      const out = poisoned([3, heads, rank], 'f32');
      expectMlaError(() => absorbQuery({ qNope, wUk: randomTensor(rng, [heads, 8, rank], 'f32').t, out: poisoned([3, heads, rank + 1], 'f32'), stream }), 'E_SHAPE', 'out must have shape [3, 2, 16]');
      expect(Array.from(await bytesOf(out)).every((b) => b === 0xff)).toBe(true);
      const oLat = randomTensor(rng, [3, heads, rank], 'f32').t;
      expectMlaError(() => unabsorbOutput({ oLat, wUv: randomTensor(rng, [heads, 8], 'f32').t, stream }), 'E_SHAPE', 'wUv must have rank 3');
      expectMlaError(() => unabsorbOutput({ oLat, wUv: randomTensor(rng, [heads, 8, rank + 1], 'f32').t, stream }), 'E_SHAPE', 'wUv dimension 2 must be 16');
      expectMlaError(() => unabsorbOutput({ oLat: randomTensor(rng, [heads], 'f32').t, wUv: randomTensor(rng, [heads, 8, rank], 'f32').t, stream }), 'E_SHAPE', 'oLat must have rank >= 2');
      expectMlaError(() => unabsorbOutput(null as never), 'E_ARGUMENT', 'expected an options object');
    });
  });
}

describe('tensors', () => {
  it('a TypedArray of the wrong kind: E_DTYPE', () => {
    expectMlaError(() => Tensor.from(new Float64Array(4) as never, [4]), 'E_DTYPE', 'Float64Array');
    expectMlaError(() => Tensor.from(new Uint16Array(4) as never, [4]), 'E_DTYPE', "pass dtype 'bf16' or 'f16'");
    expectMlaError(() => Tensor.from(new Float32Array(4), [4], 'bf16' as never), 'E_DTYPE', "dtype 'bf16' does not match a Float32Array");
    expectMlaError(() => Tensor.from(new Int32Array(4), [4], 'f32' as never), 'E_DTYPE', 'does not match');
  });

  it('a shape that does not fit the array: E_SHAPE', () => {
    expectMlaError(() => Tensor.from(new Float32Array(6), [2, 2]), 'E_SHAPE', 'has 4 elements, the array 6');
    expectMlaError(() => Tensor.from(new Float32Array(6), [2, -3]), 'E_SHAPE', 'integer >= 0');
    expectMlaError(() => Tensor.zeros([1, 1, 1, 1, 1, 1, 1], 'f32'), 'E_SHAPE', 'at most 6');
    expectMlaError(() => Tensor.zeros([2], 'f64' as never), 'E_DTYPE', 'f64');
  });

  it('use after dispose: E_DISPOSED, never a crash', async () => {
    const t = Tensor.zeros([4], 'f32');
    t.dispose();
    expect(t.disposed).toBe(true);
    await expect(t.read()).rejects.toMatchObject({ code: 'E_DISPOSED' });
    await expect(t.toFloat32()).rejects.toBeInstanceOf(MlaError);
    t.dispose(); // twice is fine
  });

  it('a disposed stream refuses work: E_DISPOSED', () => {
    const s = new Stream('cpu');
    s.dispose();
    expectMlaError(() => s.synchronize(), 'E_DISPOSED', 'stream was disposed');
    expectMlaError(() => unabsorbOutput({ oLat: Tensor.zeros([1, 1, 4], 'f32'), wUv: Tensor.zeros([1, 2, 4], 'f32'), stream: s }), 'E_DISPOSED', 'stream was disposed');
  });

  it('an unknown backend: E_ARGUMENT; an unavailable one: E_UNSUPPORTED with the reason', () => {
    expectMlaError(() => new Stream('tpu' as never), 'E_ARGUMENT', "backend must be 'cpu', 'cuda-sim' or 'cuda'");
    const missing = suiteBackends().find((b) => !b.available);
    if (missing) expectMlaError(() => new Stream(missing.name), 'E_UNSUPPORTED', missing.reason);
  });
});
