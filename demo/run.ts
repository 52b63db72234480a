// The demo's driver: a batch of sequences with different prompt lengths, prefilled together and then decoded
// together one token per step, through the MLA decoder (kernels) and, side by side, the MHA decoder (TypeScript),
// comparing their logits at every step.
import os from 'node:os';
import { Stream, memoryStats, type BackendName } from 'mla-kernels';
import { Rng, argmax, relErr, type ModelDType } from './math.js';
import { DTYPE_BYTES, MhaDecoder, MlaDecoder, Weights, makeStep, type DecoderStats, type ModelConfig, type PrefillFormsStats, type SparseStats } from './model.js';
import { PagedCacheManager } from './paged.js';

/**
 * Bound on ‖logits_MLA − logits_MHA‖ / ‖logits_MHA‖ at every step, end to end through the whole model: the same
 * per-dtype bounds the test suite holds each operation to (README, "Testing").
 */
export const AGREEMENT_BOUND: Record<ModelDType, number> = { f32: 1e-5, f16: 2e-3, bf16: 1.2e-2 };

export interface DemoOptions {
  config: ModelConfig;
  /** Prompt length of each sequence (the batch is their count). */
  promptLens: number[];
  /** New tokens of each sequence (a sequence ends, and frees its blocks, after its own count). */
  newTokens: number[];
  backend: BackendName;
  mhaCompare: boolean;
  /** Draw a progress bar (on stderr when it is a terminal, else a few plain lines). */
  progress: boolean;
  /** Where the report goes (console.log by default). */
  print?: (line: string) => void;
  /** MLA prefill in `multi-head` form (default) or `absorbed` as decode runs. */
  prefillForm?: 'multi-head' | 'absorbed';
  /** Prompt tokens per prefill step (chunked prefill; its cached context gathered in chunks as long); 0: whole prompts. */
  prefillChunk?: number;
  /** Time the other MLA form on every prefill step too and compare the outputs (default true). */
  comparePrefill?: boolean;
  /** DeepSeek-V3.2's sparse attention in decode steps: the top-k rows a lightning indexer selects (0: dense, default). */
  sparseTopk?: number;
  /** Weights to run (a model file's; their config must be `config`); seeded random ones by default. */
  weights?: Weights;
  /** What the weights are, for the report (default: random weights and their seed). */
  source?: string;
  /** The prompt of each sequence as token ids (default: seeded random ids of promptLens). */
  prompts?: number[][];
  /** Token ids → text, for printing what was generated (a file's vocabulary). */
  detokenize?: (ids: number[]) => string;
}

export interface ModelRun {
  name: string;
  prefillSeconds: number;
  decodeSeconds: number;
  prefillTokens: number;
  decodeTokens: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  stats: DecoderStats;
}

export interface DemoResult {
  config: ModelConfig;
  backend: BackendName;
  device: string;
  promptLens: number[];
  newTokens: number[];
  /** Generated tokens per sequence (greedy, from the MLA decoder's logits). */
  generated: number[][];
  mla: ModelRun;
  mha?: ModelRun;
  agreement?: { steps: number; maxRelErr: number; meanRelErr: number; bound: number; pass: boolean; argmaxAgree: number; argmaxTotal: number };
  /** Decode steps in sparse form: the rows they attended to against the rows cached (layers and steps summed). */
  sparse?: SparseStats;
  /** The MLA prefill's attention in both forms (when compared): seconds over the prefill steps, and agreement. */
  prefillForms?: PrefillFormsStats & { form: 'multi-head' | 'absorbed'; chunk: number; prefillSteps: number };
  /** Pool sizes and the device's memory peak (GPU backends only). */
  mlaPoolBytes: number;
  devicePeakBytes?: number;
  processPeakRssBytes: number;
  weightSeconds: number;
  totalSeconds: number;
  machine: string;
}

export function machineDescription(): string {
  const cpus = os.cpus();
  return `${cpus.length} × ${cpus[0]?.model.trim() ?? 'unknown CPU'}, node ${process.version}`;
}

/** The progress bar: a live bar on a terminal (stderr), else a line at every quarter. Rates count decode only. */
class Progress {
  #total: number;
  #done = 0;
  #start = performance.now();
  #decodeStart = 0;
  #decodeDone = 0;
  #tty: boolean;
  #enabled: boolean;
  #lastPlain = -1;
  constructor(total: number, enabled: boolean) {
    this.#total = total;
    this.#enabled = enabled;
    this.#tty = !!process.stderr.isTTY;
  }
  /** The prefill step produced n tokens. */
  prefilled(n: number): void {
    this.#done += n;
    this.#decodeStart = performance.now();
    this.#decodeDone = this.#done;
    this.message(`prefill done in ${((this.#decodeStart - this.#start) / 1000).toFixed(1)} s; decoding …`);
  }
  tick(n: number, note: string): void {
    this.#done += n;
    if (!this.#enabled) return;
    const frac = this.#total ? this.#done / this.#total : 1;
    const now = performance.now();
    const rate = (this.#done - this.#decodeDone) / Math.max((now - this.#decodeStart) / 1000, 1e-9);
    const eta = rate > 0 ? (this.#total - this.#done) / rate : 0;
    const line = `${this.#done}/${this.#total} tokens  ${rate.toFixed(1)} tok/s  ${((now - this.#start) / 1000).toFixed(1)} s  eta ${eta.toFixed(0)} s  ${note}`;
    if (this.#tty) {
      const width = 30;
      const full = Math.round(frac * width);
      process.stderr.write(`\r[${'#'.repeat(full)}${'.'.repeat(width - full)}] ${line}\x1b[K`);
    } else {
      const quarter = Math.floor(frac * 4);
      if (quarter !== this.#lastPlain) {
        this.#lastPlain = quarter;
        process.stderr.write(`generating: ${line}\n`);
      }
    }
  }
  message(text: string): void {
    if (this.#enabled) process.stderr.write(`${text}\n`);
  }
  end(): void {
    if (this.#enabled && this.#tty) process.stderr.write('\n');
  }
}

export function fmtBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} KB`;
  return `${n} B`;
}

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const print = o.print ?? ((s: string) => console.log(s));
  const c = o.config;
  const t0 = performance.now();
  const B = o.promptLens.length;
  if (o.newTokens.length !== B) throw new Error(`newTokens has ${o.newTokens.length} entries for ${B} sequences`);
  const lengths = o.promptLens.map((p, b) => p + o.newTokens[b]);
  const maxPositions = Math.max(...lengths);
  // The pool holds every sequence at its full length at once (an engine would size it from a memory budget).
  const numBlocks = PagedCacheManager.blocksFor(lengths, c.blockSize);

  const stream = new Stream(o.backend);
  print(`mla-kernels demo: DeepSeek-style MLA decoder, ${c.layers} layers, ${o.source ? 'weights of' : 'random weights'} ${o.source ?? `(seed ${c.seed})`}, on ${o.backend} (${stream.device}), ${c.dtype}`);
  print(
    `  emb ${c.emb}, ${c.heads} heads (nope ${c.nopeDim} + rope ${c.ropeDim}, v ${c.vHeadDim}), latent ${c.kvLoraRank}, ` +
      `${c.qLoraRank ? `q_lora ${c.qLoraRank}` : 'plain query projection'}, MLP ${c.ffn}, vocab ${c.vocab}, block ${c.blockSize}`,
  );
  if (c.moe) {
    const m = c.moe;
    print(
      `  MoE after ${m.denseLayers} dense layer${m.denseLayers === 1 ? '' : 's'}: ${m.experts} experts of ${m.expertFfn} (${m.expertsUsed} per token, ${m.gating} gates` +
        `${m.selectionBias ? ' + selection bias' : ''}${m.groups > 1 ? `, best ${m.groupsUsed} of ${m.groups} groups` : ''}${m.normTopK ? ', normalised' : ''}` +
        `${m.routedScale && m.routedScale !== 1 ? `, × ${m.routedScale}` : ''}) + ${m.sharedExperts} shared`,
    );
  }
  if (c.ropeScaling && c.ropeScaling.type !== 'none') print(`  RoPE scaling: ${c.ropeScaling.type} × ${c.ropeScaling.factor} (original context ${c.ropeScaling.originalContext})`);
  print('  attention: absorbQuery → appendLatentCache (RoPE fused) → mlaDecode → unabsorbOutput on the addon; the rest in TypeScript');
  print(
    `  prefill: ${(o.prefillForm ?? 'multi-head') === 'multi-head' ? 'multi-head form (gatherLatentCache → upProjectKv → mlaPrefill, context merged by mergeAttentionStates)' : 'absorbed, as decode'}` +
      `${o.prefillChunk ? `, in chunks of ${o.prefillChunk} tokens` : ', whole prompts'}`,
  );
  if (o.sparseTopk)
    print(`  decode: DeepSeek Sparse Attention, top-${o.sparseTopk}: appendIndexerCache (fp8 keys) → lightningIndexer (4 heads of 32, random weights) → mlaSparseDecode`);
  print(`  batch ${B}: prompts [${o.promptLens.join(', ')}], new tokens [${o.newTokens.join(', ')}]; machine: ${machineDescription()}`);

  const w0 = performance.now();
  const weights = o.weights ?? new Weights(c);
  const weightSeconds = (performance.now() - w0) / 1000;
  const prefillForm = o.prefillForm ?? 'multi-head', chunk = o.prefillChunk ?? 0, comparePrefill = o.comparePrefill ?? true;
  const mla = new MlaDecoder(weights, stream, numBlocks, maxPositions, { form: prefillForm, contextChunk: chunk, compare: comparePrefill && prefillForm === 'multi-head' }, o.sparseTopk ? { topk: o.sparseTopk } : undefined);
  const mha = o.mhaCompare ? new MhaDecoder(weights, numBlocks, maxPositions) : null;
  print(`  weights: ${(weights.parameters / 1e6).toFixed(2)} M parameters (${fmtBytes(weights.bytes)} in ${c.dtype})` + (o.weights ? '' : `, made in ${weightSeconds.toFixed(1)} s`));

  const rng = new Rng(c.seed ^ 0x9e3779b9);
  const prompts = o.prompts ?? o.promptLens.map((p) => Array.from({ length: p }, () => rng.int(0, c.vocab - 1)));
  const generated: number[][] = prompts.map(() => []);
  const timing = { mla: { prefill: 0, decode: 0, decodeTokens: 0 }, mha: { prefill: 0, decode: 0, decodeTokens: 0 } };
  const bound = AGREEMENT_BOUND[c.dtype];
  const agree = { steps: 0, max: 0, sum: 0, argmaxAgree: 0, argmaxTotal: 0 };
  const totalNew = o.newTokens.reduce((a, b) => a + b, 0);
  const progress = new Progress(totalNew, o.progress);

  const ids = prompts.map((_, b) => b);
  for (const id of ids) {
    mla.addSequence(id);
    mha?.addSequence(id);
  }

  /** One step through both models: returns the MLA logits; compares with MHA. */
  const step = async (seqIds: number[], counts: number[], tokens: number[][], starts: number[], phase: 'prefill' | 'decode'): Promise<Float32Array> => {
    const s = makeStep(seqIds, counts, tokens, starts);
    let a = performance.now();
    const logits = await mla.forward(s);
    timing.mla[phase] += (performance.now() - a) / 1000;
    if (mha) {
      a = performance.now();
      const ref = await mha.forward(s);
      timing.mha[phase] += (performance.now() - a) / 1000;
      const err = relErr(logits, ref, logits.length);
      agree.steps++;
      agree.max = Math.max(agree.max, err);
      agree.sum += err;
      for (let b = 0; b < seqIds.length; b++) {
        agree.argmaxTotal++;
        if (argmax(logits, b * c.vocab, c.vocab) === argmax(ref, b * c.vocab, c.vocab)) agree.argmaxAgree++;
      }
    }
    return logits;
  };

  const finish = (id: number) => {
    mla.endSequence(id);
    mha?.endSequence(id);
  };

  // Prefill: every prompt in batched steps (all of it at once, or chunk tokens of each at a time: a later chunk attends
  // to the earlier ones through the cache); a sequence's first new token comes from its prompt's last row.
  progress.message(
    `prefill: ${B} prompt${B > 1 ? 's' : ''}, ${o.promptLens.reduce((x, y) => x + y, 0)} tokens, ${chunk ? `chunks of ${chunk} tokens` : 'one batched step per layer'}${mha ? ' (MLA, then MHA)' : ''} …`,
  );
  const prefilled = ids.map(() => 0);
  let logits: Float32Array = new Float32Array(0);
  let prefillSteps = 0;
  for (let pending = ids; pending.length > 0; pending = ids.filter((id) => prefilled[id] < o.promptLens[id])) {
    const counts = pending.map((id) => (chunk > 0 ? Math.min(chunk, o.promptLens[id] - prefilled[id]) : o.promptLens[id] - prefilled[id]));
    logits = await step(pending, counts, pending.map((id, b) => prompts[id].slice(prefilled[id], prefilled[id] + counts[b])), pending.map((id) => prefilled[id]), 'prefill');
    prefillSteps++;
    pending.forEach((id, b) => {
      prefilled[id] += counts[b];
      if (prefilled[id] === o.promptLens[id]) generated[id].push(argmax(logits, b * c.vocab, c.vocab));
    });
  }
  progress.prefilled(B);
  let active = ids.filter((id) => generated[id].length < o.newTokens[id]);
  for (const id of ids) if (!active.includes(id)) finish(id);

  // Decode: one token per active sequence per step; a sequence that has its tokens ends and frees its blocks.
  while (active.length > 0) {
    logits = await step(
      active,
      active.map(() => 1),
      active.map((id) => [generated[id][generated[id].length - 1]]),
      active.map((id) => o.promptLens[id] + generated[id].length - 1),
      'decode',
    );
    timing.mla.decodeTokens += active.length;
    timing.mha.decodeTokens += mha ? active.length : 0;
    active.forEach((id, b) => generated[id].push(argmax(logits, b * c.vocab, c.vocab)));
    progress.tick(active.length, `batch ${active.length}, blocks in use ${mla.cache.pool.inUse}/${mla.cache.pool.numBlocks}` + (mha ? `, max rel err ${agree.max.toExponential(1)}` : ''));
    const ended = active.filter((id) => generated[id].length >= o.newTokens[id]);
    for (const id of ended) finish(id);
    active = active.filter((id) => !ended.includes(id));
  }
  progress.end();
  await stream.synchronize();

  const prefillTokens = o.promptLens.reduce((a, b) => a + b, 0);
  const run = (name: string, t: typeof timing.mla, stats: DecoderStats): ModelRun => ({
    name,
    prefillSeconds: t.prefill,
    decodeSeconds: t.decode,
    prefillTokens,
    decodeTokens: t.decodeTokens,
    prefillTokensPerSecond: prefillTokens / t.prefill,
    decodeTokensPerSecond: t.decodeTokens / Math.max(t.decode, 1e-9),
    stats,
  });
  const result: DemoResult = {
    config: c,
    backend: o.backend,
    device: stream.device,
    promptLens: o.promptLens,
    newTokens: o.newTokens,
    generated,
    mla: run('MLA (addon)', timing.mla, mla.stats()),
    mlaPoolBytes: mla.poolBytes,
    processPeakRssBytes: process.resourceUsage().maxRSS * 1024,
    weightSeconds,
    totalSeconds: 0,
    machine: machineDescription(),
  };
  if (mha) {
    result.mha = run('MHA (TypeScript)', timing.mha, mha.stats());
    result.agreement = {
      steps: agree.steps,
      maxRelErr: agree.max,
      meanRelErr: agree.sum / agree.steps,
      bound,
      pass: agree.max <= bound,
      argmaxAgree: agree.argmaxAgree,
      argmaxTotal: agree.argmaxTotal,
    };
  }
  if (mla.sparseStats) result.sparse = { ...mla.sparseStats };
  if (mla.prefillForms.tokens > 0) result.prefillForms = { ...mla.prefillForms, form: prefillForm, chunk, prefillSteps };
  if (stream.device !== 'cpu') result.devicePeakBytes = memoryStats(stream.device).peakBytes;
  mla.dispose();
  stream.dispose();
  result.totalSeconds = (performance.now() - t0) / 1000;
  printSummary(result, print);
  if (o.detokenize) {
    print('');
    print('as text:');
    result.generated.slice(0, 4).forEach((g, b) => print(`  seq ${b}: ${JSON.stringify(o.detokenize!(prompts[b]))} → ${JSON.stringify(o.detokenize!(g))}`));
  }
  return result;
}

function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r, ri) =>
    ri === 1 ? widths.map((w) => '-'.repeat(w)).join('  ') : r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  '),
  );
}

export function printSummary(r: DemoResult, print: (line: string) => void): void {
  const shown = r.generated.slice(0, 4).map((g, b) => `  seq ${b} (prompt ${r.promptLens[b]}): ${g.slice(0, 12).join(' ')}${g.length > 12 ? ` … (${g.length} tokens)` : ''}`);
  print('');
  print('generated (token ids, greedy):');
  for (const l of shown) print(l);
  if (r.generated.length > 4) print(`  … and ${r.generated.length - 4} more sequences`);
  print('');
  const m = r.mla, h = r.mha;
  const ratio = (a: number | undefined, b: number) => (a === undefined ? '' : `${(a / b).toFixed(2)}×`);
  const rows: string[][] = [
    ['', m.name, h ? h.name : 'MHA (not run)', 'MHA / MLA'],
    [],
    ['prefill tokens/s', m.prefillTokensPerSecond.toFixed(1), h ? h.prefillTokensPerSecond.toFixed(1) : '', h ? ratio(h.prefillTokensPerSecond, m.prefillTokensPerSecond) : ''],
    ['decode tokens/s', m.decodeTokensPerSecond.toFixed(1), h ? h.decodeTokensPerSecond.toFixed(1) : '', h ? ratio(h.decodeTokensPerSecond, m.decodeTokensPerSecond) : ''],
    ['attention time', `${m.stats.attentionSeconds.toFixed(2)} s`, h ? `${h.stats.attentionSeconds.toFixed(2)} s` : '', h ? ratio(h.stats.attentionSeconds, m.stats.attentionSeconds) : ''],
  ];
  const mhaPerToken = r.config.layers * r.config.heads * (r.config.nopeDim + r.config.ropeDim + r.config.vHeadDim) * DTYPE_BYTES[r.config.dtype];
  const hp = h?.stats.cacheBytesPerToken ?? mhaPerToken;
  rows.push(
    ['cache bytes / token', `${m.stats.cacheBytesPerToken}`, `${hp}${h ? '' : ' (computed)'}`, ratio(hp, m.stats.cacheBytesPerToken)],
    h
      ? ['cache bytes (peak tokens)', fmtBytes(m.stats.peakTokenBytes), fmtBytes(h.stats.peakTokenBytes), ratio(h.stats.peakTokenBytes, m.stats.peakTokenBytes)]
      : ['cache bytes (peak tokens)', fmtBytes(m.stats.peakTokenBytes), `${fmtBytes((m.stats.peakTokenBytes / m.stats.cacheBytesPerToken) * hp)} (computed)`, ratio(hp, m.stats.cacheBytesPerToken)],
    ['cache blocks (peak)', `${m.stats.peakBlocks} = ${fmtBytes(m.stats.peakCacheBytes)}`, h ? `${h.stats.peakBlocks} = ${fmtBytes(h.stats.peakCacheBytes)}` : '', h ? ratio(h.stats.peakCacheBytes, m.stats.peakCacheBytes) : ''],
    ['peak memory', fmtBytes(m.stats.peakMemoryBytes), h ? fmtBytes(h.stats.peakMemoryBytes) : '', h ? ratio(h.stats.peakMemoryBytes, m.stats.peakMemoryBytes) : ''],
  );
  for (const l of table(rows)) print(l);
  print('  peak memory = weights + cache blocks at the peak + activations and scratch (in the model dtype; the MHA');
  print('  cache is held as f32 by the TypeScript loops but counted at the dtype size, as a native MHA cache would be).');
  print(`  process peak RSS (${h ? 'both models, ' : ''}whole process): ${fmtBytes(r.processPeakRssBytes)}` + (r.devicePeakBytes !== undefined ? `; ${r.device} memory peak: ${fmtBytes(r.devicePeakBytes)}` : ''));
  print('');
  const a = r.agreement;
  if (a)
    print(
      `MLA vs MHA logits: max rel err ${a.maxRelErr.toExponential(2)} (mean ${a.meanRelErr.toExponential(2)}) over ${a.steps} steps, ` +
        `bound ${a.bound} (${r.config.dtype}): ${a.pass ? 'PASS' : 'FAIL'}; greedy tokens agree ${a.argmaxAgree}/${a.argmaxTotal}`,
    );
  else print('MLA vs MHA logits: not compared (the MHA model was not run; --mha-compare runs it)');
  const f = r.prefillForms;
  if (f)
    print(
      `MLA prefill attention over ${f.tokens} prompt tokens (${f.prefillSteps} step${f.prefillSteps > 1 ? 's' : ''}${f.chunk ? `, chunks of ${f.chunk}` : ''}): ` +
        `multi-head form ${(f.tokens / f.multiHeadSeconds).toFixed(1)} tokens/s (${f.multiHeadSeconds.toFixed(2)} s), ` +
        `absorbed ${(f.tokens / f.absorbedSeconds).toFixed(1)} tokens/s (${f.absorbedSeconds.toFixed(2)} s): ${(f.absorbedSeconds / f.multiHeadSeconds).toFixed(2)}× (outputs within ${f.maxRelErr.toExponential(1)} of each other)`,
    );
  const s = r.sparse;
  if (s)
    print(
      `sparse decode (top-${s.topk}): attended ${s.selectedRows} of ${s.cachedRows} cached rows over the layers and decode steps ` +
        `(${((100 * s.selectedRows) / Math.max(s.cachedRows, 1)).toFixed(1)}%)`,
    );
  print(`total ${r.totalSeconds.toFixed(1)} s (weights ${r.weightSeconds.toFixed(1)} s)`);
}
