// The operations: check what can be checked without the addon (JS types, unknown options, disposed
// tensors), let csrc/core validate shapes, dtypes and index values, queue the work on a stream.
import type { FloatDType } from './dtypes.js';
import { MlaError } from './errors.js';
import { native, type AbsorbInputs, type AbsorbParams, type AppendParams, type DecodeInputs, type DecodeParams, type TensorDescriptor, type UnabsorbInputs, type UnabsorbParams } from './native.js';
import { implicitStream, isStream, type Stream } from './stream.js';
import { Tensor, isTensor } from './tensor.js';

/** The option every operation takes. */
export interface StreamOptions {
  /**
   * The stream the operation is queued on, which also names the backend and device that run it (inputs and outputs
   * live there; index tensors stay on the host). Default: the default device's default stream.
   */
  stream?: Stream;
}

/** The options shared by the absorbed-attention operations ({@link mlaDecode}, mlaSparseDecode, mlaSparsePrefill). */
export interface LatentAttentionOptions extends StreamOptions {
  /** Multiplies q·k; e.g. 1/sqrt(nopeDim + ropeDim) times the model's factor. Required, finite, > 0. */
  softmaxScale: number;
  /** Width of the value (the latent part of a cache row), 512 for DeepSeek-V2/V3/V3.2. */
  kvLoraRank: number;
}

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

/**
 * The options of {@link appendLatentCache}. `D` is the dtype of `kvC`; the types require `kPe` to have it too, and
 * the cache to have it or be `fp8_e4m3`.
 */
export interface AppendLatentCacheOptions<D extends FloatDType = FloatDType> extends StreamOptions {
  /**
   * [numBlocks, blockSize, kvLoraRank + ropeDim], written in place at the given slots only. An `fp8_e4m3` cache
   * stores e4m3(value / cache.scale), rounded to nearest even, saturating at ±448 (docs/guide/fp8.md); an `fp8_ds_mla` cache
   * ([numBlocks, blockSize, bytes per token]) FlashMLA's V3.2 rows with a scale per 128 latent values (docs/sparse.md).
   */
  cache: Tensor<NoInfer<D> | 'fp8_e4m3' | 'fp8_ds_mla'>;
  /** [numTokens, kvLoraRank], the cache's dtype (any float dtype for an fp8 cache): each new token's normalised latent c_kv. */
  kvC: Tensor<D>;
  /** [numTokens, ropeDim], kvC's dtype: each token's rope key (before RoPE when `rope` is given). */
  kPe: Tensor<NoInfer<D>>;
  /** [numTokens] i32: slot = block * blockSize + offset; a negative slot skips the token (padding). */
  slotMapping: Tensor<'i32'>;
  rope?: RopeOptions;
}

/** The options of {@link mlaDecode}. `D` is q's dtype, which the types require of `out` and of a float cache. */
export interface MlaDecodeOptions<D extends FloatDType = FloatDType> extends LatentAttentionOptions {
  /** [batch, queryLen, numHeads, kvLoraRank + ropeDim]: absorbed queries [q_lat, q_pe]. */
  q: Tensor<D>;
  /**
   * [numBlocks, blockSize, kvLoraRank + ropeDim], q's dtype or `fp8_e4m3` (read with its scale), or `fp8_ds_mla`
   * ([numBlocks, blockSize, bytes per token], docs/sparse.md): the paged latent cache.
   */
  cache: Tensor<NoInfer<D> | 'fp8_e4m3' | 'fp8_ds_mla'>;
  /** [batch, maxBlocksPerSeq] i32: the cache blocks of each sequence, in order. */
  blockTable: Tensor<'i32'>;
  /** [batch] i32: cached rows per sequence (0 allowed: zero output, lse = -Infinity). */
  seqLens: Tensor<'i32'>;
  /** For queryLen > 1: query j of n sees the first seqLen - n + 1 + j rows. Default false. */
  causal?: boolean;
  /** [batch, queryLen, numHeads, kvLoraRank], q's dtype; allocated when not given. */
  out?: Tensor<NoInfer<D>>;
  /** [batch, numHeads, queryLen] f32; allocated when not given. */
  lse?: Tensor<'f32'>;
  /** From planDecode for these seqLens on this stream's backend; made per call when not given. */
  plan?: DecodePlan;
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
  const o = checkOptions(op, options, PLAN_OPTIONS);
  if (o.batchInvariant !== undefined && typeof o.batchInvariant !== 'boolean')
    throw new MlaError('E_ARGUMENT', `${op}: batchInvariant must be a boolean, got ${typeof o.batchInvariant}`);
  const seqLens = tensorArg(op, o.seqLens, 'seqLens');
  const numHeads = numberArg(op, o.numHeads, 'numHeads');
  const queryLen = o.queryLen === undefined ? 1 : numberArg(op, o.queryLen, 'queryLen');
  const stream = streamArg(op, o);
  return new DecodePlan(stream.backend, native().planDecode(stream._native(), [seqLens, numHeads, queryLen, o.batchInvariant === true]));
}

export interface MlaDecodeResult<D extends FloatDType = FloatDType> {
  /** [batch, queryLen, numHeads, kvLoraRank], q's dtype: the latent output o_lat. */
  out: Tensor<D>;
  /** [batch, numHeads, queryLen] f32: natural-log log-sum-exp of the scaled scores. */
  lse: Tensor<'f32'>;
}

/** The options of {@link absorbQuery}; every tensor has qNope's dtype `D`. */
export interface AbsorbQueryOptions<D extends FloatDType = FloatDType> extends StreamOptions {
  /** [..., numHeads, nopeDim]. */
  qNope: Tensor<D>;
  /** [numHeads, nopeDim, kvLoraRank], qNope's dtype: the key half of DeepSeek's kv_b_proj per head. */
  wUk: Tensor<NoInfer<D>>;
  /** Optional [..., numHeads, ropeDim]: appended after q_lat so the result is mlaDecode's q. */
  qPe?: Tensor<NoInfer<D>>;
  /** [..., numHeads, kvLoraRank + ropeDim]; allocated when not given. */
  out?: Tensor<NoInfer<D>>;
}

/** The options of {@link unabsorbOutput}; every tensor has oLat's dtype `D`. */
export interface UnabsorbOutputOptions<D extends FloatDType = FloatDType> extends StreamOptions {
  /** [..., numHeads, kvLoraRank]. */
  oLat: Tensor<D>;
  /** [numHeads, vHeadDim, kvLoraRank], oLat's dtype: the value half of kv_b_proj per head. */
  wUv: Tensor<NoInfer<D>>;
  /** [..., numHeads, vHeadDim]; allocated when not given. */
  out?: Tensor<NoInfer<D>>;
}

// Each operation's options, as Sets: checkOptions runs on every call.
/** @internal */
export const optionSet = (...names: string[]): ReadonlySet<string> => new Set(names);
const PLAN_OPTIONS = optionSet('seqLens', 'numHeads', 'queryLen', 'batchInvariant', 'stream');
const APPEND_OPTIONS = optionSet('cache', 'kvC', 'kPe', 'slotMapping', 'rope', 'stream');
const ROPE_OPTIONS = optionSet('positions', 'cos', 'sin', 'style');
const DECODE_OPTIONS = optionSet('q', 'cache', 'blockTable', 'seqLens', 'softmaxScale', 'kvLoraRank', 'causal', 'out', 'lse', 'plan', 'stream');
const ABSORB_OPTIONS = optionSet('qNope', 'wUk', 'qPe', 'out', 'stream');
const UNABSORB_OPTIONS = optionSet('oLat', 'wUv', 'out', 'stream');

const SCALE_TRAVELS = "an fp8 cache carries its scale, given where it is made: Tensor.zeros(shape, 'fp8_e4m3', { scale }) (or Tensor.empty, Tensor.from, Tensor.fromValues)";

/** @internal */
export function checkOptions(op: string, options: unknown, allowed: ReadonlySet<string>): Record<string, unknown> {
  if (typeof options !== 'object' || options === null)
    throw new MlaError('E_ARGUMENT', `${op}: expected an options object, got ${options === null ? 'null' : typeof options}`);
  for (const key of Object.keys(options))
    if (!allowed.has(key)) {
      if (key === 'cacheScale') throw new MlaError('E_ARGUMENT', `${op}: cacheScale is not an option: ${SCALE_TRAVELS}`);
      throw new MlaError('E_ARGUMENT', `${op}: unknown option '${key}' (allowed: ${[...allowed].join(', ')})`);
    }
  return options as Record<string, unknown>;
}

// The argument itself, not (options, name): a keyed read with changing names goes megamorphic in V8.
/** @internal */
export function tensorArg(op: string, t: unknown, label: string, optional?: false): TensorDescriptor;
export function tensorArg(op: string, t: unknown, label: string, optional: true): TensorDescriptor | undefined;
export function tensorArg(op: string, t: unknown, label: string, optional = false): TensorDescriptor | undefined {
  if (t === undefined && optional) return undefined;
  if (!isTensor(t))
    throw new MlaError('E_ARGUMENT', `${op}: ${label} must be a Tensor, got ${t === undefined ? 'nothing' : t === null ? 'null' : typeof t}`);
  return t._descriptor(label);
}

/** @internal */
export function numberArg(op: string, v: unknown, name: string): number {
  if (typeof v !== 'number') throw new MlaError('E_ARGUMENT', `${op}: ${name} must be a number, got ${typeof v}`);
  return v;
}

/** @internal */
export function streamArg(op: string, o: Record<string, unknown>): Stream {
  const s = o.stream;
  if (s === undefined) return implicitStream(op);
  if (!isStream(s)) throw new MlaError('E_ARGUMENT', `${op}: stream must be a Stream`);
  return s;
}

/** Writes each new token's row [kvC, RoPE(kPe)] into its slot of the paged latent cache. */
export function appendLatentCache<D extends FloatDType>(options: AppendLatentCacheOptions<D>): void {
  const op = 'appendLatentCache';
  const o = checkOptions(op, options, APPEND_OPTIONS);
  const cache = tensorArg(op, o.cache, 'cache'), kvC = tensorArg(op, o.kvC, 'kvC'), kPe = tensorArg(op, o.kPe, 'kPe'), slotMapping = tensorArg(op, o.slotMapping, 'slotMapping');
  const cacheScale = options.cache.scale;
  let params: AppendParams = [cache, kvC, kPe, slotMapping, cacheScale];
  if (o.rope !== undefined) {
    const rope = checkOptions(`${op}: rope`, o.rope, ROPE_OPTIONS);
    if (rope.style !== 'interleaved' && rope.style !== 'neox')
      throw new MlaError('E_ARGUMENT', `${op}: rope.style must be 'interleaved' or 'neox', got ${String(rope.style)}`);
    const positions = tensorArg(op, rope.positions, 'rope.positions');
    params = [cache, kvC, kPe, slotMapping, cacheScale, rope.style, positions, tensorArg(op, rope.cos, 'rope.cos'), tensorArg(op, rope.sin, 'rope.sin')];
  }
  const stream = streamArg(op, o);
  const rope = options.rope;
  const used = [options.kvC, options.kPe, options.slotMapping, rope?.positions, rope?.cos, rope?.sin];
  stream._submit(used, [options.cache], (s, after) => native().appendLatentCache(s, params, after));
}

/**
 * The `out` and `lse` given, or those missing allocated on the stream's device in the shapes the addon derives from the
 * inputs (`shapes` runs only when one is missing).
 * @internal
 */
export function outAndLse<D extends FloatDType>(
  shapes: () => { out: number[]; lse: number[] },
  given: { out?: Tensor<D>; lse?: Tensor<'f32'> },
  dtype: D,
  stream: Stream,
): { out: Tensor<D>; lse: Tensor<'f32'> } {
  if (given.out !== undefined && given.lse !== undefined) return { out: given.out, lse: given.lse };
  const s = shapes();
  return { out: given.out ?? Tensor.empty(s.out, dtype, { device: stream.device }), lse: given.lse ?? Tensor.empty(s.lse, 'f32', { device: stream.device }) };
}

/**
 * Absorbed MLA decode attention over the paged latent cache. Returns at once; `out` and `lse` are written
 * when the stream reaches the operation (`await out.read()` waits for it).
 */
export function mlaDecode<D extends FloatDType>(options: MlaDecodeOptions<D>): MlaDecodeResult<D> {
  const op = 'mlaDecode';
  const o = checkOptions(op, options, DECODE_OPTIONS);
  if (o.plan !== undefined && !(o.plan instanceof DecodePlan)) throw new MlaError('E_ARGUMENT', `${op}: plan must come from planDecode`);
  if (o.causal !== undefined && typeof o.causal !== 'boolean')
    throw new MlaError('E_ARGUMENT', `${op}: causal must be a boolean, got ${typeof o.causal}`);
  const inputs: DecodeInputs = [
    tensorArg(op, o.q, 'q'),
    tensorArg(op, o.cache, 'cache'),
    tensorArg(op, o.blockTable, 'blockTable'),
    tensorArg(op, o.seqLens, 'seqLens'),
    numberArg(op, o.softmaxScale, 'softmaxScale'),
    numberArg(op, o.kvLoraRank, 'kvLoraRank'),
    options.cache.scale,
    o.causal === true,
    (o.plan as DecodePlan | undefined)?._handle,
  ];
  const stream = streamArg(op, o);
  const { out, lse } = outAndLse(() => native().outputShapes(op, inputs), options, options.q.dtype, stream);
  const params: DecodeParams = [...inputs, tensorArg(op, out, 'out'), tensorArg(op, lse, 'lse')];
  stream._submit([options.q, options.cache, options.blockTable, options.seqLens], [out, lse], (s, after) => native().mlaDecode(s, params, after));
  return { out, lse };
}

/** q_lat[i] = W_uk[i]ᵀ q_nope[i] per head, followed by q_pe when given: decode's absorbed query. */
export function absorbQuery<D extends FloatDType>(options: AbsorbQueryOptions<D>): Tensor<D> {
  const op = 'absorbQuery';
  const o = checkOptions(op, options, ABSORB_OPTIONS);
  const inputs: AbsorbInputs = [tensorArg(op, o.qNope, 'qNope'), tensorArg(op, o.wUk, 'wUk'), tensorArg(op, o.qPe, 'qPe', true)];
  const stream = streamArg(op, o);
  const out = options.out ?? Tensor.empty(native().outputShapes(op, inputs).out, options.qNope.dtype, { device: stream.device });
  const params: AbsorbParams = [...inputs, tensorArg(op, out, 'out')];
  stream._submit([options.qNope, options.wUk, options.qPe], [out], (s, after) => native().absorbQuery(s, params, after));
  return out;
}

/** o[i] = W_uv[i] o_lat[i] per head: the attention output in value space, before the model's W_o. */
export function unabsorbOutput<D extends FloatDType>(options: UnabsorbOutputOptions<D>): Tensor<D> {
  const op = 'unabsorbOutput';
  const o = checkOptions(op, options, UNABSORB_OPTIONS);
  const inputs: UnabsorbInputs = [tensorArg(op, o.oLat, 'oLat'), tensorArg(op, o.wUv, 'wUv')];
  const stream = streamArg(op, o);
  const out = options.out ?? Tensor.empty(native().outputShapes(op, inputs).out, options.oLat.dtype, { device: stream.device });
  const params: UnabsorbParams = [...inputs, tensorArg(op, out, 'out')];
  stream._submit([options.oLat, options.wUv], [out], (s, after) => native().unabsorbOutput(s, params, after));
  return out;
}
