// DeepSeek Sparse Attention (DeepSeek-V3.2, docs/sparse.md): MLA over the cache rows a lightning indexer selects, the
// indexer itself and its key cache. The same layering as ops.ts: JS-level checks here, shapes, dtypes and index
// values in csrc/core, the work on a stream.
import type { FloatDType } from './dtypes.js';
import { MlaError } from './errors.js';
import {
  native,
  type AppendIndexerParams,
  type IndexerInputs,
  type IndexerParams,
  type SparseDecodeInputs,
  type SparseDecodeParams,
  type SparsePrefillInputs,
  type SparsePrefillParams,
} from './native.js';
import { checkOptions, numberArg, optionSet, outAndLse, streamArg, tensorArg, type LatentAttentionOptions, type MlaDecodeResult, type StreamOptions } from './ops.js';
import type { Stream } from './stream.js';
import { Tensor, isTensor } from './tensor.js';

/** The options of {@link mlaSparseDecode}. `D` is q's dtype, which the types require of `out` and of a float cache. */
export interface MlaSparseDecodeOptions<D extends FloatDType = FloatDType> extends LatentAttentionOptions {
  /** [batch, queryLen, numHeads, kvLoraRank + ropeDim]: absorbed queries [q_lat, q_pe], as {@link mlaDecode} takes them. */
  q: Tensor<D>;
  /**
   * [numBlocks, blockSize, kvLoraRank + ropeDim] of q's dtype or `fp8_e4m3` (with its scale), or
   * [numBlocks, blockSize, bytes per token] of `fp8_ds_mla` (FlashMLA's V3.2 layout): the paged latent cache.
   */
  cache: Tensor<NoInfer<D> | 'fp8_e4m3' | 'fp8_ds_mla'>;
  /**
   * [batch, queryLen, topk] i32: the cache rows query t of sequence b attends to, as physical slots
   * (`block * blockSize + offset`, what {@link lightningIndexer} writes; FlashMLA's sparse decode takes the same);
   * -1 is padding. A slot named twice counts twice. Indices you fill on the host are copied at the call and every
   * value checked (E_RANGE). Indices an operation wrote ({@link lightningIndexer}'s output, queued or captured in the
   * same graph) are read when the decode runs, after that write; those, and indices on a device, cannot be checked at
   * the call, and a slot outside the cache counts as padding.
   */
  indices: Tensor<'i32'>;
  /** [batch, queryLen, numHeads, kvLoraRank], q's dtype; allocated when not given. */
  out?: Tensor<NoInfer<D>>;
  /** [batch, numHeads, queryLen] f32; allocated when not given. */
  lse?: Tensor<'f32'>;
}

/** The options of {@link mlaSparsePrefill}; `kv` and `out` have q's dtype `D`. */
export interface MlaSparsePrefillOptions<D extends FloatDType = FloatDType> extends LatentAttentionOptions {
  /** [numTokens, numHeads, kvLoraRank + ropeDim]: absorbed queries of each token. */
  q: Tensor<D>;
  /** [numKv, kvLoraRank + ropeDim], q's dtype: dense latent rows [c_kv, k_pe] (e.g. from {@link gatherLatentCache}). */
  kv: Tensor<NoInfer<D>>;
  /** [numTokens, topk] i32: the rows of kv token i attends to, -1 padding; read as {@link MlaSparseDecodeOptions.indices}. */
  indices: Tensor<'i32'>;
  /** [numTokens, numHeads, kvLoraRank], q's dtype; allocated when not given. */
  out?: Tensor<NoInfer<D>>;
  /** [numTokens, numHeads] f32; allocated when not given. */
  lse?: Tensor<'f32'>;
}

export interface MlaSparsePrefillResult<D extends FloatDType = FloatDType> {
  /** [numTokens, numHeads, kvLoraRank], q's dtype: the latent output (zeros for a token that selects nothing). */
  out: Tensor<D>;
  /** [numTokens, numHeads] f32: natural-log log-sum-exp of the scaled scores (-Infinity for a token that selects nothing). */
  lse: Tensor<'f32'>;
}

/** The options of {@link appendIndexerCache}; a float key cache has k's dtype `D`. */
export interface AppendIndexerCacheOptions<D extends FloatDType = FloatDType> extends StreamOptions {
  /**
   * [numBlocks, blockSize, indexDim]: the indexer's paged key cache, k's dtype or `fp8_e4m3`, laid out as the latent
   * cache (the same block table serves both, so the indexer's slots are the latent cache's).
   */
  cache: Tensor<NoInfer<D> | 'fp8_e4m3'>;
  /** [numBlocks, blockSize] f32, with an `fp8_e4m3` cache only: each key's scale, written here. */
  scales?: Tensor<'f32'>;
  /** [numTokens, indexDim]: each new token's indexer key (after its RoPE and norm, as the model computes it). */
  k: Tensor<D>;
  /** [numTokens] i32 on the host: slot = block * blockSize + offset; a negative slot skips the token. */
  slotMapping: Tensor<'i32'>;
}

/** The options of {@link lightningIndexer}; a float key cache has q's dtype `D`. */
export interface LightningIndexerOptions<D extends FloatDType = FloatDType> extends StreamOptions {
  /** [batch, queryLen, numIndexerHeads, indexDim]: the indexer's queries (64 heads of 128 in DeepSeek-V3.2). */
  q: Tensor<D>;
  /** [batch, queryLen, numIndexerHeads] f32: each head's weight per query (the model's weights_proj, its scales folded in). */
  weights: Tensor<'f32'>;
  /** [numBlocks, blockSize, indexDim]: the indexer key cache {@link appendIndexerCache} writes (q's dtype or `fp8_e4m3`). */
  cache: Tensor<NoInfer<D> | 'fp8_e4m3'>;
  /** [numBlocks, blockSize] f32 with an `fp8_e4m3` cache: each key's scale. */
  scales?: Tensor<'f32'>;
  /** [batch, maxBlocksPerSeq] i32 on the host: the blocks of each sequence (the latent cache's block table). */
  blockTable: Tensor<'i32'>;
  /** [batch] i32 on the host: cached rows per sequence, the new tokens' included. */
  seqLens: Tensor<'i32'>;
  /** Positions selected per query (2048 in DeepSeek-V3.2). */
  topk: number;
  /** For queryLen > 1: query j of n sees the first seqLen - n + 1 + j positions (its own and earlier). Default false. */
  causal?: boolean;
  /** [batch, queryLen, topk] i32 on the stream's device; allocated when not given. */
  indices?: Tensor<'i32'>;
  /** [batch, queryLen, topk] f32 on the stream's device; allocated when not given. */
  scores?: Tensor<'f32'>;
}

export interface LightningIndexerResult {
  /**
   * [batch, queryLen, topk] i32: the selected positions as slots of the block table, in increasing position order, -1
   * after them when fewer than topk positions are visible: {@link mlaSparseDecode}'s `indices`.
   */
  indices: Tensor<'i32'>;
  /** [batch, queryLen, topk] f32: the index score of each selected position (-Infinity for padding). */
  scores: Tensor<'f32'>;
}

const SPARSE_DECODE_OPTIONS = optionSet('q', 'cache', 'indices', 'softmaxScale', 'kvLoraRank', 'out', 'lse', 'stream');
const SPARSE_PREFILL_OPTIONS = optionSet('q', 'kv', 'indices', 'softmaxScale', 'kvLoraRank', 'out', 'lse', 'stream');
const APPEND_INDEXER_OPTIONS = optionSet('cache', 'scales', 'k', 'slotMapping', 'stream');
const INDEXER_OPTIONS = optionSet('q', 'weights', 'cache', 'scales', 'blockTable', 'seqLens', 'topk', 'causal', 'indices', 'scores', 'stream');

/**
 * Absorbed MLA decode over the cache rows each query position selects (DeepSeek-V3.2's sparse attention, FlashMLA's
 * sparse decode): out and lse as {@link mlaDecode} gives them, over the rows `indices` names. Returns at once; the
 * outputs are written when the stream reaches the operation.
 */
export function mlaSparseDecode<D extends FloatDType>(options: MlaSparseDecodeOptions<D>): MlaDecodeResult<D> {
  const op = 'mlaSparseDecode';
  const o = checkOptions(op, options, SPARSE_DECODE_OPTIONS);
  const stream = streamArg(op, o);
  const inputs: SparseDecodeInputs = [...leadingArgs(op, o, 'cache'), options.cache.dtype === 'fp8_e4m3' ? options.cache.scale : 1, writtenByOperation(o.indices, stream)];
  const { out, lse } = outputs(op, inputs, options, stream);
  const params: SparseDecodeParams = [...inputs, tensorArg(op, out, 'out'), tensorArg(op, lse, 'lse')];
  stream._submit([options.q, options.cache, options.indices], [out, lse], (s, after) => native().mlaSparseDecode(s, params, after));
  return { out, lse };
}

/**
 * Sparse MLA over a dense kv in the absorbed form (FlashMLA's flash_mla_sparse_fwd): each token's queries attend to
 * the rows of kv its `indices` name. For a prompt of DeepSeek-V3.2 with the indexer's top-k.
 */
export function mlaSparsePrefill<D extends FloatDType>(options: MlaSparsePrefillOptions<D>): MlaSparsePrefillResult<D> {
  const op = 'mlaSparsePrefill';
  const o = checkOptions(op, options, SPARSE_PREFILL_OPTIONS);
  const stream = streamArg(op, o);
  const inputs: SparsePrefillInputs = [...leadingArgs(op, o, 'kv'), writtenByOperation(o.indices, stream)];
  const { out, lse } = outputs(op, inputs, options, stream);
  const params: SparsePrefillParams = [...inputs, tensorArg(op, out, 'out'), tensorArg(op, lse, 'lse')];
  stream._submit([options.q, options.kv, options.indices], [out, lse], (s, after) => native().mlaSparsePrefill(s, params, after));
  return { out, lse };
}

// What both sparse attentions take first: q, the rows it attends over (`rows`: the cache or kv), indices, softmaxScale, kvLoraRank.
function leadingArgs(op: 'mlaSparseDecode' | 'mlaSparsePrefill', o: Record<string, unknown>, rows: 'cache' | 'kv') {
  return [tensorArg(op, o.q, 'q'), tensorArg(op, o[rows], rows), tensorArg(op, o.indices, 'indices'), numberArg(op, o.softmaxScale, 'softmaxScale'), numberArg(op, o.kvLoraRank, 'kvLoraRank')] as const;
}

// Indices an operation wrote (the indexer's, queued or captured) are read when the decode runs, in stream order;
// indices the caller filled are copied and checked at the call.
function writtenByOperation(indices: unknown, stream: Stream): boolean {
  return isTensor(indices) && (indices._lastWrite() !== null || stream._captures(indices));
}

function outputs<D extends FloatDType>(
  op: 'mlaSparseDecode' | 'mlaSparsePrefill',
  inputs: SparseDecodeInputs | SparsePrefillInputs,
  given: { q: Tensor<D>; out?: Tensor<D>; lse?: Tensor<'f32'> },
  stream: Stream,
): { out: Tensor<D>; lse: Tensor<'f32'> } {
  const shapes = () => (op === 'mlaSparseDecode' ? native().outputShapes(op, inputs as SparseDecodeInputs) : native().outputShapes(op, inputs as SparsePrefillInputs));
  return outAndLse(shapes, given, given.q.dtype, stream);
}

/** Writes each new token's indexer key into its slot of the indexer key cache (an fp8 cache: e4m3 with a scale per key). */
export function appendIndexerCache<D extends FloatDType>(options: AppendIndexerCacheOptions<D>): void {
  const op = 'appendIndexerCache';
  const o = checkOptions(op, options, APPEND_INDEXER_OPTIONS);
  const params: AppendIndexerParams = [tensorArg(op, o.cache, 'cache'), tensorArg(op, o.scales, 'scales', true), tensorArg(op, o.k, 'k'), tensorArg(op, o.slotMapping, 'slotMapping')];
  const stream = streamArg(op, o);
  const writes: Tensor[] = options.scales ? [options.cache, options.scales] : [options.cache];
  stream._submit([options.k, options.slotMapping], writes, (s, after) => native().appendIndexerCache(s, params, after));
}

/**
 * DeepSeek-V3.2's lightning indexer: index scores `I[t, s] = Σ_j weights[t, j] · ReLU(q[t, j] · k[s])` of each query
 * position over the cached keys it sees, and the `topk` positions of largest score, written as slots for
 * {@link mlaSparseDecode}. Returns at once; the outputs are written when the stream reaches the operation.
 */
export function lightningIndexer<D extends FloatDType>(options: LightningIndexerOptions<D>): LightningIndexerResult {
  const op = 'lightningIndexer';
  const o = checkOptions(op, options, INDEXER_OPTIONS);
  if (o.causal !== undefined && typeof o.causal !== 'boolean') throw new MlaError('E_ARGUMENT', `${op}: causal must be a boolean, got ${typeof o.causal}`);
  const inputs: IndexerInputs = [
    tensorArg(op, o.q, 'q'),
    tensorArg(op, o.weights, 'weights'),
    tensorArg(op, o.cache, 'cache'),
    tensorArg(op, o.scales, 'scales', true),
    tensorArg(op, o.blockTable, 'blockTable'),
    tensorArg(op, o.seqLens, 'seqLens'),
    numberArg(op, o.topk, 'topk'),
    o.causal === true,
  ];
  const stream = streamArg(op, o);
  let indices = options.indices;
  let scores = options.scores;
  if (indices === undefined || scores === undefined) {
    const shapes = native().outputShapes(op, inputs);
    indices ??= Tensor.empty(shapes.indices, 'i32', { device: stream.device });
    scores ??= Tensor.empty(shapes.scores, 'f32', { device: stream.device });
  }
  const params: IndexerParams = [...inputs, tensorArg(op, indices, 'indices'), tensorArg(op, scores, 'scores')];
  stream._submit([options.q, options.weights, options.cache, options.scales, options.blockTable, options.seqLens], [indices, scores], (s, after) =>
    native().lightningIndexer(s, params, after),
  );
  return { indices, scores };
}
