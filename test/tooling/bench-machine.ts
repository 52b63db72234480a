// The machine fields bench/cpu-results.mjs's resultKey reads, as bench/cpu.mjs fills them: for the benchmark's tests
// that seed a stored result of this machine type.
import { readFileSync } from 'node:fs';
// @ts-expect-error plain .mjs module of the benchmark, without types
import { cpuModel } from '../../bench/machine.mjs';
import { native } from '../../lib/native.js';

export function thisMachine() {
  const cpuinfo = (() => { try { return readFileSync('/proc/cpuinfo', 'utf8'); } catch { return ''; } })();
  const field = (name: string) => { const m = cpuinfo.match(new RegExp(`^${name}\\s*:\\s*(\\d+)`, 'm')); return m ? +m[1] : undefined; };
  const isa = (native().cpuInfo!() as { simd: string }).simd;
  return { cpu: cpuModel, family: field('cpu family'), model: field('model'), isa };
}
