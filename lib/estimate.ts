// mla-kernels/estimate: KV-cache sizes of MHA, GQA, MQA and MLA (pure arithmetic; the `mla-kernels estimate` command).
/**
 * KV-cache size: how many bytes the attention cache of a model takes for a batch and a context length, with plain
 * multi-head attention (MHA), grouped-query attention (GQA), multi-query attention (MQA) and multi-head latent
 * attention (MLA), and how much MLA (or GQA, MQA) saves against MHA. Pure arithmetic:
 *
 *   elements cached per token and layer:  MHA 2·H·head_dim   GQA 2·K·head_dim   MQA 2·head_dim   MLA kv_lora_rank + rope_dim
 *   bytes = elements · layers · context · batch · bytes per element
 *
 * `head_dim` defaults to ceil(emb / H) when an embedding width is given instead. MLA caches one latent row per
 * token and layer ([c_kv, k_pe]); `ropeDim` 0 counts the latent alone, which is how the published example
 * (emb 2048, 24 heads, latent 1024 → 4.03×) counts it. Nothing here needs the addon.
 * @module mla-kernels/estimate
 */
import { DTYPE_SIZES, type LatentCacheDType } from './dtypes.js';

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
  /** Key/value heads K of the GQA comparison; must divide `heads`. Default: the largest divisor of heads not above heads / 8. */
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

/**
 * A bad estimator option. `describe` words the problem with any naming of the options: the API's names (`message`,
 * e.g. "kvHeads (7) must divide heads (24)") or the CLI's flags ("--kv-heads (7) must divide --heads (24)").
 */
export class EstimateOptionError extends RangeError {
  constructor(
    /** The option at fault. */
    readonly option: keyof EstimateOptions,
    /** The message, with each option named by `name`. */
    readonly describe: (name: (option: keyof EstimateOptions) => string) => string,
  ) {
    super(`estimate: ${describe((o) => o)}`);
    this.name = 'EstimateOptionError';
  }
}

function positiveInt(name: keyof EstimateOptions, v: unknown, allowZero = false): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (allowZero ? 0 : 1))
    throw new EstimateOptionError(name, (n) => `${n(name)} must be an integer ${allowZero ? '>= 0' : '>= 1'}, got ${String(v)}`);
  return v;
}

/** The default GQA grouping: the largest divisor of `heads` not above heads / 8 (at least 1). */
export function defaultKvHeads(heads: number): number {
  for (let k = Math.max(1, Math.floor(heads / 8)); k > 1; k--) if (heads % k === 0) return k;
  return 1;
}

/** Fills in the defaults and checks every number. */
function resolveEstimateOptions(o: EstimateOptions): Estimate['options'] {
  const heads = positiveInt('heads', o.heads);
  let headDim: number;
  if (o.headDim !== undefined) headDim = positiveInt('headDim', o.headDim);
  else if (o.emb !== undefined) headDim = Math.ceil(positiveInt('emb', o.emb) / heads);
  else throw new EstimateOptionError('headDim', (n) => `give ${n('headDim')} or ${n('emb')} (head dim = ceil(emb / heads))`);
  const dtype = o.dtype ?? 'bf16';
  if (!Object.prototype.hasOwnProperty.call(CACHE_DTYPE_BYTES, dtype))
    throw new EstimateOptionError('dtype', (n) => `${n('dtype')} must be one of ${Object.keys(CACHE_DTYPE_BYTES).join(', ')}, got ${String(dtype)}`);
  const kvHeads = o.kvHeads === undefined ? defaultKvHeads(heads) : positiveInt('kvHeads', o.kvHeads);
  // GQA shares each key/value head among an equal group of query heads.
  if (heads % kvHeads !== 0) throw new EstimateOptionError('kvHeads', (n) => `${n('kvHeads')} (${kvHeads}) must divide ${n('heads')} (${heads})`);
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
 * DeepSeek's attention shapes (their published configurations): H heads, kv_lora_rank 512, rope 64, nope 128,
 * v 128. The MHA of the comparison is the same model with per-head keys and values of 128 (2 · 128 · 128 · 2 bytes per token and
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

/** One chart panel: a configuration, drawn from context / 64 to its context. */
export interface PlotPanel {
  /** The panel's heading, e.g. "DeepSeek-V3 / R1 (671B) (--preset deepseek-v3)". */
  title?: string;
  options: EstimateOptions;
}

export interface PlotOptions {
  /** One configuration, or several side by side (one panel each, on a shared y axis). */
  panels: readonly PlotPanel[];
  /**
   * MLA latent widths drawn beside each configuration's own (rope as configured). Default: 128, 256, 512, 1024 when
   * there is one panel, none when there are several.
   */
  latents?: readonly number[];
  /** The chart's title. */
  title?: string;
}

/** A Vega-Lite specification (https://vega.github.io/vega-lite/), as plain JSON. */
export type VegaLiteSpec = Record<string, unknown>;

const SCHEME_COLORS = { MHA: '#d62728', GQA: '#ff7f0e', MQA: '#8c564b' } as const;
const MLA_COLORS = ['#9ecae1', '#6baed6', '#4292c6', '#2171b5', '#08519c', '#08306b'];

/**
 * The chart of {@link plotKvCacheSvg} as a Vega-Lite specification (no dependency needed): total cache bytes against
 * context length for MHA, GQA, MQA and MLA, both axes logarithmic, so that every line shows (cache size is linear in
 * context: the lines are parallel, and the gap between two is their ratio). Render it with Vega-Lite anywhere.
 */
export function kvCachePlotSpec(p: PlotOptions): VegaLiteSpec {
  if (!p.panels.length) throw new RangeError('kvCachePlotSpec: give at least one panel');
  const panels = p.panels.map((panel, i) => ({ title: panel.title ?? `configuration ${i + 1}`, options: resolveEstimateOptions(panel.options) }));
  const single = panels.length === 1;
  const extraLatents = p.latents ?? (single ? [128, 256, 512, 1024] : []);
  const rows: { panel: string; series: string; context: number; gb: number }[] = [];
  const mlaSeries: string[] = [];
  let minContext = Infinity;
  let maxContext = 1;
  for (const { title, options: o } of panels) {
    const end = Math.max(1, o.context);
    const start = Math.max(1, 2 ** Math.floor(Math.log2(end / 64)));
    minContext = Math.min(minContext, start);
    maxContext = Math.max(maxContext, end);
    const at = (context: number, kvLoraRank = o.kvLoraRank) => estimateKvCache({ ...o, context, kvLoraRank });
    const latents = [...new Set([...extraLatents, o.kvLoraRank])].sort((a, b) => a - b);
    // One panel: each line's size at the right end is in its legend entry. Several: the legend names schemes only.
    const sized = (label: string, bytes: number) => (single ? `${label}: ${formatGB(bytes)}` : label);
    const series: { series: string; pick: (e: Estimate) => SchemeEstimate; kvLoraRank?: number }[] = [
      { series: sized(single ? at(end).mha.label : 'MHA', at(end).mha.totalBytes), pick: (e) => e.mha },
      { series: sized(single ? at(end).gqa.label : 'GQA', at(end).gqa.totalBytes), pick: (e) => e.gqa },
      { series: sized(single ? at(end).mqa.label : 'MQA', at(end).mqa.totalBytes), pick: (e) => e.mqa },
      ...latents.map((l) => {
        const mla = at(end, l).mla;
        const own = l === o.kvLoraRank && latents.length > 1 ? ' (this model)' : '';
        return { series: sized(`${mla.label}${own}`, mla.totalBytes), pick: (e: Estimate) => e.mla, kvLoraRank: l };
      }),
    ];
    for (const s of series) {
      if (s.kvLoraRank !== undefined && !mlaSeries.includes(s.series)) mlaSeries.push(s.series);
      for (const context of [start, end]) rows.push({ panel: title, series: s.series, context, gb: s.pick(at(context, s.kvLoraRank)).totalBytes / GB });
    }
  }
  const schemeSeries = [...new Set(rows.map((r) => r.series))].filter((s) => !mlaSeries.includes(s));
  const colorOf = (s: string) => SCHEME_COLORS[(['MHA', 'GQA', 'MQA'] as const).find((k) => s.startsWith(k)) ?? 'MHA'];
  const mlaColors = mlaSeries.map((_, i) => MLA_COLORS[Math.min(MLA_COLORS.length - 1, i + Math.max(0, MLA_COLORS.length - mlaSeries.length))]);
  const ticks: number[] = [];
  for (let c = minContext; c <= maxContext; c *= 2) ticks.push(c);
  const first = panels[0].options;
  const layer = {
    mark: { type: 'line', strokeWidth: 2.5, point: { size: 30 } },
    encoding: {
      x: {
        field: 'context',
        type: 'quantitative',
        scale: { type: 'log', base: 2, domain: [minContext, maxContext], nice: false },
        axis: { values: ticks, labelExpr: "datum.value >= 1024 ? datum.value / 1024 + 'k' : datum.value", title: 'context length (tokens per sequence, log scale)', grid: true },
      },
      y: { field: 'gb', type: 'quantitative', scale: { type: 'log' }, axis: { title: 'cache size (GB = 10^9 bytes, log scale)', grid: true } },
      color: {
        field: 'series',
        type: 'nominal',
        scale: { domain: [...schemeSeries, ...mlaSeries], range: [...schemeSeries.map(colorOf), ...mlaColors] },
        legend: { title: null, labelLimit: 360, orient: single ? 'right' : 'bottom', columns: single ? 1 : 4 },
      },
      strokeDash: { condition: { test: "indexof(datum.series, 'MLA') === 0", value: [8, 3] }, value: [1, 0] },
      tooltip: [{ field: 'series' }, { field: 'context' }, { field: 'gb', format: '.3f' }],
    },
  };
  const title = p.title ?? (single
    ? `KV cache against context: ${first.layers} layers, ${first.heads} heads × ${first.headDim}, batch ${first.batch}, ${first.dtype}`
    : `KV cache against context, batch ${first.batch}, ${first.dtype}`);
  const common = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: title, anchor: 'start' },
    data: { values: rows },
    config: { font: 'Helvetica, Arial, sans-serif', view: { stroke: '#888' }, background: 'white' },
  };
  if (single) return { ...common, width: 460, height: 320, ...layer };
  return {
    ...common,
    facet: { column: { field: 'panel', type: 'nominal', sort: panels.map((x) => x.title), title: null, header: { labelFontSize: 12, labelFontWeight: 'bold', labelLimit: 300 } } },
    spec: { width: 280, height: 280, ...layer },
  };
}

/**
 * The chart of {@link kvCachePlotSpec} as SVG, rendered in Node by Vega-Lite and Vega, the package's optional peer
 * dependencies (`npm install vega vega-lite`): loaded only here, so nothing else of the package needs them.
 */
export async function plotKvCacheSvg(p: PlotOptions): Promise<string> {
  const spec = kvCachePlotSpec(p);
  let vega: typeof import('vega');
  let vegaLite: typeof import('vega-lite');
  try {
    [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
  } catch (e) {
    throw new Error(`the chart is drawn by Vega-Lite and Vega, optional peer dependencies that are not installed: npm install vega vega-lite (${(e as Error).message})`);
  }
  const compiled = vegaLite.compile(spec as unknown as Parameters<typeof vegaLite.compile>[0]).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
