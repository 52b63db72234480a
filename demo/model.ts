// A small decoder of DeepSeek-V2/V3's shape with seeded random weights, run two ways over the same weights:
//   MlaDecoder: absorbed multi-head latent attention on the mla-kernels addon, with a paged latent cache;
//   MhaDecoder: the same model with a plain multi-head KV cache: K and V of every head materialised from the latent
//               (k_nope = W_uk c_kv, v = W_uv c_kv), cached per head, attention computed here in TypeScript.
// Everything except attention (embedding, RMSNorm, the query / latent / output projections, the SwiGLU MLP, the
// LM head) is plain TypeScript arithmetic (math.ts) shared by both.
import {
  Tensor,
  absorbQuery,
  appendIndexerCache,
  appendLatentCache,
  gatherLatentCache,
  lightningIndexer,
  mergeAttentionStates,
  mlaDecode,
  mlaPrefill,
  mlaSparseDecode,
  planDecode,
  unabsorbOutput,
  upProjectKv,
  type DeviceName,
  type FloatDType,
  type Graph,
  type Stream,
} from 'mla-kernels';
import { Rng, fromBits, matmul, rmsNorm, roundInPlace, ropeInPlace, swiglu, toBits, type ModelDType } from './math.js';
import { checkMoeConfig, isMoeLayer, moeForward, randomMoeLayer, type MoeConfig, type MoeLayerWeights } from './moe.js';
import { PagedCacheManager } from './paged.js';
import { ropeTablesFor, softmaxScaleFor, type RopeScaling } from './rope.js';

export interface ModelConfig {
  vocab: number;
  /** d_model. */
  emb: number;
  layers: number;
  heads: number;
  /** Per-head query/key width without RoPE (DeepSeek: 128). */
  nopeDim: number;
  /** RoPE query/key width, one rope key per token shared by all heads (DeepSeek: 64). */
  ropeDim: number;
  /** Per-head value width (DeepSeek: 128). */
  vHeadDim: number;
  /** Latent width d_c = kv_lora_rank (DeepSeek: 512). */
  kvLoraRank: number;
  /** Low-rank query path width q_lora_rank (V2/V3: 1536); 0: a plain query projection (V2-Lite). */
  qLoraRank: number;
  /** SwiGLU MLP hidden width. */
  ffn: number;
  ropeTheta: number;
  /** Tokens per cache block. */
  blockSize: number;
  dtype: ModelDType;
  seed: number;
  /** RMSNorm epsilon (default 1e-6). */
  normEps?: number;
  /** Position scaling of RoPE (YaRN in DeepSeek-V2/V3 checkpoints); none by default. */
  ropeScaling?: RopeScaling;
  /** Mixture-of-experts MLPs after the first `moe.denseLayers` layers; dense MLPs throughout by default. */
  moe?: MoeConfig;
}

export const DTYPE_BYTES: Record<ModelDType, number> = { f32: 4, bf16: 2, f16: 2 };

interface LayerWeights {
  attnNorm: Float32Array;
  // Linear layers are [out, in] (PyTorch's layout); math.ts's matmul computes x · wᵀ.
  wq?: Float32Array; // [H·(nope+rope), emb] (plain query path)
  wqA?: Float32Array; // [qLora, emb]
  qNorm?: Float32Array; // [qLora]
  wqB?: Float32Array; // [H·(nope+rope), qLora]
  wkvA: Float32Array; // [kvLoraRank + ropeDim, emb]: W_dkv over W_kr (DeepSeek's kv_a_proj_with_mqa)
  kvNorm: Float32Array; // [kvLoraRank]
  wUk: Float32Array; // [H, nope, kvLoraRank]
  wUv: Float32Array; // [H, v, kvLoraRank]
  wo: Float32Array; // [emb, H·v]
  mlpNorm: Float32Array;
  // The dense MLP, or the layer's experts.
  wGate?: Float32Array; // [ffn, emb]
  wUp?: Float32Array; // [ffn, emb]
  wDown?: Float32Array; // [emb, ffn]
  moe?: MoeLayerWeights;
}

/** Weights given rather than drawn (a model file's). */
export interface WeightArrays {
  embed: Float32Array;
  layers: LayerWeights[];
  finalNorm: Float32Array;
  lmHead: Float32Array;
}

export type { LayerWeights };

/** Seeded random weights, rounded to the model's dtype (held as f32 for the TypeScript products); or given ones. */
export class Weights {
  readonly config: ModelConfig;
  readonly embed: Float32Array; // [vocab, emb]
  readonly layers: LayerWeights[];
  readonly finalNorm: Float32Array;
  readonly lmHead: Float32Array; // [vocab, emb]
  /** Parameters; bytes = parameters × the dtype's size. */
  readonly parameters: number;

  constructor(c: ModelConfig, given?: WeightArrays) {
    this.config = c;
    if (c.moe) checkMoeConfig(c.moe);
    if (given) {
      ({ embed: this.embed, layers: this.layers, finalNorm: this.finalNorm, lmHead: this.lmHead } = given);
      this.parameters = countParameters(this);
      return;
    }
    const rng = new Rng(c.seed);
    const d = c.dtype;
    const qWidth = c.heads * (c.nopeDim + c.ropeDim);
    const ones = (n: number) => new Float32Array(n).fill(1);
    const w = (out: number, inp: number) => rng.fill(out * inp, 1 / Math.sqrt(inp), d); // [out, in], variance-preserving
    this.embed = rng.fill(c.vocab * c.emb, 1, d);
    this.layers = [];
    for (let l = 0; l < c.layers; l++) {
      const lw: LayerWeights = {
        attnNorm: ones(c.emb),
        wkvA: w(c.kvLoraRank + c.ropeDim, c.emb),
        kvNorm: ones(c.kvLoraRank),
        wUk: rng.fill(c.heads * c.nopeDim * c.kvLoraRank, 1 / Math.sqrt(c.kvLoraRank), d),
        wUv: rng.fill(c.heads * c.vHeadDim * c.kvLoraRank, 1 / Math.sqrt(c.kvLoraRank), d),
        wo: w(c.emb, c.heads * c.vHeadDim),
        mlpNorm: ones(c.emb),
      };
      if (isMoeLayer(c.moe, l)) lw.moe = randomMoeLayer(rng, c.emb, c.moe!, d);
      else {
        lw.wGate = w(c.ffn, c.emb);
        lw.wUp = w(c.ffn, c.emb);
        lw.wDown = w(c.emb, c.ffn);
      }
      if (c.qLoraRank > 0) {
        lw.wqA = w(c.qLoraRank, c.emb);
        lw.qNorm = ones(c.qLoraRank);
        lw.wqB = w(qWidth, c.qLoraRank);
      } else lw.wq = w(qWidth, c.emb);
      this.layers.push(lw);
    }
    this.finalNorm = ones(c.emb);
    this.lmHead = w(c.vocab, c.emb);
    this.parameters = countParameters(this);
  }

  get bytes(): number {
    return this.parameters * DTYPE_BYTES[this.config.dtype];
  }
}

function countParameters(w: Pick<Weights, 'embed' | 'layers' | 'finalNorm' | 'lmHead'>): number {
  let n = w.embed.length + w.finalNorm.length + w.lmHead.length;
  for (const lw of w.layers) for (const a of [...Object.values(lw), ...Object.values(lw.moe ?? {})]) if (a instanceof Float32Array) n += a.length;
  return n;
}

/**
 * The rows of one forward call: the new tokens of a batch of sequences, packed (no padding). Prefill has each
 * sequence's prompt (different lengths); decode one token per sequence.
 */
export interface Step {
  /** Sequence ids of the batch, in order. */
  seqIds: number[];
  /** Rows (tokens) per sequence in this step. */
  counts: number[];
  /** Longest count: mlaDecode's queryLen (shorter sequences are left-padded to it). */
  queryLen: number;
  /** Packed rows: token, position, batch index. */
  tokens: Int32Array;
  positions: Int32Array;
  batchIndex: Int32Array;
  /** Packed index of each sequence's last row (whose logits choose the next token). */
  lastRow: Int32Array;
}

export function makeStep(seqIds: number[], counts: number[], tokens: number[][], startPositions: number[]): Step {
  const total = counts.reduce((a, b) => a + b, 0);
  const step: Step = {
    seqIds,
    counts,
    queryLen: Math.max(...counts),
    tokens: new Int32Array(total),
    positions: new Int32Array(total),
    batchIndex: new Int32Array(total),
    lastRow: new Int32Array(seqIds.length),
  };
  let t = 0;
  counts.forEach((n, b) => {
    for (let i = 0; i < n; i++, t++) {
      step.tokens[t] = tokens[b][i];
      step.positions[t] = startPositions[b] + i;
      step.batchIndex[t] = b;
    }
    step.lastRow[b] = t - 1;
  });
  return step;
}

/** Reusable scratch arrays, grown on demand: no allocation per layer once warmed up. */
class Workspace {
  #arrays = new Map<string, Float32Array>();
  get(name: string, n: number): Float32Array {
    let a = this.#arrays.get(name);
    if (!a || a.length < n) {
      a = new Float32Array(Math.max(n, Math.ceil((a?.length ?? 0) * 1.5)));
      this.#arrays.set(name, a);
    }
    return a.subarray(0, n);
  }
  get bytes(): number {
    let n = 0;
    for (const a of this.#arrays.values()) n += a.byteLength;
    return n;
  }
}

export interface DecoderStats {
  /** Cache bytes per token over all layers (the dtype's size). */
  cacheBytesPerToken: number;
  /** Blocks of the pool in use at the peak, and their bytes. */
  peakBlocks: number;
  /** Blocks still in use when the stats were taken (0 once every sequence has ended). */
  blocksInUse: number;
  peakCacheBytes: number;
  /** Most tokens cached at once × bytes per token (the cache without block rounding). */
  peakTokenBytes: number;
  weightBytes: number;
  /** Largest activation / scratch memory (host workspace, kernel inputs and outputs). */
  activationBytes: number;
  /** weights + peak cache blocks + activations. */
  peakMemoryBytes: number;
  /** Seconds spent in attention (MLA: kernels and their transfers; MHA: the TypeScript loops). */
  attentionSeconds: number;
}

/** What both decoders share: everything but attention and its cache. */
export abstract class Decoder {
  readonly w: Weights;
  readonly c: ModelConfig;
  readonly cache: PagedCacheManager;
  protected ws = new Workspace();
  protected rope: { cos: Float32Array; sin: Float32Array };
  protected extraActivationBytes = 0;
  attentionSeconds = 0;

  constructor(weights: Weights, numBlocks: number, maxPositions: number) {
    this.w = weights;
    this.c = weights.config;
    this.cache = new PagedCacheManager(numBlocks, this.c.blockSize);
    this.rope = ropeTablesFor(this.c, maxPositions);
  }

  abstract get cacheBytesPerToken(): number;

  /**
   * Attention of layer l for the step's rows: takes the rounded q_nope [T, H, nope], roped q_pe [T, H, rope],
   * normalised latent c_kv [T, rank] and raw rope key k_pe [T, rope]; caches this step's keys; writes [T, H·v].
   */
  protected abstract attend(l: number, step: Step, slots: Int32Array, qNope: Float32Array, qPe: Float32Array, ckv: Float32Array, kpe: Float32Array, out: Float32Array): Promise<void>;

  /** Called once per step after the cache has grown: per-step tables. */
  protected beginStep(_step: Step): void {}

  addSequence(id: number): void {
    this.cache.add(id);
  }

  endSequence(id: number): void {
    this.cache.release(id);
  }

  /**
   * Runs the step's tokens through the model; returns the logits [batch, vocab] of each sequence's last row, or with
   * `allRows` those of every row [T, vocab].
   */
  async forward(step: Step, allRows = false): Promise<Float32Array> {
    const c = this.c;
    const eps = c.normEps ?? 1e-6;
    const T = step.tokens.length;
    const H = c.heads, qk = c.nopeDim + c.ropeDim, kvw = c.kvLoraRank + c.ropeDim;
    const slots = new Int32Array(T);
    let t0 = 0;
    step.seqIds.forEach((id, b) => {
      this.cache.grow(id, step.counts[b], slots, t0);
      t0 += step.counts[b];
    });
    this.beginStep(step);
    const ws = this.ws;
    const h = ws.get('h', T * c.emb);
    for (let t = 0; t < T; t++) h.set(this.w.embed.subarray(step.tokens[t] * c.emb, (step.tokens[t] + 1) * c.emb), t * c.emb);
    const xn = ws.get('xn', T * c.emb);
    const q = ws.get('q', T * H * qk);
    const qNope = ws.get('qNope', T * H * c.nopeDim);
    const qPe = ws.get('qPe', T * H * c.ropeDim);
    const kv = ws.get('kv', T * kvw);
    const ckv = ws.get('ckv', T * c.kvLoraRank);
    const kpe = ws.get('kpe', T * c.ropeDim);
    const attn = ws.get('attn', T * H * c.vHeadDim);
    const gate = ws.get('gate', T * c.ffn);
    const up = ws.get('up', T * c.ffn);
    for (let l = 0; l < c.layers; l++) {
      const lw = this.w.layers[l];
      // Attention block: RMSNorm → queries, latent, rope key → attention → W_o → residual.
      rmsNorm(h, T, c.emb, lw.attnNorm, xn, eps);
      if (lw.wqA) {
        const qa = ws.get('qa', T * c.qLoraRank);
        matmul(xn, T, c.emb, lw.wqA, c.qLoraRank, qa);
        rmsNorm(qa, T, c.qLoraRank, lw.qNorm!, qa, eps);
        matmul(qa, T, c.qLoraRank, lw.wqB!, H * qk, q);
      } else matmul(xn, T, c.emb, lw.wq!, H * qk, q);
      for (let r = 0; r < T * H; r++) {
        qNope.set(q.subarray(r * qk, r * qk + c.nopeDim), r * c.nopeDim);
        qPe.set(q.subarray(r * qk + c.nopeDim, (r + 1) * qk), r * c.ropeDim);
      }
      if (c.ropeDim > 0)
        for (let t = 0; t < T; t++)
          for (let i = 0; i < H; i++) ropeInPlace(qPe, (t * H + i) * c.ropeDim, c.ropeDim, this.rope.cos, this.rope.sin, step.positions[t]);
      roundInPlace(qNope, qNope.length, c.dtype);
      roundInPlace(qPe, qPe.length, c.dtype);
      matmul(xn, T, c.emb, lw.wkvA, kvw, kv);
      rmsNorm(kv, T, c.kvLoraRank, lw.kvNorm, ckv, eps, kvw, 0, c.kvLoraRank); // c_kv = RMSNorm(W_dkv h)
      for (let t = 0; t < T; t++) kpe.set(kv.subarray(t * kvw + c.kvLoraRank, (t + 1) * kvw), t * c.ropeDim); // W_kr h
      roundInPlace(ckv, ckv.length, c.dtype);
      roundInPlace(kpe, kpe.length, c.dtype);
      const a0 = performance.now();
      await this.attend(l, step, slots, qNope, qPe, ckv, kpe, attn);
      this.attentionSeconds += (performance.now() - a0) / 1000;
      matmul(attn, T, H * c.vHeadDim, lw.wo, c.emb, h, true);
      // MLP block: RMSNorm → SwiGLU (or the layer's experts) → residual.
      rmsNorm(h, T, c.emb, lw.mlpNorm, xn, eps);
      if (lw.moe) moeForward(lw.moe, c.moe!, xn, T, c.emb, h, (name, n) => ws.get(name, n));
      else {
        matmul(xn, T, c.emb, lw.wGate!, c.ffn, gate);
        matmul(xn, T, c.emb, lw.wUp!, c.ffn, up);
        swiglu(gate, up, T * c.ffn);
        matmul(gate, T, c.ffn, lw.wDown!, c.emb, h, true);
      }
    }
    const B = allRows ? T : step.seqIds.length;
    const last = ws.get('last', B * c.emb);
    for (let b = 0; b < B; b++) {
      const r = allRows ? b : step.lastRow[b];
      last.set(h.subarray(r * c.emb, (r + 1) * c.emb), b * c.emb);
    }
    rmsNorm(last, B, c.emb, this.w.finalNorm, last, eps);
    const logits = new Float32Array(B * c.vocab);
    matmul(last, B, c.emb, this.w.lmHead, c.vocab, logits);
    return logits;
  }

  stats(): DecoderStats {
    const per = this.cacheBytesPerToken;
    const peakBlocks = this.cache.pool.peakInUse;
    const peakCacheBytes = peakBlocks * this.c.blockSize * per;
    const activationBytes = this.ws.bytes + this.extraActivationBytes;
    return {
      cacheBytesPerToken: per,
      peakBlocks,
      blocksInUse: this.cache.pool.inUse,
      peakCacheBytes,
      peakTokenBytes: this.cache.peakTokens * per,
      weightBytes: this.w.bytes,
      activationBytes,
      peakMemoryBytes: this.w.bytes + peakCacheBytes + activationBytes,
      attentionSeconds: this.attentionSeconds,
    };
  }
}

/** How MlaDecoder runs the attention of a step of several tokens per sequence (a prompt, or a chunk of one). */
export interface MlaPrefillOptions {
  /**
   * `multi-head` (default): the compute-friendly form, per-head keys and values up-projected from the latent rows
   * (upProjectKv) and mlaPrefill; `absorbed`: absorbQuery + mlaDecode (causal) + unabsorbOutput, as decode runs.
   */
  form?: 'multi-head' | 'absorbed';
  /** Cached context rows gathered and up-projected at a time (0: a sequence's whole context at once). */
  contextChunk?: number;
  /** Also run the absorbed form on every prefill step, time it and compare the outputs (kept: the multi-head ones). */
  compare?: boolean;
}

/**
 * DeepSeek-V3.2's sparse attention for decode steps (every backend): a lightning indexer per layer with random weights
 * (its key k_I = W_k c_kv and queries q_I[j] = W_q[j] c_kv of the token, per-head weights fixed), its fp8 key cache
 * appended beside the latent one, and each decode query attending to the topk cached rows the indexer selects.
 */
export interface SparseOptions {
  topk: number;
  indexerHeads?: number;
  indexDim?: number;
}
/** What the sparse decode steps attended to: query rows selected against rows cached, summed over layers and steps. */
export interface SparseStats {
  topk: number;
  selectedRows: number;
  cachedRows: number;
}

/** The two forms' attention time over the prefill steps (compare), and how far their outputs were apart. */
export interface PrefillFormsStats {
  multiHeadSeconds: number;
  absorbedSeconds: number;
  tokens: number;
  maxRelErr: number;
}

/** A float tensor's host storage in the model dtype: bf16/f16 bit patterns, or f32 values. */
type FloatStorage = Uint16Array | Float32Array;

/**
 * What a CPU decode step of one batch size reuses: the attention's inputs and output as host tensors over shared
 * memory, written and read in place (no tensor, mirror copy or conversion buffer is made per call), and each layer's
 * four operations captured once as a graph, replayed each step (one queued task and one completion per layer).
 */
interface DecodeGraphs {
  qNope: FloatStorage; // [B, 1, H, nope]
  qPe: FloatStorage; // [B, 1, H, rope]
  kvC: FloatStorage; // [B, kvLoraRank]
  kPe: FloatStorage; // [B, rope]
  out: FloatStorage; // [B, 1, H, v]
  slots: Int32Array;
  positions: Int32Array;
  blockTable: Int32Array; // [B, the pool's blocks]: wide enough for any length, unused entries −1
  seqLens: Int32Array;
  graphs: Graph[];
  tensors: Tensor[];
}

/**
 * MLA on the addon. Decode steps (one token per sequence) run absorbed: per layer absorbQuery (with q_pe, so it
 * yields decode's q), appendLatentCache (RoPE of the rope key fused), mlaDecode over the paged latent cache,
 * unabsorbOutput (on the CPU, dense: replayed as one captured graph per layer, DecodeGraphs). Prefill steps run in multi-head form by default: appendLatentCache, then the new tokens' latent rows
 * gathered back (rotated) and up-projected, mlaPrefill over them (causal), and each sequence's earlier context
 * (a chunked prompt's previous chunks) gathered and attended in chunks, merged by log-sum-exp. One stream; the host
 * waits once per layer, for the output.
 */
export class MlaDecoder extends Decoder {
  readonly stream: Stream;
  readonly device: DeviceName;
  readonly caches: Tensor<FloatDType>[];
  readonly #wUk: Tensor<FloatDType>[];
  readonly #wUv: Tensor<FloatDType>[];
  readonly #cos: Tensor<'f32'>;
  readonly #sin: Tensor<'f32'>;
  readonly #dtype: FloatDType;
  #bits = new Map<string, Uint16Array>();
  #tables: { blockTable: Tensor<'i32'>; seqLens: Tensor<'i32'>; plan: ReturnType<typeof planDecode> } | null = null;
  // Per batch size, for CPU decode steps (dense attention); the current step's, or null when it runs op by op.
  #decodeGraphs = new Map<number, DecodeGraphs>();
  #replaying: DecodeGraphs | null = null;
  readonly #prefill: Required<MlaPrefillOptions>;
  readonly prefillForms: PrefillFormsStats = { multiHeadSeconds: 0, absorbedSeconds: 0, tokens: 0, maxRelErr: 0 };
  readonly sparseStats: SparseStats | null;
  readonly #indexer: { heads: number; dim: number; wK: Float32Array[]; wQ: Float32Array[]; weights: Float32Array[]; keys: Tensor<'fp8_e4m3'>[]; scales: Tensor<'f32'>[] } | null;

  constructor(weights: Weights, stream: Stream, numBlocks: number, maxPositions: number, prefill: MlaPrefillOptions = {}, sparse?: SparseOptions) {
    super(weights, numBlocks, maxPositions);
    this.#prefill = { form: prefill.form ?? 'multi-head', contextChunk: prefill.contextChunk ?? 0, compare: prefill.compare ?? false };
    const c = this.c;
    this.stream = stream;
    this.device = stream.device;
    this.#dtype = c.dtype;
    // On the CPU too, weights and tables go into the package's memory: an array over an ordinary ArrayBuffer would be
    // copied at every call that uses it (docs/lifetime.md).
    const onDevice = <T extends Tensor>(t: T): T => (this.device === 'cpu' ? (Tensor.empty(t.shape, t.dtype).copyFrom(t, { stream }) as T) : (t.to(this.device, { stream }) as T));
    this.#wUk = weights.layers.map((lw) => onDevice(this.#tensor(lw.wUk, [c.heads, c.nopeDim, c.kvLoraRank], 'own')));
    this.#wUv = weights.layers.map((lw) => onDevice(this.#tensor(lw.wUv, [c.heads, c.vHeadDim, c.kvLoraRank], 'own')));
    this.#cos = onDevice(Tensor.from(this.rope.cos, [maxPositions, c.ropeDim / 2]));
    this.#sin = onDevice(Tensor.from(this.rope.sin, [maxPositions, c.ropeDim / 2]));
    this.caches = Array.from({ length: c.layers }, () => Tensor.zeros([numBlocks, c.blockSize, c.kvLoraRank + c.ropeDim], this.#dtype, { device: this.device }));
    this.sparseStats = sparse && sparse.topk > 0 ? { topk: sparse.topk, selectedRows: 0, cachedRows: 0 } : null;
    this.#indexer = null;
    if (this.sparseStats) {
      const heads = sparse!.indexerHeads ?? 4, dim = sparse!.indexDim ?? 32;
      const rng = new Rng(c.seed ^ 0x5eed);
      const layers = Array.from({ length: c.layers });
      this.#indexer = {
        heads,
        dim,
        wK: layers.map(() => rng.fill(dim * c.kvLoraRank, 1 / Math.sqrt(c.kvLoraRank), 'f32')),
        wQ: layers.map(() => rng.fill(heads * dim * c.kvLoraRank, 1 / Math.sqrt(c.kvLoraRank), 'f32')),
        weights: layers.map(() => rng.fill(heads, 1 / Math.sqrt(heads), 'f32')),
        keys: layers.map(() => Tensor.zeros([numBlocks, c.blockSize, dim], 'fp8_e4m3', { device: this.device })),
        scales: layers.map(() => Tensor.zeros([numBlocks, c.blockSize], 'f32', { device: this.device })),
      };
    }
  }

  get cacheBytesPerToken(): number {
    return this.c.layers * (this.c.kvLoraRank + this.c.ropeDim) * DTYPE_BYTES[this.c.dtype];
  }

  /** The cache's pool as allocated (every layer). */
  get poolBytes(): number {
    return this.cache.pool.numBlocks * this.c.blockSize * this.cacheBytesPerToken;
  }

  /**
   * A host tensor of the model dtype over the first n values of `a` (already rounded to the dtype): f32 wraps the
   * array; bf16/f16 go through a reusable bit-pattern buffer named `scratch` ('own': a new one).
   */
  #tensor(a: Float32Array, shape: number[], scratch: string): Tensor<FloatDType> {
    const n = shape.reduce((x, y) => x * y, 1);
    if (this.#dtype === 'f32') return Tensor.from(scratch === 'own' ? a.slice(0, n) : a.subarray(0, n), shape);
    let bits = scratch === 'own' ? new Uint16Array(n) : this.#bits.get(scratch);
    if (!bits || bits.length < n) {
      bits = new Uint16Array(n);
      if (scratch !== 'own') this.#bits.set(scratch, bits);
    }
    toBits(a, n, this.#dtype, bits);
    return Tensor.from(bits.subarray(0, n), shape, this.#dtype);
  }

  #input(a: Float32Array, shape: number[], scratch: string): Tensor<FloatDType> {
    const t = this.#tensor(a, shape, scratch);
    return this.device === 'cpu' ? t : t.to(this.device, { stream: this.stream });
  }

  protected override beginStep(step: Step): void {
    this.#replaying = null;
    if (this.device === 'cpu' && step.queryLen === 1 && !this.#indexer) {
      this.#replaying = this.#replayStep(step);
      this.#tables = null;
      return;
    }
    const { blockTable, maxBlocks, seqLens } = this.cache.table(step.seqIds);
    const seqLensT = Tensor.from(seqLens, [step.seqIds.length]);
    this.#tables = {
      blockTable: Tensor.from(blockTable, [step.seqIds.length, maxBlocks]),
      seqLens: seqLensT,
      // One split-KV plan per step, reused by every layer.
      plan: planDecode({ seqLens: seqLensT, numHeads: this.c.heads, queryLen: step.queryLen, stream: this.stream }),
    };
  }

  /** The batch size's decode graphs (captured at its first step), with this step's index arrays written into them. */
  #replayStep(step: Step): DecodeGraphs {
    const B = step.seqIds.length, width = this.cache.pool.numBlocks;
    let g = this.#decodeGraphs.get(B);
    const fresh = !g;
    if (!g) {
      const c = this.c, H = c.heads;
      const floats = (n: number): FloatStorage => (this.#dtype === 'f32' ? new Float32Array(new SharedArrayBuffer(4 * n)) : new Uint16Array(new SharedArrayBuffer(2 * n)));
      const ints = (n: number) => new Int32Array(new SharedArrayBuffer(4 * n));
      g = { qNope: floats(B * H * c.nopeDim), qPe: floats(B * H * c.ropeDim), kvC: floats(B * c.kvLoraRank), kPe: floats(B * c.ropeDim), out: floats(B * H * c.vHeadDim), slots: ints(B), positions: ints(B), blockTable: ints(B * width), seqLens: ints(B), graphs: [], tensors: [] };
      this.#decodeGraphs.set(B, g);
      this.extraActivationBytes += [g.qNope, g.qPe, g.kvC, g.kPe, g.out, g.slots, g.positions, g.blockTable, g.seqLens].reduce((n, a) => n + a.byteLength, 0);
    }
    step.seqIds.forEach((id, b) => {
      const blocks = this.cache.blocksOf(id);
      g!.blockTable.fill(-1, b * width, (b + 1) * width);
      g!.blockTable.set(blocks, b * width);
      g!.seqLens[b] = this.cache.length(id);
      g!.positions[b] = step.positions[b];
      g!.slots[b] = this.cache.slot(id, step.positions[b]);
    });
    if (fresh) this.#capture(g, B, width);
    return g;
  }

  // Records each layer's append, absorb, decode and unabsorb over g's tensors (the index arrays hold a valid step).
  #capture(g: DecodeGraphs, B: number, width: number): void {
    const c = this.c, H = c.heads, dt = this.#dtype, stream = this.stream;
    const keep = <X extends Tensor>(t: X): X => (g.tensors.push(t), t);
    const wrap = (a: FloatStorage, shape: number[]) => keep(Tensor.from(a as never, shape, dt as never) as Tensor<FloatDType>);
    const kvC = wrap(g.kvC, [B, c.kvLoraRank]), kPe = wrap(g.kPe, [B, c.ropeDim]);
    const qNope = wrap(g.qNope, [B, 1, H, c.nopeDim]), qPe = wrap(g.qPe, [B, 1, H, c.ropeDim]), o = wrap(g.out, [B, 1, H, c.vHeadDim]);
    const slotMapping = keep(Tensor.from(g.slots, [B])), positions = keep(Tensor.from(g.positions, [B]));
    const blockTable = keep(Tensor.from(g.blockTable, [B, width])), seqLens = keep(Tensor.from(g.seqLens, [B]));
    const q = keep(Tensor.empty([B, 1, H, c.kvLoraRank + c.ropeDim], dt)), oLat = keep(Tensor.empty([B, 1, H, c.kvLoraRank], dt)), lse = keep(Tensor.empty([B, H, 1], 'f32'));
    // Replays replan when the lengths change.
    const plan = planDecode({ seqLens, numHeads: H, queryLen: 1, stream });
    const softmaxScale = softmaxScaleFor(c);
    for (let l = 0; l < c.layers; l++)
      g.graphs.push(
        stream.capture(() => {
          appendLatentCache({ cache: this.caches[l], kvC, kPe, slotMapping, rope: { positions, cos: this.#cos, sin: this.#sin, style: 'interleaved' }, stream });
          absorbQuery({ qNope, qPe, wUk: this.#wUk[l], out: q, stream });
          mlaDecode({ q, cache: this.caches[l], blockTable, seqLens, softmaxScale, kvLoraRank: c.kvLoraRank, plan, out: oLat, lse, stream });
          unabsorbOutput({ oLat, wUv: this.#wUv[l], out: o, stream });
        }),
      );
  }

  // A decode step's layer through its graph: the inputs converted straight into the shared tensors, the output read
  // straight out of its own.
  async #attendReplayed(l: number, g: DecodeGraphs, qNope: Float32Array, qPe: Float32Array, ckv: Float32Array, kpe: Float32Array, out: Float32Array): Promise<void> {
    const dt = this.#dtype;
    const put = (src: Float32Array, dst: FloatStorage) => (dt === 'f32' ? (dst as Float32Array).set(src.subarray(0, dst.length)) : toBits(src, dst.length, dt, dst as Uint16Array));
    put(ckv, g.kvC);
    put(kpe, g.kPe);
    put(qNope, g.qNope);
    put(qPe, g.qPe);
    g.graphs[l].replay();
    await this.stream.synchronize();
    if (dt === 'f32') out.set(g.out as Float32Array);
    else fromBits(g.out as Uint16Array, g.out.length, dt, out);
  }

  /**
   * For benchmarks, after the last decode step of `batch` sequences: replays every layer's graph of that step `times`
   * times back to back, waiting once at the end; returns the seconds per step, i.e. the four kernels of every layer
   * without the wait per layer a real step needs (its next layer's inputs come from this one's output). The replays
   * rewrite that step's cache rows (with the last layer's inputs): do not decode those sequences further.
   */
  async timeReplayedKernels(batch: number, times: number): Promise<number> {
    const g = this.#decodeGraphs.get(batch);
    if (!g) throw new Error(`no decode step of batch ${batch} has run on the CPU`);
    await this.stream.synchronize();
    const t0 = performance.now();
    for (let i = 0; i < times; i++) for (const graph of g.graphs) graph.replay();
    await this.stream.synchronize();
    return (performance.now() - t0) / 1000 / times;
  }

  protected async attend(l: number, step: Step, slots: Int32Array, qNope: Float32Array, qPe: Float32Array, ckv: Float32Array, kpe: Float32Array, out: Float32Array): Promise<void> {
    if (this.#replaying) return this.#attendReplayed(l, this.#replaying, qNope, qPe, ckv, kpe, out);
    this.#append(l, step, slots, ckv, kpe);
    if (step.queryLen === 1 || this.#prefill.form === 'absorbed') return this.#attendAbsorbed(l, step, qNope, qPe, out, ckv);
    const t0 = performance.now();
    await this.#attendMultiHead(l, step, qNope, qPe, out);
    if (!this.#prefill.compare) return;
    const t1 = performance.now();
    const absorbed = this.ws.get('absorbedOut', out.length);
    await this.#attendAbsorbed(l, step, qNope, qPe, absorbed);
    const f = this.prefillForms;
    f.multiHeadSeconds += (t1 - t0) / 1000;
    f.absorbedSeconds += (performance.now() - t1) / 1000;
    if (l === 0) f.tokens += step.tokens.length;
    let num = 0, den = 0;
    for (let i = 0; i < out.length; i++) (num += (out[i] - absorbed[i]) ** 2), (den += out[i] ** 2);
    f.maxRelErr = Math.max(f.maxRelErr, Math.sqrt(num / (den || 1)));
  }

  #append(l: number, step: Step, slots: Int32Array, ckv: Float32Array, kpe: Float32Array): void {
    const c = this.c, T = step.tokens.length;
    appendLatentCache({
      cache: this.caches[l],
      kvC: this.#input(ckv, [T, c.kvLoraRank], 'kvC'),
      kPe: this.#input(kpe, [T, c.ropeDim], 'kPe'),
      slotMapping: Tensor.from(slots, [T]),
      rope: { positions: Tensor.from(step.positions, [T]), cos: this.#cos, sin: this.#sin, style: 'interleaved' },
      stream: this.stream,
    });
    const ix = this.#indexer;
    if (!ix) return;
    const k = this.ws.get('indexKey', T * ix.dim);
    matmul(ckv, T, c.kvLoraRank, ix.wK[l], ix.dim, k);
    appendIndexerCache({ cache: ix.keys[l], scales: ix.scales[l], k: this.#input(k, [T, ix.dim], 'indexKey'), slotMapping: Tensor.from(slots, [T]), stream: this.stream });
  }

  // A decode step's selection: the indexer's queries from each token's latent row, its top-k slots per sequence.
  #select(l: number, step: Step, ckv: Float32Array): Tensor<'i32'> {
    const c = this.c, ix = this.#indexer!, B = step.seqIds.length, stats = this.sparseStats!;
    const q = this.ws.get('indexQuery', B * ix.heads * ix.dim);
    matmul(ckv, B, c.kvLoraRank, ix.wQ[l], ix.heads * ix.dim, q);
    const hostWeights = Tensor.from(new Float32Array(B * ix.heads).map((_, i) => ix.weights[l][i % ix.heads]), [B, 1, ix.heads]);
    const w = this.device === 'cpu' ? hostWeights : hostWeights.to(this.device, { stream: this.stream });
    const { indices, scores } = lightningIndexer({ q: this.#input(q, [B, 1, ix.heads, ix.dim], 'indexQuery'), weights: w, cache: ix.keys[l], scales: ix.scales[l], blockTable: this.#tables!.blockTable, seqLens: this.#tables!.seqLens, topk: stats.topk, stream: this.stream });
    scores.dispose();
    if (w !== hostWeights) w.dispose();
    const lens = this.#tables!.seqLens._descriptor('seqLens')[0] as Int32Array;
    for (let b = 0; b < B; b++) (stats.selectedRows += Math.min(stats.topk, lens[b])), (stats.cachedRows += lens[b]);
    return indices;
  }

  // The step's rows packed (no padding): the new tokens' keys are their own latent rows, read back from the cache
  // (where the rope key was rotated), attended causally; the context before them in chunks, not causally; merged.
  async #attendMultiHead(l: number, step: Step, qNope: Float32Array, qPe: Float32Array, out: Float32Array): Promise<void> {
    const c = this.c, H = c.heads, T = step.tokens.length, qk = c.nopeDim + c.ropeDim, stream = this.stream;
    const q = this.ws.get('qPacked', T * H * qk);
    for (let r = 0; r < T * H; r++) {
      q.set(qNope.subarray(r * c.nopeDim, (r + 1) * c.nopeDim), r * qk);
      q.set(qPe.subarray(r * c.ropeDim, (r + 1) * c.ropeDim), r * qk + c.nopeDim);
    }
    const cumulative = (xs: number[]) => Int32Array.from(xs.reduce((acc, x) => [...acc, acc[acc.length - 1] + x], [0]));
    const context: number[] = [];
    step.counts.reduce((row, k, b) => ((context[b] = step.positions[row]), row + k), 0); // first position = cached rows before
    const cuQ = Tensor.from(cumulative(step.counts), [step.counts.length + 1]);
    const blockTable = this.#tables!.blockTable;
    const softmaxScale = softmaxScaleFor(c);
    const qT = this.#input(q, [T, H, qk], 'qPacked');
    const temps: Tensor[] = [cuQ];
    const keep = <X extends Tensor>(t: X): X => (temps.push(t), t);
    const attendTo = (cuKv: Tensor<'i32'>, starts: number[], causal: boolean) => {
      const g = gatherLatentCache({ cache: this.caches[l], blockTable, cuSeqLens: cuKv, seqStarts: keep(Tensor.from(Int32Array.from(starts), [starts.length])), kvLoraRank: c.kvLoraRank, stream });
      const kv = upProjectKv({ kvC: keep(g.kvC), wUk: this.#wUk[l], wUv: this.#wUv[l], stream });
      const r = mlaPrefill({ q: qT, kNope: keep(kv.kNope), kPe: keep(g.kPe), v: keep(kv.v), cuSeqLensQ: cuQ, cuSeqLensKv: cuKv, softmaxScale, causal, stream });
      keep(r.out), keep(r.lse);
      return r;
    };
    let acc = attendTo(cuQ, context, true);
    const longest = Math.max(...context);
    const chunk = this.#prefill.contextChunk > 0 ? this.#prefill.contextChunk : longest;
    for (let s0 = 0; s0 < longest; s0 += chunk) {
      const counts = context.map((n) => Math.max(0, Math.min(chunk, n - s0)));
      const part = attendTo(keep(Tensor.from(cumulative(counts), [counts.length + 1])), context.map((n) => Math.min(s0, n)), false);
      acc = mergeAttentionStates({ outA: acc.out, lseA: acc.lse, outB: part.out, lseB: part.lse, stream });
      keep(acc.out), keep(acc.lse);
    }
    out.set((await acc.out.toFloat32()).subarray(0, out.length));
    const e = DTYPE_BYTES[c.dtype];
    this.extraActivationBytes = Math.max(this.extraActivationBytes, T * H * (qk + 2 * c.vHeadDim) * e + (T + chunk) * (c.kvLoraRank + c.ropeDim + H * (c.nopeDim + c.vHeadDim)) * e);
    for (const t of temps) t.dispose();
  }

  async #attendAbsorbed(l: number, step: Step, qNope: Float32Array, qPe: Float32Array, out: Float32Array, ckv?: Float32Array): Promise<void> {
    const c = this.c;
    const H = c.heads, B = step.seqIds.length, n = step.queryLen, T = step.tokens.length;
    const stream = this.stream;
    // mlaDecode takes q as [batch, queryLen, heads, D] with one queryLen for the batch: in a prefill of prompts of
    // different lengths each sequence's rows are right-aligned (left padding); with `causal`, padding rows see no
    // cache row at all (zero output) and real row j sees exactly positions 0 … its own.
    const padded = T !== B * n;
    const rowOf = (t: number) => (padded ? step.batchIndex[t] * n + (n - step.counts[step.batchIndex[t]]) + (t - rowStart[step.batchIndex[t]]) : t);
    const rowStart: number[] = [];
    if (padded) step.counts.reduce((s, k, b) => ((rowStart[b] = s), s + k), 0);
    let qn = qNope, qp = qPe;
    if (padded) {
      qn = this.ws.get('padNope', B * n * H * c.nopeDim).fill(0);
      qp = this.ws.get('padPe', B * n * H * c.ropeDim).fill(0);
      for (let t = 0; t < T; t++) {
        const r = rowOf(t);
        qn.set(qNope.subarray(t * H * c.nopeDim, (t + 1) * H * c.nopeDim), r * H * c.nopeDim);
        qp.set(qPe.subarray(t * H * c.ropeDim, (t + 1) * H * c.ropeDim), r * H * c.ropeDim);
      }
    }
    const tables = this.#tables!;
    const q = absorbQuery({
      qNope: this.#input(qn, [B, n, H, c.nopeDim], 'qNope'),
      qPe: this.#input(qp, [B, n, H, c.ropeDim], 'qPe'),
      wUk: this.#wUk[l],
      stream,
    });
    const softmaxScale = softmaxScaleFor(c);
    const indices = this.#indexer && n === 1 && ckv ? this.#select(l, step, ckv) : null;
    const { out: oLat, lse } = indices
      ? mlaSparseDecode({ q, cache: this.caches[l], indices, softmaxScale, kvLoraRank: c.kvLoraRank, stream })
      : mlaDecode({ q, cache: this.caches[l], blockTable: tables.blockTable, seqLens: tables.seqLens, softmaxScale, kvLoraRank: c.kvLoraRank, causal: n > 1, plan: tables.plan, stream });
    const o = unabsorbOutput({ oLat, wUv: this.#wUv[l], stream });
    const values = await o.toFloat32(); // [B, n, H, v]
    const e = DTYPE_BYTES[c.dtype];
    this.extraActivationBytes = Math.max(this.extraActivationBytes, (B * n * H * (2 * (c.kvLoraRank + c.ropeDim) + c.vHeadDim) + T * (c.kvLoraRank + c.ropeDim)) * e + B * n * H * 4);
    for (const t of [q, oLat, lse, o, ...(indices ? [indices] : [])]) t.dispose();
    const hv = H * c.vHeadDim;
    if (!padded) out.set(values.subarray(0, T * hv));
    else for (let t = 0; t < T; t++) out.set(values.subarray(rowOf(t) * hv, (rowOf(t) + 1) * hv), t * hv);
  }

  dispose(): void {
    for (const g of this.#decodeGraphs.values()) {
      for (const graph of g.graphs) graph.dispose();
      for (const t of g.tensors) t.dispose();
    }
    for (const t of [...this.caches, ...this.#wUk, ...this.#wUv, this.#cos, this.#sin]) t.dispose();
    if (this.#indexer) for (const t of [...this.#indexer.keys, ...this.#indexer.scales]) t.dispose();
  }
}

/**
 * The same model with a plain multi-head KV cache, all in TypeScript: per token and layer the K (nope + rope) and V
 * of every head are materialised from the latent and cached (rounded to the dtype; counted at the dtype's size,
 * held as f32 for the loops), and attention is the textbook softmax(q·Kᵀ·scale)·V per head.
 */
export class MhaDecoder extends Decoder {
  readonly #k: Float32Array[]; // per layer [slots, H, nope + rope]
  readonly #v: Float32Array[]; // per layer [slots, H, v]
  #scores = new Float32Array(0);

  constructor(weights: Weights, numBlocks: number, maxPositions: number) {
    super(weights, numBlocks, maxPositions);
    const c = this.c;
    const slots = numBlocks * c.blockSize;
    this.#k = Array.from({ length: c.layers }, () => new Float32Array(slots * c.heads * (c.nopeDim + c.ropeDim)));
    this.#v = Array.from({ length: c.layers }, () => new Float32Array(slots * c.heads * c.vHeadDim));
  }

  get cacheBytesPerToken(): number {
    return this.c.layers * this.c.heads * (this.c.nopeDim + this.c.ropeDim + this.c.vHeadDim) * DTYPE_BYTES[this.c.dtype];
  }

  protected async attend(l: number, step: Step, slots: Int32Array, qNope: Float32Array, qPe: Float32Array, ckv: Float32Array, kpe: Float32Array, out: Float32Array): Promise<void> {
    const c = this.c;
    const H = c.heads, nope = c.nopeDim, rd = c.ropeDim, vd = c.vHeadDim, rank = c.kvLoraRank, kw = nope + rd;
    const K = this.#k[l], V = this.#v[l];
    const wUk = this.w.layers[l].wUk, wUv = this.w.layers[l].wUv;
    const T = step.tokens.length;
    const kRow = this.ws.get('kRow', H * kw);
    const vRow = this.ws.get('vRow', H * vd);
    const pe = this.ws.get('pe', rd);
    // 1. Cache this step's keys and values: k_nope[i] = W_uk[i] c_kv, v[i] = W_uv[i] c_kv, k_pe = RoPE(W_kr h).
    for (let t = 0; t < T; t++) {
      const cb = t * rank;
      pe.set(kpe.subarray(t * rd, (t + 1) * rd));
      if (rd > 0) ropeInPlace(pe, 0, rd, this.rope.cos, this.rope.sin, step.positions[t]);
      for (let i = 0; i < H; i++) {
        for (let r = 0; r < nope; r++) {
          const wb = (i * nope + r) * rank;
          let s = 0;
          for (let j = 0; j < rank; j++) s += wUk[wb + j] * ckv[cb + j];
          kRow[i * kw + r] = s;
        }
        kRow.set(pe, i * kw + nope);
        for (let r = 0; r < vd; r++) {
          const wb = (i * vd + r) * rank;
          let s = 0;
          for (let j = 0; j < rank; j++) s += wUv[wb + j] * ckv[cb + j];
          vRow[i * vd + r] = s;
        }
      }
      roundInPlace(kRow, kRow.length, c.dtype);
      roundInPlace(vRow, vRow.length, c.dtype);
      K.set(kRow, slots[t] * H * kw);
      V.set(vRow, slots[t] * H * vd);
    }
    // 2. Attention: row t (at position p) sees its sequence's positions 0 … p.
    const scale = softmaxScaleFor(c);
    const maxLen = Math.max(...step.positions) + 1;
    if (this.#scores.length < maxLen) this.#scores = new Float32Array(Math.max(maxLen, this.#scores.length * 2));
    const scores = this.#scores;
    const slotOf = this.ws.get('slotOf', maxLen); // as floats: exact for slots < 2^24
    for (let t = 0; t < T; t++) {
      const id = step.seqIds[step.batchIndex[t]];
      const visible = step.positions[t] + 1;
      for (let s = 0; s < visible; s++) slotOf[s] = this.cache.slot(id, s);
      for (let i = 0; i < H; i++) {
        const qb = (t * H + i) * nope, pb = (t * H + i) * rd;
        let max = -Infinity;
        for (let s = 0; s < visible; s++) {
          const kb = (slotOf[s] * H + i) * kw;
          let dot = 0;
          for (let j = 0; j < nope; j++) dot += qNope[qb + j] * K[kb + j];
          for (let j = 0; j < rd; j++) dot += qPe[pb + j] * K[kb + nope + j];
          const sc = dot * scale;
          scores[s] = sc;
          if (sc > max) max = sc;
        }
        let sum = 0;
        for (let s = 0; s < visible; s++) {
          const e = Math.exp(scores[s] - max);
          scores[s] = e;
          sum += e;
        }
        const ob = (t * H + i) * vd;
        out.fill(0, ob, ob + vd);
        for (let s = 0; s < visible; s++) {
          const p = scores[s] / sum;
          const vb = (slotOf[s] * H + i) * vd;
          for (let j = 0; j < vd; j++) out[ob + j] += p * V[vb + j];
        }
      }
    }
    roundInPlace(out, T * H * vd, c.dtype);
    this.extraActivationBytes = Math.max(this.extraActivationBytes, this.#scores.byteLength);
  }
}
