// The lifetime rule (docs/lifetime.md): nothing a JavaScript program does may crash the process. Issue 16's cases,
// on every backend here: a buffer detached, transferred or shrunk under a queued operation or graph replay (1-3),
// Workers ended with work queued (4), threads and memory exhausted (5), in child processes so that a regression is a
// failed test rather than a dead runner; a disposed stream's writes still ordering readers (6), a failed write passed
// on to its readers on any stream (7), and the smaller items of 8, here.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { INDEX_ROLES, OUTPUTS, ROLES } from './lifetime/prefill-roles.mjs';
import { gatherLatentCache, memoryStats, mergeAttentionStates, mlaDecode, mlaPrefill, mlaSparseDecode, PrefillPlan, Stream, Tensor, type BackendName, type DeviceName, unabsorbOutput } from 'mla-kernels';
import { native } from '../../lib/native.js';
import { expectMlaError, intTensor, onDevice, poisoned, randomTensor, REL_BOUND, relErr, Rng, suiteBackends, testSeed } from '../helpers.js';

const seed = testSeed('lifetime');
const root = path.join(__dirname, '..', '..');
const scripts = path.join(__dirname, 'lifetime');
const backendsHere = suiteBackends().filter((b) => b.available && b.name !== 'cuda');
for (const b of suiteBackends().filter((x) => !x.available)) it.skip(`${b.name} backend: unavailable in this build (${b.reason})`, () => {});
// Under AddressSanitizer (scripts/test.mjs preloads it) a use after free ends the child with a report: what these
// tests are for. ASan reserves terabytes of address space, so `ulimit -v` cannot run there.
const sanitized = /libasan/.test(process.env.LD_PRELOAD ?? '');

interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  result: Record<string, unknown>;
}

/** Runs a script of test/conformance/lifetime/ in a new Node (optionally under `ulimit -v`); its RESULT line. */
function child(script: string, env: Record<string, string>, options: { limitKiB?: number; timeout?: number } = {}): ChildResult {
  const node = [process.execPath, '--expose-gc', path.join(scripts, script)];
  const [cmd, args] = options.limitKiB ? ['sh', ['-c', `ulimit -v ${options.limitKiB} && exec "$@"`, 'sh', ...node]] : [node[0], node.slice(1)];
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', env: { ...process.env, LT_SEED: String(seed), ...env }, timeout: options.timeout ?? 300_000 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  const lastCase = r.stdout.trim().split('\n').filter((l) => l.startsWith('case ')).pop();
  const said = `${script} ${JSON.stringify(env)} ended with status ${r.status}, signal ${r.signal}${lastCase ? ` in ${lastCase}` : ''}\n${r.stderr.slice(-4000)}`;
  expect(r.signal, said).toBeNull();
  expect(r.status, said).toBe(0);
  expect(r.stderr, said).not.toMatch(/terminate called|AddressSanitizer|runtime error|mla-kernels: .*ignored/);
  expect(line, said).toBeDefined();
  return { status: r.status, signal: r.signal, stderr: r.stderr, result: JSON.parse(line!.slice('RESULT '.length)) };
}

const DETACHED = /^E_DISPOSED: .*was detached/;
const relErrOk = (s: unknown) => {
  const m = /^relErr (\S+)$/.exec(String(s));
  return m !== null && Number(m[1]) <= REL_BOUND.bf16;
};

describe.each(backendsHere.map((b) => [b.name as BackendName]))('lifetime on %s', (backend) => {
  describe.each([['transfer'], ['worker'], ['resize']])('an ordinary ArrayBuffer taken away by %s', (method) => {
    const what = { transfer: 'structuredClone with a transfer list', worker: 'a transfer to a Worker that scribbles on it and exits', resize: 'rab.resize(0)' }[method];
    it(`(cases 1-3, ${what}) while an operation or a graph replay that uses it is queued: the correct result, or E_DISPOSED naming the tensor`, () => {
      const { result } = child('detach.mjs', { LT_BACKEND: backend, LT_METHOD: method });
      const cases = result.results as Record<string, unknown>[];
      expect(cases.map((c) => c.case)).toEqual(['q', 'cache', 'blockTable', 'seqLens', 'out', 'graph'].map((r) => `${r} ${method}`));
      for (const c of cases) {
        const said = JSON.stringify(c);
        // The operation really was queued behind other work when the array was taken away.
        expect(c.queuedMs as number, said).toBeGreaterThan(30);
        expect(c.sync, said).toBe('ok');
      }
      for (const c of cases.slice(0, 4)) {
        const role = String(c.case).split(' ')[0];
        const said = JSON.stringify(c);
        // An input: the operation used the values it had at the call.
        expect(relErrOk(c.result), said).toBe(true);
        // Used again, the tensor is refused at the call, naming the argument (a device upload's source is `src`).
        expect(c.again, said).toMatch(DETACHED);
        expect(c.again, said).toContain(backend === 'cpu' || role === 'blockTable' || role === 'seqLens' ? `${role} was detached` : 'src was detached');
      }
      const out = cases[4];
      // An output: its array was gone when the operation completed, so reading it is E_DISPOSED.
      expect(out.result, JSON.stringify(out)).toMatch(DETACHED);
      expect(out.again, JSON.stringify(out)).toMatch(DETACHED);
      const graph = cases[5];
      expect(relErrOk(graph.first), JSON.stringify(graph)).toBe(true);
      // The replay copied the index arrays when it was queued; on the CPU its output's array was taken too.
      if (backend === 'cpu') expect(graph.result, JSON.stringify(graph)).toMatch(DETACHED);
      else expect(relErrOk(graph.result), JSON.stringify(graph)).toBe(true);
      expect(graph.replayAfter, JSON.stringify(graph)).toMatch(/^E_DISPOSED: replay: (seqLens|blockTable|out) was detached/);
    }, 600_000);
  });

  // The prefill operations (gatherLatentCache, upProjectKv, mlaPrefill, mergeAttentionStates), the sparse attention's
  // (mlaSparseDecode, mlaSparsePrefill, lightningIndexer, the dense mlaDecode over an fp8_ds_mla cache) and a captured
  // prefill: the same mechanism, so two of the ways suffice.
  describe.each([['transfer'], ['resize']])('prefill operations: an ordinary ArrayBuffer taken away by %s', (method) => {
    it('(cases 1-3) while a prefill operation or a graph replay that uses it is queued: the correct result, or E_DISPOSED naming the tensor', () => {
      const { result } = child('prefill.mjs', { LT_BACKEND: backend, LT_METHOD: method });
      const cases = result.results as Record<string, unknown>[];
      expect(cases.map((c) => c.case)).toEqual([...Object.entries(ROLES).flatMap(([op, rs]) => rs.map((r) => `${op} ${r} ${method}`)), `graph ${method}`]);
      for (const c of cases) {
        const said = JSON.stringify(c);
        expect(c.queuedMs as number, said).toBeGreaterThan(30);
        expect(c.sync, said).toBe('ok');
        const [op, role] = String(c.case).split(' ');
        if (op === 'graph') continue;
        expect(c.again, said).toMatch(DETACHED);
        if (role === OUTPUTS[op]) {
          expect(c.result, said).toMatch(DETACHED);
        } else {
          expect(relErrOk(c.result), said).toBe(true);
          const index = INDEX_ROLES.includes(role);
          expect(c.again, said).toContain(backend === 'cpu' || index ? `${role} was detached` : 'src was detached');
        }
      }
      const graph = cases[cases.length - 1];
      expect(relErrOk(graph.first), JSON.stringify(graph)).toBe(true);
      if (backend === 'cpu') expect(graph.result, JSON.stringify(graph)).toMatch(DETACHED);
      else expect(relErrOk(graph.result), JSON.stringify(graph)).toBe(true);
      expect(graph.replayAfter, JSON.stringify(graph)).toMatch(/^E_DISPOSED: replay: (cuSeqLensQ|cuSeqLensKv|out) was detached/);
    }, 600_000);
  });

  it('(case 4) 50 Workers in a row end with work queued (terminated, process.exit(), an uncaught throw, finishing): no abort, their memory freed, the main thread unaffected', () => {
    const { result } = child('workers.mjs', { LT_BACKEND: backend, LT_TERMINATIONS: '50' });
    const ends = result.ends as string[];
    expect(ends).toHaveLength(50);
    // A Worker whose work all finished before terminate() reached it ends with 0: most must not have.
    for (const e of ends) expect(['terminate:1', 'terminate:0', 'exit:3', 'throw:1', 'finish:0']).toContain(e);
    expect(ends.filter((e) => e === 'terminate:1').length).toBeGreaterThanOrEqual(15);
    expect(result.after, 'device memory of the ended Workers freed').toBe(result.before);
    expect(result.errs).toEqual([]);
    expect(result.maxErr as number).toBeLessThanOrEqual(REL_BOUND.bf16);
  }, 600_000);

  it('(case 4) process.exit() on the main thread with work queued and running ends the process with its code, and nothing else', () => {
    for (const delay of [5, 40, 120]) {
      const r = spawnSync(process.execPath, [path.join(scripts, 'main-exit.mjs')], { cwd: root, encoding: 'utf8', env: { ...process.env, LT_BACKEND: backend, LT_DELAY: String(delay) }, timeout: 120_000 });
      const said = `exit after ${delay} ms: status ${r.status}, signal ${r.signal}\n${r.stderr.slice(-4000)}`;
      expect(r.signal, said).toBeNull();
      expect(r.status, said).toBe(7);
      expect(r.stderr, said).not.toMatch(/terminate called|AddressSanitizer|runtime error|mla-kernels: .*ignored/);
    }
  });

  const exhausted = (r: Record<string, unknown>) => {
    const said = JSON.stringify(r);
    expect(r.refused, said).toMatch(/^E_OOM: could not start the stream's worker thread: Resource temporarily unavailable/);
    expect(r.again, said).toBe('ok');
    expect(r.hostOom, said).toMatch(/^E_OOM: /);
    if (backend !== 'cpu') expect(r.deviceOom, said).toMatch(/^E_OOM: .*cudaErrorMemoryAllocation/);
    return said;
  };
  it('(case 5) streams made until threads run out (MLA_THREAD_LIMIT): E_OOM with the reason; the streams made still compute, without the threads they could not start', () => {
    const { result } = child('exhaust.mjs', { LT_BACKEND: backend, MLA_THREAD_LIMIT: '48' });
    const said = exhausted(result);
    for (const e of result.errs as unknown[]) expect(e as number, said).toBeLessThanOrEqual(REL_BOUND.bf16);
  });
  // Not on cuda-sim: the emulator keeps every kernel's static __shared__ in thread_local storage (sim/README.md), about
  // 300 KB that glibc allocates lazily per thread and aborts on ("cannot allocate memory for thread-local data") when the
  // address space is already full; the shipped builds have none of it (under 100 bytes of TLS). MLA_THREAD_LIMIT above
  // exhausts threads on cuda-sim too.
  it.skipIf(sanitized || backend === 'cuda-sim')('(case 5) streams made until the address space runs out (ulimit -v): E_OOM with the reason, never an abort', () => {
    const { result } = child('exhaust.mjs', { LT_BACKEND: backend, LT_ULIMIT: '1' }, { limitKiB: 3_000_000 });
    const said = exhausted(result);
    expect(result.made as number, said).toBeGreaterThan(10);
    // With no memory left, the emulated device may refuse its scratch: E_OOM too.
    for (const e of result.errs as unknown[]) expect(typeof e === 'number' ? e <= REL_BOUND.bf16 : /^E_OOM: /.test(String(e)), said).toBe(true);
  });

  it('(case 6) a disposed stream still runs its queued writes, and readers on other streams wait for them', async () => {
    const rng = new Rng(seed + 1);
    const writer = new Stream(backend);
    const width = 80, rank = 64, blocks = backend === 'cpu' ? 64 : 16, calls = backend === 'cpu' ? 30 : 6;
    const dev = <T extends Tensor>(t: T) => onDevice(t, writer);
    const cache = dev(randomTensor(rng, [blocks, 16, width], 'bf16').t);
    const qs = [0, 1, 2].map(() => dev(randomTensor(rng, [1, 1, 8, width], 'bf16').t));
    const blockTable = intTensor(Array.from({ length: blocks }, (_, i) => i), [1, blocks]);
    const seqLens = intTensor([blocks * 16]);
    const out = dev(poisoned([1, 1, 8, rank], 'bf16'));
    await writer.synchronize();
    for (let i = 0; i < calls; i++) mlaDecode({ q: qs[i % 2], cache, blockTable, seqLens, softmaxScale: 0.1, kvLoraRank: rank, out, stream: writer });
    mlaDecode({ q: qs[2], cache, blockTable, seqLens, softmaxScale: 0.1, kvLoraRank: rank, out, stream: writer });
    writer.dispose();
    expect(writer.disposed).toBe(true);
    const reader = new Stream(backend);
    const identity = dev(Tensor.fromValues(Array.from({ length: 8 * rank * rank }, (_, i) => (i % rank === Math.floor(i / rank) % rank ? 1 : 0)), [8, rank, rank], 'bf16'));
    const copy = unabsorbOutput({ oLat: out, wUv: identity, stream: reader });
    const final = mlaDecode({ q: qs[2], cache, blockTable, seqLens, softmaxScale: 0.1, kvLoraRank: rank, stream: reader }).out;
    expect(Array.from(await copy.toFloat32())).toEqual(Array.from(await final.toFloat32()));
    reader.dispose();
  });

  // (case 8) The smaller items, each with its documented code.
  it.runIf(backend === 'cpu')('(case 8) an output over the memory of an index tensor is E_ARGUMENT, in ordinary and in shared memory', () => {
    for (const buffer of [new ArrayBuffer(64), new SharedArrayBuffer(64)]) {
      const blockTable = Tensor.from(new Int32Array(buffer, 0, 2), [1, 2]);
      const lse = Tensor.from(new Float32Array(buffer, 0, 2), [1, 2, 1]);
      const o = { q: Tensor.zeros([1, 1, 2, 24], 'f32'), cache: Tensor.zeros([2, 4, 24], 'f32'), blockTable, seqLens: intTensor([5]), softmaxScale: 0.1, kvLoraRank: 16 };
      expectMlaError(() => mlaDecode({ ...o, lse }), 'E_ARGUMENT', 'lse shares memory with blockTable');
      expect(Array.from(new Int32Array(buffer, 0, 2))).toEqual([0, 0]);
      // The prefill operations' index tensors too.
      const cuSeqLens = Tensor.from(new Int32Array(buffer, 16, 2), [2]);
      const prefill = { q: Tensor.zeros([1, 1, 32], 'f32'), kNope: Tensor.zeros([1, 1, 16], 'f32'), kPe: Tensor.zeros([1, 16], 'f32'), v: Tensor.zeros([1, 1, 16], 'f32'), cuSeqLensQ: cuSeqLens, cuSeqLensKv: cuSeqLens, softmaxScale: 0.1 };
      expectMlaError(() => mlaPrefill({ ...prefill, lse: Tensor.from(new Float32Array(buffer, 16, 1), [1, 1]) }), 'E_ARGUMENT', 'lse shares memory with cuSeqLensQ');
      const gather = { cache: Tensor.zeros([2, 4, 24], 'f32'), blockTable, cuSeqLens, kvLoraRank: 16, numRows: 1 };
      expectMlaError(() => gatherLatentCache({ ...gather, kPe: Tensor.from(new Float32Array(buffer, 0, 8), [1, 8]) }), 'E_ARGUMENT', 'kPe shares memory with blockTable');
      expect(Array.from(new Int32Array(buffer, 0, 6))).toEqual([0, 0, 0, 0, 0, 0]);
    }
  });
  it('(case 8) a softmaxScale whose scaled scores overflow float32 is E_RANGE, not lse = -Infinity', () => {
    const stream = new Stream(backend);
    const o = { q: onDevice(Tensor.zeros([1, 1, 16, 80], 'bf16'), stream), cache: onDevice(Tensor.zeros([2, 16, 80], 'bf16'), stream), blockTable: intTensor([0, 1], [1, 2]), seqLens: intTensor([20]), kvLoraRank: 64, stream };
    for (const softmaxScale of [3e38, 2.4e38]) expectMlaError(() => mlaDecode({ ...o, softmaxScale }), 'E_RANGE', 'softmaxScale * log2(e) must be a finite float32');
    expect(() => mlaDecode({ ...o, softmaxScale: 1e30 })).not.toThrow();
    const dev = <T extends Tensor>(t: T) => onDevice(t, stream);
    const prefill = { q: dev(Tensor.zeros([2, 1, 32], 'bf16')), kNope: dev(Tensor.zeros([2, 1, 16], 'bf16')), kPe: dev(Tensor.zeros([2, 16], 'bf16')), v: dev(Tensor.zeros([2, 1, 16], 'bf16')), cuSeqLensQ: intTensor([0, 2]), cuSeqLensKv: intTensor([0, 2]), stream };
    for (const softmaxScale of [3e38, 2.4e38]) expectMlaError(() => mlaPrefill({ ...prefill, softmaxScale }), 'E_RANGE', 'softmaxScale * log2(e) must be a finite float32');
    expect(() => mlaPrefill({ ...prefill, softmaxScale: 1e30 })).not.toThrow();
    stream.dispose();
  });
});

describe('(case 8) the smaller items, each with its documented code', () => {
  it('a malformed device name is E_DEVICE, an unknown backend E_ARGUMENT', () => {
    for (const device of ['cuda:x', 'cuda-sim:-1', 'cuda:', 'gpu:0', 'cpu:0'])
      for (const make of [() => new Stream(device as never), () => Tensor.empty([2], 'f32', { device: device as DeviceName }), () => memoryStats(device as DeviceName)])
        expectMlaError(make, 'E_DEVICE', device);
    expectMlaError(() => new Stream('tpu' as never), 'E_ARGUMENT', "backend must be 'cpu', 'cuda-sim' or 'cuda'");
    expectMlaError(() => new Stream(7 as never), 'E_ARGUMENT', "backend must be 'cpu', 'cuda-sim' or 'cuda'");
  });

  it('objects made with the prototype of Tensor, Stream or Graph are E_ARGUMENT wherever they go, never a bare TypeError', async () => {
    const fake = Object.create(Tensor.prototype) as Tensor;
    const o = { q: Tensor.zeros([1, 1, 2, 24], 'f32'), cache: Tensor.zeros([2, 4, 24], 'f32'), blockTable: intTensor([0], [1, 1]), seqLens: intTensor([3]), softmaxScale: 0.1, kvLoraRank: 16 };
    expectMlaError(() => mlaDecode({ ...o, q: fake }), 'E_ARGUMENT', 'q must be a Tensor');
    expectMlaError(() => mlaDecode({ ...o, out: fake as never }), 'E_ARGUMENT', 'out must be a Tensor');
    expectMlaError(() => Tensor.zeros([2], 'f32').copyFrom(fake as never), 'E_ARGUMENT', 'src must be a Tensor');
    await expect(fake.read()).rejects.toMatchObject({ code: 'E_ARGUMENT', message: expect.stringContaining('Tensor.read: called on an object with Tensor.prototype') });
    await expect(fake.toFloat32()).rejects.toMatchObject({ code: 'E_ARGUMENT' });
    for (const use of [() => fake.dispose(), () => fake.numel, () => fake.disposed, () => fake.to('cpu'), () => fake.copyFrom(o.q as never)]) expectMlaError(use, 'E_ARGUMENT', 'not a Tensor');
    expect(String(fake)).toBe('[not a Tensor]');
    const fakePlan = Object.create(PrefillPlan.prototype) as PrefillPlan;
    const prefill = { q: Tensor.zeros([1, 1, 32], 'f32'), kNope: Tensor.zeros([1, 1, 16], 'f32'), kPe: Tensor.zeros([1, 16], 'f32'), v: Tensor.zeros([1, 1, 16], 'f32'), cuSeqLensQ: intTensor([0, 1]), cuSeqLensKv: intTensor([0, 1]), softmaxScale: 0.1 };
    expectMlaError(() => mlaPrefill({ ...prefill, plan: fakePlan }), 'E_ARGUMENT', 'plan must come from planPrefill');
    expectMlaError(() => mlaPrefill({ ...prefill, kPe: fake as never }), 'E_ARGUMENT', 'kPe must be a Tensor');
    expectMlaError(() => mlaSparseDecode({ q: Tensor.zeros([1, 1, 1, 32], 'f32'), cache: Tensor.zeros([1, 4, 32], 'f32'), indices: fake as never, softmaxScale: 0.1, kvLoraRank: 16 }), 'E_ARGUMENT', 'indices must be a Tensor');
    const fakeStream = Object.create(Stream.prototype) as Stream;
    expectMlaError(() => mlaDecode({ ...o, stream: fakeStream }), 'E_ARGUMENT', 'stream must be a Stream');
    for (const use of [() => fakeStream.synchronize(), () => fakeStream.dispose(), () => fakeStream.disposed, () => fakeStream.capture(() => {})]) expectMlaError(use, 'E_ARGUMENT', 'not a Stream');
    const { Graph } = await import('mla-kernels');
    const fakeGraph = Object.create(Graph.prototype) as InstanceType<typeof Graph>;
    for (const use of [() => fakeGraph.replay(), () => fakeGraph.numOps, () => fakeGraph.dispose(), () => fakeGraph.disposed]) expectMlaError(use, 'E_ARGUMENT', 'not a Graph');
    // A structured clone of a Tensor is a plain object: not a Tensor either.
    expectMlaError(() => mlaDecode({ ...o, q: structuredClone(o.q) }), 'E_ARGUMENT', 'q must be a Tensor');
  });

  it('read() of a tensor whose array was detached is E_DISPOSED naming it, never a bare TypeError', async () => {
    const array = new Float32Array([1, 2, 3]);
    const t = Tensor.from(array, [3]);
    expect(Array.from(await t.read())).toEqual([1, 2, 3]);
    structuredClone(array.buffer, { transfer: [array.buffer] });
    await expect(t.read()).rejects.toMatchObject({ code: 'E_DISPOSED', message: expect.stringMatching(/was detached/) });
    await expect(t.toFloat32()).rejects.toMatchObject({ code: 'E_DISPOSED' });
    expectMlaError(() => t.to('cpu').copyFrom(t), 'E_DISPOSED', 'src was detached');
  });

  it('the addon itself refuses host memory it cannot keep alive (an ordinary ArrayBuffer), whatever calls it', () => {
    const stream = new (native().NativeStream)('cpu', () => {});
    try {
      const meta = Int32Array.of(0, 0, 0, 4);
      const shared = new Float32Array(new SharedArrayBuffer(16));
      expectMlaError(() => native().copy(stream, [[new Float32Array(4), meta], [shared, meta]]), 'E_ARGUMENT', 'src is not memory mla-kernels can keep alive');
      expectMlaError(() => native().copy(stream, [[shared, meta], [new Float32Array(4), meta]]), 'E_ARGUMENT', 'dst is not memory mla-kernels can keep alive');
      expectMlaError(() => native().copy(stream, [[{} as never, meta], [shared, meta]]), 'E_ARGUMENT', "a tensor's memory must be a TypedArray or a device buffer");
      expectMlaError(() => native().copy({} as never, [[shared, meta], [shared, meta]]), 'E_ARGUMENT', 'stream must be a Stream');
    } finally {
      stream.dispose();
    }
  });
});

describe.runIf(backendsHere.some((b) => b.name === 'cuda-sim'))('(case 7) failures propagate, on cuda-sim', () => {
  it('a tensor written by a failed operation makes every later reader, on any stream, reject with that error until it is rewritten', async () => {
    const rng = new Rng(seed + 2);
    const device = 'cuda-sim:0';
    const a = new Stream(device), b = new Stream(device), c = new Stream(device);
    const width = 80, rank = 64;
    const cache = randomTensor(rng, [4, 16, width], 'bf16').t.to(device, { stream: b });
    const q = randomTensor(rng, [1, 1, 4, width], 'bf16').t.to(device, { stream: b });
    const wUv = Tensor.fromValues(rng.normal(4 * 16 * rank), [4, 16, rank], 'bf16').to(device, { stream: b });
    const out = Tensor.empty([1, 1, 4, rank], 'bf16', { device });
    const args = { q, cache, blockTable: intTensor([0, 1, 2, 3], [1, 4]), seqLens: intTensor([50]), softmaxScale: 0.1, kvLoraRank: rank };
    await b.synchronize();
    // Stream a's first decode allocates its device scratch (1 MiB): the emulated device has no room left for it.
    native().simConfigure!({ deviceMemoryBytes: memoryStats(device).bytesInUse + (256 << 10) });
    try {
      mlaDecode({ ...args, out, stream: a });
      const copied = out.to('cpu', { stream: b }); // a reader on another stream, queued before the failure is known
      const used = unabsorbOutput({ oLat: out, wUv, stream: c });
      // A reader among the prefill operations.
      const lseA = Tensor.zeros([1, 1, 4], 'f32').to(device, { stream: c });
      const merged = mergeAttentionStates({ outA: out, lseA, outB: out, lseB: lseA, stream: c }).out;
      const oom = { code: 'E_OOM', message: expect.stringContaining('cudaErrorMemoryAllocation') };
      await expect(a.synchronize()).rejects.toMatchObject(oom);
      await expect(copied.read()).rejects.toMatchObject(oom);
      await expect(used.read()).rejects.toMatchObject(oom);
      await expect(merged.read()).rejects.toMatchObject(oom);
      await expect(out.read()).rejects.toMatchObject(oom);
      // A reader queued after the failure is known, on a new stream, and one after the writer's stream is disposed.
      const d = new Stream(device);
      await expect(out.to('cpu', { stream: d }).read()).rejects.toMatchObject(oom);
      a.dispose();
      await expect(out.read()).rejects.toMatchObject(oom);
    } finally {
      native().simConfigure!({ deviceMemoryBytes: 4 * 2 ** 30 });
    }
    // Rewritten (on a healthy stream), it reads again.
    const e = new Stream(device);
    const values = rng.normal(out.numel);
    out.copyFrom(Tensor.fromValues(values, out.shape, 'bf16'), { stream: e });
    const got = await out.toFloat32();
    expect(relErr(got, values)).toBeLessThan(REL_BOUND.bf16);
    for (const s of [b, c, e]) s.dispose();
  });
});
