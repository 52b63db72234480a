#!/usr/bin/env node
// npm start [-- options]: the DeepSeek-style MLA decoder demo. See --help.
import { backends, defaultBackend, type BackendName } from 'mla-kernels';
import type { ModelDType } from './math.js';
import type { ModelConfig } from './model.js';
import { runDemo } from './run.js';

/** Model shapes: `default` (npm start), `tiny` (tests), `seed` (emb 768, 12 layers, 24 heads, latent 192). */
export const CONFIGS: Record<string, Omit<ModelConfig, 'dtype' | 'seed'>> = {
  // MHA caches 16 · (32 + 16 + 32) = 1,280 numbers per token and layer, MLA 128 + 16 = 144: 8.9× less.
  default: { vocab: 4096, emb: 512, layers: 8, heads: 16, nopeDim: 32, ropeDim: 16, vHeadDim: 32, kvLoraRank: 128, qLoraRank: 192, ffn: 1408, ropeTheta: 10000, blockSize: 16 },
  tiny: { vocab: 128, emb: 64, layers: 2, heads: 4, nopeDim: 16, ropeDim: 16, vHeadDim: 16, kvLoraRank: 32, qLoraRank: 0, ffn: 128, ropeTheta: 10000, blockSize: 4 },
  // 768 / 24 = 32 per head: K = nope 16 + rope 16, V 32, so MHA caches 2·24·32 = 1,536 numbers per token and layer,
  // 8× the latent's 192 (7.4× the 208 of the latent row with its rope key).
  seed: { vocab: 4096, emb: 768, layers: 12, heads: 24, nopeDim: 16, ropeDim: 16, vHeadDim: 32, kvLoraRank: 192, qLoraRank: 0, ffn: 2048, ropeTheta: 10000, blockSize: 64 },
};

const DEFAULTS = { promptLens: '17,61,120,33', newTokens: '64,48,64,32' };

const USAGE = `usage: npm start [-- options]     (or: node demo/dist/main.js [options])

A small DeepSeek-style decoder (random weights) generating tokens with multi-head latent attention on the
mla-kernels addon, and the same model with a plain multi-head KV cache in TypeScript beside it: tokens/s, cache
bytes, peak memory, and whether the two give the same logits.

model (defaults: --config default):
  --config NAME         default | tiny | seed (seed: emb 768, 12 layers, 24 heads, latent 192, 32/16 head dims)
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
run:
  --batch N             sequences decoded together (default: the number of prompt lengths, 4)
  --prompt-lens A,B,..  prompt length per sequence, cycled over the batch (default ${DEFAULTS.promptLens})
  --new-tokens N|A,B,.. new tokens per sequence, cycled over the batch (default ${DEFAULTS.newTokens})
  --dtype T             f32 | bf16 | f16 (default: f32 on the CPU, bf16 on a GPU)
  --device D            cpu | cuda | cuda-sim (default: cuda when backends() has it available, else cpu; MLA_DEVICE)
  --prefill-chunk N     prompt tokens per prefill step (chunked prefill); 0: whole prompts (default 0)
  --prefill-form F      multi-head (default) | absorbed: how MLA prefills (the other form is timed beside it)
  --sparse-topk N       DeepSeek-V3.2 sparse attention in decode steps: a lightning indexer (random weights) picks the
                        N cached rows each query attends to (cpu backend; the MHA comparison is off unless asked,
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
    }
    else if (flag === '--config') {
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
  const backend = device ?? (sparseTopk ? 'cpu' : defaultBackend());
  if (sparseTopk && backend !== 'cpu') throw new Error(`--sparse-topk runs on the cpu backend (the lightning indexer has no GPU kernels yet), not ${backend}`);
  if (sparseTopk) mhaCompare ??= false;
  const info = backends().find((b) => b.name === backend);
  if (!info?.available) throw new Error(`device ${backend} is unavailable: ${info?.reason ?? 'unknown backend'}`);
  const config: ModelConfig = { ...CONFIGS[configName], dtype: dtype ?? (backend === 'cpu' ? 'f32' : 'bf16'), seed: 1, ...set };
  if (backend !== 'cpu' && config.dtype === 'f32') throw new Error(`--device ${backend} takes bf16 or f16 (the GPU kernels' dtypes), not f32`);
  if (config.ropeDim % 2) throw new Error(`--rope-dim must be even, got ${config.ropeDim}`);
  const lens = promptLens ?? list('--prompt-lens', DEFAULTS.promptLens);
  const news = newTokens ?? list('--new-tokens', DEFAULTS.newTokens);
  const n = batch ?? lens.length;
  return {
    help,
    json,
    options: {
      config,
      promptLens: Array.from({ length: n }, (_, b) => lens[b % lens.length]),
      newTokens: Array.from({ length: n }, (_, b) => news[b % news.length]),
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
    result = await runDemo(parsed.options);
  } catch (e) {
    // e.g. an MlaError E_UNSUPPORTED for a shape the GPU kernels refuse: say it, no stack trace.
    console.error(`\ndemo: ${(e as Error).message}`);
    return 1;
  }
  if (parsed.json) console.log(JSON.stringify(result, null, 2));
  return result.agreement && !result.agreement.pass ? 1 : 0;
}

// Run when executed (node demo/dist/main.js), not when imported by a test.
if (process.argv[1] && /main\.[jt]s$/.test(process.argv[1])) process.exitCode = await main();
