// The leak check: many small operations (tensors made and dropped, device memory allocated and freed), then many
// Worker start/terminate cycles with work queued, in a child process. After warm-up (a tenth of each phase),
// memoryStats must be exactly where it was and RSS flat. In CI it is lean (a few thousand operations, 30 Workers);
// MLA_LEAK_FULL=1 runs the full counts (100,000 operations and 1,000 Workers per backend, some minutes).
// Under AddressSanitizer RSS measures its quarantine, not leaks: there only memoryStats is checked.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import { suiteBackends } from '../helpers.js';

const full = process.env.MLA_LEAK_FULL === '1';
const sanitized = /libasan/.test(process.env.LD_PRELOAD ?? '');
const backendsHere = suiteBackends().filter((b) => b.available && b.name !== 'cuda').map((b) => b.name);
const MiB = 2 ** 20;

interface Sample {
  rss: number;
  device: number;
}

for (const backend of backendsHere) {
  const ops = full ? 100_000 : backend === 'cpu' ? 5000 : 1000;
  const cycles = full ? 1000 : 30;
  it(`${backend}: ${ops} small operations and ${cycles} Worker start/terminate cycles leave memoryStats${sanitized ? '' : ' and RSS'} flat after warm-up`, () => {
    const r = spawnSync(process.execPath, ['--expose-gc', path.join(__dirname, 'lifetime', 'leak.mjs')], {
      cwd: path.join(__dirname, '..', '..'),
      encoding: 'utf8',
      env: { ...process.env, LT_BACKEND: backend, LT_OPS: String(ops), LT_WORKERS: String(cycles) },
      timeout: (full ? 3600 : 600) * 1000,
    });
    const said = `leak check on ${backend} ended with status ${r.status}, signal ${r.signal}\n${r.stderr.slice(-4000)}`;
    expect(r.status, said).toBe(0);
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    expect(line, said).toBeDefined();
    const result = JSON.parse(line!.slice('RESULT '.length)) as { opSamples: Sample[]; workerSamples: Sample[] };
    for (const [phase, samples, slack] of [['operations', result.opSamples, 24 * MiB], ['Workers', result.workerSamples, 32 * MiB]] as const) {
      expect(samples.length, phase).toBe(10);
      const mib = samples.map((s) => (s.rss / MiB).toFixed(1)).join(' ');
      console.log(`[leak] ${backend} ${phase}: RSS ${mib} MiB; device bytes in use ${samples.map((s) => s.device).join(' ')}`);
      // The first sample is the warm-up's end: device memory is back exactly there at every later one.
      for (const s of samples.slice(1)) expect(s.device, `${phase}: device bytes in use`).toBe(samples[0].device);
      if (!sanitized) expect(Math.max(...samples.slice(2).map((s) => s.rss)) - samples[1].rss, `${phase}: RSS growth after warm-up (MiB: ${mib})`).toBeLessThan(slack);
    }
  }, (full ? 3600 : 900) * 1000);
}
