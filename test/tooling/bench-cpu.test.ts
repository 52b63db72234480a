// `npm run bench` end to end on one small row of the quick grid: it must print the table, the targets lines and
// write its JSON and chart, with every installed peer checked against our output before it is timed (the script
// throws when a peer disagrees). Speeds are not asserted: they live in the benchmark, not in tests.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hasOnnxRuntime, REL_BOUND } from '../helpers.js';

const root = path.resolve(__dirname, '..', '..');
const hasOrt = hasOnnxRuntime();

describe('bench/cpu.mjs', () => {
  it('prints the table, the targets and writes its results for one row', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mla-bench-'));
    try {
      const label = 'bf16 h16 q1 b1 ctx512';
      const r = spawnSync(process.execPath, ['bench/cpu.mjs', '--quick', '--rows', `^${label}$`, '--results', dir], { cwd: root, encoding: 'utf8', timeout: 240_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^\| bf16 \| 16 \| 1 \| 1 \| 512 \| [\d.]+ \|/m);
      expect(r.stdout).toMatch(/^targets: decode batch>=8/m);
      expect(r.stdout).toMatch(/^ +never slower than a peer: /m);
      expect(r.stdout).toMatch(/append >=0\.9 of copy bandwidth/);
      const files = readdirSync(dir);
      const json = files.find((f) => /^cpu-rows-.*\.json$/.test(f));
      expect(json, files.join(', ')).toBeDefined();
      expect(files).toContain(json!.replace(/\.json$/, '.svg'));
      const result = JSON.parse(readFileSync(path.join(dir, json!), 'utf8'));
      expect(result.rows).toHaveLength(1);
      const row = result.rows[0];
      expect(row.roofline).toBeGreaterThan(0);
      expect(row.adjacent.roofline).toBeGreaterThan(0);
      // The reference runs on rows this small; onnxruntime wherever it is installed (a devDependency).
      expect(row.peers.reference.relErr).toBeLessThan(REL_BOUND.bf16);
      if (hasOrt) expect(row.peers.onnxruntime.relErr).toBeLessThan(REL_BOUND.bf16);
      for (const p of Object.values(row.peers) as { roofline: number; speedup: number }[]) expect(p.roofline).toBeCloseTo(row.roofline / p.speedup, 6);
      // --rows picks append rows by their labels too ("append bf16"): none here (test/tooling/bench-append.test.ts).
      expect(result.appendRows).toEqual([]);
      // The chart is Vega's SVG, with a panel per dtype × heads.
      expect(readFileSync(path.join(dir, json!.replace(/\.json$/, '.svg')), 'utf8')).toMatch(/^<svg[^>]*>.*bf16, 16 heads/s);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
