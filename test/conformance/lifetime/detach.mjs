// Issue 16, cases 1-3: the ordinary ArrayBuffer under a Tensor.from array is transferred (structuredClone, a Worker)
// or shrunk while an operation or a graph replay that uses it is queued. LT_BACKEND, LT_METHOD (a key of DETACH).
// Each case reports the stream's outcome, the result (error against the reference, or how reading it ended) and
// what using the tensor again gives.
import { BF16_BOUND, DETACH, backend, busy, calibrateBusy, churn, detachOutput, device, endScribbler, mla, onDevice, outcome, plainArray, problem, relErr, report, settled, thrown } from './common.mjs';

const method = process.env.LT_METHOD ?? 'transfer';
const resizable = method === 'resize';
const seed = Number(process.env.LT_SEED ?? 1);
const { Tensor, Stream, mlaDecode } = mla;
const results = [];

function hostTensors(p) {
  return {
    q: Tensor.from(p.arrays.q, p.shapes.q, 'bf16'),
    cache: Tensor.from(p.arrays.cache, p.shapes.cache, 'bf16'),
    blockTable: Tensor.from(p.arrays.blockTable, p.shapes.blockTable),
    seqLens: Tensor.from(p.arrays.seqLens, p.shapes.seqLens),
  };
}

// One operation queued behind ~0.4 s of work, then the array of `role` taken away.
async function roleCase(role, i) {
  const stream = new Stream(device);
  const p = problem(seed + i, { resizable });
  busy(stream);
  const host = hostTensors(p);
  const q = onDevice(host.q, stream);
  const cache = onDevice(host.cache, stream);
  const args = { q, cache, blockTable: host.blockTable, seqLens: host.seqLens, softmaxScale: p.softmaxScale, kvLoraRank: p.rank, stream };
  let read;
  let again;
  let detachedAt;
  if (role === 'out') {
    ({ read, again, detachedAt } = detachOutput(method, resizable, stream, { name: 'out', shape: p.shapes.out, dtype: 'bf16', call: (extra) => mlaDecode({ ...args, ...extra }) }));
  } else {
    const { out } = mlaDecode(args);
    DETACH[method](p.arrays[role]);
    detachedAt = performance.now();
    churn();
    read = out.toFloat32().then((got) => `relErr ${relErr(got, p.ref.out)}`);
    again = () => mlaDecode({ ...args, [role]: role === 'q' || role === 'cache' ? onDevice(host[role], stream) : host[role] });
  }
  const sync = await outcome(stream.synchronize());
  const queuedMs = performance.now() - detachedAt; // the operation ran after this much of the work ahead of it
  const result = await settled(read);
  results.push({ case: `${role} ${method}`, queuedMs, sync, result, again: thrown(again) });
  stream.dispose();
}

// A captured decode replayed while its index arrays (and, on the CPU, its output's array) are taken away.
async function graphCase(i) {
  const stream = new Stream(device);
  const p = problem(seed + 100 + i, { resizable });
  const host = hostTensors(p);
  const q = onDevice(host.q, stream);
  const cache = onDevice(host.cache, stream);
  const outArray = plainArray(Uint16Array, new Array(p.ref.out.length).fill(0x7fc0), resizable);
  const out = device === 'cpu' ? Tensor.from(outArray, p.shapes.out, 'bf16') : Tensor.empty(p.shapes.out, 'bf16', { device });
  await stream.synchronize();
  const graph = stream.capture(() => void mlaDecode({ q, cache, blockTable: host.blockTable, seqLens: host.seqLens, softmaxScale: p.softmaxScale, kvLoraRank: p.rank, out, stream }));
  graph.replay();
  const first = await settled(out.toFloat32().then((got) => `relErr ${relErr(got, p.ref.out)}`));
  busy(stream);
  graph.replay();
  DETACH[method](p.arrays.seqLens);
  DETACH[method](p.arrays.blockTable);
  if (device === 'cpu') DETACH[method](outArray);
  const detachedAt = performance.now();
  churn();
  const sync = await outcome(stream.synchronize());
  const queuedMs = performance.now() - detachedAt;
  // The replay read the index arrays when it was queued; the output's array (cpu) was gone when it completed.
  const result = await settled(out.toFloat32().then((got) => `relErr ${relErr(got, p.ref.out)}`));
  const replayAfter = thrown(() => graph.replay());
  graph.dispose();
  stream.dispose();
  results.push({ case: `graph ${method}`, queuedMs, first, sync, result, replayAfter });
}

await calibrateBusy();
const roles = ['q', 'cache', 'blockTable', 'seqLens', 'out'];
for (let i = 0; i < roles.length; i++) {
  console.log(`case ${roles[i]} ${method} on ${backend}`); // the last line printed names a case that crashed
  await roleCase(roles[i], i);
}
console.log(`case graph ${method} on ${backend}`);
await graphCase(0);
await endScribbler();
churn();
report({ backend, method, bound: BF16_BOUND, results });
