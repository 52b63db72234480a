// The demo's --sparse-topk mode (DeepSeek-V3.2's decode path: indexer key cache, lightning indexer, sparse decode):
// with a top-k covering every context it is the dense model (the MLA logits agree with the MHA model's at every
// step); with a small top-k it attends to that many rows per query and layer.
import { describe, expect, it } from 'vitest';
import { CONFIGS, parseArgs } from '../../demo/main.js';
import { type DemoOptions } from '../../demo/run.js';
import { suiteBackends } from '../helpers.js';
import { runTinyDemo } from './demo-run.js';

const sim = suiteBackends().some((b) => b.name === 'cuda-sim' && b.available);

const run = (o: Partial<DemoOptions>) => runTinyDemo(o, {}, 5);

describe('demo: --sparse-topk', () => {
  it('a top-k covering every context is the dense model: MLA agrees with MHA at every step', async () => {
    const { result: r, text } = await run({ sparseTopk: 64 });
    expect(r.agreement?.pass, text).toBe(true);
    expect(r.sparse!.selectedRows).toBe(r.sparse!.cachedRows);
    expect(r.sparse!.cachedRows).toBeGreaterThan(0);
    expect(text).toContain('lightningIndexer');
  });

  it('top-3: each decode query attends to 3 rows per layer; the sequences finish and free their blocks', async () => {
    const { result: r, text } = await run({ sparseTopk: 3, mhaCompare: false });
    expect(r.generated.map((g) => g.length)).toEqual([4, 3, 5]);
    const layers = CONFIGS.tiny.layers;
    const decodeQueries = 3 + 2 + 4; // decode steps after each prompt's first token
    expect(r.sparse!.selectedRows).toBe(3 * decodeQueries * layers);
    expect(r.sparse!.cachedRows).toBeGreaterThan(r.sparse!.selectedRows);
    expect(r.mla.stats.blocksInUse).toBe(0);
    expect(text).toMatch(/sparse decode \(top-3\): attended \d+ of \d+ cached rows/);
  });

  it('parses --sparse-topk: the MHA comparison off unless asked, any backend', () => {
    const p = parseArgs(['--sparse-topk', '8', '--device', 'cpu']);
    expect(p.options).toMatchObject({ sparseTopk: 8, backend: 'cpu', mhaCompare: false });
    expect(parseArgs(['--sparse-topk=8', '--mha-compare']).options.mhaCompare).toBe(true);
    if (sim) expect(parseArgs(['--sparse-topk', '8', '--device', 'cuda-sim']).options).toMatchObject({ sparseTopk: 8, backend: 'cuda-sim', config: { dtype: 'bf16' } });
    expect(() => parseArgs(['--sparse-topk', '-1'])).toThrow(/whole number/);
  });

  it('on cuda-sim (the device indexer and sparse decode under emulation, bf16) when this build has it', async (ctx) => {
    if (!sim) ctx.skip();
    const lens = { backend: 'cuda-sim' as const, promptLens: [5, 2], newTokens: [3, 2] };
    const small = await runTinyDemo({ ...lens, sparseTopk: 3, mhaCompare: false }, { dtype: 'bf16' }, 5);
    expect(small.result.device).toBe('cuda-sim:0');
    expect(small.result.sparse!.selectedRows, small.text).toBe(3 * (2 + 1) * CONFIGS.tiny.layers);
    expect(small.result.mla.stats.blocksInUse).toBe(0);
    const all = await runTinyDemo({ ...lens, sparseTopk: 64 }, { dtype: 'bf16' }, 5);
    expect(all.result.sparse!.selectedRows).toBe(all.result.sparse!.cachedRows);
    expect(all.result.agreement?.pass, all.text).toBe(true);
  });
});
