// FP8 e4m3 latent caches: the conversions (every bit pattern, rounding to nearest even, saturation), append writing
// e4m3(value / scale) on every backend and CPU path, decode reading the cache dequantised (against the
// reference on the dequantised cache, split or not, causal, empty sequences, odd block sizes), the scale travelling
// with the cache tensor, the traffic it saves under cuda-sim, and the errors of every misuse.
import { describe, expect, it } from 'vitest';
import {
  absorbQuery,
  appendLatentCache,
  gatherLatentCache,
  type FloatDType,
  fp8E4M3ToFloat32,
  fromFp8E4M3Bits,
  mlaDecode,
  Stream,
  Tensor,
  toFp8E4M3Array,
  toFp8E4M3Bits,
} from 'mla-kernels';
import { refAppendLatentCache, refMlaDecode } from '../../lib/reference.js';
import { countNaN, expectMlaError, hookedSuite, intTensor, onDevice, poisoned, randomTensor, REL_BOUND, relErr, Rng, suiteBackends } from '../helpers.js';

const { seed, addon, isas } = hookedSuite('fp8');

describe('fp8 e4m3 conversions', () => {
  it('every bit pattern decodes to its value and encodes back', () => {
    for (let b = 0; b < 256; b++) {
      const v = fromFp8E4M3Bits(b);
      if ((b & 0x7f) === 0x7f) {
        expect(v).toBeNaN();
        continue;
      }
      const exp = (b >> 3) & 15, man = b & 7;
      expect(Math.abs(v)).toBe(exp === 0 ? man / 512 : (1 + man / 8) * 2 ** (exp - 7));
      expect(toFp8E4M3Bits(v)).toBe(v === 0 ? b & 0x80 : b);
    }
    expect(fromFp8E4M3Bits(0x7e)).toBe(448);
    expect(fromFp8E4M3Bits(0x01)).toBe(2 ** -9);
  });

  it('rounds to the nearest value, ties to even, and saturates at ±448', () => {
    const rng = new Rng(seed);
    const finite = Array.from({ length: 254 }, (_, b) => fromFp8E4M3Bits(b < 127 ? b : b + 1)).filter((v) => !Number.isNaN(v));
    for (const x of [...rng.normal(4000, 30), ...rng.normal(2000, 0.01)]) {
      const got = fromFp8E4M3Bits(toFp8E4M3Bits(x));
      const c = Math.max(-448, Math.min(448, x));
      const best = Math.min(...finite.map((v) => Math.abs(v - c)));
      expect(Math.abs(got - c), `x = ${x}`).toBe(best);
    }
    // Ties: halfway between 1 and 1.125 goes to 1 (even mantissa), between 1.125 and 1.25 to 1.25.
    expect(toFp8E4M3Bits(1.0625)).toBe(0x38);
    expect(toFp8E4M3Bits(1.1875)).toBe(0x3a);
    expect(toFp8E4M3Bits(2 ** -10)).toBe(0); // halfway to the smallest subnormal: to even (zero)
    expect(toFp8E4M3Bits(1e9)).toBe(0x7e);
    expect(toFp8E4M3Bits(-Infinity)).toBe(0xfe);
    expect(toFp8E4M3Bits(-0)).toBe(0x80);
    expect(toFp8E4M3Bits(NaN) & 0x7f).toBe(0x7f);
    expect(Array.from(fp8E4M3ToFloat32(toFp8E4M3Array([0.3, -2, 500])))).toEqual([0.3125, -2, 448]);
  });
});

// The stored bytes an fp8 append must write: each value (f32 RoPE when given) divided by the scale in f32, rounded.
function fp8Reference(values: Float64Array, scale: number): Uint8Array {
  return Uint8Array.from(values, (v) => toFp8E4M3Bits(Math.fround(Math.fround(v) / Math.fround(scale))));
}

interface Case {
  backend: string;
  isa?: string;
}

const cases: Case[] = [];
for (const b of suiteBackends()) {
  if (!b.available) continue;
  if (b.name === 'cpu') for (const isa of isas) cases.push({ backend: 'cpu', isa });
  else cases.push({ backend: b.name });
}
for (const b of suiteBackends().filter((x) => !x.available)) it.skip(`${b.name} backend: unavailable in this build (${b.reason})`, () => {});

describe.each(cases.map((c) => [`${c.backend}${c.isa ? ` (${c.isa})` : ''}`, c] as const))('fp8 caches on %s', (_label, c) => {
  const inputDTypes: FloatDType[] = c.backend === 'cpu' ? ['bf16', 'f32', 'f16'] : ['bf16', 'f16'];
  const setUp = () => {
    if (c.isa) addon.cpuConfigure!({ isa: c.isa });
    return new Stream(c.backend as never);
  };

  it.each(inputDTypes)('append from %s writes e4m3(value / scale) with the scale of the cache, bit for bit; RoPE within one step', async (dtype) => {
    const stream = setUp();
    const rng = new Rng(seed + 1);
    const rank = 32, ropeDim = 16, width = 48, blockSize = 5, blocks = 7, tokens = 20;
    const scale = 0.02 + rng.next() * 0.2;
    const kvC = randomTensor(rng, [tokens, rank], dtype, 3);
    const kPe = randomTensor(rng, [tokens, ropeDim], dtype, 3);
    // Distinct slots in shuffled order, a few tokens skipped (-1).
    const order = Array.from({ length: blocks * blockSize }, (_, i) => i).sort(() => rng.next() - 0.5);
    const slots = Array.from({ length: tokens }, (_, i) => (i % 7 === 3 ? -1 : order[i]));
    const initial = Tensor.from(Uint8Array.from({ length: blocks * blockSize * width }, () => rng.int(0, 0x7e) | (rng.next() < 0.5 ? 0x80 : 0)), [blocks, blockSize, width], 'fp8_e4m3', { scale });
    const cache = onDevice(initial, stream);
    expect(cache.scale).toBe(scale);
    appendLatentCache({ cache, kvC: onDevice(kvC.t, stream), kPe: onDevice(kPe.t, stream), slotMapping: intTensor(slots), stream });
    const got = (await cache.read()) as Uint8Array;
    const values = refAppendLatentCache({
      cache: { data: Float64Array.from(initial._descriptor('c')[0] as Uint8Array, (b) => fromFp8E4M3Bits(b) * Math.fround(scale)), shape: initial.shape },
      kvC: kvC.dense,
      kPe: kPe.dense,
      slotMapping: { data: slots, shape: [tokens] },
    });
    const want = fp8Reference(values, scale);
    // Rows not appended keep their bytes (re-encoding their dequantised values gives the same bytes back).
    expect(Array.from(got), `seed ${seed}`).toEqual(Array.from(want));

    // With RoPE the rotation is f32 arithmetic whose last bit may differ (FMA or not): at most one step of e4m3.
    const maxPositions = 64;
    const angles = Array.from({ length: maxPositions * (ropeDim / 2) }, (_, i) => Math.floor(i / (ropeDim / 2)) * 0.3 ** (i % (ropeDim / 2)));
    const cos = Tensor.fromValues(angles.map(Math.cos), [maxPositions, ropeDim / 2], 'f32');
    const sin = Tensor.fromValues(angles.map(Math.sin), [maxPositions, ropeDim / 2], 'f32');
    const positions = Array.from({ length: tokens }, () => rng.int(0, maxPositions - 1));
    for (const style of ['interleaved', 'neox'] as const) {
      const roped = onDevice(initial, stream);
      const rope = { positions: intTensor(positions), cos: onDevice(cos, stream), sin: onDevice(sin, stream), style };
      appendLatentCache({ cache: roped, kvC: onDevice(kvC.t, stream), kPe: onDevice(kPe.t, stream), slotMapping: intTensor(slots), rope, stream });
      const bytes = (await roped.read()) as Uint8Array;
      const ref = fp8Reference(
        refAppendLatentCache({
          cache: { data: Float64Array.from(initial._descriptor('c')[0] as Uint8Array, (b) => fromFp8E4M3Bits(b) * Math.fround(scale)), shape: initial.shape },
          kvC: kvC.dense,
          kPe: kPe.dense,
          slotMapping: { data: slots, shape: [tokens] },
          rope: { positions: { data: positions, shape: [tokens] }, cos: { data: cos._descriptor('c')[0], shape: cos.shape }, sin: { data: sin._descriptor('s')[0], shape: sin.shape }, style },
        }),
        scale,
      );
      for (let i = 0; i < ref.length; i++)
        if (bytes[i] !== ref[i]) expect(Math.abs(bytes[i] - ref[i]) === 1 && (bytes[i] & 0x80) === (ref[i] & 0x80), `${style} byte ${i}: ${bytes[i]} vs ${ref[i]}`).toBe(true);
    }
    stream.dispose();
  });

  const decodeCases = [
    { name: 'mixed lengths with an empty sequence, block size 7', lens: [45, 0, 13], blockSize: 7, queryLen: 1, causal: false, splitRows: 0 },
    { name: 'causal, 2 query positions, split into 16-row chunks', lens: [61, 30], blockSize: 16, queryLen: 2, causal: true, splitRows: 16 },
  ];
  it.each(decodeCases)('decode reads the cache dequantised: $name', async (dc) => {
    const stream = setUp();
    if (c.backend === 'cpu') addon.cpuConfigure!({ isa: c.isa, splitRows: dc.splitRows });
    else addon.simConfigure?.({ splitRows: dc.splitRows, checkOrders: true });
    const rng = new Rng(seed + 2);
    for (const dtype of inputDTypes) {
      const heads = 6, rank = 48, width = 64;
      const maxBlocks = Math.ceil(Math.max(...dc.lens) / dc.blockSize) + 1;
      const numBlocks = dc.lens.length * maxBlocks;
      const scale = 0.01 + rng.next() * 0.1;
      const cacheHost = Tensor.from(toFp8E4M3Array(rng.normal(numBlocks * dc.blockSize * width, 20)), [numBlocks, dc.blockSize, width], 'fp8_e4m3', { scale });
      const table = Array.from({ length: numBlocks }, (_, i) => i).sort(() => rng.next() - 0.5);
      const q = randomTensor(rng, [dc.lens.length, dc.queryLen, heads, width], dtype, 0.5);
      const out = onDevice(poisoned([dc.lens.length, dc.queryLen, heads, rank], dtype), stream);
      const lse = onDevice(poisoned([dc.lens.length, heads, dc.queryLen], 'f32'), stream);
      mlaDecode({
        q: onDevice(q.t, stream),
        cache: onDevice(cacheHost, stream),
        blockTable: intTensor(table, [dc.lens.length, maxBlocks]),
        seqLens: intTensor(dc.lens),
        softmaxScale: 0.125,
        kvLoraRank: rank,
        causal: dc.causal,
        out,
        lse,
        stream,
      });
      const ref = refMlaDecode({
        q: q.dense,
        cache: { data: Float64Array.from(cacheHost._descriptor('c')[0] as Uint8Array, (b) => fromFp8E4M3Bits(b) * scale), shape: cacheHost.shape },
        blockTable: { data: table, shape: [dc.lens.length, maxBlocks] },
        seqLens: { data: dc.lens, shape: [dc.lens.length] },
        softmaxScale: 0.125,
        kvLoraRank: rank,
        causal: dc.causal,
      });
      const got = await out.toFloat32();
      const gotLse = await lse.toFloat32();
      expect(countNaN(got), `${dtype}: unwritten outputs`).toBe(0);
      expect(relErr(got, ref.out), `${dtype}, seed ${seed}`).toBeLessThan(REL_BOUND[dtype]);
      for (let i = 0; i < ref.lse.length; i++)
        if (ref.lse[i] === -Infinity) expect(gotLse[i]).toBe(-Infinity);
        else expect(Math.abs(gotLse[i] - ref.lse[i]), `lse ${i}`).toBeLessThan(2e-3 * Math.max(1, Math.abs(ref.lse[i])));
    }
    stream.dispose();
  });

  it('a captured append + decode on an fp8 cache replays bit for bit as the calls one by one', async () => {
    const stream = setUp();
    const rng = new Rng(seed + 4);
    const heads = 4, rank = 32, width = 48, blockSize = 8, tokens = 3, scale = 0.07;
    const cacheInit = Tensor.from(toFp8E4M3Array(rng.normal(6 * blockSize * width, 10)), [6, blockSize, width], 'fp8_e4m3', { scale });
    const caches = [onDevice(cacheInit, stream), onDevice(cacheInit, stream)];
    const kvC = onDevice(randomTensor(rng, [tokens, rank], 'bf16').t, stream);
    const kPe = onDevice(randomTensor(rng, [tokens, width - rank], 'bf16').t, stream);
    const q = onDevice(randomTensor(rng, [tokens, 1, heads, width], 'bf16').t, stream);
    const slots = new Int32Array([5, 17, 40]);
    const slotMapping = Tensor.from(slots, [tokens]);
    const blockTable = intTensor([0, 1, 2, 3, 4, 5], [tokens, 2]);
    const lens = new Int32Array([6, 10, 9]);
    const seqLens = Tensor.from(lens, [tokens]);
    const step = (cache: Tensor, s: Stream) => {
      appendLatentCache({ cache, kvC, kPe, slotMapping, stream: s });
      return mlaDecode({ q, cache, blockTable, seqLens, softmaxScale: 0.2, kvLoraRank: rank, stream: s }).out;
    };
    let captured: Tensor | undefined;
    const graph = stream.capture(() => {
      captured = step(caches[0], stream);
    });
    for (const [s0, s1, s2, l] of [[5, 17, 40, [6, 10, 9]], [6, 18, 41, [7, 11, 10]]] as const) {
      slots.set([s0, s1, s2]);
      lens.set(l);
      graph.replay();
      const eager = step(caches[1], stream);
      expect(Array.from(await captured!.toFloat32())).toEqual(Array.from(await eager.toFloat32()));
      expect(Array.from((await caches[0].read()) as Uint8Array)).toEqual(Array.from((await caches[1].read()) as Uint8Array));
    }
    graph.dispose();
    stream.dispose();
  });

  it('the scale travels with the cache: made once, used by append, decode, gather, to() and toFloat32(); a mismatch is an error', async () => {
    const stream = setUp();
    const rng = new Rng(seed + 5);
    const dtype = inputDTypes[0];
    const heads = 4, rank = 32, width = 48, blockSize = 8, tokens = 13;
    // Values of magnitude ~ 3 and the scale that maps the largest near 448: unscaled, the results would be ~100x off.
    const kvC = randomTensor(rng, [tokens, rank], dtype, 3), kPe = randomTensor(rng, [tokens, width - rank], dtype, 3);
    const scale = Math.max(...kvC.dense.data.map(Math.abs), ...kPe.dense.data.map(Math.abs)) / 448;
    const fp8 = Tensor.zeros([2, blockSize, width], 'fp8_e4m3', { device: stream.device, scale });
    const bf = onDevice(Tensor.zeros([2, blockSize, width], dtype), stream);
    expect([fp8.scale, fp8.device, bf.scale]).toEqual([scale, stream.device, 1]);
    const slots = Array.from({ length: tokens }, (_, i) => i);
    for (const cache of [fp8, bf]) appendLatentCache({ cache, kvC: onDevice(kvC.t, stream), kPe: onDevice(kPe.t, stream), slotMapping: intTensor(slots), stream });
    // The bytes are e4m3(value / scale); toFloat32() gives them times the scale, here and after a copy to the host.
    const values = refAppendLatentCache({ cache: { data: new Float64Array(2 * blockSize * width), shape: [2, blockSize, width] }, kvC: kvC.dense, kPe: kPe.dense, slotMapping: { data: slots, shape: [tokens] } });
    expect(Array.from(await fp8.read()), `seed ${seed}`).toEqual(Array.from(fp8Reference(values, scale)));
    const host = fp8.to('cpu');
    expect(host.scale).toBe(scale);
    const dequantised = await host.toFloat32();
    expect(Array.from(await fp8.toFloat32())).toEqual(Array.from(dequantised));
    expect(Array.from(dequantised.subarray(0, 8))).toEqual(Array.from(fp8Reference(values, scale).subarray(0, 8), (b) => Math.fround(fromFp8E4M3Bits(b) * Math.fround(scale))));
    // Decode on the fp8 cache: as the reference on its values, and near the same decode on the float cache.
    const q = randomTensor(rng, [1, 1, heads, width], dtype, 0.3);
    const decode = { q: onDevice(q.t, stream), blockTable: intTensor([0, 1], [1, 2]), seqLens: intTensor([tokens]), softmaxScale: 0.1, kvLoraRank: rank, stream };
    const got = await mlaDecode({ ...decode, cache: fp8 }).out.toFloat32();
    const ref = refMlaDecode({ ...decode, q: q.dense, cache: { data: Float64Array.from(dequantised), shape: fp8.shape }, blockTable: { data: [0, 1], shape: [1, 2] }, seqLens: { data: [tokens], shape: [1] } });
    expect(relErr(got, ref.out), `seed ${seed}`).toBeLessThan(REL_BOUND[dtype]);
    // e4m3 keeps 4 significant bits (relative rounding error <= 1/16 per value).
    expect(relErr(got, await mlaDecode({ ...decode, cache: bf }).out.toFloat32()), `seed ${seed}`).toBeLessThan(0.07);
    // Gather dequantises with the cache's scale: f32 rows are exactly the cache's values.
    const gathered = gatherLatentCache({ cache: fp8, blockTable: intTensor([0, 1], [1, 2]), cuSeqLens: intTensor([0, tokens]), kvLoraRank: rank, dtype: c.backend === 'cpu' ? 'f32' : dtype, stream });
    const gotC = await gathered.kvC.toFloat32();
    const wantC = Array.from({ length: tokens * rank }, (_, i) => dequantised[Math.floor(i / rank) * width + (i % rank)]);
    if (c.backend === 'cpu') expect(Array.from(gotC)).toEqual(wantC);
    else expect(relErr(gotC, wantC)).toBeLessThan(REL_BOUND[dtype]);

    // A copy between fp8 tensors of other scales would change every value: refused, nothing copied.
    const other = Tensor.from(new Uint8Array(fp8.numel).fill(0x38), fp8.shape, 'fp8_e4m3', { scale: scale * 2 });
    expectMlaError(() => fp8.copyFrom(other, { stream }), 'E_DTYPE', `copyFrom: src has scale ${scale * 2}, this tensor ${scale}`);
    expectMlaError(() => fp8.copyFrom(Tensor.from(new Uint8Array(fp8.numel), fp8.shape), { stream }), 'E_DTYPE', 'copyFrom: src has scale 1');
    expect(Array.from(await fp8.read())).toEqual(Array.from(fp8Reference(values, scale)));
    // The same scale copies.
    fp8.copyFrom(Tensor.from(new Uint8Array(fp8.numel).fill(0x38), fp8.shape, 'fp8_e4m3', { scale }), { stream });
    expect((await fp8.toFloat32())[0]).toBe(Math.fround(scale));
    // Only fp8 tensors have a scale.
    expectMlaError(() => Tensor.zeros([2], 'bf16', { device: stream.device, scale: 2 } as never), 'E_ARGUMENT', 'Tensor.zeros: scale applies to fp8_e4m3 tensors only, not bf16');
    expectMlaError(() => Tensor.empty([2], 'f32', { device: stream.device, scale: 2 } as never), 'E_ARGUMENT', 'scale applies to fp8_e4m3 tensors only, not f32');
    expectMlaError(() => Tensor.fromValues([1], [1], 'f16', { scale: 2 } as never), 'E_ARGUMENT', 'scale applies to fp8_e4m3 tensors only');
    stream.dispose();
  });

  it('misuse is refused, naming the argument', () => {
    const stream = setUp();
    const fp8Cache = onDevice(Tensor.zeros([2, 4, 32], 'fp8_e4m3'), stream);
    const bf16Cache = onDevice(Tensor.zeros([2, 4, 32], 'bf16'), stream);
    const kvC = onDevice(Tensor.zeros([1, 16], 'bf16'), stream);
    const kPe = onDevice(Tensor.zeros([1, 16], 'bf16'), stream);
    const slotMapping = intTensor([0]);
    // The scale is the cache's own: an option of that name is refused with where the scale goes.
    expectMlaError(() => appendLatentCache({ cache: fp8Cache, kvC, kPe, slotMapping, cacheScale: 2, stream } as never), 'E_ARGUMENT', "appendLatentCache: cacheScale is not an option: an fp8 cache carries its scale, given where it is made: Tensor.zeros(shape, 'fp8_e4m3', { scale })");
    expectMlaError(() => appendLatentCache({ cache: bf16Cache, kvC, kPe, slotMapping, cacheScale: 2, stream } as never), 'E_ARGUMENT', 'cacheScale is not an option');
    for (const bad of [0, -1, NaN, Infinity, 1e-50, '2'])
      expectMlaError(() => Tensor.zeros([2, 4, 32], 'fp8_e4m3', { device: stream.device, scale: bad as number }), 'E_RANGE', 'Tensor.zeros: scale must be a finite number > 0 in float32');
    expectMlaError(() => appendLatentCache({ cache: fp8Cache, kvC: onDevice(Tensor.zeros([1, 16], 'fp8_e4m3'), stream), kPe, slotMapping, stream }), 'E_DTYPE', 'kvC must be f32, f16 or bf16');
    const q = onDevice(Tensor.zeros([1, 1, 1, 32], 'fp8_e4m3'), stream);
    const decode = { cache: fp8Cache, blockTable: intTensor([0], [1, 1]), seqLens: intTensor([1]), softmaxScale: 1, kvLoraRank: 16, stream };
    expectMlaError(() => mlaDecode({ ...decode, q }), 'E_DTYPE', 'q must be f32, f16 or bf16');
    expectMlaError(() => mlaDecode({ ...decode, q: onDevice(Tensor.zeros([1, 1, 1, 32], 'bf16'), stream), cacheScale: 0.5 } as never), 'E_ARGUMENT', 'mlaDecode: cacheScale is not an option');
    expectMlaError(() => absorbQuery({ qNope: onDevice(Tensor.zeros([1, 1, 16], 'fp8_e4m3'), stream), wUk: onDevice(Tensor.zeros([1, 16, 16], 'fp8_e4m3'), stream), stream }), 'E_DTYPE', 'qNope');
    if (c.backend !== 'cpu') {
      // The CUDA kernels read and write fp8 caches against bf16 and f16 tensors only.
      const kvC32 = onDevice(Tensor.zeros([1, 16], 'f32'), stream);
      expectMlaError(() => appendLatentCache({ cache: fp8Cache, kvC: kvC32, kPe: onDevice(Tensor.zeros([1, 16], 'f32'), stream), slotMapping, stream }), 'E_UNSUPPORTED', 'kvC is f32');
    }
    stream.dispose();
  });
});

describe.runIf(suiteBackends().some((b) => b.name === 'cuda-sim' && b.available))('fp8 decode under cuda-sim', () => {
  it('reads every e4m3 value exactly, into bf16 and f16: by bit operations in place (sm_80, sm_86: a NaN byte reads as +-480), by cvt.rn.f16x2.e4m3x2 in registers (sm_89+: NaN)', async () => {
    const rank = 256, width = rank + 16;
    const row = new Uint8Array(width);
    for (let b = 0; b < 256; b++) row[b] = b;
    const noNaN = row.map((b) => ((b & 0x7f) === 0x7f ? 0 : b));
    const stream = new Stream('cuda-sim');
    try {
      for (const [computeCapability, nan] of [[86, 480], [90, NaN]] as const) {
        addon.simConfigure!({ splitRows: 0, checkOrders: true, computeCapability });
        for (const bytes of nan === 480 ? [row] : [row, noNaN]) {
          const cache = onDevice(Tensor.from(bytes, [1, 1, width], 'fp8_e4m3'), stream);
          // A NaN in sm_89+'s K makes every logit NaN (as on the CPU backend), so every output is NaN: then the output
          // starts as zeros instead of the (NaN) poison.
          const hasNaN = bytes.some((b) => (b & 0x7f) === 0x7f);
          for (const dtype of ['bf16', 'f16'] as const) {
            const out = onDevice(Number.isNaN(nan) && hasNaN ? Tensor.zeros([1, 1, 1, rank], dtype) : poisoned([1, 1, 1, rank], dtype), stream);
            // One cache row: softmax weight 1, so the output is the row's first kvLoraRank values (times the cache's scale, 1).
            mlaDecode({ q: onDevice(Tensor.zeros([1, 1, 1, width], dtype), stream), cache, blockTable: intTensor([0], [1, 1]), seqLens: intTensor([1]), softmaxScale: 1, kvLoraRank: rank, out, stream });
            const got = await out.toFloat32();
            for (let b = 0; b < 256; b++) {
              const want = Number.isNaN(nan) && hasNaN ? NaN : (bytes[b] & 0x7f) === 0x7f ? (bytes[b] & 0x80 ? -nan : nan) : fromFp8E4M3Bits(bytes[b]);
              expect(Object.is(got[b], want) || got[b] === want, `sm_${computeCapability} ${dtype}: byte 0x${bytes[b].toString(16)} read as ${got[b]}, want ${want}`).toBe(true); // (-0 sums to +0)
            }
          }
        }
      }
    } finally {
      addon.simConfigure!({ splitRows: 0, checkOrders: true, computeCapability: 0 });
      stream.dispose();
    }
  });


  it('reads half the cache bytes of a bf16 cache', async () => {
    addon.simConfigure!({ splitRows: 0, checkOrders: false });
    const rng = new Rng(seed + 3);
    const stream = new Stream('cuda-sim');
    const heads = 16, width = 576, rank = 512, len = 256, blockSize = 64;
    const q = onDevice(randomTensor(rng, [1, 1, heads, width], 'bf16').t, stream);
    const read: Record<string, number> = {};
    for (const dtype of ['bf16', 'fp8_e4m3'] as const) {
      const cache = onDevice(dtype === 'bf16' ? randomTensor(rng, [4, blockSize, width], 'bf16').t : Tensor.from(toFp8E4M3Array(rng.normal(4 * blockSize * width)), [4, blockSize, width]), stream);
      mlaDecode({ q, cache, blockTable: intTensor([0, 1, 2, 3], [1, 4]), seqLens: intTensor([len]), softmaxScale: 0.04, kvLoraRank: rank, stream });
      await stream.synchronize();
      read[dtype] = addon.simLastOp!().bytesRead;
    }
    const cacheBytesBf16 = len * width * 2;
    expect(read.bf16).toBeGreaterThanOrEqual(cacheBytesBf16);
    expect(read.bf16 - read.fp8_e4m3).toBeGreaterThanOrEqual(0.99 * (cacheBytesBf16 / 2));
    stream.dispose();
  });
});
