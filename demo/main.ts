#!/usr/bin/env node
// npm start [-- options]: the DeepSeek-style MLA decoder demo. See --help.
import { backends, defaultBackend, type BackendName } from 'mla-kernels';
import type { GgufTensorType } from './gguf.js';
import type { ModelDType } from './math.js';
import type { ModelConfig } from './model.js';
import type { MoeConfig } from './moe.js';
import { runDemo } from './run.js';

/** Model shapes: `default` (npm start), `tiny` (tests), `seed` (emb 768, 12 layers, 24 heads, latent 192). */
export const CONFIGS: Record<string, Omit<ModelConfig, 'dtype' | 'seed'>> = {
  // MHA caches 16 · (32 + 16 + 32) = 1,280 numbers per token and layer, MLA 128 + 16 = 144: 8.9× less.
  default: { vocab: 4096, emb: 512, layers: 8, heads: 16, nopeDim: 32, ropeDim: 16, vHeadDim: 32, kvLoraRank: 128, qLoraRank: 192, ffn: 1408, ropeTheta: 10000, blockSize: 16 },
  tiny: { vocab: 128, emb: 64, layers: 2, heads: 4, nopeDim: 16, ropeDim: 16, vHeadDim: 16, kvLoraRank: 32, qLoraRank: 0, ffn: 128, ropeTheta: 10000, blockSize: 4 },
  // 768 / 24 = 32 per head: K = nope 16 + rope 16, V 32, so MHA caches 2·24·32 = 1,536 numbers per token and layer,
  // 8× the latent's 192 (7.4× the 208 of the latent row with its rope key).
  seed: { vocab: 4096, emb: 768, layers: 12, heads: 24, nopeDim: 16, ropeDim: 16, vHeadDim: 32, kvLoraRank: 192, qLoraRank: 0, ffn: 2048, ropeTheta: 10000, blockSize: 64 },
  // The default shape with DeepSeek-V3's kind of MoE after one dense layer: 16 routed experts in 4 groups (the best 2
  // groups eligible), 4 chosen by sigmoid gates with a selection bias, their weights normalised and scaled by 2.5,
  // and one shared expert.
  moe: {
    vocab: 4096, emb: 512, layers: 8, heads: 16, nopeDim: 32, ropeDim: 16, vHeadDim: 32, kvLoraRank: 128, qLoraRank: 192, ffn: 1408, ropeTheta: 10000, blockSize: 16,
    moe: { experts: 16, expertsUsed: 4, sharedExperts: 1, expertFfn: 352, denseLayers: 1, gating: 'sigmoid', normTopK: true, routedScale: 2.5, groups: 4, groupsUsed: 2, selectionBias: true },
  },
};

const DEFAULTS = { promptLens: '17,61,120,33', newTokens: '64,48,64,32' };

const USAGE = `usage: npm start [-- options]     (or: node demo/dist/main.js [options])

A small DeepSeek-style decoder (random weights) generating tokens with multi-head latent attention on the
mla-kernels addon, and the same model with a plain multi-head KV cache in TypeScript beside it: tokens/s, cache
bytes, peak memory, and whether the two give the same logits.

model file (docs/models.md):
  --model FILE          run a DeepSeek GGUF checkpoint (architecture deepseek2; F32, F16, BF16 or Q8_0 tensors) instead
                        of random weights; its keys give the shape (the options below except --block-size do not apply)
  --save-gguf FILE      write the model (random, or the --model one) as a GGUF file and exit
  --gguf-type T         tensor type --save-gguf writes: f32 | f16 | bf16 | q8_0 (default f32)
  --gguf-layout L       split (attn_k_b/attn_v_b, default) | kv_b (the older single attn_kv_b)
  --tokens A,B,..       the prompt as token ids (every sequence; batch 1 by default)
  --prompt TEXT         the prompt as text, tokenized with the file's vocabulary (needs node-llama-cpp installed);
                        the generated tokens are printed as text too
model (defaults: --config default):
  --config NAME         default | tiny | seed | moe (seed: emb 768, 12 layers, 24 heads, latent 192, 32/16 head dims;
                        moe: the default shape with 16 routed experts, 4 used, 1 shared, after one dense layer)
  --layers N            transformer layers
  --emb N               model width d_model
  --heads N             attention heads
  --nope-dim N          per-head query/key width without RoPE
  --rope-dim N          RoPE width (one rope key per token, shared by the heads; even)
  --v-dim N             per-head value width
  --latent N            latent width kv_lora_rank (the MLA cache row is latent + rope-dim)
  --q-lora N            low-rank query width q_lora_rank; 0: plain query projection
  --ffn N               MLP hidden width
  --vocab N             vocabulary size
  --block-size N        tokens per cache block
  --weights-seed N      seed of the random weights and prompts (default 1)
  --experts N           routed experts per MoE layer (0: dense MLPs throughout)
  --experts-used N      experts each token goes to (top-k)
  --shared-experts N    shared experts (every token)
  --expert-ffn N        hidden width of one expert
  --dense-layers N      leading layers that keep the dense MLP
  --gating G            softmax (DeepSeek-V2) | sigmoid (V3: with a selection bias, the chosen weights normalised)
  --expert-groups N     expert groups for group-limited routing (V3: 8; 0: none)
  --expert-groups-used N  groups eligible per token
  --routed-scale X      factor on the routed experts' weights (V2: 16, V3: 2.5)
run:
  --batch N             sequences decoded together (default: the number of prompt lengths, 4)
  --prompt-lens A,B,..  prompt length per sequence, cycled over the batch (default ${DEFAULTS.promptLens})
  --new-tokens N|A,B,.. new tokens per sequence, cycled over the batch (default ${DEFAULTS.newTokens})
  --dtype T             f32 | bf16 | f16 (default: f32 on the CPU, bf16 on a GPU)
  --device D            cpu | cuda | cuda-sim (default: cuda when backends() has it available, else cpu; MLA_DEVICE)
  --prefill-chunk N     prompt tokens per prefill step (chunked prefill); 0: whole prompts (default 0)
  --prefill-form F      multi-head (default) | absorbed: how MLA prefills (the other form is timed beside it)
  --sparse-topk N       DeepSeek-V3.2 sparse attention in decode steps: a lightning indexer (random weights) picks the
                        N cached rows each query attends to (any backend; the MHA comparison is off unless asked,
                        as the dense MHA model agrees only when N covers every context); 0: dense (default)
  --mha-compare         run the MHA model beside MLA and compare logits (default on, off with --long)
  --no-mha-compare      MLA only
  --long                the seed configuration, batch 1, 32768 new tokens (long: tens of minutes or more)
  --no-progress         no progress bar
  --json                print the result as JSON at the end
  -h, --help            this text`;

function list(flag: string, s: string): number[] {
  const xs = s.split(',').map((x) => Number(x.trim()));
  if (!xs.length || xs.some((x) => !Number.isInteger(x) || x < 1)) throw new Error(`${flag} needs whole numbers >= 1 (A,B,...), got '${s}'`);
  return xs;
}

export interface ParsedArgs {
  help: boolean;
  json: boolean;
  options: Parameters<typeof runDemo>[0];
  /** --model: the GGUF to load (options.config then comes from it). */
  model?: string;
  /** --save-gguf: where to write the model, and how. */
  saveGguf?: { file: string; type: GgufTensorType; layout: 'split' | 'kv_b' };
  /** --prompt text (tokenized once the model file is known). */
  prompt?: string;
}

const MOE_NUMBERS: Record<string, keyof MoeConfig> = {
  '--experts': 'experts',
  '--experts-used': 'expertsUsed',
  '--shared-experts': 'sharedExperts',
  '--expert-ffn': 'expertFfn',
  '--dense-layers': 'denseLayers',
  '--expert-groups': 'groups',
  '--expert-groups-used': 'groupsUsed',
};

/** The MoE of a configuration after the MoE options (undefined: dense). */
function moeWith(base: MoeConfig | undefined, set: Partial<MoeConfig>): MoeConfig | undefined {
  if (set.experts === 0) return undefined;
  if (!base && set.experts === undefined) {
    if (Object.keys(set).length) throw new Error('the MoE options need --experts N (or --config moe)');
    return undefined;
  }
  const gating = set.gating ?? base?.gating ?? 'softmax';
  const start = base ?? { experts: 0, expertsUsed: 2, sharedExperts: 1, expertFfn: 256, denseLayers: 1, routedScale: 1, groups: 0, groupsUsed: 0 };
  // V3's sigmoid gates come with the selection bias and normalised weights; V2's softmax with neither.
  return { ...start, ...set, gating, normTopK: gating === 'sigmoid', selectionBias: gating === 'sigmoid' };
}

export function parseArgs(argv: readonly string[]): ParsedArgs {
  const numbers: Record<string, keyof ModelConfig> = {
    '--layers': 'layers',
    '--emb': 'emb',
    '--heads': 'heads',
    '--nope-dim': 'nopeDim',
    '--rope-dim': 'ropeDim',
    '--v-dim': 'vHeadDim',
    '--latent': 'kvLoraRank',
    '--q-lora': 'qLoraRank',
    '--ffn': 'ffn',
    '--vocab': 'vocab',
    '--block-size': 'blockSize',
    '--weights-seed': 'seed',
  };
  let configName = 'default';
  const set: Partial<ModelConfig> = {};
  const moeSet: Partial<MoeConfig> = {};
  let model: string | undefined;
  let saveFile: string | undefined;
  let ggufType: GgufTensorType = 'f32';
  let ggufLayout: 'split' | 'kv_b' = 'split';
  let prompt: string | undefined;
  let tokens: number[] | undefined;
  let batch: number | undefined;
  let promptLens: number[] | undefined;
  let newTokens: number[] | undefined;
  let dtype: ModelDType | undefined;
  let device: BackendName | undefined;
  let mhaCompare: boolean | undefined;
  let prefillChunk = 0;
  let prefillForm: 'multi-head' | 'absorbed' = 'multi-head';
  let sparseTopk = 0;
  let long = false;
  let progress = true;
  let help = false;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const eq = argv[i].indexOf('=');
    const flag = eq > 0 ? argv[i].slice(0, eq) : argv[i];
    const value = (): string => {
      const v = eq > 0 ? argv[i].slice(eq + 1) : argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === '-h' || flag === '--help') help = true;
    else if (flag === '--json') json = true;
    else if (flag === '--long') long = true;
    else if (flag === '--mha-compare') mhaCompare = true;
    else if (flag === '--no-mha-compare') mhaCompare = false;
    else if (flag === '--no-progress') progress = false;
    else if (flag === '--prefill-chunk') {
      prefillChunk = Number(value());
      if (!Number.isInteger(prefillChunk) || prefillChunk < 0) throw new Error(`--prefill-chunk needs a whole number >= 0, got '${argv[i]}'`);
    } else if (flag === '--sparse-topk') {
      sparseTopk = Number(value());
      if (!Number.isInteger(sparseTopk) || sparseTopk < 0) throw new Error(`--sparse-topk needs a whole number >= 0, got '${argv[i]}'`);
    } else if (flag === '--prefill-form') {
      const f = value();
      if (f !== 'multi-head' && f !== 'absorbed') throw new Error(`--prefill-form must be multi-head or absorbed, got '${f}'`);
      prefillForm = f;
    } else if (flag === '--model') model = value();
    else if (flag === '--save-gguf') saveFile = value();
    else if (flag === '--gguf-type') {
      const t = value();
      if (t !== 'f32' && t !== 'f16' && t !== 'bf16' && t !== 'q8_0') throw new Error(`--gguf-type must be f32, f16, bf16 or q8_0, got '${t}'`);
      ggufType = t;
    } else if (flag === '--gguf-layout') {
      const t = value();
      if (t !== 'split' && t !== 'kv_b') throw new Error(`--gguf-layout must be split or kv_b, got '${t}'`);
      ggufLayout = t;
    } else if (flag === '--prompt') prompt = value();
    else if (flag === '--tokens') {
      const v = value();
      tokens = v.split(',').map((x) => Number(x.trim()));
      if (!tokens.length || tokens.some((x) => !Number.isInteger(x) || x < 0)) throw new Error(`--tokens needs token ids >= 0 (A,B,...), got '${v}'`);
    } else if (flag === '--gating') {
      const g = value();
      if (g !== 'softmax' && g !== 'sigmoid') throw new Error(`--gating must be softmax or sigmoid, got '${g}'`);
      moeSet.gating = g;
    } else if (flag === '--routed-scale') {
      const v = Number(value());
      if (!Number.isFinite(v) || v < 0) throw new Error(`--routed-scale needs a number >= 0, got '${argv[i]}'`);
      moeSet.routedScale = v;
    } else if (flag in MOE_NUMBERS) {
      const v = Number(value());
      if (!Number.isInteger(v) || v < 0) throw new Error(`${flag} needs a whole number >= 0, got '${argv[i]}'`);
      (moeSet as Record<string, number>)[MOE_NUMBERS[flag]] = v;
    } else if (flag === '--config') {
      configName = value();
      if (!CONFIGS[configName]) throw new Error(`--config must be one of ${Object.keys(CONFIGS).join(', ')}, got '${configName}'`);
    } else if (flag === '--batch') batch = list(flag, value())[0];
    else if (flag === '--prompt-lens') promptLens = list(flag, value());
    else if (flag === '--new-tokens') newTokens = list(flag, value());
    else if (flag === '--dtype') {
      const d = value();
      if (d !== 'f32' && d !== 'bf16' && d !== 'f16') throw new Error(`--dtype must be f32, bf16 or f16, got '${d}'`);
      dtype = d;
    } else if (flag === '--device') {
      const d = value().replace(/:\d+$/, '');
      if (d !== 'cpu' && d !== 'cuda' && d !== 'cuda-sim') throw new Error(`--device must be cpu, cuda or cuda-sim, got '${d}'`);
      device = d;
    } else if (flag in numbers) {
      const v = Number(value());
      const key = numbers[flag];
      if (!Number.isInteger(v) || v < (key === 'qLoraRank' || key === 'ropeDim' || key === 'seed' ? 0 : 1)) throw new Error(`${flag} needs a whole number, got '${argv[i]}'`);
      set[key] = v as never;
    } else throw new Error(`unknown option '${argv[i]}' (see --help)`);
  }
  if (long) {
    configName = configName === 'default' ? 'seed' : configName;
    batch ??= 1;
    promptLens ??= [16];
    newTokens ??= [32768];
    mhaCompare ??= false;
  }
  if (model) {
    const shaped = Object.keys(set).filter((k) => k !== 'blockSize');
    if (shaped.length || Object.keys(moeSet).length || configName !== 'default')
      throw new Error(`--model takes the model's shape from the file: drop ${[...shaped.map((k) => Object.keys(numbers).find((f) => numbers[f] === k)), ...(Object.keys(moeSet).length ? ['the MoE options'] : []), ...(configName !== 'default' ? ['--config'] : [])].join(', ')}`);
  }
  if (prompt !== undefined && tokens) throw new Error('give --prompt or --tokens, not both');
  if (prompt !== undefined && !model) throw new Error('--prompt needs --model (a file with a vocabulary); a random model takes --tokens');
  const backend = device ?? defaultBackend();
  if (sparseTopk) mhaCompare ??= false;
  const info = backends().find((b) => b.name === backend);
  if (!info?.available) throw new Error(`device ${backend} is unavailable: ${info?.reason ?? 'unknown backend'}`);
  const config: ModelConfig = { ...CONFIGS[configName], dtype: dtype ?? (backend === 'cpu' ? 'f32' : 'bf16'), seed: 1, ...set };
  const moe = moeWith(CONFIGS[configName].moe, moeSet);
  if (moe) config.moe = moe;
  else delete config.moe;
  if (backend !== 'cpu' && config.dtype === 'f32') throw new Error(`--device ${backend} takes bf16 or f16 (the GPU kernels' dtypes), not f32`);
  if (config.ropeDim % 2) throw new Error(`--rope-dim must be even, got ${config.ropeDim}`);
  const given = tokens !== undefined || prompt !== undefined;
  if (given && promptLens) throw new Error('--prompt-lens does not go with a given prompt (--tokens or --prompt)');
  const lens = promptLens ?? (tokens ? [tokens.length] : list('--prompt-lens', DEFAULTS.promptLens));
  const news = newTokens ?? (given ? [16] : list('--new-tokens', DEFAULTS.newTokens));
  const n = batch ?? (given ? 1 : lens.length);
  return {
    help,
    json,
    model,
    prompt,
    saveGguf: saveFile ? { file: saveFile, type: ggufType, layout: ggufLayout } : undefined,
    options: {
      config,
      promptLens: Array.from({ length: n }, (_, b) => lens[b % lens.length]),
      newTokens: Array.from({ length: n }, (_, b) => news[b % news.length]),
      prompts: tokens ? Array.from({ length: n }, () => tokens) : undefined,
      backend,
      mhaCompare: mhaCompare ?? true,
      progress,
      prefillChunk,
      prefillForm,
      sparseTopk,
    },
  };
}

async function main(): Promise<number> {
  let parsed: ParsedArgs;
  try {
    if (process.argv.slice(2).some((a) => a === '-h' || a === '--help')) {
      console.log(USAGE);
      return 0;
    }
    parsed = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`demo: ${(e as Error).message}`);
    return 2;
  }
  let result: Awaited<ReturnType<typeof runDemo>>;
  try {
    const o = parsed.options;
    if (parsed.model || parsed.saveGguf || parsed.prompt !== undefined) await prepareModel(parsed);
    if (parsed.saveGguf) return 0;
    result = await runDemo(o);
  } catch (e) {
    // e.g. an MlaError E_UNSUPPORTED for a shape the GPU kernels refuse: say it, no stack trace.
    console.error(`\ndemo: ${(e as Error).message}`);
    return 1;
  }
  if (parsed.json) console.log(JSON.stringify(result, null, 2));
  return result.agreement && !result.agreement.pass ? 1 : 0;
}

/**
 * --model, --save-gguf, --prompt: loads the file into the options (its weights and shape; the prompt tokenized with its
 * vocabulary), or writes the model. The GGUF modules load only here, so the random-weight demo needs none of them.
 */
async function prepareModel(p: ParsedArgs): Promise<void> {
  const o = p.options;
  const { readGgufModel, writeGgufModel } = await import('./gguf.js');
  if (p.model) {
    const t0 = performance.now();
    const { weights, info } = await readGgufModel(p.model, { dtype: o.config.dtype, blockSize: o.config.blockSize });
    o.config = weights.config;
    o.weights = weights;
    o.source = `${info.name ?? p.model} (${p.model}: ${Object.entries(info.tensorTypes).map(([t, n]) => `${n} ${t}`).join(', ')} tensors, ${info.layout === 'split' ? 'attn_k_b/attn_v_b' : 'attn_kv_b'}), read in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    const bad = (o.prompts ?? []).flat().find((t) => t >= weights.config.vocab);
    if (bad !== undefined) throw new Error(`--tokens: ${bad} is outside the vocabulary (0 … ${weights.config.vocab - 1})`);
  }
  if (p.prompt !== undefined) {
    const { loadVocabulary } = await import('./vocab.js');
    const vocab = await loadVocabulary(p.model!);
    const ids = vocab.encode(p.prompt);
    if (!ids.length) throw new Error('--prompt gave no tokens');
    o.prompts = o.promptLens.map(() => ids);
    o.promptLens = o.promptLens.map(() => ids.length);
    o.detokenize = (ids: number[]) => vocab.decode(ids);
  }
  if (p.saveGguf) {
    const { Weights } = await import('./model.js');
    const weights = o.weights ?? new Weights(o.config);
    const bytes = writeGgufModel(p.saveGguf.file, weights, { tensorType: p.saveGguf.type, layout: p.saveGguf.layout });
    const c = weights.config;
    console.log(
      `wrote ${p.saveGguf.file}: deepseek2 GGUF, ${(bytes / 1e6).toFixed(2)} MB, ${p.saveGguf.type.toUpperCase()} matrices, ${p.saveGguf.layout} layout; ` +
        `${c.layers} layers, emb ${c.emb}, ${c.heads} heads, latent ${c.kvLoraRank}, vocab ${c.vocab}` +
        (c.moe ? `, ${c.moe.experts} experts (${c.moe.expertsUsed} used, ${c.moe.sharedExperts} shared) after ${c.moe.denseLayers} dense layer${c.moe.denseLayers === 1 ? '' : 's'}` : ', dense'),
    );
  }
}

// Run when executed (node demo/dist/main.js), not when imported by a test.
if (process.argv[1] && /main\.[jt]s$/.test(process.argv[1])) process.exitCode = await main();
