// The GPU performance model (scripts/model-gpu.mjs) on CI's quick shapes: it runs, its inputs are the counts cuda-sim
// takes from the kernels, and the table in docs/gpu.md is the one it computes now (regenerate with
// `node scripts/model-gpu.mjs --write-docs` after a kernel or planner change).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as api from 'mla-kernels';
import { native } from '../../lib/native.js';
import { backends } from '../../lib/index.js';
// @ts-expect-error plain ESM scripts without type declarations
import { markdownTable, modelForDevice, runModel, runSparse } from '../../scripts/model-gpu.mjs';
// @ts-expect-error
import { sparseMarkdownTable } from '../../scripts/model-sparse.mjs';

const sim = backends().find((b) => b.name === 'cuda-sim')!;

describe.runIf(sim.available)('GPU performance model (quick shapes)', () => {
  it('models sm_90 and sm_86 from cuda-sim counts, and docs/gpu.md holds the same rows', async () => {
    const { results, counts } = await runModel({ archs: [90, 86], quick: true, ctx: { api, addon: native() } });
    expect(results.length).toBeGreaterThanOrEqual(10);
    for (const r of results) {
      for (const k of ['us', 'tbps', 'tflops', 'ofFlashMla']) {
        expect(Number.isFinite(r[k]), `${k} of ${JSON.stringify(r)}`).toBe(true);
        expect(r[k]).toBeGreaterThan(0);
      }
      expect(r.ctas).toBeGreaterThanOrEqual(1);
      expect(r.ofFlashMla).toBeLessThan(1.5);
    }
    // The counts are the kernel's: each tile copies blockN cache rows into shared memory, ldmatrix is bank-conflict
    // free, and every tile has mma work and at least one barrier.
    for (const [key, c] of Object.entries(counts) as [string, any][]) {
      const elem = key.endsWith('bf16') ? 2 : 1;
      expect(c.tile.asyncCopyBytes, key).toBe(c.blockN * 576 * elem);
      expect(c.tile.ldmatrixWavefronts * 128, key).toBe(c.tile.ldmatrixBytes);
      expect(c.tile.mma, key).toBeGreaterThan(0);
      expect(c.perTile, key).toBeGreaterThanOrEqual(1);
    }
    const doc = readFileSync(path.join(__dirname, '..', '..', 'docs', 'gpu.md'), 'utf8');
    expect(doc).toMatch(/No GPU has measured/);
    for (const row of markdownTable(results).split('\n').slice(2)) expect(doc, 'docs/gpu.md is out of date: node scripts/model-gpu.mjs --write-docs').toContain(row);
  });

  it('models the sparse decode step (top-2048, 16 heads, 8k) on sm_90 from cuda-sim counts, and docs/sparse.md holds the row', async () => {
    const { rows, counts } = await runSparse({ archs: [90], quick: true, ctx: { api, addon: native() } });
    expect(rows).toHaveLength(1);
    const r = rows[0];
    for (const cache of ['bf16', 'fp8_ds_mla']) {
      const c = counts[90].sparse[cache];
      // Each selected row is read once per CTA (its bytes and its index), and the CTA takes 16 heads.
      expect(c.row.bytesRead, cache).toBe((cache === 'bf16' ? 576 * 2 : api.dsMlaRowBytes(512, 64)) + 4);
      expect(c.ctaHeads).toBe(16);
      expect(c.ctasPerQuery).toEqual({ 16: 1, 128: 8 });
      expect(r.sparse[cache].us).toBeGreaterThan(r.sparse[cache].boundUs);
    }
    const ix = counts[90].indexer;
    expect(ix.scores.keysPerCta).toBe(64);
    expect(ix.scores.cta.bytesRead).toBeGreaterThanOrEqual(64 * 128); // its 64 fp8 keys at least
    for (const k of ['us', 'scoresUs', 'topkUs']) expect(r.indexer[k]).toBeGreaterThan(0);
    expect(r.denseUs).toBeGreaterThan(0);
    const doc = readFileSync(path.join(__dirname, '..', '..', 'docs', 'sparse.md'), 'utf8');
    expect(doc).toMatch(/No GPU has measured the sparse decode or the indexer/);
    expect(doc, 'docs/sparse.md is out of date: node scripts/model-gpu.mjs --write-docs').toContain(sparseMarkdownTable(rows).split('\n')[2]);
  });

  it('bench:gpu models the device it runs on (its architecture, its SM count), or says why not', async () => {
    const ctx = { api, addon: native() };
    const h800 = await modelForDevice({ arch: 90, sms: 132, quick: true, ctx });
    expect(h800.note).toMatch(/H100 SXM5's limits .* 132 SMs/);
    const fewer = await modelForDevice({ arch: 90, sms: 114, quick: true, ctx });
    expect(fewer.results.map((r: any) => r.ctas)).not.toEqual(h800.results.map((r: any) => r.ctas)); // planned for 114 SMs
    expect((await modelForDevice({ arch: 75, sms: 40, ctx })).note).toMatch(/no model for sm_75/);
  });
});
