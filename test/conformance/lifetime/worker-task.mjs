// A Worker's share of workers.mjs: two streams with work queued (decodes, a captured graph's replays, a prefill, device
// memory on cuda-sim), then, by workerData.mode, wait to be terminated, process.exit(), throw, or finish.
import { parentPort, workerData } from 'node:worker_threads';
import { busy, device, mla, onDevice } from './common.mjs';

const { Stream, Tensor, mlaDecode, mlaPrefill, planPrefill } = mla;
const streams = [new Stream(device), new Stream(device)];
for (const s of streams) busy(s, 100);
const s = streams[1];
const q = onDevice(Tensor.zeros([1, 1, 16, 80], 'bf16'), s);
const cache = onDevice(Tensor.zeros([4, 16, 80], 'bf16'), s);
const blockTable = Tensor.from(new Int32Array([0, 1, 2, 3]), [1, 4]);
const seqLens = Tensor.from(new Int32Array([60]), [1]);
const graph = s.capture(() => void mlaDecode({ q, cache, blockTable, seqLens, softmaxScale: 0.1, kvLoraRank: 64, stream: s }));
for (let i = 0; i < 5; i++) graph.replay();
// Read back on another stream: a dependency across streams at teardown too.
const copies = [graph, mlaDecode({ q, cache, blockTable, seqLens, softmaxScale: 0.1, kvLoraRank: 64, stream: s }).out.to('cpu', { stream: streams[0] })];
// A prefill with its plan, queued behind the rest.
const cu = Tensor.from(new Int32Array([0, 4]), [2]);
const plan = planPrefill({ cuSeqLensQ: cu, cuSeqLensKv: cu, numHeads: 2, causal: true, stream: s });
const [pq, kNope, kPe, v] = [[4, 2, 32], [4, 2, 16], [4, 16], [4, 2, 16]].map((shape) => onDevice(Tensor.zeros(shape, 'bf16'), s));
copies.push(mlaPrefill({ q: pq, kNope, kPe, v, cuSeqLensQ: cu, cuSeqLensKv: cu, softmaxScale: 0.1, causal: true, plan, stream: s }).out.to('cpu', { stream: streams[0] }));
parentPort.postMessage('queued');
if (workerData.mode === 'exit') process.exit(3);
if (workerData.mode === 'throw') throw new Error('thrown by a Worker with work queued');
// No top-level await: Node 20's V8 aborts the whole process (Check failed: (location_) != nullptr, in
// SourceTextModule::ExecuteAsyncModule; nodejs/node#43182) when a Worker is terminated while its module's top-level
// await is pending, whatever the module does.
if (workerData.mode === 'finish')
  void Promise.all(streams.map((st) => st.synchronize())).then(() => parentPort.postMessage(`finished ${copies.length}`));
