// The CPU backend's SIMD paths: the shared correctness suite (test/conformance/ops.test.ts) and the prefill suite
// (test/conformance/prefill.test.ts) run once per path this processor has, forced with MLA_CPU_ISA in a child vitest
// (paths it lacks are skipped, saying so); plus directed checks in this process, forced with the cpuConfigure() hook:
// split-KV merges (forced small chunks), DeepSeek sizes (576 = 512 + 64, 16 and 128 heads, the bf16 dot-product
// kernel's fast path), causal multi-token queries, concurrent streams on the shared thread pool, and refusal of an
// unknown path.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { appendLatentCache, info, mlaDecode, MlaError, planDecode, Stream, Tensor } from 'mla-kernels';
import { fromBf16Bits, fromF16Bits, toBf16Bits, toF16Bits } from '../../lib/half.js';
import { native } from '../../lib/native.js';
import { refMlaDecode } from '../../lib/reference.js';
import { dense, intTensor, randomTensor, REL_BOUND, relErr, Rng, testSeed } from '../helpers.js';

const seed = testSeed('cpu-isa');
const ALL = ['avx512-bf16', 'avx512', 'avx2-fma', 'neon', 'portable'] as const;
const addon = native() as Required<Pick<ReturnType<typeof native>, 'cpuInfo' | 'cpuConfigure'>>;
const cpu = addon.cpuInfo() as { simd: string; supported: string[]; threads: number };
const root = path.resolve(__dirname, '..', '..');

afterAll(() => addon.cpuConfigure({ isa: '', splitRows: 0 }));

it('info() names the CPU path and thread count', () => {
  const i = info();
  expect(ALL as readonly string[]).toContain(i.cpu.simd);
  expect(cpu.supported).toContain('portable');
  expect(cpu.threads).toBeGreaterThanOrEqual(1);
});

it('an unknown or unsupported path is refused with a clear error', () => {
  expect(() => addon.cpuConfigure({ isa: 'sse9' })).toThrow(/unknown CPU path 'sse9'/);
  for (const isa of ALL.filter((x) => !cpu.supported.includes(x)))
    expect(() => addon.cpuConfigure({ isa })).toThrow(MlaError);
});

// MLA_ISA_PREFILL=0 (npm test's ASan run) leaves the prefill suite out of the children: ASan runs it on the
// chosen path in test/conformance/, and the plain run on every path.
const childSuites = ['test/conformance/ops.test.ts', ...(process.env.MLA_ISA_PREFILL === '0' ? [] : ['test/conformance/prefill.test.ts'])];

// MLA_ISA_CHOSEN_COVERED=1 (npm test, whose runs hold test/conformance/ too): the path this processor chooses
// already runs those suites in the same run, so its child would only repeat them.
const chosenCovered = process.env.MLA_ISA_CHOSEN_COVERED === '1';

describe(`${childSuites.join(' and ')} on every SIMD path`, () => {
  for (const isa of ALL) {
    if (!cpu.supported.includes(isa)) {
      it.skip(`${isa}: this processor lacks it (it has ${cpu.supported.join(', ')})`, () => {});
      continue;
    }
    if (chosenCovered && isa === cpu.simd) {
      it.skip(`${isa}: the path this processor chooses, which test/conformance/ runs in this same vitest run`, () => {});
      continue;
    }
    it(`${isa}: ${childSuites.map((f) => path.basename(f, '.test.ts')).join(' and ')} pass with MLA_CPU_ISA=${isa}`, () => {
      const out = path.join(root, 'test', '.tmp', `isa-${isa}.json`);
      mkdirSync(path.dirname(out), { recursive: true });
      const r = spawnSync(process.execPath, [path.join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', ...childSuites, '--reporter=json', `--outputFile.json=${out}`], {
        cwd: root,
        env: { ...process.env, MLA_CPU_ISA: isa, MLA_TEST_BACKENDS: 'cpu', MLA_TEST_SEED: String(seed) },
        encoding: 'utf8',
      });
      const report = JSON.parse(readFileSync(out, 'utf8')) as { numPassedTests: number; numFailedTests: number; testResults: { assertionResults: { status: string; fullName: string; failureMessages: string[] }[] }[] };
      const failures = report.testResults.flatMap((f) => f.assertionResults.filter((a) => a.status === 'failed').map((a) => `${a.fullName}: ${a.failureMessages[0]?.slice(0, 400)}`));
      expect(failures, `${isa} (seed ${seed})`).toEqual([]);
      expect(r.status, r.stderr.slice(-2000)).toBe(0);
      expect(report.numPassedTests).toBeGreaterThan(10);
    }, 300_000);
  }
});

async function checkDecode(stream: Stream, rng: Rng, o: { dtype: 'f32' | 'bf16' | 'f16'; heads: number; lens: number[]; queryLen: number; kvLoraRank: number; ropeDim: number; blockSize: number }) {
  const width = o.kvLoraRank + o.ropeDim;
  const maxBlocks = Math.max(1, ...o.lens.map((l) => Math.ceil(l / o.blockSize)));
  const numBlocks = o.lens.length * maxBlocks;
  const ids = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const cache = randomTensor(rng, [numBlocks, o.blockSize, width], o.dtype);
  const q = randomTensor(rng, [o.lens.length, o.queryLen, o.heads, width], o.dtype);
  const blockTable = intTensor(ids, [o.lens.length, maxBlocks]);
  const seqLens = intTensor(o.lens);
  const softmaxScale = 1 / Math.sqrt(192);
  const causal = o.queryLen > 1;
  const { out, lse } = mlaDecode({ q: q.t, cache: cache.t, blockTable, seqLens, softmaxScale, kvLoraRank: o.kvLoraRank, causal, stream });
  const ref = refMlaDecode({ q: q.dense, cache: cache.dense, blockTable: dense(blockTable), seqLens: dense(seqLens), softmaxScale, kvLoraRank: o.kvLoraRank, causal });
  const what = `${JSON.stringify(o)} (seed ${seed})`;
  expect(relErr(await out.toFloat32(), ref.out), what).toBeLessThanOrEqual(REL_BOUND[o.dtype]);
  const l = await lse.toFloat32();
  for (let i = 0; i < l.length; i++)
    if (ref.lse[i] === -Infinity) expect(l[i], what).toBe(-Infinity);
    else expect(Math.abs(l[i] - ref.lse[i]), `lse[${i}] ${what}`).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(ref.lse[i])));
}

describe('directed decode checks per path', () => {
  for (const isa of ALL) {
    if (!cpu.supported.includes(isa)) {
      it.skip(`${isa}: this processor lacks it`, () => {});
      continue;
    }
    it(`${isa}: split-KV merge, DeepSeek sizes, causal queries, bf16 / f16 / f32`, async () => {
      addon.cpuConfigure({ isa });
      const stream = new Stream('cpu');
      const rng = new Rng(seed + ALL.indexOf(isa));
      try {
        for (const splitRows of [0, 7, 64]) {
          addon.cpuConfigure({ splitRows });
          await checkDecode(stream, rng, { dtype: 'bf16', heads: 16, lens: [200, 0, 131], queryLen: 1, kvLoraRank: 512, ropeDim: 64, blockSize: 64 });
          await checkDecode(stream, rng, { dtype: 'bf16', heads: 16, lens: [150, 3], queryLen: 2, kvLoraRank: 512, ropeDim: 64, blockSize: 16 });
          await checkDecode(stream, rng, { dtype: 'f32', heads: 5, lens: [97, 40], queryLen: 3, kvLoraRank: 40, ropeDim: 8, blockSize: 3 });
          await checkDecode(stream, rng, { dtype: 'f16', heads: 3, lens: [77], queryLen: 1, kvLoraRank: 33, ropeDim: 6, blockSize: 5 });
          // bf16 tiles are converted in split order where the widths allow (per path: 576/512 always, 48/40 on some)
          await checkDecode(stream, rng, { dtype: 'bf16', heads: 3, lens: [77, 140], queryLen: 2, kvLoraRank: 40, ropeDim: 8, blockSize: 5 });
          // f32 tiles read in place from the cache when their rows are contiguous (blocks of 32 may or may not be)
          await checkDecode(stream, rng, { dtype: 'f32', heads: 16, lens: [200, 0, 131], queryLen: 2, kvLoraRank: 512, ropeDim: 64, blockSize: 32 });
        }
        addon.cpuConfigure({ splitRows: 0 });
        await checkDecode(stream, rng, { dtype: 'bf16', heads: 128, lens: [260], queryLen: 2, kvLoraRank: 512, ropeDim: 64, blockSize: 64 });
        await checkDecode(stream, rng, { dtype: 'f32', heads: 128, lens: [70], queryLen: 1, kvLoraRank: 512, ropeDim: 64, blockSize: 64 });
      } finally {
        addon.cpuConfigure({ isa: '', splitRows: 0 });
        stream.dispose();
      }
    });
  }

  it('several streams share the thread pool at once', async () => {
    addon.cpuConfigure({ splitRows: 32 });
    const streams = [new Stream('cpu'), new Stream('cpu'), new Stream('cpu')];
    try {
      await Promise.all(streams.map((s, i) => checkDecode(s, new Rng(seed + 10 + i), { dtype: 'bf16', heads: 16, lens: [300, 120], queryLen: 1, kvLoraRank: 512, ropeDim: 64, blockSize: 64 })));
    } finally {
      addon.cpuConfigure({ splitRows: 0 });
      for (const s of streams) s.dispose();
    }
  });
});

// Append's two store kinds (non-temporal and plain; the automatic choice is a calibration per path): the same rows in
// either, runs of consecutive slots and single rows, padding slots (-1) skipped, a cache that is not 64-byte aligned,
// and the slots not named keep their poison. 1100 rows of 576 bf16 write 1.2 MiB, above the size from which
// non-temporal stores may be chosen.
describe('append on every path, with each store kind', () => {
  it('refuses an unknown store kind and reports the automatic one', () => {
    expect(() => addon.cpuConfigure({ appendStores: 'sideways' as 'auto' })).toThrow(/appendStores must be/);
    const i = addon.cpuInfo() as { appendStores: string; streamAboveBytes: number };
    expect(i.appendStores).toMatch(/^(non-temporal from \d+ KiB written, regular below|regular at every size) \(calibrated/);
    expect(typeof i.streamAboveBytes).toBe('number');
  });
  for (const isa of cpu.supported) {
    // kvLoraRank 512: rows of whole 64-byte lines, written straight from kvC and kPe; 500: rows built in a staging buffer.
    for (const kv of [512, 500])
    it(`${isa}: stream, regular and auto stores write the same rows (kvLoraRank ${kv})`, async () => {
      const rng = new Rng(seed + 40);
      const width = kv + 64, tokens = 1100, slotsN = 1300;
      const kvC = new Uint16Array(tokens * kv), kPe = new Uint16Array(tokens * 64);
      for (let i = 0; i < kvC.length; i++) kvC[i] = (rng.next() * 65536) & 0x7f7f;
      for (let i = 0; i < kPe.length; i++) kPe[i] = (rng.next() * 65536) & 0x7f7f;
      // Runs of consecutive slots in shuffled order, with a padding token now and then.
      const slots = new Int32Array(tokens);
      for (let i = 0; i < tokens; i++) slots[i] = i % 97 === 5 ? -1 : (i * 7 + (i >> 6) * 13) % slotsN;
      const seen = new Set<number>();
      for (let i = 0; i < tokens; i++) if (slots[i] >= 0) { while (seen.has(slots[i])) slots[i] = (slots[i] + 1) % slotsN; seen.add(slots[i]); }
      const stream = new Stream('cpu');
      addon.cpuConfigure({ isa });
      try {
        for (const appendStores of ['stream', 'regular', 'auto'] as const) {
          addon.cpuConfigure({ appendStores });
          // Shared memory is wrapped without a copy; one element of offset: the rows start 2 bytes past a 64-byte boundary.
          const backing = new Uint16Array(new SharedArrayBuffer((slotsN * width + 1) * 2)).fill(0xffff);
          const cacheArr = backing.subarray(1);
          const cache = Tensor.from(cacheArr, [slotsN, 1, width], 'bf16');
          appendLatentCache({ cache, kvC: Tensor.from(kvC, [tokens, kv], 'bf16'), kPe: Tensor.from(kPe, [tokens, 64], 'bf16'), slotMapping: Tensor.from(slots, [tokens]), stream });
          await stream.synchronize();
          const got = (await cache.read()) as Uint16Array;
          const want = new Uint16Array(slotsN * width).fill(0xffff);
          for (let i = 0; i < tokens; i++) {
            if (slots[i] < 0) continue;
            want.set(kvC.subarray(i * kv, (i + 1) * kv), slots[i] * width);
            want.set(kPe.subarray(i * 64, (i + 1) * 64), slots[i] * width + kv);
          }
          let bad = -1;
          for (let i = 0; i < want.length && bad < 0; i++) if (got[i] !== want[i]) bad = i;
          expect(bad, `${isa}, kvLoraRank ${kv}, ${appendStores} stores: first wrong element (seed ${seed})`).toBe(-1);
          expect(backing[0]).toBe(0xffff);
        }
      } finally {
        addon.cpuConfigure({ isa: '', appendStores: 'auto' });
        stream.dispose();
      }
    });
  }
});

// RoPE on every path (AVX-512 rotates interleaved pairs with a kernel of its own where the rope width is a multiple of
// 16): each rotated value within a rounding to its dtype of the float64 rotation of the same inputs.
const ROPE_DTYPES = [
  { dtype: 'bf16' as const, rel: 2 ** -8, Ctor: Uint16Array, enc: toBf16Bits, dec: fromBf16Bits },
  { dtype: 'f16' as const, rel: 2 ** -11, Ctor: Uint16Array, enc: toF16Bits, dec: fromF16Bits },
  { dtype: 'f32' as const, rel: 2 ** -23, Ctor: Float32Array, enc: Math.fround, dec: (x: number) => x },
];
describe('append RoPE on every path', () => {
  for (const isa of cpu.supported)
    it(`${isa}: interleaved and neox RoPE of f32, bf16 and f16 rows (rope widths 64 and 24, direct and staged rows)`, async () => {
      const rng = new Rng(seed + 41);
      const stream = new Stream('cpu');
      addon.cpuConfigure({ isa });
      try {
        for (const d of ROPE_DTYPES)
          for (const style of ['interleaved', 'neox'] as const)
            for (const [kv, ropeDim] of [[512, 64], [40, 24]]) {
              const width = kv + ropeDim, half = ropeDim / 2, tokens = 120, maxPos = 50;
              const stored = (n: number) => d.Ctor.from({ length: n }, () => d.enc((rng.next() - 0.5) * 4));
              const kvC = stored(tokens * kv), kPe = stored(tokens * ropeDim);
              const angle = Float64Array.from({ length: maxPos * half }, () => rng.next() * 2 * Math.PI);
              const cos = Float32Array.from(angle, Math.cos), sin = Float32Array.from(angle, Math.sin);
              const positions = Int32Array.from({ length: tokens }, () => rng.int(0, maxPos - 1));
              const cache = Tensor.zeros([tokens, 1, width], d.dtype);
              appendLatentCache({ cache, kvC: Tensor.from(kvC, [tokens, kv], d.dtype), kPe: Tensor.from(kPe, [tokens, ropeDim], d.dtype), slotMapping: intTensor(Array.from({ length: tokens }, (_, i) => i)),
                rope: { positions: Tensor.from(positions, [tokens]), cos: Tensor.from(cos, [maxPos, half]), sin: Tensor.from(sin, [maxPos, half]), style }, stream });
              const got = (await cache.read()) as Uint16Array | Float32Array;
              for (let t = 0; t < tokens; t++)
                for (let j = 0; j < half; j++) {
                  const [ia, ib] = style === 'interleaved' ? [2 * j, 2 * j + 1] : [j, j + half];
                  const a = d.dec(kPe[t * ropeDim + ia]), b = d.dec(kPe[t * ropeDim + ib]);
                  const c = cos[positions[t] * half + j], s = sin[positions[t] * half + j];
                  const want = [a * c - b * s, b * c + a * s];
                  [ia, ib].forEach((i, k) => {
                    const v = d.dec(got[t * width + kv + i]);
                    const tol = d.rel * Math.abs(want[k]) + 2 ** -22 * (Math.abs(a) + Math.abs(b));
                    expect(Math.abs(v - want[k]), `${isa} ${d.dtype} ${style} ropeDim ${ropeDim} token ${t} value ${i} (seed ${seed})`).toBeLessThanOrEqual(tol);
                  });
                }
              expect(Array.from(got.subarray(0, kv))).toEqual(Array.from(kvC.subarray(0, kv)));
            }
      } finally {
        addon.cpuConfigure({ isa: '' });
        stream.dispose();
      }
    });
});

// Streamed appends write a run of consecutive slots line by line (AVX-512 and AVX2, bf16 and f32 rows: each 64- or
// 32-byte unit two source vectors shifted to the cache's alignment, RoPE in registers; else the lines around each
// row's RoPE part assembled in L1); these runs start and end at every alignment a typed array may have (offsets below
// and above half of AVX2's 32-byte unit included), break at gaps, -1 slots and task boundaries (a task is ~256 KiB of
// rows), and must leave every byte outside their rows as it was.
describe('streamed runs of consecutive slots', () => {
  for (const isa of cpu.supported)
    it(`${isa}: streamed rows with interleaved RoPE and without RoPE (bf16, f16 and f32) equal the regular stores' rows, at every cache alignment`, async () => {
      const rng = new Rng(seed + 42);
      const stream = new Stream('cpu');
      addon.cpuConfigure({ isa });
      try {
        for (const [dtype, kv, offsets] of [['bf16', 512, [0, 1, 3, 8, 11, 24, 31]], ['f32', 512, [0, 3, 5, 12]], ['bf16', 500, [0, 5]], ['f16', 512, [0, 7]]] as const) {
          const Ctor = dtype === 'f32' ? Float32Array : Uint16Array, width = kv + 64, tokens = 700, slotsN = 900, maxPos = 64;
          const stored = (n: number) => Ctor.from({ length: n }, () => (dtype === 'f32' ? Math.fround(rng.next() - 0.5) : dtype === 'f16' ? toF16Bits(rng.next() - 0.5) : toBf16Bits(rng.next() - 0.5)));
          const kvC = stored(tokens * kv), kPe = stored(tokens * 64);
          // Chunks of consecutive slots (lengths 1 to 300) in shuffled order, a gap of 1-3 slots and a -1 token now and then.
          const chunks: number[][] = [];
          for (let slot = 0, t = 0; t < tokens;) {
            const chunk: number[] = [];
            for (let n = rng.int(1, 300); n > 0 && t < tokens; n--, t++) {
              if (rng.next() < 0.01) { chunk.push(-1); continue; }
              if (rng.next() < 0.01) slot += rng.int(1, 3);
              chunk.push(slot++);
            }
            chunks.push(chunk);
          }
          for (let i = chunks.length - 1; i > 0; i--) { const j = rng.int(0, i); [chunks[i], chunks[j]] = [chunks[j], chunks[i]]; }
          const slots = Int32Array.from(chunks.flat());
          expect(Math.max(...slots)).toBeLessThan(slotsN);
          const angle = Float64Array.from({ length: maxPos * 32 }, () => rng.next() * 2 * Math.PI);
          const rope = { positions: Tensor.from(Int32Array.from({ length: tokens }, () => rng.int(0, maxPos - 1)), [tokens]),
            cos: Tensor.from(Float32Array.from(angle, Math.cos), [maxPos, 32]), sin: Tensor.from(Float32Array.from(angle, Math.sin), [maxPos, 32]), style: 'interleaved' as const };
          for (const offset of offsets) for (const rotate of [true, false]) {
            const poison = dtype === 'f32' ? NaN : 0xffff;
            const results: Record<string, Uint16Array | Float32Array> = {};
            for (const appendStores of ['regular', 'stream'] as const) {
              addon.cpuConfigure({ appendStores });
              const backing = new Ctor(new SharedArrayBuffer((slotsN * width + offset + 40) * Ctor.BYTES_PER_ELEMENT)).fill(poison);
              const cache = Tensor.from(backing.subarray(offset, offset + slotsN * width), [slotsN, 1, width], dtype);
              appendLatentCache({ cache, kvC: Tensor.from(kvC, [tokens, kv], dtype), kPe: Tensor.from(kPe, [tokens, 64], dtype), slotMapping: Tensor.from(slots, [tokens]), rope: rotate ? rope : undefined, stream });
              await stream.synchronize();
              results[appendStores] = backing;
            }
            const [regular, streamed] = [results.regular, results.stream];
            const written = new Uint8Array(slotsN);
            for (const s of slots) if (s >= 0) written[s] = 1;
            let bad = -1;
            const same = (a: number, b: number) => a === b || (Number.isNaN(a) && Number.isNaN(b));
            for (let i = 0; i < streamed.length && bad < 0; i++) {
              const slot = Math.floor((i - offset) / width);
              if (i < offset || slot >= slotsN || !written[slot]) { if (!same(streamed[i], poison)) bad = i; }
              else if (!same(streamed[i], regular[i])) bad = i;
            }
            expect(bad, `${isa} ${dtype} kvLoraRank ${kv} offset ${offset}${rotate ? '' : ' without RoPE'}: first wrong element (seed ${seed})`).toBe(-1);
            // The regular rows themselves: kvC exact, kPe exact without RoPE (rotated values are checked by the RoPE test above).
            for (let t = 0; t < tokens; t++) {
              if (slots[t] < 0) continue;
              const at = offset + slots[t] * width;
              if (!Array.from(kvC.subarray(t * kv, (t + 1) * kv)).every((x, c) => same(x, regular[at + c]))) expect.fail(`${isa} ${dtype} offset ${offset}: token ${t}'s kvC (seed ${seed})`);
              if (!rotate && !Array.from(kPe.subarray(t * 64, (t + 1) * 64)).every((x, c) => same(x, regular[at + kv + c]))) expect.fail(`${isa} ${dtype} offset ${offset} without RoPE: token ${t}'s kPe (seed ${seed})`);
            }
          }
        }
      } finally {
        addon.cpuConfigure({ isa: '', appendStores: 'auto' });
        stream.dispose();
      }
    });
});

// A batch-invariant plan splits each sequence by its own length only; the automatic split depends on the whole
// batch's rows (here: 8 chunks of 384 rows alone, 3 of 1000 in the batch), so without it the bits would differ.
it('a batch-invariant plan gives a sequence the same bits alone and batched with others, near the reference', async () => {
  const rng = new Rng(seed + 77);
  const stream = new Stream('cpu');
  const width = 80, rank = 64, heads = 16, block = 16, lens = [40, 3000, 5000];
  const blocksOf = lens.map((l) => Math.ceil(l / block));
  const maxBlocks = Math.max(...blocksOf);
  const cache = randomTensor(rng, [blocksOf.reduce((a, b) => a + b, 0), block, width], 'bf16');
  const qBits = Uint16Array.from({ length: 3 * heads * width }, () => toBf16Bits(rng.next() - 0.5));
  const tables: number[][] = [];
  for (let b = 0, next = 0; b < 3; b++) tables.push(Array.from({ length: maxBlocks }, (_, i) => (i < blocksOf[b] ? next++ : 0)));
  const decodeOf = async (batch: number[]) => {
    const q = Tensor.from(Uint16Array.from(batch.flatMap((b) => Array.from(qBits.subarray(b * heads * width, (b + 1) * heads * width)))), [batch.length, 1, heads, width], 'bf16');
    const seqLens = intTensor(batch.map((b) => lens[b]));
    const blockTable = intTensor(batch.flatMap((b) => tables[b]), [batch.length, maxBlocks]);
    const plan = planDecode({ seqLens, numHeads: heads, batchInvariant: true, stream });
    const bits = (await mlaDecode({ q, cache: cache.t, blockTable, seqLens, softmaxScale: 0.1, kvLoraRank: rank, plan, stream }).out.read()) as Uint16Array;
    const at = batch.indexOf(1) * heads * rank;
    return { bits: bits.slice(at, at + heads * rank), q, blockTable, seqLens };
  };
  try {
    const alone = await decodeOf([1]);
    const batched = await decodeOf([0, 1, 2]);
    expect(Buffer.compare(Buffer.from(alone.bits.buffer), Buffer.from(batched.bits.buffer)), `seed ${seed}`).toBe(0);
    const ref = refMlaDecode({ q: dense(alone.q), cache: cache.dense, blockTable: dense(alone.blockTable), seqLens: dense(alone.seqLens), softmaxScale: 0.1, kvLoraRank: rank });
    expect(relErr(Array.from(alone.bits, fromBf16Bits), ref.out), `seed ${seed}`).toBeLessThanOrEqual(REL_BOUND.bf16);
  } finally {
    stream.dispose();
  }
});
