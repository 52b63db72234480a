// Mixture-of-experts feed-forward layers as DeepSeek-V2/V3 have them: a router picks the top-k routed experts per
// token (V2: softmax gating; V3: sigmoid gating, a per-expert selection bias, and group-limited routing), each a
// SwiGLU MLP, weighted and summed, plus the shared experts (one wider SwiGLU MLP every token goes through). The first
// `denseLayers` layers keep the dense MLP. Plain TypeScript over Float32Arrays, like the rest of the model's
// arithmetic (math.ts); the routing follows llama.cpp's build_moe_ffn, so a GGUF means the same here as there.
import { Rng, matmul, swiglu, type ModelDType } from './math.js';

export interface MoeConfig {
  /** Routed experts per MoE layer (expert_count). */
  experts: number;
  /** Experts each token goes to (expert_used_count, top-k). */
  expertsUsed: number;
  /** Shared experts (expert_shared_count): one SwiGLU MLP of width sharedExperts · expertFfn; 0 for none. */
  sharedExperts: number;
  /** Hidden width of one expert (expert_feed_forward_length). */
  expertFfn: number;
  /** Leading layers with the dense MLP (leading_dense_block_count); the rest are MoE. */
  denseLayers: number;
  /** V2: softmax over the router logits; V3: sigmoid of each. */
  gating: 'softmax' | 'sigmoid';
  /** Divide the chosen experts' weights by their sum (expert_weights_norm; V3). */
  normTopK: boolean;
  /** Multiply the chosen experts' weights (expert_weights_scale; V2: 16, V3: 2.5); 0 or 1: no scaling. */
  routedScale: number;
  /** Expert groups (expert_group_count; V3: 8) of which the best `groupsUsed` are eligible; 0 or 1: no groups. */
  groups: number;
  groupsUsed: number;
  /** A per-expert bias added to the gate for choosing (not weighting) experts (V3's exp_probs_b). */
  selectionBias: boolean;
}

export interface MoeLayerWeights {
  router: Float32Array; // [experts, emb]
  selectionBias?: Float32Array; // [experts]
  gate: Float32Array; // [experts, expertFfn, emb]
  up: Float32Array; // [experts, expertFfn, emb]
  down: Float32Array; // [experts, emb, expertFfn]
  sharedGate?: Float32Array; // [sharedExperts · expertFfn, emb]
  sharedUp?: Float32Array;
  sharedDown?: Float32Array; // [emb, sharedExperts · expertFfn]
}

/** Whether layer l is an MoE layer. */
export function isMoeLayer(m: MoeConfig | undefined, l: number): boolean {
  return !!m && l >= m.denseLayers;
}

/** Checks a configuration's consistency (what llama.cpp asserts at load), naming the field at fault. */
export function checkMoeConfig(m: MoeConfig): void {
  const int = (name: keyof MoeConfig, lo: number) => {
    if (!Number.isInteger(m[name]) || (m[name] as number) < lo) throw new Error(`MoE ${name} must be a whole number >= ${lo}, got ${m[name]}`);
  };
  int('experts', 1);
  int('expertsUsed', 1);
  int('sharedExperts', 0);
  int('expertFfn', 1);
  int('denseLayers', 0);
  if (m.expertsUsed > m.experts) throw new Error(`MoE expertsUsed (${m.expertsUsed}) exceeds experts (${m.experts})`);
  if (m.groups > 1) {
    if (m.experts % m.groups) throw new Error(`MoE experts (${m.experts}) must divide into ${m.groups} groups`);
    if (m.experts / m.groups < 2) throw new Error('MoE groups need at least 2 experts each (a group scores by its best two)');
    if (!(m.groupsUsed >= 1 && m.groupsUsed < m.groups)) throw new Error(`MoE groupsUsed must be in 1 … ${m.groups - 1}, got ${m.groupsUsed}`);
    if (m.groupsUsed * (m.experts / m.groups) < m.expertsUsed) throw new Error(`MoE: ${m.groupsUsed} groups of ${m.experts / m.groups} hold fewer than expertsUsed (${m.expertsUsed}) experts`);
  }
}

/** Seeded random weights of one MoE layer, rounded to the dtype (variance-preserving, as the dense layers'). */
export function randomMoeLayer(rng: Rng, emb: number, m: MoeConfig, dtype: ModelDType): MoeLayerWeights {
  const E = m.experts, f = m.expertFfn, sf = m.sharedExperts * f;
  const w: MoeLayerWeights = {
    router: rng.fill(E * emb, 1 / Math.sqrt(emb), 'f32'),
    gate: rng.fill(E * f * emb, 1 / Math.sqrt(emb), dtype),
    up: rng.fill(E * f * emb, 1 / Math.sqrt(emb), dtype),
    down: rng.fill(E * emb * f, 1 / Math.sqrt(f), dtype),
  };
  if (m.selectionBias) w.selectionBias = rng.fill(E, 0.1, 'f32');
  if (sf > 0) {
    w.sharedGate = rng.fill(sf * emb, 1 / Math.sqrt(emb), dtype);
    w.sharedUp = rng.fill(sf * emb, 1 / Math.sqrt(emb), dtype);
    w.sharedDown = rng.fill(emb * sf, 1 / Math.sqrt(sf), dtype);
  }
  return w;
}

/**
 * The experts chosen for each of T tokens and their weights, from the router logits [T, experts]:
 * `chosen[t · k + j]`, `weight[t · k + j]` for j < expertsUsed.
 */
export function route(m: MoeConfig, logits: Float32Array, T: number, bias?: Float32Array): { chosen: Int32Array; weight: Float32Array } {
  const E = m.experts, k = m.expertsUsed;
  const chosen = new Int32Array(T * k);
  const weight = new Float32Array(T * k);
  const probs = new Float64Array(E);
  const select = new Float64Array(E);
  const groupSize = m.groups > 1 ? E / m.groups : E;
  const groupScore = new Float64Array(Math.max(m.groups, 1));
  for (let t = 0; t < T; t++) {
    const row = logits.subarray(t * E, (t + 1) * E);
    if (m.gating === 'softmax') {
      let max = -Infinity;
      for (let e = 0; e < E; e++) max = Math.max(max, row[e]);
      let sum = 0;
      for (let e = 0; e < E; e++) sum += probs[e] = Math.exp(row[e] - max);
      for (let e = 0; e < E; e++) probs[e] /= sum;
    } else for (let e = 0; e < E; e++) probs[e] = 1 / (1 + Math.exp(-row[e]));
    // The bias steers the choice only; the weights come from the unbiased probabilities.
    for (let e = 0; e < E; e++) select[e] = probs[e] + (bias ? bias[e] : 0);
    if (m.groups > 1) {
      // A group scores the sum of its two best; experts outside the best groupsUsed groups cannot be chosen.
      for (let g = 0; g < m.groups; g++) {
        let a = -Infinity, b = -Infinity;
        for (let e = g * groupSize; e < (g + 1) * groupSize; e++) {
          const s = select[e];
          if (s > a) [a, b] = [s, a];
          else if (s > b) b = s;
        }
        groupScore[g] = a + b;
      }
      const keep = topIndices(groupScore, m.groups, m.groupsUsed);
      const kept = new Uint8Array(m.groups);
      for (const g of keep) kept[g] = 1;
      for (let e = 0; e < E; e++) if (!kept[Math.floor(e / groupSize)]) select[e] = -Infinity;
    }
    const top = topIndices(select, E, k);
    let sum = 0;
    for (let j = 0; j < k; j++) sum += probs[top[j]];
    // llama.cpp clamps the sum at f16's smallest normal before dividing.
    const norm = m.normTopK ? 1 / Math.max(sum, 6.103515625e-5) : 1;
    const scale = m.routedScale !== 0 && m.routedScale !== 1 ? m.routedScale : 1;
    for (let j = 0; j < k; j++) {
      chosen[t * k + j] = top[j];
      weight[t * k + j] = probs[top[j]] * norm * scale;
    }
  }
  return { chosen, weight };
}

/** Indices of the k largest of x[0, n), largest first. */
function topIndices(x: Float64Array, n: number, k: number): number[] {
  const idx: number[] = [];
  for (let i = 0; i < n; i++) {
    let pos = idx.length;
    while (pos > 0 && x[idx[pos - 1]] < x[i]) pos--;
    if (pos < k) {
      idx.splice(pos, 0, i);
      if (idx.length > k) idx.pop();
    }
  }
  return idx;
}

/**
 * h[T × emb] += MoE(xn): the routed experts (each token's rows gathered per expert, so every expert's weights are
 * read once per step) and the shared experts. `scratch(name, n)` hands out reusable arrays.
 */
export function moeForward(w: MoeLayerWeights, m: MoeConfig, xn: Float32Array, T: number, emb: number, h: Float32Array, scratch: (name: string, n: number) => Float32Array): void {
  const E = m.experts, k = m.expertsUsed, f = m.expertFfn;
  const logits = scratch('moeLogits', T * E);
  matmul(xn, T, emb, w.router, E, logits);
  const { chosen, weight } = route(m, logits, T, w.selectionBias);
  const rows: number[][] = Array.from({ length: E }, () => []);
  for (let i = 0; i < T * k; i++) rows[chosen[i]].push(i);
  for (let e = 0; e < E; e++) {
    const n = rows[e].length;
    if (!n) continue;
    const x = scratch('moeX', n * emb);
    rows[e].forEach((i, r) => x.set(xn.subarray(Math.floor(i / k) * emb, (Math.floor(i / k) + 1) * emb), r * emb));
    const gate = scratch('moeGate', n * f);
    const up = scratch('moeUp', n * f);
    const out = scratch('moeOut', n * emb);
    matmul(x, n, emb, w.gate.subarray(e * f * emb, (e + 1) * f * emb), f, gate);
    matmul(x, n, emb, w.up.subarray(e * f * emb, (e + 1) * f * emb), f, up);
    swiglu(gate, up, n * f);
    matmul(gate, n, f, w.down.subarray(e * emb * f, (e + 1) * emb * f), emb, out);
    rows[e].forEach((i, r) => {
      const t = Math.floor(i / k), g = weight[i];
      for (let j = 0; j < emb; j++) h[t * emb + j] += g * out[r * emb + j];
    });
  }
  if (w.sharedGate) {
    const sf = m.sharedExperts * f;
    const gate = scratch('shGate', T * sf);
    const up = scratch('shUp', T * sf);
    matmul(xn, T, emb, w.sharedGate, sf, gate);
    matmul(xn, T, emb, w.sharedUp!, sf, up);
    swiglu(gate, up, T * sf);
    matmul(gate, T, sf, w.sharedDown!, emb, h, true);
  }
}
