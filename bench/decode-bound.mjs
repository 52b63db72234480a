#!/usr/bin/env node
// What bounds a decode row: the same decode timed twice, on the real cache (every block a different one, in a shuffled
// order, as bench/decode-ab.mjs lays it out) and on a resident one (every block-table entry points at cache block 0:
// the same instructions, the same tiles read in place, but the context stays in L2 and no byte comes from DRAM). Both
// are rated as a fraction of the same roofline, min(peak, read bandwidth × FLOP/B), with the limits measured here on the
// same threads. Where the resident figure is close to the real one, the row is bound by its instruction stream on the
// core, not by memory; where the resident run is much faster, by the memory traffic.
//
//   taskset -c 1 node bench/decode-bound.mjs [--addon <addon.node>] [--rounds 5] [--reps 9] ['bf16 16 1 8 4096' ...]
//
// A row is "dtype heads queryLen batch context" (DeepSeek's shape: kvLoraRank 512 + rope 64, blocks of 64); the
// default rows are the goal rows at batch 8, context 4096. The two layouts run alternately in fresh processes, the
// order swapped every round, so other work on a shared machine falls on both alike; each figure is the median over
// the rounds. MLA_NUM_THREADS defaults to 1 here (pin the process with taskset: the ratios of a compute-bound row
// carry over to more threads); MLA_CPU_ISA passes through.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { decodeRow, KV_LORA_RANK as KV, medianMs, WIDTH } from './decode-data.mjs';
import { alternate, lastJson, load, median, processor, runNode } from './machine.mjs';

const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
process.env.MLA_NUM_THREADS ??= '1';

if (process.argv[2] === '--child') {
  // One side: times `reps` decodes of one row after warm-up; prints {ms, peak (best of the dot/FMA loop before and after)}.
  const { native } = await import(path.join(here, 'dist/native.js'));
  const addon = native();
  const [layout, dtype, heads, queryLen, batch, context, reps] = process.argv.slice(3).map((x, i) => (i > 1 ? +x : x));
  const { run } = decodeRow(await import(path.join(here, 'dist/index.js')), { dtype, heads, queryLen, batch, context, resident: layout === 'resident' });
  const peak = () => { const l = addon.cpuLimits(4 * 2 ** 20); return dtype === 'bf16' && addon.cpuInfo().simd === 'avx512-bf16' ? Math.max(l.fmaFlops, l.bf16DotFlops) : l.fmaFlops; };
  const peakBefore = peak();
  const ms = await medianMs(run, reps);
  console.log(JSON.stringify({ ms, peak: Math.max(peakBefore, peak()) }));
  process.exit(0);
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { addon: { type: 'string' }, rounds: { type: 'string', default: '5' }, reps: { type: 'string', default: '9' } },
});
const addonPath = values.addon ?? process.env.MLA_ADDON_PATH ?? path.join(here, 'build-cmake/Release/mla_kernels.node');
process.env.MLA_ADDON_PATH = addonPath;
const rounds = Number(values.rounds), reps = Number(values.reps);
const rows = positionals.length ? positionals : ['bf16', 'f32'].flatMap((d) => [16, 128].flatMap((h) => [1, 2].map((ql) => `${d} ${h} ${ql} 8 4096`)));

const { native } = await import(path.join(here, 'dist/native.js'));
const addon = native();
const cpu = addon.cpuInfo();
const limits = addon.cpuLimits(256 * 2 ** 20);
const G = (x) => (x / 1e9).toFixed(0);
const affinity = (() => { const p = spawnSync('taskset', ['-pc', String(process.pid)], { encoding: 'utf8' }); return p.status === 0 ? p.stdout.trim().split(': ').pop() : 'unknown'; })();
console.log(`decode-bound, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC: ${processor}, path ${cpu.simd}, ` +
  `${cpu.threads} thread(s) on CPUs ${affinity}; load average ${load()}`);
console.log(`limits on these threads: read ${G(limits.readBytesPerSec)} GB/s, fp32 FMA ${G(limits.fmaFlops)} GFLOP/s, bf16 dot ${G(limits.bf16DotFlops)} GFLOP/s` +
  ` (each row is rated against the best peak its children measured around it)`);
console.log('| row (dtype heads qLen batch ctx) | real ms | resident ms | real / resident time | roofline: real | resident |');
console.log('|---|---|---|---|---|---|');
for (const row of rows) {
  const [dtype, heads, queryLen, batch, context] = row.split(/\s+/).map((x, i) => (i ? +x : x));
  const runs = alternate(rounds, ['real', 'resident'], (layout) =>
    lastJson(runNode([fileURLToPath(import.meta.url), '--child', layout, dtype, heads, queryLen, batch, context, reps], process.env, `${row} ${layout}`)));
  const ms = { real: runs.real.map((j) => j.ms), resident: runs.resident.map((j) => j.ms) };
  const peak = Math.max(...runs.real.map((j) => j.peak), ...runs.resident.map((j) => j.peak));
  const bytes = batch * context * WIDTH * (dtype === 'f32' ? 4 : 2), flops = 2 * batch * heads * queryLen * context * (WIDTH + KV);
  const bound = Math.max(bytes / limits.readBytesPerSec, flops / peak) * 1e3; // ms
  const real = median(ms.real), resident = median(ms.resident);
  console.log(`| ${row} | ${real.toFixed(3)} | ${resident.toFixed(3)} | ${median(ms.real.map((x, i) => x / ms.resident[i])).toFixed(2)} | ` +
    `${(bound / real).toFixed(2)} | ${(bound / resident).toFixed(2)} |`);
}
