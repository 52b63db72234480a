// The demo's prefill in multi-head form (gather → upProjectKv → mlaPrefill, context merged by log-sum-exp), whole
// prompts and in chunks, timed beside the absorbed form on the same cache: the MLA logits still agree with the MHA
// model's at every step, and the summary shows the prefill rate of both forms.
import { describe, expect, it } from 'vitest';
import { parseArgs } from '../../demo/main.js';
import { suiteBackends } from '../helpers.js';
import { runTinyDemo as run } from './demo-run.js';

describe('demo: prefill in multi-head form', () => {
  it('whole prompts: agrees with the MHA model, and the two MLA forms agree on the prompt', async () => {
    const { result: r, text } = await run({});
    expect(r.agreement?.pass, text).toBe(true);
    expect(r.prefillForms).toMatchObject({ form: 'multi-head', chunk: 0, prefillSteps: 1, tokens: 18 });
    expect(r.prefillForms!.maxRelErr).toBeLessThanOrEqual(1e-5);
    expect(text).toMatch(/MLA prefill attention over 18 prompt tokens \(1 step\): multi-head form [\d.]+ tokens\/s .*, absorbed [\d.]+ tokens\/s/);
  });

  for (const [chunk, dtype, bound] of [[4, 'f32', 1e-5], [3, 'bf16', 1.2e-2]] as const)
    it(`chunks of ${chunk} tokens (${dtype}): later chunks attend to earlier ones through the cache; every step agrees with MHA`, async () => {
      const { result: r, text } = await run({ prefillChunk: chunk }, { dtype });
      expect(r.agreement?.pass, text).toBe(true);
      expect(r.agreement!.maxRelErr).toBeLessThanOrEqual(bound);
      expect(r.prefillForms!.prefillSteps).toBe(Math.ceil(11 / chunk)); // the longest prompt
      expect(r.generated.map((g) => g.length)).toEqual([4, 3, 5]);
      expect(r.mla.stats.blocksInUse).toBe(0);
      expect(text).toContain(`in chunks of ${chunk} tokens`);
    });

  it('on cuda-sim (the CUDA prefill kernels under emulation) when this build has it', async (ctx) => {
    const sim = suiteBackends().find((b) => b.name === 'cuda-sim');
    if (!sim?.available) ctx.skip();
    const { result: r, text } = await run({ backend: 'cuda-sim', promptLens: [6, 3], newTokens: [2, 2], prefillChunk: 4 }, { dtype: 'bf16' });
    expect(r.agreement?.pass, text).toBe(true);
    expect(r.prefillForms!.prefillSteps).toBe(2);
  });

  it('parses --prefill-chunk and --prefill-form', () => {
    expect(parseArgs(['--prefill-chunk', '64']).options).toMatchObject({ prefillChunk: 64, prefillForm: 'multi-head' });
    expect(parseArgs(['--prefill-form', 'absorbed']).options.prefillForm).toBe('absorbed');
    expect(() => parseArgs(['--prefill-chunk', '-1'])).toThrow(/prefill-chunk/);
    expect(() => parseArgs(['--prefill-form', 'mha'])).toThrow(/prefill-form/);
  });
});
