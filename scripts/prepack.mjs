#!/usr/bin/env node
// npm pack / npm publish (prepack): the compiled JS and types in dist/ from lib/ (files whose source is gone are
// removed, so none ships by accident), the prebuilt binary (scripts/build-prebuild.mjs), the API reference in
// docs/api/ (TypeDoc, typedoc.json), and last the figures the docs quote from this build (scripts/docs.mjs
// --figures: the binary's size, the tarball's). package.json's "files" says what goes in the tarball: dist/ (no
// source maps), prebuilds/, csrc/, docs/, CMakeLists.txt, binding.gyp.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const dist = path.join(root, 'dist');

if (existsSync(dist))
  for (const f of readdirSync(dist, { recursive: true, withFileTypes: true })) {
    if (!f.isFile()) continue;
    const rel = path.relative(dist, path.join(f.parentPath ?? f.path, f.name));
    const source = rel.replace(/(\.d\.ts|\.js)(\.map)?$/, '.ts');
    if (!existsSync(path.join(root, 'lib', source))) rmSync(path.join(dist, rel));
  }

for (const [what, args] of [
  ['TypeScript build', [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json']],
  ['prebuild', [path.join(root, 'scripts', 'build-prebuild.mjs')]],
  ['API reference (TypeDoc)', [path.join(root, 'node_modules', 'typedoc', 'bin', 'typedoc'), '--logLevel', 'Error']],
  ['docs figures', [path.join(root, 'scripts', 'docs.mjs'), '--figures']],
]) {
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`prepack: ${what} failed`);
    process.exit(1);
  }
}
