#!/usr/bin/env node
// npm run test:gpu / npm run bench:gpu: the same suites and a decode benchmark on a real GPU. Where the addon finds no
// usable GPU (no driver, an old driver, no device, a build without CUDA) they say why and exit 0.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const mode = process.argv[2];
const addonPath = path.resolve(root, process.env.MLA_ADDON_PATH ?? 'build-cmake/Release/mla_kernels.node');
if (!existsSync(addonPath)) {
  console.log(`${mode}: no addon at ${addonPath}; build it first (npm run build)`);
  process.exit(0);
}
const addon = createRequire(import.meta.url)(addonPath);
const cuda = addon.backends().find((b) => b.name === 'cuda');
if (!cuda?.available) {
  console.log(`${mode}: no usable GPU here (${cuda?.reason ?? 'no cuda backend'}); nothing to run`);
  process.exit(0);
}
console.log(`${mode}: ${cuda.reason}`);
const env = { ...process.env, MLA_ADDON_PATH: addonPath };
const r =
  mode === 'test:gpu'
    ? spawnSync(path.join(root, 'node_modules', '.bin', 'vitest'), ['run', 'test/conformance/'], { cwd: root, stdio: 'inherit', env: { ...env, MLA_TEST_BACKENDS: 'cuda' } })
    : spawnSync(process.execPath, ['bench/gpu.mjs'], { cwd: root, stdio: 'inherit', env });
process.exit(r.status ?? 1);
