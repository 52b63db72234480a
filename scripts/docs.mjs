#!/usr/bin/env node
// npm run docs: what the documentation generates rather than types.
//   (default)   the page list of docs/README.md, from every docs/**/*.md (title, and its summary: a
//               `<!-- summary: … -->` line under the title, else the first sentence of its first paragraph);
//   --figures   the figures a build measures, in README.md and docs/**/*.md between <!-- figure:NAME --> and
//               <!-- /figure -->: the prebuilt binary's size and the tarball's (npm pack --dry-run, which runs no
//               script), run by prepack after the prebuild and the API reference so the tarball carries its own
//               (when MLA_CUDA_ARCHS or MLA_CUDA narrows the prebuild, only the CUDA-free linux-arm64 one);
//   --check     exits 1 (saying what to run) when the page list is stale, writing nothing.
// The API reference (docs/api/) is TypeDoc's: npm run docs:api (typedoc.json), also run by prepack.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const docs = path.join(root, 'docs');
const INDEX = path.join(docs, 'README.md');

/** Every documentation page: docs/**\/*.md but the generated API reference, as paths relative to docs/, sorted. */
export function docPages() {
  const pages = [];
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (path.relative(docs, p) !== 'api') walk(p);
      } else if (e.name.endsWith('.md')) pages.push(path.relative(docs, p).split(path.sep).join('/'));
    }
  };
  walk(docs);
  return pages.sort();
}

/** A page's title (its first `# ` line) and one-sentence summary. */
export function pageSummary(text) {
  const title = /^# (.+)$/m.exec(text)?.[1].trim() ?? '(untitled)';
  const explicit = /^<!-- summary: ([\s\S]*?) -->$/m.exec(text);
  if (explicit) return { title, summary: explicit[1].replace(/\s+/g, ' ').trim() };
  const afterTitle = text.slice(text.indexOf(title) + title.length);
  const paragraph = afterTitle.split(/\n\s*\n/).map((p) => p.trim()).find((p) => p && !p.startsWith('<!--') && !p.startsWith('#') && !p.startsWith('```') && !p.startsWith('|')) ?? '';
  const plain = paragraph.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/\*\*|__/g, '').replace(/\s+/g, ' ').trim();
  const sentence = /^(.*?[.!?])(\s|$)/.exec(plain)?.[1] ?? plain;
  // A long first sentence is cut at its last clause boundary before 200 characters.
  const cut = sentence.length <= 220 ? sentence : `${sentence.slice(0, Math.max(sentence.lastIndexOf(';', 200), sentence.lastIndexOf(',', 200), 120))} …`;
  return { title, summary: cut };
}

const START = '<!-- pages:start (npm run docs writes this list) -->';
const END = '<!-- pages:end -->';

/** The index with its page list as it should be. */
export function indexText() {
  const text = readFileSync(INDEX, 'utf8');
  const i = text.indexOf(START), j = text.indexOf(END);
  if (i < 0 || j < i) throw new Error(`docs/README.md has no page list (${START} … ${END})`);
  const line = (page) => {
    const { title, summary } = pageSummary(readFileSync(path.join(docs, page), 'utf8'));
    return `- [${title}](${page})${summary ? `: ${summary}` : ''}`;
  };
  const pages = docPages().filter((p) => p !== 'README.md');
  const guide = pages.filter((p) => p.startsWith('guide/'));
  const rest = pages.filter((p) => !p.startsWith('guide/'));
  const list = [
    START,
    '',
    '### Guide',
    '',
    ...guide.map(line),
    '',
    '### Reference and background',
    '',
    '- [API reference](api/README.md): every export of `mla-kernels`, `mla-kernels/estimate` and `mla-kernels/reference`, generated from the source\'s documentation by TypeDoc',
    ...rest.map(line),
    '',
    END,
  ].join('\n');
  return text.slice(0, i) + list + text.slice(j + END.length);
}

const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

const PREBUILD_PLATFORMS = ['linux-x64', 'linux-arm64'];
/** The names of the figures a build measures (`<!-- figure:NAME -->`). */
export const FIGURES = [...PREBUILD_PLATFORMS.map((p) => `prebuild-size-${p}`), 'tarball-size', 'tarball-unpacked', 'tarball-files'];
/** A figure marker and the text it holds; group 1 is the name. */
export const FIGURE_MARKER = /<!-- figure:([a-z0-9-]+) -->[^<]*<!-- \/figure -->/g;

/** The figures a build measures, by name. */
function measure() {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  const figures = {};
  for (const platform of PREBUILD_PLATFORMS) {
    const prebuild = path.join(root, 'prebuilds', platform, `${pkg.name}.napi.node`);
    if (existsSync(prebuild)) figures[`prebuild-size-${platform}`] = mb(statSync(prebuild).size);
  }
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const info = JSON.parse(out.slice(out.indexOf('[')))[0];
  figures['tarball-size'] = mb(info.size);
  figures['tarball-unpacked'] = mb(info.unpackedSize);
  figures['tarball-files'] = String(info.entryCount);
  return figures;
}

/** Rewrites every figure marker in README.md and docs/**\/*.md (only those named in `only`, when given). */
function writeFigures(only) {
  const figures = Object.fromEntries(Object.entries(measure()).filter(([name]) => !only || only.includes(name)));
  const changed = [];
  for (const file of [path.join(root, 'README.md'), ...docPages().map((p) => path.join(docs, p))]) {
    const text = readFileSync(file, 'utf8');
    const next = text.replace(FIGURE_MARKER, (m, name) => (name in figures ? `<!-- figure:${name} -->${figures[name]}<!-- /figure -->` : m));
    if (next !== text) {
      writeFileSync(file, next);
      changed.push(path.relative(root, file));
    }
  }
  console.log(`docs: figures ${Object.entries(figures).map(([k, v]) => `${k} ${v}`).join(', ')}${changed.length ? `; rewrote ${changed.join(', ')}` : ''}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  if (args.includes('--figures')) {
    // A development prebuild (one architecture, or no CUDA) is not the one published: its sizes would mislead.
    // The linux-arm64 prebuild has no CUDA, so it is the published one either way.
    const narrowed = ['MLA_CUDA_ARCHS', 'MLA_CUDA'].filter((v) => process.env[v]);
    if (narrowed.length) {
      console.log(`docs: the x64 figures left as they are (${narrowed.join(', ')} set: not the published build)`);
      writeFigures(['prebuild-size-linux-arm64']);
    } else writeFigures();
  }
  else {
    const next = indexText();
    const stale = next !== readFileSync(INDEX, 'utf8');
    if (args.includes('--check')) {
      if (stale) {
        console.error('docs/README.md: the page list is stale: run npm run docs');
        process.exit(1);
      }
    } else if (stale) {
      writeFileSync(INDEX, next);
      console.log('docs/README.md: page list rewritten');
    }
  }
}
