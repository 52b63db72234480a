#!/usr/bin/env node
// The install tests (npm run test:install; a step of npm test): what a user gets from `npm install mla-kernels`.
//   1. npm pack (prepack: dist/ and the prebuild); the tarball holds dist/, prebuilds/, csrc/, docs/*.md,
//      CMakeLists.txt, binding.gyp, README.md, package.json and nothing else.
//   2. A new project installs the tarball with a PATH that has node, npm and sh only (no compiler, make, python,
//      cmake or nvcc): the prebuild is used as is. A small decode from TypeScript (tsc against the installed
//      types), from JavaScript (ESM) and from CommonJS (import(); require() is refused: the package is ESM-only)
//      matches mla-kernels/reference, and `npx mla-kernels info` names the prebuild.
//   3. Another project installs the tarball without prebuilds/ (a platform with no prebuild) with a PATH that has
//      a C++ compiler, make and python3 but no cmake or nvcc: node-gyp builds the CPU addon, which gives the same
//      result.
//   4. `npm rebuild mla-kernels --build-from-source` in the first project rebuilds it with node-gyp, and
//      `npx --yes cmake-js rebuild` in its package folder builds the full addon (CUDA when nvcc is found; here for
//      sm_80 only, MLA_CUDA_ARCHS=80, to keep it short), both as the README says; the second needs cmake and is
//      skipped (with a note) without it.
// The npm registry is the only network use (the package's dependencies, @types/node, cmake-js); npm's cache makes
// repeats fast. Prints each check, writes test/.tmp/install.json and ends with "N passed, N failed".
// MLA_INSTALL_TEST_KEEP=1 keeps the temporary projects.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pack } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..', '..');
const require = createRequire(import.meta.url);
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
const platformDir = `${process.platform}-${process.arch}`;
const prebuildName = `${pkg.name}.napi.node`;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'mla-install-'));
const started = Date.now();

const checks = [];
function check(name, ok, detail = '') {
  checks.push({ name, ok: !!ok, detail });
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` — ${detail}` : ''}`);
  return !!ok;
}
const mb = (bytes) => `${(bytes / 2 ** 20).toFixed(2)} MB`;

// The environment of the user's shell: ours without npm's script variables (npm test runs us), MLA_* (an
// MLA_ADDON_PATH would bypass the installed addon), compiler settings and sanitizer preloads.
function userEnv(pathDirs, extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env))
    if (!/^(npm_|NPM_|MLA_|PREBUILDS_ONLY|CC$|CXX$|CUDA|LD_PRELOAD|ASAN_|UBSAN_|NODE_OPTIONS|VITEST|PATH$)/.test(k)) env[k] = v;
  return { ...env, PATH: pathDirs.join(path.delimiter), ...extra };
}

function sh(cmd, args, opts) {
  const t = Date.now();
  console.log(`\n$ ${[cmd, ...args].join(' ')}${opts.cwd ? `   (in ${opts.cwd})` : ''}`);
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 2 ** 20, ...opts });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (!opts.quiet || r.status !== 0) process.stdout.write(out.length > 6000 ? `…${out.slice(-6000)}` : out);
  console.log(`  (exit ${r.status ?? r.signal}, ${((Date.now() - t) / 1000).toFixed(1)} s)`);
  return { status: r.status, stdout: r.stdout ?? '', out };
}

function which(name) {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const p = path.join(dir, name);
    try {
      if (statSync(p).isFile()) return p;
    } catch {}
  }
  return null;
}

// A folder of symlinks: the only programs a PATH made of it can run.
function binDir(name, programs) {
  const dir = path.join(tmp, name);
  mkdirSync(dir);
  for (const [prog, target] of Object.entries(programs)) if (target) symlinkSync(target, path.join(dir, prog));
  return dir;
}

// ---- 1. pack -------------------------------------------------------------------------------------------------
const packed = pack(root, tmp);
let tarball = null;
let files = [];
if (check('npm pack (prepack: tsc, prebuild)', packed.status === 0)) {
  const lines = packed.stdout.split('\n'); // npm pack --json: the JSON array is the last thing printed
  const info = JSON.parse(lines.slice(lines.lastIndexOf('[')).join('\n'))[0];
  tarball = path.join(tmp, info.filename);
  files = info.files.map((f) => f.path);
  const prebuild = info.files.find((f) => f.path === `prebuilds/${platformDir}/${prebuildName}`);
  const allowed = (f) =>
    ['package.json', 'README.md', 'LICENSE', 'CMakeLists.txt', 'binding.gyp', 'csrc/kernels/architectures.txt'].includes(f) ||
    /^dist\/.+\.(js|d\.ts)$/.test(f) || /^docs\/[^/]+\.md$/.test(f) || /^csrc\/.+\.(cc|h|cu|cuh|inl|gypi)$/.test(f) || /^prebuilds\/[a-z0-9]+-[a-z0-9+]+\/[^/]+\.node$/.test(f);
  const stray = files.filter((f) => !allowed(f));
  check('the tarball holds only dist/ (JS, types), prebuilds/, csrc/, docs/*.md, CMakeLists.txt, binding.gyp, README, package.json', stray.length === 0, stray.join(', '));
  const gypi = readFileSync(path.join(root, 'csrc', 'sources.gypi'), 'utf8').match(/csrc\/[A-Za-z0-9_/]+\.cc/g) ?? [];
  const needed = ['dist/index.js', 'dist/index.d.ts', 'dist/reference.js', 'dist/reference.d.ts', 'dist/cli.js', 'docs/lifetime.md', 'docs/prefill.md', 'CMakeLists.txt', 'binding.gyp', 'csrc/sources.gypi', ...gypi];
  const missing = needed.filter((f) => !files.includes(f));
  check('the tarball has the entry points, both build files and every source of csrc/sources.gypi', missing.length === 0, missing.join(', '));
  check(`the tarball has prebuilds/${platformDir}/${prebuildName}, under 30 MB`, prebuild && prebuild.size < 30 * 2 ** 20, prebuild ? mb(prebuild.size) : 'missing');
  console.log(`\ntarball ${info.filename}: ${mb(info.size)} packed, ${mb(info.unpackedSize)} unpacked, ${info.files.length} files; prebuild ${prebuild ? mb(prebuild.size) : 'missing'}`);
}

// ---- the two PATHs ---------------------------------------------------------------------------------------------
const npmCli = which('npm') && realpathSync(which('npm'));
const npxCli = which('npx') && realpathSync(which('npx'));
// npm runs scripts with sh; a shell is all it needs besides node.
const noCompiler = binDir('bin-node-only', { node: process.execPath, npm: npmCli, npx: npxCli, sh: realpathSync('/bin/sh') });
const python = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).stdout?.trim();
// With a compiler: every program of our PATH but cmake and the CUDA toolkit, so node-gyp finds g++, make, python3
// and the shell tools its Makefile uses.
const withCompiler = path.join(tmp, 'bin-compiler');
mkdirSync(withCompiler);
for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
  let names = [];
  try {
    names = readdirSync(dir);
  } catch {}
  for (const n of names)
    if (!/^(c?cmake|cpack|ctest|nvcc|ptxas|nvlink|fatbinary|cudafe\+\+|cuobjdump|nvdisasm|python3?)$/.test(n) && !existsSync(path.join(withCompiler, n)))
      symlinkSync(path.join(dir, n), path.join(withCompiler, n));
}
if (python) symlinkSync(python, path.join(withCompiler, 'python3'));
const tsc = require.resolve('typescript/bin/tsc');

function newProject(name) {
  const dir = path.join(tmp, name);
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, private: true, type: 'module' }, null, 2));
  return dir;
}

// Runs the consumers in a project; returns the JS result (for comparison across installs).
function consumers(dir, pathDirs, expectAddon, label) {
  const env = userEnv(pathDirs);
  const parse = (r) => {
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    return line ? JSON.parse(line.slice(7)) : null;
  };
  copyFileSync(path.join(here, 'decode-check.mjs'), path.join(dir, 'decode-check.mjs'));
  const js = parse(sh('node', ['decode-check.mjs'], { cwd: dir, env, quiet: true }));
  check(`${label}: ESM JavaScript import runs a decode matching the reference`, js && js.relErr < 1e-5, js ? `rel. error ${js.relErr.toExponential(2)}` : 'no result');
  check(`${label}: info() names the addon in use (${expectAddon})`, js && js.info.addon.includes(expectAddon), js?.info.addon);

  mkdirSync(path.join(dir, 'src'), { recursive: true });
  copyFileSync(path.join(here, 'decode-check.ts'), path.join(dir, 'src', 'decode-check.ts'));
  writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, outDir: 'out', rootDir: 'src', types: ['node'] },
    include: ['src'],
  }, null, 2));
  const built = sh('node', [tsc, '-p', 'tsconfig.json'], { cwd: dir, env });
  check(`${label}: TypeScript compiles against the installed types (strict, NodeNext)`, built.status === 0);
  const ts = built.status === 0 ? parse(sh('node', ['out/decode-check.js'], { cwd: dir, env, quiet: true })) : null;
  check(`${label}: the compiled TypeScript runs the same decode`, ts && ts.relErr < 1e-5 && js && ts.out.every((v, i) => v === js.out[i]), ts ? `rel. error ${ts.relErr.toExponential(2)}` : 'no result');

  copyFileSync(path.join(here, 'commonjs.cjs'), path.join(dir, 'commonjs.cjs'));
  const cjs = parse(sh('node', ['commonjs.cjs'], { cwd: dir, env, quiet: true }));
  check(`${label}: CommonJS: require() is refused (ESM-only), import() works`,
    cjs && ['ERR_PACKAGE_PATH_NOT_EXPORTED', 'ERR_REQUIRE_ESM'].includes(cjs.requireError) && cjs.importWorks, cjs ? `require: ${cjs.requireError}` : 'no result');

  const cli = sh('npx', ['mla-kernels', 'info'], { cwd: dir, env });
  check(`${label}: npx mla-kernels info names the version and the addon`, cli.status === 0 && cli.stdout.includes(`mla-kernels ${pkg.version}`) && cli.stdout.includes(expectAddon));
  return js;
}

// ---- 2. install with the prebuild, no compiler --------------------------------------------------------------
let prebuilt = null;
const installArgs = ['install', '--no-audit', '--no-fund', '--foreground-scripts'];
if (tarball) {
  const app = newProject('app-prebuild');
  const r = sh('npm', [...installArgs, tarball, '@types/node@20'], { cwd: app, env: userEnv([noCompiler]) });
  const installed = path.join(app, 'node_modules', pkg.name);
  check('prebuild: npm install of the tarball succeeds with node, npm and sh alone on PATH', r.status === 0);
  check('prebuild: nothing was compiled (no build/ in the installed package)', r.status === 0 && !existsSync(path.join(installed, 'build')));
  if (r.status === 0) prebuilt = consumers(app, [noCompiler], `prebuilds/${platformDir}/${prebuildName}`, 'prebuild');

  // ---- 4. forced source builds, as the README says -----------------------------------------------------------
  if (r.status === 0) {
    const rebuild = sh('npm', ['rebuild', pkg.name, '--build-from-source', '--foreground-scripts'], { cwd: app, env: userEnv([withCompiler]) });
    const gypBuilt = existsSync(path.join(installed, 'build', 'Release', 'mla_kernels.node'));
    check('npm rebuild mla-kernels --build-from-source builds the CPU addon with node-gyp', rebuild.status === 0 && gypBuilt);
    if (gypBuilt) {
      const info = sh('npx', ['mla-kernels', 'info'], { cwd: app, env: userEnv([noCompiler]) });
      check('  … and info names build/Release (node-gyp)', info.status === 0 && /build\/Release\/mla_kernels\.node/.test(info.stdout) && /node-gyp/.test(info.stdout));
    }
    const cmake = which('cmake');
    if (!cmake) console.log('\nnote: no cmake on this machine; `npx --yes cmake-js rebuild` (the CUDA source build) is not tested');
    else {
      const hasNvcc = !!which('nvcc') || existsSync('/usr/local/cuda/bin/nvcc');
      const full = sh('npx', ['--yes', 'cmake-js', 'rebuild'], { cwd: installed, env: userEnv((process.env.PATH ?? '').split(path.delimiter), { MLA_CUDA_ARCHS: '80' }), quiet: true });
      check(`npx --yes cmake-js rebuild (in node_modules/${pkg.name}) builds the full addon${hasNvcc ? ' with CUDA (sm_80)' : ''}`, full.status === 0 && existsSync(path.join(installed, 'build', 'Release', 'mla_kernels.node')));
      if (full.status === 0) {
        const js = JSON.parse(sh('node', ['-e', `import('${pkg.name}').then(m => console.log(JSON.stringify(m.info())))`], { cwd: app, env: userEnv([noCompiler]), quiet: true }).stdout.trim() || 'null');
        const cuda = js?.backends.find((b) => b.name === 'cuda');
        check('  … and info names it (cmake-js), CUDA built when nvcc is found', js && js.addonBuild === 'cmake-js' && (!hasNvcc || (cuda && !/^not built/.test(cuda.reason))), js ? `${js.addonBuild}; cuda: ${cuda?.reason}` : 'no info');
      }
    }
  }
}

// ---- 3. install without a prebuild: node-gyp builds the CPU addon -----------------------------------------------
if (tarball) {
  const unpacked = path.join(tmp, 'repack');
  mkdirSync(unpacked);
  execFileSync('tar', ['xzf', tarball, '-C', unpacked]);
  rmSync(path.join(unpacked, 'package', 'prebuilds'), { recursive: true, force: true });
  const bare = path.join(tmp, `${pkg.name}-${pkg.version}-noprebuild.tgz`);
  execFileSync('tar', ['czf', bare, '-C', unpacked, 'package']);
  const app = newProject('app-source');
  const r = sh('npm', [...installArgs, bare, '@types/node@20'], { cwd: app, env: userEnv([withCompiler]) });
  const installed = path.join(app, 'node_modules', pkg.name);
  check('no prebuild: npm install builds the CPU addon from binding.gyp with node-gyp (no cmake, no nvcc on PATH)',
    r.status === 0 && existsSync(path.join(installed, 'build', 'Release', 'mla_kernels.node')) && !existsSync(path.join(installed, 'prebuilds')));
  if (r.status === 0) {
    const js = consumers(app, [noCompiler], 'build/Release/mla_kernels.node', 'no prebuild');
    if (prebuilt && js) {
      const maxDiff = js.out.reduce((m, v, i) => Math.max(m, Math.abs(v - prebuilt.out[i])), 0);
      const lseDiff = js.lse.reduce((m, v, i) => Math.max(m, Math.abs(v - prebuilt.lse[i])), 0);
      check('no prebuild: the source-built addon gives the prebuild\'s result', maxDiff <= 1e-6 && lseDiff <= 1e-6,
        maxDiff === 0 && lseDiff === 0 ? 'bit-identical' : `max |Δout| ${maxDiff.toExponential(2)}, max |Δlse| ${lseDiff.toExponential(2)}`);
      const cuda = js.info.backends.find((b) => b.name === 'cuda');
      check('no prebuild: the node-gyp addon is CPU-only (cuda: not built)', cuda && /^not built/.test(cuda.reason), cuda?.reason);
    }
  }
}

const passed = checks.filter((c) => c.ok).length;
const failed = checks.length - passed;
mkdirSync(path.join(root, 'test', '.tmp'), { recursive: true });
writeFileSync(path.join(root, 'test', '.tmp', 'install.json'), JSON.stringify({ passed, failed, seconds: (Date.now() - started) / 1000, checks }, null, 2));
if (failed === 0 && process.env.MLA_INSTALL_TEST_KEEP !== '1') rmSync(tmp, { recursive: true, force: true });
else console.log(`\nthe temporary projects are in ${tmp}`);
console.log(`\ninstall tests (${((Date.now() - started) / 1000).toFixed(0)} s): ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
