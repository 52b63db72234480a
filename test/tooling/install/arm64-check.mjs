// The linux-arm64 install test's consumer (test/tooling/install/arm64.mjs), run under qemu by the arm64 Node in a
// project that installed the packed tarball: every operation whose CPU kernels differ per instruction set, on every
// CPU path this build lists (forced one after another with MLA_CPU_ISA), against mla-kernels/reference on random
// data from a printed seed. Outputs are poisoned (NaN) first, and every element must have been written.
//   decode: the DeepSeek width (576 = 512 + 64, the constant-stride kernels) at 16 heads, causal 2-token queries
//     over partial 64-row tiles, and an odd shape (tails of every vector loop); f32, bf16, f16 and an fp8 cache;
//     whole and split over KV chunks (cpuConfigure's splitRows);
//   append with RoPE (interleaved and neox), absorbQuery, unabsorbOutput: the conversions, axpy, dot and rope;
//   prefill: upProjectKv (the C = A Bᵀ blocks, odd sizes past one block) and mlaPrefill (a ragged causal batch with
//     cached context, more queries than one item takes, odd dims) on the up-projected keys and values.
// Arguments: a JSON object { seed, bounds } (bounds: the relative-error bound per dtype of test/helpers.ts).
// Prints one line "RESULT <json>": { paths, info, cases: [{ path, name, relErr, bound, unwritten }] }.
import { absorbQuery, appendLatentCache, info, mlaDecode, mlaPrefill, Tensor, unabsorbOutput, upProjectKv } from 'mla-kernels';
import { refAbsorbQuery, refAppendLatentCache, refMlaDecode, refMlaPrefill, refUnabsorbOutput, refUpProjectKv } from 'mla-kernels/reference';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const { seed, bounds } = JSON.parse(process.argv[2]);
// The CPU backend's own hooks (paths, forced split) are not public: reached through the installed native.js.
const pkgDir = path.dirname(createRequire(import.meta.url).resolve('mla-kernels/package.json'));
const { native } = await import(pathToFileURL(path.join(pkgDir, 'dist', 'native.js')).href);
const addon = native();

let state = seed >>> 0;
const next = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const values = (n, scale = 1) => Float64Array.from({ length: n }, () => (next() - 0.5) * 2 * scale);
const shuffle = (a) => {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
};
// A tensor of `dtype` and the values it holds (rounded to the dtype), for the reference.
async function random(shape, dtype, scale = 1) {
  const t = Tensor.fromValues(values(shape.reduce((a, b) => a * b, 1), scale), shape, dtype);
  return { t, dense: { data: await t.toFloat32(), shape } };
}
const poisoned = (shape, dtype) => Tensor.fromValues(new Float64Array(shape.reduce((a, b) => a * b, 1)).fill(NaN), shape, dtype);
const relErr = (got, ref) => {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) (num += (got[i] - ref[i]) ** 2), (den += ref[i] ** 2);
  return Math.sqrt(num / den);
};
const unwritten = (a) => a.reduce((n, v) => n + (Number.isNaN(v) ? 1 : 0), 0);

const cases = [];
async function record(pathName, name, dtype, got, ref) {
  cases.push({ path: pathName, name, relErr: relErr(got, ref), bound: bounds[dtype], unwritten: unwritten(got) });
}

async function decode(pathName, o) {
  const { dtype, heads, kvLoraRank, ropeDim, lens, blockSize, queryLen } = o;
  const width = kvLoraRank + ropeDim;
  const perSeq = Math.max(...lens.map((l) => Math.ceil(l / blockSize)));
  const numBlocks = perSeq * lens.length + 1;
  const ids = shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const blockTable = Tensor.from(Int32Array.from({ length: lens.length * perSeq }, (_, i) => ids[i]), [lens.length, perSeq]);
  const seqLens = Tensor.from(Int32Array.from(lens), [lens.length]);
  const cacheDtype = o.cacheDtype ?? dtype;
  const cache = await random([numBlocks, blockSize, width], cacheDtype, cacheDtype === 'fp8_e4m3' ? 2 : 1);
  const q = await random([lens.length, queryLen, heads, width], dtype);
  const softmaxScale = 1 / Math.sqrt(192);
  const causal = queryLen > 1;
  const out = poisoned([lens.length, queryLen, heads, kvLoraRank], dtype);
  const lse = poisoned([lens.length, heads, queryLen], 'f32');
  addon.cpuConfigure({ splitRows: o.splitRows ?? 0 });
  mlaDecode({ q: q.t, cache: cache.t, blockTable, seqLens, softmaxScale, kvLoraRank, causal, out, lse });
  const got = await out.toFloat32();
  const ref = refMlaDecode({ q: q.dense, cache: cache.dense, blockTable: { data: await blockTable.read(), shape: blockTable.shape }, seqLens: { data: lens, shape: [lens.length] }, softmaxScale, kvLoraRank, causal });
  const name = `decode ${dtype}${cacheDtype !== dtype ? ` (${cacheDtype} cache)` : ''} ${heads} heads, ${kvLoraRank}+${ropeDim}, lens [${lens}], queryLen ${queryLen}${o.splitRows ? `, split every ${o.splitRows} rows` : ''}`;
  await record(pathName, name, dtype, got, ref.out);
  const gotLse = await lse.toFloat32();
  let lseErr = 0;
  for (let i = 0; i < ref.lse.length; i++) lseErr = Math.max(lseErr, Math.abs(gotLse[i] - ref.lse[i]) / Math.max(1, Math.abs(ref.lse[i])));
  cases.push({ path: pathName, name: `${name}: lse`, relErr: lseErr, bound: 1e-4, unwritten: unwritten(gotLse) });
}

async function append(pathName, dtype, style) {
  const kvLoraRank = 36, ropeDim = 16, blockSize = 8, numBlocks = 3, tokens = 5, maxPos = 40;
  const width = kvLoraRank + ropeDim;
  const cache = await random([numBlocks, blockSize, width], dtype);
  const kvC = await random([tokens, kvLoraRank], dtype);
  const kPe = await random([tokens, ropeDim], dtype);
  const slots = Int32Array.from(shuffle(Array.from({ length: numBlocks * blockSize }, (_, i) => i)).slice(0, tokens));
  const positions = Int32Array.from({ length: tokens }, () => Math.floor(next() * maxPos));
  const angles = Float32Array.from({ length: maxPos * ropeDim / 2 }, (_, i) => Math.floor(i / (ropeDim / 2)) * 10000 ** (-(i % (ropeDim / 2)) / (ropeDim / 2)));
  const cos = angles.map(Math.cos), sin = angles.map(Math.sin);
  const t = (data, shape) => Tensor.from(data, shape);
  appendLatentCache({ cache: cache.t, kvC: kvC.t, kPe: kPe.t, slotMapping: t(slots, [tokens]), rope: { positions: t(positions, [tokens]), cos: t(cos, [maxPos, ropeDim / 2]), sin: t(sin, [maxPos, ropeDim / 2]), style } });
  const ref = refAppendLatentCache({ cache: cache.dense, kvC: kvC.dense, kPe: kPe.dense, slotMapping: { data: slots, shape: [tokens] }, rope: { positions: { data: positions, shape: [tokens] }, cos: { data: cos, shape: [maxPos, ropeDim / 2] }, sin: { data: sin, shape: [maxPos, ropeDim / 2] }, style } });
  await record(pathName, `append ${dtype}, RoPE ${style}`, dtype, await cache.t.toFloat32(), ref);
}

async function absorbUnabsorb(pathName, dtype) {
  const heads = 3, tokens = 2, nope = 24, rank = 40, ropeDim = 8, vDim = 20;
  const qNope = await random([tokens, heads, nope], dtype);
  const qPe = await random([tokens, heads, ropeDim], dtype);
  const wUk = await random([heads, nope, rank], dtype, 0.3);
  const qLat = poisoned([tokens, heads, rank + ropeDim], dtype);
  absorbQuery({ qNope: qNope.t, wUk: wUk.t, qPe: qPe.t, out: qLat });
  await record(pathName, `absorbQuery ${dtype}`, dtype, await qLat.toFloat32(), refAbsorbQuery({ qNope: qNope.dense, wUk: wUk.dense, qPe: qPe.dense }));
  const oLat = await random([tokens, heads, rank], dtype);
  const wUv = await random([heads, vDim, rank], dtype, 0.3);
  const out = poisoned([tokens, heads, vDim], dtype);
  unabsorbOutput({ oLat: oLat.t, wUv: wUv.t, out });
  await record(pathName, `unabsorbOutput ${dtype}`, dtype, await out.toFloat32(), refUnabsorbOutput({ oLat: oLat.dense, wUv: wUv.dense }));
}

async function prefill(pathName, dtype) {
  const heads = 3, nope = 40, ropeDim = 8, vDim = 24, rank = 72;
  const qLens = [5, 100], kvLens = [9, 133];
  const cu = (lens) => Int32Array.from(lens.reduce((acc, x) => [...acc, acc[acc.length - 1] + x], [0]));
  const cuQ = cu(qLens), cuKv = cu(kvLens);
  const totalQ = cuQ[qLens.length], totalKv = cuKv[kvLens.length];
  const kvC = await random([totalKv, rank], dtype);
  const wUk = await random([heads, nope, rank], dtype, 0.2);
  const wUv = await random([heads, vDim, rank], dtype, 0.2);
  const kNope = poisoned([totalKv, heads, nope], dtype), v = poisoned([totalKv, heads, vDim], dtype);
  upProjectKv({ kvC: kvC.t, wUk: wUk.t, wUv: wUv.t, kNope, v });
  const refUp = refUpProjectKv({ kvC: kvC.dense, wUk: wUk.dense, wUv: wUv.dense });
  const kNopeGot = await kNope.toFloat32(), vGot = await v.toFloat32();
  await record(pathName, `upProjectKv ${dtype}, ${totalKv} rows, ${heads} heads, ${nope}/${vDim} x ${rank}`, dtype, kNopeGot, refUp.kNope);
  await record(pathName, `upProjectKv ${dtype}: v`, dtype, vGot, refUp.v);
  // The attention reads the keys and values as the kernel wrote them (rounded to dtype), as the reference does.
  const q = await random([totalQ, heads, nope + ropeDim], dtype);
  const kPe = await random([totalKv, ropeDim], dtype);
  const softmaxScale = 1 / Math.sqrt(nope + ropeDim);
  const out = poisoned([totalQ, heads, vDim], dtype), lse = poisoned([totalQ, heads], 'f32');
  const cuSeqLensQ = Tensor.from(cuQ, [cuQ.length]), cuSeqLensKv = Tensor.from(cuKv, [cuKv.length]);
  mlaPrefill({ q: q.t, kNope, kPe: kPe.t, v, cuSeqLensQ, cuSeqLensKv, softmaxScale, causal: true, out, lse });
  const ref = refMlaPrefill({
    q: q.dense, kNope: { data: kNopeGot, shape: [totalKv, heads, nope] }, kPe: kPe.dense, v: { data: vGot, shape: [totalKv, heads, vDim] },
    cuSeqLensQ: { data: cuQ, shape: [cuQ.length] }, cuSeqLensKv: { data: cuKv, shape: [cuKv.length] }, softmaxScale, causal: true,
  });
  const name = `mlaPrefill ${dtype} causal, ${heads} heads, ${nope}+${ropeDim} v ${vDim}, qLens [${qLens}] kvLens [${kvLens}]`;
  await record(pathName, name, dtype, await out.toFloat32(), ref.out);
  const gotLse = await lse.toFloat32();
  let lseErr = 0;
  for (let i = 0; i < ref.lse.length; i++) lseErr = Math.max(lseErr, Math.abs(gotLse[i] - ref.lse[i]) / Math.max(1, Math.abs(ref.lse[i])));
  cases.push({ path: pathName, name: `${name}: lse`, relErr: lseErr, bound: 1e-4, unwritten: unwritten(gotLse) });
}

const paths = addon.cpuInfo().supported;
const seen = {};
for (const p of paths) {
  process.env.MLA_CPU_ISA = p; // read by the CPU backend at each operation
  seen[p] = addon.cpuInfo().simd;
  for (const dtype of ['f32', 'bf16', 'f16']) {
    await decode(p, { dtype, heads: 16, kvLoraRank: 512, ropeDim: 64, lens: [70, 133], blockSize: 16, queryLen: 2 });
    await decode(p, { dtype, heads: 5, kvLoraRank: 44, ropeDim: 10, lens: [9, 1, 67], blockSize: 4, queryLen: 1, splitRows: 16 });
    await append(p, dtype, dtype === 'bf16' ? 'neox' : 'interleaved');
    await absorbUnabsorb(p, dtype);
    await prefill(p, dtype);
  }
  await decode(p, { dtype: 'bf16', cacheDtype: 'fp8_e4m3', heads: 16, kvLoraRank: 512, ropeDim: 64, lens: [40, 70], blockSize: 16, queryLen: 1 });
}
addon.cpuConfigure({ splitRows: 0 });
delete process.env.MLA_CPU_ISA;
console.log('RESULT ' + JSON.stringify({ paths, forced: seen, info: info(), cases }));
