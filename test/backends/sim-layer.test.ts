// The cuda-sim emulation layer's own tests: runs the self-test program built by sim.cmake (always with ASan +
// UBSan), one vitest test per entry of `mla_sim_selftest --list`:
//   pass   — a positive test (wrapper vs scalar definition, thread orders, traffic counters …): exit 0
//   detect — a deliberately wrong kernel that the layer must catch: exit 0 means it WAS caught
//   asan   — a deliberately wrong kernel that AddressSanitizer must catch: non-zero exit + its report on stderr
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function findSelftest(): { path?: string; tried: string[] } {
  const exe = process.platform === 'win32' ? 'mla_sim_selftest.exe' : 'mla_sim_selftest';
  const tried: string[] = [];
  if (process.env.MLA_SIM_SELFTEST) {
    tried.push(process.env.MLA_SIM_SELFTEST);
    if (existsSync(process.env.MLA_SIM_SELFTEST)) return { path: process.env.MLA_SIM_SELFTEST, tried };
  }
  const dirs = ['build-cmake', 'build-cmake/Release', 'build-cmake/Debug', 'build-cmake/bin', 'build-asan', 'build', 'build/Release'];
  if (process.env.MLA_ADDON_PATH) dirs.unshift(path.dirname(path.dirname(process.env.MLA_ADDON_PATH)));
  for (const d of dirs) {
    const p = path.resolve(root, d, exe);
    tried.push(p);
    if (existsSync(p)) return { path: p, tried };
  }
  return { tried };
}

const seed = process.env.MLA_SIM_SEED ?? process.env.MLA_TEST_SEED ?? String((Math.random() * 2 ** 32) >>> 0);
console.log(`[sim-layer] seed ${seed} (replay with MLA_SIM_SEED=${seed})`);

function runSelftest(bin: string, args: string[]) {
  const r = spawnSync(bin, args, {
    encoding: 'utf8',
    env: { ...process.env, MLA_SIM_SEED: seed },
    timeout: 60_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}

const found = findSelftest();

describe('cuda-sim layer (mla_sim_selftest)', () => {
  if (!found.path) {
    it('finds the self-test binary', () => {
      throw new Error(
        'mla_sim_selftest not found (it is built by the cmake-js build with MLA_CUDA_SIM=ON, see sim/sim.cmake); ' +
          `set MLA_SIM_SELFTEST or build it. Tried:\n  ${found.tried.join('\n  ')}`,
      );
    });
    return;
  }
  const bin = found.path;
  const list = runSelftest(bin, ['--list']);
  const entries = list.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const [name, kind, what] = l.split('\t');
      return { name, kind, what };
    });

  it('lists its tests', () => {
    expect(list.status, list.stderr).toBe(0);
    expect(entries.length).toBeGreaterThan(20);
    for (const kind of ['pass', 'detect', 'asan']) expect(entries.some((e) => e.kind === kind)).toBe(true);
    // The two cp.async pipeline bugs: reading a stage before its wait (poison) and refilling a stage other warps may
    // still read (write-after-read: the order-dependent landing time + run-ahead scheduling make the orders differ).
    const kinds = new Map(entries.map((e) => [e.name, e.kind]));
    expect(kinds.get('cp_async_no_wait')).toBe('detect');
    expect(kinds.get('cp_async_pipeline_war')).toBe('detect');
    expect(kinds.get('cp_async_pipeline')).toBe('pass');
    expect(kinds.get('cp_async_landing')).toBe('pass');
  });

  for (const e of entries) {
    if (e.kind === 'asan') {
      it(`${e.name} [caught by AddressSanitizer]: ${e.what}`, () => {
        const r = runSelftest(bin, ['--run', e.name]);
        const out = `${r.stdout}\n${r.stderr}`;
        expect(r.stdout, 'the out-of-bounds access went unreported').not.toContain('NOT DETECTED');
        expect(r.status, out).not.toBe(0);
        expect(r.stderr, out).toContain('AddressSanitizer');
        expect(r.stderr, out).toContain('heap-buffer-overflow');
        expect(r.stderr, out).toMatch(/bad_\w+_kernel/);
      });
    } else {
      const label = e.kind === 'detect' ? `${e.name} [deliberately wrong kernel caught]` : e.name;
      it(`${label}: ${e.what}`, () => {
        const r = runSelftest(bin, ['--run', e.name]);
        const out = `${r.stdout}\n${r.stderr}`;
        if (r.stdout.trim()) console.log(r.stdout.trim());
        expect(r.status, out).toBe(0);
        expect(r.stdout).toMatch(new RegExp(`^PASS ${e.name}\\b`, 'm'));
        expect(r.stderr, out).not.toContain('Sanitizer');
      });
    }
  }

  it('runs every pass/detect test in one process', () => {
    const r = runSelftest(bin, []);
    const out = `${r.stdout}\n${r.stderr}`;
    expect(r.status, out).toBe(0);
    expect(r.stdout).toMatch(/(\d+)\/\1 passed/);
    const rate = /fiber switches: .* = ([\d.]+) M switches\/s/.exec(r.stdout);
    if (rate) console.log(`[sim-layer] fiber switch rate: ${rate[1]} M switches/s (ASan+UBSan build)`);
  });
});
