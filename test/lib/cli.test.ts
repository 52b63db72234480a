// The `mla-kernels` command (lib/commands.ts, bin dist/cli.js): help and version, the estimator's flags (its own and
// memory_estimator_mla.py's, whose example must print the published figures), one message prefix and the command's
// own option names in errors, --plot, and info's lines. In process through runCli, and as the bin where it matters.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { runCli } from '../../lib/commands.js';

const root = path.join(__dirname, '..', '..');
const bin = path.join(root, 'dist', 'cli.js');
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
const tmp = mkdtempSync(path.join(os.tmpdir(), 'mla-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// memory_estimator_mla.py's example, as its readers type it (n_kv_groups: query heads per key/value head).
const SEED = '--context_length 8192 --emb_dim 2048 --n_heads 24 --n_layers 48 --n_kv_groups 4 --batch_size 1 --dtype bf16 --latent_dim 1024';
const PUBLISHED = 'MHA 3.25 GB, GQA 0.81 GB, MQA 0.14 GB, MLA 0.81 GB; MHA/GQA 4.00×, MHA/MLA 4.03×; savings 75.00% (GQA) and 75.19% (MLA)';

async function cli(args: string | string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(typeof args === 'string' ? args.split(' ').filter(Boolean) : args, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('mla-kernels (the command)', () => {
  it('-h, --help, help <command>, -v and --version', async () => {
    for (const flag of ['-h', '--help']) {
      const r = await cli(flag);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/^Usage: mla-kernels \[options\] \[command\]/);
      expect(r.out).toMatch(/^ {2}info\b/m);
      expect(r.out).toMatch(/^ {2}estimate\b/m);
    }
    for (const args of ['help estimate', 'estimate --help', 'estimate -h']) {
      const r = await cli(args);
      expect(r.code, args).toBe(0);
      expect(r.out).toMatch(/^Usage: mla-kernels estimate \[options\]/);
      expect(r.out).toContain('--kv-heads <n>');
      expect(r.out).toContain('--n_kv_groups');
    }
    for (const flag of ['-v', '--version']) expect(await cli(flag)).toEqual({ code: 0, out: pkg.version, err: '' });
  });

  it('the bin: --help and --version exit 0', () => {
    expect(existsSync(bin), 'dist/cli.js: npm test compiles it first').toBe(true);
    const version = spawnSync(process.execPath, [bin, '--version'], { encoding: 'utf8' });
    expect([version.status, version.stdout.trim()]).toEqual([0, pkg.version]);
    const help = spawnSync(process.execPath, [bin, '-h'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('Usage: mla-kernels');
  });

  it("memory_estimator_mla.py's example, flags as its readers type them, prints the published figures", async () => {
    const r = await cli(`estimate ${SEED}`);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toContain(PUBLISHED);
    expect(r.out).toMatch(/^GQA \(6 kv heads\)\s+1,032\s+99,072\s+811,597,824\s+0\.81 GB\s+4\.00×\s+75\.00%$/m);
    expect(r.out).toMatch(/^MLA \(1024\)\s+1,024\s+98,304\s+805,306,368\s+0\.81 GB\s+4\.03×\s+75\.19%$/m);
    // The same through the bin, and spelled with this command's own flags.
    const spawned = spawnSync(process.execPath, [bin, 'estimate', ...SEED.split(' ')], { encoding: 'utf8' });
    expect(spawned.status, spawned.stderr).toBe(0);
    expect(spawned.stdout).toContain(PUBLISHED);
    expect((await cli('estimate --emb 2048 --heads 24 --layers 48 --kv-heads 6 --latent 1024 --context 8192 --dtype bf16')).out).toContain(PUBLISHED);
    // The script's other dtype names.
    expect((await cli(`estimate ${SEED.replace('bf16', 'fp16')}`)).out).toContain('f16 (2 bytes/element)');
    expect((await cli(`estimate ${SEED.replace('bf16', 'fp8')}`)).out).toContain('fp8_e4m3 (1 byte/element)');
  });

  it('errors: one prefix, the flag as the caller spelled it, exit code 2', async () => {
    const cases: [string, string][] = [
      ['estimate --kv-heads 7 --heads 24 --layers 48 --emb 2048 --latent 1024', "mla-kernels: --kv-heads (7) must divide --heads (24)"],
      ['estimate --kv-heads 7 --n_heads 24 --layers 48 --emb 2048 --latent 1024', "mla-kernels: --kv-heads (7) must divide --n_heads (24)"],
      [SEED.replace('--n_kv_groups 4', '--n_kv_groups 5').replace(/^/, 'estimate '), "mla-kernels: --n_kv_groups (5) must divide --n_heads (24)"],
      ['estimate --heads 24 --layers 0 --emb 2048 --latent 1024', 'mla-kernels: --layers must be an integer >= 1, got 0'],
      ['estimate --heads 24 --n_layers 0 --emb 2048 --latent 1024', 'mla-kernels: --n_layers must be an integer >= 1, got 0'],
      ['estimate --heads 24', 'mla-kernels: missing --layers, --head-dim or --emb, --latent (or give --preset)'],
      ['estimate --heads 24 --layers x', "mla-kernels: option '--layers <n>' argument 'x' is invalid. expected a whole number (e.g. 8192 or 8k)"],
      ['estimate --context 8k --context_length 8192', "mla-kernels: option '--context <n>' cannot be used with option '--context_length <n>'"],
      ['estimate --preset deepseek-v9', "mla-kernels: option '--preset <name>' argument 'deepseek-v9' is invalid. Allowed choices are deepseek-v2, deepseek-v2-lite, deepseek-v3."],
      ['estimate --plot out.png', "mla-kernels: --plot writes an SVG chart: give a file name ending in .svg (got 'out.png'); any SVG tool converts it to PNG"],
      ['estimate --kvheads 3', "mla-kernels: unknown option '--kvheads'\n(Did you mean --kv-heads?)"],
      ['bogus', "mla-kernels: unknown command 'bogus'"],
    ];
    for (const [args, message] of cases) {
      const r = await cli(args);
      expect({ args, code: r.code, out: r.out, err: r.err }).toEqual({ args, code: 2, out: '', err: message });
    }
    const spawned = spawnSync(process.execPath, [bin, 'estimate', '--kv-heads', '7', '--heads', '24'], { encoding: 'utf8' });
    expect([spawned.status, spawned.stdout, spawned.stderr.trim()]).toEqual([2, '', 'mla-kernels: missing --layers, --head-dim or --emb, --latent (or give --preset)']);
  });

  it('--plot with no model options draws the three presets, one named panel each', async () => {
    const file = path.join(tmp, 'presets.svg');
    const r = await cli(['estimate', '--context', '128k', '--plot', file]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toContain(`wrote ${file}: the presets deepseek-v2, deepseek-v2-lite, deepseek-v3, one panel each (log axes)`);
    const svg = readFileSync(file, 'utf8');
    for (const name of ['DeepSeek-V2 (236B)', 'DeepSeek-V2-Lite (16B)', 'DeepSeek-V3 / R1 (671B)', 'MLA (512 + 64)', '128k']) expect(svg).toContain(name);
    const one = path.join(tmp, 'one.svg');
    expect((await cli(['estimate', ...SEED.split(' '), '--plot', one, '--latents', '256'])).out).toContain(`wrote ${one}: cache size against context (log axes)`);
    expect(readFileSync(one, 'utf8')).toContain('MLA (1024) (this model): 0.81 GB');
  });

  it('--plot without the optional peers (vega, vega-lite) says what to install, before printing anything', async () => {
    vi.resetModules();
    vi.doMock('vega', () => {
      throw new Error("Cannot find package 'vega'");
    });
    try {
      const { runCli: fresh } = await import('../../lib/commands.js');
      const out: string[] = [], err: string[] = [];
      const code = await fresh(['estimate', '--plot', path.join(tmp, 'none.svg')], { out: (t) => out.push(t), err: (t) => err.push(t) });
      expect(code).toBe(1);
      expect(out).toEqual([]);
      expect(err.join('\n')).toMatch(/^mla-kernels: --plot: the chart is drawn by Vega-Lite and Vega, optional peer dependencies that are not installed: npm install vega vega-lite/);
      expect(existsSync(path.join(tmp, 'none.svg'))).toBe(false);
    } finally {
      vi.doUnmock('vega');
      vi.resetModules();
    }
  });

  it('info (also with no command): each backend on one line, once; no talk of node-gyp unless the addon is a node-gyp build', async () => {
    for (const args of ['info', '']) {
      const r = await cli(args);
      expect(r.code, r.err).toBe(0);
      const lines = r.out.split('\n');
      expect(lines[0]).toBe(`mla-kernels ${pkg.version} (node ${process.version}, ${process.platform}-${process.arch})`);
      for (const backend of ['cpu', 'cuda', 'cuda-sim']) expect(lines.filter((l) => l.startsWith(`${backend}:`)), backend).toHaveLength(1);
      expect(lines.filter((l) => /kernels on \d+ threads/.test(l))).toHaveLength(1);
      const addon = lines.find((l) => l.startsWith('addon:'))!;
      if (!addon.includes('node-gyp')) expect(r.out).not.toContain('node-gyp');
      expect(lines.find((l) => l.startsWith('cuda-sim:'))).not.toContain('node-gyp');
    }
  });
});
