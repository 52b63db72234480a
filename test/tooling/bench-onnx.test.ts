// The benchmark's onnxruntime peer: the ONNX graph bench/onnx-graph.mjs writes by hand must compute the same absorbed
// MLA decode as the reference (tiny shape, causal and not), so the benchmark's peer ratios compare like with like.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { refMlaDecode } from '../../lib/reference.js';
// @ts-expect-error a plain .mjs module of the benchmark, without types
import { mlaDecodeOnnx } from '../../bench/onnx-graph.mjs';
import { relErr, Rng } from '../helpers.js';

const require = createRequire(import.meta.url);
let ort: { InferenceSession: { create(b: Uint8Array): Promise<{ run(f: object): Promise<{ O: { data: Float32Array } }> }> }; Tensor: new (t: string, d: Float32Array, s: number[]) => object } | null = null;
try {
  ort = require('onnxruntime-node');
} catch {
  ort = null;
}

describe('benchmark ONNX graph', () => {
  if (!ort) {
    it.skip('onnxruntime-node is not installed (a devDependency of the benchmark)', () => {});
    return;
  }
  for (const queryLen of [1, 2])
    it(`agrees with the reference (queryLen ${queryLen}${queryLen > 1 ? ', causal' : ''})`, async () => {
      const rng = new Rng(7 + queryLen);
      const batch = 2, heads = 3, context = 9, kvLoraRank = 8, width = 12, scale = 0.3, causal = queryLen > 1;
      const M = heads * queryLen;
      const q = Float32Array.from(rng.normal(batch * M * width));
      const k = Float32Array.from(rng.normal(batch * context * width));
      const session = await ort!.InferenceSession.create(mlaDecodeOnnx({ batch, rows: M, context, width, kvLoraRank, scale, causal }));
      const feeds: Record<string, object> = { Q: new ort!.Tensor('float32', q, [batch, M, width]), K: new ort!.Tensor('float32', k, [batch, context, width]) };
      if (causal) {
        const mask = new Float32Array(M * context);
        for (let m = 0; m < M; m++) for (let n = context - queryLen + 1 + Math.floor(m / heads); n < context; n++) mask[m * context + n] = -Infinity;
        feeds.mask = new ort!.Tensor('float32', mask, [M, context]);
      }
      const got = (await session.run(feeds)).O.data;
      const ref = refMlaDecode({
        q: { data: Float64Array.from(q), shape: [batch, queryLen, heads, width] },
        cache: { data: Float64Array.from(k), shape: [batch, context, width] },
        blockTable: { data: Float64Array.from([0, 1]), shape: [batch, 1] },
        seqLens: { data: Float64Array.from([context, context]), shape: [batch] },
        softmaxScale: scale, kvLoraRank, causal,
      });
      expect(relErr(got, ref.out)).toBeLessThanOrEqual(1e-5);
    });
});
