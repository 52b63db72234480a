// The leak check (test/conformance/leak.test.ts): LT_OPS small operations (with tensors made and dropped, and on
// cuda-sim device memory allocated and freed), then LT_WORKERS Worker start/terminate cycles with work queued.
// Samples RSS and memoryStats after warm-up (a tenth of each phase) at every tenth; reports the samples.
import { Worker } from 'node:worker_threads';
import { backend, device, mla, onDevice, report } from './common.mjs';

const { Stream, Tensor, absorbQuery, unabsorbOutput, mlaDecode } = mla;
const ops = Number(process.env.LT_OPS ?? 100_000);
const cycles = Number(process.env.LT_WORKERS ?? 1000);
const memory = () => (device === 'cpu' ? 0 : mla.memoryStats(device).bytesInUse);
const sample = async () => {
  globalThis.gc?.();
  await new Promise((r) => setTimeout(r, 20));
  globalThis.gc?.();
  return { rss: process.memoryUsage().rss, device: memory() };
};

const streams = [new Stream(device), new Stream(device)];
const wUk = onDevice(Tensor.fromValues(new Array(2 * 16 * 16).fill(0.01), [2, 16, 16], 'bf16'), streams[0]);
const wUv = onDevice(Tensor.fromValues(new Array(2 * 16 * 16).fill(0.02), [2, 16, 16], 'bf16'), streams[0]);
const cache = onDevice(Tensor.zeros([2, 16, 32], 'bf16'), streams[0]);
const blockTable = Tensor.from(new Int32Array([0, 1]), [1, 2]);
const opSamples = [];
for (let i = 0; i < ops; i++) {
  const s = streams[i % 2];
  // Each step: inputs over the caller's ordinary arrays (mirrored), and outputs the operations allocate.
  const qNope = onDevice(Tensor.from(new Uint16Array(2 * 16).fill(0x3c00), [1, 1, 2, 16], 'bf16'), s);
  const qPe = onDevice(Tensor.from(new Uint16Array(2 * 16), [1, 1, 2, 16], 'bf16'), s);
  const q = absorbQuery({ qNope, wUk, qPe, stream: s });
  const { out } = mlaDecode({ q, cache, blockTable, seqLens: Tensor.from(new Int32Array([i % 32]), [1]), softmaxScale: 0.1, kvLoraRank: 16, stream: s });
  const o = unabsorbOutput({ oLat: out, wUv, stream: s });
  if (i % 64 === 63) await o.read();
  if ((i + 1) % Math.max(1, Math.floor(ops / 10)) === 0) {
    for (const st of streams) await st.synchronize();
    opSamples.push(await sample());
  }
}
for (const s of streams) await s.synchronize();
const workerSamples = [];
for (let i = 0; i < cycles; i++) {
  const w = new Worker(new URL('./worker-task.mjs', import.meta.url), { workerData: { mode: 'terminate' }, stdout: true, stderr: true });
  await new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('exit', () => reject(new Error(`worker ${i} exited before queuing its work`)));
  });
  await w.terminate();
  if ((i + 1) % Math.max(1, Math.floor(cycles / 10)) === 0) workerSamples.push(await sample());
}
report({ backend, ops, cycles, opSamples, workerSamples });
