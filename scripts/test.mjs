#!/usr/bin/env node
// npm test: builds what the tests need, then runs
//   1. the whole vitest suite on the cmake-js build (cpu and cuda-sim backends, emulator self-tests; its CUDA backend
//      compiled for sm_90 alone, as no test runs device code: 4 and 5's prebuild compile every architecture),
//   2. the conformance suites (test/conformance/) again on the node-gyp build (binding.gyp), CPU only, proving both
//      source lists build the same addon,
//   3. the conformance suites and the cpu and cuda-sim backend suites again on an AddressSanitizer +
//      UndefinedBehaviorSanitizer build (the kernels' memcheck; cpu-isa's per-path children without the prefill
//      suite, MLA_ISA_PREFILL=0),
//   4. the static CUDA checks (nvcc -Xptxas -v for every architecture: spills, registers, shared memory), when nvcc
//      is installed,
//   5. the install tests (test/tooling/install/run.mjs): npm pack, then npm install of the tarball into new projects, with the
//      prebuild and no compiler on PATH, and without the prebuild (node-gyp builds the CPU addon),
//   6. the linux-arm64 install test (test/tooling/install/arm64.mjs): the tarball installed and run under qemu-user
//      by an arm64 Node (skipped, saying why, where the cross tools cannot be had),
// (5 and 6 share one npm pack), then names every failed test and check, and ends with one line "N passed, N failed". `npm test -- <files>` runs only step 1 on those files.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => path.join(root, 'node_modules', '.bin', name);
const extra = process.argv.slice(2); // e.g. a test file filter

function run(cmd, args, env = {}) {
  console.log(`\n$ ${[cmd, ...args].join(' ')}`);
  const started = Date.now();
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  // Each step's wall time, so a slow CI says where its minutes went.
  console.log(`(${path.basename(String(cmd))}${args[0] ? ' ' + path.basename(String(args[0])) : ''}: ${((Date.now() - started) / 1000).toFixed(0)} s)`);
  return r.status ?? 1;
}

function must(status, what) {
  if (status !== 0) {
    console.error(`\n${what} failed`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
}

function newestSource() {
  let newest = 0;
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  walk(path.join(root, 'csrc'));
  return Math.max(newest, statSync(path.join(root, 'binding.gyp')).mtimeMs);
}

must(run(bin('tsc'), ['-p', 'tsconfig.json']), 'TypeScript build');
// MLA_CUDA_ARCHS set by the caller wins.
must(run(process.execPath, ['scripts/build-native.mjs'], { MLA_CUDA_ARCHS: process.env.MLA_CUDA_ARCHS || '90' }), 'cmake-js build');

// npm install built build/Release with node-gyp (the install script); rebuild it if the sources changed since.
const gypAddon = path.join(root, 'build', 'Release', 'mla_kernels.node');
if (!existsSync(gypAddon) || statSync(gypAddon).mtimeMs < newestSource())
  must(run(bin('node-gyp'), ['rebuild'], { JOBS: 'max' }), 'node-gyp build');

const results = path.join(root, 'test', '.tmp');
mkdirSync(results, { recursive: true });

function vitest(label, env, files) {
  const json = path.join(results, `${label}.json`);
  const status = run(bin('vitest'), ['run', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`, ...files], env);
  if (!existsSync(json)) return { passed: 0, failed: 1, status, names: [`${label}: vitest wrote no ${path.relative(root, json)} (exit ${status})`] };
  const r = JSON.parse(readFileSync(json, 'utf8'));
  // A file that failed to load counts as a failure even when it ran no test.
  const broken = r.testResults.filter((f) => f.status === 'failed' && f.assertionResults.length === 0);
  const names = r.testResults.flatMap((f) => {
    const file = path.relative(root, f.name);
    if (broken.includes(f)) return [`${label}: ${file} (did not run: ${(f.message ?? '').split('\n')[0].slice(0, 200)})`];
    return f.assertionResults.filter((a) => a.status === 'failed').map((a) => `${label}: ${[file, ...a.ancestorTitles, a.title].join(' > ')}`);
  });
  return { passed: r.numPassedTests, failed: r.numFailedTests + broken.length, status, names, what: `${label} vitest` };
}

// MLA_ISA_CHOSEN_COVERED: cpu-isa leaves out the child of the SIMD path test/conformance/ runs on in the same run.
const full = vitest('cmake', { MLA_ADDON_PATH: path.join(root, 'build-cmake', 'Release', 'mla_kernels.node'), MLA_ISA_CHOSEN_COVERED: extra.length ? '0' : '1' }, extra);
const gyp = extra.length
  ? { passed: 0, failed: 0, status: 0 }
  : vitest('gyp', { MLA_ADDON_PATH: gypAddon, MLA_TEST_BACKENDS: 'cpu', MLA_ABUSE_SECONDS: '20' }, ['test/conformance/', 'test/lib/facts.test.ts']);

const none = { passed: 0, failed: 0, status: 0 };
let asan = none;
let staticCuda = none;
let install = none;
let installArm64 = none;
if (!extra.length) {
  // The sanitizers' runtimes go first into node (which is not instrumented itself).
  const gcc = (lib) => spawnSync('gcc', [`-print-file-name=${lib}`], { encoding: 'utf8' }).stdout.trim();
  if (run(process.execPath, ['scripts/build-native.mjs'], { MLA_SANITIZE: '1', MLA_CUDA: 'OFF' }) !== 0) asan = { passed: 0, failed: 1, status: 1, names: ['asan: the ASan+UBSan build (scripts/build-native.mjs, MLA_SANITIZE=1)'] };
  else
    asan = vitest('asan', {
      MLA_ADDON_PATH: path.join(root, 'build-asan', 'RelWithDebInfo', 'mla_kernels.node'),
      MLA_TEST_BACKENDS: 'cpu,cuda-sim',
      LD_PRELOAD: `${gcc('libasan.so')} ${gcc('libubsan.so')}`,
      ASAN_OPTIONS: 'detect_leaks=0',
      MLA_ISA_PREFILL: '0',
      MLA_ISA_CHOSEN_COVERED: '1',
    }, ['test/conformance/', 'test/backends/cuda-sim.test.ts', 'test/backends/cpu-isa.test.ts']);
  const status = run(process.execPath, ['scripts/check-cuda.mjs'], { MLA_ADDON_PATH: path.join(root, 'build-cmake', 'Release', 'mla_kernels.node') });
  staticCuda = status === 0 ? { passed: 1, failed: 0, status } : { passed: 0, failed: 1, status, names: ['static CUDA checks (scripts/check-cuda.mjs): see its problems above'] };
  // One npm pack (its prepack builds every prebuild: minutes) for both install tests; each packs itself without it.
  const packDir = path.join(results, 'pack');
  rmSync(packDir, { recursive: true, force: true });
  mkdirSync(packDir, { recursive: true });
  console.log(`\n$ npm pack --json --pack-destination ${packDir}`);
  const packed = spawnSync('npm', ['pack', '--json', '--pack-destination', packDir], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 2 ** 20 });
  process.stderr.write(packed.stderr ?? '');
  // npm's warnings too: the install test checks that npm warns nothing in the clone.
  writeFileSync(path.join(packDir, 'pack.stderr'), packed.stderr ?? '');
  const packEnv = {};
  if (packed.status === 0) {
    const lines = packed.stdout.split('\n'); // the JSON array is the last thing printed (after prepack's output)
    writeFileSync(path.join(packDir, 'pack.json'), lines.slice(lines.lastIndexOf('[')).join('\n'));
    packEnv.MLA_INSTALL_PACKED = path.join(packDir, 'pack.json');
  } else process.stdout.write(packed.stdout.slice(-6000));
  install = installStep('install.json', 'test/tooling/install/run.mjs', packEnv);
  installArm64 = installStep('install-arm64.json', 'test/tooling/install/arm64.mjs', packEnv);
}

function installStep(json, script, env) {
  const file = path.join(results, json);
  rmSync(file, { force: true });
  const status = run(process.execPath, [script], env);
  if (!existsSync(file)) return { passed: 0, failed: 1, status, names: [`${script}: wrote no ${json} (exit ${status})`] };
  const r = JSON.parse(readFileSync(file, 'utf8'));
  return { ...r, status, what: script, names: (r.checks ?? []).filter((c) => !c.ok).map((c) => `${script}: ${c.name}${c.detail ? ` — ${c.detail}` : ''}`) };
}

const parts = [full, gyp, asan, install, installArm64];
const passed = parts.reduce((n, p) => n + p.passed, staticCuda.passed);
const failed = parts.reduce((n, p) => n + p.failed + (p.status !== 0 && p.failed === 0 ? 1 : 0), staticCuda.failed);
console.log(`\ncmake-js build: ${full.passed} passed, ${full.failed} failed; node-gyp build (CPU suite): ${gyp.passed} passed, ${gyp.failed} failed`);
console.log(`ASan+UBSan (cpu and cuda-sim suites): ${asan.passed} passed, ${asan.failed} failed; static CUDA checks: ${staticCuda.failed ? 'failed' : staticCuda.passed ? 'passed' : 'not run'}`);
console.log(`install tests (packed tarball): ${install.passed} passed, ${install.failed} failed`);
console.log(`linux-arm64 install tests (under qemu): ${installArm64.skipped ? `skipped: ${installArm64.skipped}` : `${installArm64.passed} passed, ${installArm64.failed} failed`}`);
// What failed, by name, so a red CI's tail says it without scrolling back.
const failedNames = [...parts, staticCuda].flatMap((p) => p.names?.length ? p.names : p.failed || p.status !== 0 ? [`${p.what}: failed (exit ${p.status}), no test named`] : []);
if (failedNames.length) console.log(`\nfailed:\n${failedNames.map((n) => `  ${n}`).join('\n')}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
