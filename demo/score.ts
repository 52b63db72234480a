// Next-token log-probabilities at every position of one token sequence, through the MLA decoder on the addon: what
// the peer test compares with llama.cpp's. Two ways over the same weights: the whole sequence in one prefill step
// (logits of every row), or one decode step per token.
import { Stream, type BackendName } from 'mla-kernels';
import { MlaDecoder, makeStep, type Weights } from './model.js';
import { PagedCacheManager } from './paged.js';

/** log-softmax of each row of logits [rows, vocab], in float64. */
export function logSoftmaxRows(logits: Float32Array, rows: number, vocab: number): Float64Array[] {
  const out: Float64Array[] = [];
  for (let r = 0; r < rows; r++) {
    const x = logits.subarray(r * vocab, (r + 1) * vocab);
    let max = -Infinity;
    for (let i = 0; i < vocab; i++) max = Math.max(max, x[i]);
    let sum = 0;
    for (let i = 0; i < vocab; i++) sum += Math.exp(x[i] - max);
    const lse = max + Math.log(sum);
    const row = new Float64Array(vocab);
    for (let i = 0; i < vocab; i++) row[i] = x[i] - lse;
    out.push(row);
  }
  return out;
}

/**
 * Log-probabilities of the next token after each prefix tokens[0 … t], t < tokens.length: one row of vocab values per
 * position. `mode` 'prefill' runs one step of every token (causal attention over the step's own rows); 'decode' one
 * step per token against the cache.
 */
export async function scoreTokens(weights: Weights, tokens: readonly number[], backend: BackendName, mode: 'prefill' | 'decode'): Promise<Float64Array[]> {
  const c = weights.config;
  for (const t of tokens) if (!Number.isInteger(t) || t < 0 || t >= c.vocab) throw new Error(`token ${t} is outside the vocabulary (0 … ${c.vocab - 1})`);
  const stream = new Stream(backend);
  const decoder = new MlaDecoder(weights, stream, PagedCacheManager.blocksFor([tokens.length], c.blockSize), tokens.length);
  try {
    decoder.addSequence(0);
    if (mode === 'prefill') {
      const logits = await decoder.forward(makeStep([0], [tokens.length], [[...tokens]], [0]), true);
      return logSoftmaxRows(logits, tokens.length, c.vocab);
    }
    const rows: Float64Array[] = [];
    for (let t = 0; t < tokens.length; t++) rows.push(...logSoftmaxRows(await decoder.forward(makeStep([0], [1], [[tokens[t]]], [t])), 1, c.vocab));
    return rows;
  } finally {
    decoder.dispose();
    stream.dispose();
  }
}
