// Issue 16's cases 1-3 for the prefill and sparse-attention operations: the ordinary ArrayBuffer of an input, an index
// tensor or an output of gatherLatentCache, upProjectKv, mlaPrefill, mergeAttentionStates, mlaSparseDecode,
// mlaSparsePrefill, lightningIndexer or mlaDecode over an fp8_ds_mla cache is transferred or shrunk while the operation is queued, and a captured prefill is replayed while its lengths' arrays are taken away. LT_BACKEND, LT_METHOD (a key
// of DETACH). Each case reports as detach.mjs's do.
import { BF16_BOUND, DETACH, backend, busy, calibrateBusy, churn, detachOutput, device, endScribbler, mla, onDevice, outcome, plainArray, relErr, report, rng, settled, thrown } from './common.mjs';
import { ROLES } from './prefill-roles.mjs';
import { encodeDsMlaRow, refGatherLatentCache, refLightningIndexer, refMergeAttentionStates, refMlaDecode, refMlaPrefill, refMlaSparseDecode, refUpProjectKv, unpackDsMlaCache } from '../../../dist/reference.js';

const method = process.env.LT_METHOD ?? 'transfer';
const resizable = method === 'resize';
const { Tensor, Stream, gatherLatentCache, lightningIndexer, mergeAttentionStates, mlaDecode, mlaPrefill, mlaSparseDecode, mlaSparsePrefill, upProjectKv } = mla;
const random = rng(Number(process.env.LT_SEED ?? 1) + 7);
const HEADS = 2, NOPE = 16, ROPE = 16, V_DIM = 16, RANK = 32, BLOCK = 16;
// Two sequences: 5 new tokens over 20 keys and 3 over 9 (causal), their cached rows in blocks 1-2 and 3.
const CU_Q = [0, 5, 8], CU_KV = [0, 20, 29], TABLE = [1, 2, 3, 0], TOTAL_Q = 8, TOTAL_KV = 29;
// Sparse attention: top-8 slots of the 4-block cache per decode query (duplicates, padding), rows of the 29 per prefill
// token; an indexer of 2 heads of 16 over the same two sequences' 20 and 9 positions.
const TOPK = 8, INDEXER_HEADS = 2, INDEX_DIM = 16;
const DECODE_INDICES = [3, 3, -1, 17, 40, 63, 0, 22, 5, -1, 9, 9, 31, 48, 12, 60];
const PREFILL_INDICES = Array.from({ length: TOTAL_Q * TOPK }, (_, i) => (i % 5 === 4 ? -1 : (i * 7) % TOTAL_KV));

// A caller's array over an ordinary (or resizable) ArrayBuffer and the values the reference reads.
const numel = (shape) => shape.reduce((a, b) => a * b, 1);
function bf16(shape, scale = 1) {
  const bits = mla.toBf16Array(random.normal(numel(shape)).map((x) => x * scale));
  return { array: plainArray(Uint16Array, bits, resizable), shape, dtype: 'bf16', values: mla.bf16ToFloat32(bits) };
}
const f32 = (shape) => {
  const values = Float32Array.from(random.normal(numel(shape)));
  return { array: plainArray(Float32Array, values, resizable), shape, dtype: 'f32', values };
};
const i32 = (values, shape = [values.length]) => ({ array: plainArray(Int32Array, values, resizable), shape, values: Int32Array.from(values), index: true });
const dense = (a) => ({ data: Float64Array.from(a.values), shape: a.shape });
// An fp8_ds_mla cache of random rows (the TypeScript encoder's bytes) and the values it holds: its rank a whole tile.
const DS_RANK = 128;
function dsMlaCache(shape) {
  const [blocks, blockSize] = shape;
  const rows = Array.from({ length: blocks * blockSize }, () => encodeDsMlaRow(random.normal(DS_RANK).map((x) => 2 * x), random.normal(ROPE)));
  const bytes = new Uint8Array(rows.length * rows[0].length);
  rows.forEach((r, i) => bytes.set(r, i * r.length));
  const full = [blocks, blockSize, rows[0].length];
  return { array: plainArray(Uint8Array, bytes, resizable), shape: full, dtype: 'fp8_ds_mla', values: unpackDsMlaCache(bytes, full, DS_RANK).data };
}

// Each op: its inputs, the output checked (name, shape, dtype), the call, and the output's reference.
const OPS = {
  gatherLatentCache: () => {
    const inputs = { cache: bf16([4, BLOCK, RANK + ROPE]), blockTable: i32(TABLE, [2, 2]), cuSeqLens: i32(CU_KV) };
    const ref = refGatherLatentCache({ cache: dense(inputs.cache), blockTable: dense(inputs.blockTable), cuSeqLens: dense(inputs.cuSeqLens), kvLoraRank: RANK }).kvC;
    return { inputs, output: ['kvC', [TOTAL_KV, RANK], 'bf16'], call: (a) => gatherLatentCache({ ...a, kvLoraRank: RANK }), ref };
  },
  upProjectKv: () => {
    const inputs = { kvC: bf16([TOTAL_KV, RANK]), wUk: bf16([HEADS, NOPE, RANK], 0.3), wUv: bf16([HEADS, V_DIM, RANK], 0.3) };
    const ref = refUpProjectKv({ kvC: dense(inputs.kvC), wUk: dense(inputs.wUk), wUv: dense(inputs.wUv) }).v;
    return { inputs, output: ['v', [TOTAL_KV, HEADS, V_DIM], 'bf16'], call: upProjectKv, ref };
  },
  mlaPrefill: () => {
    const inputs = {
      q: bf16([TOTAL_Q, HEADS, NOPE + ROPE]),
      kNope: bf16([TOTAL_KV, HEADS, NOPE]),
      kPe: bf16([TOTAL_KV, ROPE]),
      v: bf16([TOTAL_KV, HEADS, V_DIM]),
      cuSeqLensQ: i32(CU_Q),
      cuSeqLensKv: i32(CU_KV),
    };
    const softmaxScale = 1 / Math.sqrt(NOPE + ROPE);
    const ref = refMlaPrefill({ ...Object.fromEntries(Object.entries(inputs).map(([k, a]) => [k, dense(a)])), softmaxScale, causal: true }).out;
    return { inputs, output: ['out', [TOTAL_Q, HEADS, V_DIM], 'bf16'], call: (a) => mlaPrefill({ ...a, softmaxScale, causal: true }), ref };
  },
  mergeAttentionStates: () => {
    const inputs = { outA: bf16([TOTAL_Q, HEADS, V_DIM]), lseA: f32([TOTAL_Q, HEADS]), outB: bf16([TOTAL_Q, HEADS, V_DIM]), lseB: f32([TOTAL_Q, HEADS]) };
    const ref = refMergeAttentionStates({ outA: dense(inputs.outA), lseA: dense(inputs.lseA), outB: dense(inputs.outB), lseB: dense(inputs.lseB) }).out;
    return { inputs, output: ['out', [TOTAL_Q, HEADS, V_DIM], 'bf16'], call: mergeAttentionStates, ref };
  },
  mlaSparseDecode: () => {
    const inputs = { q: bf16([2, 1, HEADS, RANK + ROPE]), cache: bf16([4, BLOCK, RANK + ROPE]), indices: i32(DECODE_INDICES, [2, 1, TOPK]) };
    const ref = refMlaSparseDecode({ q: dense(inputs.q), cache: dense(inputs.cache), indices: dense(inputs.indices), softmaxScale: 0.2, kvLoraRank: RANK }).out;
    return { inputs, output: ['out', [2, 1, HEADS, RANK], 'bf16'], call: (a) => mlaSparseDecode({ ...a, softmaxScale: 0.2, kvLoraRank: RANK }), ref };
  },
  mlaSparsePrefill: () => {
    const inputs = { q: bf16([TOTAL_Q, HEADS, RANK + ROPE]), kv: bf16([TOTAL_KV, RANK + ROPE]), indices: i32(PREFILL_INDICES, [TOTAL_Q, TOPK]) };
    // The prefill is the sparse decode of one sequence over a cache of one-row blocks.
    const ref = refMlaSparseDecode({
      q: { ...dense(inputs.q), shape: [1, TOTAL_Q, HEADS, RANK + ROPE] },
      cache: { ...dense(inputs.kv), shape: [TOTAL_KV, 1, RANK + ROPE] },
      indices: { ...dense(inputs.indices), shape: [1, TOTAL_Q, TOPK] },
      softmaxScale: 0.2,
      kvLoraRank: RANK,
    }).out;
    return { inputs, output: ['out', [TOTAL_Q, HEADS, RANK], 'bf16'], call: (a) => mlaSparsePrefill({ ...a, softmaxScale: 0.2, kvLoraRank: RANK }), ref };
  },
  lightningIndexer: () => {
    const inputs = {
      q: bf16([2, 1, INDEXER_HEADS, INDEX_DIM]),
      weights: f32([2, 1, INDEXER_HEADS]),
      cache: bf16([4, BLOCK, INDEX_DIM]),
      blockTable: i32(TABLE, [2, 2]),
      seqLens: i32([CU_KV[1], CU_KV[2] - CU_KV[1]]),
    };
    const ref = refLightningIndexer({ ...Object.fromEntries(Object.entries(inputs).map(([k, a]) => [k, dense(a)])), topk: TOPK }).scores;
    return { inputs, output: ['scores', [2, 1, TOPK], 'f32'], call: (a) => lightningIndexer({ ...a, topk: TOPK }), ref };
  },
  mlaDecodeDsMla: () => {
    const inputs = { q: bf16([2, 2, HEADS, DS_RANK + ROPE], 0.3), cache: dsMlaCache([4, BLOCK]), blockTable: i32(TABLE, [2, 2]), seqLens: i32([CU_KV[1], CU_KV[2] - CU_KV[1]]) };
    const ref = refMlaDecode({ ...Object.fromEntries(Object.entries(inputs).map(([k, a]) => [k, dense(a)])), cache: { data: Float64Array.from(inputs.cache.values), shape: [4, BLOCK, DS_RANK + ROPE] }, softmaxScale: 0.1, kvLoraRank: DS_RANK, causal: true }).out;
    return { inputs, output: ['out', [2, 2, HEADS, DS_RANK], 'bf16'], call: (a) => mlaDecode({ ...a, softmaxScale: 0.1, kvLoraRank: DS_RANK, causal: true }), ref };
  },
};

const tensorOf = (a) => Tensor.from(a.array, a.shape, a.dtype);

// One operation queued behind ~0.4 s of work, then the array of `role` taken away.
async function roleCase(op, role) {
  const stream = new Stream(device);
  const p = OPS[op]();
  busy(stream);
  const host = Object.fromEntries(Object.entries(p.inputs).map(([k, a]) => [k, tensorOf(a)]));
  const args = Object.fromEntries(Object.entries(host).map(([k, t]) => [k, p.inputs[k].index ? t : onDevice(t, stream)]));
  args.stream = stream;
  const [outName, outShape, outDType] = p.output;
  let read;
  let again;
  let detachedAt;
  if (role === outName) {
    ({ read, again, detachedAt } = detachOutput(method, resizable, stream, { name: outName, shape: outShape, dtype: outDType, call: (extra) => p.call({ ...args, ...extra }) }));
  } else {
    const out = p.call(args)[outName];
    DETACH[method](p.inputs[role].array);
    detachedAt = performance.now();
    churn();
    read = out.toFloat32().then((got) => `relErr ${relErr(got, p.ref)}`);
    again = () => p.call({ ...args, [role]: p.inputs[role].index ? host[role] : onDevice(host[role], stream) });
  }
  const sync = await outcome(stream.synchronize());
  const queuedMs = performance.now() - detachedAt;
  const result = await settled(read);
  results.push({ case: `${op} ${role} ${method}`, queuedMs, sync, result, again: thrown(again) });
  stream.dispose();
}

// A captured prefill replayed while its lengths' arrays (and, on the CPU, its output's array) are taken away.
async function graphCase() {
  const stream = new Stream(device);
  const p = OPS.mlaPrefill();
  const host = Object.fromEntries(Object.entries(p.inputs).map(([k, a]) => [k, tensorOf(a)]));
  const args = Object.fromEntries(Object.entries(host).map(([k, t]) => [k, p.inputs[k].index ? t : onDevice(t, stream)]));
  const outArray = plainArray(Uint16Array, new Array(numel(p.output[1])).fill(0x7fc0), resizable);
  const out = device === 'cpu' ? Tensor.from(outArray, p.output[1], 'bf16') : Tensor.empty(p.output[1], 'bf16', { device });
  await stream.synchronize();
  const graph = stream.capture(() => void p.call({ ...args, out, stream }));
  graph.replay();
  const first = await settled(out.toFloat32().then((got) => `relErr ${relErr(got, p.ref)}`));
  busy(stream);
  graph.replay();
  DETACH[method](p.inputs.cuSeqLensQ.array);
  DETACH[method](p.inputs.cuSeqLensKv.array);
  if (device === 'cpu') DETACH[method](outArray);
  const detachedAt = performance.now();
  churn();
  const sync = await outcome(stream.synchronize());
  const queuedMs = performance.now() - detachedAt;
  const result = await settled(out.toFloat32().then((got) => `relErr ${relErr(got, p.ref)}`));
  const replayAfter = thrown(() => graph.replay());
  graph.dispose();
  stream.dispose();
  results.push({ case: `graph ${method}`, queuedMs, first, sync, result, replayAfter });
}

const results = [];
await calibrateBusy();
for (const [op, roles] of Object.entries(ROLES))
  for (const role of roles) {
    console.log(`case ${op} ${role} ${method} on ${backend}`); // the last line printed names a case that crashed
    await roleCase(op, role);
  }
console.log(`case graph ${method} on ${backend}`);
await graphCase();
await endScribbler();
churn();
report({ backend, method, bound: BF16_BOUND, results });
