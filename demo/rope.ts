// RoPE tables and the attention scale of a model whose file says how its positions are scaled (a GGUF's
// rope.scaling.* keys): none, linear, or YaRN as DeepSeek-V2/V3 use it. The formulas are llama.cpp's for its deepseek2
// architecture (src/models/deepseek2.cpp, llama-context.cpp, ggml's rope_yarn), so a file means the same here as there.
import { ropeTables } from './math.js';

export interface RopeScaling {
  type: 'none' | 'linear' | 'yarn';
  /** rope.scaling.factor: context stretch (YaRN: 40 in DeepSeek-V2/V3); 1 when absent. */
  factor: number;
  /** rope.scaling.original_context_length (YaRN's correction range). */
  originalContext: number;
  /** DeepSeek's mscale_all_dim: rope.scaling.yarn_log_multiplier / 0.1 (the converter stores it times 0.1); 0 when absent. */
  yarnLogMultiplier: number;
  /** rope.scaling.attn_factor; 1 when absent. */
  attnFactor: number;
}

/** What the attention of such a model needs: cos/sin tables (pairs as appendLatentCache takes them) and the scale. */
interface RopeConfig {
  ropeDim: number;
  nopeDim: number;
  ropeTheta: number;
  ropeScaling?: RopeScaling;
}

const YARN_BETA_FAST = 32; // llama.cpp's defaults; its deepseek2 loader reads no other value
const YARN_BETA_SLOW = 1;
const getMscale = (scale: number, mscale: number) => (scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1);

/** freq_scale, ext_factor, the magnitude of cos/sin, and the factor multiplying the q·k scale (squared there). */
function ropeParams(s: RopeScaling): { freqScale: number; extFactor: number; magnitude: number; kqMscale: number } {
  const freqScale = s.type === 'none' || s.factor === 0 ? 1 : 1 / s.factor;
  if (s.type === 'yarn') {
    const factor = 1 / freqScale;
    // llama-context.cpp takes DeepSeek's mscale equal to mscale_all_dim, so their ratio is 1 when the file has the key.
    const ratio = s.yarnLogMultiplier !== 0 ? 1 : getMscale(factor, 1);
    const magnitude = ratio * s.attnFactor;
    return { freqScale, extFactor: 1, magnitude, kqMscale: magnitude * (1 + 0.1 * s.yarnLogMultiplier * Math.log(factor)) };
  }
  const orig = s.attnFactor * (1 + 0.1 * Math.log(1 / freqScale));
  return { freqScale, extFactor: 0, magnitude: s.attnFactor, kqMscale: orig * (1 + 0.1 * s.yarnLogMultiplier * Math.log(1 / freqScale)) };
}

/** cos/sin [maxPositions, ropeDim/2] for the model's RoPE (plain tables when it has no scaling). */
export function ropeTablesFor(c: RopeConfig, maxPositions: number): { cos: Float32Array; sin: Float32Array } {
  if (!c.ropeScaling || (c.ropeScaling.type === 'none' && c.ropeScaling.attnFactor === 1)) return ropeTables(maxPositions, c.ropeDim, c.ropeTheta);
  const { freqScale, extFactor, magnitude } = ropeParams(c.ropeScaling);
  const half = c.ropeDim / 2;
  const corr = (beta: number) => (c.ropeDim * Math.log(c.ropeScaling!.originalContext / (beta * 2 * Math.PI))) / (2 * Math.log(c.ropeTheta));
  const low = Math.max(0, Math.floor(corr(YARN_BETA_FAST)));
  const high = Math.min(c.ropeDim - 1, Math.ceil(corr(YARN_BETA_SLOW)));
  const mix = new Float64Array(half);
  for (let j = 0; j < half; j++) {
    const y = (j - low) / Math.max(0.001, high - low);
    mix[j] = (1 - Math.min(1, Math.max(0, y))) * extFactor;
  }
  const cos = new Float32Array(maxPositions * half);
  const sin = new Float32Array(maxPositions * half);
  for (let p = 0; p < maxPositions; p++)
    for (let j = 0; j < half; j++) {
      const extrap = p * c.ropeTheta ** ((-2 * j) / c.ropeDim);
      const theta = freqScale * extrap * (1 - mix[j]) + extrap * mix[j];
      cos[p * half + j] = Math.cos(theta) * magnitude;
      sin[p * half + j] = Math.sin(theta) * magnitude;
    }
  return { cos, sin };
}

/** The softmax scale of the scores: 1/sqrt(nope + rope), times YaRN's mscale² where the file asks for it. */
export function softmaxScaleFor(c: RopeConfig): number {
  const base = 1 / Math.sqrt(c.nopeDim + c.ropeDim);
  if (!c.ropeScaling) return base;
  const m = ropeParams(c.ropeScaling).kqMscale;
  return base * m * m;
}
