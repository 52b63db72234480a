// mla-kernels/estimate: KV-cache sizes of MHA, GQA, MQA and MLA (pure arithmetic; the `mla-kernels estimate` command).
import { writeFileSync } from 'node:fs';
import { DTYPE_SIZES, type LatentCacheDType } from './dtypes.js';

/**
 * KV-cache size: how many bytes the attention cache of a model takes for a batch and a context length, with plain
 * multi-head attention (MHA), grouped-query attention (GQA), multi-query attention (MQA) and multi-head latent
 * attention (MLA), and how much MLA (or GQA, MQA) saves against MHA. Pure arithmetic (MLA.md, "KV-cache size"):
 *
 *   elements cached per token and layer:  MHA 2·H·head_dim   GQA 2·K·head_dim   MQA 2·head_dim   MLA kv_lora_rank + rope_dim
 *   bytes = elements · layers · context · batch · bytes per element
 *
 * `head_dim` defaults to ceil(emb / H) when an embedding width is given instead. MLA caches one latent row per
 * token and layer ([c_kv, k_pe]); `ropeDim` 0 counts the latent alone, which is how the published example
 * (emb 2048, 24 heads, latent 1024 → 4.03×) counts it.
 */

/**
 * Cache element types and their bytes: the package's latent-cache dtypes (dtypes.ts), and `int8`, a quantised cache
 * of other engines (scales not counted, as for `fp8_e4m3`).
 */
export type CacheDType = Exclude<LatentCacheDType, 'fp8_ds_mla'> | 'int8';
export const CACHE_DTYPE_BYTES: Readonly<Record<CacheDType, number>> = {
  f32: DTYPE_SIZES.f32,
  bf16: DTYPE_SIZES.bf16,
  f16: DTYPE_SIZES.f16,
  fp8_e4m3: DTYPE_SIZES.fp8_e4m3,
  int8: 1,
};

/** 10⁹ bytes: the estimator's GB. */
export const GB = 1e9;

export interface EstimateOptions {
  /** Transformer layers. */
  layers: number;
  /** Query heads H (the MHA key/value heads). */
  heads: number;
  /** Per-head key (and value) width of the MHA / GQA / MQA comparison. Default ceil(emb / heads). */
  headDim?: number;
  /** Model width; used only for the default headDim. */
  emb?: number;
  /** Key/value heads K of the GQA comparison. Default max(1, round(heads / 8)). */
  kvHeads?: number;
  /** MLA latent width d_c (kv_lora_rank). */
  kvLoraRank: number;
  /** MLA rope key width d_r, cached beside the latent. Default 0 (the latent alone). */
  ropeDim?: number;
  /** Tokens cached per sequence. */
  context: number;
  /** Sequences. Default 1. */
  batch?: number;
  /** Default bf16. */
  dtype?: CacheDType;
}

export interface SchemeEstimate {
  scheme: 'MHA' | 'GQA' | 'MQA' | 'MLA';
  /** e.g. "GQA (6 kv heads)", "MLA (512 + 64)". */
  label: string;
  /** Cached elements per token and layer. */
  elementsPerTokenLayer: number;
  /** Bytes per token over all layers. */
  bytesPerToken: number;
  /** Bytes of the whole cache: batch · context tokens, all layers. */
  totalBytes: number;
  /** MHA bytes / these bytes. */
  ratioVsMha: number;
  /** 1 − these bytes / MHA bytes, as a fraction. */
  savingVsMha: number;
}

export interface Estimate {
  /** The options with every default filled in. */
  options: Required<Omit<EstimateOptions, 'emb'>> & { emb?: number };
  bytesPerElement: number;
  mha: SchemeEstimate;
  gqa: SchemeEstimate;
  mqa: SchemeEstimate;
  mla: SchemeEstimate;
}

function positiveInt(name: string, v: unknown, allowZero = false): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (allowZero ? 0 : 1))
    throw new RangeError(`estimate: ${name} must be an integer ${allowZero ? '>= 0' : '>= 1'}, got ${String(v)}`);
  return v;
}

/** Fills in the defaults and checks every number. */
function resolveEstimateOptions(o: EstimateOptions): Estimate['options'] {
  const heads = positiveInt('heads', o.heads);
  let headDim: number;
  if (o.headDim !== undefined) headDim = positiveInt('headDim', o.headDim);
  else if (o.emb !== undefined) headDim = Math.ceil(positiveInt('emb', o.emb) / heads);
  else throw new RangeError('estimate: give headDim or emb (headDim = ceil(emb / heads))');
  const dtype = o.dtype ?? 'bf16';
  if (!Object.prototype.hasOwnProperty.call(CACHE_DTYPE_BYTES, dtype))
    throw new RangeError(`estimate: dtype must be one of ${Object.keys(CACHE_DTYPE_BYTES).join(', ')}, got ${String(dtype)}`);
  const kvHeads = o.kvHeads === undefined ? Math.max(1, Math.round(heads / 8)) : positiveInt('kvHeads', o.kvHeads);
  if (kvHeads > heads) throw new RangeError(`estimate: kvHeads (${kvHeads}) must not exceed heads (${heads})`);
  return {
    layers: positiveInt('layers', o.layers),
    heads,
    headDim,
    ...(o.emb !== undefined ? { emb: o.emb } : {}),
    kvHeads,
    kvLoraRank: positiveInt('kvLoraRank', o.kvLoraRank),
    ropeDim: o.ropeDim === undefined ? 0 : positiveInt('ropeDim', o.ropeDim, true),
    context: positiveInt('context', o.context, true),
    batch: o.batch === undefined ? 1 : positiveInt('batch', o.batch),
    dtype,
  };
}

/** Cache bytes of MHA, GQA, MQA and MLA for one configuration, with ratios and savings against MHA. */
export function estimateKvCache(options: EstimateOptions): Estimate {
  const o = resolveEstimateOptions(options);
  const bytesPerElement = CACHE_DTYPE_BYTES[o.dtype];
  const tokens = o.context * o.batch;
  const mhaElements = 2 * o.heads * o.headDim;
  const scheme = (s: SchemeEstimate['scheme'], label: string, elements: number): SchemeEstimate => {
    const bytesPerToken = elements * o.layers * bytesPerElement;
    return {
      scheme: s,
      label,
      elementsPerTokenLayer: elements,
      bytesPerToken,
      totalBytes: bytesPerToken * tokens,
      ratioVsMha: mhaElements / elements,
      savingVsMha: 1 - elements / mhaElements,
    };
  };
  return {
    options: o,
    bytesPerElement,
    mha: scheme('MHA', `MHA (${o.heads} heads)`, mhaElements),
    gqa: scheme('GQA', `GQA (${o.kvHeads} kv heads)`, 2 * o.kvHeads * o.headDim),
    mqa: scheme('MQA', 'MQA (1 kv head)', 2 * o.headDim),
    mla: scheme('MLA', `MLA (${o.kvLoraRank}${o.ropeDim ? ` + ${o.ropeDim}` : ''})`, o.kvLoraRank + o.ropeDim),
  };
}

export interface ModelPreset {
  name: string;
  description: string;
  layers: number;
  heads: number;
  /** The MHA head width of the comparison: DeepSeek's nope / value head width. */
  headDim: number;
  kvLoraRank: number;
  ropeDim: number;
  /** GQA key/value heads used for the comparison (a choice, not part of the model). */
  kvHeads: number;
}

/**
 * DeepSeek's attention shapes (MLA.md): H heads, kv_lora_rank 512, rope 64, nope 128, v 128. The MHA of the
 * comparison is the same model with per-head keys and values of 128 (MLA.md: 2 · 128 · 128 · 2 bytes per token and
 * layer in bf16), and GQA keeps 8 key/value heads (4 for V2-Lite's 16 heads).
 */
export const PRESETS: Readonly<Record<string, ModelPreset>> = {
  'deepseek-v2': { name: 'deepseek-v2', description: 'DeepSeek-V2 (236B)', layers: 60, heads: 128, headDim: 128, kvLoraRank: 512, ropeDim: 64, kvHeads: 8 },
  'deepseek-v2-lite': { name: 'deepseek-v2-lite', description: 'DeepSeek-V2-Lite (16B)', layers: 27, heads: 16, headDim: 128, kvLoraRank: 512, ropeDim: 64, kvHeads: 4 },
  'deepseek-v3': { name: 'deepseek-v3', description: 'DeepSeek-V3 / R1 (671B)', layers: 61, heads: 128, headDim: 128, kvLoraRank: 512, ropeDim: 64, kvHeads: 8 },
};

/** "3.25 GB" (10⁹ bytes, two decimals). */
export function formatGB(bytes: number): string {
  return `${(bytes / GB).toFixed(2)} GB`;
}

function withCommas(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** The estimate as a table (what `mla-kernels estimate` prints). */
export function formatEstimate(e: Estimate, title?: string): string {
  const o = e.options;
  const lines: string[] = [];
  const headDimNote = o.emb !== undefined && o.emb % o.heads !== 0 ? ` (${o.emb}/${o.heads} rounded up)` : o.emb !== undefined ? ` (${o.emb}/${o.heads})` : '';
  if (title) lines.push(title);
  lines.push(
    `KV cache for batch ${o.batch} × context ${withCommas(o.context)}, ${o.layers} layers, ${o.dtype} (${e.bytesPerElement} byte${e.bytesPerElement > 1 ? 's' : ''}/element)`,
    `${o.heads} heads × head dim ${o.headDim}${headDimNote}; MLA latent ${o.kvLoraRank} + rope ${o.ropeDim}; GB = 10^9 bytes`,
    '',
  );
  const rows = [e.mha, e.gqa, e.mqa, e.mla];
  const header = ['scheme', 'elements/token/layer', 'bytes/token', 'total bytes', 'total', 'MHA ÷', 'saving'];
  const body = rows.map((r) => [
    r.label,
    withCommas(r.elementsPerTokenLayer),
    withCommas(r.bytesPerToken),
    withCommas(r.totalBytes),
    formatGB(r.totalBytes),
    `${r.ratioVsMha.toFixed(2)}×`,
    `${(r.savingVsMha * 100).toFixed(2)}%`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  lines.push(fmt(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(fmt));
  lines.push(
    '',
    `MHA ${formatGB(e.mha.totalBytes)}, GQA ${formatGB(e.gqa.totalBytes)}, MQA ${formatGB(e.mqa.totalBytes)}, MLA ${formatGB(e.mla.totalBytes)}; ` +
      `MHA/GQA ${e.gqa.ratioVsMha.toFixed(2)}×, MHA/MLA ${e.mla.ratioVsMha.toFixed(2)}×; ` +
      `savings ${(e.gqa.savingVsMha * 100).toFixed(2)}% (GQA) and ${(e.mla.savingVsMha * 100).toFixed(2)}% (MLA)`,
  );
  return lines.join('\n');
}

export interface PlotOptions {
  /** The configuration plotted (its context is the right end of the x axis). */
  base: EstimateOptions;
  /** MLA latent widths drawn (rope as in base). Default [128, 256, 512, 1024] plus base.kvLoraRank. */
  latents?: number[];
  /** Plot title. */
  title?: string;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A tick step of 1, 2 or 5 × 10^k giving about `count` ticks up to `max`. */
function niceStep(max: number, count: number): number {
  const raw = max / count;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

/**
 * An SVG line chart (hand-written, no dependency) of total cache bytes against context length, 0 … base.context,
 * for MHA, GQA, MQA and MLA at several latent widths.
 */
export function plotKvCacheSvg(p: PlotOptions): string {
  const base = resolveEstimateOptions(p.base);
  const maxContext = Math.max(1, base.context);
  const latents = [...new Set([...(p.latents ?? [128, 256, 512, 1024]), base.kvLoraRank])].sort((a, b) => a - b);
  const at = (context: number, kvLoraRank = base.kvLoraRank) => estimateKvCache({ ...base, context, kvLoraRank });
  const end = at(maxContext);
  const series: { label: string; color: string; dash?: string; bytes: number }[] = [
    { label: end.mha.label, color: '#d62728', bytes: end.mha.totalBytes },
    { label: end.gqa.label, color: '#ff7f0e', bytes: end.gqa.totalBytes },
    { label: end.mqa.label, color: '#8c564b', dash: '2 4', bytes: end.mqa.totalBytes },
  ];
  const blues = ['#9ecae1', '#6baed6', '#4292c6', '#2171b5', '#08519c', '#08306b'];
  latents.forEach((l, i) => {
    const e = at(maxContext, l);
    series.push({ label: e.mla.label + (l === base.kvLoraRank ? ' ◀' : ''), color: blues[Math.min(blues.length - 1, i + Math.max(0, blues.length - latents.length))], dash: '8 3', bytes: e.mla.totalBytes });
  });
  const W = 820, H = 500, left = 90, right = 250, top = 50, bottom = 60;
  const pw = W - left - right, ph = H - top - bottom;
  const maxBytes = Math.max(...series.map((s) => s.bytes)) || 1;
  const useGB = maxBytes >= 1e8;
  const unit = useGB ? GB : 1e6;
  const yMax = maxBytes / unit;
  const yStep = niceStep(yMax, 6);
  const yTop = Math.ceil(yMax / yStep) * yStep || 1;
  // Contexts are mostly powers of two: ticks every 2^k tokens (labelled 1k, 2k, … when k >= 10), about 8 of them.
  const xStep = maxContext >= 16 ? 2 ** Math.round(Math.log2(maxContext / 8)) : niceStep(maxContext, 8);
  const x = (c: number) => left + (c / maxContext) * pw;
  const y = (v: number) => top + ph - (v / yTop) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  const title =
    p.title ??
    `KV cache vs context: ${base.layers} layers, ${base.heads} heads × ${base.headDim}, batch ${base.batch}, ${base.dtype}`;
  out.push(`<text x="${left}" y="28" font-size="15" font-weight="bold">${escapeXml(title)}</text>`);
  for (let v = 0; v <= yTop + 1e-9; v += yStep) {
    const yy = y(v).toFixed(1);
    out.push(`<line x1="${left}" y1="${yy}" x2="${left + pw}" y2="${yy}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${left - 8}" y="${yy}" text-anchor="end" dominant-baseline="middle">${+v.toFixed(6)}</text>`);
  }
  for (let c = 0; c <= maxContext + 1e-9; c += xStep) {
    const xx = x(c).toFixed(1);
    out.push(`<line x1="${xx}" y1="${top}" x2="${xx}" y2="${top + ph}" stroke="#f0f0f0"/>`);
    out.push(`<text x="${xx}" y="${top + ph + 18}" text-anchor="middle">${c >= 1024 && c % 1024 === 0 ? `${c / 1024}k` : c}</text>`);
  }
  out.push(`<rect x="${left}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${left + pw / 2}" y="${H - 15}" text-anchor="middle">context length (tokens per sequence)</text>`);
  out.push(`<text transform="translate(22 ${top + ph / 2}) rotate(-90)" text-anchor="middle">cache size (${useGB ? 'GB, 10^9 bytes' : 'MB, 10^6 bytes'})</text>`);
  series.forEach((s, i) => {
    // Cache size is linear in context: a straight line from the origin to the value at maxContext.
    out.push(
      `<line x1="${x(0).toFixed(1)}" y1="${y(0).toFixed(1)}" x2="${x(maxContext).toFixed(1)}" y2="${y(s.bytes / unit).toFixed(1)}" stroke="${s.color}" stroke-width="2.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`,
    );
    const ly = top + 10 + i * 22;
    out.push(`<line x1="${left + pw + 15}" y1="${ly}" x2="${left + pw + 45}" y2="${ly}" stroke="${s.color}" stroke-width="2.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    out.push(`<text x="${left + pw + 52}" y="${ly}" dominant-baseline="middle">${escapeXml(s.label)}: ${formatGB(s.bytes)}</text>`);
  });
  const noteY = top + 10 + series.length * 22 + 6;
  out.push(`<text x="${left + pw + 15}" y="${noteY}" fill="#555">sizes at ${maxContext.toLocaleString('en-US')} tokens</text>`);
  out.push(`<text x="${left + pw + 15}" y="${noteY + 18}" fill="#555">◀ the configuration's latent</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

const ESTIMATE_USAGE = `usage: mla-kernels estimate [options]

KV-cache bytes of MHA, GQA, MQA and MLA for a model, batch and context (GB = 10^9 bytes).
Elements per token and layer: MHA 2·H·head_dim, GQA 2·K·head_dim, MQA 2·head_dim, MLA kv_lora_rank + rope_dim.

  --preset NAME       deepseek-v2 | deepseek-v2-lite | deepseek-v3 (options below override it)
  --layers N          transformer layers
  --heads N           query heads H (the MHA key/value heads)
  --head-dim N        per-head key/value width of MHA/GQA/MQA
  --emb N             model width; head dim = ceil(emb / heads) when --head-dim is not given
  --kv-heads N        key/value heads K of GQA (default heads/8, at least 1)
  --latent N          MLA latent width kv_lora_rank (alias --kv-lora-rank)
  --rope N            MLA rope key width cached beside the latent (default 0 = the latent alone; presets 64)
  --context N         tokens per sequence, e.g. 8192 or 8k (default 8192)
  --batch N           sequences (default 1)
  --dtype T           f32 | bf16 | f16 | fp8_e4m3 | int8 (default bf16)
  --plot FILE.svg     also write an SVG chart of bytes against context for several latent widths, MHA, GQA and MQA
  --latents A,B,...   latent widths drawn by --plot (default 128,256,512,1024 and --latent)
  --json              print the estimate as JSON

With no model options it prints the three DeepSeek presets. Example (the published one; prints MHA 3.25 GB,
GQA 0.81 GB, MLA 0.81 GB, MHA/MLA 4.03×):
  mla-kernels estimate --emb 2048 --heads 24 --layers 48 --kv-heads 6 --latent 1024 --context 8192 --dtype bf16`;

function parseCount(flag: string, s: string | undefined): number {
  const m = s === undefined ? null : /^(\d+)([kKmM]?)$/.exec(s.trim());
  if (!m) throw new RangeError(`${flag} needs a whole number (e.g. 8192 or 8k), got ${s === undefined ? 'nothing' : `'${s}'`}`);
  const mult = m[2] === '' ? 1 : /k/i.test(m[2]) ? 1024 : 1024 * 1024;
  return Number(m[1]) * mult;
}

/**
 * `mla-kernels estimate …`: parses the options, prints the table (or JSON), writes the plot. Returns the exit code;
 * `write` receives the text (console.log by default).
 */
export function estimateCli(argv: readonly string[], write: (text: string) => void = (t) => console.log(t)): number {
  const numeric: Record<string, keyof EstimateOptions> = {
    '--layers': 'layers',
    '--heads': 'heads',
    '--head-dim': 'headDim',
    '--emb': 'emb',
    '--kv-heads': 'kvHeads',
    '--latent': 'kvLoraRank',
    '--kv-lora-rank': 'kvLoraRank',
    '--rope': 'ropeDim',
    '--context': 'context',
    '--batch': 'batch',
  };
  const given: Partial<Record<keyof EstimateOptions, number>> = {};
  let preset: ModelPreset | undefined;
  let dtype: CacheDType | undefined;
  let plot: string | undefined;
  let latents: number[] | undefined;
  let json = false;
  try {
    for (let i = 0; i < argv.length; i++) {
      const [flag, inline] = argv[i].includes('=') ? [argv[i].slice(0, argv[i].indexOf('=')), argv[i].slice(argv[i].indexOf('=') + 1)] : [argv[i], undefined];
      const value = () => (inline !== undefined ? inline : argv[++i]);
      if (flag === '--help' || flag === '-h') {
        write(ESTIMATE_USAGE);
        return 0;
      } else if (flag === '--json') json = true;
      else if (flag === '--preset') {
        const name = value();
        preset = name === undefined ? undefined : PRESETS[name.toLowerCase()];
        if (!preset) throw new RangeError(`--preset must be one of ${Object.keys(PRESETS).join(', ')}, got ${name === undefined ? 'nothing' : `'${name}'`}`);
      } else if (flag === '--dtype') {
        const d = value();
        if (d === undefined || !Object.prototype.hasOwnProperty.call(CACHE_DTYPE_BYTES, d))
          throw new RangeError(`--dtype must be one of ${Object.keys(CACHE_DTYPE_BYTES).join(', ')}, got ${d === undefined ? 'nothing' : `'${d}'`}`);
        dtype = d as CacheDType;
      } else if (flag === '--plot') {
        plot = value();
        if (!plot) throw new RangeError('--plot needs a file name (e.g. kv-cache.svg)');
      } else if (flag === '--latents') {
        const v = value();
        latents = (v ?? '').split(',').map((s) => parseCount('--latents', s));
      } else if (flag in numeric) given[numeric[flag]] = parseCount(flag, value());
      else throw new RangeError(`unknown option '${argv[i]}' (see mla-kernels estimate --help)`);
    }

    const modelGiven = preset !== undefined || ['layers', 'heads', 'headDim', 'emb', 'kvLoraRank'].some((k) => k in given);
    const common = { context: given.context ?? 8192, batch: given.batch ?? 1, dtype: dtype ?? 'bf16' } as const;
    const configs: { title?: string; options: EstimateOptions }[] = [];
    if (!modelGiven) {
      for (const p of Object.values(PRESETS))
        configs.push({ title: `${p.description} (--preset ${p.name})`, options: { ...presetOptions(p), ...given, ...common } });
    } else {
      const o = { ...(preset ? presetOptions(preset) : {}), ...given, ...common } as Partial<EstimateOptions>;
      if (given.emb !== undefined && given.headDim === undefined) delete o.headDim; // --emb over a preset's head dim
      const missing: string[] = [];
      if (o.layers === undefined) missing.push('--layers');
      if (o.heads === undefined) missing.push('--heads');
      if (o.headDim === undefined && o.emb === undefined) missing.push('--head-dim or --emb');
      if (o.kvLoraRank === undefined) missing.push('--latent');
      if (missing.length) throw new RangeError(`missing ${missing.join(', ')} (or give --preset)`);
      configs.push({ title: preset ? `${preset.description} (--preset ${preset.name})` : undefined, options: o as EstimateOptions });
    }
    const estimates = configs.map((c) => ({ title: c.title, estimate: estimateKvCache(c.options) }));
    if (json) write(JSON.stringify(estimates.length === 1 ? estimates[0].estimate : estimates, null, 2));
    else write(estimates.map((e) => formatEstimate(e.estimate, e.title)).join('\n\n'));
    if (plot) {
      const base = configs[configs.length - 1].options;
      writeFileSync(plot, plotKvCacheSvg({ base, latents }));
      if (!json) write(`\nwrote ${plot}`);
    }
    return 0;
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    console.error(`mla-kernels estimate: ${e.message}`);
    return 2;
  }
}

function presetOptions(p: ModelPreset): EstimateOptions {
  return { layers: p.layers, heads: p.heads, headDim: p.headDim, kvHeads: p.kvHeads, kvLoraRank: p.kvLoraRank, ropeDim: p.ropeDim, context: 8192 };
}
