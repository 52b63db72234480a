// Streams: operations return at once, run in order on a native worker (not Node's main thread), and
// reading a tensor waits for its writes.
import { describe, expect, it } from 'vitest';
import { appendLatentCache, defaultStream, mlaDecode, Stream, Tensor, unabsorbOutput } from 'mla-kernels';
import { intTensor, poisoned, randomTensor, Rng, testSeed } from '../helpers.js';

const seed = testSeed('stream');

describe('streams', () => {
  it('an operation runs on a native worker while the main thread is busy', async () => {
    const rng = new Rng(seed);
    const width = 72;
    const len = 3008;
    const cache = randomTensor(rng, [len / 16, 16, width], 'f32').t;
    const q = randomTensor(rng, [1, 1, 8, width], 'f32').t;
    const out = poisoned([1, 1, 8, 64], 'f32');
    const stream = new Stream('cpu');
    mlaDecode({ q, cache, blockTable: intTensor(Array.from({ length: len / 16 }, (_, i) => i), [1, len / 16]), seqLens: intTensor([len]), softmaxScale: 0.1, kvLoraRank: 64, out, stream });
    // The main thread never yields here; only another thread can write `out` meanwhile.
    const raw = out._descriptor('out')[0] as Float32Array;
    const deadline = Date.now() + 60_000;
    while (Number.isNaN(raw[raw.length - 1]) && Date.now() < deadline);
    expect(Number.isNaN(raw[raw.length - 1]), 'the decode did not run while the main thread was blocked').toBe(false);
    await stream.synchronize();
    stream.dispose();
  });

  it('operations on one stream run in order; read() waits for the writes', async () => {
    const rng = new Rng(seed + 1);
    const stream = new Stream('cpu');
    const rank = 8;
    const cache = Tensor.zeros([2, 4, rank], 'f32');
    const kvC = randomTensor(rng, [8, rank], 'f32');
    const kPe = Tensor.zeros([8, 0], 'f32');
    // Append, then decode reading what was appended, then unabsorb reading decode's output: all queued at once.
    appendLatentCache({ cache, kvC: kvC.t, kPe, slotMapping: intTensor([0, 1, 2, 3, 4, 5, 6, 7]), stream });
    const q = Tensor.fromValues(new Array(rank).fill(0), [1, 1, 1, rank], 'f32'); // zero query: uniform weights
    const { out } = mlaDecode({ q, cache, blockTable: intTensor([0, 1], [1, 2]), seqLens: intTensor([8]), softmaxScale: 1, kvLoraRank: rank, stream });
    const identity = Tensor.fromValues(Array.from({ length: rank * rank }, (_, i) => (i % (rank + 1) === 0 ? 1 : 0)), [1, rank, rank], 'f32');
    const o = unabsorbOutput({ oLat: out, wUv: identity, stream });
    const got = await o.toFloat32();
    const mean = Array.from({ length: rank }, (_, c) => Array.from({ length: 8 }, (_, s) => kvC.dense.data[s * rank + c]).reduce((a, b) => a + b, 0) / 8);
    got.forEach((v, c) => expect(v).toBeCloseTo(mean[c], 5));
    stream.dispose();
  });

  it('synchronize() waits for everything queued; dispose() lets queued work finish', async () => {
    const stream = new Stream('cpu');
    const outs = Array.from({ length: 20 }, () => unabsorbOutput({ oLat: Tensor.fromValues([1, 2], [1, 1, 2], 'f32'), wUv: Tensor.fromValues([1, 1, 2, -1], [1, 2, 2], 'f32'), stream }));
    stream.dispose();
    for (const o of outs) expect(Array.from(await o.toFloat32())).toEqual([3, 0]);
    await expect(async () => stream.synchronize()).rejects.toMatchObject({ code: 'E_DISPOSED' });
    await defaultStream('cpu').synchronize();
  });

  it('an operation on one stream waits for writes queued on another', async () => {
    const rng = new Rng(seed + 2);
    const writer = new Stream('cpu');
    const reader = new Stream('cpu');
    const width = 72;
    const len = 2048;
    const cache = randomTensor(rng, [len / 16, 16, width], 'f32').t;
    const qs = [0, 1, 2].map(() => randomTensor(rng, [1, 1, 8, width], 'f32').t);
    const blockTable = intTensor(Array.from({ length: len / 16 }, (_, i) => i), [1, len / 16]);
    const seqLens = intTensor([len]);
    const out = poisoned([1, 1, 8, 64], 'f32');
    // `writer` rewrites `out` many times with other queries before its final value; a reader that did not wait
    // would copy NaN or one of the intermediate values.
    for (let i = 0; i < 60; i++) mlaDecode({ q: qs[i % 2], cache, blockTable, seqLens, softmaxScale: 0.1, kvLoraRank: 64, out, stream: writer });
    mlaDecode({ q: qs[2], cache, blockTable, seqLens, softmaxScale: 0.1, kvLoraRank: 64, out, stream: writer });
    const identity = Tensor.fromValues(Array.from({ length: 8 * 64 * 64 }, (_, i) => (i % 64 === Math.floor(i / 64) % 64 ? 1 : 0)), [8, 64, 64], 'f32');
    const copy = unabsorbOutput({ oLat: out, wUv: identity, stream: reader });
    const final = Array.from(await out.toFloat32());
    expect(Array.from(await copy.toFloat32())).toEqual(final);
    writer.dispose();
    reader.dispose();
  });

  it('using disposes a tensor at the end of its block', () => {
    let escaped: Tensor;
    {
      using t = Tensor.zeros([2], 'f32');
      escaped = t;
      expect(t.disposed).toBe(false);
    }
    expect(escaped.disposed).toBe(true);
  });
});
