// Captured graphs (Stream.capture / Graph.replay): a whole decode step recorded once and replayed with new
// lengths, block tables and slots each step must give what the same calls made one by one give, and what the
// reference gives; bad index values at a replay are refused before anything runs; inside a capture, read() and calls
// without { stream } (which would run at once, unrecorded) are refused naming the capture. Also: operations read copies of
// their index arrays, so changing an array after the call cannot make a kernel read or write out of bounds.
import { afterAll, describe, expect, it } from 'vitest';
import {
  absorbQuery,
  appendLatentCache,
  type BackendName,
  defaultStream,
  type FloatDType,
  gatherLatentCache,
  Graph,
  mergeAttentionStates,
  mlaDecode,
  mlaPrefill,
  planDecode,
  planPrefill,
  Stream,
  Tensor,
  unabsorbOutput,
  upProjectKv,
} from 'mla-kernels';
import { native } from '../../lib/native.js';
import { refAbsorbQuery, refAppendLatentCache, refMlaDecode, refUnabsorbOutput } from '../../lib/reference.js';
import { arrayOf, countNaN, exactValues, expectMlaError, intTensor, onDevice, poisoned, randomTensor, REL_BOUND, relErr, Rng, suiteBackends, testSeed } from '../helpers.js';

const seed = testSeed('graph');
afterAll(() => native().simConfigure?.({ splitRows: 0, checkOrders: true }));

// A small DeepSeek-like layer stack: each layer appends one token per sequence, absorbs its query, decodes and
// unabsorbs. Index arrays are host tensors the test updates in place between steps.
function makeModel(rng: Rng, stream: Stream, dtype: FloatDType, layers: number) {
  const batch = 3, heads = 4, kvLoraRank = 32, ropeDim = 16, nopeDim = 16, vHeadDim = 16, blockSize = 16, maxBlocks = 6;
  const width = kvLoraRank + ropeDim;
  const numBlocks = batch * maxBlocks + 2;
  const dev = <T extends Tensor>(t: T) => onDevice(t, stream);
  const maxPositions = blockSize * maxBlocks;
  const angles = Array.from({ length: maxPositions * (ropeDim / 2) }, (_, i) => Math.floor(i / (ropeDim / 2)) * 10000 ** (-(2 * (i % (ropeDim / 2))) / ropeDim));
  const cosHost = Tensor.fromValues(angles.map(Math.cos), [maxPositions, ropeDim / 2], 'f32');
  const sinHost = Tensor.fromValues(angles.map(Math.sin), [maxPositions, ropeDim / 2], 'f32');
  const perLayer = Array.from({ length: layers }, () => {
    const cacheInit = randomTensor(rng, [numBlocks, blockSize, width], dtype);
    const wUk = randomTensor(rng, [heads, nopeDim, kvLoraRank], dtype, 0.3);
    const wUv = randomTensor(rng, [heads, vHeadDim, kvLoraRank], dtype, 0.3);
    return {
      cache: dev(cacheInit.t),
      cacheRef: Float64Array.from(cacheInit.dense.data),
      wUk: dev(wUk.t),
      wUkDense: wUk.dense,
      wUv: dev(wUv.t),
      wUvDense: wUv.dense,
      // Step inputs, rewritten in place before each replay.
      kvC: dev(Tensor.zeros([batch, kvLoraRank], dtype)),
      kPe: dev(Tensor.zeros([batch, ropeDim], dtype)),
      qNope: dev(Tensor.zeros([batch, 1, heads, nopeDim], dtype)),
      qPe: dev(Tensor.zeros([batch, 1, heads, ropeDim], dtype)),
    };
  });
  // Each sequence owns blocks [b * maxBlocks, (b + 1) * maxBlocks) in a shuffled order, changed every step.
  const blockTable = intTensor(new Array(batch * maxBlocks).fill(0), [batch, maxBlocks]);
  const seqLens = intTensor(new Array(batch).fill(0));
  const slotMapping = intTensor(new Array(batch).fill(-1));
  const positions = intTensor(new Array(batch).fill(0));
  const shape = { batch, heads, kvLoraRank, ropeDim, nopeDim, vHeadDim, blockSize, maxBlocks, width, numBlocks };
  return { shape, perLayer, blockTable, seqLens, slotMapping, positions, cos: dev(cosHost), sin: dev(sinHost), cosHost, sinHost, softmaxScale: 1 / Math.sqrt(nopeDim + ropeDim) };
}
type Model = ReturnType<typeof makeModel>;

// Queues one decode step of every layer on `stream`; returns each layer's output.
function step(m: Model, stream: Stream, plan?: ReturnType<typeof planDecode>): Tensor[] {
  return m.perLayer.map((l) => {
    appendLatentCache({ cache: l.cache, kvC: l.kvC, kPe: l.kPe, slotMapping: m.slotMapping, rope: { positions: m.positions, cos: m.cos, sin: m.sin, style: 'interleaved' }, stream });
    const q = absorbQuery({ qNope: l.qNope, wUk: l.wUk, qPe: l.qPe, stream });
    const { out } = mlaDecode({ q, cache: l.cache, blockTable: m.blockTable, seqLens: m.seqLens, softmaxScale: m.softmaxScale, kvLoraRank: m.shape.kvLoraRank, plan, stream });
    return unabsorbOutput({ oLat: out, wUv: l.wUv, stream });
  });
}

// New index arrays for a step, written in place: each sequence's blocks reshuffled, the slot and position of the
// token appended (none when its length is 0). `lens` are the lengths after the append.
function setIndices(m: Model, rng: Rng, lens: number[]): void {
  const { batch, maxBlocks, blockSize } = m.shape;
  const table = arrayOf(m.blockTable);
  for (let b = 0; b < batch; b++) {
    const order = Array.from({ length: maxBlocks }, (_, j) => b * maxBlocks + j);
    for (let j = order.length - 1; j > 0; j--) {
      const k = rng.int(0, j);
      [order[j], order[k]] = [order[k], order[j]];
    }
    table.set(order, b * maxBlocks);
  }
  const slots = arrayOf(m.slotMapping);
  const pos = arrayOf(m.positions);
  const seqLens = arrayOf(m.seqLens);
  for (let b = 0; b < batch; b++) {
    const p = lens[b] - 1;
    seqLens[b] = lens[b];
    pos[b] = Math.max(p, 0);
    slots[b] = p < 0 ? -1 : table[b * maxBlocks + Math.floor(p / blockSize)] * blockSize + (p % blockSize);
  }
}

// The next step: new index arrays and inputs, written in place. Returns the reference outputs of every layer and
// advances the reference caches.
function nextStep(m: Model, rng: Rng, stream: Stream, dtype: FloatDType, lens: number[]): Float64Array[] {
  const { batch, heads, nopeDim, ropeDim, kvLoraRank, blockSize } = m.shape;
  setIndices(m, rng, lens);
  const dense = (t: Tensor) => ({ data: exactValues(t), shape: t.shape });
  const rope = { positions: dense(m.positions), cos: dense(m.cosHost), sin: dense(m.sinHost), style: 'interleaved' as const };
  return m.perLayer.map((l) => {
    const kvC = randomTensor(rng, [batch, kvLoraRank], dtype);
    const kPe = randomTensor(rng, [batch, ropeDim], dtype);
    const qNope = randomTensor(rng, [batch, 1, heads, nopeDim], dtype);
    const qPe = randomTensor(rng, [batch, 1, heads, ropeDim], dtype);
    l.kvC.copyFrom(kvC.t, { stream });
    l.kPe.copyFrom(kPe.t, { stream });
    l.qNope.copyFrom(qNope.t, { stream });
    l.qPe.copyFrom(qPe.t, { stream });
    l.cacheRef = refAppendLatentCache({ cache: { data: l.cacheRef, shape: [m.shape.numBlocks, blockSize, m.shape.width] }, kvC: kvC.dense, kPe: kPe.dense, slotMapping: dense(m.slotMapping), rope });
    // The decode reads q rounded to the dtype, as absorbQuery writes it.
    const qExact = exactValues(Tensor.fromValues(refAbsorbQuery({ qNope: qNope.dense, wUk: l.wUkDense, qPe: qPe.dense }), [batch, 1, heads, m.shape.width], dtype));
    const dec = refMlaDecode({
      q: { data: qExact, shape: [batch, 1, heads, m.shape.width] },
      cache: { data: l.cacheRef, shape: [m.shape.numBlocks, blockSize, m.shape.width] },
      blockTable: dense(m.blockTable),
      seqLens: dense(m.seqLens),
      softmaxScale: m.softmaxScale,
      kvLoraRank,
    });
    const oLat = exactValues(Tensor.fromValues(dec.out, [batch, 1, heads, kvLoraRank], dtype));
    return refUnabsorbOutput({ oLat: { data: oLat, shape: [batch, 1, heads, kvLoraRank] }, wUv: l.wUvDense });
  });
}

const backendsHere = suiteBackends().filter((b) => b.available);
const simulated = backendsHere.some((b) => b.name === 'cuda-sim');
for (const b of suiteBackends().filter((x) => !x.available)) it.skip(`${b.name} backend: unavailable in this build (${b.reason})`, () => {});

describe.each(backendsHere.map((b) => [b.name as BackendName]))('captured graphs on %s', (backend) => {
  // cuda-sim: the decode plan split into chunks of 16 rows (many splits, combine), and planned to fill the SMs.
  const variants = backend === 'cuda-sim' ? [16, 0] : [0];
  it.each(variants)('a decode step replays with new lengths, blocks and slots: as the calls one by one, and as the reference (splitRows %i)', async (splitRows) => {
    if (backend === 'cuda-sim') native().simConfigure!({ splitRows, checkOrders: true });
    const dtype: FloatDType = 'bf16';
    const rng = new Rng(seed + splitRows);
    const stream = new Stream(backend);
    const m = makeModel(rng, stream, dtype, 2);
    const eager = new Stream(backend);
    // The same model decoded call by call on its own copies of the caches, from the same inputs.
    const twinCaches = m.perLayer.map((l) => onDevice(Tensor.fromValues(l.cacheRef, [m.shape.numBlocks, m.shape.blockSize, m.shape.width], dtype), eager));

    // Capture with the lengths of the first step (the plan is remade when they change).
    const steps = [
      [1, 17, 40],
      [2, 0, 41],
      [3, 18, 96],
      [60, 33, 5],
    ];
    setIndices(m, rng, steps[0]); // index arrays valid at capture
    const plan = planDecode({ seqLens: m.seqLens, numHeads: m.shape.heads, stream });
    let outs: Tensor[] = [];
    const graph = stream.capture(() => {
      outs = step(m, stream, plan);
    });
    expect(graph).toBeInstanceOf(Graph);
    expect(graph.numOps).toBe(4 * m.perLayer.length);
    for (const o of outs) expect(o.device).toBe(stream.device);

    for (const lens of steps) {
      const refs = nextStep(m, rng, stream, dtype, lens);
      for (const o of outs) if (o.device === 'cpu') new Uint8Array((o._descriptor('o')[0] as Uint16Array).buffer).fill(0xff); // poison
      graph.replay();
      if (backend === 'cuda-sim') {
        await stream.synchronize();
        const rec = native().simLastOp!();
        expect(rec.op).toBe('graph');
        expect(rec.hostSyncs).toBe(0);
        expect(rec.launches.filter((l) => l.kernel === 'mlaDecodeKernel')).toHaveLength(m.perLayer.length);
      }
      // The same step call by call, on the other stream, from the same inputs and caches.
      const twin = m.perLayer.map((l, i) => ({ ...l, cache: twinCaches[i] }));
      const eagerOuts = step({ ...m, perLayer: twin }, eager);
      for (let i = 0; i < outs.length; i++) {
        const got = await outs[i].toFloat32();
        expect(countNaN(got), `layer ${i} lens ${lens}: unwritten elements`).toBe(0);
        const err = relErr(got, refs[i]);
        expect(err, `layer ${i} lens ${lens} (seed ${seed})`).toBeLessThan(REL_BOUND[dtype]);
        expect(Array.from(got), `layer ${i} lens ${lens}: graph and calls one by one differ`).toEqual(Array.from(await eagerOuts[i].toFloat32()));
      }
    }
    graph.dispose();
    stream.dispose();
    eager.dispose();
  });

  it('bad index values at a replay are refused before anything runs, naming the operation', async () => {
    const rng = new Rng(seed + 100);
    const stream = new Stream(backend);
    const m = makeModel(rng, stream, 'bf16', 1);
    setIndices(m, rng, [5, 6, 7]);
    const graph = stream.capture(() => void step(m, stream));
    const table = arrayOf(m.blockTable);
    const saved = table[0];
    table[0] = m.shape.numBlocks; // one past the last block
    expectMlaError(() => graph.replay(), 'E_RANGE', /graph op 2 \(mlaDecode\).*blockTable\[0\]\[0\]/);
    table[0] = saved;
    const lens = arrayOf(m.seqLens);
    lens[2] = m.shape.maxBlocks * m.shape.blockSize + 1; // more rows than the block table holds
    expectMlaError(() => graph.replay(), 'E_RANGE', /graph op 2 \(mlaDecode\).*seqLens\[2\]/);
    lens[2] = 7;
    const slots = arrayOf(m.slotMapping);
    slots[0] = m.shape.numBlocks * m.shape.blockSize;
    expectMlaError(() => graph.replay(), 'E_RANGE', /graph op 0 \(appendLatentCache\).*slotMapping\[0\]/);
    slots[0] = -1;
    graph.replay(); // valid again
    await stream.synchronize();
    m.perLayer[0].wUv.dispose();
    expectMlaError(() => graph.replay(), 'E_DISPOSED', /Tensor\(bf16, \[4, 16, 32\].*disposed; the graph uses it/);
    graph.dispose();
    expectMlaError(() => graph.replay(), 'E_DISPOSED', 'the graph was disposed');
    stream.dispose();
  });

  it('capture refuses copies, promises, nesting and replays inside it, and always ends', async () => {
    const stream = new Stream(backend);
    // o = W x with W the first 8 rows of the 16 x 16 identity.
    const x = onDevice(Tensor.fromValues(Array.from({ length: 16 }, (_, i) => i + 1), [1, 1, 16], 'bf16'), stream);
    const w = onDevice(Tensor.fromValues(Array.from({ length: 8 * 16 }, (_, i) => (i % 17 === 0 ? 1 : 0)), [1, 8, 16], 'bf16'), stream);
    const inner = stream.capture(() => void unabsorbOutput({ oLat: x, wUv: w, stream }));
    const y = onDevice(Tensor.zeros([1, 1, 16], 'bf16'), stream);
    expectMlaError(() => stream.capture(() => void y.copyFrom(x, { stream })), 'E_ARGUMENT', 'cannot be captured');
    expect(stream.capturing).toBe(false);
    expectMlaError(() => stream.capture((async () => {}) as () => void), 'E_ARGUMENT', 'synchronously');
    expectMlaError(() => stream.capture(() => void stream.capture(() => {})), 'E_ARGUMENT', 'already capturing');
    expectMlaError(() => stream.capture(() => inner.replay()), 'E_ARGUMENT', 'while its stream captures');
    expect(() =>
      stream.capture(() => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(stream.capturing).toBe(false);
    // The stream works as before.
    expect(Array.from(await unabsorbOutput({ oLat: x, wUv: w, stream }).toFloat32())).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    inner.replay();
    await stream.synchronize();
    stream.dispose();
  });
});

// Every operation on small valid tensors of `stream`'s device: `call(s)` queues it on `s`, or with no stream when
// `s` is undefined; `written` are the tensors it writes (poisoned), `read` a tensor it reads.
function everyOperation(stream: Stream, rng: Rng) {
  const heads = 2, rank = 32, rope = 16, nope = 16, vDim = 16, blockSize = 16, tokens = 3;
  const dev = <T extends Tensor>(t: T) => onDevice(t, stream);
  const rand = (shape: number[]) => dev(randomTensor(rng, shape, 'bf16', 0.5).t);
  const out = (shape: number[], dtype: 'bf16' | 'f32' = 'bf16') => dev(poisoned(shape, dtype));
  const opt = (s: Stream | undefined) => (s ? { stream: s } : {});
  const cache = () => rand([2, blockSize, rank + rope]);
  const blockTable = intTensor([0, 1], [1, 2]), seqLens = intTensor([20]), cuSeqLens = intTensor([0, tokens]);
  const wUk = rand([heads, nope, rank]), wUv = rand([heads, vDim, rank]);
  type Op = { written: Tensor[]; read: Tensor; call: (s?: Stream) => unknown };
  const ops: Record<string, () => Op> = {
    appendLatentCache: () => {
      const c = cache(), kvC = rand([tokens, rank]), kPe = rand([tokens, rope]), slotMapping = intTensor([1, 2, 3]);
      return { written: [c], read: kvC, call: (s) => appendLatentCache({ cache: c, kvC, kPe, slotMapping, ...opt(s) }) };
    },
    mlaDecode: () => {
      const q = rand([1, 1, heads, rank + rope]), c = cache(), o = out([1, 1, heads, rank]), lse = out([1, heads, 1], 'f32');
      return { written: [o, lse], read: q, call: (s) => mlaDecode({ q, cache: c, blockTable, seqLens, softmaxScale: 0.1, kvLoraRank: rank, out: o, lse, ...opt(s) }) };
    },
    planDecode: () => ({ written: [], read: seqLens, call: (s) => planDecode({ seqLens, numHeads: heads, ...opt(s) }) }),
    absorbQuery: () => {
      const qNope = rand([1, heads, nope]), qPe = rand([1, heads, rope]), o = out([1, heads, rank + rope]);
      return { written: [o], read: qNope, call: (s) => absorbQuery({ qNope, wUk, qPe, out: o, ...opt(s) }) };
    },
    unabsorbOutput: () => {
      const oLat = rand([1, heads, rank]), o = out([1, heads, vDim]);
      return { written: [o], read: oLat, call: (s) => unabsorbOutput({ oLat, wUv, out: o, ...opt(s) }) };
    },
    planPrefill: () => ({ written: [], read: cuSeqLens, call: (s) => planPrefill({ cuSeqLensQ: cuSeqLens, cuSeqLensKv: cuSeqLens, numHeads: heads, causal: true, ...opt(s) }) }),
    mlaPrefill: () => {
      const q = rand([tokens, heads, nope + rope]), kNope = rand([tokens, heads, nope]), kPe = rand([tokens, rope]), v = rand([tokens, heads, vDim]);
      const o = out([tokens, heads, vDim]), lse = out([tokens, heads], 'f32');
      return { written: [o, lse], read: q, call: (s) => mlaPrefill({ q, kNope, kPe, v, cuSeqLensQ: cuSeqLens, cuSeqLensKv: cuSeqLens, softmaxScale: 0.1, causal: true, out: o, lse, ...opt(s) }) };
    },
    gatherLatentCache: () => {
      const c = cache(), kvC = out([tokens, rank]), kPe = out([tokens, rope]);
      return { written: [kvC, kPe], read: c, call: (s) => gatherLatentCache({ cache: c, blockTable, cuSeqLens, kvLoraRank: rank, kvC, kPe, ...opt(s) }) };
    },
    upProjectKv: () => {
      const kvC = rand([tokens, rank]), kNope = out([tokens, heads, nope]), v = out([tokens, heads, vDim]);
      return { written: [kNope, v], read: kvC, call: (s) => upProjectKv({ kvC, wUk, wUv, kNope, v, ...opt(s) }) };
    },
    mergeAttentionStates: () => {
      const lseOf = () => dev(Tensor.fromValues(rng.normal(tokens * heads), [tokens, heads], 'f32'));
      const outA = rand([tokens, heads, vDim]), lseA = lseOf(), outB = rand([tokens, heads, vDim]), lseB = lseOf();
      const o = out([tokens, heads, vDim]), lse = out([tokens, heads], 'f32');
      return { written: [o, lse], read: outA, call: (s) => mergeAttentionStates({ outA, lseA, outB, lseB, out: o, lse, ...opt(s) }) };
    },
  };
  return ops;
}
const OPERATIONS = ['appendLatentCache', 'mlaDecode', 'planDecode', 'absorbQuery', 'unabsorbOutput', 'planPrefill', 'mlaPrefill', 'gatherLatentCache', 'upProjectKv', 'mergeAttentionStates'];

const bytesOf = async (ts: Tensor[]) => Promise.all(ts.map(async (t) => Array.from(new Uint8Array((await t.read()).buffer))));

describe.each(backendsHere.map((b) => [b.name as BackendName]))('capture traps on %s', (backend) => {
  it('every operation without { stream } inside a capture is refused, naming the capture; nothing runs', async () => {
    const stream = new Stream(backend);
    const ops = everyOperation(stream, new Rng(seed + 300));
    expect(Object.keys(ops)).toEqual(OPERATIONS);
    for (const name of OPERATIONS) {
      const op = ops[name]();
      const before = await bytesOf(op.written);
      expectMlaError(
        () => stream.capture(() => void op.call()),
        'E_ARGUMENT',
        `${name}: called without { stream } inside stream.capture() of the ${stream.device} stream: it would run at once on the ${defaultStream().device} default stream, unrecorded; pass { stream }`,
      );
      expect(stream.capturing, name).toBe(false);
      await defaultStream().synchronize();
      expect(await bytesOf(op.written), `${name} wrote its outputs`).toEqual(before);
      // The same call with its stream is valid (so the refusal was the capture's): recorded, then run by a replay.
      const graph = stream.capture(() => void op.call(stream));
      expect(graph.numOps, name).toBe(name.startsWith('plan') ? 0 : 1);
      graph.replay();
      await stream.synchronize();
      if (op.written.length) expect(await bytesOf(op.written), `${name} replayed`).not.toEqual(before);
      graph.dispose();
    }
    stream.dispose();
  });

  it('read(), toFloat32() and copies without { stream } inside a capture are refused, naming the capture', async () => {
    const stream = new Stream(backend);
    const op = everyOperation(stream, new Rng(seed + 301)).unabsorbOutput();
    const [o] = op.written;
    const host = intTensor([1, 2, 3]);
    const captureName = `inside stream.capture() of the ${stream.device} stream`;
    const unrun = 'nothing recorded has run yet', unrecorded = 'it would run at once, unrecorded';
    for (const [what, why, fn] of [
      ['read()', unrun, () => void o.read()],
      ['toFloat32()', unrun, () => void o.toFloat32()],
      ['read()', unrun, () => void host.read()], // a host tensor no capture writes: refused all the same
      ['a copy (to, copyFrom) without { stream }', unrecorded, () => void host.to(stream.device === 'cpu' ? 'cuda-sim' : stream.device)],
      ['a copy (to, copyFrom) without { stream }', unrecorded, () => void o.copyFrom(op.read as Tensor<'bf16'>)],
    ] as const) {
      let graph: Graph | undefined;
      expectMlaError(
        () => {
          graph = stream.capture(() => {
            op.call(stream);
            fn();
          });
        },
        'E_ARGUMENT',
        `${what} ${captureName}: ${why}`,
      );
      expect(graph).toBeUndefined();
      expect(stream.capturing).toBe(false);
    }
    // A read awaited in an async record: the capture refuses the promise; the refusal is not an unhandled rejection.
    expectMlaError(() => stream.capture((async () => void (await o.read())) as () => void), 'E_ARGUMENT', 'synchronously');
    // Allocating inside a capture is fine (a device tensor's zeros are uploaded on the default stream at once).
    let z: Tensor | undefined;
    stream.capture(() => void (z = Tensor.zeros([2], 'bf16', { device: stream.device })));
    expect(Array.from(await z!.toFloat32())).toEqual([0, 0]);
    // An operation given another stream runs at once, as documented; after the capture read() works.
    const other = new Stream(backend);
    const graph = stream.capture(() => void op.call(other));
    expect(graph.numOps).toBe(0);
    expect(countNaN(await o.toFloat32())).toBe(0);
    graph.dispose();
    other.dispose();
    stream.dispose();
  });
});

describe('a capture on the default stream', () => {
  it('records operations given no stream', async () => {
    const stream = defaultStream();
    const op = everyOperation(stream, new Rng(seed + 302)).unabsorbOutput();
    const graph = stream.capture(() => void op.call());
    expect(graph.numOps).toBe(1);
    expect(countNaN(await op.written[0].toFloat32())).toBe(op.written[0].numel); // recorded, not run
    graph.replay();
    expect(countNaN(await op.written[0].toFloat32())).toBe(0);
    graph.dispose();
  });
});

describe('index arrays are copied when an operation is queued', () => {
  it.each(backendsHere.map((b) => b.name))('%s: changing blockTable, seqLens and slotMapping after the call changes nothing', async (backend) => {
    const rng = new Rng(seed + 200);
    const stream = new Stream(backend);
    const width = 48, rank = 32, blockSize = 16, blocks = 8;
    const cacheInit = randomTensor(rng, [blocks, blockSize, width], 'bf16');
    const cache = onDevice(cacheInit.t, stream);
    // A long operation first, so the ones below are still queued when the arrays change.
    const bigQ = onDevice(randomTensor(rng, [2, 1, 8, width], 'bf16').t, stream);
    for (let i = 0; i < 4; i++)
      mlaDecode({ q: bigQ, cache, blockTable: intTensor([0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7], [2, 8]), seqLens: intTensor([128, 128]), softmaxScale: 0.1, kvLoraRank: rank, stream });
    const kvC = randomTensor(rng, [2, rank], 'bf16');
    const kPe = randomTensor(rng, [2, width - rank], 'bf16');
    const slotMapping = intTensor([3, 40]);
    appendLatentCache({ cache, kvC: onDevice(kvC.t, stream), kPe: onDevice(kPe.t, stream), slotMapping, stream });
    const q = randomTensor(rng, [1, 1, 2, width], 'bf16');
    const blockTable = intTensor([2, 0, 1], [1, 3]);
    const seqLens = intTensor([41]);
    const out = onDevice(poisoned([1, 1, 2, rank], 'bf16'), stream);
    mlaDecode({ q: onDevice(q.t, stream), cache, blockTable, seqLens, softmaxScale: 0.2, kvLoraRank: rank, out, stream });
    // Values that would read and write far outside the cache, had the kernels read these arrays.
    arrayOf(slotMapping).set([1 << 30, 1 << 29]);
    arrayOf(blockTable).set([1 << 30, -5, 1 << 29]);
    arrayOf(seqLens).set([1 << 30]);
    const cacheRef = refAppendLatentCache({ cache: cacheInit.dense, kvC: kvC.dense, kPe: kPe.dense, slotMapping: { data: [3, 40], shape: [2] } });
    const ref = refMlaDecode({ q: q.dense, cache: { data: cacheRef, shape: [blocks, blockSize, width] }, blockTable: { data: [2, 0, 1], shape: [1, 3] }, seqLens: { data: [41], shape: [1] }, softmaxScale: 0.2, kvLoraRank: rank });
    expect(relErr(await out.toFloat32(), ref.out), `seed ${seed}`).toBeLessThan(REL_BOUND.bf16);
    expect(relErr(await cache.toFloat32(), cacheRef)).toBe(0);
    stream.dispose();
  });
});

describe.runIf(simulated)('captured graphs under cuda-sim run as one CUDA graph', () => {
  it('the grids are captured at their largest and only the planned CTAs work', async () => {
    native().simConfigure!({ splitRows: 16, checkOrders: false });
    const rng = new Rng(seed + 300);
    const stream = new Stream('cuda-sim');
    const m = makeModel(rng, stream, 'bf16', 1);
    setIndices(m, rng, [1, 1, 1]);
    const plan = planDecode({ seqLens: m.seqLens, numHeads: m.shape.heads, stream });
    const graph = stream.capture(() => void step(m, stream, plan));
    graph.replay();
    await stream.synchronize();
    const first = native().simLastOp!();
    const decode = first.launches.find((l) => l.kernel === 'mlaDecodeKernel')!;
    expect(decode.grid[0]).toBeGreaterThan(plan.numWorkItems); // room for longer sequences
    // Longer sequences: more CTAs do work, in the same captured grid.
    nextStep(m, rng, stream, 'bf16', [96, 90, 80]);
    graph.replay();
    await stream.synchronize();
    const second = native().simLastOp!();
    expect(second.launches.find((l) => l.kernel === 'mlaDecodeKernel')!.grid[0]).toBe(decode.grid[0]);
    expect(second.bytesRead).toBeGreaterThan(first.bytesRead);
    graph.dispose();
    stream.dispose();
    native().simConfigure!({ splitRows: 0, checkOrders: true });
  });
});
