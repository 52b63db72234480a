// The documentation as a user meets it (docs/README.md, "Adding a page", is the rule this enforces): every code block
// of README.md and docs/**/*.md runs (TypeScript compiled strict against the built package's types, then run with
// node; JavaScript as is; `npx mla-kernels` lines run, their `<!-- output -->` compared); blocks run elsewhere name an
// existing test; every relative link and anchor resolves to a file the published package contains; the page list is
// current; the API reference generates without a warning that matters and covers every export; the error table is
// ERROR_CODES; the README stays a front page.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES } from 'mla-kernels';
import * as api from '../../lib/index.js';
// @ts-expect-error: a plain .mjs script without types
import { docPages, FIGURE_MARKER, FIGURES, indexText } from '../../scripts/docs.mjs';

const root = path.join(__dirname, '..', '..');
const work = path.join(root, 'test', '.tmp', 'docs-blocks');
const pages: string[] = ['README.md', ...(docPages() as string[]).map((p) => `docs/${p}`)];
const read = (page: string) => readFileSync(path.join(root, page), 'utf8');

interface Block {
  page: string;
  line: number;
  lang: string;
  attrs: string[];
  code: string;
  /** Its marker, an HTML comment line right above the fence: `run-by: …` or `output`. */
  marker?: string;
  /** A file name for the extracted block. */
  name: string;
}

function blocksOf(page: string): Block[] {
  const text = read(page);
  const blocks: Block[] = [];
  const fence = /^```([^\n]*)\n([\s\S]*?)^```[ \t]*$/gm;
  for (let m; (m = fence.exec(text)); ) {
    const [lang = '', ...attrs] = m[1].trim().split(/\s+/).filter(Boolean);
    // The comment lines right above the fence (other tests may keep markers of their own there).
    const above = text.slice(0, m.index).trimEnd().split('\n').reverse();
    const comments = above.slice(0, Math.max(0, above.findIndex((l) => !/^<!--.*-->$/.test(l.trim())))).map((l) => l.trim());
    const marker = comments.map((c) => /^<!-- ((?:run-by: \S+)|output) -->$/.exec(c)?.[1]).find(Boolean);
    const line = text.slice(0, m.index).split('\n').length;
    blocks.push({ page, line, lang, attrs, code: m[2], marker, name: `${page.replace(/[/.]/g, '_')}_${line}` });
  }
  return blocks;
}

const blocks = pages.flatMap(blocksOf);
const programs = blocks.filter((b) => ['ts', 'typescript', 'js', 'javascript'].includes(b.lang));
const isTs = (b: Block) => b.lang === 'ts' || b.lang === 'typescript';
const source = (b: Block) => `${b.name}.${isTs(b) ? (b.attrs.includes('cjs') ? 'cts' : 'ts') : b.attrs.includes('cjs') ? 'cjs' : 'mjs'}`;
const compiled = (b: Block) => path.join(work, isTs(b) ? 'out' : '', source(b).replace(/\.cts$/, '.cjs').replace(/\.ts$/, '.js'));
const where = (b: Block) => `${b.page}:${b.line} (\`\`\`${[b.lang, ...b.attrs].join(' ')})`;

/** A shell line's words, with "double-quoted" and 'single-quoted' words kept whole. */
const words = (line: string) => [...line.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]);

describe('docs: code blocks', () => {
  let tscOutput = '';
  beforeAll(() => {
    expect(existsSync(path.join(root, 'dist', 'index.d.ts')), 'dist/: npm test compiles lib/ first').toBe(true);
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    for (const b of programs) writeFileSync(path.join(work, source(b)), b.code);
    // As a user compiles it: strict, NodeNext, against the package's published types (self-reference to dist/).
    writeFileSync(path.join(work, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022', 'ESNext.Disposable'], types: ['node'], strict: true, outDir: 'out', rootDir: '.' },
      include: ['*.ts', '*.cts'],
    }));
    const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', work], { encoding: 'utf8' });
    tscOutput = tsc.stdout + tsc.stderr;
  }, 120_000);

  it('every block has a language this test knows', () => {
    const unknown = blocks.filter((b) => !['ts', 'typescript', 'js', 'javascript', 'sh', 'bash', 'text', 'json'].includes(b.lang));
    expect(unknown.map(where), 'give each block one of: ts, js, sh, text, json').toEqual([]);
  });

  it.each(programs.map((b) => [where(b), b] as const))('%s compiles and runs', (_, b) => {
    if (isTs(b)) {
      const errors = tscOutput.split('\n').filter((l) => l.includes(`${source(b)}(`));
      expect(errors, `${where(b)} does not compile:\n${tscOutput}`).toEqual([]);
    }
    const r = spawnSync(process.execPath, [compiled(b)], { cwd: work, encoding: 'utf8', env: process.env, timeout: 120_000 });
    expect({ status: r.status, stderr: r.stderr }, `${where(b)}\n${r.stdout}`).toEqual({ status: 0, stderr: '' });
  });

  const commands = blocks.filter((b) => b.lang === 'sh' || b.lang === 'bash');
  it.each(commands.map((b) => [where(b), b] as const))('%s runs', (_, b) => {
    if (b.marker?.startsWith('run-by: ')) {
      const runner = b.marker.slice('run-by: '.length);
      expect(existsSync(path.join(root, runner)), `${where(b)}: run-by names ${runner}, which does not exist`).toBe(true);
      return;
    }
    const lines = b.code.split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter(Boolean);
    let out = '';
    for (const line of lines) {
      const w = words(line);
      expect(w.slice(0, 2), `${where(b)}: '${line}' is not an npx mla-kernels command: mark the block <!-- run-by: <the test that runs it> -->`).toEqual(['npx', 'mla-kernels']);
      const r = spawnSync(process.execPath, [path.join(root, 'dist', 'cli.js'), ...w.slice(2)], { cwd: work, encoding: 'utf8', env: process.env, timeout: 60_000 });
      expect(r.status, `${where(b)}: ${line}\n${r.stdout}${r.stderr}`).toBe(0);
      out += r.stdout;
    }
    const next = blocks[blocks.indexOf(b) + 1];
    if (next?.page === b.page && next.marker === 'output') expect(out.trimEnd(), `${where(next)}: the output block differs from what ${where(b)} printed`).toBe(next.code.trimEnd());
  });

  it('every `<!-- output -->` block follows a block whose commands this test runs', () => {
    for (const b of blocks.filter((x) => x.marker === 'output')) {
      const prev = blocks[blocks.indexOf(b) - 1];
      expect(prev && prev.page === b.page && ['sh', 'bash'].includes(prev.lang) && !prev.marker?.startsWith('run-by'), where(b)).toBe(true);
    }
  });

  it('json blocks parse', () => {
    for (const b of blocks.filter((x) => x.lang === 'json')) expect(() => JSON.parse(b.code), where(b)).not.toThrow();
  });
});

describe('docs: the pages', () => {
  it('the README is a short front page (at most 150 lines)', () => {
    expect(read('README.md').split('\n').length).toBeLessThanOrEqual(150);
  });

  it('docs/README.md lists every page (npm run docs rewrites the list)', () => {
    expect(indexText() === read('docs/README.md'), 'docs/README.md: the page list is stale: run npm run docs').toBe(true);
  });

  it('every figure marker names a figure npm run docs -- --figures measures', () => {
    const prose = (page: string) => read(page).replace(/^```[\s\S]*?^```$/gm, '').replace(/`[^`\n]*`/g, '');
    const unknown = pages.flatMap((page) => [...prose(page).matchAll(FIGURE_MARKER)].filter((m) => !FIGURES.includes(m[1])).map((m) => `${page}: ${m[1]}`));
    const open = pages.filter((page) => /<!-- figure:/.test(prose(page).replace(FIGURE_MARKER, '')));
    expect({ unknown, 'markers without their <!-- /figure -->': open }).toEqual({ unknown: [], 'markers without their <!-- /figure -->': [] });
  });

  it('the error table of docs/errors.md is ERROR_CODES, in order', () => {
    const codes = [...read('docs/errors.md').matchAll(/^\| `(E_[A-Z_]+)` \|/gm)].map((m) => m[1]);
    expect(codes).toEqual([...ERROR_CODES]);
  });

  it('the performance summaries quote the latest full CPU benchmark run that docs/performance-cpu.md shows', () => {
    // One table per machine type, newest first; quick runs stand in for a type with no full run, the summaries quote full runs.
    const date = /^mla-kernels CPU benchmark, (\d{4}-\d\d-\d\d) [\d:]+ UTC, full run/m.exec(read('docs/performance-cpu.md'))?.[1];
    expect(date, 'docs/performance-cpu.md has no full benchmark run').toBeDefined();
    for (const page of ['README.md', 'docs/performance.md'])
      expect(read(page), `${page} summarises another run than docs/performance-cpu.md's (${date}): update its figures`).toContain(`(${date},`);
  });
});

describe('docs: the API reference and links', () => {
  let typedoc = { status: 0 as number | null, out: '' };
  beforeAll(() => {
    // As prepack makes it (typedoc.json): into docs/api/, which the package ships and the repository ignores.
    const r = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typedoc', 'bin', 'typedoc')], { cwd: root, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } });
    typedoc = { status: r.status, out: `${r.stdout}${r.stderr}` };
  }, 180_000);

  it('TypeDoc generates it, with no export missing and no link unresolved', () => {
    expect(typedoc.status, typedoc.out).toBe(0);
    // "The relative path X is not a file": TypeDoc reads a comment line "[shape]: text" as a link definition; the
    // markdown it writes renders that line as text, so those warnings are left alone.
    const warnings = typedoc.out.split('\n').filter((l) => /\[warning\]/.test(l) && !/relative path .* is not a file/.test(l) && !/Found \d+ errors and \d+ warnings/.test(l));
    expect(warnings).toEqual([]);
  });

  it('it documents every runtime export of mla-kernels', () => {
    const page = readFileSync(path.join(root, 'docs', 'api', 'mla-kernels.md'), 'utf8');
    const headings = new Set([...page.matchAll(/^### (\S+?)(\(\))?$/gm)].map((m) => m[1].replace(/\\_/g, '_')));
    expect(Object.keys(api).filter((name) => !headings.has(name))).toEqual([]);
  });

  it('every relative link and anchor of README.md and docs/ resolves to a file the package contains', () => {
    const pack = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' });
    expect(pack.status, pack.stderr).toBe(0);
    const shipped = new Set((JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as { files: { path: string }[] }[])[0].files.map((f) => f.path));
    const anchorsOf = new Map<string, Set<string>>();
    const anchors = (file: string) => {
      if (!anchorsOf.has(file)) {
        const text = readFileSync(path.join(root, file), 'utf8').replace(/^```[\s\S]*?^```$/gm, '');
        const seen = new Map<string, number>();
        const ids = new Set<string>([...text.matchAll(/<a (?:id|name)="([^"]+)"/g)].map((m) => m[1]));
        for (const [, heading] of text.matchAll(/^#{1,6} (.+)$/gm)) {
          // GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered.
          const slug = heading.replace(/<[^>]+>/g, '').replace(/`/g, '').toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/ /g, '-');
          const n = seen.get(slug) ?? 0;
          seen.set(slug, n + 1);
          ids.add(n ? `${slug}-${n}` : slug);
        }
        anchorsOf.set(file, ids);
      }
      return anchorsOf.get(file)!;
    };
    const problems: string[] = [];
    const all = [...pages, ...[...shipped].filter((f) => f.startsWith('docs/api/') && f.endsWith('.md'))];
    for (const page of all) {
      const text = read(page).replace(/^```[\s\S]*?^```$/gm, '').replace(/`[^`\n]*`/g, '');
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/i.test(target)) continue; // https:, mailto:
        const [file, anchor] = target.split('#');
        const resolved = file ? path.posix.normalize(path.posix.join(path.posix.dirname(page), file)) : page;
        if (!shipped.has(resolved)) problems.push(`${page}: ${target} → ${resolved} is not in the package`);
        else if (anchor && resolved.endsWith('.md') && !resolved.startsWith('docs/api/') && !anchors(resolved).has(anchor)) problems.push(`${page}: ${target}: no heading #${anchor} in ${resolved}`);
      }
    }
    expect(problems).toEqual([]);
  });
});
