#!/usr/bin/env node
// llama.cpp as the peer (through node-llama-cpp's prebuilt CPU binary), one model load per process: llama.cpp aborts
// the whole process (GGML_ASSERT) on some malformed files, so the peer test and bench:model run this in a child.
//   node bench/llama-peer.mjs probe                          → whether the binary loads, and what it is
//   node bench/llama-peer.mjs logprobs <file.gguf> <t0,t1,…> → next-token log-probs after every prefix
// Settings for the comparison: F32 KV cache (keys and values), flash attention off, greedy sampling (the probabilities
// are then the softmax of the raw logits). Prints one line `RESULT <json>` on stdout; llama.cpp's own log goes to stderr.
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const [mode, file, tokenList] = process.argv.slice(2);
const result = (r) => process.stdout.write(`RESULT ${JSON.stringify(r)}\n`);

/** The settings every run here uses; printed by the callers beside their results. */
const PEER_SETTINGS = { gpu: false, build: 'never', flashAttention: false, kvCacheType: 'F32', sampling: 'greedy' };

async function loadLlama() {
  return getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, logger: (level, text) => process.stderr.write(`[llama.cpp] ${text}\n`) });
}

if (mode === 'probe') {
  try {
    const llama = await loadLlama();
    result({ ok: true, buildType: llama.buildType, cpuMathCores: llama.cpuMathCores, llamaCpp: llama.llamaCppRelease, settings: PEER_SETTINGS });
  } catch (e) {
    result({ ok: false, reason: String(e?.message ?? e).split('\n')[0] });
  }
} else if (mode === 'logprobs') {
  const tokens = tokenList.split(',').map(Number);
  const llama = await loadLlama();
  const model = await llama.loadModel({ modelPath: file });
  const context = await model.createContext({
    contextSize: Math.max(64, tokens.length + 1),
    sequences: 1,
    flashAttention: false,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
  });
  const sequence = context.getSequence();
  const out = await sequence.controlledEvaluate(tokens.map((t) => [t, { generateNext: { probabilities: true } }]));
  const logProbs = out.map((o) => {
    const row = new Array(o.next.probabilities.size).fill(-Infinity); // every token of the vocabulary is listed
    for (const [t, p] of o.next.probabilities) row[t] = Math.log(p);
    return row;
  });
  result({ logProbs, threads: context.currentThreads, settings: PEER_SETTINGS });
  await context.dispose();
  await model.dispose();
} else {
  console.error('usage: node bench/llama-peer.mjs probe | logprobs <file.gguf> <t0,t1,…>');
  process.exit(2);
}
