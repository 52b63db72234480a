// DeepSeek GGUF files in the demo (demo/gguf.ts) and llama.cpp as an independent peer: tiny random deepseek2 GGUFs
// written here (dense; MoE as V3 has it, with YaRN; MoE as V2 has it, in the older attn_kv_b layout; bf16; Q8_0), read
// back exactly, then run through our runner (the MLA kernels on the CPU, demo/score.ts) and through llama.cpp
// (node-llama-cpp's prebuilt CPU binary, one child process per model load since llama.cpp aborts on some malformed
// files): next-token log-probs at every position of a 24-token sequence, ‖ours − llama.cpp‖ / ‖llama.cpp‖ per
// position within the dtype's bound (F32 weights: 1e-5, with llama.cpp's F32 KV cache and flash attention off; BF16:
// 1.2e-2), and the same next token everywhere.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIGS } from '../../demo/main.js';
import { readGgufModel, writeGgufModel, type WriteOptions } from '../../demo/gguf.js';
import { Weights, type ModelConfig } from '../../demo/model.js';
import type { MoeConfig } from '../../demo/moe.js';
import { scoreTokens } from '../../demo/score.js';
import { fromBf16Bits, fromF16Bits, toBf16Bits, toF16Bits } from '../../lib/index.js';
import { REL_BOUND, Rng, relErr, testSeed } from '../helpers.js';

const root = path.join(__dirname, '..', '..');
const dir = path.join(root, 'test', '.tmp', 'gguf');
mkdirSync(dir, { recursive: true });
const seed = testSeed('gguf.test.ts');
const rng = new Rng(seed);
const SEQ = 24;
const VOCAB = 384;

const V3_MOE: MoeConfig = { experts: 8, expertsUsed: 2, sharedExperts: 1, expertFfn: 32, denseLayers: 1, gating: 'sigmoid', normTopK: true, routedScale: 2.5, groups: 4, groupsUsed: 2, selectionBias: true };
const V2_MOE: MoeConfig = { experts: 6, expertsUsed: 2, sharedExperts: 2, expertFfn: 24, denseLayers: 0, gating: 'softmax', normTopK: false, routedScale: 16, groups: 0, groupsUsed: 0, selectionBias: false };

/**
 * A random model of the tiny shape with `over`, its norms drawn too (so swapping two of them shows), and the final
 * norm scaled so that the logits spread over about ±4 standard deviations' worth: a peaked next-token distribution
 * rather than a near-uniform one, with no probability below float32's range in llama.cpp's softmax.
 */
function model(over: Partial<ModelConfig>, opts: { tied?: boolean } = {}): Weights {
  const c: ModelConfig = { ...CONFIGS.tiny, vocab: VOCAB, dtype: 'f32', seed: rng.int(1, 2 ** 31), normEps: 1e-5, ...over };
  const drawn = new Weights(c);
  const w = opts.tied ? new Weights(c, { embed: drawn.embed, layers: drawn.layers, finalNorm: drawn.finalNorm, lmHead: drawn.embed }) : drawn;
  const norm = (a: Float32Array, scale = 1) => a.set(rng.normal(a.length, 0.3).map((x) => (1 + x) * scale));
  for (const lw of w.layers) for (const a of [lw.attnNorm, lw.mlpNorm, lw.kvNorm, lw.qNorm]) if (a) norm(a);
  const rowNorm = Math.sqrt(w.lmHead.reduce((s, x) => s + x * x, 0) / c.vocab);
  norm(w.finalNorm, 4 / rowNorm);
  return w;
}

function save(name: string, w: Weights, o: WriteOptions = {}): string {
  const file = path.join(dir, `${name}.gguf`);
  writeGgufModel(file, w, o);
  return file;
}

/** Every array of the weights, by a name saying where it is. */
function arrays(w: Weights): Map<string, Float32Array> {
  const m = new Map<string, Float32Array>([['embed', w.embed], ['finalNorm', w.finalNorm], ['lmHead', w.lmHead]]);
  w.layers.forEach((lw, l) => {
    for (const [k, v] of Object.entries(lw)) if (v instanceof Float32Array) m.set(`${l}.${k}`, v);
    for (const [k, v] of Object.entries(lw.moe ?? {})) if (v instanceof Float32Array) m.set(`${l}.moe.${k}`, v);
  });
  return m;
}

const halfRound = (x: number) => fromF16Bits(toF16Bits(x));

/** What a value becomes when stored as `type` (Q8_0 aside). */
const stored: Record<'f32' | 'f16' | 'bf16', (x: number) => number> = {
  f32: (x) => x,
  f16: halfRound,
  bf16: (x) => fromBf16Bits(toBf16Bits(x)),
};

// --- the llama.cpp peer, in child processes ---------------------------------------------------------------------

const peerScript = path.join(root, 'bench', 'llama-peer.mjs');

interface PeerRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  result?: Record<string, unknown>;
  stderr: string;
}

function parsePeer(status: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string): PeerRun {
  const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
  return { status, signal, result: line ? JSON.parse(line.slice(7)) : undefined, stderr };
}

/** The peer script in a child process, waited for (the probe, before any test is declared). */
function peerSync(args: string[]): PeerRun {
  const r = spawnSync(process.execPath, [peerScript, ...args], { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 << 20 });
  return parsePeer(r.status, r.signal, r.stdout ?? '', r.stderr ?? '');
}

/** The peer script in a child process, running while this process computes its own side. */
function peer(args: string[]): Promise<PeerRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [peerScript, ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
    let out = '', err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (status, signal) => resolve(parsePeer(status, signal, out, err)));
  });
}

const probe = peerSync(['probe']);
const llamaReason = probe.result?.ok ? null : `node-llama-cpp's binary does not load here: ${String(probe.result?.reason ?? `exit ${probe.status} ${probe.signal ?? ''} ${probe.stderr.slice(-500)}`)}`;
if (llamaReason) console.log(`[gguf.test.ts] llama.cpp peer tests skipped: ${llamaReason}`);
else console.log(`[gguf.test.ts] llama.cpp peer: ${JSON.stringify(probe.result)}`);

/** llama.cpp's log-probs for a file, one child per file (a second comparison on the same file reuses them). */
const llamaRuns = new Map<string, { tokens: number[]; logProbs: Promise<number[][]> }>();
function llamaLogProbs(file: string): { tokens: number[]; logProbs: Promise<number[][]> } {
  let run = llamaRuns.get(file);
  if (!run) {
    const tokens = Array.from({ length: SEQ }, () => rng.int(0, VOCAB - 1));
    const logProbs = peer(['logprobs', file, tokens.join(',')]).then((r) => {
      expect(r.result, `llama.cpp on ${file}: exit ${r.status} ${r.signal ?? ''}\n${r.stderr.slice(-2000)}`).toBeDefined();
      return r.result!.logProbs as number[][];
    });
    llamaRuns.set(file, (run = { tokens, logProbs }));
  }
  return run;
}

function perHeadTranspose(a: Float32Array, heads: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let h = 0; h < heads; h++) for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[h * rows * cols + c * rows + r] = a[h * rows * cols + r * cols + c];
  return out;
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/**
 * Our log-probs (prefill and decode) against llama.cpp's at every position: returns the worst relative error. The
 * next token must agree everywhere, except where llama.cpp's own top two log-probs are within `tie` (relative) of each
 * other, closer than the two computations' rounding can tell apart (printed): 1e-5 with F32 weights, twice the
 * bf16 bound with BF16 weights (llama.cpp rounds the activations to bf16 in those products).
 */
async function compare(label: string, file: string, dtype: 'f32' | 'bf16', bound: number, tie: number): Promise<number> {
  const run = llamaLogProbs(file);
  const tokens = run.tokens;
  const { weights } = await readGgufModel(file, { dtype, blockSize: 4 });
  const mine = { prefill: await scoreTokens(weights, tokens, 'cpu', 'prefill'), decode: await scoreTokens(weights, tokens, 'cpu', 'decode') };
  const ref = await run.logProbs;
  expect(ref).toHaveLength(SEQ);
  for (const row of ref) expect(row.every((x) => typeof x === 'number' && Number.isFinite(x)), 'a probability from llama.cpp underflowed to 0').toBe(true);
  let worst = 0;
  for (const mode of ['prefill', 'decode'] as const) {
    const ours = mine[mode];
    const errs = ours.map((row, t) => relErr(row, ref[t]));
    worst = Math.max(worst, ...errs);
    let agree = 0;
    ours.forEach((row, t) => {
      const a = argmax(row), b = argmax(ref[t]);
      const sorted = [...ref[t]].sort((x, y) => y - x);
      if (a === b) agree++;
      else if (sorted[0] - sorted[1] <= tie * Math.abs(sorted[0])) console.log(`[gguf.test.ts] ${label} ${mode} position ${t}: next token ${a} vs llama.cpp ${b} (its top two differ by ${(sorted[0] - sorted[1]).toExponential(2)})`);
      else expect.fail(`${label} ${mode}: position ${t} picks ${a}, llama.cpp ${b} (log-probs ${row[a]} / ${ref[t][b]})`);
    });
    console.log(`[gguf.test.ts] ${label} ${mode}: max rel err of the log-probs ${Math.max(...errs).toExponential(2)} (bound ${bound}), next token agrees ${agree}/${SEQ}`);
    expect(Math.max(...errs), `${label} ${mode}`).toBeLessThanOrEqual(bound);
    // Every position was compared with real numbers.
    for (const row of ours) expect(row.every(Number.isFinite)).toBe(true);
  }
  return worst;
}

describe('GGUF files: write, read back', () => {
  it('F32 round-trips exactly: dense (q_lora path), MoE (V3 routing, fused gate/up) and V2 MoE in the attn_kv_b layout with tied embeddings', async () => {
    for (const [name, w, o] of [
      ['rt-dense', model({ qLoraRank: 24 }), {}],
      ['rt-moe3', model({ layers: 3, moe: V3_MOE, ropeScaling: { type: 'yarn', factor: 40, originalContext: 4096, yarnLogMultiplier: 0.707, attnFactor: 1 } }), { fuseGateUp: true }],
      ['rt-moe2', model({ moe: V2_MOE }, { tied: true }), { layout: 'kv_b' }],
    ] as [string, Weights, WriteOptions][]) {
      const file = save(name, w, o);
      const { weights: back, info } = await readGgufModel(file, { dtype: 'f32', blockSize: 4 });
      // Float keys are stored as f32 (and YaRN's multiplier times 0.1).
      const { normEps, ropeScaling, ...rest } = back.config;
      expect({ ...rest, seed: w.config.seed }).toEqual((({ normEps: _e, ropeScaling: _r, ...x }) => x)(w.config));
      expect(normEps).toBe(Math.fround(w.config.normEps!));
      if (w.config.ropeScaling) expect(ropeScaling!.yarnLogMultiplier).toBeCloseTo(w.config.ropeScaling.yarnLogMultiplier, 6);
      expect(info.layout).toBe(o.layout ?? 'split');
      const a = arrays(w), b = arrays(back);
      expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
      for (const [k, v] of a) expect(b.get(k), k).toEqual(v);
      if (name === 'rt-moe2') expect(back.lmHead).toBe(back.embed);
    }
  });

  it('F16, BF16 and Q8_0 tensors read back as their stored values (Q8_0: ggml blocks of 32, dequantised at load)', async () => {
    const w = model({ emb: 64, nopeDim: 32, kvLoraRank: 64, vHeadDim: 32, ffn: 128 });
    for (const type of ['f16', 'bf16'] as const) {
      const { weights: back, info } = await readGgufModel(save(`rt-${type}`, w, { tensorType: type }), { dtype: 'f32', blockSize: 4 });
      expect(info.tensorTypes[type.toUpperCase()]).toBeGreaterThan(0);
      const b = arrays(back);
      for (const [k, v] of arrays(w)) {
        const isVector = k.endsWith('Norm') || k === 'finalNorm';
        const want = isVector ? v : v.map(stored[type]);
        expect(b.get(k), `${type} ${k}`).toEqual(want);
      }
    }
    const { weights: q8, info } = await readGgufModel(save('rt-q8_0', w, { tensorType: 'q8_0' }), { dtype: 'f32', blockSize: 4 });
    expect(info.tensorTypes.Q8_0).toBeGreaterThan(0);
    const b = arrays(q8);
    for (let [k, v] of arrays(w)) {
      if (k.endsWith('Norm') || k === 'finalNorm') {
        expect(b.get(k)).toEqual(v);
        continue;
      }
      // Each block of 32 of the file's rows (W_uk's rows run along nope there, per head): one f16 scale
      // d = f16(amax/127); every value is d · an integer in [-127, 127], within d/2.
      const fileRows = (a: Float32Array) => (k.endsWith('.wUk') ? perHeadTranspose(a, w.config.heads, w.config.nopeDim, w.config.kvLoraRank) : a);
      const got = fileRows(b.get(k)!);
      v = fileRows(v);
      for (let i = 0; i < v.length; i += 32) {
        let amax = 0;
        for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(v[i + j]));
        const d = halfRound(Math.fround(amax / 127));
        for (let j = 0; j < 32; j++) {
          const q = got[i + j] / d;
          expect(Math.abs(q - Math.round(q)), k).toBeLessThan(1e-3);
          // Half a step, plus what the f16 rounding of the scale moves 127 steps by.
          expect(Math.abs(got[i + j] - v[i + j]), k).toBeLessThanOrEqual(d / 2 + 127 * Math.abs(d - Math.fround(amax / 127)) + amax * 1e-6);
        }
      }
    }
  });

  it('refuses, naming what is wrong: another architecture, a missing key or tensor, a truncated file, a model larger than memory, an unsupported type', async () => {
    const w = model({});
    const good = save('bad-base', w);
    const bytes = readFileSync(good);
    const variant = (name: string, edit: (b: Buffer) => Buffer) => {
      const file = path.join(dir, `${name}.gguf`);
      writeFileSync(file, edit(Buffer.from(bytes)));
      return file;
    };
    const rename = (from: string, to: string) => (b: Buffer) => {
      const i = b.indexOf(from);
      expect(i).toBeGreaterThan(0);
      b.write(to, i);
      return b;
    };
    const read = (file: string, limit?: number) => readGgufModel(file, { dtype: 'f32', blockSize: 4, memoryLimitBytes: limit });
    await expect(read(variant('bad-arch', rename('deepseek2', 'deepseek3')))).rejects.toThrow(/architecture 'deepseek3' is not deepseek2/);
    await expect(read(variant('bad-key', rename('deepseek2.rope.dimension_count', 'deepseek2.rope.dimension_cOunt')))).rejects.toThrow(/key deepseek2\.rope\.dimension_count is missing/);
    await expect(read(variant('bad-tensor', rename('blk.1.attn_v_b.weight', 'blk.1.attn_v_x.weight')))).rejects.toThrow(/tensor blk\.1\.attn_v_b\.weight is missing/);
    await expect(read(variant('bad-truncated', (b) => b.subarray(0, b.length - 4096)))).rejects.toThrow(/past the end of the file.*truncated/);
    await expect(read(variant('bad-magic', (b) => b.fill(0, 0, 4)))).rejects.toThrow(/not a readable GGUF file/);
    await expect(read(good, 1e5)).rejects.toThrow(/needs 0\.\d+ GB of memory as f32.*more than the limit given.*nothing was read/);
    // A tensor type the demo does not convert (Q4_0 = 2): the type field of token_embd's info.
    const typed = variant('bad-type', (b) => {
      const i = b.indexOf('token_embd.weight') + 'token_embd.weight'.length + 4 + 2 * 8;
      expect(b.readUInt32LE(i)).toBe(0);
      b.writeUInt32LE(2, i);
      return b;
    });
    await expect(read(typed)).rejects.toThrow(/token_embd\.weight is Q4_0; the demo reads F32, F16, BF16 and Q8_0/);
    expect(() => writeGgufModel(path.join(dir, 'small-vocab.gguf'), new Weights({ ...CONFIGS.tiny, dtype: 'f32', seed: 1 }))).toThrow(/at least 259 tokens/);
  });
});

describe.skipIf(!!llamaReason)('llama.cpp as the peer: next-token log-probs at every position of 24 tokens', () => {
  it('dense, F32 weights (q_lora path, split attn_k_b/attn_v_b): within 1e-5, the same next token everywhere', async () => {
    const file = save('peer-dense', model({ qLoraRank: 24, nopeDim: 24, ropeDim: 8, vHeadDim: 20, kvLoraRank: 48 }));
    await compare('dense f32', file, 'f32', REL_BOUND.f32, 1e-5);
  });

  it('MoE as DeepSeek-V3 (sigmoid gates, selection bias, 2 of 4 groups, normalised × 2.5, a shared expert, fused gate/up) with YaRN RoPE, F32', async () => {
    const w = model({ layers: 3, qLoraRank: 24, moe: V3_MOE, ropeScaling: { type: 'yarn', factor: 40, originalContext: 4096, yarnLogMultiplier: 0.707, attnFactor: 1 } });
    await compare('MoE V3 f32', save('peer-moe3', w, { fuseGateUp: true }), 'f32', REL_BOUND.f32, 1e-5);
  });

  it('MoE as DeepSeek-V2 (softmax gates, × 16, two shared experts, every layer MoE) in the older attn_kv_b layout, tied embeddings, F32', async () => {
    await compare('MoE V2 kv_b f32', save('peer-moe2', model({ moe: V2_MOE }, { tied: true }), { layout: 'kv_b' }), 'f32', REL_BOUND.f32, 1e-5);
  });

  it('BF16 weights, dense and MoE: within the bf16 bound, run in f32 and with bf16 kernels', async () => {
    const dense = save('peer-dense-bf16', model({ qLoraRank: 24 }), { tensorType: 'bf16' });
    await compare('dense bf16 (f32 kernels)', dense, 'f32', REL_BOUND.bf16, 2 * REL_BOUND.bf16);
    await compare('dense bf16 (bf16 kernels)', dense, 'bf16', REL_BOUND.bf16, 2 * REL_BOUND.bf16);
    // Every expert used: llama.cpp rounds the activations to bf16 in its bf16 products, and where two experts' gates
    // are that close, which one a token goes to is then a coin toss that moves the output by O(1). The F32 tests above
    // check the choosing; this one the bf16 experts.
    const allUsed: MoeConfig = { ...V2_MOE, experts: 4, expertsUsed: 4, routedScale: 1 };
    await compare('MoE bf16', save('peer-moe-bf16', model({ layers: 3, moe: allUsed }), { tensorType: 'bf16' }), 'f32', REL_BOUND.bf16, 2 * REL_BOUND.bf16);
  });

  it('Q8_0 weights: close to llama.cpp, which also rounds the activations to 8 bits in its Q8_0 products (bound 3e-2, next token not required)', async () => {
    const w = model({ emb: 64, nopeDim: 32, kvLoraRank: 64, vHeadDim: 32, ffn: 128 });
    await compare('dense q8_0', save('peer-q8_0', w, { tensorType: 'q8_0' }), 'f32', 3e-2, Infinity);
  });

  it('a file llama.cpp aborts on (no rope.dimension_count) kills only its child process; our reader names the key', async () => {
    const bytes = readFileSync(save('peer-bad', model({})));
    const i = bytes.indexOf('deepseek2.rope.dimension_count');
    bytes.write('deepseek2.rope.dimension_cOunt', i);
    const file = path.join(dir, 'peer-bad-key.gguf');
    writeFileSync(file, bytes);
    const r = await peer(['logprobs', file, '1,2,3']);
    expect(r.result).toBeUndefined();
    expect(r.status !== 0 || r.signal !== null).toBe(true);
    console.log(`[gguf.test.ts] llama.cpp on a file without rope.dimension_count: exit ${r.status} signal ${r.signal}: ${r.stderr.split('\n').filter((l) => /GGML_ASSERT|error|failed/i.test(l))[0] ?? ''}`);
    await expect(readGgufModel(file, { dtype: 'f32', blockSize: 4 })).rejects.toThrow(/rope\.dimension_count is missing/);
  });
});
