/**
 * The naive, obviously-right version of every operation, in float64, for tests and for checking a peer.
 * Inputs are plain arrays with shapes (read a Tensor with `toFloat32()`); nothing here is fast.
 * @module mla-kernels/reference
 */
import { fromBf16Bits, fromFp8E4M3Bits, toBf16Bits, toFp8E4M3Bits } from './half.js';

/** A dense row-major array with its shape. */
export interface Dense {
  data: ArrayLike<number>;
  shape: readonly number[];
}

export interface RefRope {
  positions: Dense;
  cos: Dense;
  sin: Dense;
  style: 'interleaved' | 'neox';
}

/** The cache after appending: a new array; slots not named by slotMapping keep their old values. */
export function refAppendLatentCache(o: { cache: Dense; kvC: Dense; kPe: Dense; slotMapping: Dense; rope?: RefRope }): Float64Array {
  const [numTokens, kvLoraRank] = o.kvC.shape;
  const ropeDim = o.kPe.shape[1];
  const width = kvLoraRank + ropeDim;
  const cache = Float64Array.from(o.cache.data);
  for (let i = 0; i < numTokens; i++) {
    const slot = o.slotMapping.data[i];
    if (slot < 0) continue;
    for (let c = 0; c < kvLoraRank; c++) cache[slot * width + c] = o.kvC.data[i * kvLoraRank + c];
    const pe = Array.from({ length: ropeDim }, (_, j) => o.kPe.data[i * ropeDim + j]);
    const rotated = o.rope ? rope(pe, o.rope, o.rope.positions.data[i]) : pe;
    for (let j = 0; j < ropeDim; j++) cache[slot * width + kvLoraRank + j] = rotated[j];
  }
  return cache;
}

/** Rotary embedding of one vector at a position: pairs rotated by the angle whose cos/sin the tables give. */
export function rope(x: readonly number[], r: RefRope, position: number): number[] {
  const half = x.length / 2;
  const out = x.slice();
  for (let j = 0; j < half; j++) {
    const [a, b] = r.style === 'interleaved' ? [2 * j, 2 * j + 1] : [j, j + half];
    const c = r.cos.data[position * half + j];
    const s = r.sin.data[position * half + j];
    out[a] = x[a] * c - x[b] * s;
    out[b] = x[b] * c + x[a] * s;
  }
  return out;
}

/** The cached row (kvLoraRank + ropeDim numbers) of sequence b at position s. */
function cacheRow(cache: Dense, blockTable: Dense, b: number, s: number): number[] {
  const [, blockSize, width] = cache.shape;
  const maxBlocks = blockTable.shape[1];
  const block = blockTable.data[b * maxBlocks + Math.floor(s / blockSize)];
  const base = (block * blockSize + (s % blockSize)) * width;
  return Array.from({ length: width }, (_, k) => cache.data[base + k]);
}

/** How many cached rows query position t (of queryLen) sees. */
export function visibleRows(seqLen: number, queryLen: number, t: number, causal: boolean): number {
  const n = causal ? seqLen - queryLen + 1 + t : seqLen;
  return Math.max(0, Math.min(seqLen, n));
}

/** softmax-weighted sum; returns the output and the log-sum-exp (-Infinity and zeros when empty). */
function attend(scores: number[], values: number[][], width: number): { out: number[]; lse: number } {
  if (scores.length === 0) return { out: new Array<number>(width).fill(0), lse: -Infinity };
  const max = Math.max(...scores);
  const weights = scores.map((s) => Math.exp(s - max));
  const sum = weights.reduce((a, b) => a + b, 0);
  const out = new Array<number>(width).fill(0);
  weights.forEach((w, r) => {
    for (let k = 0; k < width; k++) out[k] += (w / sum) * values[r][k];
  });
  return { out, lse: max + Math.log(sum) };
}

/** Absorbed attention of the query at q.data[qBase, + row width) over cache rows, values their first V entries. */
function attendRows(q: Dense, qBase: number, rows: number[][], softmaxScale: number, V: number): { out: number[]; lse: number } {
  const scores = rows.map((row) => {
    let s = 0;
    for (let k = 0; k < row.length; k++) s += q.data[qBase + k] * row[k];
    return softmaxScale * s;
  });
  return attend(scores, rows, V);
}

export interface RefDecodeOptions {
  q: Dense;
  cache: Dense;
  blockTable: Dense;
  seqLens: Dense;
  softmaxScale: number;
  kvLoraRank: number;
  causal?: boolean;
}

/**
 * Absorbed attention of every query q[b, t, h, :] over the cache rows rowsOf(b, t) (values their first V entries):
 * out [batch, queryLen, heads, V], lse [batch, heads, queryLen]. The dense and the sparse decode differ only in rowsOf.
 */
function attendQueries(q: Dense, V: number, softmaxScale: number, rowsOf: (b: number, t: number) => number[][]): { out: Float64Array; lse: Float64Array } {
  const [batch, queryLen, heads, dim] = q.shape;
  const out = new Float64Array(batch * queryLen * heads * V);
  const lse = new Float64Array(batch * heads * queryLen);
  for (let b = 0; b < batch; b++)
    for (let t = 0; t < queryLen; t++) {
      const rows = rowsOf(b, t);
      for (let h = 0; h < heads; h++) {
        const r = attendRows(q, ((b * queryLen + t) * heads + h) * dim, rows, softmaxScale, V);
        out.set(r.out, ((b * queryLen + t) * heads + h) * V);
        lse[(b * heads + h) * queryLen + t] = r.lse;
      }
    }
  return { out, lse };
}

/** Absorbed decode: out [batch, queryLen, heads, kvLoraRank], lse [batch, heads, queryLen]. */
export function refMlaDecode(o: RefDecodeOptions): { out: Float64Array; lse: Float64Array } {
  const queryLen = o.q.shape[1];
  // One sequence's rows at a time, read once for all its queries.
  let rowsB = -1;
  let rows: number[][] = [];
  return attendQueries(o.q, o.kvLoraRank, o.softmaxScale, (b, t) => {
    const len = o.seqLens.data[b];
    if (rowsB !== b) {
      rows = Array.from({ length: len }, (_, s) => cacheRow(o.cache, o.blockTable, b, s));
      rowsB = b;
    }
    return rows.slice(0, visibleRows(len, queryLen, t, o.causal ?? false));
  });
}

/** q_lat[..., h, :] = W_uk[h]ᵀ q_nope[..., h, :], followed by q_pe when given. */
export function refAbsorbQuery(o: { qNope: Dense; wUk: Dense; qPe?: Dense }): Float64Array {
  const [heads, nope, rank] = o.wUk.shape;
  const ropeDim = o.qPe ? o.qPe.shape[o.qPe.shape.length - 1] : 0;
  const tokens = o.qNope.data.length / (heads * nope);
  const width = rank + ropeDim;
  const out = new Float64Array(tokens * heads * width);
  for (let t = 0; t < tokens; t++)
    for (let h = 0; h < heads; h++) {
      const th = t * heads + h;
      for (let c = 0; c < rank; c++) {
        let s = 0;
        for (let n = 0; n < nope; n++) s += o.wUk.data[(h * nope + n) * rank + c] * o.qNope.data[th * nope + n];
        out[th * width + c] = s;
      }
      for (let j = 0; j < ropeDim; j++) out[th * width + rank + j] = o.qPe!.data[th * ropeDim + j];
    }
  return out;
}

/** o[..., h, :] = W_uv[h] o_lat[..., h, :]. */
export function refUnabsorbOutput(o: { oLat: Dense; wUv: Dense }): Float64Array {
  const [heads, vDim, rank] = o.wUv.shape;
  const tokens = o.oLat.data.length / (heads * rank);
  const out = new Float64Array(tokens * heads * vDim);
  for (let th = 0; th < tokens * heads; th++) {
    const h = th % heads;
    for (let v = 0; v < vDim; v++) {
      let s = 0;
      for (let c = 0; c < rank; c++) s += o.wUv.data[(h * vDim + v) * rank + c] * o.oLat.data[th * rank + c];
      out[th * vDim + v] = s;
    }
  }
  return out;
}

export interface RefUnabsorbedOptions {
  /** [batch, queryLen, heads, nopeDim] */
  qNope: Dense;
  /** [batch, queryLen, heads, ropeDim] */
  qPe: Dense;
  /** [numBlocks, blockSize, kvLoraRank + ropeDim]: rows [c_kv, k_pe] */
  cache: Dense;
  blockTable: Dense;
  seqLens: Dense;
  /** [heads, nopeDim, kvLoraRank] */
  wUk: Dense;
  /** [heads, vHeadDim, kvLoraRank] */
  wUv: Dense;
  softmaxScale: number;
  causal?: boolean;
}

/**
 * Multi-head attention as MLA defines it, with nothing absorbed: per head, explicit keys
 * k_nope = W_uk c_kv and values v = W_uv c_kv, scores scale · (q_nope·k_nope + q_pe·k_pe).
 * Returns out [batch, queryLen, heads, vHeadDim] and lse [batch, heads, queryLen].
 */
export function refUnabsorbedAttention(o: RefUnabsorbedOptions): { out: Float64Array; lse: Float64Array } {
  const [batch, queryLen, heads, nope] = o.qNope.shape;
  const ropeDim = o.qPe.shape[3];
  const [, vDim, rank] = o.wUv.shape;
  const out = new Float64Array(batch * queryLen * heads * vDim);
  const lse = new Float64Array(batch * heads * queryLen);
  const matvec = (w: Dense, h: number, rowsOut: number, x: number[]): number[] =>
    Array.from({ length: rowsOut }, (_, r) => {
      let s = 0;
      for (let c = 0; c < rank; c++) s += w.data[(h * rowsOut + r) * rank + c] * x[c];
      return s;
    });
  for (let b = 0; b < batch; b++) {
    const len = o.seqLens.data[b];
    const rows = Array.from({ length: len }, (_, s) => cacheRow(o.cache, o.blockTable, b, s));
    for (let h = 0; h < heads; h++) {
      const kNope = rows.map((row) => matvec(o.wUk, h, nope, row.slice(0, rank)));
      const values = rows.map((row) => matvec(o.wUv, h, vDim, row.slice(0, rank)));
      for (let t = 0; t < queryLen; t++) {
        const th = (b * queryLen + t) * heads + h;
        const visible = visibleRows(len, queryLen, t, o.causal ?? false);
        const scores: number[] = [];
        for (let s = 0; s < visible; s++) {
          let dot = 0;
          for (let n = 0; n < nope; n++) dot += o.qNope.data[th * nope + n] * kNope[s][n];
          for (let j = 0; j < ropeDim; j++) dot += o.qPe.data[th * ropeDim + j] * rows[s][rank + j];
          scores.push(o.softmaxScale * dot);
        }
        const r = attend(scores, values.slice(0, visible), vDim);
        out.set(r.out, th * vDim);
        lse[(b * heads + h) * queryLen + t] = r.lse;
      }
    }
  }
  return { out, lse };
}

// --- prefill: multi-head (un-absorbed) attention over packed ragged batches -------------------------------------

export interface RefPrefillOptions {
  /** [totalQ, heads, nopeDim + ropeDim]: each new token's queries [q_nope, q_pe]. */
  q: Dense;
  /** [totalKv, heads, nopeDim]. */
  kNope: Dense;
  /** [totalKv, ropeDim]: one rope key per token, shared by every head. */
  kPe: Dense;
  /** [totalKv, heads, vHeadDim]. */
  v: Dense;
  /** [batch + 1]: sequence b's queries are rows [cuSeqLensQ[b], cuSeqLensQ[b + 1]) of q. */
  cuSeqLensQ: Dense;
  /** [batch + 1]: sequence b's keys and values are rows [cuSeqLensKv[b], cuSeqLensKv[b + 1]) of kNope, kPe, v. */
  cuSeqLensKv: Dense;
  softmaxScale: number;
  /** Query i of a sequence's n sees its first kvLen - n + 1 + i keys (aligned bottom-right, as mlaDecode). */
  causal?: boolean;
}

/**
 * Ragged multi-head prefill attention: score(t, s) = scale · (q_nope·k_nope[s] + q_pe·k_pe[s]) per head, the rope
 * key shared by the heads. Returns out [totalQ, heads, vHeadDim] and lse [totalQ, heads] (natural log; -Infinity
 * and zeros for a query that sees no key and for rows of q past the last sequence).
 */
export function refMlaPrefill(o: RefPrefillOptions): { out: Float64Array; lse: Float64Array } {
  const [totalQ, heads, qkDim] = o.q.shape;
  const nope = o.kNope.shape[2];
  const ropeDim = o.kPe.shape[1];
  const vDim = o.v.shape[2];
  if (nope + ropeDim !== qkDim) throw new Error('refMlaPrefill: q width must be nopeDim + ropeDim');
  const batch = o.cuSeqLensQ.data.length - 1;
  const out = new Float64Array(totalQ * heads * vDim);
  const lse = new Float64Array(totalQ * heads).fill(-Infinity);
  for (let b = 0; b < batch; b++) {
    const q0 = o.cuSeqLensQ.data[b], qLen = o.cuSeqLensQ.data[b + 1] - q0;
    const k0 = o.cuSeqLensKv.data[b], kvLen = o.cuSeqLensKv.data[b + 1] - k0;
    for (let h = 0; h < heads; h++) {
      const values = Array.from({ length: kvLen }, (_, s) => Array.from({ length: vDim }, (_, c) => o.v.data[((k0 + s) * heads + h) * vDim + c]));
      for (let i = 0; i < qLen; i++) {
        const qBase = ((q0 + i) * heads + h) * qkDim;
        const visible = visibleRows(kvLen, qLen, i, o.causal ?? false);
        const scores: number[] = [];
        for (let s = 0; s < visible; s++) {
          let dot = 0;
          for (let n = 0; n < nope; n++) dot += o.q.data[qBase + n] * o.kNope.data[((k0 + s) * heads + h) * nope + n];
          for (let j = 0; j < ropeDim; j++) dot += o.q.data[qBase + nope + j] * o.kPe.data[(k0 + s) * ropeDim + j];
          scores.push(o.softmaxScale * dot);
        }
        const r = attend(scores, values.slice(0, visible), vDim);
        out.set(r.out, ((q0 + i) * heads + h) * vDim);
        lse[(q0 + i) * heads + h] = r.lse;
      }
    }
  }
  return { out, lse };
}

export interface RefGatherOptions {
  /** [numBlocks, blockSize, kvLoraRank + ropeDim] as numbers (an fp8 cache as its stored values: cacheScale applies). */
  cache: Dense;
  blockTable: Dense;
  /** [batch + 1]: sequence b's rows go to output rows [cuSeqLens[b], cuSeqLens[b + 1]). */
  cuSeqLens: Dense;
  /** [batch]: the cached position of each sequence's first gathered row (default 0). */
  seqStarts?: Dense;
  kvLoraRank: number;
  /** Rows of the outputs (default cuSeqLens[batch]); rows past the gathered ones are zero. */
  numRows?: number;
  cacheScale?: number;
}

/** The cached rows of each sequence, dequantised: kvC [rows, kvLoraRank] and kPe [rows, ropeDim]. */
export function refGatherLatentCache(o: RefGatherOptions): { kvC: Float64Array; kPe: Float64Array } {
  const width = o.cache.shape[2];
  const ropeDim = width - o.kvLoraRank;
  const batch = o.cuSeqLens.data.length - 1;
  const rows = o.numRows ?? o.cuSeqLens.data[batch];
  const scale = o.cacheScale ?? 1;
  const kvC = new Float64Array(rows * o.kvLoraRank);
  const kPe = new Float64Array(rows * ropeDim);
  for (let b = 0; b < batch; b++) {
    const start = o.seqStarts ? o.seqStarts.data[b] : 0;
    for (let r = o.cuSeqLens.data[b]; r < o.cuSeqLens.data[b + 1]; r++) {
      const row = cacheRow(o.cache, o.blockTable, b, start + r - o.cuSeqLens.data[b]);
      for (let c = 0; c < o.kvLoraRank; c++) kvC[r * o.kvLoraRank + c] = row[c] * scale;
      for (let j = 0; j < ropeDim; j++) kPe[r * ropeDim + j] = row[o.kvLoraRank + j] * scale;
    }
  }
  return { kvC, kPe };
}

/** Per head, the keys and values MLA defines from the latent: kNope[t, h] = W_uk[h] c_kv[t], v[t, h] = W_uv[h] c_kv[t]. */
export function refUpProjectKv(o: { kvC: Dense; wUk: Dense; wUv: Dense }): { kNope: Float64Array; v: Float64Array } {
  const [tokens, rank] = o.kvC.shape;
  const [heads, nope] = o.wUk.shape;
  const vDim = o.wUv.shape[1];
  const kNope = new Float64Array(tokens * heads * nope);
  const v = new Float64Array(tokens * heads * vDim);
  const project = (w: Dense, rowsOut: number, into: Float64Array) => {
    for (let t = 0; t < tokens; t++)
      for (let h = 0; h < heads; h++)
        for (let r = 0; r < rowsOut; r++) {
          let s = 0;
          for (let c = 0; c < rank; c++) s += w.data[(h * rowsOut + r) * rank + c] * o.kvC.data[t * rank + c];
          into[(t * heads + h) * rowsOut + r] = s;
        }
  };
  project(o.wUk, nope, kNope);
  project(o.wUv, vDim, v);
  return { kNope, v };
}

/**
 * Two attention results over disjoint key sets merged into the result over their union, by log-sum-exp:
 * out = (e^lseA outA + e^lseB outB) / (e^lseA + e^lseB), lse = log(e^lseA + e^lseB). A part with lse = -Infinity
 * (it saw no key) weighs nothing; both empty gives zeros and -Infinity. out [..., width], lse [...].
 */
export function refMergeAttentionStates(o: { outA: Dense; lseA: Dense; outB: Dense; lseB: Dense }): { out: Float64Array; lse: Float64Array } {
  const rows = o.lseA.data.length;
  const width = rows === 0 ? 0 : o.outA.data.length / rows;
  const out = new Float64Array(rows * width);
  const lse = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const a = o.lseA.data[r], b = o.lseB.data[r];
    const max = Math.max(a, b);
    if (max === -Infinity) {
      lse[r] = -Infinity;
      continue;
    }
    const wa = Math.exp(a - max), wb = Math.exp(b - max);
    for (let c = 0; c < width; c++) out[r * width + c] = (wa * o.outA.data[r * width + c] + wb * o.outB.data[r * width + c]) / (wa + wb);
    lse[r] = max + Math.log(wa + wb);
  }
  return { out, lse };
}

// --- DeepSeek Sparse Attention (DeepSeek-V3.2) ------------------------------------------------------------------------

/** The latent values sharing one fp32 scale in an `fp8_ds_mla` row (lib/dtypes.ts's DS_MLA_TILE, restated: this module imports no package code). */
const DS_TILE = 128;
const FP8_MAX = 448;
const FLT_MIN = 2 ** -126;

/**
 * One token's row of an `fp8_ds_mla` cache (FlashMLA's DeepSeek-V3.2 layout, vLLM's `fp8_ds_mla`), encoded in float32
 * arithmetic as the kernels do: bytes [0, kvLoraRank) the latent as e4m3(value / scale) with one scale per 128 values,
 * scale = max(amax / 448, FLT_MIN); then the kvLoraRank / 128 scales as little-endian fp32; then the rope part as bf16.
 * 656 bytes for 512 + 64.
 */
export function encodeDsMlaRow(kvC: ArrayLike<number>, kPe: ArrayLike<number>): Uint8Array {
  const rank = kvC.length, ropeDim = kPe.length, tiles = rank / DS_TILE;
  const bytes = new Uint8Array(rank + 4 * tiles + 2 * ropeDim);
  const view = new DataView(bytes.buffer);
  for (let t = 0; t < tiles; t++) {
    let amax = 0;
    for (let c = t * DS_TILE; c < (t + 1) * DS_TILE; c++) amax = Math.max(amax, Math.abs(Math.fround(kvC[c])));
    const scale = Math.max(Math.fround(amax / FP8_MAX), FLT_MIN);
    for (let c = t * DS_TILE; c < (t + 1) * DS_TILE; c++) bytes[c] = toFp8E4M3Bits(Math.fround(Math.fround(kvC[c]) / scale));
    view.setFloat32(rank + 4 * t, scale, true);
  }
  for (let j = 0; j < ropeDim; j++) view.setUint16(rank + 4 * tiles + 2 * j, toBf16Bits(Math.fround(kPe[j])), true);
  return bytes;
}

/** An `fp8_ds_mla` cache's bytes ([numBlocks, blockSize, bytes per token]) decoded to values: [numBlocks, blockSize, kvLoraRank + ropeDim]. */
export function unpackDsMlaCache(bytes: Uint8Array, shape: readonly number[], kvLoraRank: number): Dense {
  const [numBlocks, blockSize, rowBytes] = shape;
  const tiles = kvLoraRank / DS_TILE;
  const ropeDim = (rowBytes - kvLoraRank - 4 * tiles) / 2;
  const width = kvLoraRank + ropeDim, slots = numBlocks * blockSize;
  const data = new Float64Array(slots * width);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let s = 0; s < slots; s++) {
    const at = s * rowBytes;
    for (let c = 0; c < kvLoraRank; c++) data[s * width + c] = fromFp8E4M3Bits(bytes[at + c]) * view.getFloat32(at + kvLoraRank + 4 * Math.floor(c / DS_TILE), true);
    for (let j = 0; j < ropeDim; j++) data[s * width + kvLoraRank + j] = fromBf16Bits(view.getUint16(at + kvLoraRank + 4 * tiles + 2 * j, true));
  }
  return { data, shape: [numBlocks, blockSize, width] };
}

export interface RefSparseDecodeOptions {
  /** [batch, queryLen, heads, kvLoraRank + ropeDim] */
  q: Dense;
  /** [numBlocks, blockSize, kvLoraRank + ropeDim] values (an fp8_ds_mla cache through unpackDsMlaCache; an fp8_e4m3 one times its scale). */
  cache: Dense;
  /** [batch, queryLen, topk] slots, -1 padding. */
  indices: Dense;
  softmaxScale: number;
  kvLoraRank: number;
}

/** Sparse decode: query t of sequence b over the cache slots indices[b, t, :] (a slot named twice counts twice). out [batch, queryLen, heads, kvLoraRank], lse [batch, heads, queryLen]. */
export function refMlaSparseDecode(o: RefSparseDecodeOptions): { out: Float64Array; lse: Float64Array } {
  const [, queryLen, , dim] = o.q.shape;
  const topk = o.indices.shape[2];
  const row = (slot: number) => Array.from({ length: dim }, (_, k) => o.cache.data[slot * dim + k]);
  return attendQueries(o.q, o.kvLoraRank, o.softmaxScale, (b, t) => {
    const slots: number[] = [];
    for (let k = 0; k < topk; k++) {
      const slot = o.indices.data[(b * queryLen + t) * topk + k];
      if (slot >= 0) slots.push(slot);
    }
    return slots.map(row);
  });
}

export interface RefLightningIndexerOptions {
  /** [batch, queryLen, indexerHeads, indexDim] */
  q: Dense;
  /** [batch, queryLen, indexerHeads] */
  weights: Dense;
  /** [numBlocks, blockSize, indexDim] key values (an fp8 cache's stored values times its per-key scales). */
  cache: Dense;
  blockTable: Dense;
  seqLens: Dense;
  topk: number;
  causal?: boolean;
}

/**
 * The lightning indexer: I[t, s] = Σ_j w[t, j] ReLU(q[t, j] · k[s]) over the positions s query t sees, then the topk
 * largest (ties: the earlier position) as slots in increasing position order, -1 (score -Infinity) after them.
 * indices and scores [batch, queryLen, topk]; also every visible score, per query row, for tolerance checks.
 */
export function refLightningIndexer(o: RefLightningIndexerOptions): { indices: Int32Array; scores: Float64Array; all: Float64Array[] } {
  const [batch, queryLen, heads, dim] = o.q.shape;
  const blockSize = o.cache.shape[1];
  const maxBlocks = o.blockTable.shape[1];
  const indices = new Int32Array(batch * queryLen * o.topk).fill(-1);
  const scores = new Float64Array(batch * queryLen * o.topk).fill(-Infinity);
  const all: Float64Array[] = [];
  for (let b = 0; b < batch; b++) {
    const len = o.seqLens.data[b];
    const slotOf = (s: number) => o.blockTable.data[b * maxBlocks + Math.floor(s / blockSize)] * blockSize + (s % blockSize);
    for (let t = 0; t < queryLen; t++) {
      const visible = visibleRows(len, queryLen, t, o.causal ?? false);
      const row = new Float64Array(visible);
      for (let s = 0; s < visible; s++) {
        const slot = slotOf(s);
        let total = 0;
        for (let h = 0; h < heads; h++) {
          let dot = 0;
          for (let d = 0; d < dim; d++) dot += o.q.data[((b * queryLen + t) * heads + h) * dim + d] * o.cache.data[slot * dim + d];
          total += o.weights.data[(b * queryLen + t) * heads + h] * Math.max(dot, 0);
        }
        row[s] = total;
      }
      all.push(row);
      const chosen = Array.from({ length: visible }, (_, s) => s)
        .sort((x, y) => row[y] - row[x] || x - y)
        .slice(0, o.topk)
        .sort((x, y) => x - y);
      chosen.forEach((s, j) => {
        indices[(b * queryLen + t) * o.topk + j] = slotOf(s);
        scores[(b * queryLen + t) * o.topk + j] = row[s];
      });
    }
  }
  return { indices, scores, all };
}

/** An indexer key as an fp8 cache stores it (float32 arithmetic, as the kernels): e4m3(k / scale) and scale = max(amax / 448, FLT_MIN). */
export function encodeIndexerKey(k: ArrayLike<number>): { bytes: Uint8Array; scale: number } {
  let amax = 0;
  for (let i = 0; i < k.length; i++) amax = Math.max(amax, Math.abs(Math.fround(k[i])));
  const scale = Math.max(Math.fround(amax / FP8_MAX), FLT_MIN);
  const bytes = new Uint8Array(k.length);
  for (let i = 0; i < k.length; i++) bytes[i] = toFp8E4M3Bits(Math.fround(Math.fround(k[i]) / scale));
  return { bytes, scale };
}
