// The abuse run (test/conformance/abuse.test.ts): for LT_SECONDS, random interleavings of operations (the sparse
// attention's indexer and decode among them), graph captures and replays, tensor, graph and stream disposal, detached,
// transferred and shrunk buffers and Worker terminations, on several streams of each backend in LT_BACKENDS, from seed
// LT_SEED. Jobs whose inputs are left alone must match the reference; abused ones may end in an MlaError, never in
// anything else. Reports the counts.
import { Worker } from 'node:worker_threads';
import { DETACH, churn, endScribbler, mla, report, rng } from './common.mjs';
import { refAbsorbQuery, refAppendLatentCache, refGatherLatentCache, refLightningIndexer, refMlaDecode, refMlaPrefill, refMlaSparseDecode, refUnabsorbOutput, refUpProjectKv } from '../../../dist/reference.js';

const { Tensor, Stream, MlaError, mlaDecode, absorbQuery, unabsorbOutput, appendLatentCache, gatherLatentCache, upProjectKv, mlaPrefill, mergeAttentionStates, lightningIndexer, mlaSparseDecode } =
  mla;
const seconds = Number(process.env.LT_SECONDS ?? 60);
const seed = Number(process.env.LT_SEED ?? 1);
const backends = (process.env.LT_BACKENDS ?? 'cpu').split(',');
const BOUND = { f32: 1e-5, bf16: 1.2e-2 };

const { next: rand } = rng(seed);
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
const chance = (p) => rand() < p;
const normal = (n, scale = 1) => Array.from({ length: n }, () => (rand() + rand() + rand() - 1.5) * 2 * scale);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const counts = { clean: 0, abused: 0, abusedFailed: 0, cleanByKind: {}, streamsDisposed: 0, workersStarted: 0, workersEnded: 0, detached: 0, disposed: 0, refusedAtCall: 0 };
const failures = []; // clean results off the reference, and anything thrown that is not an MlaError

const devices = backends.map((b) => (b === 'cpu' ? 'cpu' : `${b}:0`));
const streams = new Map(devices.map((d) => [d, Array.from({ length: 3 }, () => new Stream(d))]));
const streamOn = (device) => pick(streams.get(device));

// The values of a dtype's rounding (bf16 through its bit patterns).
const rounded = (values, dtype) => (dtype === 'bf16' ? Float64Array.from(mla.bf16ToFloat32(mla.toBf16Array(values))) : Float64Array.from(Float32Array.from(values)));

// A host tensor of `values` in one of the memories a caller may give: an ordinary or resizable ArrayBuffer (which
// the run may take away), a SharedArrayBuffer, or the package's own. Returns the tensor and what could be detached.
function hostTensor(values, shape, dtype) {
  const kind = pick(['plain', 'resizable', 'shared', 'package']);
  const bits = dtype === 'bf16' ? mla.toBf16Array(values) : dtype === 'i32' ? Int32Array.from(values) : Float32Array.from(values);
  if (kind === 'package') return { t: dtype === 'i32' ? Tensor.from(bits, shape) : Tensor.fromValues(values, shape, dtype), array: null };
  const bytes = bits.byteLength;
  const buffer = kind === 'shared' ? new SharedArrayBuffer(bytes) : kind === 'resizable' ? new ArrayBuffer(bytes, { maxByteLength: bytes * 2 }) : new ArrayBuffer(bytes);
  const array = new bits.constructor(buffer, 0, bits.length);
  array.set(bits);
  return { t: Tensor.from(array, shape, dtype === 'i32' ? undefined : dtype), array: kind === 'shared' ? null : array };
}

// Takes a caller's array away, by a method that works on it (only resizable buffers shrink); false when it was gone.
function detach(array) {
  if (array.buffer.byteLength === 0) return false;
  DETACH[array.buffer.resizable && chance(0.5) ? 'resize' : pick(['transfer', 'worker'])](array);
  counts.detached++;
  return true;
}

// Runs `fn`, which may throw only MlaErrors (then counted as refused at the call).
function attempt(fn) {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof MlaError)) failures.push(`thrown, not an MlaError: ${e?.stack ?? e}`);
    counts.refusedAtCall++;
    return undefined;
  }
}

// One job: a small computation on fresh inputs across random streams of one device, its reference, and for an
// abused job a list of things done to it at random moments while it is queued.
async function job(device) {
  const abused = chance(0.4);
  const kind = pick(['chain', 'append', 'graph', 'prefill', 'sparse']);
  const dtype = device === 'cpu' && chance(0.5) ? 'f32' : 'bf16';
  const heads = int(1, 3), rank = 16 * int(1, 2), rope = 16, nope = 16, vDim = 8 * int(1, 2), blockSize = int(1, 3) * 8;
  const width = rank + rope, batch = int(1, 2), lens = Array.from({ length: batch }, () => int(0, 40));
  if (kind === 'prefill' && lens.every((n) => n === 0)) lens[0] = 1; // something to attend to
  const blocksPer = Math.max(1, Math.ceil(Math.max(...lens) / blockSize)), numBlocks = batch * blocksPer + 1;
  const upload = (h, s) => (device === 'cpu' ? h.t : h.t.to(device, { stream: s }));
  const sA = streamOn(device), sB = streamOn(device), sC = streamOn(device);
  const arrays = []; // [array, its tensor]
  const tensors = [];
  const host = (values, shape, dt = dtype) => {
    const h = hostTensor(values, shape, dt);
    if (h.array) arrays.push([h.array, h.t]);
    tensors.push(h.t);
    return h;
  };
  const qNopeV = normal(batch * heads * nope), qPeV = normal(batch * heads * rope), wUkV = normal(heads * nope * rank, 0.3), wUvV = normal(heads * vDim * rank, 0.3);
  const cacheV = normal(numBlocks * blockSize * width);
  const table = Array.from({ length: batch * blocksPer }, (_, i) => 1 + ((i * 7) % (numBlocks - 1)));
  const scale = 1 / Math.sqrt(width);
  const qNope = host(qNopeV, [batch, 1, heads, nope]), qPe = host(qPeV, [batch, 1, heads, rope]), wUk = host(wUkV, [heads, nope, rank]), wUv = host(wUvV, [heads, vDim, rank]);
  const cache = host(cacheV, [numBlocks, blockSize, width]);
  const blockTable = host(table, [batch, blocksPer], 'i32'), seqLens = host(lens, [batch], 'i32');
  const dense = (values, shape) => ({ data: rounded(values, dtype), shape });
  let cacheRef = rounded(cacheV, dtype);
  let kvC, kPe, slots;
  if (kind === 'append') {
    const tokens = int(1, 4);
    const kvV = normal(tokens * rank), kpV = normal(tokens * rope);
    const slotV = Array.from({ length: tokens }, (_, i) => (i < numBlocks * blockSize ? i * 3 : -1));
    kvC = host(kvV, [tokens, rank]);
    kPe = host(kpV, [tokens, rope]);
    slots = host(slotV, [tokens], 'i32');
    cacheRef = refAppendLatentCache({ cache: { data: cacheRef, shape: [numBlocks, blockSize, width] }, kvC: dense(kvV, [tokens, rank]), kPe: dense(kpV, [tokens, rope]), slotMapping: { data: slotV, shape: [tokens] } });
  }
  const q = refAbsorbQuery({ qNope: dense(qNopeV, [batch, 1, heads, nope]), wUk: dense(wUkV, [heads, nope, rank]), qPe: dense(qPeV, [batch, 1, heads, rope]) });
  // prefill: each sequence's cached rows gathered and up-projected, a causal prefill of its last few tokens over them,
  // merged with itself (the same result); captured and replayed now and then.
  const qLens = lens.map((n) => Math.min(n, int(1, 4)));
  const cumulative = (xs) => xs.reduce((acc, x) => [...acc, acc[acc.length - 1] + x], [0]);
  const cuQ = cumulative(qLens), cuKv = cumulative(lens);
  const pqV = normal(cuQ[batch] * heads * (nope + rope));
  let pq, cuSeqLensQ, cuSeqLensKv, prefillRef;
  if (kind === 'prefill') {
    pq = host(pqV, [cuQ[batch], heads, nope + rope]);
    cuSeqLensQ = host(cuQ, [batch + 1], 'i32');
    cuSeqLensKv = host(cuKv, [batch + 1], 'i32');
    const rows = refGatherLatentCache({ cache: { data: cacheRef, shape: [numBlocks, blockSize, width] }, blockTable: { data: table, shape: [batch, blocksPer] }, cuSeqLens: { data: cuKv, shape: [batch + 1] }, kvLoraRank: rank });
    const up = refUpProjectKv({ kvC: { data: rows.kvC, shape: [cuKv[batch], rank] }, wUk: dense(wUkV, [heads, nope, rank]), wUv: dense(wUvV, [heads, vDim, rank]) });
    prefillRef = refMlaPrefill({
      q: dense(pqV, [cuQ[batch], heads, nope + rope]),
      kNope: { data: rounded(up.kNope, dtype), shape: [cuKv[batch], heads, nope] },
      kPe: { data: rows.kPe, shape: [cuKv[batch], rope] },
      v: { data: rounded(up.v, dtype), shape: [cuKv[batch], heads, vDim] },
      cuSeqLensQ: { data: cuQ, shape: [batch + 1] },
      cuSeqLensKv: { data: cuKv, shape: [batch + 1] },
      softmaxScale: scale,
      causal: true,
    }).out;
  }
  // sparse: the lightning indexer over a key cache of small integers (its selection exact, ties included) and the
  // sparse decode over the rows it selects; captured and replayed now and then.
  const indexerHeads = int(1, 4), indexDim = 16, topk = int(1, 12);
  const smallInts = (n, m) => Array.from({ length: n }, () => int(-m, m));
  let iq, iw, keys, sq, sparseRef;
  if (kind === 'sparse') {
    const iqV = smallInts(batch * indexerHeads * indexDim, 2), iwV = smallInts(batch * indexerHeads, 2), keyV = smallInts(numBlocks * blockSize * indexDim, 1);
    const sqV = normal(batch * heads * width);
    iq = host(iqV, [batch, 1, indexerHeads, indexDim]);
    iw = host(iwV, [batch, 1, indexerHeads], 'f32');
    keys = host(keyV, [numBlocks, blockSize, indexDim]);
    sq = host(sqV, [batch, 1, heads, width]);
    const selected = refLightningIndexer({
      q: { data: iqV, shape: [batch, 1, indexerHeads, indexDim] },
      weights: { data: iwV, shape: [batch, 1, indexerHeads] },
      cache: { data: keyV, shape: [numBlocks, blockSize, indexDim] },
      blockTable: { data: table, shape: [batch, blocksPer] },
      seqLens: { data: lens, shape: [batch] },
      topk,
    }).indices;
    sparseRef = refMlaSparseDecode({
      q: dense(sqV, [batch, 1, heads, width]),
      cache: { data: rounded(cacheRef, dtype), shape: [numBlocks, blockSize, width] },
      indices: { data: selected, shape: [batch, 1, topk] },
      softmaxScale: scale,
      kvLoraRank: rank,
    }).out;
  }
  const oLat = refMlaDecode({ q: { data: rounded(q, dtype), shape: [batch, 1, heads, width] }, cache: { data: rounded(cacheRef, dtype), shape: [numBlocks, blockSize, width] }, blockTable: { data: table, shape: [batch, blocksPer] }, seqLens: { data: lens, shape: [batch] }, softmaxScale: scale, kvLoraRank: rank }).out;
  const ref = kind === 'prefill' ? prefillRef : kind === 'sparse' ? sparseRef : refUnabsorbOutput({ oLat: { data: rounded(oLat, dtype), shape: [batch, 1, heads, rank] }, wUv: dense(wUvV, [heads, vDim, rank]) });

  // Everything queued at once (a clean job must not meet a stream the run disposes between two of its calls).
  let graph = null;
  const queue = () => {
    const devCache = upload(cache, sA);
    const args = { blockTable: blockTable.t, seqLens: seqLens.t, softmaxScale: scale, kvLoraRank: rank };
    if (kind === 'append') appendLatentCache({ cache: devCache, kvC: upload(kvC, sA), kPe: upload(kPe, sA), slotMapping: slots.t, stream: sA });
    let out;
    if (kind === 'prefill') {
      const [dq, dWuk, dWuv] = [pq, wUk, wUv].map((h) => upload(h, sB));
      const steps = (s1, s2, s3) => {
        const g = gatherLatentCache({ cache: devCache, blockTable: blockTable.t, cuSeqLens: cuSeqLensKv.t, kvLoraRank: rank, stream: s1 });
        const up = upProjectKv({ kvC: g.kvC, wUk: dWuk, wUv: dWuv, stream: s2 });
        const p = mlaPrefill({ q: dq, kNope: up.kNope, kPe: g.kPe, v: up.v, cuSeqLensQ: cuSeqLensQ.t, cuSeqLensKv: cuSeqLensKv.t, softmaxScale: scale, causal: true, stream: s3 });
        out = mergeAttentionStates({ outA: p.out, lseA: p.lse, outB: p.out, lseB: p.lse, stream: s1 }).out;
      };
      if (chance(0.5)) {
        graph = sB.capture(() => steps(sB, sB, sB));
        for (let i = int(1, 3); i > 0; i--) graph.replay();
      } else steps(sA, sB, sC);
    } else if (kind === 'sparse') {
      const [dIq, dIw, dKeys, dSq] = [iq, iw, keys, sq].map((h) => upload(h, sA));
      const steps = (s1, s2) => {
        const { indices } = lightningIndexer({ q: dIq, weights: dIw, cache: dKeys, blockTable: blockTable.t, seqLens: seqLens.t, topk, stream: s1 });
        out = mlaSparseDecode({ q: dSq, cache: devCache, indices, softmaxScale: scale, kvLoraRank: rank, stream: s2 }).out;
      };
      if (chance(0.5)) {
        graph = sB.capture(() => steps(sB, sB));
        for (let i = int(1, 3); i > 0; i--) graph.replay();
      } else steps(sA, sB);
    } else if (kind === 'graph') {
      const [dNope, dPe, dWuk, dWuv] = [qNope, qPe, wUk, wUv].map((h) => upload(h, sB));
      graph = sB.capture(() => {
        const dq = absorbQuery({ qNope: dNope, wUk: dWuk, qPe: dPe, stream: sB });
        out = unabsorbOutput({ oLat: mlaDecode({ q: dq, cache: devCache, ...args, stream: sB }).out, wUv: dWuv, stream: sB });
      });
      for (let i = int(1, 3); i > 0; i--) graph.replay();
    } else {
      const dq = absorbQuery({ qNope: upload(qNope, sA), wUk: upload(wUk, sA), qPe: upload(qPe, sA), stream: sA });
      out = unabsorbOutput({ oLat: mlaDecode({ q: dq, cache: devCache, ...args, stream: sB }).out, wUv: upload(wUv, sC), stream: sC });
    }
    // The caller's own array for the result too, now and then (written back when the copy completes).
    return chance(0.3) ? host(new Array(out.numel).fill(0), out.shape).t.copyFrom(out, { stream: pick([sA, sC]) }) : out;
  };
  // The abuses, each at a random moment while the job is in flight.
  const abuse = async () => {
    for (let i = int(1, 3); i > 0; i--) {
      if (chance(0.5)) await sleep(int(0, 8));
      const r = rand();
      let gone = null;
      if (arrays.length && r < 0.5) {
        const [array, t] = pick(arrays);
        if (detach(array)) gone = t;
      } else if (graph && r < 0.6) {
        if (chance(0.5)) graph.dispose();
        else attempt(() => graph.replay());
      } else {
        gone = pick(tensors);
        gone.dispose();
        counts.disposed++;
      }
      // What is gone is refused, with E_DISPOSED, by the next operation that names it.
      if (gone && gone.numel > 0) {
        const refused = attempt(() => Tensor.zeros(gone.shape, gone.dtype).copyFrom(gone));
        if (refused !== undefined) failures.push(`a ${gone.disposed ? 'disposed' : 'detached'} tensor was used without an error`);
      }
    }
  };
  let got;
  let abusing = null;
  try {
    const back = queue();
    if (abused) abusing = abuse();
    got = await back.toFloat32().catch((e) => { if (!(e instanceof MlaError)) e.message += ` [${String(back)} numel ${back.numel}]`; throw e; });
  } catch (e) {
    got = e;
  }
  await abusing;
  if (abused) {
    counts.abused++;
    if (got instanceof Error) {
      counts.abusedFailed++;
      if (!(got instanceof MlaError)) failures.push(`abused ${kind} on ${device}: not an MlaError: ${got.stack}`);
    }
    return;
  }
  counts.clean++;
  counts.cleanByKind[`${kind} ${device}`] = (counts.cleanByKind[`${kind} ${device}`] ?? 0) + 1;
  if (got instanceof Error) {
    failures.push(`clean ${kind} on ${device} (${dtype}) failed: ${got.code ?? ''} ${got.message}`);
    return;
  }
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (got[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  const err = den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
  if (!(err <= BOUND[dtype])) failures.push(`clean ${kind} on ${device} (${dtype}): relErr ${err} > ${BOUND[dtype]}`);
}

// Workers that do their own work on the addon and end at random.
const workers = new Set();
function startWorker() {
  const mode = pick(['terminate', 'terminate', 'exit', 'throw', 'finish']);
  const w = new Worker(new URL('./worker-task.mjs', import.meta.url), { workerData: { mode }, env: { ...process.env, LT_BACKEND: pick(backends) }, stdout: true, stderr: true });
  w.on('error', () => {});
  counts.workersStarted++;
  const entry = { w, exited: new Promise((r) => w.once('exit', r)).then(() => counts.workersEnded++) };
  workers.add(entry);
  entry.exited.then(() => workers.delete(entry));
}

const deadline = Date.now() + seconds * 1000;
const inFlight = new Set();
while (Date.now() < deadline) {
  const r = rand();
  if (r < 0.55 || inFlight.size === 0) {
    const p = job(pick(devices)).catch((e) => failures.push(`job threw: ${e?.stack ?? e}`));
    inFlight.add(p);
    p.finally(() => inFlight.delete(p));
  } else if (r < 0.62) {
    // A stream disposed with work queued (its queued work still runs), and a new one in its place.
    const list = streams.get(pick(devices));
    const i = int(0, list.length - 1);
    list[i].dispose();
    list[i] = new Stream(list[i].device);
    counts.streamsDisposed++;
  } else if (r < 0.67 && workers.size < 3) startWorker();
  else if (r < 0.72 && workers.size > 0) {
    const entry = pick([...workers]);
    attempt(() => void entry.w.terminate());
  } else if (r < 0.75) churn();
  else await sleep(int(0, 4));
  while (inFlight.size > 16) await Promise.race(inFlight);
}
await Promise.all(inFlight);
for (const { w } of workers) await w.terminate();
await Promise.all([...workers].map((e) => e.exited));
for (const list of streams.values()) for (const s of list) await s.synchronize().catch(() => {});
await endScribbler();
report({ seconds, seed, backends, counts, failures: failures.slice(0, 20), failureCount: failures.length });
