// bench/decode-bound.mjs end to end on one small row (queryLen 2, causal), one round: it must name the processor and path and print, per
// row, both layouts' times and roofline fractions. Speeds are not asserted: they live in the benchmark, not in tests.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '..', '..');

describe('bench/decode-bound.mjs', () => {
  it('prints the real and resident figures of a row', () => {
    const r = spawnSync(process.execPath, ['bench/decode-bound.mjs', '--rounds', '1', '--reps', '1', 'bf16 16 2 1 512'], {
      cwd: root,
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^decode-bound, .* UTC: .*, path [\w-]+, 1 thread\(s\)/m);
    const m = r.stdout.match(/^\| bf16 16 2 1 512 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$/m);
    expect(m, r.stdout).not.toBeNull();
    for (const x of m!.slice(1)) expect(Number(x)).toBeGreaterThan(0);
  });
});
