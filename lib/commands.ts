// The `mla-kernels` command (bin: cli.ts): `info` and `estimate`, parsed by commander. runCli takes its output
// streams as arguments so that tests run it in process.
import { writeFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import {
  CACHE_DTYPE_BYTES,
  EstimateOptionError,
  PRESETS,
  estimateKvCache,
  formatEstimate,
  plotKvCacheSvg,
  type CacheDType,
  type EstimateOptions,
  type ModelPreset,
} from './estimate.js';
import { info, packageVersion } from './info.js';

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

const PREFIX = 'mla-kernels: ';

/** Raised by the commands for bad input: printed after the prefix, exit code 2 (as commander's own usage errors). */
class UsageError extends Error {}

const BUILT_BY: Record<string, string> = {
  prebuild: 'the prebuilt binary shipped in the package',
  'node-gyp': 'built from source with node-gyp (binding.gyp: CPU only)',
  'cmake-js': 'built from source with cmake-js (CMakeLists.txt: CPU, and CUDA when nvcc was found)',
  unknown: 'a build of unknown origin',
};
const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;

function printInfo(io: CliIo): void {
  const i = info();
  const c = i.cuda;
  const lines = [`mla-kernels ${i.version} (node ${i.node}, ${i.platform})`, `addon:    ${i.addon}: ${BUILT_BY[i.addonBuild]}${i.addonFromEnv ? ' (chosen by MLA_ADDON_PATH)' : ''}`];
  // One line per backend, its reason as the addon states it; the CUDA details under its line.
  for (const b of i.backends) {
    lines.push(`${`${b.name}:`.padEnd(10)}${b.available ? 'available  ' : 'unavailable'}  ${b.reason}${b.name !== 'cpu' && b.devices?.length ? ` [devices: ${b.devices.join(', ')}]` : ''}`);
    if (b.name === 'cuda' && c.built) {
      const versions = `${c.runtimeVersion ? `; CUDA runtime ${c.runtimeVersion} (static)` : ''}${c.runtimeVersion || c.driverVersion ? `, driver ${c.driverVersion ?? 'none'}` : ''}`;
      lines.push(`          kernels for ${c.targets?.join(', ')}${versions}`);
      for (const d of c.devices ?? [])
        lines.push(`          device ${d.index}: ${d.name}, ${d.arch}${d.totalMemory ? `, ${gib(d.totalMemory)}` : ''}${d.usable ? '' : ` — not usable: ${d.reason ?? 'unsupported'}`}`);
    }
  }
  lines.push(`default backend: ${i.defaultBackend}`);
  io.out(lines.join('\n'));
}

/** A whole number, with an optional k / m suffix (×1024, ×1024²): "8192", "8k", "128k". */
function count(value: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError('expected a whole number (e.g. 8192 or 8k)');
  return Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]) ? 1024 : 1024 * 1024);
}

function countList(value: string): number[] {
  return value.split(',').map(count);
}

/** The estimator's numeric options: the flag shown in help, and the flag of memory_estimator_mla.py accepted too. */
const NUMERIC: readonly { field: keyof EstimateOptions; flag: string; seed?: string; help: string }[] = [
  { field: 'layers', flag: '--layers', seed: '--n_layers', help: 'transformer layers' },
  { field: 'heads', flag: '--heads', seed: '--n_heads', help: 'query heads H (the MHA key/value heads)' },
  { field: 'headDim', flag: '--head-dim', help: 'per-head key/value width of MHA, GQA and MQA' },
  { field: 'emb', flag: '--emb', seed: '--emb_dim', help: 'model width; head dim = ceil(emb / heads) when --head-dim is not given' },
  { field: 'kvHeads', flag: '--kv-heads', help: 'key/value heads K of GQA, a divisor of --heads (default: the largest divisor not above heads / 8)' },
  { field: 'kvLoraRank', flag: '--latent', seed: '--latent_dim', help: 'MLA latent width kv_lora_rank' },
  { field: 'ropeDim', flag: '--rope', help: 'MLA rope key width cached beside the latent (default 0: the latent alone; presets 64)' },
  { field: 'context', flag: '--context', seed: '--context_length', help: 'tokens per sequence, e.g. 8192 or 8k (default 8192)' },
  { field: 'batch', flag: '--batch', seed: '--batch_size', help: 'sequences (default 1)' },
];
/** The attribute name commander gives a flag's value ('--kv-heads' → kvHeads, '--n_kv_groups' → n_kv_groups). */
const attr = (flag: string) => flag.slice(2).replace(/-([a-z])/g, (_, ch: string) => ch.toUpperCase());
/** memory_estimator_mla.py's dtype names. */
const SEED_DTYPES: Readonly<Record<string, CacheDType>> = { fp32: 'f32', fp16: 'f16', fp8: 'fp8_e4m3' };

const ESTIMATE_HELP = `
Elements cached per token and layer: MHA 2·H·head_dim, GQA 2·K·head_dim, MQA 2·head_dim, MLA kv_lora_rank +
rope_dim; bytes = elements · layers · context · batch · bytes per element (GB = 10^9 bytes). With no model options it
prints the three DeepSeek presets. Any option overrides a preset.

The flags of memory_estimator_mla.py work as well: --context_length, --emb_dim, --n_heads, --n_layers, --latent_dim,
--batch_size, --n_kv_groups (query heads per key/value head: --kv-heads = --n_heads / --n_kv_groups), and --dtype
fp32, fp16 or fp8.

Examples:
  mla-kernels estimate --emb 2048 --heads 24 --layers 48 --kv-heads 6 --latent 1024 --context 8192 --dtype bf16
  mla-kernels estimate --preset deepseek-v3 --context 128k --dtype fp8_e4m3
  mla-kernels estimate --context 128k --plot kv-cache.svg`;

async function estimate(opts: Record<string, unknown>, io: CliIo): Promise<void> {
  // The flag each field came from, so that messages use the caller's own spelling.
  const flagOf: Partial<Record<keyof EstimateOptions, string>> = {};
  const given: Partial<Record<keyof EstimateOptions, number>> = {};
  for (const n of NUMERIC)
    for (const flag of [n.flag, n.seed])
      if (flag && opts[attr(flag)] !== undefined) {
        given[n.field] = opts[attr(flag)] as number;
        flagOf[n.field] = flag;
      }
  const name = (field: keyof EstimateOptions) => flagOf[field] ?? NUMERIC.find((n) => n.field === field)?.flag ?? `--${field}`;

  const preset = opts.preset === undefined ? undefined : PRESETS[opts.preset as string];
  const groups = opts.n_kv_groups as number | undefined;
  if (groups !== undefined) {
    const heads = given.heads ?? preset?.heads;
    if (heads === undefined) throw new UsageError(`--n_kv_groups needs ${name('heads')}`);
    if (heads % groups !== 0) throw new UsageError(`--n_kv_groups (${groups}) must divide ${name('heads')} (${heads})`);
    given.kvHeads = heads / groups;
    flagOf.kvHeads = '--n_kv_groups';
  }
  const dtypeName = opts.dtype as string | undefined;
  const dtype = dtypeName === undefined ? 'bf16' : (SEED_DTYPES[dtypeName] ?? (dtypeName as CacheDType));
  const plot = opts.plot as string | undefined;
  if (plot !== undefined && !/\.svg$/i.test(plot))
    throw new UsageError(`--plot writes an SVG chart: give a file name ending in .svg (got '${plot}'); any SVG tool converts it to PNG`);

  const modelGiven = preset !== undefined || (['layers', 'heads', 'headDim', 'emb', 'kvLoraRank'] as const).some((k) => k in given);
  const common = { context: given.context ?? 8192, batch: given.batch ?? 1, dtype } as const;
  // title: the table's heading; model: the chart panel's.
  const configs: { title?: string; model?: string; options: EstimateOptions }[] = [];
  if (!modelGiven) {
    for (const p of Object.values(PRESETS))
      configs.push({ title: `${p.description} (--preset ${p.name})`, model: p.description, options: { ...presetOptions(p), ...given, ...common } });
  } else {
    const o = { ...(preset ? presetOptions(preset) : {}), ...given, ...common } as Partial<EstimateOptions>;
    if (given.emb !== undefined && given.headDim === undefined) delete o.headDim; // --emb over a preset's head dim
    const missing: string[] = [];
    if (o.layers === undefined) missing.push(name('layers'));
    if (o.heads === undefined) missing.push(name('heads'));
    if (o.headDim === undefined && o.emb === undefined) missing.push(`${name('headDim')} or ${name('emb')}`);
    if (o.kvLoraRank === undefined) missing.push(name('kvLoraRank'));
    if (missing.length) throw new UsageError(`missing ${missing.join(', ')} (or give --preset)`);
    configs.push({ title: preset ? `${preset.description} (--preset ${preset.name})` : undefined, model: preset?.description, options: o as EstimateOptions });
  }
  let estimates;
  try {
    estimates = configs.map((c) => ({ title: c.title, estimate: estimateKvCache(c.options) }));
  } catch (e) {
    if (e instanceof EstimateOptionError) throw new UsageError(e.describe(name));
    throw e;
  }
  // Render first: a missing peer dependency fails before anything is printed.
  const svg = plot === undefined ? undefined : await plotKvCacheSvg({ panels: configs.map((c) => ({ title: c.model, options: c.options })), latents: opts.latents as number[] | undefined }).catch((e: Error) => {
    throw new Error(`--plot: ${e.message}`);
  });
  if (opts.json) io.out(JSON.stringify(estimates.length === 1 ? estimates[0].estimate : estimates, null, 2));
  else io.out(estimates.map((e) => formatEstimate(e.estimate, e.title)).join('\n\n'));
  if (plot !== undefined) {
    writeFileSync(plot, svg!);
    if (!opts.json) io.out(`\nwrote ${plot}: ${configs.length > 1 ? `the presets ${Object.keys(PRESETS).join(', ')}, one panel each` : 'cache size against context'} (log axes)`);
  }
}

function presetOptions(p: ModelPreset): EstimateOptions {
  return { layers: p.layers, heads: p.heads, headDim: p.headDim, kvHeads: p.kvHeads, kvLoraRank: p.kvLoraRank, ropeDim: p.ropeDim, context: 8192 };
}

function program(io: CliIo): Command {
  const output = {
    writeOut: (s: string) => io.out(s.replace(/\n$/, '')),
    writeErr: (s: string) => io.err(s.replace(/\n$/, '')),
    // commander's "error: …" becomes the command's one prefix.
    outputError: (s: string, write: (s: string) => void) => write(PREFIX + s.replace(/^error: /, '')),
  };
  const root = new Command('mla-kernels')
    .description('Multi-head Latent Attention kernels for Node.js: what this installation has, and KV-cache sizes.')
    .version(packageVersion(), '-v, --version', 'print the version')
    .helpOption('-h, --help', 'print this help')
    .helpCommand('help [command]', 'print the help of a command')
    .configureOutput(output)
    .showSuggestionAfterError()
    .exitOverride();
  root
    .command('info')
    .description('what this installation found: the addon in use, its CPU kernels, CUDA and its devices (the default)')
    .helpOption('-h, --help', 'print this help')
    .configureOutput(output)
    .exitOverride()
    .action(() => printInfo(io));
  const est = root
    .command('estimate')
    .description('KV-cache bytes of MHA, GQA, MQA and MLA for a model, batch and context')
    .helpOption('-h, --help', 'print this help')
    .configureOutput(output)
    .showSuggestionAfterError()
    .exitOverride()
    .addHelpText('after', ESTIMATE_HELP)
    .addOption(new Option('--preset <name>', 'a DeepSeek model; the options below override it').choices(Object.keys(PRESETS)));
  for (const n of NUMERIC) {
    est.addOption(new Option(`${n.flag} <n>`, n.help).argParser(count).conflicts(n.seed ? [attr(n.seed)] : []));
    if (n.seed) est.addOption(new Option(`${n.seed} <n>`).argParser(count).hideHelp());
  }
  est
    .addOption(new Option('--n_kv_groups <n>').argParser(count).hideHelp().conflicts('kvHeads'))
    .addOption(new Option('--dtype <type>', 'cache element type (default bf16)').choices([...Object.keys(CACHE_DTYPE_BYTES), ...Object.keys(SEED_DTYPES)]))
    .addOption(new Option('--plot <file.svg>', 'also write an SVG chart (log axes) of cache size against context (needs the optional peers vega, vega-lite)'))
    .addOption(new Option('--latents <a,b,...>', 'MLA latent widths --plot draws beside the model\'s own (default 128,256,512,1024)').argParser(countList))
    .option('--json', 'print the estimate as JSON')
    .action((opts: Record<string, unknown>) => estimate(opts, io));
  return root;
}

/** Runs `mla-kernels <argv>`; resolves with the exit code (0, 1: the command failed, 2: bad usage). */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    await program(io).parseAsync(argv.length ? [...argv] : ['info'], { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2; // commander printed it
    if (e instanceof UsageError) {
      io.err(`${PREFIX}${e.message}`);
      return 2;
    }
    // No usable addon, a missing peer, an unwritable file: one line (the message names the file and the remedy).
    io.err(`${PREFIX}${(e as Error).message}`);
    return 1;
  }
}
