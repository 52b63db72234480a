// The operations: check what can be checked without the addon (JS types, unknown options, disposed
// tensors), let csrc/core validate shapes, dtypes and index values, queue the work on a stream.
import type { LatentCacheDType, FloatDType } from './dtypes.js';
import { MlaError } from './errors.js';
import { native, type TensorDescriptor } from './native.js';
import { Stream, defaultStream } from './stream.js';
import { Tensor } from './tensor.js';

/** Fused rotary embedding applied to `kPe` as it is written. */
export interface RopeOptions {
  /** [numTokens] i32: each token's position, a row of `cos` and `sin`. */
  positions: Tensor<'i32'>;
  /** [maxPositions, ropeDim / 2] f32. */
  cos: Tensor<'f32'>;
  /** [maxPositions, ropeDim / 2] f32. */
  sin: Tensor<'f32'>;
  /** `interleaved` rotates pairs (x[2j], x[2j+1]) as DeepSeek does; `neox` rotates (x[j], x[j + ropeDim/2]). */
  style: 'interleaved' | 'neox';
}

export interface AppendLatentCacheOptions {
  /** [numBlocks, blockSize, kvLoraRank + ropeDim], written in place at the given slots only. */
  cache: Tensor<LatentCacheDType>;
  /** [numTokens, kvLoraRank], the cache's dtype (any float dtype for an fp8 cache): each new token's normalised latent c_kv. */
  kvC: Tensor<FloatDType>;
  /** [numTokens, ropeDim], kvC's dtype: each token's rope key (before RoPE when `rope` is given). */
  kPe: Tensor<FloatDType>;
  /** [numTokens] i32: slot = block * blockSize + offset; a negative slot skips the token (padding). */
  slotMapping: Tensor<'i32'>;
  rope?: RopeOptions;
  /** An `fp8_e4m3` cache stores e4m3(value / cacheScale), rounded to nearest even, saturating at ±448. Default 1. */
  cacheScale?: number;
  stream?: Stream;
}

export interface MlaDecodeOptions {
  /** [batch, queryLen, numHeads, kvLoraRank + ropeDim]: absorbed queries [q_lat, q_pe]. */
  q: Tensor<FloatDType>;
  /** [numBlocks, blockSize, kvLoraRank + ropeDim], q's dtype or `fp8_e4m3`: the paged latent cache. */
  cache: Tensor<LatentCacheDType>;
  /** [batch, maxBlocksPerSeq] i32: the cache blocks of each sequence, in order. */
  blockTable: Tensor<'i32'>;
  /** [batch] i32: cached rows per sequence (0 allowed: zero output, lse = -Infinity). */
  seqLens: Tensor<'i32'>;
  /** Multiplies q·k; e.g. 1/sqrt(nopeDim + ropeDim) times the model's factor. Required, finite, > 0. */
  softmaxScale: number;
  /** Width of the value (the latent part of a cache row), 512 for DeepSeek-V2/V3. */
  kvLoraRank: number;
  /** An `fp8_e4m3` cache's values are its stored values times cacheScale (as appendLatentCache wrote them). Default 1. */
  cacheScale?: number;
  /** For queryLen > 1: query j of n sees the first seqLen - n + 1 + j rows. Default false. */
  causal?: boolean;
  /** [batch, queryLen, numHeads, kvLoraRank], q's dtype; allocated when not given. */
  out?: Tensor<FloatDType>;
  /** [batch, numHeads, queryLen] f32; allocated when not given. */
  lse?: Tensor<'f32'>;
  /** From planDecode for these seqLens on this stream's backend; made per call when not given. */
  plan?: DecodePlan;
  stream?: Stream;
}

export interface PlanDecodeOptions {
  /** [batch] i32: the cached rows of each sequence at this decode step. */
  seqLens: Tensor<'i32'>;
  numHeads: number;
  /** Query positions per sequence (1 for plain decode). Default 1. */
  queryLen?: number;
  /** Split each sequence by its own length only, so its result is bit-identical whatever else is batched with it. */
  batchInvariant?: boolean;
  /** The stream the plan's decodes will run on (its backend makes the plan). */
  stream?: Stream;
}

/**
 * How one decode step is split over the device (split-KV), made once per step on the host and passed to every
 * layer's mlaDecode of that step, so decode itself does no planning and no host synchronisation.
 */
export class DecodePlan {
  /** @internal */
  readonly _handle: unknown;
  readonly backend: string;
  /** Units of work (CTAs on a GPU) of one decode. */
  readonly numWorkItems: number;
  /** Sequences split over several workers and merged by log-sum-exp. */
  readonly numSplitSequences: number;
  /** @internal */
  constructor(backend: string, made: { handle: unknown; numWorkItems: number; numSplitSequences: number }) {
    this._handle = made.handle;
    this.backend = backend;
    this.numWorkItems = made.numWorkItems;
    this.numSplitSequences = made.numSplitSequences;
  }
}

/** Plans a decode step for the stream's backend; reuse the plan for every layer of the step. */
export function planDecode(options: PlanDecodeOptions): DecodePlan {
  const op = 'planDecode';
  const o = checkOptions(op, options, ['seqLens', 'numHeads', 'queryLen', 'batchInvariant', 'stream']);
  if (o.batchInvariant !== undefined && typeof o.batchInvariant !== 'boolean')
    throw new MlaError('E_ARGUMENT', `${op}: batchInvariant must be a boolean, got ${typeof o.batchInvariant}`);
  const params: Descriptors = {
    seqLens: tensorArg(op, o, 'seqLens'),
    numHeads: numberArg(op, o, 'numHeads'),
    queryLen: o.queryLen === undefined ? 1 : numberArg(op, o, 'queryLen'),
    batchInvariant: o.batchInvariant === true,
  };
  const stream = streamArg(op, o);
  return new DecodePlan(stream.backend, native().planDecode(stream._native(), params));
}

export interface MlaDecodeResult {
  /** [batch, queryLen, numHeads, kvLoraRank]: the latent output o_lat. */
  out: Tensor<FloatDType>;
  /** [batch, numHeads, queryLen] f32: natural-log log-sum-exp of the scaled scores. */
  lse: Tensor<'f32'>;
}

export interface AbsorbQueryOptions {
  /** [..., numHeads, nopeDim]. */
  qNope: Tensor<FloatDType>;
  /** [numHeads, nopeDim, kvLoraRank], qNope's dtype: the key half of DeepSeek's kv_b_proj per head. */
  wUk: Tensor<FloatDType>;
  /** Optional [..., numHeads, ropeDim]: appended after q_lat so the result is mlaDecode's q. */
  qPe?: Tensor<FloatDType>;
  /** [..., numHeads, kvLoraRank + ropeDim]; allocated when not given. */
  out?: Tensor<FloatDType>;
  stream?: Stream;
}

export interface UnabsorbOutputOptions {
  /** [..., numHeads, kvLoraRank]. */
  oLat: Tensor<FloatDType>;
  /** [numHeads, vHeadDim, kvLoraRank], oLat's dtype: the value half of kv_b_proj per head. */
  wUv: Tensor<FloatDType>;
  /** [..., numHeads, vHeadDim]; allocated when not given. */
  out?: Tensor<FloatDType>;
  stream?: Stream;
}

type Descriptors = Record<string, TensorDescriptor | number | boolean | string | undefined>;

function checkOptions(op: string, options: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (typeof options !== 'object' || options === null)
    throw new MlaError('E_ARGUMENT', `${op}: expected an options object, got ${options === null ? 'null' : typeof options}`);
  for (const key of Object.keys(options))
    if (!allowed.includes(key))
      throw new MlaError('E_ARGUMENT', `${op}: unknown option '${key}' (allowed: ${allowed.join(', ')})`);
  return options as Record<string, unknown>;
}

function tensorArg(op: string, o: Record<string, unknown>, name: string, optional = false, label = name): TensorDescriptor | undefined {
  const t = o[name];
  if (t === undefined && optional) return undefined;
  if (!(t instanceof Tensor))
    throw new MlaError('E_ARGUMENT', `${op}: ${label} must be a Tensor, got ${t === undefined ? 'nothing' : t === null ? 'null' : typeof t}`);
  return t._descriptor(label);
}

function numberArg(op: string, o: Record<string, unknown>, name: string): number {
  const v = o[name];
  if (typeof v !== 'number') throw new MlaError('E_ARGUMENT', `${op}: ${name} must be a number, got ${typeof v}`);
  return v;
}

function streamArg(op: string, o: Record<string, unknown>): Stream {
  const s = o.stream;
  if (s === undefined) return defaultStream();
  if (!(s instanceof Stream)) throw new MlaError('E_ARGUMENT', `${op}: stream must be a Stream`);
  return s;
}

/** Writes each new token's row [kvC, RoPE(kPe)] into its slot of the paged latent cache. */
export function appendLatentCache(options: AppendLatentCacheOptions): void {
  const op = 'appendLatentCache';
  const o = checkOptions(op, options, ['cache', 'kvC', 'kPe', 'slotMapping', 'rope', 'cacheScale', 'stream']);
  const params: Descriptors = {
    cache: tensorArg(op, o, 'cache'),
    kvC: tensorArg(op, o, 'kvC'),
    kPe: tensorArg(op, o, 'kPe'),
    slotMapping: tensorArg(op, o, 'slotMapping'),
    cacheScale: o.cacheScale === undefined ? undefined : numberArg(op, o, 'cacheScale'),
  };
  if (o.rope !== undefined) {
    const rope = checkOptions(`${op}: rope`, o.rope, ['positions', 'cos', 'sin', 'style']);
    if (rope.style !== 'interleaved' && rope.style !== 'neox')
      throw new MlaError('E_ARGUMENT', `${op}: rope.style must be 'interleaved' or 'neox', got ${String(rope.style)}`);
    params.ropeStyle = rope.style;
    params.positions = tensorArg(op, rope, 'positions', false, 'rope.positions');
    params.cos = tensorArg(op, rope, 'cos', false, 'rope.cos');
    params.sin = tensorArg(op, rope, 'sin', false, 'rope.sin');
  }
  const stream = streamArg(op, o);
  const rope = options.rope;
  const used = [options.kvC, options.kPe, options.slotMapping, rope?.positions, rope?.cos, rope?.sin];
  stream._submit(used, [options.cache], (s, after) => native().appendLatentCache(s, params, after));
}

/**
 * Absorbed MLA decode attention over the paged latent cache. Returns at once; `out` and `lse` are written
 * when the stream reaches the operation (`await out.read()` waits for it).
 */
export function mlaDecode(options: MlaDecodeOptions): MlaDecodeResult {
  const op = 'mlaDecode';
  const o = checkOptions(op, options, ['q', 'cache', 'blockTable', 'seqLens', 'softmaxScale', 'kvLoraRank', 'cacheScale', 'causal', 'out', 'lse', 'plan', 'stream']);
  if (o.plan !== undefined && !(o.plan instanceof DecodePlan)) throw new MlaError('E_ARGUMENT', `${op}: plan must come from planDecode`);
  if (o.causal !== undefined && typeof o.causal !== 'boolean')
    throw new MlaError('E_ARGUMENT', `${op}: causal must be a boolean, got ${typeof o.causal}`);
  const params: Descriptors = {
    q: tensorArg(op, o, 'q'),
    cache: tensorArg(op, o, 'cache'),
    blockTable: tensorArg(op, o, 'blockTable'),
    seqLens: tensorArg(op, o, 'seqLens'),
    softmaxScale: numberArg(op, o, 'softmaxScale'),
    kvLoraRank: numberArg(op, o, 'kvLoraRank'),
    cacheScale: o.cacheScale === undefined ? undefined : numberArg(op, o, 'cacheScale'),
    causal: o.causal === true,
    plan: (o.plan as DecodePlan | undefined)?._handle as never,
  };
  const stream = streamArg(op, o);
  let out = options.out;
  let lse = options.lse;
  if (out === undefined || lse === undefined) {
    const shapes = native().outputShapes(op, params);
    out ??= Tensor.empty(shapes.out, options.q.dtype, { device: stream.device });
    lse ??= Tensor.empty(shapes.lse, 'f32', { device: stream.device });
  }
  params.out = tensorArg(op, { out }, 'out');
  params.lse = tensorArg(op, { lse }, 'lse');
  stream._submit([options.q, options.cache, options.blockTable, options.seqLens], [out, lse], (s, after) => native().mlaDecode(s, params, after));
  return { out, lse };
}

/** q_lat[i] = W_uk[i]ᵀ q_nope[i] per head, followed by q_pe when given: decode's absorbed query. */
export function absorbQuery(options: AbsorbQueryOptions): Tensor<FloatDType> {
  const op = 'absorbQuery';
  const o = checkOptions(op, options, ['qNope', 'wUk', 'qPe', 'out', 'stream']);
  const params: Descriptors = { qNope: tensorArg(op, o, 'qNope'), wUk: tensorArg(op, o, 'wUk'), qPe: tensorArg(op, o, 'qPe', true) };
  const stream = streamArg(op, o);
  const out = options.out ?? Tensor.empty(native().outputShapes(op, params).out, options.qNope.dtype, { device: stream.device });
  params.out = tensorArg(op, { out }, 'out');
  stream._submit([options.qNope, options.wUk, options.qPe], [out], (s, after) => native().absorbQuery(s, params, after));
  return out;
}

/** o[i] = W_uv[i] o_lat[i] per head: the attention output in value space, before the model's W_o. */
export function unabsorbOutput(options: UnabsorbOutputOptions): Tensor<FloatDType> {
  const op = 'unabsorbOutput';
  const o = checkOptions(op, options, ['oLat', 'wUv', 'out', 'stream']);
  const params: Descriptors = { oLat: tensorArg(op, o, 'oLat'), wUv: tensorArg(op, o, 'wUv') };
  const stream = streamArg(op, o);
  const out = options.out ?? Tensor.empty(native().outputShapes(op, params).out, options.oLat.dtype, { device: stream.device });
  params.out = tensorArg(op, { out }, 'out');
  stream._submit([options.oLat, options.wUv], [out], (s, after) => native().unabsorbOutput(s, params, after));
  return out;
}
