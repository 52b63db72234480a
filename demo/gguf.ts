// DeepSeek checkpoints as GGUF files (llama.cpp's format, architecture `deepseek2`): reading one into the demo's
// Weights, and writing the demo's Weights as one. The metadata (keys, tensor names, shapes, types, offsets) is read
// by @huggingface/gguf and the header written with its serializer; the tensor data is read here, one tensor at a time
// through a bounded buffer (no mmap, no whole-file buffer), after checking that the model fits in memory as f32.
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import os from 'node:os';
import { GGMLQuantizationType, GGUFValueType, gguf, serializeGgufMetadata, type GGUFTypedMetadata, type MetadataValue } from '@huggingface/gguf';
import { toBf16Array, toF16Array, toF16Bits, fromF16Bits } from 'mla-kernels';
import type { ModelDType } from './math.js';
import { Weights, type LayerWeights, type ModelConfig } from './model.js';
import { isMoeLayer, type MoeConfig, type MoeLayerWeights } from './moe.js';
import type { RopeScaling } from './rope.js';

const ARCH = 'deepseek2';
const ALIGNMENT = 32;
/** Tensor data types the reader converts to f32 (Q8_0 dequantised) and the writer produces. */
export type GgufTensorType = 'f32' | 'f16' | 'bf16' | 'q8_0';
const GGML_TYPE: Record<GgufTensorType, number> = { f32: GGMLQuantizationType.F32, f16: GGMLQuantizationType.F16, bf16: GGMLQuantizationType.BF16, q8_0: GGMLQuantizationType.Q8_0 };
const Q8_0_BLOCK = 32;
/** Smallest vocabulary the writer can give llama.cpp a loadable tokenizer for. */
export const MIN_VOCAB = 3 + 256;
const Q8_0_BYTES = 34; // an f16 scale and 32 int8

function bytesOf(type: GgufTensorType, n: number): number {
  return type === 'f32' ? n * 4 : type === 'q8_0' ? (n / Q8_0_BLOCK) * Q8_0_BYTES : n * 2;
}

// --- reading -------------------------------------------------------------------------------------------------------

export interface GgufModelInfo {
  file: string;
  name?: string;
  fileBytes: number;
  /** Tensor data types in the file and how many tensors of each. */
  tensorTypes: Record<string, number>;
  /** 'split': attn_k_b / attn_v_b (absorbed MLA); 'kv_b': the older single attn_kv_b. */
  layout: 'split' | 'kv_b';
  /** Bytes of f32 the weights take once read. */
  f32Bytes: number;
  bosToken?: number;
  eosToken?: number;
}

export interface ReadOptions {
  /** Activation / kernel dtype of the model (f32 on the CPU by default). */
  dtype: ModelDType;
  blockSize: number;
  /** Refuse a model needing more bytes than this (default: the memory the system has free now). */
  memoryLimitBytes?: number;
}

type Meta = Record<string, MetadataValue>;

/** A named key of the file: a number (bigint keys converted), or undefined when absent. */
function num(meta: Meta, key: string): number | undefined {
  const v = meta[`${ARCH}.${key}`];
  if (v === undefined) return undefined;
  if (Array.isArray(v)) {
    // Per-layer arrays (some architectures vary head counts by layer): this model needs one value.
    const xs = v.map(Number);
    if (xs.some((x) => x !== xs[0])) throw new Error(`${ARCH}.${key} varies by layer (${xs.join(', ')}); the demo's model has one value`);
    return xs[0];
  }
  return Number(v);
}

function need(meta: Meta, key: string, file: string): number {
  const v = num(meta, key);
  if (v === undefined || !Number.isFinite(v)) throw new Error(`${file}: the key ${ARCH}.${key} is missing`);
  return v;
}

/** The model's configuration from a deepseek2 file's keys (and which tensors it has). */
function configFrom(meta: Meta, names: Set<string>, file: string, o: ReadOptions): ModelConfig {
  const arch = meta['general.architecture'];
  if (arch !== ARCH) throw new Error(`${file}: architecture '${String(arch)}' is not ${ARCH} (DeepSeek-V2/V3); the demo runs ${ARCH} files only`);
  const layers = need(meta, 'block_count', file);
  const ropeDim = need(meta, 'rope.dimension_count', file);
  // MLA files give the per-head widths in the *_mla keys (key_length is then the latent row); older ones in key_length.
  const mla = num(meta, 'attention.key_length_mla') !== undefined;
  const qk = need(meta, mla ? 'attention.key_length_mla' : 'attention.key_length', file);
  const vHeadDim = need(meta, mla ? 'attention.value_length_mla' : 'attention.value_length', file);
  const embed = names.has('token_embd.weight');
  if (!embed) throw new Error(`${file}: the tensor token_embd.weight is missing`);
  const c: ModelConfig = {
    vocab: 0, // from token_embd's shape
    emb: need(meta, 'embedding_length', file),
    layers,
    heads: need(meta, 'attention.head_count', file),
    nopeDim: qk - ropeDim,
    ropeDim,
    vHeadDim,
    kvLoraRank: need(meta, 'attention.kv_lora_rank', file),
    qLoraRank: names.has('blk.0.attn_q_a.weight') ? need(meta, 'attention.q_lora_rank', file) : 0,
    ffn: num(meta, 'feed_forward_length') ?? 0,
    ropeTheta: num(meta, 'rope.freq_base') ?? 10000,
    blockSize: o.blockSize,
    dtype: o.dtype,
    seed: 0,
    normEps: need(meta, 'attention.layer_norm_rms_epsilon', file),
  };
  if (c.nopeDim < 1) throw new Error(`${file}: key width ${qk} leaves no room beside rope ${ropeDim}`);
  const scalingType = meta[`${ARCH}.rope.scaling.type`];
  const factor = num(meta, 'rope.scaling.factor') ?? 0;
  if (scalingType !== undefined || factor) {
    const type = (scalingType ?? 'linear') as string;
    if (type !== 'none' && type !== 'linear' && type !== 'yarn') throw new Error(`${file}: rope.scaling.type '${type}' is not supported (none, linear, yarn)`);
    const s: RopeScaling = {
      type,
      factor,
      originalContext: num(meta, 'rope.scaling.original_context_length') ?? num(meta, 'context_length') ?? 4096,
      yarnLogMultiplier: (num(meta, 'rope.scaling.yarn_log_multiplier') ?? 0) / 0.1,
      attnFactor: num(meta, 'rope.scaling.attn_factor') ?? 1,
    };
    if (s.type !== 'none' || s.attnFactor !== 1) c.ropeScaling = s;
  }
  const experts = num(meta, 'expert_count') ?? 0;
  const dense = num(meta, 'leading_dense_block_count') ?? 0;
  if (experts > 0 && dense < layers) {
    const gating = num(meta, 'expert_gating_func') ?? 1; // llama.cpp: absent means softmax (V2 files predate the key)
    if (gating !== 1 && gating !== 2) throw new Error(`${file}: expert_gating_func ${gating} is not supported (1 softmax, 2 sigmoid)`);
    const m: MoeConfig = {
      experts,
      expertsUsed: need(meta, 'expert_used_count', file),
      sharedExperts: num(meta, 'expert_shared_count') ?? 0,
      expertFfn: need(meta, 'expert_feed_forward_length', file),
      denseLayers: dense,
      gating: gating === 2 ? 'sigmoid' : 'softmax',
      normTopK: !!meta[`${ARCH}.expert_weights_norm`],
      routedScale: num(meta, 'expert_weights_scale') ?? 0,
      groups: num(meta, 'expert_group_count') ?? 0,
      groupsUsed: num(meta, 'expert_group_used_count') ?? 0,
      selectionBias: names.has(`blk.${dense}.exp_probs_b.bias`),
    };
    c.moe = m;
  }
  return c;
}

/** ggml ne (innermost first) of every tensor the model needs, by name. */
function expectedTensors(c: ModelConfig, layout: 'split' | 'kv_b', tied: boolean, fusedGateUp: (l: number) => boolean): Map<string, number[]> {
  const t = new Map<string, number[]>();
  const H = c.heads, qk = c.nopeDim + c.ropeDim;
  t.set('token_embd.weight', [c.emb, c.vocab]);
  t.set('output_norm.weight', [c.emb]);
  if (!tied) t.set('output.weight', [c.emb, c.vocab]);
  for (let l = 0; l < c.layers; l++) {
    const p = `blk.${l}.`;
    t.set(`${p}attn_norm.weight`, [c.emb]);
    if (c.qLoraRank > 0) {
      t.set(`${p}attn_q_a.weight`, [c.emb, c.qLoraRank]);
      t.set(`${p}attn_q_a_norm.weight`, [c.qLoraRank]);
      t.set(`${p}attn_q_b.weight`, [c.qLoraRank, H * qk]);
    } else t.set(`${p}attn_q.weight`, [c.emb, H * qk]);
    t.set(`${p}attn_kv_a_mqa.weight`, [c.emb, c.kvLoraRank + c.ropeDim]);
    t.set(`${p}attn_kv_a_norm.weight`, [c.kvLoraRank]);
    if (layout === 'split') {
      t.set(`${p}attn_k_b.weight`, [c.nopeDim, c.kvLoraRank, H]);
      t.set(`${p}attn_v_b.weight`, [c.kvLoraRank, c.vHeadDim, H]);
    } else t.set(`${p}attn_kv_b.weight`, [c.kvLoraRank, H * (c.nopeDim + c.vHeadDim)]);
    t.set(`${p}attn_output.weight`, [H * c.vHeadDim, c.emb]);
    t.set(`${p}ffn_norm.weight`, [c.emb]);
    const m = c.moe;
    if (isMoeLayer(m, l)) {
      const E = m!.experts, f = m!.expertFfn, sf = m!.sharedExperts * f;
      t.set(`${p}ffn_gate_inp.weight`, [c.emb, E]);
      if (m!.selectionBias) t.set(`${p}exp_probs_b.bias`, [E]);
      if (fusedGateUp(l)) t.set(`${p}ffn_gate_up_exps.weight`, [c.emb, 2 * f, E]);
      else {
        t.set(`${p}ffn_gate_exps.weight`, [c.emb, f, E]);
        t.set(`${p}ffn_up_exps.weight`, [c.emb, f, E]);
      }
      t.set(`${p}ffn_down_exps.weight`, [f, c.emb, E]);
      if (sf > 0) {
        t.set(`${p}ffn_gate_shexp.weight`, [c.emb, sf]);
        t.set(`${p}ffn_up_shexp.weight`, [c.emb, sf]);
        t.set(`${p}ffn_down_shexp.weight`, [sf, c.emb]);
      }
    } else {
      t.set(`${p}ffn_gate.weight`, [c.emb, c.ffn]);
      t.set(`${p}ffn_up.weight`, [c.emb, c.ffn]);
      t.set(`${p}ffn_down.weight`, [c.ffn, c.emb]);
    }
  }
  return t;
}

const TYPE_NAMES = new Map<number, GgufTensorType>(Object.entries(GGML_TYPE).map(([k, v]) => [v, k as GgufTensorType]));

let f16Table: Float32Array | null = null;
function f16ToF32Table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = fromF16Bits(i);
  }
  return f16Table;
}

/** Streams one tensor's data from `fd` into a new Float32Array through `chunk` (a whole number of blocks at a time). */
function readTensor(fd: number, chunk: Uint8Array, position: number, type: GgufTensorType, n: number): Float32Array {
  const out = new Float32Array(n);
  const unit = type === 'q8_0' ? Q8_0_BYTES : type === 'f32' ? 4 : 2; // bytes per step of the conversion
  const step = Math.floor(chunk.length / unit) * unit;
  const total = bytesOf(type, n);
  const u32 = new Uint32Array(1);
  const f32 = new Float32Array(u32.buffer);
  const table = type === 'f16' || type === 'q8_0' ? f16ToF32Table() : null;
  let done = 0, k = 0;
  while (done < total) {
    const len = Math.min(step, total - done);
    let got = 0;
    while (got < len) {
      const r = readSync(fd, chunk, got, len - got, position + done + got);
      if (r === 0) throw new Error(`unexpected end of file at byte ${position + done + got}`);
      got += r;
    }
    const view = new DataView(chunk.buffer, chunk.byteOffset, len);
    if (type === 'f32') for (let i = 0; i < len; i += 4) out[k++] = view.getFloat32(i, true);
    else if (type === 'f16') for (let i = 0; i < len; i += 2) out[k++] = table![view.getUint16(i, true)];
    else if (type === 'bf16')
      for (let i = 0; i < len; i += 2) {
        u32[0] = view.getUint16(i, true) << 16;
        out[k++] = f32[0];
      }
    else
      for (let b = 0; b < len; b += Q8_0_BYTES) {
        const d = table![view.getUint16(b, true)];
        for (let j = 0; j < Q8_0_BLOCK; j++) out[k++] = d * view.getInt8(b + 2 + j);
      }
    done += len;
  }
  if (k !== n) throw new Error(`read ${k} of ${n} values`);
  return out;
}

/** [H][rows][cols] → [H][cols][rows]: ggml's attn_k_b (ne {nope, kv_lora, H}) to the demo's W_uk [H, nope, kv_lora]. */
function transposeHeads(a: Float32Array, H: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let h = 0; h < H; h++) {
    const o = h * rows * cols;
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[o + c * rows + r] = a[o + r * cols + c];
  }
  return out;
}

/**
 * Reads a deepseek2 GGUF: its configuration from the keys, every tensor converted to f32 (F32, F16, BF16, Q8_0),
 * checked against the shapes the keys imply. Throws, naming the file and the key or tensor at fault, on anything
 * else, and before reading any tensor data when the model would not fit in memory.
 */
export async function readGgufModel(file: string, o: ReadOptions): Promise<{ weights: Weights; info: GgufModelInfo }> {
  let parsed: Awaited<ReturnType<typeof gguf>>;
  try {
    parsed = await gguf(file, { allowLocalFile: true });
  } catch (e) {
    throw new Error(`${file}: not a readable GGUF file (${(e as Error).message})`);
  }
  const meta = parsed.metadata as unknown as Meta;
  const infos = new Map(parsed.tensorInfos.map((t) => [t.name, t]));
  const names = new Set(infos.keys());
  const c = configFrom(meta, names, file, o);
  const embedInfo = infos.get('token_embd.weight')!;
  c.vocab = Number(embedInfo.shape[1] ?? 0);
  const layout = names.has('blk.0.attn_k_b.weight') ? 'split' : names.has('blk.0.attn_kv_b.weight') ? 'kv_b' : null;
  if (!layout) throw new Error(`${file}: layer 0 has neither attn_k_b/attn_v_b nor attn_kv_b`);
  const tied = !names.has('output.weight');
  const expected = expectedTensors(c, layout, tied, (l) => names.has(`blk.${l}.ffn_gate_up_exps.weight`));
  const fd = openSync(file, 'r');
  try {
    const fileBytes = fstatSync(fd).size;
    const dataStart = Number(parsed.tensorDataOffset);
    const types: Record<string, number> = {};
    let f32Bytes = 0;
    for (const [name, ne] of expected) {
      const t = infos.get(name);
      if (!t) throw new Error(`${file}: the tensor ${name} is missing (ggml shape [${ne.join(', ')}] expected from the keys)`);
      const shape = t.shape.map(Number);
      while (shape.length < ne.length) shape.push(1);
      if (shape.length !== ne.length || shape.some((d, i) => d !== ne[i]))
        throw new Error(`${file}: tensor ${name} has ggml shape [${shape.join(', ')}], the keys imply [${ne.join(', ')}]`);
      const type = TYPE_NAMES.get(t.dtype);
      if (!type) throw new Error(`${file}: tensor ${name} is ${GGMLQuantizationType[t.dtype] ?? `type ${t.dtype}`}; the demo reads F32, F16, BF16 and Q8_0`);
      const n = ne.reduce((a, b) => a * b, 1);
      if (type === 'q8_0' && ne[0] % Q8_0_BLOCK) throw new Error(`${file}: Q8_0 tensor ${name} has rows of ${ne[0]}, not a multiple of ${Q8_0_BLOCK}`);
      const end = dataStart + Number(t.offset) + bytesOf(type, n);
      if (end > fileBytes) throw new Error(`${file}: tensor ${name} ends at byte ${end}, past the end of the file (${fileBytes} bytes): truncated?`);
      types[type.toUpperCase()] = (types[type.toUpperCase()] ?? 0) + 1;
      f32Bytes += n * 4;
    }
    // The addon keeps its own copy of W_uk and W_uv per layer (f32 at most).
    const needBytes = f32Bytes + c.layers * c.heads * (c.nopeDim + c.vHeadDim) * c.kvLoraRank * 4;
    const limit = o.memoryLimitBytes ?? os.freemem();
    if (needBytes > limit)
      throw new Error(
        `${file}: the model needs ${(needBytes / 1e9).toFixed(2)} GB of memory as f32 (the demo computes in f32), more than ` +
          `${o.memoryLimitBytes !== undefined ? 'the limit given' : 'this machine has free'} (${(limit / 1e9).toFixed(2)} GB of ${(os.totalmem() / 1e9).toFixed(2)} GB); nothing was read`,
      );
    const chunk = new Uint8Array(16 << 20);
    const read = (name: string): Float32Array => {
      const t = infos.get(name)!;
      const n = expected.get(name)!.reduce((a, b) => a * b, 1);
      return readTensor(fd, chunk, dataStart + Number(t.offset), TYPE_NAMES.get(t.dtype)!, n);
    };
    const H = c.heads;
    const layers: LayerWeights[] = [];
    for (let l = 0; l < c.layers; l++) {
      const p = `blk.${l}.`;
      let wUk: Float32Array, wUv: Float32Array;
      if (layout === 'split') {
        wUk = transposeHeads(read(`${p}attn_k_b.weight`), H, c.kvLoraRank, c.nopeDim);
        wUv = read(`${p}attn_v_b.weight`);
      } else {
        // attn_kv_b rows per head: nope rows of W_uk, then v rows of W_uv, each kv_lora wide.
        const kvb = read(`${p}attn_kv_b.weight`);
        const per = (c.nopeDim + c.vHeadDim) * c.kvLoraRank;
        wUk = new Float32Array(H * c.nopeDim * c.kvLoraRank);
        wUv = new Float32Array(H * c.vHeadDim * c.kvLoraRank);
        for (let h = 0; h < H; h++) {
          wUk.set(kvb.subarray(h * per, h * per + c.nopeDim * c.kvLoraRank), h * c.nopeDim * c.kvLoraRank);
          wUv.set(kvb.subarray(h * per + c.nopeDim * c.kvLoraRank, (h + 1) * per), h * c.vHeadDim * c.kvLoraRank);
        }
      }
      const lw: LayerWeights = {
        attnNorm: read(`${p}attn_norm.weight`),
        wkvA: read(`${p}attn_kv_a_mqa.weight`),
        kvNorm: read(`${p}attn_kv_a_norm.weight`),
        wUk,
        wUv,
        wo: read(`${p}attn_output.weight`),
        mlpNorm: read(`${p}ffn_norm.weight`),
      };
      if (c.qLoraRank > 0) {
        lw.wqA = read(`${p}attn_q_a.weight`);
        lw.qNorm = read(`${p}attn_q_a_norm.weight`);
        lw.wqB = read(`${p}attn_q_b.weight`);
      } else lw.wq = read(`${p}attn_q.weight`);
      if (isMoeLayer(c.moe, l)) {
        const m = c.moe!;
        const moe: MoeLayerWeights = { router: read(`${p}ffn_gate_inp.weight`), gate: new Float32Array(0), up: new Float32Array(0), down: read(`${p}ffn_down_exps.weight`) };
        if (names.has(`${p}ffn_gate_up_exps.weight`)) {
          // Per expert: f rows of the gate, then f rows of up.
          const gu = read(`${p}ffn_gate_up_exps.weight`);
          const block = m.expertFfn * c.emb;
          moe.gate = new Float32Array(m.experts * block);
          moe.up = new Float32Array(m.experts * block);
          for (let e = 0; e < m.experts; e++) {
            moe.gate.set(gu.subarray(2 * e * block, (2 * e + 1) * block), e * block);
            moe.up.set(gu.subarray((2 * e + 1) * block, (2 * e + 2) * block), e * block);
          }
        } else {
          moe.gate = read(`${p}ffn_gate_exps.weight`);
          moe.up = read(`${p}ffn_up_exps.weight`);
        }
        if (m.selectionBias) moe.selectionBias = read(`${p}exp_probs_b.bias`);
        if (m.sharedExperts > 0) {
          moe.sharedGate = read(`${p}ffn_gate_shexp.weight`);
          moe.sharedUp = read(`${p}ffn_up_shexp.weight`);
          moe.sharedDown = read(`${p}ffn_down_shexp.weight`);
        }
        lw.moe = moe;
      } else {
        lw.wGate = read(`${p}ffn_gate.weight`);
        lw.wUp = read(`${p}ffn_up.weight`);
        lw.wDown = read(`${p}ffn_down.weight`);
      }
      layers.push(lw);
    }
    const embed = read('token_embd.weight');
    const weights = new Weights(c, { embed, layers, finalNorm: read('output_norm.weight'), lmHead: tied ? embed : read('output.weight') });
    const token = (key: string) => (meta[key] === undefined ? undefined : Number(meta[key]));
    return {
      weights,
      info: {
        file,
        name: typeof meta['general.name'] === 'string' ? meta['general.name'] : undefined,
        fileBytes,
        tensorTypes: types,
        layout,
        f32Bytes,
        bosToken: token('tokenizer.ggml.bos_token_id'),
        eosToken: token('tokenizer.ggml.eos_token_id'),
      },
    };
  } finally {
    closeSync(fd);
  }
}

// --- writing -------------------------------------------------------------------------------------------------------

export interface WriteOptions {
  /** Type of the matrices (norms, router and bias stay F32, as llama.cpp's converters keep them). Default f32. */
  tensorType?: GgufTensorType;
  /** 'split' (attn_k_b / attn_v_b, default) or 'kv_b' (the older single attn_kv_b). */
  layout?: 'split' | 'kv_b';
  /** Each MoE layer's gate and up experts as one ffn_gate_up_exps tensor (newer files), not two. */
  fuseGateUp?: boolean;
  /** context_length key (default 32768). */
  contextLength?: number;
  name?: string;
}

interface TensorOut {
  name: string;
  ne: number[];
  type: GgufTensorType;
  data: Float32Array;
}

/** Quantises rows of 32 to Q8_0 as ggml does (scale amax/127 stored as f16, values rounded half away from zero). */
function quantizeQ8_0(x: Float32Array): Uint8Array {
  const blocks = x.length / Q8_0_BLOCK;
  const out = new Uint8Array(blocks * Q8_0_BYTES);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(x[b * Q8_0_BLOCK + j]));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    view.setUint16(b * Q8_0_BYTES, toF16Bits(d), true);
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const v = Math.fround(x[b * Q8_0_BLOCK + j] * id);
      view.setInt8(b * Q8_0_BYTES + 2 + j, Math.sign(v) * Math.round(Math.abs(v)));
    }
  }
  return out;
}

function encode(t: TensorOut): Uint8Array {
  if (t.type === 'f32') return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  if (t.type === 'f16') return new Uint8Array(toF16Array(t.data).buffer);
  if (t.type === 'bf16') return new Uint8Array(toBf16Array(t.data).buffer);
  return quantizeQ8_0(t.data);
}

/** The tensors of a model in GGUF names and ggml shapes (innermost first), matrices in `type`. */
function tensorsOf(w: Weights, type: GgufTensorType, layout: 'split' | 'kv_b', fuseGateUp: boolean): TensorOut[] {
  const c = w.config;
  const H = c.heads;
  const out: TensorOut[] = [];
  const matrix = (name: string, ne: number[], data: Float32Array) =>
    out.push({ name, ne, data, type: type === 'q8_0' && ne[0] % Q8_0_BLOCK ? 'f32' : type }); // Q8_0 needs rows of 32
  const vector = (name: string, data: Float32Array) => out.push({ name, ne: [data.length], data, type: 'f32' });
  matrix('token_embd.weight', [c.emb, c.vocab], w.embed);
  vector('output_norm.weight', w.finalNorm);
  if (w.lmHead !== w.embed) matrix('output.weight', [c.emb, c.vocab], w.lmHead); // else tied: llama.cpp reuses token_embd
  w.layers.forEach((lw, l) => {
    const p = `blk.${l}.`;
    vector(`${p}attn_norm.weight`, lw.attnNorm);
    if (lw.wqA) {
      matrix(`${p}attn_q_a.weight`, [c.emb, c.qLoraRank], lw.wqA);
      vector(`${p}attn_q_a_norm.weight`, lw.qNorm!);
      matrix(`${p}attn_q_b.weight`, [c.qLoraRank, H * (c.nopeDim + c.ropeDim)], lw.wqB!);
    } else matrix(`${p}attn_q.weight`, [c.emb, H * (c.nopeDim + c.ropeDim)], lw.wq!);
    matrix(`${p}attn_kv_a_mqa.weight`, [c.emb, c.kvLoraRank + c.ropeDim], lw.wkvA);
    vector(`${p}attn_kv_a_norm.weight`, lw.kvNorm);
    if (layout === 'split') {
      matrix(`${p}attn_k_b.weight`, [c.nopeDim, c.kvLoraRank, H], transposeHeads(lw.wUk, H, c.nopeDim, c.kvLoraRank));
      matrix(`${p}attn_v_b.weight`, [c.kvLoraRank, c.vHeadDim, H], lw.wUv);
    } else {
      const per = (c.nopeDim + c.vHeadDim) * c.kvLoraRank;
      const kvb = new Float32Array(H * per);
      for (let h = 0; h < H; h++) {
        kvb.set(lw.wUk.subarray(h * c.nopeDim * c.kvLoraRank, (h + 1) * c.nopeDim * c.kvLoraRank), h * per);
        kvb.set(lw.wUv.subarray(h * c.vHeadDim * c.kvLoraRank, (h + 1) * c.vHeadDim * c.kvLoraRank), h * per + c.nopeDim * c.kvLoraRank);
      }
      matrix(`${p}attn_kv_b.weight`, [c.kvLoraRank, H * (c.nopeDim + c.vHeadDim)], kvb);
    }
    matrix(`${p}attn_output.weight`, [H * c.vHeadDim, c.emb], lw.wo);
    vector(`${p}ffn_norm.weight`, lw.mlpNorm);
    if (lw.moe) {
      const m = c.moe!, E = m.experts, f = m.expertFfn, sf = m.sharedExperts * f;
      out.push({ name: `${p}ffn_gate_inp.weight`, ne: [c.emb, E], data: lw.moe.router, type: 'f32' });
      if (lw.moe.selectionBias) out.push({ name: `${p}exp_probs_b.bias`, ne: [E], data: lw.moe.selectionBias, type: 'f32' });
      if (fuseGateUp) {
        const block = f * c.emb;
        const gu = new Float32Array(2 * E * block);
        for (let e = 0; e < E; e++) {
          gu.set(lw.moe.gate.subarray(e * block, (e + 1) * block), 2 * e * block);
          gu.set(lw.moe.up.subarray(e * block, (e + 1) * block), (2 * e + 1) * block);
        }
        matrix(`${p}ffn_gate_up_exps.weight`, [c.emb, 2 * f, E], gu);
      } else {
        matrix(`${p}ffn_gate_exps.weight`, [c.emb, f, E], lw.moe.gate);
        matrix(`${p}ffn_up_exps.weight`, [c.emb, f, E], lw.moe.up);
      }
      matrix(`${p}ffn_down_exps.weight`, [f, c.emb, E], lw.moe.down);
      if (lw.moe.sharedGate) {
        matrix(`${p}ffn_gate_shexp.weight`, [c.emb, sf], lw.moe.sharedGate);
        matrix(`${p}ffn_up_shexp.weight`, [c.emb, sf], lw.moe.sharedUp!);
        matrix(`${p}ffn_down_shexp.weight`, [sf, c.emb], lw.moe.sharedDown!);
      }
    } else {
      matrix(`${p}ffn_gate.weight`, [c.emb, c.ffn], lw.wGate!);
      matrix(`${p}ffn_up.weight`, [c.emb, c.ffn], lw.wUp!);
      matrix(`${p}ffn_down.weight`, [c.ffn, c.emb], lw.wDown!);
    }
  });
  return out;
}

/** The keys llama.cpp's deepseek2 loader reads, and a placeholder vocabulary it accepts (token ids in, ids out). */
type TypedValue = { value: MetadataValue; type: GGUFValueType; subType?: GGUFValueType };

function keysOf(c: ModelConfig, layout: 'split' | 'kv_b', o: WriteOptions, fileType: number): Record<string, TypedValue> {
  const k: Record<string, TypedValue> = {};
  const u32 = (key: string, value: number) => (k[key] = { value, type: GGUFValueType.UINT32 });
  const f32 = (key: string, value: number) => (k[key] = { value, type: GGUFValueType.FLOAT32 });
  const a = (key: string) => `${ARCH}.${key}`;
  k['general.architecture'] = { value: ARCH, type: GGUFValueType.STRING };
  k['general.name'] = { value: o.name ?? 'mla-kernels demo model', type: GGUFValueType.STRING };
  u32('general.file_type', fileType);
  u32(a('context_length'), o.contextLength ?? 32768);
  u32(a('embedding_length'), c.emb);
  u32(a('block_count'), c.layers);
  u32(a('feed_forward_length'), c.ffn);
  u32(a('attention.head_count'), c.heads);
  f32(a('rope.freq_base'), c.ropeTheta);
  f32(a('attention.layer_norm_rms_epsilon'), c.normEps ?? 1e-6);
  u32(a('vocab_size'), c.vocab);
  u32(a('attention.q_lora_rank'), c.qLoraRank);
  u32(a('attention.kv_lora_rank'), c.kvLoraRank);
  u32(a('rope.dimension_count'), c.ropeDim);
  if (layout === 'split') {
    // Absorbed MLA: one shared key/value head whose key is the latent row and whose value its first kv_lora entries.
    u32(a('attention.head_count_kv'), 1);
    u32(a('attention.key_length'), c.kvLoraRank + c.ropeDim);
    u32(a('attention.value_length'), c.kvLoraRank);
    u32(a('attention.key_length_mla'), c.nopeDim + c.ropeDim);
    u32(a('attention.value_length_mla'), c.vHeadDim);
  } else {
    u32(a('attention.head_count_kv'), c.heads);
    u32(a('attention.key_length'), c.nopeDim + c.ropeDim);
    u32(a('attention.value_length'), c.vHeadDim);
  }
  const m = c.moe;
  u32(a('leading_dense_block_count'), m ? m.denseLayers : c.layers);
  u32(a('expert_feed_forward_length'), m?.expertFfn ?? 0);
  u32(a('expert_shared_count'), m?.sharedExperts ?? 0); // llama.cpp requires it even without experts
  if (m) {
    u32(a('expert_count'), m.experts);
    u32(a('expert_used_count'), m.expertsUsed);
    f32(a('expert_weights_scale'), m.routedScale);
    k[a('expert_weights_norm')] = { value: m.normTopK, type: GGUFValueType.BOOL };
    u32(a('expert_gating_func'), m.gating === 'sigmoid' ? 2 : 1);
    if (m.groups > 1) {
      u32(a('expert_group_count'), m.groups);
      u32(a('expert_group_used_count'), m.groupsUsed);
    }
  }
  const s = c.ropeScaling;
  if (s) {
    k[a('rope.scaling.type')] = { value: s.type, type: GGUFValueType.STRING };
    f32(a('rope.scaling.factor'), s.factor);
    u32(a('rope.scaling.original_context_length'), s.originalContext);
    if (s.yarnLogMultiplier) f32(a('rope.scaling.yarn_log_multiplier'), 0.1 * s.yarnLogMultiplier);
    if (s.attnFactor !== 1) f32(a('rope.scaling.attn_factor'), s.attnFactor);
  }
  // A SentencePiece-style ("llama") vocabulary of placeholder pieces: unknown, begin, end, the 256 byte pieces
  // (llama.cpp's SPM tokenizer falls back on them for any text, and node-llama-cpp tokenizes some at load), then ▁t259 … .
  const tokens = Array.from({ length: c.vocab }, (_, i) =>
    i === 0 ? '<unk>' : i === 1 ? '<s>' : i === 2 ? '</s>' : i < 3 + 256 ? `<0x${(i - 3).toString(16).toUpperCase().padStart(2, '0')}>` : `\u2581t${i}`,
  );
  k['tokenizer.ggml.model'] = { value: 'llama', type: GGUFValueType.STRING };
  k['tokenizer.ggml.tokens'] = { value: tokens, type: GGUFValueType.ARRAY, subType: GGUFValueType.STRING };
  k['tokenizer.ggml.scores'] = { value: tokens.map((_, i) => (i < 3 + 256 ? 0 : -i)), type: GGUFValueType.ARRAY, subType: GGUFValueType.FLOAT32 };
  // Token types: 1 normal, 2 unknown, 3 control, 6 byte.
  k['tokenizer.ggml.token_type'] = { value: tokens.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : i < 3 + 256 ? 6 : 1)), type: GGUFValueType.ARRAY, subType: GGUFValueType.INT32 };
  u32('tokenizer.ggml.unknown_token_id', 0);
  u32('tokenizer.ggml.bos_token_id', 1);
  u32('tokenizer.ggml.eos_token_id', 2);
  return k;
}

/** Writes the model as a deepseek2 GGUF (streamed, one tensor at a time). Returns the file's size. */
export function writeGgufModel(file: string, w: Weights, o: WriteOptions = {}): number {
  const type = o.tensorType ?? 'f32';
  const layout = o.layout ?? 'split';
  if (w.config.vocab < MIN_VOCAB)
    throw new Error(`a GGUF needs a vocabulary of at least ${MIN_VOCAB} tokens (3 special and the 256 byte pieces llama.cpp's tokenizer needs), this model has ${w.config.vocab} (--vocab)`);
  const tensors = tensorsOf(w, type, layout, !!o.fuseGateUp);
  // general.file_type (llama_ftype): ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32.
  const fileType = { f32: 0, f16: 1, q8_0: 7, bf16: 32 }[type];
  const keys = keysOf(w.config, layout, o, fileType);
  const typed = {
    version: { value: 3, type: GGUFValueType.UINT32 },
    tensor_count: { value: BigInt(tensors.length), type: GGUFValueType.UINT64 },
    kv_count: { value: 0n, type: GGUFValueType.UINT64 }, // the serializer counts the keys
    ...keys,
  } as unknown as GGUFTypedMetadata;
  const header = serializeGgufMetadata(typed, { alignment: 1 }); // no padding yet: the tensor infos follow the keys
  const infoParts: Uint8Array[] = [];
  let offset = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    const name = Buffer.from(t.name, 'utf8');
    const b = Buffer.alloc(8 + name.length + 4 + 8 * t.ne.length + 4 + 8);
    let p = b.writeBigUInt64LE(BigInt(name.length), 0);
    p += name.copy(b, p);
    p = b.writeUInt32LE(t.ne.length, p);
    for (const d of t.ne) p = b.writeBigUInt64LE(BigInt(d), p);
    p = b.writeUInt32LE(GGML_TYPE[t.type], p);
    b.writeBigUInt64LE(BigInt(offset), p);
    infoParts.push(b);
    offsets.push(offset);
    offset += Math.ceil(bytesOf(t.type, t.data.length) / ALIGNMENT) * ALIGNMENT;
  }
  const fd = openSync(file, 'w');
  try {
    let pos = 0;
    const put = (bytes: Uint8Array) => {
      let done = 0;
      while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, pos + done);
      pos += bytes.length;
    };
    put(header);
    for (const b of infoParts) put(b);
    put(new Uint8Array(Math.ceil(pos / ALIGNMENT) * ALIGNMENT - pos));
    const dataStart = pos;
    tensors.forEach((t, i) => {
      put(new Uint8Array(dataStart + offsets[i] - pos));
      put(encode(t));
    });
    put(new Uint8Array(Math.ceil(pos / ALIGNMENT) * ALIGNMENT - pos));
    return pos;
  } finally {
    closeSync(fd);
  }
}
