/**
 * The naive, obviously-right version of every operation, in float64, for tests and for checking a peer.
 * Inputs are plain arrays with shapes (read a Tensor with `toFloat32()`); nothing here is fast.
 * @module mla-kernels/reference
 */

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

export interface RefDecodeOptions {
  q: Dense;
  cache: Dense;
  blockTable: Dense;
  seqLens: Dense;
  softmaxScale: number;
  kvLoraRank: number;
  causal?: boolean;
}

/** Absorbed decode: out [batch, queryLen, heads, kvLoraRank], lse [batch, heads, queryLen]. */
export function refMlaDecode(o: RefDecodeOptions): { out: Float64Array; lse: Float64Array } {
  const [batch, queryLen, heads, dim] = o.q.shape;
  const V = o.kvLoraRank;
  const out = new Float64Array(batch * queryLen * heads * V);
  const lse = new Float64Array(batch * heads * queryLen);
  for (let b = 0; b < batch; b++) {
    const len = o.seqLens.data[b];
    const rows = Array.from({ length: len }, (_, s) => cacheRow(o.cache, o.blockTable, b, s));
    for (let t = 0; t < queryLen; t++)
      for (let h = 0; h < heads; h++) {
        const qBase = ((b * queryLen + t) * heads + h) * dim;
        const visible = rows.slice(0, visibleRows(len, queryLen, t, o.causal ?? false));
        const scores = visible.map((row) => {
          let s = 0;
          for (let k = 0; k < dim; k++) s += o.q.data[qBase + k] * row[k];
          return o.softmaxScale * s;
        });
        const r = attend(scores, visible, V);
        out.set(r.out, ((b * queryLen + t) * heads + h) * V);
        lse[(b * heads + h) * queryLen + t] = r.lse;
      }
  }
  return { out, lse };
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
