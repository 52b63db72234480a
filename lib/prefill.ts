// Prefill in multi-head form: the compute-friendly path for prompts and prompt chunks (docs/prefill.md). The same
// layering as ops.ts: JS-level checks here, shapes, dtypes and index values in csrc/core, the work on a stream.
import type { FloatDType, LatentCacheDType } from './dtypes.js';
import { MlaError } from './errors.js';
import {
  native,
  type GatherInputs,
  type GatherParams,
  type MergeInputs,
  type MergeParams,
  type PrefillInputs,
  type PrefillParams,
  type UpProjectInputs,
  type UpProjectParams,
} from './native.js';
import { checkOptions, numberArg, optionSet, outAndLse, streamArg, tensorArg, type StreamOptions } from './ops.js';
import type { Stream } from './stream.js';
import { Tensor } from './tensor.js';

/** The options of {@link mlaPrefill}; every float tensor has q's dtype `D`. */
export interface MlaPrefillOptions<D extends FloatDType = FloatDType> extends StreamOptions {
  /**
   * [totalQ, numHeads, nopeDim + ropeDim]: the new tokens' queries `[q_nope, q_pe]` (q_pe after RoPE), every
   * sequence of the batch packed one after another along the first dimension.
   */
  q: Tensor<D>;
  /** [totalKv, numHeads, nopeDim], q's dtype: per-head keys `W_uk[h] c_kv` (see {@link upProjectKv}). */
  kNope: Tensor<NoInfer<D>>;
  /**
   * [totalKv, ropeDim], q's dtype: the rope key of each key token (after RoPE), one per token and shared by every
   * head, as MLA defines it: it is broadcast inside the kernel, never copied per head.
   */
  kPe: Tensor<NoInfer<D>>;
  /** [totalKv, numHeads, vHeadDim], q's dtype: per-head values `W_uv[h] c_kv`. */
  v: Tensor<NoInfer<D>>;
  /**
   * [batch + 1] i32 on the host: cumulative query counts. Sequence b's queries are rows
   * `[cuSeqLensQ[b], cuSeqLensQ[b + 1])` of q (FlashAttention's varlen `cu_seqlens_q`). Starts at 0, never
   * decreases; rows of q past `cuSeqLensQ[batch]` are padding, given zero output and lse -Infinity. A sequence may
   * have no queries.
   */
  cuSeqLensQ: Tensor<'i32'>;
  /** [batch + 1] i32 on the host: cumulative key counts, the same way, over kNope, kPe and v. */
  cuSeqLensKv: Tensor<'i32'>;
  /** Multiplies q·k; e.g. 1/sqrt(nopeDim + ropeDim) times the model's factor (YaRN's mscale²). Finite, > 0. */
  softmaxScale: number;
  /**
   * Causal mask aligned bottom-right, as {@link mlaDecode} defines it: query i of a sequence's n sees its first
   * `kvLen - n + 1 + i` keys, so the last query sees every key (keys before the new tokens are context). Needs
   * kvLen >= n for every sequence. Default false: every query sees every key of its sequence (attention to a cached
   * context chunk).
   */
  causal?: boolean;
  /** [totalQ, numHeads, vHeadDim], q's dtype; allocated when not given. */
  out?: Tensor<NoInfer<D>>;
  /** [totalQ, numHeads] f32; allocated when not given. */
  lse?: Tensor<'f32'>;
  /** From {@link planPrefill} for these lengths on this stream's backend; made per call when not given. */
  plan?: PrefillPlan;
}

export interface MlaPrefillResult<D extends FloatDType = FloatDType> {
  /** [totalQ, numHeads, vHeadDim], q's dtype: softmax(scale · q·k) · v per query and head (zeros for a query that sees no key). */
  out: Tensor<D>;
  /** [totalQ, numHeads] f32: natural-log log-sum-exp of the scaled scores (-Infinity when no key is seen). */
  lse: Tensor<'f32'>;
}

export interface PlanPrefillOptions {
  /** The cumulative query counts of the step's prefills (as {@link MlaPrefillOptions.cuSeqLensQ}). */
  cuSeqLensQ: Tensor<'i32'>;
  /** The cumulative key counts (as {@link MlaPrefillOptions.cuSeqLensKv}). */
  cuSeqLensKv: Tensor<'i32'>;
  numHeads: number;
  /** Whether the prefills the plan serves are causal. Default false. */
  causal?: boolean;
  /** The stream the plan's prefills will run on (its backend makes the plan). */
  stream?: Stream;
}

/**
 * How one prefill step is split over the device (tiles of queries by heads of each sequence, causal tiles left out),
 * made once on the host and passed to every layer's {@link mlaPrefill} of that step: the prefill itself does no
 * planning and no host synchronisation, so it can be captured in a graph (Stream.capture) as decode is.
 */
export class PrefillPlan {
  /** @internal */
  readonly _handle: unknown;
  readonly #made = true; // what an object made with Object.create(PrefillPlan.prototype) lacks
  /** @internal */
  static _is(x: unknown): x is PrefillPlan {
    return typeof x === 'object' && x !== null && #made in x;
  }
  readonly backend: string;
  /** Units of work (CTAs on a GPU) of one prefill; 0 on the CPU, which splits per call. */
  readonly numWorkItems: number;
  /** @internal */
  constructor(backend: string, made: { handle: unknown; numWorkItems: number }) {
    this._handle = made.handle;
    this.backend = backend;
    this.numWorkItems = made.numWorkItems;
  }
}

/**
 * The dtype {@link gatherLatentCache} gives its outputs when neither `dtype` nor `kvC` is given: the cache's, bf16 for
 * an fp8 cache.
 */
export type GatheredDType<C extends LatentCacheDType> = C extends FloatDType ? C : 'bf16';

/** The options of {@link gatherLatentCache}: `C` is the cache's dtype, `O` the outputs'. */
export interface GatherLatentCacheOptions<C extends LatentCacheDType = LatentCacheDType, O extends FloatDType = FloatDType> extends StreamOptions {
  /** [numBlocks, blockSize, kvLoraRank + ropeDim]: the paged latent cache (any cache dtype; fp8 is dequantised with its scale, fp8_ds_mla with its rows' scales). */
  cache: Tensor<C>;
  /** [batch, maxBlocksPerSeq] i32 on the host: the cache blocks of each sequence, in order. */
  blockTable: Tensor<'i32'>;
  /**
   * [batch + 1] i32 on the host: sequence b's rows go to output rows `[cuSeqLens[b], cuSeqLens[b + 1])`, so
   * `cuSeqLens[b + 1] - cuSeqLens[b]` rows of it are gathered (0 allowed).
   */
  cuSeqLens: Tensor<'i32'>;
  /**
   * [batch] i32 on the host: the cached position of each sequence's first gathered row, so a long context is gathered
   * one chunk at a time (vLLM's `seq_starts`). Default: every sequence from position 0.
   */
  seqStarts?: Tensor<'i32'>;
  /** Width of the latent part of a cache row, 512 for DeepSeek-V2/V3. */
  kvLoraRank: number;
  /** The outputs' dtype when they are allocated: the cache's; an fp8 cache's default is bf16 ({@link GatheredDType}). */
  dtype?: O;
  /** The outputs' rows when they are allocated (default cuSeqLens[batch]); rows past the gathered ones are zero. */
  numRows?: number;
  /** [numRows, kvLoraRank]: the latent rows c_kv; the cache's dtype, any float dtype for an fp8 cache. */
  kvC?: Tensor<O>;
  /** [numRows, ropeDim], kvC's dtype: the rope keys (already rotated in the cache). */
  kPe?: Tensor<O>;
}

/** The options of {@link upProjectKv}; every tensor has kvC's dtype `D`. */
export interface UpProjectKvOptions<D extends FloatDType = FloatDType> extends StreamOptions {
  /** [numTokens, kvLoraRank]: latent rows c_kv (from the model's kv_a_proj and norm, or {@link gatherLatentCache}). */
  kvC: Tensor<D>;
  /** [numHeads, nopeDim, kvLoraRank], kvC's dtype: the key half of DeepSeek's kv_b_proj per head (as absorbQuery takes it). */
  wUk: Tensor<NoInfer<D>>;
  /** [numHeads, vHeadDim, kvLoraRank], kvC's dtype: the value half per head (as unabsorbOutput takes it). */
  wUv: Tensor<NoInfer<D>>;
  /** [numTokens, numHeads, nopeDim]; allocated when not given. */
  kNope?: Tensor<NoInfer<D>>;
  /** [numTokens, numHeads, vHeadDim]; allocated when not given. */
  v?: Tensor<NoInfer<D>>;
}

/** The options of {@link mergeAttentionStates}; every output-like tensor has outA's dtype `D`. */
export interface MergeAttentionStatesOptions<D extends FloatDType = FloatDType> extends StreamOptions {
  /** [..., width]: attention output over one set of keys (e.g. a cached context chunk). */
  outA: Tensor<D>;
  /** [...] f32 (outA's shape without its last dimension): its natural-log lse; -Infinity where it saw no key. */
  lseA: Tensor<'f32'>;
  /** [..., width], outA's dtype: attention output of the same queries over a disjoint set of keys. */
  outB: Tensor<NoInfer<D>>;
  /** [...] f32: its lse. */
  lseB: Tensor<'f32'>;
  /** [..., width], outA's dtype; allocated when not given. Must not share memory with an input. */
  out?: Tensor<NoInfer<D>>;
  /** [...] f32; allocated when not given. */
  lse?: Tensor<'f32'>;
}

const PREFILL_OPTIONS = optionSet('q', 'kNope', 'kPe', 'v', 'cuSeqLensQ', 'cuSeqLensKv', 'softmaxScale', 'causal', 'out', 'lse', 'plan', 'stream');
const PLAN_PREFILL_OPTIONS = optionSet('cuSeqLensQ', 'cuSeqLensKv', 'numHeads', 'causal', 'stream');
const GATHER_OPTIONS = optionSet('cache', 'blockTable', 'cuSeqLens', 'seqStarts', 'kvLoraRank', 'dtype', 'numRows', 'kvC', 'kPe', 'stream');
const UP_PROJECT_OPTIONS = optionSet('kvC', 'wUk', 'wUv', 'kNope', 'v', 'stream');
const MERGE_OPTIONS = optionSet('outA', 'lseA', 'outB', 'lseB', 'out', 'lse', 'stream');

function booleanArg(op: string, v: unknown, name: string): boolean {
  if (v !== undefined && typeof v !== 'boolean') throw new MlaError('E_ARGUMENT', `${op}: ${name} must be a boolean, got ${typeof v}`);
  return v === true;
}

/** Plans a prefill step for the stream's backend; reuse the plan for every layer of the step. */
export function planPrefill(options: PlanPrefillOptions): PrefillPlan {
  const op = 'planPrefill';
  const o = checkOptions(op, options, PLAN_PREFILL_OPTIONS);
  const causal = booleanArg(op, o.causal, 'causal');
  const cuSeqLensQ = tensorArg(op, o.cuSeqLensQ, 'cuSeqLensQ');
  const cuSeqLensKv = tensorArg(op, o.cuSeqLensKv, 'cuSeqLensKv');
  const numHeads = numberArg(op, o.numHeads, 'numHeads');
  const stream = streamArg(op, o);
  return new PrefillPlan(stream.backend, native().planPrefill(stream._native(), [cuSeqLensQ, cuSeqLensKv, numHeads, causal]));
}

/**
 * Ragged multi-head attention for prefill: for every sequence of a packed batch, query and head,
 * `softmax(scale · (q_nope·k_nope + q_pe·k_pe)) · v` over the sequence's keys, with the rope key shared by the heads.
 * This is MLA's compute-friendly form for many queries per sequence (prompts, prompt chunks); {@link mlaDecode} is
 * the form for a few. Returns at once; `out` and `lse` are written when the stream reaches the operation.
 */
export function mlaPrefill<D extends FloatDType>(options: MlaPrefillOptions<D>): MlaPrefillResult<D> {
  const op = 'mlaPrefill';
  const o = checkOptions(op, options, PREFILL_OPTIONS);
  if (o.plan !== undefined && !PrefillPlan._is(o.plan)) throw new MlaError('E_ARGUMENT', `${op}: plan must come from planPrefill`);
  const inputs: PrefillInputs = [
    tensorArg(op, o.q, 'q'),
    tensorArg(op, o.kNope, 'kNope'),
    tensorArg(op, o.kPe, 'kPe'),
    tensorArg(op, o.v, 'v'),
    tensorArg(op, o.cuSeqLensQ, 'cuSeqLensQ'),
    tensorArg(op, o.cuSeqLensKv, 'cuSeqLensKv'),
    numberArg(op, o.softmaxScale, 'softmaxScale'),
    booleanArg(op, o.causal, 'causal'),
    (o.plan as PrefillPlan | undefined)?._handle,
  ];
  const stream = streamArg(op, o);
  const { out, lse } = outAndLse(() => native().outputShapes(op, inputs), options, options.q.dtype, stream);
  const params: PrefillParams = [...inputs, tensorArg(op, out, 'out'), tensorArg(op, lse, 'lse')];
  const used = [options.q, options.kNope, options.kPe, options.v, options.cuSeqLensQ, options.cuSeqLensKv];
  stream._submit(used, [out, lse], (s, after) => native().mlaPrefill(s, params, after));
  return { out, lse };
}

/**
 * Copies each sequence's cached rows (a range of positions, through its block table) out of the paged latent cache
 * into dense `kvC` and `kPe`, an fp8 cache dequantised on the way (vLLM's `gather_cache`): the context a prompt chunk
 * attends to, ready for {@link upProjectKv} and {@link mlaPrefill}.
 */
export function gatherLatentCache<C extends LatentCacheDType, O extends FloatDType = GatheredDType<C>>(
  options: GatherLatentCacheOptions<C, O>,
): { kvC: Tensor<O>; kPe: Tensor<O> } {
  const op = 'gatherLatentCache';
  const o = checkOptions(op, options, GATHER_OPTIONS);
  const cache = tensorArg(op, o.cache, 'cache');
  const numRows = o.numRows === undefined ? -1 : numberArg(op, o.numRows, 'numRows');
  const inputs: GatherInputs = [
    cache,
    tensorArg(op, o.blockTable, 'blockTable'),
    tensorArg(op, o.cuSeqLens, 'cuSeqLens'),
    tensorArg(op, o.seqStarts, 'seqStarts', true),
    numberArg(op, o.kvLoraRank, 'kvLoraRank'),
    options.cache.scale,
    numRows,
  ];
  if (o.dtype !== undefined && o.dtype !== 'f32' && o.dtype !== 'f16' && o.dtype !== 'bf16')
    throw new MlaError('E_DTYPE', `${op}: dtype must be f32, f16 or bf16, got ${String(o.dtype)}`);
  const stream = streamArg(op, o);
  let kvC = options.kvC;
  let kPe = options.kPe;
  if (kvC === undefined || kPe === undefined) {
    const shapes = native().outputShapes(op, inputs);
    const cacheDType = options.cache.dtype;
    const dtype = (options.dtype ?? kvC?.dtype ?? (cacheDType === 'fp8_e4m3' || cacheDType === 'fp8_ds_mla' ? 'bf16' : cacheDType)) as O;
    kvC ??= Tensor.empty(shapes.kvC, dtype, { device: stream.device });
    kPe ??= Tensor.empty(shapes.kPe, kvC.dtype, { device: stream.device });
  }
  const params: GatherParams = [...inputs, tensorArg(op, kvC, 'kvC'), tensorArg(op, kPe, 'kPe')];
  stream._submit([options.cache, options.blockTable, options.cuSeqLens, options.seqStarts], [kvC, kPe], (s, after) => native().gatherLatentCache(s, params, after));
  return { kvC, kPe };
}

/**
 * The keys and values MLA defines from the latent, per head: `kNope[t, h] = W_uk[h] c_kv[t]` and
 * `v[t, h] = W_uv[h] c_kv[t]` (the two halves of DeepSeek's kv_b_proj). Run it on a context chunk at a time: the
 * per-head keys and values of a long context need not exist at once.
 */
export function upProjectKv<D extends FloatDType>(options: UpProjectKvOptions<D>): { kNope: Tensor<D>; v: Tensor<D> } {
  const op = 'upProjectKv';
  const o = checkOptions(op, options, UP_PROJECT_OPTIONS);
  const inputs: UpProjectInputs = [tensorArg(op, o.kvC, 'kvC'), tensorArg(op, o.wUk, 'wUk'), tensorArg(op, o.wUv, 'wUv')];
  const stream = streamArg(op, o);
  let kNope = options.kNope;
  let v = options.v;
  if (kNope === undefined || v === undefined) {
    const shapes = native().outputShapes(op, inputs);
    kNope ??= Tensor.empty(shapes.kNope, options.kvC.dtype, { device: stream.device });
    v ??= Tensor.empty(shapes.v, options.kvC.dtype, { device: stream.device });
  }
  const params: UpProjectParams = [...inputs, tensorArg(op, kNope, 'kNope'), tensorArg(op, v, 'v')];
  stream._submit([options.kvC, options.wUk, options.wUv], [kNope, v], (s, after) => native().upProjectKv(s, params, after));
  return { kNope, v };
}

/**
 * Merges two attention results of the same queries over disjoint sets of keys into the result over their union, by
 * log-sum-exp (vLLM's `merge_attn_states`): `out = (e^lseA outA + e^lseB outB) / (e^lseA + e^lseB)`,
 * `lse = log(e^lseA + e^lseB)`. Exact for an empty part: where one lse is -Infinity the other result is copied as it
 * is; where both are, the output is zeros and lse -Infinity.
 */
export function mergeAttentionStates<D extends FloatDType>(options: MergeAttentionStatesOptions<D>): { out: Tensor<D>; lse: Tensor<'f32'> } {
  const op = 'mergeAttentionStates';
  const o = checkOptions(op, options, MERGE_OPTIONS);
  const inputs: MergeInputs = [tensorArg(op, o.outA, 'outA'), tensorArg(op, o.lseA, 'lseA'), tensorArg(op, o.outB, 'outB'), tensorArg(op, o.lseB, 'lseB')];
  const stream = streamArg(op, o);
  const { out, lse } = outAndLse(() => native().outputShapes(op, inputs), options, options.outA.dtype, stream);
  const params: MergeParams = [...inputs, tensorArg(op, out, 'out'), tensorArg(op, lse, 'lse')];
  stream._submit([options.outA, options.lseA, options.outB, options.lseB], [out, lse], (s, after) => native().mergeAttentionStates(s, params, after));
  return { out, lse };
}
