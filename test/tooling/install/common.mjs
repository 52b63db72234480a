// What the install tests share (arm64.mjs; run.mjs keeps its own copies until it is moved onto these).
import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * The environment of the user's shell: ours without npm's script variables (npm test runs us), MLA_* (an
 * MLA_ADDON_PATH would bypass the installed addon), compiler settings and sanitizer preloads; PATH of `pathDirs`.
 */
export function userEnv(pathDirs, extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env))
    if (!/^(npm_|NPM_|MLA_|PREBUILDS_ONLY|CC$|CXX$|CUDA|LD_PRELOAD|ASAN_|UBSAN_|NODE_OPTIONS|VITEST|PATH$)/.test(k)) env[k] = v;
  return { ...env, PATH: pathDirs.join(path.delimiter), ...extra };
}

/** Runs a command, printing it, its output (all of it with `quiet` only when it fails) and its time. */
export function sh(cmd, args, opts = {}) {
  const t = Date.now();
  console.log(`\n$ ${[cmd, ...args].join(' ')}${opts.cwd ? `   (in ${opts.cwd})` : ''}`);
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 2 ** 20, ...opts });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (!opts.quiet || r.status !== 0) process.stdout.write(out.length > 6000 ? `…${out.slice(-6000)}` : out);
  console.log(`  (exit ${r.status ?? r.signal}, ${((Date.now() - t) / 1000).toFixed(1)} s)`);
  return { status: r.status, stdout: r.stdout ?? '', out };
}

/** The JSON of a consumer script's "RESULT <json>" line, or null. */
export function resultLine(r) {
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  return line ? JSON.parse(line.slice(7)) : null;
}

/**
 * npm pack into `dest`, or a copy of the tarball npm test packed once for both install tests (MLA_INSTALL_PACKED:
 * the file holding that `npm pack --json` output, the tarball beside it; a full prebuild costs minutes), unless that
 * tarball lacks a file `needs` names. Returns { status, stdout } as sh does.
 */
export function pack(root, dest, needs = []) {
  const given = process.env.MLA_INSTALL_PACKED;
  if (given) {
    try {
      const stdout = readFileSync(given, 'utf8');
      const info = JSON.parse(stdout)[0];
      if (needs.every((f) => info.files.some((x) => x.path === f))) {
        copyFileSync(path.join(path.dirname(given), info.filename), path.join(dest, info.filename));
        console.log(`
npm pack: the tarball npm test packed (${given})`);
        return { status: 0, stdout };
      }
      console.log(`
npm pack: the tarball npm test packed lacks ${needs.join(', ')}; packing again`);
    } catch (e) {
      console.log(`
npm pack: ${given} unusable (${e.message}); packing again`);
    }
  }
  return sh('npm', ['pack', '--json', '--pack-destination', dest], { cwd: root, quiet: true });
}
