// `npm run bench` on the sparse row of the quick grid: the lightning indexer, the sparse decode over its top-2048 and
// the dense decode of the same context, timed after the sparse output was checked against the reference; the row
// in the table and the JSON. The run is a `--rows ... --merge` run into a stored result of this machine type seeded
// with other rows, which must stay. Speeds are not asserted: they live in the benchmark.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain .mjs modules of the benchmark, without types
import { resultKey } from '../../bench/cpu-results.mjs';
import { thisMachine } from './bench-machine.js';

const root = path.resolve(__dirname, '..', '..');

describe('bench/cpu.mjs sparse rows', () => {
  it('prints the sparse table and merges the row into the stored result, keeping its other rows', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mla-bench-sparse-'));
    try {
      const machine = { ...thisMachine(), date: '2026-01-01T00:00:00.000Z' };
      const file = path.join(dir, `cpu-latest-${resultKey(machine)}.json`);
      const oldSparse = { label: 'sparse bf16 h128 ctx131072', dtype: 'bf16', heads: 128, context: 131072, topk: 2048,
        sparse: { ms: 2, roofline: 0.5 }, dense: { ms: 9, roofline: 0.5 }, indexer: { ms: 1, roofline: 0.5 } };
      const table = ['header', '', '| dtype | ... |', '|---|', '| bf16 | 16 |', '', '| sparse decode (top-2048, one sequence) | old |', '|---|', '| stale |', '', 'targets: x', 'note: kept'].join('\n');
      writeFileSync(file, JSON.stringify({ machine, quick: false, rows: [{ label: 'kept decode row' }], prefillRows: [{ label: 'kept prefill row' }], sparseRows: [oldSparse], appendRows: [], table }));
      const r = spawnSync(process.execPath, ['bench/cpu.mjs', '--quick', '--no-peers', '--rows', '^sparse bf16 h16 ctx8192$', '--merge', '--results', dir], { cwd: root, encoding: 'utf8', timeout: 240_000 });
      expect(r.status, r.stderr).toBe(0);
      const line = /^\| bf16, fp8 index keys \| 16 \| 8192 \| [\d.]+ \([\d.]+\) \| [\d.]+ \([\d.]+\) \| [\d.]+ \(\d+%\) \| [\d.]+ \([\d.]+\) \| [\d.]+x \/ [\d.]+x \|/m;
      expect(r.stdout).toMatch(line);
      expect(readdirSync(dir).filter((f) => f.endsWith('.json'))).toEqual([path.basename(file)]);
      const result = JSON.parse(readFileSync(file, 'utf8'));
      expect(result.rows).toEqual([{ label: 'kept decode row' }]);
      expect(result.prefillRows).toEqual([{ label: 'kept prefill row' }]);
      expect(result.sparseRows.map((x: { label: string }) => x.label)).toEqual(['sparse bf16 h16 ctx8192', 'sparse bf16 h128 ctx131072']);
      const row = result.sparseRows[0];
      expect(row.relErr).toBeLessThan(3e-2);
      expect(row.sparse.flops).toBe(2 * 16 * 2048 * (576 + 512));
      expect(row.dense.flops).toBe(2 * 16 * 8192 * (576 + 512));
      for (const part of [row.sparse, row.dense, row.indexer]) expect(part.roofline).toBeGreaterThan(0);
      expect(result.sparseRuns).toHaveLength(1);
      expect(result.sparseRuns[0].machine.date).toBe(row.run);
      expect(result.sparseRuns[0].machine.loadBefore).toMatch(/^[\d.]+ [\d.]+ [\d.]+$/);
      // The stored table: its other tables and notes kept, the stale sparse table replaced by both rows and the run's line.
      expect(result.table).toMatch(line);
      expect(result.table).toContain('| bf16 | 16 |');
      expect(result.table).toContain('note: kept');
      expect(result.table).not.toContain('stale');
      expect(result.table).toMatch(/^\| bf16, fp8 index keys \| 128 \| 131072 \| 1\.00 \(0\.50\) \| 2\.00 \(0\.50\) \| 3\.00 \(33%\) \| 9\.00 \(0\.50\) \| 3\.00x \/ 4\.50x \|$/m);
      expect(result.table).toMatch(/^Sparse rows measured .* in their own run .* load average /m);
      expect(result.table.indexOf('| sparse decode')).toBeLessThan(result.table.indexOf('targets:'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
