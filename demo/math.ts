// The plain arithmetic around attention, in TypeScript: matrix products, RMSNorm, SwiGLU, RoPE, rounding to the
// model's dtype. Row-major Float32Arrays, fp32 accumulation, no allocation inside the loops.
import { fromF16Bits, toF16Bits } from 'mla-kernels';

export type ModelDType = 'f32' | 'bf16' | 'f16';

/** mulberry32 with Box–Muller normals: the seeded random weights and prompts. */
export class Rng {
  #s: number;
  #spare: number | null = null;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  normal(): number {
    if (this.#spare !== null) {
      const s = this.#spare;
      this.#spare = null;
      return s;
    }
    const u = 1 - this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
  /** n normal values times `scale`, rounded to the dtype. */
  fill(n: number, scale: number, dtype: ModelDType): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = this.normal() * scale;
    roundInPlace(a, a.length, dtype);
    return a;
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Rounds the first n values to the dtype (nearest even), keeping them as f32: what a bf16/f16 tensor would hold. */
export function roundInPlace(a: Float32Array, n: number, dtype: ModelDType): void {
  if (dtype === 'f32') return;
  if (dtype === 'bf16') {
    for (let i = 0; i < n; i++) {
      f32[0] = a[i];
      const u = u32[0];
      u32[0] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) << 16; // finite inputs only (the model's are)
      a[i] = f32[0];
    }
    return;
  }
  for (let i = 0; i < n; i++) a[i] = fromF16Bits(toF16Bits(a[i]));
}

/** Writes the bf16 / f16 bit patterns of the first n values (already rounded to the dtype) into `bits`. */
export function toBits(a: Float32Array, n: number, dtype: 'bf16' | 'f16', bits: Uint16Array): void {
  if (dtype === 'bf16') {
    for (let i = 0; i < n; i++) {
      f32[0] = a[i];
      bits[i] = u32[0] >>> 16; // exact: a[i] is a bf16 value
    }
  } else for (let i = 0; i < n; i++) bits[i] = toF16Bits(a[i]);
}

/** Writes the values of the first n bf16 / f16 bit patterns of `bits` into `out` (exact). */
export function fromBits(bits: Uint16Array, n: number, dtype: 'bf16' | 'f16', out: Float32Array): void {
  if (dtype === 'bf16') {
    for (let i = 0; i < n; i++) {
      u32[0] = bits[i] << 16;
      out[i] = f32[0];
    }
  } else for (let i = 0; i < n; i++) out[i] = fromF16Bits(bits[i]);
}

/**
 * y[rows × n] (+)= x[rows × k] · wᵀ with w[n × k] (a linear layer's weight as [out, in], PyTorch's layout). Dot
 * products in registers over tiles of 4 rows × 2 outputs (1 × 4 for the rows left), each weight load used
 * several times: about 2 GMAC/s per core in V8, twice the naive loop.
 */
export function matmul(x: Float32Array, rows: number, k: number, w: Float32Array, n: number, y: Float32Array, accumulate = false): void {
  const acc = accumulate ? 1 : 0;
  let r = 0;
  for (; r + 4 <= rows; r += 4) {
    const x0 = r * k, x1 = x0 + k, x2 = x1 + k, x3 = x2 + k;
    const y0 = r * n, y1 = y0 + n, y2 = y1 + n, y3 = y2 + n;
    let j = 0;
    for (; j + 2 <= n; j += 2) {
      const w0 = j * k, w1 = w0 + k;
      let s00 = 0, s01 = 0, s10 = 0, s11 = 0, s20 = 0, s21 = 0, s30 = 0, s31 = 0;
      for (let i = 0; i < k; i++) {
        const b0 = w[w0 + i], b1 = w[w1 + i];
        let a = x[x0 + i];
        s00 += a * b0;
        s01 += a * b1;
        a = x[x1 + i];
        s10 += a * b0;
        s11 += a * b1;
        a = x[x2 + i];
        s20 += a * b0;
        s21 += a * b1;
        a = x[x3 + i];
        s30 += a * b0;
        s31 += a * b1;
      }
      y[y0 + j] = acc * y[y0 + j] + s00;
      y[y0 + j + 1] = acc * y[y0 + j + 1] + s01;
      y[y1 + j] = acc * y[y1 + j] + s10;
      y[y1 + j + 1] = acc * y[y1 + j + 1] + s11;
      y[y2 + j] = acc * y[y2 + j] + s20;
      y[y2 + j + 1] = acc * y[y2 + j + 1] + s21;
      y[y3 + j] = acc * y[y3 + j] + s30;
      y[y3 + j + 1] = acc * y[y3 + j + 1] + s31;
    }
    for (; j < n; j++) {
      const wo = j * k;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < k; i++) {
        const b = w[wo + i];
        s0 += x[x0 + i] * b;
        s1 += x[x1 + i] * b;
        s2 += x[x2 + i] * b;
        s3 += x[x3 + i] * b;
      }
      y[y0 + j] = acc * y[y0 + j] + s0;
      y[y1 + j] = acc * y[y1 + j] + s1;
      y[y2 + j] = acc * y[y2 + j] + s2;
      y[y3 + j] = acc * y[y3 + j] + s3;
    }
  }
  for (; r < rows; r++) {
    const xo = r * k, yo = r * n;
    let j = 0;
    for (; j + 4 <= n; j += 4) {
      const w0 = j * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < k; i++) {
        const a = x[xo + i];
        s0 += a * w[w0 + i];
        s1 += a * w[w1 + i];
        s2 += a * w[w2 + i];
        s3 += a * w[w3 + i];
      }
      y[yo + j] = acc * y[yo + j] + s0;
      y[yo + j + 1] = acc * y[yo + j + 1] + s1;
      y[yo + j + 2] = acc * y[yo + j + 2] + s2;
      y[yo + j + 3] = acc * y[yo + j + 3] + s3;
    }
    for (; j < n; j++) {
      const wo = j * k;
      let s = 0;
      for (let i = 0; i < k; i++) s += x[xo + i] * w[wo + i];
      y[yo + j] = acc * y[yo + j] + s;
    }
  }
}

/** y = x / rms(x) · g per row of width n (stride `stride`, offset `off` within each row of x and y). */
export function rmsNorm(x: Float32Array, rows: number, n: number, g: Float32Array, y: Float32Array, eps = 1e-6, stride = n, off = 0, yStride = n): void {
  for (let r = 0; r < rows; r++) {
    const xo = r * stride + off, yo = r * yStride;
    let ss = 0;
    for (let j = 0; j < n; j++) ss += x[xo + j] * x[xo + j];
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let j = 0; j < n; j++) y[yo + j] = x[xo + j] * inv * g[j];
  }
}

/** gate ← silu(gate) · up, elementwise over n values. */
export function swiglu(gate: Float32Array, up: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    gate[i] = (g / (1 + Math.exp(-g))) * up[i];
  }
}

/** cos/sin tables [maxPositions, ropeDim/2] of rotary angle pos · theta^(−2j/ropeDim): what appendLatentCache takes. */
export function ropeTables(maxPositions: number, ropeDim: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const half = ropeDim / 2;
  const cos = new Float32Array(maxPositions * half);
  const sin = new Float32Array(maxPositions * half);
  for (let p = 0; p < maxPositions; p++)
    for (let j = 0; j < half; j++) {
      const angle = p * theta ** ((-2 * j) / ropeDim);
      cos[p * half + j] = Math.cos(angle);
      sin[p * half + j] = Math.sin(angle);
    }
  return { cos, sin };
}

/**
 * Interleaved RoPE (DeepSeek's pairing, the kernel's 'interleaved' style: pairs (x[2j], x[2j+1])) of one vector of
 * ropeDim values at `off` in x, in place, at `position`. Same tables and formula as the kernel.
 */
export function ropeInPlace(x: Float32Array, off: number, ropeDim: number, cos: Float32Array, sin: Float32Array, position: number): void {
  const half = ropeDim / 2;
  const t = position * half;
  for (let j = 0; j < half; j++) {
    const a = x[off + 2 * j], b = x[off + 2 * j + 1];
    const c = cos[t + j], s = sin[t + j];
    x[off + 2 * j] = a * c - b * s;
    x[off + 2 * j + 1] = b * c + a * s;
  }
}

/** Index of the largest value in x[off, off + n). */
export function argmax(x: Float32Array, off: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[off + i] > x[off + best]) best = i;
  return best;
}

/** ‖a − b‖ / ‖b‖ over the first n values. */
export function relErr(a: Float32Array, b: Float32Array, n: number): number {
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}
