#!/usr/bin/env node
// Static checks of the CUDA kernels for every target architecture, without a GPU: compiles each csrc/kernels/*.cu
// with `nvcc -Xptxas -v`, prints registers, spills, stack and shared memory per kernel, and fails on any spill or
// stack frame, on registers over 255, or on a decode or prefill configuration whose shared memory exceeds the
// architecture's limit. It also checks that the PTX of the decode, prefill and up-projection kernels uses tensor cores
// (mma.sync) and cp.async, and their SASS (HMMA, LDGSTS) with the cuobjdump that scripts/sass-tool.mjs finds
// (Debian's 11.8 one in CI: sm_80 … sm_90). Writes the table to bench/results/cuda-static.json.
//   MLA_CUDA_ARCHS=90 node scripts/check-cuda.mjs      one architecture while developing
//   MLA_ADDON_PATH=...                                 a build with cuda-sim, for the decode kernels' smem sizes
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { selectedCudaArchitectures } from './cuda-architectures.mjs';
import { SMEM_OPTIN } from './gpu-targets.mjs';
import { disassemble, findCuobjdump, which } from './sass-tool.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nvcc = process.env.NVCC ?? (existsSync('/usr/local/cuda/bin/nvcc') ? '/usr/local/cuda/bin/nvcc' : 'nvcc');
const archs = selectedCudaArchitectures();
const MAX_REGISTERS = 255;
const HEAD_DIM = 576; // DeepSeek: kvLoraRank 512 + ropeDim 64

if (!existsSync(nvcc) && !which(nvcc)) {
  console.log('check-cuda: nvcc not found; static CUDA checks skipped');
  process.exit(0);
}

const require = createRequire(import.meta.url);
const addonPath = path.resolve(root, process.env.MLA_ADDON_PATH ?? path.join('build-cmake', 'Release', 'mla_kernels.node'));
const addon = existsSync(addonPath) ? require(addonPath) : null;
if (!addon?.decodeKernelShapes) {
  console.error(`check-cuda: ${addonPath} has no cuda-sim (needed for the decode kernels' shared memory sizes)`);
  process.exit(1);
}
const shapes = addon.decodeKernelShapes(HEAD_DIM);
// The prefill kernels at DeepSeek's dims (nope 128, rope 64, v 128), for the same check.
const prefillShapes = addon.prefillKernelShapes?.({ nopeDim: 128, ropeDim: 64, vHeadDim: 128 });
if (!prefillShapes) {
  console.error(`check-cuda: ${addonPath} has no prefillKernelShapes (a build from before the prefill kernels)`);
  process.exit(1);
}
// Kernels whose PTX must use tensor cores and whose SASS must show HMMA and LDGSTS (the cp.async pipeline): the
// decode, the prefill attention and the up-projection GEMM.
const TENSOR_CORE_SOURCES = ['decode.cu', 'prefill.cu', 'gemm_nt.cu'];

const sources = readdirSync(path.join(root, 'csrc', 'kernels')).filter((f) => f.endsWith('.cu'));
const tmp = mkdtempSync(path.join(os.tmpdir(), 'mla-check-cuda-'));

function run(args) {
  return new Promise((resolve) => {
    const p = spawn(nvcc, args, { cwd: root });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('close', (code) => resolve({ code, out }));
  });
}

function demangle(names) {
  try {
    return execFileSync('c++filt', [], { input: names.join('\n'), encoding: 'utf8' }).trim().split('\n');
  } catch {
    return names;
  }
}

function shortName(full) {
  // mla::kernels::(anonymous namespace)::mlaDecodeKernel<DecodeTraits<64, 32, 2, 2, 512>, (ElemType)0>(DecodeArgs)
  const m = /::([A-Za-z0-9_]+Kernel)(<.*>)?\(/.exec(full);
  if (!m) return full;
  const args = (m[2] ?? '')
    .replace(/mla::kernels::\(anonymous namespace\)::/g, '')
    .replace(/\(mla::kernels::ElemType\)0/, 'bf16')
    .replace(/\(mla::kernels::ElemType\)1/, 'f16')
    .replace(/\(mla::kernels::SparseCache\)(\d)/, (_, k) => ['q-dtype cache', 'fp8 cache', 'fp8_ds_mla cache'][+k])
    // decode: fp8 cache, DeepSeek's dims, fp8 converted in registers where the target has the instruction (sm_89+)
    .replace(/, (true|false), (true|false), (true|false)>$/, (_, fp8, deepSeek) => `${fp8 === 'true' ? ', fp8 cache' : ''}${deepSeek === 'true' ? ', 576/512' : ''}>`)
    .replace(/, (true|false), (true|false)>$/, (_, fp8, deepSeek) => `${fp8 === 'true' ? ', fp8 cache' : ''}${deepSeek === 'true' ? ', 576/512' : ''}>`)
    .replace(/, true>$/, ', fp8 cache>')
    .replace(/, false>$/, '>');
  return m[1] + args;
}

const jobs = [];
for (const arch of archs) for (const src of sources) jobs.push({ arch, src });
const rows = [];
const problems = [];
let ptxHasMma = true;

async function compile({ arch, src }) {
  const cubin = path.join(tmp, `${src}.${arch}.cubin`);
  // -keep leaves the PTX of this compilation in keepDir, so the PTX checks below need no second nvcc run.
  const keepDir = path.join(tmp, `keep-${arch}-${src}`);
  mkdirSync(keepDir, { recursive: true });
  const { code, out } = await run(['-std=c++17', `-arch=sm_${arch}`, '-cubin', '-keep', '-keep-dir', keepDir, '-Xptxas', '-v', '-o', cubin, path.join('csrc', 'kernels', src)]);
  if (code !== 0) {
    problems.push(`sm_${arch} ${src}: nvcc failed\n${out}`);
    return;
  }
  let current = null;
  const found = [];
  for (const line of out.split('\n')) {
    let m = /Compiling entry function '([^']+)' for 'sm_(\d+)'/.exec(line);
    if (m) {
      current = { mangled: m[1], arch, src };
      found.push(current);
      continue;
    }
    m = /(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/.exec(line);
    if (m && current) Object.assign(current, { stack: +m[1], spillStores: +m[2], spillLoads: +m[3] });
    m = /Used (\d+) registers(?:.*?(\d+) bytes smem)?/.exec(line);
    if (m && current) Object.assign(current, { registers: +m[1], staticSmem: m[2] ? +m[2] : 0 });
  }
  const names = demangle(found.map((f) => f.mangled));
  found.forEach((f, i) => (f.kernel = shortName(names[i])));
  rows.push(...found);
  if (TENSOR_CORE_SOURCES.includes(src)) {
    const ptxFile = path.join(keepDir, src.replace(/\.cu$/, '.ptx'));
    const text = existsSync(ptxFile) ? readFileSync(ptxFile, 'utf8') : '';
    if (!/mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16/.test(text) || !/cp\.async\.cg\.shared\.global/.test(text)) {
      ptxHasMma = false;
      problems.push(`sm_${arch}: the PTX of ${src} has no mma.sync m16n8k16 or no cp.async`);
    }
  }
  rmSync(keepDir, { recursive: true, force: true });
}

// Two compilations at a time (the machines here have two cores).
const queue = [...jobs];
await Promise.all(
  [0, 1].map(async () => {
    while (queue.length) await compile(queue.shift());
  }),
);

// The decode configuration the backend picks on an architecture (the first, largest, that fits: decodeConfigFor), and
// the configuration of a decode kernel, by its tile shape (DecodeTraits<blockM, blockN, ...>).
const configFor = (arch) => Object.keys(shapes).find((c) => shapes[c].smemBytes <= SMEM_OPTIN[arch]) ?? 'none';
const configOf = (kernel) => {
  const m = /DecodeTraits<(\d+), (\d+)/.exec(kernel);
  return m && Object.keys(shapes).find((c) => shapes[c].blockM === +m[1] && shapes[c].blockN === +m[2]);
};
const prefillConfigFor = (arch) => (prefillShapes.large.smemBytes <= SMEM_OPTIN[arch] ? 'large' : 'small');
// A prefill instantiation's configuration from its traits, PrefillTraits<blockM, heads, blockN, stages>.
const prefillConfigOf = (kernel) =>
  ['large', 'small'].find((c) => kernel.includes(`PrefillTraits<${[prefillShapes[c].blockM, prefillShapes[c].heads, prefillShapes[c].blockN, prefillShapes[c].stages].join(', ')}>`));
for (const r of rows) {
  const decode = /mlaDecodeKernel/.test(r.kernel);
  r.config = decode ? configOf(r.kernel) : undefined;
  const shape = shapes[r.config];
  r.dynamicSmem = decode ? (/fp8 cache/.test(r.kernel) ? shape.smemBytesFp8 : shape.smemBytes) : 0;
  r.limit = SMEM_OPTIN[r.arch];
  r.usedOnArch = !decode || configFor(r.arch) === r.config;
  if (/mlaPrefillKernel/.test(r.kernel)) {
    const config = prefillConfigOf(r.kernel);
    if (!config) problems.push(`sm_${r.arch} ${r.kernel}: traits match neither prefill configuration of the addon`);
    r.dynamicSmem = config ? prefillShapes[config].smemBytes : 0;
    r.usedOnArch = prefillConfigFor(r.arch) === config;
  }
  if (r.spillStores || r.spillLoads) problems.push(`sm_${r.arch} ${r.kernel}: spills ${r.spillStores} bytes stored, ${r.spillLoads} loaded`);
  if (r.stack) problems.push(`sm_${r.arch} ${r.kernel}: ${r.stack} bytes of stack frame (local memory)`);
  if (r.registers > MAX_REGISTERS) problems.push(`sm_${r.arch} ${r.kernel}: ${r.registers} registers`);
  if (r.usedOnArch && r.staticSmem + r.dynamicSmem > r.limit) problems.push(`sm_${r.arch} ${r.kernel}: ${r.staticSmem + r.dynamicSmem} bytes of shared memory > ${r.limit}`);
}
for (const arch of archs) if (configFor(arch) === 'none') problems.push(`sm_${arch}: no decode configuration fits`);
for (const arch of archs) if (prefillShapes.small.smemBytes > SMEM_OPTIN[arch]) problems.push(`sm_${arch}: even the small prefill configuration does not fit`);

// SASS: tensor-core instructions (HMMA) and cp.async (LDGSTS) in TENSOR_CORE_SOURCES, for every architecture the
// disassembler knows.
const tool = await findCuobjdump();
let sassNote;
if (!tool.path) sassNote = `SASS not inspected: ${tool.reason} (the PTX check above stands in)`;
else {
  const missing = [], checked = [], beyond = [];
  for (const arch of archs) {
    let beyondArch = false;
    for (const src of TENSOR_CORE_SOURCES) {
      const sass = disassemble(tool, path.join(tmp, `${src}.${arch}.cubin`), arch);
      if (sass === null) beyondArch = true;
      // tensor cores for bf16 and f16, and the cp.async pipeline (LDGSTS: global to shared without registers)
      else if (!(/HMMA\.16816\.F32\.BF16/.test(sass) && /HMMA\.16816\.F32\b/.test(sass) && /LDGSTS/.test(sass))) missing.push(`sm_${arch} ${src}`);
    }
    (beyondArch ? beyond : checked).push(arch);
  }
  sassNote = `cuobjdump ${tool.version} (${tool.origin}): ` +
    (checked.length ? `HMMA.16816 (bf16 and f16) and LDGSTS in the SASS of ${TENSOR_CORE_SOURCES.join(', ')} for sm_${checked.join(', sm_')}` : 'no architecture inspected') +
    (beyond.length ? `; sm_${beyond.join(', sm_')} newer than this cuobjdump knows, PTX check only` : '');
  if (missing.length) {
    sassNote += `; HMMA or LDGSTS MISSING in ${missing.join(', ')}`;
    problems.push(`HMMA or LDGSTS missing in the SASS of ${missing.join(', ')}`);
  }
}

rows.sort((a, b) => a.arch - b.arch || a.kernel.localeCompare(b.kernel));
console.log('\narch    kernel                                                               regs  spill(st/ld)  stack  smem static+dynamic / limit');
for (const r of rows)
  console.log(
    `sm_${String(r.arch).padEnd(4)} ${r.kernel.padEnd(68).slice(0, 68)} ${String(r.registers).padStart(4)}  ${`${r.spillStores}/${r.spillLoads}`.padStart(12)}  ${String(r.stack).padStart(5)}  ${r.staticSmem}+${r.dynamicSmem} / ${r.limit}${r.usedOnArch ? '' : ' (not used here)'}`,
  );
console.log(`\ndecode configuration per architecture: ${archs.map((a) => `sm_${a} ${configFor(a)}`).join(', ')}`);
console.log(`prefill configuration per architecture: ${archs.map((a) => `sm_${a} ${prefillConfigFor(a)}`).join(', ')}`);
console.log(`tensor cores: PTX ${ptxHasMma ? 'has' : 'LACKS'} mma.sync m16n8k16 and cp.async in ${TENSOR_CORE_SOURCES.join(', ')}; ${sassNote}`);
mkdirSync(path.join(root, 'bench', 'results'), { recursive: true });
writeFileSync(path.join(root, 'bench', 'results', 'cuda-static.json'), JSON.stringify({ nvcc: execFileSync(nvcc, ['--version'], { encoding: 'utf8' }).trim().split('\n').pop(), archs, decodeShapes: shapes, prefillShapes, rows, sass: sassNote }, null, 2));
if (problems.length) {
  console.error(`\ncheck-cuda: ${problems.length} problem(s):\n- ${problems.join('\n- ')}`);
  process.exit(1);
}
console.log('check-cuda: no spills, no stack frames, registers and shared memory within every limit');
