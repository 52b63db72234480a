// Issue 16, case 5: streams made until the process runs out of threads (under `ulimit -v`, or MLA_THREAD_LIMIT).
// Reports the error, then that the streams made still compute (their completion threads, and the CPU pool, may not
// start any more), that disposing streams gives threads back, and that host and device memory exhaustion are E_OOM.
import { native } from '../../../dist/native.js';
import { backend, decodeArgs, device, mla, problem, relErr, report, settled, thrown } from './common.mjs';

const { Stream, Tensor, mlaDecode } = mla;
const streams = [];
let refused = 'none';
for (let i = 0; i < 5000; i++) {
  try {
    streams.push(new Stream(device));
  } catch (e) {
    refused = e instanceof mla.MlaError ? `${e.code}: ${e.message}` : `NOT AN MlaError: ${String(e)}`;
    break;
  }
}
const made = streams.length;
// Under `ulimit -v` the address space is now full of thread stacks, and V8's own next allocations would fail (its
// fatal "out of memory: Zone", not mla-kernels'): a few streams go at once, which gives their stacks back.
if (process.env.LT_ULIMIT) {
  for (const s of streams.splice(0, 8)) s.dispose();
  await new Promise((r) => setTimeout(r, 100));
}
// Host memory: beyond what one tensor may take, or (under ulimit -v, with the address space full of thread stacks)
// more than the system gives.
const hostOom = thrown(() => Tensor.zeros(process.env.LT_ULIMIT ? [2 ** 29 - 16] : [2 ** 30], 'f32'));
// The last streams made compute, while no thread can start.
const p = problem(11);
const errs = [];
for (const s of streams.slice(-3)) {
  const { out } = mlaDecode(decodeArgs(p, s));
  errs.push(await settled(out.toFloat32().then((got) => relErr(got, p.ref.out))));
}
// Disposed streams give their threads back once their work is done.
for (const s of streams.splice(0, Math.ceil(made / 2))) s.dispose();
await new Promise((r) => setTimeout(r, 200));
const again = thrown(() => streams.push(new Stream(device)));
// Device memory beyond the emulated device's (cuda-sim).
let deviceOom = 'n/a';
if (device !== 'cpu') {
  native().simConfigure({ deviceMemoryBytes: 16 << 20 });
  deviceOom = thrown(() => Tensor.empty([64 << 20], 'bf16', { device }));
  native().simConfigure({ deviceMemoryBytes: 4 * 2 ** 30 });
}
for (const s of streams) s.dispose();
report({ backend, made, refused, errs, again, hostOom, deviceOom });
