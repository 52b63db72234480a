// The abuse run: random interleavings of operations, graph replays, disposes, detached and transferred buffers,
// stream disposal and Worker terminations on several streams of every backend here, for MLA_ABUSE_SECONDS (60 by
// default; longer by setting it), in a child process: it must survive, every job whose inputs were left alone must
// match the reference, and an abused one may only end in an MlaError. MLA_TEST_SEED replays a run.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import { suiteBackends, testSeed } from '../helpers.js';

const seed = testSeed('abuse');
const seconds = Number(process.env.MLA_ABUSE_SECONDS ?? 60);
const backendsHere = suiteBackends().filter((b) => b.available && b.name !== 'cuda').map((b) => b.name);

it(`survives ${seconds} s of random abuse on ${backendsHere.join(' and ')}, and every result left alone matches the reference`, () => {
  const script = path.join(__dirname, 'lifetime', 'abuse.mjs');
  const r = spawnSync(process.execPath, ['--expose-gc', script], {
    cwd: path.join(__dirname, '..', '..'),
    encoding: 'utf8',
    env: { ...process.env, LT_SECONDS: String(seconds), LT_SEED: String(seed), LT_BACKENDS: backendsHere.join(',') },
    timeout: (seconds + 240) * 1000,
  });
  const said = `abuse run (seed ${seed}) ended with status ${r.status}, signal ${r.signal}\n${r.stderr.slice(-4000)}`;
  expect(r.signal, said).toBeNull();
  expect(r.status, said).toBe(0);
  expect(r.stderr, said).not.toMatch(/terminate called|AddressSanitizer|runtime error|mla-kernels: .*ignored/);
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  expect(line, said).toBeDefined();
  const result = JSON.parse(line!.slice('RESULT '.length));
  console.log(`[abuse] seed ${seed}: ${JSON.stringify(result.counts)}`);
  expect(result.failures, `seed ${seed}`).toEqual([]);
  const c = result.counts;
  // It did abuse, and checked enough jobs left alone.
  expect(c.clean).toBeGreaterThanOrEqual(10);
  for (const n of [c.abused, c.detached, c.disposed, c.streamsDisposed, c.workersStarted]) expect(n).toBeGreaterThan(0);
}, (seconds + 300) * 1000);
