#!/usr/bin/env node
// llama.cpp as the peer (through node-llama-cpp's prebuilt CPU binary), one model load per process: llama.cpp aborts
// the whole process (GGML_ASSERT) on some malformed files, so the peer test and bench:model run this in a child.
//   node bench/llama-peer.mjs probe                          → whether the binary loads, and what it is
//   node bench/llama-peer.mjs logprobs <file.gguf> <t0,t1,…> → next-token log-probs after every prefix
//   node bench/llama-peer.mjs bench '<json>'                → decode step times at given contexts and batches
// logprobs compares with F32 KV cache (keys and values), flash attention off, greedy sampling (the probabilities are
// then the softmax of the raw logits). bench uses llama.cpp's defaults (F16 KV cache) with flash attention as asked.
// Prints one line `RESULT <json>` on stdout; llama.cpp's own log goes to stderr.
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const [mode, file, tokenList] = process.argv.slice(2);
const result = (r) => process.stdout.write(`RESULT ${JSON.stringify(r)}\n`);

/** The settings every run here uses; printed by the callers beside their results. */
const PEER_SETTINGS = { gpu: false, build: 'never', flashAttention: false, kvCacheType: 'F32', sampling: 'greedy' };

/** llama.cpp's log lines (all of them at `info`, for the buffer sizes it reports). */
const logLines = [];
async function loadLlama(level = LlamaLogLevel.error) {
  return getLlama({
    gpu: false,
    build: 'never',
    logLevel: level,
    logger: (lvl, text) => {
      logLines.push(text);
      if (lvl === LlamaLogLevel.error || lvl === LlamaLogLevel.fatal || level === LlamaLogLevel.error) process.stderr.write(`[llama.cpp] ${text}\n`);
    },
  });
}

/** The last size in MiB llama.cpp logged on a line matching `re` (as bytes), or null. */
function loggedBytes(re) {
  const line = logLines.filter((l) => re.test(l)).pop();
  const m = line && /=\s*([\d.]+) MiB/.exec(line);
  return m ? Number(m[1]) * 2 ** 20 : null;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

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
} else if (mode === 'bench') {
  // { file, contexts, batches, steps, warmup, flashAttention, threads?, stateDir, prefill: 'evaluate' | 'load' }
  // Per context: sequence 0 is prefilled with `context` tokens (or its state loaded from stateDir, saved by an earlier
  // run of the same model), the other sequences load that state; then per batch B, `warmup` + `steps` decode steps of
  // one token on each of sequences 0 … B-1 (one batched llama_decode each), timed one by one, and the tokens they
  // added erased again. A context-1 run gives the step time without attention over a context, for the subtraction.
  const o = JSON.parse(file);
  const llama = await loadLlama(LlamaLogLevel.info);
  const model = await llama.loadModel({ modelPath: o.file, useMmap: false });
  const maxBatch = Math.max(...o.batches);
  const rows = [];
  const prefills = [];
  const memory = [];
  const tokenAt = (i) => 300 + ((i * 7919) % 3000);
  for (const ctx of [1, ...o.contexts]) {
    const context = await model.createContext({
      contextSize: ctx + o.warmup + o.steps + 8,
      sequences: maxBatch,
      flashAttention: o.flashAttention,
      batchSize: 512,
      ...(o.threads ? { threads: o.threads } : {}),
    });
    const seqs = Array.from({ length: maxBatch }, () => context.getSequence());
    const state = path.join(o.stateDir, `llama-state-ctx${ctx}.bin`);
    const t0 = performance.now();
    if (o.prefill === 'load' && existsSync(state)) await seqs[0].loadStateFromFile(state, { acceptRisk: true });
    else {
      await seqs[0].evaluateWithoutGeneratingNewTokens(Array.from({ length: ctx }, (_, i) => tokenAt(i)));
      prefills.push({ context: ctx, seconds: (performance.now() - t0) / 1000 });
      if (maxBatch > 1 || o.prefill === 'save') await seqs[0].saveStateToFile(state);
    }
    for (const s of seqs.slice(1)) await s.loadStateFromFile(state, { acceptRisk: true });
    const kvLine = logLines.filter((l) => /llama_kv_cache: size =/.test(l)).pop();
    memory.push({
      context: ctx,
      kvCacheBytes: loggedBytes(/llama_kv_cache: size =/),
      // "(256 cells, 8 layers, 2/2 seqs)": cells per stream, times the streams (n_seq_max/n_stream; one per
      // sequence as node-llama-cpp sets it up, kv_unified off).
      kvCells: kvLine ? Number(/\(\s*(\d+) cells/.exec(kvLine)?.[1]) * Number(/\d+\/(\d+) seqs/.exec(kvLine)?.[1] ?? 1) : null,
      computeBufferBytes: loggedBytes(/compute buffer size/),
      contextSize: context.contextSize,
      threads: context.currentThreads,
    });
    for (const batch of o.batches) {
      const times = [];
      for (let step = 0; step < o.warmup + o.steps; step++) {
        const t = performance.now();
        await Promise.all(seqs.slice(0, batch).map((s, b) => s.controlledEvaluate([[tokenAt(ctx + step * 13 + b), { generateNext: { token: true } }]])));
        if (step >= o.warmup) times.push(performance.now() - t);
      }
      for (const s of seqs.slice(0, batch)) await s.eraseContextTokenRanges([{ start: ctx, end: s.nextTokenIndex }]);
      rows.push({ context: ctx, batch, stepMs: times, medianMs: median(times) });
    }
    await context.dispose();
  }
  if (o.prefill !== 'save') for (const ctx of [1, ...o.contexts]) rmSync(path.join(o.stateDir, `llama-state-ctx${ctx}.bin`), { force: true });
  result({
    rows,
    prefills,
    memory,
    modelBytes: loggedBytes(/model buffer size/),
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    flashAttention: o.flashAttention,
    kvCacheType: 'F16 (llama.cpp default)',
    llamaCpp: llama.llamaCppRelease,
    cpuMathCores: llama.cpuMathCores,
  });
  await model.dispose();
} else {
  console.error('usage: node bench/llama-peer.mjs probe | logprobs <file.gguf> <t0,t1,…> | bench <json>');
  process.exit(2);
}
