// docs/models.md: its "Running a file" commands run as written (npm start -- … as node demo/dist/main.js …, demo/
// compiled once), in order, each exiting 0 with what it says it does.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';

const root = path.join(__dirname, '..', '..');

function commands(): string[] {
  const doc = readFileSync(path.join(root, 'docs', 'models.md'), 'utf8');
  const block = /<!-- models:run -->\s*```sh\n([\s\S]*?)```/.exec(doc);
  expect(block, 'docs/models.md has no models:run block').not.toBeNull();
  return block![1].split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter(Boolean);
}

/** A shell line's words, with "double-quoted" words kept whole. */
function words(line: string): string[] {
  return [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]);
}

// --prompt tokenizes through node-llama-cpp: that line is left out only where its binary cannot load.
const probe = spawnSync(process.execPath, [path.join(root, 'bench', 'llama-peer.mjs'), 'probe'], { encoding: 'utf8', timeout: 120_000 });
const llamaLoads = /^RESULT \{"ok":true/m.test(probe.stdout ?? '');

describe('docs/models.md', () => {
  it('the commands of "Running a file" run as written', () => {
    const tsc = spawnSync(path.join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'demo/tsconfig.json'], { cwd: root, encoding: 'utf8' });
    expect(tsc.status, tsc.stdout + tsc.stderr).toBe(0);
    const lines = commands();
    expect(lines.length).toBeGreaterThanOrEqual(4);
    const written: string[] = [];
    onTestFinished(() => {
      for (const f of written) rmSync(f, { force: true });
    });
    for (const line of lines) {
      const w = words(line);
      if (w.includes('--prompt') && !llamaLoads) {
        console.log(`[models-doc.test.ts] not run (node-llama-cpp's binary does not load here: ${(probe.stdout ?? '').trim() || probe.stderr?.slice(-300)}): ${line}`);
        continue;
      }
      expect(w.slice(0, 3), line).toEqual(['npm', 'start', '--']);
      const r = spawnSync(process.execPath, [path.join(root, 'demo', 'dist', 'main.js'), ...w.slice(3), '--no-progress'], { cwd: root, encoding: 'utf8', env: process.env, timeout: 240_000 });
      expect(r.status, `${line}\n${r.stdout}\n${r.stderr}`).toBe(0);
      if (w.includes('--save-gguf')) {
        written.push(w[w.indexOf('--save-gguf') + 1]);
        expect(r.stdout, line).toMatch(/^wrote \S+\.gguf: deepseek2 GGUF/m);
      }
      else {
        expect(r.stdout, line).toMatch(/weights of .*\.gguf/);
        expect(r.stdout, line).toContain('generated (token ids, greedy):');
        if (!w.includes('--no-mha-compare')) expect(r.stdout, line).toMatch(/MLA vs MHA logits: .*: PASS/);
        if (w.includes('--prompt')) expect(r.stdout, line).toContain('as text:');
        if (w.includes('--tokens')) expect(r.stdout, line).toContain(`prompts [${w[w.indexOf('--tokens') + 1].split(',').length}]`);
      }
    }
  }, 600_000);
});
