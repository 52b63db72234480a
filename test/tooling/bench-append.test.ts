// `npm run bench` on one append row of the quick grid, as a `--rows '^append bf16$' --merge` run into a stored result of
// this machine type seeded with other rows, which must stay: the row's paired figure (append and the copy limit timed
// side by side, the median of their ratios), its bytes accounting, the append table and targets line rewritten.
// Speeds are not asserted: they live in the benchmark.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain .mjs modules of the benchmark, without types
import { resultKey } from '../../bench/cpu-results.mjs';
import { thisMachine } from './bench-machine.js';

const root = path.resolve(__dirname, '..', '..');

describe('bench/cpu.mjs append rows', () => {
  it('measures append beside the copy limit and merges the row into the stored result, keeping its other rows', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mla-bench-append-'));
    try {
      const machine = { ...thisMachine(), date: '2026-01-01T00:00:00.000Z' };
      const file = path.join(dir, `cpu-latest-${resultKey(machine)}.json`);
      const old = (dtype: string) => ({ dtype, tokens: 32768, ms: 2, bytesPerSec: 5e10, ofCopy: 0.5, ofCopyAdjacent: 0.6, stores: 'stream', streamMs: 2, regularMs: 3 });
      const table = ['header', '', '| dtype | ... |', '|---|', '| bf16 | 16 |', '', '| append | tokens | old |', '|---|', '| stale |', '',
        'targets: x', '          append >=0.9 of copy bandwidth: stale', 'note: kept'].join('\n');
      writeFileSync(file, JSON.stringify({ machine, quick: false, rows: [{ label: 'kept decode row' }], sparseRows: [], appendRows: [old('bf16'), old('f32')], table }));
      const r = spawnSync(process.execPath, ['bench/cpu.mjs', '--quick', '--no-peers', '--rows', '^append bf16$', '--merge', '--pairs', '2', '--results', dir], { cwd: root, encoding: 'utf8', timeout: 240_000 });
      expect(r.status, r.stderr).toBe(0);
      const line = /^\| bf16, interleaved RoPE \| 8192 \| [\d.]+ \| [\d.]+ \| [\d.]+ \([\d.]+–[\d.]+, 2 pairs\) \/ [\d.]+ \| [\d.]+ \| (stream|regular) \| [\d.]+ \/ [\d.]+ \|$/m;
      expect(r.stdout).toMatch(line);
      expect(readdirSync(dir).filter((f) => f.endsWith('.json'))).toEqual([path.basename(file)]);
      const result = JSON.parse(readFileSync(file, 'utf8'));
      expect(result.rows).toEqual([{ label: 'kept decode row' }]);
      expect(result.appendRows.map((a: { dtype: string }) => a.dtype)).toEqual(['bf16', 'f32']);
      expect(result.appendRows[1]).toEqual(old('f32'));
      const a = result.appendRows[0];
      // Rows read + written and the slot and position indices (DeepSeek's row: 576 bf16 elements).
      expect(a.bytes).toBe(2 * 8192 * 576 * 2 + 8192 * 8);
      expect(a.pairs).toHaveLength(2); // --pairs 2 (the default is 8)
      for (const p of a.pairs) {
        expect(p.appendMs).toBeGreaterThan(0);
        expect(p.copyBytesPerSec).toBeGreaterThan(0);
        expect(p.ratio).toBeCloseTo(a.bytes / (p.appendMs / 1e3) / p.copyBytesPerSec, 9);
      }
      const sorted = a.pairs.map((p: { ratio: number }) => p.ratio).sort((x: number, y: number) => x - y);
      expect(a.ofCopyPaired).toBeCloseTo((sorted[0] + sorted[1]) / 2, 12);
      expect(a.ofCopy).toBeGreaterThan(0);
      expect(result.appendRuns).toHaveLength(1);
      expect(result.appendRuns[0].machine.date).toBe(a.run);
      // The stored table: other tables and notes kept, the stale append table replaced by both rows, targets recomputed.
      expect(result.table).toMatch(line);
      expect(result.table).toMatch(/^\| f32, interleaved RoPE \| 32768 \| 2\.00 \| 50\.0 \| — \/ 0\.50 \| — \| stream \| 2\.00 \/ 3\.00 \|$/m);
      expect(result.table).toContain('| bf16 | 16 |');
      expect(result.table).toContain('note: kept');
      expect(result.table).not.toContain('stale');
      expect(result.table).toMatch(/^Append rows measured .* in their own run .* load average /m);
      expect(result.table).toMatch(new RegExp(`^ +append >=0\\.9 of copy bandwidth \\(median of append / copy measured beside it\\): \\d/2 met \\(bf16 ${a.ofCopyPaired.toFixed(2)}, f32 0\\.50 against the best copy sample of its run\\)$`, 'm'));
      expect(result.table.indexOf('| append |')).toBeLessThan(result.table.indexOf('targets:'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
