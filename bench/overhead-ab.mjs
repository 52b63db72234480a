#!/usr/bin/env node
// A/B of the per-call host cost (bench/overhead.mjs) between this checkout and another (say, the commit before a
// change: `git worktree add /tmp/before <commit>`, then npm ci and tsc there). The two run alternately, in fresh
// processes, the order swapped every round, so that other work on a shared machine falls on both alike; each side's
// figure is the median over the rounds, and the ratio the median of the rounds' ratios.
//
//   node bench/overhead-ab.mjs --before <checkout> [--rounds 11] [overhead.mjs flags: --shared, --alloc, --ops ...]
//
// Each checkout runs with its own dist/ and its own node-gyp addon (build/Release/mla_kernels.node; MLA_ADDON_PATH
// overrides this checkout's). Prints, per op, the wall-clock median per call (the calls alone) and the main
// thread's CPU time per call (completions included).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { alternate, median, processor, runNode } from './machine.mjs';

const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const take = (name, fallback) => {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const [, value] = args.splice(i, 2);
  return value;
};
const before = take('--before', null);
const rounds = Number(take('--rounds', 11));
if (!before) {
  console.error('usage: node bench/overhead-ab.mjs --before <checkout> [--rounds N] [bench/overhead.mjs flags]');
  process.exit(2);
}
const sides = {
  before: { dist: path.resolve(before, 'dist'), addon: path.resolve(before, 'build/Release/mla_kernels.node') },
  after: { dist: path.join(here, 'dist'), addon: process.env.MLA_ADDON_PATH ?? path.join(here, 'build/Release/mla_kernels.node') },
};
const line = /^(\w+).*?: ([\d.]+) µs per call .*main thread CPU ([\d.]+) µs per call/;

function measure(side) {
  const { dist, addon } = sides[side];
  const stdout = runNode([path.join(here, 'bench/overhead.mjs'), '--dist', dist, ...args], { ...process.env, MLA_ADDON_PATH: addon }, `${side}: bench/overhead.mjs`);
  const found = {};
  for (const l of stdout.split('\n')) {
    const m = line.exec(l);
    if (m) found[m[1]] = { wall: Number(m[2]), cpu: Number(m[3]) };
  }
  return found;
}

const samples = alternate(rounds, ['before', 'after'], measure);

console.log(`${processor}; ${rounds} rounds alternated; flags: ${args.join(' ') || '(none)'}`);
console.log('| op | before: wall / CPU µs per call | after: wall / CPU µs per call | after / before (wall, CPU) |');
console.log('|---|---|---|---|');
for (const op of Object.keys(samples.before[0])) {
  const of = (side, metric) => samples[side].map((s) => s[op][metric]);
  const ratio = (metric) => median(of('after', metric).map((a, i) => a / of('before', metric)[i]));
  const both = (side) => `${median(of(side, 'wall')).toFixed(2)} / ${median(of(side, 'cpu')).toFixed(2)}`;
  console.log(`| ${op} | ${both('before')} | ${both('after')} | ${ratio('wall').toFixed(2)}, ${ratio('cpu').toFixed(2)} |`);
}
