// What the install tests share (arm64.mjs; run.mjs keeps its own copies until it is moved onto these).
import { spawnSync } from 'node:child_process';
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
