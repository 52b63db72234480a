// `npm run bench` on the sparse row of the quick grid: the lightning indexer, the sparse decode over its top-2048 and
// the dense decode of the same context, timed after the sparse output was checked against the reference; the row
// in the table and the JSON. Speeds are not asserted: they live in the benchmark.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '..', '..');

describe('bench/cpu.mjs sparse rows', () => {
  it('prints the sparse table and writes the row for one context', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mla-bench-sparse-'));
    try {
      const r = spawnSync(process.execPath, ['bench/cpu.mjs', '--quick', '--no-peers', '--rows', '^sparse bf16 h16 ctx8192$', '--results', dir], { cwd: root, encoding: 'utf8', timeout: 240_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^\| bf16, fp8 index keys \| 16 \| 8192 \| [\d.]+ \([\d.]+\) \| [\d.]+ \([\d.]+\) \| [\d.]+ \| [\d.]+ \([\d.]+\) \| [\d.]+x \|/m);
      const json = readdirSync(dir).find((f) => /^cpu-rows-.*\.json$/.test(f));
      const result = JSON.parse(readFileSync(path.join(dir, json!), 'utf8'));
      expect(result.sparseRows).toHaveLength(1);
      const row = result.sparseRows[0];
      expect(row.label).toBe('sparse bf16 h16 ctx8192');
      expect(row.relErr).toBeLessThan(3e-2);
      expect(row.sparse.flops).toBe(2 * 16 * 2048 * (576 + 512));
      expect(row.dense.flops).toBe(2 * 16 * 8192 * (576 + 512));
      for (const part of [row.sparse, row.dense, row.indexer]) expect(part.roofline).toBeGreaterThan(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
