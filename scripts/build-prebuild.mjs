#!/usr/bin/env node
// npm run build:prebuild: the prebuilt binary that npm install uses, prebuilds/<platform>-<arch>/mla-kernels.napi.node.
//
// It is the cmake-js build (CMakeLists.txt) in build-prebuild/: the CPU backend and, when nvcc is found, the CUDA
// kernels for every architecture of MLA_CUDA_ARCHS (csrc/kernels/architectures.txt) with the CUDA runtime linked statically; the
// cuda-sim emulator is left out (MLA_CUDA_SIM=OFF, it is for tests). The file is then stripped, named the way
// prebuildify names a Node-API build (`<package name>.napi.node`: node-gyp-build matches any Node version by the
// `napi` tag), and checked: it loads, its NAPI_VERSION is package.json's binary.napi_versions, it needs no shared
// CUDA runtime or libstdc++ (both are linked in), nothing was compiled with -march=native, and it is under 30 MB.
//
// Why not prebuildify itself: prebuildify 6 drives node-gyp only (a cmake-js build needs a wrapper pretending to be
// node-gyp), builds in and *moves* the file out of <package>/build/Release/ (the node-gyp fallback build that
// npm test uses), and names Node-API builds `<name>.node` without the `napi` tag. What it would add over this
// script is the copy, `strip --strip-all` and the name, so they are done here.
//
// Environment: MLA_CUDA=AUTO|ON|OFF (default AUTO: CUDA when nvcc is found; ON fails without nvcc),
//              MLA_CUDA_ARCHS=80 (one architecture while developing; default: every one of csrc/kernels/architectures.txt).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cudaArchitectures } from './cuda-architectures.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
const MAX_BYTES = 30 * 1024 * 1024;

function fail(message) {
  console.error(`prebuild: ${message}`);
  process.exit(1);
}

const napiVersions = pkg.binary?.napi_versions ?? [];
if (napiVersions.length !== 1) fail(`package.json binary.napi_versions must name exactly one Node-API version, got ${JSON.stringify(napiVersions)}`);
const napiVersion = napiVersions[0];

// Always pass the architectures: a cached MLA_CUDA_ARCHS from an earlier narrow build must not stick.
const allArchs = cudaArchitectures().join(';');
const archs = process.env.MLA_CUDA_ARCHS || allArchs;
const cudaMode = process.env.MLA_CUDA ?? 'AUTO';

const out = path.join(root, 'build-prebuild');
const args = [
  require.resolve('cmake-js/bin/cmake-js'), 'compile', '-O', out,
  `--CDMLA_CUDA=${cudaMode}`, '--CDMLA_CUDA_SIM=OFF', '--CDMLA_SANITIZE=OFF', `--CDMLA_CUDA_ARCHS=${archs}`,
  '--CDCMAKE_BUILD_TYPE=Release',
];
// On Linux, libstdc++ and libgcc go inside (their symbols kept private), so the prebuild needs only glibc (2.34+
// when built on Debian 12) and not the libstdc++ of the GCC it was built with (GLIBCXX_3.4.30 is GCC 12's).
if (process.platform === 'linux') args.push('--CDCMAKE_SHARED_LINKER_FLAGS=-static-libstdc++ -static-libgcc -Wl,--exclude-libs,ALL');
console.log(`prebuild: cmake-js build in build-prebuild/ (MLA_CUDA=${cudaMode}, architectures ${archs}, cuda-sim off)`);
const started = Date.now();
// configure, then build: `cmake-js compile` reuses an existing cache and would ignore changed -D options.
for (const step of ['configure', 'build']) {
  const r = spawnSync(process.execPath, args.map((a) => (a === 'compile' ? step : a)), { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) fail(`cmake-js ${step} failed (exit ${r.status ?? r.signal})`);
}
const seconds = ((Date.now() - started) / 1000).toFixed(0);

// A prebuild runs on any x86-64 (or arm64) machine: the CPU backend picks its SIMD kernels at run time, so no
// source may be compiled for the build machine's own processor.
const ninja = path.join(out, 'build.ninja');
if (existsSync(ninja) && /-m(arch|tune|cpu)=native/.test(readFileSync(ninja, 'utf8'))) fail('the build uses -march=native; a prebuild must run on every processor of its platform');

const built = path.join(out, 'Release', 'mla_kernels.node');
if (!existsSync(built)) fail(`the build did not produce ${path.relative(root, built)}`);

const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const name = `${pkg.name.replace(/\//g, '+')}.napi.node`;
const dest = path.join(dir, name);
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
copyFileSync(built, dest);
if (process.platform === 'linux' || process.platform === 'darwin') {
  const strip = spawnSync('strip', process.platform === 'darwin' ? ['-Sx', dest] : ['--strip-all', dest], { stdio: 'inherit' });
  if (strip.status !== 0) fail('strip failed');
}

// Checks: loads in a fresh process with the N-API version of package.json; no shared CUDA runtime; size.
const probe = spawnSync(process.execPath, ['-e', `
  const a = require(${JSON.stringify(dest)});
  console.log(JSON.stringify({ napi: a.facts().napiVersion, backends: a.backends() }));
`], { encoding: 'utf8' });
if (probe.status !== 0) fail(`the prebuild does not load:\n${probe.stderr}`);
const { napi, backends } = JSON.parse(probe.stdout.trim().split('\n').pop());
if (napi !== napiVersion) fail(`the addon was compiled with NAPI_VERSION=${napi}, package.json binary.napi_versions says ${napiVersion}`);
const cuda = backends.find((b) => b.name === 'cuda');
const withCuda = !!cuda && !/^not built/.test(cuda.reason);
const nvccAround = spawnSync('nvcc', ['--version']).status === 0 || existsSync('/usr/local/cuda/bin/nvcc');
if (!withCuda && nvccAround && cudaMode !== 'OFF') fail(`nvcc is installed but the prebuild has no CUDA backend: ${cuda?.reason}`);
if (backends.find((b) => b.name === 'cuda-sim')?.available) fail('the prebuild contains the cuda-sim emulator (test-only)');
if (process.platform === 'linux') {
  const ldd = spawnSync('ldd', [dest], { encoding: 'utf8' });
  if (/libcuda(rt)?\.so|libstdc\+\+/.test(ldd.stdout ?? '')) fail(`the prebuild links a shared CUDA runtime or libstdc++:\n${ldd.stdout}`);
}
const bytes = statSync(dest).size;
if (bytes > MAX_BYTES) fail(`${path.relative(root, dest)} is ${(bytes / 2 ** 20).toFixed(1)} MB, over the 30 MB limit`);

const others = readdirSync(path.join(root, 'prebuilds')).filter((d) => d !== path.basename(dir));
console.log(`prebuild: ${path.relative(root, dest)}, ${(bytes / 2 ** 20).toFixed(1)} MB stripped, N-API ${napi}, ` +
  `${withCuda ? `CUDA sm_${archs.split(';').join(', sm_')} (runtime static)` : 'CPU only (no nvcc)'}, built in ${seconds} s`);
for (const b of backends) console.log(`  ${b.name.padEnd(9)} ${b.available ? 'available  ' : 'unavailable'}  ${b.reason}`);
if (!withCuda || archs !== allArchs)
  console.log(`prebuild: WARNING: ${withCuda ? `MLA_CUDA_ARCHS narrowed the CUDA targets to ${archs}` : 'no CUDA backend (no nvcc, or MLA_CUDA=OFF)'}; ` +
    'fine for tests, not a prebuild to publish');
if (others.length) console.log(`prebuild: also in prebuilds/ (kept, built elsewhere): ${others.join(', ')}`);
