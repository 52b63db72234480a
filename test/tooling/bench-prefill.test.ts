// `npm run bench` on one prefill row of the quick grid: the prefill table (both forms of a layer's attention timed on
// the same weights and tokens, after the script checked them against each other and every installed peer against
// ours), the speed-up target line, and the row in the JSON. Speeds are not asserted: they live in the benchmark.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hasOnnxRuntime, REL_BOUND } from '../helpers.js';

const root = path.resolve(__dirname, '..', '..');
const hasOrt = hasOnnxRuntime();

describe('bench/cpu.mjs prefill rows', () => {
  it('prints the prefill table and target line and writes the row for one prompt', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mla-bench-prefill-'));
    try {
      const r = spawnSync(process.execPath, ['bench/cpu.mjs', '--quick', '--rows', '^prefill bf16 h16 n512$', '--results', dir], { cwd: root, encoding: 'utf8', timeout: 240_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^\| bf16 \| 16 \| 512 \| [\d.]+ \| [\d.]+ \| \d+ \|/m);
      expect(r.stdout).toMatch(/prefill speed-up over the decode path >=2x at 2048 tokens/);
      expect(r.stdout).not.toMatch(/^\| dtype \| heads \| qLen/m); // no decode row was asked for
      const json = readdirSync(dir).find((f) => /^cpu-rows-.*\.json$/.test(f));
      expect(json).toBeDefined();
      const result = JSON.parse(readFileSync(path.join(dir, json!), 'utf8'));
      expect(result.rows).toHaveLength(0);
      expect(result.prefillRows).toHaveLength(1);
      const row = result.prefillRows[0];
      expect(row.label).toBe('prefill bf16 h16 n512');
      expect(row.roofline).toBeGreaterThan(0);
      expect(row.flops).toBe(2 * 512 * 512 * 16 * 256 + 2 * 16 * ((512 * 513) / 2) * 320);
      // Both forms of the layer ran on the same data and agreed before they were timed.
      expect(row.decodePath.speedup).toBeGreaterThan(0);
      expect(row.decodePath.relErr).toBeLessThan(3 * REL_BOUND.bf16);
      if (hasOrt) expect(row.peers.onnxruntime.relErr).toBeLessThan(REL_BOUND.bf16);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
