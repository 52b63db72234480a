#!/usr/bin/env node
// npm run bench:model [-- options]: one DeepSeek-shaped GGUF, decoded by the demo's runner (the four MLA kernels on
// the addon, everything else in TypeScript) and by llama.cpp (node-llama-cpp's prebuilt CPU binary, in a child
// process), at contexts 512, 4096 and 16384 and batches 1 and 4, on this machine. Two models, written here as BF16
// GGUFs from the demo's seeded random weights: the demo's shape (`--config default`), and the same body with
// DeepSeek-V2-Lite's attention dims (16 heads, kv_lora 512, rope 64, nope 128, v 128, no q_lora).
//
// What is timed, per (model, context, batch): decode steps of one new token per sequence after the context is in
// the cache (warm-up steps first, then the median of the timed ones), end to end (ours: Decoder.forward; llama.cpp:
// one batched llama_decode through node-llama-cpp's controlledEvaluate). Tokens/s = batch / step time.
// Time in attention: for both, the step time at the context minus the step time at context 1 (the same batch), i.e.
// what attending over the context costs; for ours also the four kernels measured directly (appendLatentCache,
// absorbQuery, mlaDecode, unabsorbOutput per layer, replayed as one captured graph per layer, with the inputs'
// conversion to bf16, the wait for the output and its readback), and the same graphs replayed back to back after the
// timed steps with one wait at the end (the kernels alone, without the wait per layer a step needs).
// How the contexts get into the caches: llama.cpp prefills sequence 0 with its own prompt processing and loads that
// state into the other sequences (sequence state files); ours appends random latent rows straight into the paged
// cache with appendLatentCache (a decode step's cost does not depend on the cache's values, and the demo's TypeScript
// prefill of 16,384 tokens would take long). Memory: the caches as allocated and per token, the weights as held.
//
// Options: --models demo,lite  --contexts 512,4096,16384  --batches 1,4  --steps 10  --warmup 3
//          --threads N (both: llama.cpp's threads, MLA_NUM_THREADS for ours; default: every core)
//          --llama-fa on|off|both (llama.cpp's flash attention; default on, its faster setting here)
//          --quick (contexts 512, 4 steps: a check that it runs)  --results DIR  --docs (rewrite the table in
//          docs/performance-model.md)
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuModel, load } from './machine.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const list = (name, dflt) => opt(name, dflt).split(',').map((x) => x.trim()).filter(Boolean);
const quick = args.includes('--quick');
const models = list('--models', 'demo,lite');
// --render FILE: print (and with --docs write) the tables of an earlier run's JSON, running nothing.
const rendered = args.includes('--render') ? JSON.parse(readFileSync(opt('--render'), 'utf8')) : null;
const contexts = rendered?.contexts ?? list('--contexts', quick ? '512' : '512,4096,16384').map(Number);
const batches = rendered?.batches ?? list('--batches', '1,4').map(Number);
const steps = Number(opt('--steps', quick ? '4' : '10'));
const warmup = Number(opt('--warmup', '3'));
const threads = args.includes('--threads') ? Number(opt('--threads')) : 0;
const llamaFa = opt('--llama-fa', 'on');
const resultsDir = path.resolve(opt('--results', path.join(root, 'bench', 'results')));
const writeDocs = args.includes('--docs');
for (const m of models) if (m !== 'demo' && m !== 'lite') throw new Error(`--models: demo or lite, got '${m}'`);
if (!['on', 'off', 'both'].includes(llamaFa)) throw new Error(`--llama-fa: on, off or both, got '${llamaFa}'`);
if ([...contexts, ...batches, steps].some((x) => !Number.isInteger(x) || x < 1)) throw new Error('--contexts, --batches and --steps take whole numbers >= 1');
if (writeDocs && quick) throw new Error('--docs takes a full run: drop --quick');
if (threads) process.env.MLA_NUM_THREADS = String(threads); // before the addon loads

const { Stream, Tensor, appendLatentCache, info, toBf16Array } = await import('mla-kernels');
const { CONFIGS } = await import('../demo/dist/main.js');
const { MlaDecoder, Weights, makeStep } = await import('../demo/dist/model.js');
const { PagedCacheManager } = await import('../demo/dist/paged.js');
const { Rng } = await import('../demo/dist/math.js');
const { readGgufModel, writeGgufModel } = await import('../demo/dist/gguf.js');

const MODELS = {
  demo: { label: "the demo's shape", config: { ...CONFIGS.default } },
  lite: {
    label: "the demo's body with DeepSeek-V2-Lite's attention dims",
    config: { ...CONFIGS.default, heads: 16, kvLoraRank: 512, ropeDim: 64, nopeDim: 128, vHeadDim: 128, qLoraRank: 0 },
  },
};
const BLOCK = 64;
const fmt = (x, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(d));
const mb = (x) => (x ? (x / 2 ** 20).toFixed(1) : '—');
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// --- llama.cpp, in a child process per model and flash-attention setting -------------------------------------------

function llama(file, flashAttention, stateDir, prefill) {
  const spec = { file, contexts, batches, steps, warmup, flashAttention, threads: threads || undefined, stateDir, prefill };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(root, 'bench', 'llama-peer.mjs'), 'bench', JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (status, signal) => {
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      if (!line) reject(new Error(`llama.cpp (flash attention ${flashAttention ? 'on' : 'off'}) exited ${status ?? signal} without a result:\n${err.split('\n').slice(-20).join('\n')}`));
      else resolve(JSON.parse(line.slice(7)));
    });
  });
}

// --- ours -------------------------------------------------------------------------------------------------------

/** Appends `n` random latent rows (bf16) of sequence `id` to every layer's cache, through the kernel. */
function fillCache(dec, id, n, rng, stream) {
  const c = dec.c;
  const chunk = Math.min(n, 2048);
  const kvBits = toBf16Array(Float32Array.from({ length: chunk * c.kvLoraRank }, () => rng.normal()));
  const peBits = toBf16Array(Float32Array.from({ length: chunk * c.ropeDim }, () => rng.normal()));
  const slots = new Int32Array(n);
  dec.cache.grow(id, n, slots, 0);
  for (let s = 0; s < n; s += chunk) {
    const m = Math.min(chunk, n - s);
    const kvC = Tensor.from(kvBits.subarray(0, m * c.kvLoraRank), [m, c.kvLoraRank], 'bf16');
    const kPe = Tensor.from(peBits.subarray(0, m * c.ropeDim), [m, c.ropeDim], 'bf16');
    const slotMapping = Tensor.from(slots.slice(s, s + m), [m]);
    for (const cache of dec.caches) appendLatentCache({ cache, kvC, kPe, slotMapping, stream });
  }
}

async function ours(file) {
  const { weights } = await readGgufModel(file, { dtype: 'bf16', blockSize: BLOCK });
  const c = weights.config;
  const stream = new Stream('cpu');
  const rng = new Rng(12345);
  const rows = [];
  let mem = null;
  for (const ctx of [1, ...contexts]) {
    for (const batch of batches) {
      const total = ctx + warmup + steps + 1;
      const dec = new MlaDecoder(weights, stream, PagedCacheManager.blocksFor(Array(batch).fill(total), BLOCK), total);
      const ids = Array.from({ length: batch }, (_, b) => b);
      for (const id of ids) {
        dec.addSequence(id);
        fillCache(dec, id, ctx, rng, stream);
      }
      await stream.synchronize();
      const times = [], attn = [];
      for (let step = 0; step < warmup + steps; step++) {
        const s = makeStep(ids, ids.map(() => 1), ids.map(() => [rng.int(3, c.vocab - 1)]), ids.map(() => ctx + step));
        const a0 = dec.attentionSeconds;
        const t = performance.now();
        await dec.forward(s);
        if (step >= warmup) {
          times.push(performance.now() - t);
          attn.push((dec.attentionSeconds - a0) * 1000);
        }
      }
      const st = dec.stats();
      const kernelsMs = (await dec.timeReplayedKernels(batch, steps)) * 1000;
      rows.push({ context: ctx, batch, stepMs: times, medianMs: median(times), attentionMs: median(attn), kernelsMs, poolBytes: dec.poolBytes, cacheBytesPerToken: st.cacheBytesPerToken });
      mem = { f32WeightBytes: weights.parameters * 4, cacheBytesPerToken: st.cacheBytesPerToken };
      dec.dispose();
    }
  }
  stream.dispose();
  // Multiply-adds per token of the TypeScript products: every matrix but the embedding (a row copy) and the attention
  // kernels' W_uk / W_uv (absorbQuery, unabsorbOutput).
  let vectors = weights.finalNorm.length;
  for (const lw of weights.layers) vectors += lw.attnNorm.length + lw.mlpNorm.length + lw.kvNorm.length + (lw.qNorm?.length ?? 0) + lw.wUk.length + lw.wUv.length;
  return { rows, memory: mem, parameters: weights.parameters, tsMacsPerToken: weights.parameters - weights.embed.length - vectors };
}

// --- the run ----------------------------------------------------------------------------------------------------

const results = rendered ?? (await run());
if (rendered) {
  console.log(`bench:model results of ${rendered.date} on ${rendered.machine}; load average ${rendered.loadBefore} before, ${rendered.loadAfter} after`);
  for (const [name, m] of Object.entries(rendered.models)) {
    console.log(`\n${name}: ${m.label}`);
    printModel(name, m);
  }
}
if (writeDocs) updateDocs();

async function run() {
  const ourInfo = info();
  const machine = `${cpuModel}, ${os.cpus().length} logical cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, ${ourInfo.cpu?.simd ?? '?'} kernels`;
  const loadBefore = load();
  console.log(`bench:model on ${machine}; load average ${loadBefore}`);
  console.log(`contexts ${contexts.join(', ')}; batches ${batches.join(', ')}; ${warmup} warm-up + ${steps} timed decode steps each; threads ${threads || 'all'} (ours ${ourInfo.cpu?.threads ?? '?'})`);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'mla-bench-model-'));
  const results = { date: new Date().toISOString(), machine, loadBefore, contexts, batches, steps, warmup, threads: threads || null, oursThreads: ourInfo.cpu?.threads ?? null, models: {} };
  try {
    for (const name of models) {
      const m = MODELS[name];
      const config = { ...m.config, dtype: 'bf16', seed: 1 };
      const file = path.join(tmp, `${name}.gguf`);
      const bytes = writeGgufModel(file, new Weights(config), { tensorType: 'bf16', contextLength: 65536, name: `bench ${name}` });
      console.log(`\n${name}: ${m.label}: emb ${config.emb}, ${config.layers} layers, ${config.heads} heads (nope ${config.nopeDim} + rope ${config.ropeDim}, v ${config.vHeadDim}), latent ${config.kvLoraRank}, ${config.qLoraRank ? `q_lora ${config.qLoraRank}` : 'no q_lora'}, MLP ${config.ffn}, vocab ${config.vocab}; BF16 GGUF of ${(bytes / 1e6).toFixed(1)} MB`);
      const peer = {};
      const fas = llamaFa === 'both' ? [true, false] : [llamaFa === 'on'];
      for (const fa of fas) {
        const t0 = performance.now();
        peer[fa ? 'on' : 'off'] = await llama(file, fa, tmp, 'evaluate');
        console.log(`  llama.cpp, flash attention ${fa ? 'on' : 'off'}: ${((performance.now() - t0) / 1000).toFixed(0)} s (prefill ${peer[fa ? 'on' : 'off'].prefills.map((p) => `${p.context}: ${p.seconds.toFixed(1)} s`).join(', ')})`);
      }
      const t0 = performance.now();
      const us = await ours(file);
      console.log(`  ours: ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      results.models[name] = { label: m.label, config, ours: us, llama: peer };
      printModel(name, results.models[name]);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  results.loadAfter = load();
  console.log(`\nload average before ${loadBefore}, after ${results.loadAfter} (${os.cpus().length} cores)`);
  mkdirSync(resultsDir, { recursive: true });
  const stamp = results.date.replace(/[:.]/g, '-');
  const json = path.join(resultsDir, `model-${quick ? 'quick-' : ''}${stamp}.json`);
  writeFileSync(json, JSON.stringify(results, null, 2));
  console.log(`results: ${path.relative(root, json)}`);
  return results;
}

/** The row of llama.cpp's fastest flash-attention setting at (context, batch). */
function llamaRow(model, ctx, batch) {
  const cands = Object.entries(model.llama).map(([fa, r]) => ({ fa, ...r.rows.find((x) => x.context === ctx && x.batch === batch), base: r.rows.find((x) => x.context === 1 && x.batch === batch), memory: r.memory.find((x) => x.context === ctx), modelBytes: r.modelBytes }));
  return cands.sort((a, b) => a.medianMs - b.medianMs)[0];
}

/** llama.cpp's KV cache bytes per token, from the largest cache it logged (its MiB have two decimals). */
function llamaKvPerToken(model) {
  const m = Object.values(model.llama)[0].memory.filter((x) => x.kvCacheBytes).sort((a, b) => b.kvCacheBytes - a.kvCacheBytes)[0];
  // Older results lack kvCells: one stream of contextSize cells per sequence.
  return m ? m.kvCacheBytes / (m.kvCells ?? m.contextSize * Math.max(...batches)) : null;
}

function tableRows(model) {
  const out = [];
  for (const ctx of contexts)
    for (const batch of batches) {
      const o = model.ours.rows.find((x) => x.context === ctx && x.batch === batch);
      const ob = model.ours.rows.find((x) => x.context === 1 && x.batch === batch);
      const l = llamaRow(model, ctx, batch);
      const oAttn = o.medianMs - ob.medianMs;
      const lAttn = l.medianMs - l.base.medianMs;
      out.push({
        ctx,
        batch,
        oursTps: (batch * 1000) / o.medianMs,
        llamaTps: (batch * 1000) / l.medianMs,
        oursStep: o.medianMs,
        llamaStep: l.medianMs,
        oursKernels: o.attentionMs,
        oursBackToBack: o.kernelsMs,
        oursAttn: oAttn,
        llamaAttn: lAttn,
        // Conservative: ours as measured includes the parts that do not grow with the context; llama.cpp's does not.
        attnRatio: lAttn / o.attentionMs,
        oursCache: batch * ctx * o.cacheBytesPerToken,
        llamaKv: l.memory?.kvCacheBytes,
        llamaKvPerToken: llamaKvPerToken(model),
        fa: l.fa,
      });
    }
  return out;
}

function markdownTable(model) {
  const lines = [
    '| context | batch | tokens/s ours | tokens/s llama.cpp | ours / llama.cpp | step ms ours | step ms llama.cpp | attention ms ours (4 kernels, measured) | ours: kernels back to back | attention ms ours (by subtraction) | attention ms llama.cpp (by subtraction) | llama.cpp (by subtraction) / ours (measured), attention | cache MiB ours / llama.cpp |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of tableRows(model))
    lines.push(
      `| ${r.ctx} | ${r.batch} | ${fmt(r.oursTps)} | ${fmt(r.llamaTps)} | ${fmt(r.oursTps / r.llamaTps, 2)}× | ${fmt(r.oursStep)} | ${fmt(r.llamaStep)} | ${fmt(r.oursKernels)} | ${fmt(r.oursBackToBack)} | ${fmt(r.oursAttn)} | ${fmt(r.llamaAttn)}${Object.keys(model.llama).length > 1 ? ` (FA ${r.fa})` : ''} | ${fmt(r.attnRatio, 1)}× | ${mb(r.oursCache)} / ${mb(r.llamaKvPerToken * r.batch * r.ctx)} |`,
    );
  return lines;
}

function printModel(name, model) {
  console.log('');
  for (const l of markdownTable(model)) console.log(l);
  const base = model.ours.rows.filter((x) => x.context === 1);
  const lbase = Object.values(model.llama)[0].rows.filter((x) => x.context === 1);
  console.log(
    `  at context 1 (no attention to speak of): ours ${base.map((x) => `batch ${x.batch} ${fmt(x.medianMs)} ms/step (kernels ${fmt(x.attentionMs)}, back to back ${fmt(x.kernelsMs)})`).join(', ')}; ` +
      `llama.cpp ${lbase.map((x) => `batch ${x.batch} ${fmt(x.medianMs)} ms/step`).join(', ')}`,
  );
  const lm = Object.values(model.llama)[0];
  console.log(
    `  memory: ours ${mb(model.ours.memory.f32WeightBytes)} MiB of weights (f32 arrays for the TypeScript products), cache ${model.ours.memory.cacheBytesPerToken} B/token (bf16, every layer); ` +
      `llama.cpp ${mb(lm.modelBytes)} MiB model buffer (bf16), KV ${fmt(llamaKvPerToken(model), 0)} B/token (F16, from the cache size it reports), peak RSS ${mb(lm.peakRssBytes)} MiB`,
  );
  console.log(`  llama.cpp ${lm.llamaCpp?.release ?? '?'}: ${lm.memory[0]?.threads ?? '?'} threads, ${lm.kvCacheType} KV cache, batch size 512`);
  for (const line of whereTimeGoes(model)) console.log(`  ${line}`);
}

/** Where a decode step's time goes, at the largest context and batch: the lines printed and put in the docs. */
function whereTimeGoes(model) {
  const ctx = Math.max(...contexts), batch = Math.max(...batches);
  const o = model.ours.rows.find((x) => x.context === ctx && x.batch === batch);
  const l = llamaRow(model, ctx, batch);
  const rest = o.medianMs - o.attentionMs;
  const gmacs = (batch * model.ours.tsMacsPerToken) / (rest * 1e6);
  const lAttn = l.medianMs - l.base.medianMs;
  const handOff = o.attentionMs - (o.kernelsMs ?? NaN);
  return [
    `where a step goes at context ${ctx}, batch ${batch}: ours ${fmt(o.medianMs)} ms = attention kernels ${fmt(o.attentionMs)} ms (${fmt((100 * o.attentionMs) / o.medianMs, 0)}%` +
      (o.kernelsMs === undefined ? '' : `: the kernels back to back ${fmt(o.kernelsMs)} ms + ${fmt(handOff)} ms of converting each layer's inputs and output and waiting for it`) +
      `) + ` +
      `TypeScript ${fmt(rest)} ms (${fmt((100 * rest) / o.medianMs, 0)}%: projections, MLP, LM head, ${(model.ours.tsMacsPerToken / 1e6).toFixed(1)} M multiply-adds per token at ${fmt(gmacs, 2)} GMAC/s); ` +
      `llama.cpp ${fmt(l.medianMs)} ms = attention over the context ${fmt(lAttn)} ms (${fmt((100 * lAttn) / l.medianMs, 0)}%) + the rest ${fmt(l.base.medianMs)} ms`,
  ];
}

function updateDocs() {
  const doc = path.join(root, 'docs', 'performance-model.md');
  const text = readFileSync(doc, 'utf8');
  const start = '<!-- bench:model:start -->', end = '<!-- bench:model:end -->';
  const body = [`Run ${results.date.slice(0, 16).replace('T', ' ')} UTC on ${results.machine}; threads: ${results.threads ?? 'all'} for llama.cpp, ${results.oursThreads ?? results.threads ?? 'all'} in our CPU pool; load average ${results.loadBefore} before, ${results.loadAfter} after.`, ''];
  for (const [name, m] of Object.entries(results.models)) {
    const c = m.config;
    body.push(`**${name}**: ${m.label} (emb ${c.emb}, ${c.layers} layers, ${c.heads} heads, nope ${c.nopeDim} + rope ${c.ropeDim}, v ${c.vHeadDim}, latent ${c.kvLoraRank}${c.qLoraRank ? `, q_lora ${c.qLoraRank}` : ''}, MLP ${c.ffn}, vocab ${c.vocab}; ${(m.ours.parameters / 1e6).toFixed(1)} M parameters)`, '', ...markdownTable(m), '', ...whereTimeGoes(m).map((l) => `${l[0].toUpperCase()}${l.slice(1)}.`), '');
  }
  const i = text.indexOf(start), j = text.indexOf(end);
  if (i < 0 || j < 0) throw new Error(`${doc} has no ${start} … ${end} section`);
  writeFileSync(doc, text.slice(0, i + start.length) + '\n' + body.join('\n') + '\n' + text.slice(j));
  console.log(`docs/performance-model.md: table rewritten`);
}
