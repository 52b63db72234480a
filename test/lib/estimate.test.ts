// The KV-cache estimator: the published example pinned to the digit, the DeepSeek presets against MLA.md, the
// CLI (in process and as the installed bin), and the SVG plot.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CACHE_DTYPE_BYTES, estimateCli, estimateKvCache, formatGB, plotKvCacheSvg, PRESETS } from 'mla-kernels/estimate';

const root = path.join(__dirname, '..', '..');
const published = { emb: 2048, heads: 24, layers: 48, kvHeads: 6, kvLoraRank: 1024, context: 8192, batch: 1, dtype: 'bf16' } as const;
const publishedArgs = ['--emb', '2048', '--heads', '24', '--layers', '48', '--kv-heads', '6', '--latent', '1024', '--context', '8192', '--batch', '1', '--dtype', 'bf16'];
const publishedLine = 'MHA 3.25 GB, GQA 0.81 GB, MQA 0.14 GB, MLA 0.81 GB; MHA/GQA 4.00×, MHA/MLA 4.03×; savings 75.00% (GQA) and 75.19% (MLA)';

function cli(args: string[]): { code: number; out: string } {
  const lines: string[] = [];
  const code = estimateCli(args, (t) => lines.push(t));
  return { code, out: lines.join('\n') };
}

describe('estimateKvCache', () => {
  it('reproduces the published example exactly (context 8192, emb 2048, 24 heads, 48 layers, 6 kv heads, latent 1024, bf16)', () => {
    const e = estimateKvCache(published);
    expect(e.options.headDim).toBe(86); // 2048 / 24 = 85.33, rounded up
    expect(e.options.ropeDim).toBe(0); // the example counts the latent alone
    expect(e.mha.totalBytes).toBe(2 * 24 * 86 * 48 * 8192 * 2); // 3,246,391,296
    expect(e.gqa.totalBytes).toBe(2 * 6 * 86 * 48 * 8192 * 2); // 811,597,824
    expect(e.mla.totalBytes).toBe(1024 * 48 * 8192 * 2); // 805,306,368
    expect(formatGB(e.mha.totalBytes)).toBe('3.25 GB');
    expect(formatGB(e.gqa.totalBytes)).toBe('0.81 GB');
    expect(formatGB(e.mla.totalBytes)).toBe('0.81 GB');
    expect(e.gqa.ratioVsMha.toFixed(2)).toBe('4.00');
    expect(e.mla.ratioVsMha.toFixed(2)).toBe('4.03'); // 4128 / 1024 = 4.03125
    expect((e.gqa.savingVsMha * 100).toFixed(2)).toBe('75.00');
    expect((e.mla.savingVsMha * 100).toFixed(2)).toBe('75.19'); // 1 − 1024 / 4128 = 0.751937…
    // A rope key beside the latent would change the ratio: the example has none.
    expect(estimateKvCache({ ...published, ropeDim: 64 }).mla.ratioVsMha.toFixed(2)).toBe('3.79');
  });

  it('presets follow MLA.md: 576 cached numbers per token and layer against 2·H·128, over 60 / 27 / 61 layers', () => {
    expect(Object.keys(PRESETS).sort()).toEqual(['deepseek-v2', 'deepseek-v2-lite', 'deepseek-v3']);
    const expected = { 'deepseek-v2': { heads: 128, layers: 60 }, 'deepseek-v2-lite': { heads: 16, layers: 27 }, 'deepseek-v3': { heads: 128, layers: 61 } } as const;
    for (const [name, want] of Object.entries(expected)) {
      const p = PRESETS[name];
      expect({ heads: p.heads, layers: p.layers, kvLoraRank: p.kvLoraRank, ropeDim: p.ropeDim, headDim: p.headDim }).toEqual({ ...want, kvLoraRank: 512, ropeDim: 64, headDim: 128 });
      const e = estimateKvCache({ ...p, context: 1, dtype: 'bf16' });
      expect(e.mla.bytesPerToken).toBe(1152 * p.layers); // MLA.md: 1,152 bytes per token and layer in bf16
      expect(e.mha.bytesPerToken).toBe(2 * p.heads * 128 * 2 * p.layers); // 65,536 per layer for 128 heads
    }
    const v3 = estimateKvCache({ ...PRESETS['deepseek-v3'], context: 8192 });
    expect(v3.mla.ratioVsMha.toFixed(1)).toBe('56.9'); // MLA.md: "57x less"
    expect(v3.mla.totalBytes).toBe(576 * 2 * 61 * 8192);
    expect(estimateKvCache({ ...PRESETS['deepseek-v2-lite'], context: 1 }).mla.ratioVsMha.toFixed(2)).toBe('7.11');
  });

  it('scales with batch, context and dtype; GQA and MQA follow their formulas', () => {
    const base = estimateKvCache({ ...published, batch: 1 });
    const big = estimateKvCache({ ...published, batch: 3, context: 1000, dtype: 'fp8_e4m3' });
    expect(big.mha.totalBytes).toBe(2 * 24 * 86 * 48 * 1000 * 3 * 1);
    expect(estimateKvCache({ ...published, dtype: 'f32' }).mla.totalBytes).toBe(2 * base.mla.totalBytes);
    expect(CACHE_DTYPE_BYTES).toEqual({ f32: 4, bf16: 2, f16: 2, fp8_e4m3: 1, int8: 1 });
    expect(base.mqa.elementsPerTokenLayer).toBe(2 * 86);
    expect(estimateKvCache({ heads: 64, headDim: 128, layers: 1, kvLoraRank: 8, context: 1 }).options.kvHeads).toBe(8); // default heads / 8
    expect(() => estimateKvCache({ ...published, kvHeads: 25 })).toThrow(/kvHeads/);
    expect(() => estimateKvCache({ heads: 4, layers: 1, kvLoraRank: 8, context: 1 })).toThrow(/headDim or emb/);
    expect(() => estimateKvCache({ ...published, dtype: 'fp4' as never })).toThrow(/dtype/);
  });
});

describe('mla-kernels estimate (CLI)', () => {
  it('prints the published example', () => {
    const r = cli(publishedArgs);
    expect(r.code).toBe(0);
    expect(r.out).toContain(publishedLine);
    expect(r.out).toContain('24 heads × head dim 86 (2048/24 rounded up)');
    expect(r.out).toMatch(/MHA \(24 heads\)\s+4,128\s+396,288\s+3,246,391,296\s+3\.25 GB\s+1\.00×\s+0\.00%/);
    expect(r.out).toMatch(/MLA \(1024\)\s+1,024\s+98,304\s+805,306,368\s+0\.81 GB\s+4\.03×\s+75\.19%/);
  });

  it('runs as the package bin (dist/cli.js estimate), and with no model options prints the three presets', () => {
    const bin = path.join(root, 'dist', 'cli.js');
    expect(existsSync(bin), 'dist/cli.js: npm test compiles it first').toBe(true);
    const r = spawnSync(process.execPath, [bin, 'estimate', ...publishedArgs], { encoding: 'utf8', env: process.env });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(publishedLine);
    const presets = spawnSync(process.execPath, [bin, 'estimate', '--context', '32k'], { encoding: 'utf8', env: process.env });
    expect(presets.status, presets.stderr).toBe(0);
    for (const title of ['DeepSeek-V2 (236B)', 'DeepSeek-V2-Lite (16B)', 'DeepSeek-V3 / R1 (671B)']) expect(presets.stdout).toContain(title);
    expect(presets.stdout).toContain('context 32,768');
  });

  it('presets, overrides, JSON, help and errors', () => {
    const v3 = cli(['--preset', 'deepseek-v3', '--context', '128k', '--batch', '2', '--dtype', 'fp8_e4m3', '--json']);
    expect(v3.code).toBe(0);
    const e = JSON.parse(v3.out);
    expect(e.options).toMatchObject({ layers: 61, heads: 128, context: 131072, batch: 2, dtype: 'fp8_e4m3', kvLoraRank: 512, ropeDim: 64 });
    expect(e.mla.totalBytes).toBe(576 * 61 * 131072 * 2);
    expect(cli(['--preset', 'deepseek-v2-lite', '--latent', '256']).out).toContain('MLA (256 + 64)');
    expect(cli(['--help']).out).toContain('--plot FILE.svg');
    expect(cli(['--heads', '8']).code).toBe(2);
    expect(cli(['--preset', 'gpt-5']).code).toBe(2);
    expect(cli(['--preset', 'deepseek-v3', '--dtype', 'fp4']).code).toBe(2);
    expect(cli(['--preset', 'deepseek-v3', '--bogus']).code).toBe(2);
  });

  it('--plot writes an SVG of bytes against context for several latent widths beside MHA and GQA', () => {
    const dir = path.join(__dirname, '..', '.tmp');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'kv-cache.svg');
    const r = cli([...publishedArgs, '--plot', file, '--latents', '256,512']);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`wrote ${file}`);
    const svg = readFileSync(file, 'utf8');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    for (const label of ['MHA (24 heads): 3.25 GB', 'GQA (6 kv heads): 0.81 GB', 'MQA (1 kv head)', 'MLA (256): 0.20 GB', 'MLA (512): 0.40 GB', 'MLA (1024) ◀: 0.81 GB'])
      expect(svg).toContain(label);
    expect(svg).toContain('context length');
    // Every tag closes (a cheap well-formedness check: no XML parser in the dependencies).
    expect((svg.match(/<(line|rect|text|svg)\b/g) ?? []).length).toBe((svg.match(/<\/(text|svg)>|\/>/g) ?? []).length);
    expect(plotKvCacheSvg({ base: { ...PRESETS['deepseek-v3'], context: 4096 } })).toContain('MLA (512 + 64) ◀');
  });
});
