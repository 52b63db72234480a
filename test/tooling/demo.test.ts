// The demo (npm start): a tiny configuration of the MLA decoder on the addon beside the MHA one, in process
// (the TypeScript source) and as `npm start` runs it (demo/ compiled by tsc, then node demo/dist/main.js).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultBackend } from 'mla-kernels';
import { CONFIGS, parseArgs } from '../../demo/main.js';
import { runDemo, type DemoOptions } from '../../demo/run.js';
import { suiteBackends } from '../helpers.js';

const root = path.join(__dirname, '..', '..');

function tiny(over: Partial<DemoOptions> = {}, config: Partial<DemoOptions['config']> = {}): DemoOptions {
  return {
    config: { ...CONFIGS.tiny, dtype: 'f32', seed: 7, ...config },
    promptLens: [5, 11, 2],
    newTokens: [9, 4, 12],
    backend: 'cpu',
    mhaCompare: true,
    progress: false,
    ...over,
  };
}

async function run(o: DemoOptions): Promise<{ result: Awaited<ReturnType<typeof runDemo>>; text: string }> {
  const lines: string[] = [];
  const result = await runDemo({ ...o, print: (l) => lines.push(l) });
  return { result, text: lines.join('\n') };
}

describe('demo: MLA decoder on the addon vs the same model with an MHA cache', () => {
  it('generates every sequence its tokens, frees all blocks, and MLA and MHA logits agree (f32, plain query path)', async () => {
    const { result: r, text } = await run(tiny());
    expect(r.generated.map((g) => g.length)).toEqual([9, 4, 12]);
    for (const g of r.generated) for (const t of g) expect(t >= 0 && t < CONFIGS.tiny.vocab).toBe(true);
    expect(r.agreement?.pass, text).toBe(true);
    expect(r.agreement!.maxRelErr).toBeLessThanOrEqual(1e-5);
    expect(r.agreement!.steps).toBe(12); // prefill + 11 decode steps (the longest sequence)
    expect(r.agreement!.argmaxAgree).toBe(r.agreement!.argmaxTotal);
    // Cache bytes per token: MLA layers·(latent + rope)·4, MHA layers·heads·(nope + rope + v)·4.
    const c = CONFIGS.tiny;
    expect(r.mla.stats.cacheBytesPerToken).toBe(c.layers * (c.kvLoraRank + c.ropeDim) * 4);
    expect(r.mha!.stats.cacheBytesPerToken).toBe(c.layers * c.heads * (c.nopeDim + c.ropeDim + c.vHeadDim) * 4);
    expect(r.mla.decodeTokens).toBe(9 + 4 + 12 - 3);
    expect(r.mla.decodeTokensPerSecond).toBeGreaterThan(0);
    // Blocks of 4 tokens, taken as sequences grow and given back when they end. Sequence 1 (11 + 4) ends after
    // decode step 3 holding 14 tokens (4 blocks) while 0 and 2 hold 8 and 5 (2 + 2); then 0 and 2 grow to 13 each
    // (4 + 4) in the blocks 1 gave back: 8 at the peak, never the 11 that all three at full length would take.
    expect(r.mla.stats.peakBlocks).toBe(8);
    expect(r.mha!.stats.peakBlocks).toBe(8);
    expect(r.mla.stats.blocksInUse).toBe(0);
    expect(r.mha!.stats.blocksInUse).toBe(0);
    expect(text).toMatch(/MLA vs MHA logits: max rel err \S+ \(mean \S+\) over 12 steps, bound 0\.00001 \(f32\): PASS/);
    expect(text).toContain('decode tokens/s');
    expect(text).toContain('peak memory');
  });

  it('agrees in bf16 with the low-rank query path, block size 1 and a batch whose prompts differ a lot', async () => {
    const { result: r, text } = await run(tiny({ promptLens: [1, 17, 6, 3], newTokens: [5, 3, 6, 2] }, { dtype: 'bf16', qLoraRank: 24, blockSize: 1 }));
    expect(r.agreement?.pass, text).toBe(true);
    expect(r.agreement!.maxRelErr).toBeLessThanOrEqual(1.2e-2);
    expect(r.generated.map((g) => g.length)).toEqual([5, 3, 6, 2]);
  });

  it('runs on cuda-sim (the CUDA kernels under emulation, bf16 on the device) when this build has it', async (ctx) => {
    const sim = suiteBackends().find((b) => b.name === 'cuda-sim');
    if (!sim?.available) {
      console.log(`demo on cuda-sim skipped: ${sim?.reason ?? 'not in MLA_TEST_BACKENDS'}`);
      ctx.skip();
    }
    const { result: r, text } = await run(tiny({ backend: 'cuda-sim', promptLens: [5, 2], newTokens: [3, 2] }, { dtype: 'bf16' }));
    expect(r.device).toBe('cuda-sim:0');
    expect(r.agreement?.pass, text).toBe(true);
    expect(r.devicePeakBytes).toBeGreaterThan(0);
  });

  it('parses its options: --long is the seed configuration with 32768 new tokens and no MHA run', () => {
    const d = parseArgs([]).options;
    expect(d.backend).toBe(defaultBackend()); // cpu here; cuda where a GPU is available
    expect(d.config.dtype).toBe(d.backend === 'cpu' ? 'f32' : 'bf16');
    expect(d.mhaCompare).toBe(true);
    expect(d.promptLens).toHaveLength(4);
    const long = parseArgs(['--long']).options;
    expect(long.config).toMatchObject({ emb: 768, layers: 12, heads: 24, kvLoraRank: 192 });
    expect(long.newTokens).toEqual([32768]);
    expect(long.mhaCompare).toBe(false);
    const custom = parseArgs(['--config', 'tiny', '--batch', '5', '--prompt-lens', '3,4', '--new-tokens', '2', '--dtype', 'bf16', '--q-lora', '8', '--no-mha-compare']).options;
    expect(custom.promptLens).toEqual([3, 4, 3, 4, 3]);
    expect(custom.newTokens).toEqual([2, 2, 2, 2, 2]);
    expect(custom.config).toMatchObject({ dtype: 'bf16', qLoraRank: 8 });
    expect(custom.mhaCompare).toBe(false);
    expect(() => parseArgs(['--dtype', 'fp8'])).toThrow(/dtype/);
    expect(() => parseArgs(['--frobnicate'])).toThrow(/unknown option/);
  });

  it('npm start path: demo/ compiles (tsc -p demo/tsconfig.json) and node demo/dist/main.js runs, --help lists the options', () => {
    const tsc = spawnSync(path.join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'demo/tsconfig.json'], { cwd: root, encoding: 'utf8', env: process.env });
    expect(tsc.status, tsc.stdout + tsc.stderr).toBe(0);
    const main = path.join(root, 'demo', 'dist', 'main.js');
    const help = spawnSync(process.execPath, [main, '--help'], { cwd: root, encoding: 'utf8', env: process.env });
    expect(help.status, help.stderr).toBe(0);
    for (const opt of ['--layers', '--emb', '--heads', '--latent', '--batch', '--prompt-lens', '--new-tokens', '--dtype', '--device', '--mha-compare', '--long'])
      expect(help.stdout).toContain(opt);
    // The child loads the addon this test run uses: MLA_ADDON_PATH passes through in env.
    const r = spawnSync(process.execPath, [main, '--config', 'tiny', '--device', 'cpu', '--prompt-lens', '4,9', '--new-tokens', '6'], { cwd: root, encoding: 'utf8', env: process.env });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/MLA vs MHA logits: .*: PASS/);
    expect(r.stdout).toContain('generated (token ids, greedy):');
    expect(r.stderr).toContain('generating: 12/12 tokens');
  });
});
