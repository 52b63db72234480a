// `npm run bench:model` end to end on a small grid: it writes its GGUF, runs llama.cpp in its child and ours, and
// prints the table, the memory and where a step's time goes, and writes its JSON. Speeds are not asserted: they live in
// the benchmark. Skipped only where node-llama-cpp's binary cannot load (the reason printed).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '..', '..');
const probe = spawnSync(process.execPath, [path.join(root, 'bench', 'llama-peer.mjs'), 'probe'], { encoding: 'utf8', timeout: 120_000 });
const ok = /^RESULT \{"ok":true/m.test(probe.stdout ?? '');
if (!ok) console.log(`[bench-model.test.ts] skipped: node-llama-cpp's binary does not load here: ${(probe.stdout ?? '').trim() || probe.stderr?.slice(-500)}`);

describe.skipIf(!ok)('bench/model.mjs', () => {
  it('runs the demo model at one context and two batches against llama.cpp and reports every column', () => {
    const tsc = spawnSync(path.join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'demo/tsconfig.json'], { cwd: root, encoding: 'utf8' });
    expect(tsc.status, tsc.stdout + tsc.stderr).toBe(0);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mla-bench-model-test-'));
    try {
      const r = spawnSync(process.execPath, ['bench/model.mjs', '--quick', '--models', 'demo', '--contexts', '64', '--batches', '1,2', '--steps', '2', '--warmup', '1', '--threads', '1', '--results', dir], {
        cwd: root,
        encoding: 'utf8',
        env: process.env,
        timeout: 300_000,
      });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^bench:model on .*; load average [\d. ]+$/m);
      expect(r.stdout).toMatch(/^\| 64 \| 1 \| [\d.]+ \| [\d.]+ \| [\d.]+× \|/m);
      expect(r.stdout).toMatch(/^\| 64 \| 2 \| /m);
      // Both cache the latent row: 8 layers × (128 + 16) × 2 bytes per token (llama.cpp's from the MiB it logs, ±1%).
      const memory = /memory: ours [\d.]+ MiB of weights .* cache (\d+) B\/token .* KV (\d+) B\/token/.exec(r.stdout);
      expect(memory, r.stdout).not.toBeNull();
      expect(Number(memory![1])).toBe(2304);
      expect(Math.abs(Number(memory![2]) - 2304)).toBeLessThan(23);
      expect(r.stdout).toMatch(/where a step goes at context 64, batch 2: ours [\d.]+ ms = attention kernels/);
      const json = readdirSync(dir).find((f) => /^model-quick-.*\.json$/.test(f));
      expect(json).toBeDefined();
      const result = JSON.parse(readFileSync(path.join(dir, json!), 'utf8'));
      const m = result.models.demo;
      // Context 1 (the subtraction's base) and 64, batches 1 and 2, for both.
      expect(m.ours.rows.map((x: { context: number; batch: number }) => `${x.context}/${x.batch}`)).toEqual(['1/1', '1/2', '64/1', '64/2']);
      expect(m.llama.on.rows.map((x: { context: number; batch: number }) => `${x.context}/${x.batch}`)).toEqual(['1/1', '1/2', '64/1', '64/2']);
      for (const row of [...m.ours.rows, ...m.llama.on.rows]) {
        expect(row.stepMs).toHaveLength(2);
        expect(row.medianMs).toBeGreaterThan(0);
      }
      expect(m.llama.on.prefills.map((p: { context: number }) => p.context)).toEqual([1, 64]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 360_000);
});
