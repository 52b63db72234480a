// Issue 16, case 4: Workers that load the addon, queue work and end (terminated from outside, process.exit(), an
// uncaught exception, or finishing) LT_TERMINATIONS times in a row, while the main thread uses the addon too.
// Reports how each Worker ended, the device memory in use before and after (cuda-sim), and the main thread's result.
import { Worker } from 'node:worker_threads';
import { backend, decodeArgs, device, mla, problem, relErr, report, settled } from './common.mjs';

const count = Number(process.env.LT_TERMINATIONS ?? 50);
const modes = ['terminate', 'terminate', 'exit', 'throw', 'finish'];
const memory = () => (device === 'cpu' ? 0 : mla.memoryStats(device).bytesInUse);
const { Stream, mlaDecode } = mla;

// The main thread's own work, checked at the end against the reference.
const main = new Stream(device);
const p = problem(7);
const args = decodeArgs(p, main);
const warm = mlaDecode(args); // the main stream's own device scratch is allocated after it
await warm.out.read();
warm.out.dispose();
warm.lse.dispose();
const before = memory();
const ends = [];
const outs = [];
for (let i = 0; i < count; i++) {
  const mode = modes[i % modes.length];
  const started = performance.now();
  const w = new Worker(new URL('./worker-task.mjs', import.meta.url), { workerData: { mode }, stderr: true, stdout: true });
  const exited = new Promise((resolve) => w.once('exit', resolve));
  w.on('error', () => {}); // the 'throw' mode's uncaught exception
  const finished = new Promise((resolve) => w.on('message', (m) => m.startsWith('finished') && resolve()));
  await new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('exit', () => reject(new Error(`worker ${i} (${mode}) exited before queuing its work`)));
  });
  outs.push(mlaDecode(args).out); // the main thread queues work meanwhile
  if (mode === 'terminate') {
    await new Promise((r) => setTimeout(r, (i * 7) % 25));
    await w.terminate();
  } else if (mode === 'finish') await finished;
  ends.push(`${mode}:${await exited}`);
  if (process.env.LT_VERBOSE) console.log(mode, Math.round(performance.now() - started));
}
const errs = [];
for (const o of outs) {
  errs.push(await settled(o.toFloat32().then((got) => relErr(got, p.ref.out))));
  o.dispose();
}
await main.synchronize();
globalThis.gc?.();
await new Promise((r) => setTimeout(r, 100));
report({ backend, count, ends, before, after: memory(), maxErr: Math.max(...errs.map((e) => (typeof e === 'number' ? e : Infinity))), errs: errs.filter((e) => typeof e !== 'number') });
