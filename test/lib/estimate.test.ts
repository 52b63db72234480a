// The KV-cache estimator (mla-kernels/estimate): the published example pinned to the digit, the DeepSeek presets
// against MLA.md, option errors, and the chart (its Vega-Lite spec, and the SVG Vega renders). The command line is
// test/lib/cli.test.ts.
import { describe, expect, it } from 'vitest';
import { CACHE_DTYPE_BYTES, defaultKvHeads, EstimateOptionError, estimateKvCache, formatGB, kvCachePlotSpec, plotKvCacheSvg, PRESETS } from 'mla-kernels/estimate';

const published = { emb: 2048, heads: 24, layers: 48, kvHeads: 6, kvLoraRank: 1024, context: 8192, batch: 1, dtype: 'bf16' } as const;

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

describe('estimator options', () => {
  it('GQA needs a key/value head count that divides the heads; the default is the largest divisor up to heads / 8', () => {
    expect([8, 12, 20, 24, 64, 128].map(defaultKvHeads)).toEqual([1, 1, 2, 3, 8, 16]);
    let caught: unknown;
    try {
      estimateKvCache({ ...published, kvHeads: 7 });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(EstimateOptionError);
    const e = caught as EstimateOptionError;
    expect(e).toBeInstanceOf(RangeError);
    expect(e.option).toBe('kvHeads');
    expect(e.message).toBe('estimate: kvHeads (7) must divide heads (24)');
    // The same problem in another naming (the CLI's flags).
    expect(e.describe((o) => `--${o}`)).toBe('--kvHeads (7) must divide --heads (24)');
    expect(() => estimateKvCache({ ...published, layers: 0 })).toThrow('estimate: layers must be an integer >= 1, got 0');
  });
});

describe('the chart', () => {
  const rowsOf = (spec: Record<string, unknown>) => (spec.data as { values: { panel: string; series: string; context: number; gb: number }[] }).values;

  it('one configuration: MHA, GQA, MQA and MLA at several latents, log axes, sizes in the legend', () => {
    const spec = kvCachePlotSpec({ panels: [{ options: published }], latents: [256, 512] });
    const rows = rowsOf(spec);
    const series = [...new Set(rows.map((r) => r.series))];
    expect(series).toEqual(['MHA (24 heads): 3.25 GB', 'GQA (6 kv heads): 0.81 GB', 'MQA (1 kv head): 0.14 GB', 'MLA (256): 0.20 GB', 'MLA (512): 0.40 GB', 'MLA (1024) (this model): 0.81 GB']);
    // Each line runs from context / 64 to the context, with the estimator's own bytes at each end.
    const mha = rows.filter((r) => r.series.startsWith('MHA'));
    expect(mha.map((r) => r.context)).toEqual([128, 8192]);
    expect(mha[1].gb).toBe(estimateKvCache(published).mha.totalBytes / 1e9);
    expect(mha[0].gb).toBe(estimateKvCache({ ...published, context: 128 }).mha.totalBytes / 1e9);
    const enc = spec.encoding as Record<string, { scale: { type: string } }>;
    expect(enc.x.scale.type).toBe('log');
    expect(enc.y.scale.type).toBe('log');
  });

  it('several configurations: one named panel each', () => {
    const panels = Object.values(PRESETS).map((p) => ({ title: p.description, options: { ...p, context: 131072 } }));
    const spec = kvCachePlotSpec({ panels });
    expect((spec.facet as { column: { sort: string[] } }).column.sort).toEqual(['DeepSeek-V2 (236B)', 'DeepSeek-V2-Lite (16B)', 'DeepSeek-V3 / R1 (671B)']);
    const v3 = rowsOf(spec).filter((r) => r.panel === 'DeepSeek-V3 / R1 (671B)' && r.context === 131072);
    expect(v3.map((r) => r.series)).toEqual(['MHA', 'GQA', 'MQA', 'MLA (512 + 64)']);
    expect(v3[0].gb / v3[3].gb).toBeCloseTo(32768 / 576, 9);
  });

  it('renders as SVG with Vega (the optional peers), every series in it', async () => {
    const svg = await plotKvCacheSvg({ panels: [{ options: published }], latents: [256, 512] });
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    for (const label of ['MHA (24 heads): 3.25 GB', 'GQA (6 kv heads): 0.81 GB', 'MQA (1 kv head): 0.14 GB', 'MLA (256): 0.20 GB', 'MLA (1024) (this model): 0.81 GB', 'context length'])
      expect(svg).toContain(label);
    // A log axis: ticks at powers of two (context) and of ten (GB).
    for (const tick of ['>128<', '>1k<', '>8k<']) expect(svg).toContain(tick);
  });
});
