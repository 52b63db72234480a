// The CPU benchmark's results as files and docs: the key of a machine type (processor and SIMD path), the targets
// line of a run, the chart, and the docs block with one table per machine type. Used by bench/cpu.mjs after a run;
// `node bench/cpu-results.mjs` redraws every chart and rewrites the docs block from the stored results alone.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const resultsDir = path.join(root, 'bench', 'results');

// The goals of issue 21, one place: decode at batch >= 8 and context >= 4096 at >= 0.8 of the roofline, no row slower
// than a peer, >= 2x the fastest peer where that peer runs below 0.4 of the roofline, append >= 0.9 of copy bandwidth.
export const GOALS = { decodeRoofline: 0.8, bigBatch: 8, bigContext: 4096, peerTwiceBelow: 0.4, appendOfCopy: 0.9 };

/** AMD's microarchitecture from the family and model /proc/cpuinfo gives (a VM's model name often says only "AMD EPYC"). */
function amdCore(family, model) {
  if (family === 26) return 'zen5';
  if (family === 25) return (model >= 0x10 && model < 0x20) || (model >= 0x60 && model < 0xb0) ? 'zen4' : 'zen3';
  if (family === 23) return model >= 0x30 ? 'zen2' : 'zen1';
  return `f${family}m${model}`;
}

/** A file-name-safe name of the processor type: its model name, plus AMD's core generation or Intel's family/model. */
export function cpuSlug(machine) {
  const base = String(machine.cpu ?? 'unknown').replace(/\((R|TM|C)\)/gi, '').replace(/\b(CPU|Processor)\b/gi, '').replace(/@.*$/, '')
    .toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
  if (machine.family === undefined) return base;
  const amd = /amd/i.test(String(machine.cpu));
  return `${base}-${amd ? amdCore(machine.family, machine.model) : `f${machine.family}m${machine.model}`}`;
}

/** The machine type a result belongs to: processor and SIMD path, e.g. "amd-epyc-zen5-avx512-bf16". */
export const resultKey = (machine) => `${cpuSlug(machine)}-${machine.isa}`;

/** The lines of a run's targets (goals in GOALS), from its rows and append rows. */
export function targetLines(result) {
  const rows = result.rows ?? [], appendRows = result.appendRows ?? [];
  const label = (r) => `${r.dtype} h${r.heads} q${r.queryLen} b${r.batch} ctx${r.context}`;
  const big = rows.filter((r) => r.batch >= GOALS.bigBatch && r.context >= GOALS.bigContext);
  const short = big.filter((r) => r.roofline < GOALS.decodeRoofline);
  const withPeers = rows.filter((r) => Object.keys(r.peers ?? {}).some((k) => k !== 'reference'));
  const peersOf = (r) => Object.entries(r.peers).filter(([k]) => k !== 'reference');
  const slower = withPeers.filter((r) => peersOf(r).some(([, p]) => p.speedup < 1));
  // 2x the fastest peer where that peer runs below 0.4 of the roofline.
  const twiceDue = withPeers.filter((r) => peersOf(r).some(([, p]) => p.roofline < GOALS.peerTwiceBelow));
  const twiceMiss = twiceDue.filter((r) => peersOf(r).some(([, p]) => p.roofline < GOALS.peerTwiceBelow && p.speedup < 2));
  const minOf = (xs) => (xs.length ? Math.min(...xs) : NaN);
  const minSpeedup = minOf(withPeers.flatMap((r) => peersOf(r).map(([, p]) => p.speedup)));
  const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  return [
    `targets: decode batch>=${GOALS.bigBatch}, context>=${GOALS.bigContext} at >=${GOALS.decodeRoofline} of roofline: ${big.length - short.length}/${big.length} rows met` +
      (big.length ? ` (min ${fmt(minOf(big.map((r) => r.roofline)))})` : '') +
      (short.length ? `; short: ${short.map((r) => `${label(r)} ${r.roofline.toFixed(2)}`).join('; ')}` : ''),
    `          never slower than a peer: ${withPeers.length - slower.length}/${withPeers.length} rows met (min speed-up ${fmt(minSpeedup)}x)` +
      (slower.length ? `; slower: ${slower.map((r) => `${label(r)} (${peersOf(r).filter(([, p]) => p.speedup < 1).map(([k, p]) => `${k} ${p.speedup.toFixed(2)}x`).join(', ')})`).join('; ')}` : ''),
    `          >=2x every peer below ${GOALS.peerTwiceBelow} of the roofline: ${twiceDue.length - twiceMiss.length}/${twiceDue.length} rows met` +
      (twiceMiss.length ? `; missed: ${twiceMiss.map((r) => `${label(r)} (${peersOf(r).filter(([, p]) => p.roofline < GOALS.peerTwiceBelow && p.speedup < 2).map(([k, p]) => `${k} ${p.speedup.toFixed(2)}x`).join(', ')})`).join('; ')}` : ''),
    // Against the copy measured beside each append (older results, without pairs: against the run's best copy sample).
    `          append >=${GOALS.appendOfCopy} of copy bandwidth (${pairedHow(appendRows)}): ` +
      `${appendRows.filter((a) => appendOfCopy(a) >= GOALS.appendOfCopy).length}/${appendRows.length} met ` +
      `(${appendRows.map((a) => `${a.dtype} ${appendOfCopy(a).toFixed(2)}${a.ofCopyPaired == null && appendRows.some((b) => b.ofCopyPaired != null) ? ' against the best copy sample of its run' : ''}`).join(', ')})`,
  ];
}

const G = (x) => (x / 1e9).toFixed(x >= 1e11 ? 0 : 1);

/** The line naming each `--rows <rowsArg> --merge` run that measured some of `rows` (its machine state and `limitsText`). */
function ownRunLines(runs, rows, what, rowsArg, limitsText) {
  const lines = [];
  for (const run of runs ?? []) {
    if (!rows.some((r) => r.run === run.machine.date)) continue;
    const m = run.machine;
    lines.push(`${what} rows measured ${m.date.slice(0, 16).replace('T', ' ')} UTC in their own run (\`--rows ${rowsArg} --merge\`): ${m.cpu} (family ${m.family}, model ${m.model}), ` +
      `\`${m.isa}\` path, ${m.threads} threads; load average ${m.loadBefore} before, ${m.loadAfter} after; ${limitsText(run.limits)}.`, '');
  }
  return lines;
}

/** An append row's figure against the goal: paired with the copy beside it where measured so (older rows: best-of-run). */
export const appendOfCopy = (a) => a.ofCopyPaired ?? a.ofCopy;
const pairedHow = (appendRows) => (appendRows.some((a) => a.ofCopyPaired != null) ? 'median of append / copy measured beside it' : 'against the best copy sample of the run');

/**
 * The append table of a result: per dtype, append's time and bytes per second (rows read + written and the slot and
 * position indices; older results also counted the cos/sin rows), the median of append / copy over the pairs measured
 * side by side (with their range), the same against the run's best copy sample, and the store kinds timed. Rows
 * merged in from a separate `--rows '^append' --merge` run get a line naming that run.
 */
export function appendTableLines(result) {
  const rows = result.appendRows ?? [];
  if (!rows.length) return [];
  const lines = ownRunLines(result.appendRuns, rows, 'Append', "'^append'", (l) => `that run's best copy sample ${G(l.copyBytesPerSec)} GB/s`);
  lines.push('| append | tokens | ms | GB/s | of copy: paired median (range over pairs) / best copy sample of the run | copy beside it, GB/s (median) | stores chosen | ms: non-temporal / regular stores |');
  lines.push('|---|---|---|---|---|---|---|---|');
  for (const a of rows) {
    const ratios = (a.pairs ?? []).map((x) => x.ratio), copies = (a.pairs ?? []).map((x) => x.copyBytesPerSec).sort((x, y) => x - y);
    const paired = a.ofCopyPaired != null ? `${a.ofCopyPaired.toFixed(2)} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}, ${ratios.length} pairs)` : '—';
    const copy = copies.length ? G((copies[(copies.length - 1) >> 1] + copies[copies.length >> 1]) / 2) : '—';
    lines.push(`| ${a.dtype}, interleaved RoPE | ${a.tokens} | ${a.ms.toFixed(2)} | ${G(a.bytesPerSec)} | ${paired} / ${a.ofCopy.toFixed(2)} | ${copy} | ${a.stores} | ${a.streamMs.toFixed(2)} / ${a.regularMs.toFixed(2)} |`);
  }
  return lines;
}

/** A stored table text with the section whose header starts `head` (and the lines naming its run, `runLine`) replaced. */
function withSection(table, head, runLine, sectionLines) {
  const lines = String(table).split('\n');
  const at0 = lines.findIndex((l) => l.startsWith(head));
  let at = -1;
  if (at0 >= 0) {
    let from = at0, to = at0;
    while (to < lines.length && lines[to].startsWith('|')) to++;
    while (from > 0 && (lines[from - 1] === '' || lines[from - 1].startsWith(runLine))) from--;
    lines.splice(from, to - from);
    at = from;
  }
  if (at < 0) {
    const t = lines.findIndex((l) => l.startsWith('targets:'));
    at = t < 0 ? lines.length : t;
  }
  lines.splice(at, 0, '', ...sectionLines, '');
  return lines.join('\n').replace(/\n{3,}/g, '\n\n');
}

/** A stored table text with its append section (and the line naming its run) replaced by `appendLines`. */
export const withAppendTable = (table, appendLines) => withSection(table, '| append |', 'Append rows measured', appendLines);

/** A stored table text with its targets lines replaced by `targets` (recomputed after a merge). */
export function withTargets(table, targets) {
  const lines = String(table).split('\n');
  const t = lines.findIndex((l) => l.startsWith('targets:'));
  if (t < 0) return table;
  let end = t + 1;
  while (end < lines.length && /^ {10}\S/.test(lines[end])) end++;
  lines.splice(t, end - t, ...targets);
  return lines.join('\n');
}

/**
 * The sparse table of a result: per row the indexer, the sparse decode over its top-k and the dense decode of the same
 * context, each with its fraction of the roofline, and the step's speed-up over dense. Rows merged in from a separate
 * `--rows ... --merge` run (their `run` names it in `sparseRuns`) get a line saying which machine state produced them.
 */
export function sparseTableLines(result) {
  const rows = result.sparseRows ?? [];
  if (!rows.length) return [];
  const lines = ownRunLines(result.sparseRuns, rows, 'Sparse', 'sparse', (l) => `its limits: read ${G(l.readBytesPerSec)} GB/s, bf16 peak ${G(l.peakFlops)} GFLOP/s (${l.peakFrom})`);
  const topk = rows[0].topk;
  lines.push(`| sparse decode (top-${topk}, one sequence) | heads | context | indexer ms (roofline) | sparse decode ms (roofline) | indexer + sparse ms (indexer's share) | dense decode ms (roofline) | speed-up over dense: indexer + sparse / sparse alone |`);
  lines.push('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const step = r.indexer.ms + r.sparse.ms;
    lines.push(`| ${r.dtype}, fp8 index keys | ${r.heads} | ${r.context} | ${r.indexer.ms.toFixed(2)} (${r.indexer.roofline.toFixed(2)}) | ${r.sparse.ms.toFixed(2)} (${r.sparse.roofline.toFixed(2)}) | ` +
      `${step.toFixed(2)} (${(100 * r.indexer.ms / step).toFixed(0)}%) | ${r.dense.ms.toFixed(2)} (${r.dense.roofline.toFixed(2)}) | ${(r.dense.ms / step).toFixed(2)}x / ${(r.dense.ms / r.sparse.ms).toFixed(2)}x |`);
  }
  return lines;
}

/** A stored table text with its sparse section (and the line naming its run) replaced by `sparseLines`. */
export const withSparseTable = (table, sparseLines) => withSection(table, '| sparse decode (', 'Sparse rows measured', sparseLines);

/**
 * The chart's Vega-Lite specification: per decode row, our fraction of the roofline beside each peer's, one panel per
 * dtype × heads, with the decode goal as a rule.
 */
export function chartSpec(result) {
  const rows = result.rows ?? [];
  const values = [];
  const order = [];
  for (const r of rows) {
    const panel = `${r.dtype}, ${r.heads} heads`;
    const x = `q${r.queryLen} b${r.batch} ctx${r.context}`;
    if (!order.includes(x)) order.push(x);
    values.push({ panel, row: x, who: 'mla-kernels', fraction: r.roofline });
    for (const [who, p] of Object.entries(r.peers ?? {})) if (who !== 'reference') values.push({ panel, row: x, who, fraction: p.roofline });
  }
  const m = result.machine;
  const panels = [...new Set(values.map((v) => v.panel))];
  const yMax = Math.max(1, Math.ceil(Math.max(...values.map((v) => v.fraction)) * 10) / 10);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: `CPU decode: fraction of the roofline, ours beside each peer's (${m.cpu}, ${m.isa} path, ${m.threads} threads, ${String(m.date).slice(0, 10)}${result.quick ? ', quick run' : ''})`,
      subtitle: `roofline = max(bytes / read bandwidth, FLOPs / arithmetic peak) / time, limits measured in the run; the rule is the goal of ${GOALS.decodeRoofline} (batch >= ${GOALS.bigBatch}, context >= ${GOALS.bigContext})`,
      anchor: 'start',
    },
    data: { values },
    facet: { field: 'panel', type: 'nominal', sort: panels, title: null, header: { labelFontSize: 12, labelFontWeight: 'bold' } },
    columns: 1,
    spec: {
      width: { step: 27 },
      height: 200,
      layer: [
        {
          mark: 'bar',
          encoding: {
            x: { field: 'row', type: 'nominal', sort: order, title: null, axis: { labelAngle: -60, labelLimit: 200 } },
            xOffset: { field: 'who', type: 'nominal', sort: ['mla-kernels', 'onnxruntime', 'pytorch'] },
            // 0 to 1, or to the largest fraction: a peer rated against a forced path's narrower peak can pass 1.
            y: { field: 'fraction', type: 'quantitative', title: 'fraction of the roofline', scale: { domain: [0, yMax] } },
            color: { field: 'who', type: 'nominal', sort: ['mla-kernels', 'onnxruntime', 'pytorch'], title: null },
            tooltip: [{ field: 'row' }, { field: 'who' }, { field: 'fraction', format: '.2f' }],
          },
        },
        { mark: { type: 'rule', strokeDash: [4, 3], color: '#444' }, encoding: { y: { datum: GOALS.decodeRoofline } } },
      ],
    },
    config: { font: 'Helvetica, Arial, sans-serif', background: 'white' },
  };
}

/** The chart as SVG, drawn by Vega-Lite and Vega (the devDependencies lib/estimate.ts draws its chart with). */
export async function chartSvg(result) {
  if (!(result.rows ?? []).length)
    return '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="30"><text x="10" y="20">no decode rows in this run</text></svg>\n';
  const [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
  const view = new vega.View(vega.parse(vegaLite.compile(chartSpec(result)).spec), { renderer: 'none' });
  try {
    return `${await view.toSVG()}\n`;
  } finally {
    view.finalize();
  }
}

/** The latest full result of each machine type in `dir` (its latest quick result where it has no full one), newest first. */
export function latestResults(dir = resultsDir) {
  const files = readdirSync(dir);
  const full = files.filter((f) => /^cpu-latest-.+\.json$/.test(f));
  const quick = files.filter((f) => /^cpu-quick-latest-.+\.json$/.test(f) && !full.includes(f.replace('cpu-quick-latest-', 'cpu-latest-')));
  return [...full, ...quick]
    .map((f) => ({ file: f, result: JSON.parse(readFileSync(path.join(dir, f), 'utf8')) }))
    .sort((a, b) => String(b.result.machine.date).localeCompare(String(a.result.machine.date)));
}

/** The docs block: one section per machine type, its machine lines, its tables and its targets lines. */
export function docsBlock(latest) {
  const out = [];
  for (const { file, result } of latest) {
    const m = result.machine;
    const lines = String(result.table).split('\n');
    const blank = lines.indexOf('');
    const header = lines.slice(0, blank), body = lines.slice(blank + 1);
    // A stored table ends with its own targets lines (older runs: older goals): today's are recomputed from its rows.
    const t = body.findIndex((l) => l.startsWith('targets:'));
    const after = body.slice(t).filter((l) => !/^ {10}|^targets:/.test(l));
    const tables = body.slice(0, t).filter((l, k, a) => l !== '' || (k > 0 && a[k - 1] !== ''));
    while (tables.length && tables[tables.length - 1] === '') tables.pop();
    out.push(
      `### ${m.cpu}${m.family !== undefined ? ` (family ${m.family}, model ${m.model})` : ''}, \`${m.isa}\` path${result.quick ? ' (quick run only)' : ''}`,
      '',
      `\`bench/results/${file}\`, chart \`${file.replace(/\.json$/, '.svg')}\`:`,
      '', '```text', ...header, ...targetLines(result), '```', '', ...tables, '', '```text', ...after, '```', '',
    );
  }
  return out.join('\n');
}

/** Writes the docs block of docs/performance-cpu.md (between its markers) from the latest result of each type. */
export function writeDocs(dir = resultsDir) {
  const page = path.join(root, 'docs', 'performance-cpu.md');
  const text = readFileSync(page, 'utf8');
  const start = '<!-- cpu-bench:start -->', end = '<!-- cpu-bench:end -->';
  const i = text.indexOf(start), j = text.indexOf(end);
  if (i < 0 || j < i) throw new Error('docs/performance-cpu.md has no cpu-bench markers');
  const block = `${start}\nThe latest full run of each machine type (its latest quick run where it has had no full one), as \`npm run bench -- --docs\` or \`node bench/cpu-results.mjs\` wrote it: one table per processor and SIMD path, the targets lines computed from the rows against today's goals.\n\n${docsBlock(latestResults(dir))}${end}`;
  writeFileSync(page, text.slice(0, i) + block + text.slice(j + end.length));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  for (const f of readdirSync(resultsDir).filter((x) => /^cpu-(quick-)?latest-.+\.json$/.test(x))) {
    const result = JSON.parse(readFileSync(path.join(resultsDir, f), 'utf8'));
    writeFileSync(path.join(resultsDir, f.replace(/\.json$/, '.svg')), await chartSvg(result));
  }
  writeDocs();
  console.log('redrew the charts of bench/results/cpu-*latest-*.json and rewrote the benchmark block of docs/performance-cpu.md');
}
