#!/usr/bin/env node
// A/B of the CPU decode kernels between two builds of the addon (say, build-cmake's before a change, copied aside, and
// after it), on DeepSeek's shape (kvLoraRank 512 + rope 64, blocks of 64 in a shuffled order). The two run alternately
// in fresh processes, the order swapped every round, so that other work on a shared machine falls on both alike; each
// side's figure is the median over the rounds, and the ratio the median of the rounds' ratios. Each side's output
// checksum is printed: a change that keeps the reduction order keeps it bit for bit.
//
//   node bench/decode-ab.mjs --before <addon.node> [--after <addon.node>] [--rounds 7] [--reps 15] 'bf16 16 8 4096' ...
//
// A row is "dtype heads batch context" (queryLen 1). --after defaults to MLA_ADDON_PATH or build-cmake's addon;
// MLA_CPU_ISA and MLA_NUM_THREADS pass through to both sides.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { decodeRow, KV_LORA_RANK as KV, medianMs, WIDTH } from './decode-data.mjs';
import { alternate, lastJson, median, processor, runNode } from './machine.mjs';

const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

if (process.argv[2] === '--child') {
  // One side: times `reps` decodes of one row after warm-up, prints {ms, checksum}.
  const [dtype, heads, batch, context, reps] = process.argv.slice(3).map((x, i) => (i ? +x : x));
  const { run, out } = decodeRow(await import(path.join(here, 'dist/index.js')), { dtype, heads, batch, context });
  const ms = await medianMs(run, reps);
  const o = await out.toFloat32();
  let checksum = 0;
  for (let i = 0; i < o.length; i += 97) checksum += o[i];
  console.log(JSON.stringify({ ms, checksum }));
  process.exit(0);
}

const { values, positionals: rows } = parseArgs({
  allowPositionals: true,
  options: { before: { type: 'string' }, after: { type: 'string' }, rounds: { type: 'string', default: '7' }, reps: { type: 'string', default: '15' } },
});
const before = values.before;
const after = values.after ?? process.env.MLA_ADDON_PATH ?? path.join(here, 'build-cmake/Release/mla_kernels.node');
const rounds = Number(values.rounds), reps = Number(values.reps);
if (!before || rows.length === 0) {
  console.error("usage: node bench/decode-ab.mjs --before <addon.node> [--after <addon.node>] [--rounds N] [--reps N] 'bf16 16 8 4096' ...");
  process.exit(2);
}
console.log(`${processor}; ${rounds} rounds alternated`);
for (const row of rows) {
  const [dtype, heads, batch, context] = row.split(/\s+/).map((x, i) => (i ? +x : x));
  const runs = alternate(rounds, ['before', 'after'], (side) =>
    lastJson(runNode([fileURLToPath(import.meta.url), '--child', dtype, heads, batch, context, reps], { ...process.env, MLA_ADDON_PATH: side === 'before' ? before : after }, `${row} ${side}`)));
  const ms = { before: runs.before.map((j) => j.ms), after: runs.after.map((j) => j.ms) };
  const checksum = { before: runs.before.at(-1).checksum, after: runs.after.at(-1).checksum };
  const ratio = median(ms.before.map((b, i) => b / ms.after[i]));
  const bytes = batch * context * WIDTH * (dtype === 'f32' ? 4 : 2), flops = 2 * batch * heads * context * (WIDTH + KV);
  const a = median(ms.after);
  console.log(
    `${row}: before ${median(ms.before).toFixed(3)} ms, after ${a.toFixed(3)} ms, before/after ${ratio.toFixed(3)} ` +
      `(after: ${(bytes / a / 1e6).toFixed(1)} GB/s, ${(flops / a / 1e6).toFixed(0)} GFLOP/s); checksums ${checksum.before === checksum.after ? 'equal' : `differ: ${checksum.before} ${checksum.after}`}`,
  );
}
