#!/usr/bin/env node
// Instructions per decode of the linux-arm64 prebuild's CPU paths, counted under qemu-user (speed cannot be
// measured under emulation; docs/platforms.md quotes these counts): a qemu plugin (insn-count.c) counts the guest
// instructions executed inside the addon's own code (its mapping, from /proc/self/maps; libc's memcpy and the
// like are outside), and a run doing 1 + REPS decodes minus a run doing 1 is REPS decodes' worth (the first
// decode's one-time work cancels). One thread. Needs prebuilds/linux-arm64 (npm run build:prebuild) and dist/
// (npx tsc).
//   node bench/arm64/insns.mjs [--heads 16,128] [--len 2048] [--dtypes bf16,f32]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import * as arm64 from '../../scripts/linux-arm64.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values: opt } = parseArgs({ options: { heads: { type: 'string', default: '16,128' }, len: { type: 'string', default: '2048' }, dtypes: { type: 'string', default: 'bf16,f32' } } });
const REPS = 2;
const addonPath = path.join(root, 'prebuilds', 'linux-arm64', 'mla-kernels.napi.node');
if (!existsSync(addonPath) || !existsSync(path.join(root, 'dist', 'index.js'))) throw new Error('build first: npx tsc -p tsconfig.json && MLA_PREBUILD_ARCHS=arm64 npm run build:prebuild');
const got = arm64.ensureTools();
if (!got.ok) throw new Error(got.reason);
const work = path.join(root, 'build-prebuild-arm64');
mkdirSync(work, { recursive: true });
const plugin = path.join(work, 'insn-count.so');
const cc = spawnSync('gcc', ['-shared', '-fPIC', '-O2', '-o', plugin, path.join(root, 'bench', 'arm64', 'insn-count.c')], { stdio: 'inherit' });
if (cc.status !== 0) throw new Error('could not build the qemu plugin');
const node = arm64.arm64Node(path.join(work, 'node'));
const rangeFile = path.join(work, 'insn-range.txt');

function count(isa, dtype, heads, len, decodes) {
  const script = `
    const { Tensor, mlaDecode } = await import(${JSON.stringify(pathToFileURL(path.join(root, 'dist', 'index.js')).href)});
    const width = 576, kvLoraRank = 512, blockSize = 64, blocks = ${len} / blockSize;
    const fill = (n) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37));
    const cache = Tensor.fromValues(fill(blocks * blockSize * width), [blocks, blockSize, width], '${dtype}');
    const q = Tensor.fromValues(fill(${heads} * width), [1, 1, ${heads}, width], '${dtype}');
    const blockTable = Tensor.from(Int32Array.from({ length: blocks }, (_, i) => i), [1, blocks]);
    const seqLens = Tensor.from(Int32Array.of(${len}), [1]);
    for (let i = 0; i < ${decodes}; i++) await mlaDecode({ q, cache, blockTable, seqLens, softmaxScale: 0.07, kvLoraRank }).out.read();
    const fs = await import('node:fs');
    const lines = fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.endsWith(${JSON.stringify(addonPath)}));
    const ranges = lines.map((l) => l.split(' ')[0].split('-').map((x) => BigInt('0x' + x)));
    const lo = ranges.reduce((a, r) => (r[0] < a ? r[0] : a), ranges[0][0]), hi = ranges.reduce((a, r) => (r[1] > a ? r[1] : a), 0n);
    fs.writeFileSync(${JSON.stringify(rangeFile)}, lo.toString(16) + ' ' + hi.toString(16));`;
  const r = spawnSync(got.tools.qemu, ['-L', arm64.SYSROOT, '-plugin', `${plugin},range=${rangeFile}`, '-d', 'plugin', node, '--input-type=module', '-e', script], {
    encoding: 'utf8', env: { ...process.env, MLA_ADDON_PATH: addonPath, MLA_CPU_ISA: isa, MLA_NUM_THREADS: '1' },
  });
  const m = /INSNS (\d+)/.exec(r.stderr);
  if (r.status !== 0 || !m) throw new Error(`run failed: ${r.stderr.slice(-2000)}`);
  return Number(m[1]);
}

console.log(`instructions per decode (1 sequence, 576-wide latent rows, ${REPS} decodes counted, 1 thread), linux-arm64 prebuild under qemu-user`);
console.log('| dtype | heads | cache rows | portable | neon | portable / neon |\n|---|---|---|---|---|---|');
for (const dtype of opt.dtypes.split(','))
  for (const heads of opt.heads.split(',').map(Number))
    for (const len of opt.len.split(',').map(Number)) {
      const per = {};
      for (const isa of ['portable', 'neon']) per[isa] = (count(isa, dtype, heads, len, 1 + REPS) - count(isa, dtype, heads, len, 1)) / REPS;
      const m = (x) => `${(x / 1e6).toFixed(1)} M`;
      console.log(`| ${dtype} | ${heads} | ${len} | ${m(per.portable)} | ${m(per.neon)} | ${(per.portable / per.neon).toFixed(2)}× |`);
    }
