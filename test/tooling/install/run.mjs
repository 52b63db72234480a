#!/usr/bin/env node
// The install tests (npm run test:install; a step of npm test): what a user gets from `npm install mla-kernels`.
//   1. npm pack (prepack: dist/, the prebuilds, docs/api/), or the tarball npm test packed; the tarball holds dist/, prebuilds/, csrc/, docs/,
//      CMakeLists.txt, binding.gyp, README.md, package.json and nothing else.
//   2. A new project installs the tarball with a PATH that has node, npm and sh only (no compiler, make, python,
//      cmake or nvcc): the prebuild is used as is. A small decode from TypeScript (tsc against the installed
//      types, in an ES module project and in a CommonJS one), from JavaScript (ESM) and from CommonJS (require())
//      matches mla-kernels/reference, and `npx mla-kernels info` names the prebuild. The install commands are the
//      README's (its block marked run-by this file), the CLI answers --help and --version, and the example of
//      memory_estimator_mla.py runs verbatim; the published manifest has no development lifecycle script and npm
//      lists no `prepare` to approve.
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
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pack, resultLine, sh, userEnv, which, writeJsConsumer } from './common.mjs';

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

/** The command lines of a page's sh blocks marked `<!-- run-by: test/tooling/install/run.mjs -->`, comments dropped. */
function docCommands(page) {
  const text = readFileSync(path.join(root, page), 'utf8');
  return [...text.matchAll(/<!-- run-by: test\/tooling\/install\/run\.mjs -->\s*```sh\n([\s\S]*?)```/g)]
    .flatMap((m) => m[1].split('\n')).map((l) => l.replace(/\s+#.*$/, '').trim()).filter(Boolean);
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
if (check('npm pack (prepack: tsc, prebuild, API reference)', packed.status === 0)) {
  const noise = packed.out.split('\n').filter((l) => /^npm warn/.test(l));
  check('npm in the clone warns nothing (no unknown project config, no install script awaiting approval)', noise.length === 0, noise.join('; '));
  const lines = packed.stdout.split('\n'); // npm pack --json: the JSON array is the last thing printed
  const info = JSON.parse(lines.slice(lines.lastIndexOf('[')).join('\n'))[0];
  tarball = path.join(tmp, info.filename);
  files = info.files.map((f) => f.path);
  const prebuild = info.files.find((f) => f.path === `prebuilds/${platformDir}/${prebuildName}`);
  const allowed = (f) =>
    ['package.json', 'README.md', 'LICENSE', 'CMakeLists.txt', 'binding.gyp', 'csrc/kernels/architectures.txt'].includes(f) ||
    /^dist\/.+\.(js|d\.ts)$/.test(f) || /^csrc\/.+\.(cc|h|cu|cuh|inl|gypi)$/.test(f) || /^prebuilds\/[a-z0-9]+-[a-z0-9+]+\/[^/]+\.node$/.test(f) ||
    /^docs\/.+\.md$/.test(f);
  const stray = files.filter((f) => !allowed(f));
  check('the tarball holds only dist/ (JS, types), prebuilds/, csrc/, docs/ (Markdown), CMakeLists.txt, binding.gyp, README, package.json', stray.length === 0, stray.join(', '));
  const docs = ['docs/README.md', 'docs/install.md', 'docs/api/README.md', 'docs/api/mla-kernels.md'].filter((f) => !files.includes(f));
  check('the tarball has the docs and the API reference generated at pack time (docs/api/)', docs.length === 0, docs.join(', '));
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
  writeJsConsumer(dir);
  const js = resultLine(sh('node', ['decode-check.mjs'], { cwd: dir, env, quiet: true }));
  check(`${label}: ESM JavaScript import runs a decode matching the reference`, js && js.relErr < 1e-5, js ? `rel. error ${js.relErr.toExponential(2)}` : 'no result');
  check(`${label}: info() names the addon in use (${expectAddon})`, js && js.info.addon.includes(expectAddon), js?.info.addon);

  // decode-check.ts compiled in a project folder (strict, NodeNext) and run: the emitted JS and its result.
  const typescript = (projectDir) => {
    mkdirSync(path.join(projectDir, 'src'), { recursive: true });
    copyFileSync(path.join(here, 'decode-check.ts'), path.join(projectDir, 'src', 'decode-check.ts'));
    writeFileSync(path.join(projectDir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, outDir: 'out', rootDir: 'src', types: ['node'] },
      include: ['src'],
    }, null, 2));
    if (sh('node', [tsc, '-p', 'tsconfig.json'], { cwd: projectDir, env }).status !== 0) return null;
    return { emitted: readFileSync(path.join(projectDir, 'out', 'decode-check.js'), 'utf8'), result: resultLine(sh('node', ['out/decode-check.js'], { cwd: projectDir, env, quiet: true })) };
  };
  const esm = typescript(dir);
  check(`${label}: TypeScript compiles against the installed types (strict, NodeNext)`, esm !== null);
  const ts = esm?.result;
  check(`${label}: the compiled TypeScript runs the same decode`, ts && ts.relErr < 1e-5 && js && ts.out.every((v, i) => v === js.out[i]), ts ? `rel. error ${ts.relErr.toExponential(2)}` : 'no result');

  copyFileSync(path.join(here, 'commonjs.cjs'), path.join(dir, 'commonjs.cjs'));
  const cjsRun = sh('node', ['commonjs.cjs'], { cwd: dir, env, quiet: true });
  const cjs = resultLine(cjsRun);
  check(`${label}: CommonJS: require('mla-kernels') (and /reference, /estimate) runs a decode matching the reference; import() gives the same module; no warning`,
    cjs && cjs.maxErr < 1e-5 && cjs.sameModule && cjs.estimate === 805306368 && !/Warning/.test(cjsRun.out), cjs ? `max |Δ| ${cjs.maxErr.toExponential(2)}` : 'no result');

  // TypeScript in a CommonJS project ("type": "commonjs", module NodeNext): tsc emits require('mla-kernels').
  const cjsDir = path.join(dir, 'cjs-project');
  mkdirSync(cjsDir);
  writeFileSync(path.join(cjsDir, 'package.json'), JSON.stringify({ name: 'cjs-project', private: true, type: 'commonjs' }, null, 2));
  const commonjs = typescript(cjsDir);
  check(`${label}: TypeScript compiles in a CommonJS project (strict, NodeNext) to require('mla-kernels')`, commonjs && /require\("mla-kernels"\)/.test(commonjs.emitted));
  const tsCjs = commonjs?.result;
  check(`${label}: the CommonJS TypeScript runs the same decode`, tsCjs && tsCjs.lang === 'cjs' && js && tsCjs.out.every((v, i) => v === js.out[i]), tsCjs ? `rel. error ${tsCjs.relErr.toExponential(2)}` : 'no result');

  const cli = sh('npx', ['mla-kernels', 'info'], { cwd: dir, env });
  check(`${label}: npx mla-kernels info names the version and the addon`, cli.status === 0 && cli.stdout.includes(`mla-kernels ${pkg.version}`) && cli.stdout.includes(expectAddon));
  return js;
}

// ---- 2. install with the prebuild, no compiler --------------------------------------------------------------
let prebuilt = null;
// --prefer-offline: the dependencies npm ci (or an earlier run) left in npm's cache are taken without asking the
// registry again; what the cache lacks is still fetched.
const installArgs = ['install', '--no-audit', '--no-fund', '--foreground-scripts', '--prefer-offline'];
// node-gyp's make on every core (JOBS, which node-gyp reads): the source builds below compile the same files a user's would.
const buildEnv = (dirs) => userEnv(dirs, { JOBS: 'max' });
if (tarball) {
  const app = newProject('app-prebuild');
  // The README's install commands, as written (the package's name standing for the tarball).
  const readmeInstall = docCommands('README.md');
  const unknown = readmeInstall.filter((l) => l !== 'npm install mla-kernels' && l !== 'npx mla-kernels info');
  check('README.md\'s install block is `npm install mla-kernels` and `npx mla-kernels info`, which this test runs', readmeInstall.includes('npm install mla-kernels') && unknown.length === 0, unknown.join('; '));
  const r = sh('npm', [...installArgs, tarball, '@types/node@20'], { cwd: app, env: userEnv([noCompiler]) });
  check('prebuild: npm asks to approve no `prepare` script of mla-kernels', r.status === 0 && !/mla-kernels@[^\n]*prepare/.test(r.out));
  const installed = path.join(app, 'node_modules', pkg.name);
  check('prebuild: npm install of the tarball succeeds with node, npm and sh alone on PATH', r.status === 0);
  check('prebuild: nothing was compiled (no build/ in the installed package)', r.status === 0 && !existsSync(path.join(installed, 'build')));
  if (r.status === 0) prebuilt = consumers(app, [noCompiler], `prebuilds/${platformDir}/${prebuildName}`, 'prebuild');
  if (r.status === 0) {
    const manifest = JSON.parse(readFileSync(path.join(installed, 'package.json'), 'utf8'));
    const lifecycle = Object.keys(manifest.scripts ?? {}).filter((k) => /^(pre|post)?(install|prepare|publish)$|^prepublishOnly$/.test(k));
    check('the published manifest\'s only install-time script is install (node-gyp-build): no prepare', lifecycle.join() === 'install', lifecycle.join(', '));
    const env = userEnv([noCompiler]);
    const help = sh('npx', ['mla-kernels', '--help'], { cwd: app, env, quiet: true });
    const version = sh('npx', ['mla-kernels', '--version'], { cwd: app, env, quiet: true });
    check('npx mla-kernels --help and --version', help.status === 0 && /^Usage: mla-kernels/m.test(help.stdout) && version.status === 0 && version.stdout.trim() === pkg.version);
    // memory_estimator_mla.py's example, verbatim.
    const seed = sh('sh', ['-c', 'npx mla-kernels estimate --context_length 8192 --emb_dim 2048 --n_heads 24 --n_layers 48 --n_kv_groups 4 --batch_size 1 --dtype bf16 --latent_dim 1024'], { cwd: app, env });
    check('the memory_estimator_mla.py example runs verbatim: MHA 3.25 GB, GQA 0.81 GB, MLA 0.81 GB, 4.00×, 4.03×, 75.00%, 75.19%',
      seed.status === 0 && seed.stdout.includes('MHA 3.25 GB, GQA 0.81 GB, MQA 0.14 GB, MLA 0.81 GB; MHA/GQA 4.00×, MHA/MLA 4.03×; savings 75.00% (GQA) and 75.19% (MLA)'));
    const plot = sh('npx', ['mla-kernels', 'estimate', '--plot', 'kv.svg'], { cwd: app, env, quiet: true });
    check('estimate --plot without the optional peers (vega, vega-lite) says what to install', plot.status === 1 && /npm install vega vega-lite/.test(plot.out) && !existsSync(path.join(app, 'kv.svg')), plot.out.trim().split('\n').pop());
  }

  // ---- 4. forced source builds, as the README says -----------------------------------------------------------
  if (r.status === 0) {
    const rebuild = sh('npm', ['rebuild', pkg.name, '--build-from-source', '--foreground-scripts'], { cwd: app, env: buildEnv([withCompiler]) });
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
      const documented = docCommands('docs/install.md').filter((l) => /cmake-js/.test(l));
      check('docs/install.md\'s cmake-js block is the command run next', documented.length === 1 && documented[0] === `cd node_modules/${pkg.name} && npx --yes cmake-js rebuild`, documented.join('; '));
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
  const r = sh('npm', [...installArgs, bare, '@types/node@20'], { cwd: app, env: buildEnv([withCompiler]) });
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
