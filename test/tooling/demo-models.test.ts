// The demo's model-file and MoE options: parsing (and what they refuse), an MoE model's MLA and MHA runs agreeing,
// and a GGUF's weights run by runDemo as the file says.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fromBf16Bits, toBf16Bits } from '../../lib/index.js';
import { CONFIGS, parseArgs } from '../../demo/main.js';
import { readGgufModel, writeGgufModel } from '../../demo/gguf.js';
import { Weights } from '../../demo/model.js';
import { route, type MoeConfig } from '../../demo/moe.js';
import { runDemo, type DemoOptions } from '../../demo/run.js';

const dir = path.join(__dirname, '..', '.tmp', 'demo-models');
mkdirSync(dir, { recursive: true });

function options(over: Partial<DemoOptions>, config: Partial<DemoOptions['config']>): DemoOptions {
  return { config: { ...CONFIGS.tiny, dtype: 'f32', seed: 3, ...config }, promptLens: [5, 9], newTokens: [4, 3], backend: 'cpu', mhaCompare: true, progress: false, print: () => {}, ...over };
}

describe('demo: model files and MoE', () => {
  it('parses the MoE and model-file options, and refuses what does not go together', () => {
    const moe = parseArgs(['--config', 'moe']).options.config.moe!;
    expect(moe).toMatchObject({ experts: 16, expertsUsed: 4, sharedExperts: 1, denseLayers: 1, gating: 'sigmoid', normTopK: true, selectionBias: true, groups: 4, groupsUsed: 2, routedScale: 2.5 });
    const v2 = parseArgs(['--config', 'tiny', '--experts', '6', '--experts-used', '2', '--gating', 'softmax', '--routed-scale', '16']).options.config.moe!;
    expect(v2).toMatchObject({ experts: 6, expertsUsed: 2, gating: 'softmax', normTopK: false, selectionBias: false, routedScale: 16, groups: 0 });
    expect(parseArgs(['--config', 'moe', '--experts', '0']).options.config.moe).toBeUndefined();
    const file = parseArgs(['--model', 'x.gguf', '--tokens', '1,2,3', '--new-tokens', '5']);
    expect(file.model).toBe('x.gguf');
    expect(file.options.prompts).toEqual([[1, 2, 3]]);
    expect(file.options.promptLens).toEqual([3]);
    const save = parseArgs(['--save-gguf', 'y.gguf', '--gguf-type', 'bf16', '--gguf-layout', 'kv_b']);
    expect(save.saveGguf).toEqual({ file: 'y.gguf', type: 'bf16', layout: 'kv_b' });
    expect(() => parseArgs(['--model', 'x.gguf', '--heads', '8'])).toThrow(/--model takes the model's shape from the file: drop --heads/);
    expect(() => parseArgs(['--model', 'x.gguf', '--experts', '8'])).toThrow(/drop the MoE options/);
    expect(() => parseArgs(['--expert-ffn', '64'])).toThrow(/need --experts/);
    expect(() => parseArgs(['--prompt', 'hi'])).toThrow(/--prompt needs --model/);
    expect(() => parseArgs(['--model', 'x.gguf', '--prompt', 'hi', '--tokens', '1'])).toThrow(/not both/);
    expect(() => parseArgs(['--gguf-type', 'q4_0'])).toThrow(/--gguf-type must be/);
    expect(() => parseArgs(['--gating', 'relu'])).toThrow(/--gating must be/);
    expect(() => parseArgs(['--tokens', '1,-2'])).toThrow(/--tokens needs token ids/);
  });

  it('routes as DeepSeek does: top-k of the gates, the bias choosing only, groups by their two best, weights normalised and scaled', () => {
    const m: MoeConfig = { experts: 8, expertsUsed: 2, sharedExperts: 0, expertFfn: 1, denseLayers: 0, gating: 'sigmoid', normTopK: true, routedScale: 2.5, groups: 4, groupsUsed: 1, selectionBias: true };
    // Groups {0,1} {2,3} {4,5} {6,7}: group 1 has the two best sums of biased gates (expert 2 is lifted by its bias).
    const logits = Float32Array.from([3, -3, 0.5, 0.4, 0.9, -2, 0.1, 0]);
    const bias = Float32Array.from([0, 0, 0.5, 0.4, 0, 0, 0, 0]);
    const { chosen, weight } = route(m, logits, 1, bias);
    expect([...chosen]).toEqual([2, 3]);
    const s = (x: number) => 1 / (1 + Math.exp(-x));
    expect(weight[0]).toBeCloseTo((2.5 * s(0.5)) / (s(0.5) + s(0.4)), 6);
    expect(weight[1]).toBeCloseTo((2.5 * s(0.4)) / (s(0.5) + s(0.4)), 6);
    const v2 = route({ ...m, gating: 'softmax', normTopK: false, routedScale: 1, groups: 0, selectionBias: false }, logits, 1);
    expect([...v2.chosen]).toEqual([0, 4]);
    const e = [...logits].map(Math.exp), z = e.reduce((a, b) => a + b, 0);
    expect(v2.weight[0]).toBeCloseTo(e[0] / z, 6);
  });

  it('an MoE model (V3-style routing): MLA on the addon and MHA agree at every step', async () => {
    const moe: MoeConfig = { experts: 8, expertsUsed: 2, sharedExperts: 1, expertFfn: 32, denseLayers: 1, gating: 'sigmoid', normTopK: true, routedScale: 2.5, groups: 4, groupsUsed: 2, selectionBias: true };
    const r = await runDemo(options({}, { layers: 3, moe }));
    expect(r.agreement?.pass).toBe(true);
    expect(r.agreement!.maxRelErr).toBeLessThanOrEqual(1e-5);
    expect(r.agreement!.argmaxAgree).toBe(r.agreement!.argmaxTotal);
  });

  it('runs a GGUF file: the weights read, the given prompt, the file named in the report', async () => {
    const config = { ...CONFIGS.tiny, vocab: 300, dtype: 'f32' as const, seed: 9 };
    const file = path.join(dir, 'run.gguf');
    const original = new Weights(config);
    writeGgufModel(file, original, { tensorType: 'bf16' });
    const { weights } = await readGgufModel(file, { dtype: 'f32', blockSize: 4 });
    const lines: string[] = [];
    const prompts = [[1, 17, 250, 3], [1, 99]];
    const r = await runDemo(options({ weights, source: `test model (${file})`, prompts, promptLens: [4, 2], print: (l) => lines.push(l) }, weights.config));
    expect(lines[0]).toContain(`weights of test model (${file})`);
    expect(r.agreement?.pass).toBe(true);
    expect(r.generated.map((g) => g.length)).toEqual([4, 3]);
    // What ran are the file's bf16 values.
    expect(weights.embed).toEqual(original.embed.map((x) => fromBf16Bits(toBf16Bits(x))));
  });
});
