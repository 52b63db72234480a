// Streams (ordered queues of operations on one device, each on a native worker) and the graphs they capture.
import { checkBackendOrDevice, defaultDevice, type BackendName, type DeviceName } from './device.js';
import { MlaError, type ErrorCode } from './errors.js';
import { native, type After, type NativeGraph, type NativeStream } from './native.js';

/**
 * @internal What a stream tracks of the tensors its operations use: which stream last wrote each, so an operation on
 * another stream waits for that write (Tensor implements it).
 */
export interface Written {
  readonly disposed: boolean;
  /** Checks it can be used now as `name` (E_DISPOSED) and brings its memory up to date for an operation (Tensor._prepare). */
  _prepare(name: string, context?: string): void;
  /** The argument it was last passed as. */
  _label(): string;
  _lastWrite(): { stream: Stream; ticket: number } | null;
  _markWritten(stream: Stream, ticket: number): void;
}

interface Waiter {
  ticket: number;
  resolve: () => void;
  reject: (e: MlaError) => void;
}

/** @internal Whether `x` is a Stream this module made (instanceof also accepts Object.create(Stream.prototype)). */
export let isStream: (x: unknown) => x is Stream;

/**
 * An ordered queue of operations on one device. Every operation returns as soon as it is queued; work on
 * one stream runs in order on a native worker (a CUDA stream on the GPU), never on Node's main thread.
 * On a GPU the worker only queues each operation's device work; the operation counts as complete (its outputs
 * readable, its inputs free to dispose) when the device has done it.
 * A failed operation makes the stream's later waits reject with its error, as a CUDA error would; an operation on
 * any stream that reads what it wrote (or what this stream wrote after it) fails with the same error.
 */
export class Stream {
  readonly backend: BackendName;
  /** Where the stream's operations read and write: outputs it allocates live here. */
  readonly device: DeviceName;
  #native: NativeStream | null;
  // Kept after dispose(): the disposed stream's queued writes still run, and later readers on other streams wait for them.
  readonly #handle: NativeStream;
  #enqueued = 0;
  #completed = 0;
  #waiters: Waiter[] = [];
  // Run when an operation completes, before its waiters resume (in ticket order): copies of results to the caller's arrays.
  #afterComplete: { ticket: number; run: (failed: boolean) => void }[] = [];
  #error: MlaError | null = null;
  #capture: { used: Set<Written>; written: Set<Written> } | null = null;

  /**
   * `device` is a device (`cuda:1`, `cuda-sim:0`, `cpu`) or a backend, meaning its device 0. A device index beyond
   * the devices there are is refused with E_DEVICE.
   */
  constructor(device: BackendName | DeviceName = defaultDevice()) {
    checkBackendOrDevice(device);
    this.#native = this.#handle = new (native().NativeStream)(device, (ticket, code, message) => this.#onComplete(ticket, code, message));
    this.backend = this.#native.backend() as BackendName;
    this.device = this.#native.device() as DeviceName;
  }

  /** Resolves when every operation queued so far has finished; rejects with the error of one that failed. */
  synchronize(): Promise<void> {
    Stream.#brand(this, 'synchronize');
    this.#check();
    return this._waitFor(this.#enqueued);
  }

  /** Stops accepting work; what is queued still runs, and still orders later readers on other streams. */
  dispose(): void {
    Stream.#brand(this, 'dispose');
    if (!this.#native) return;
    this.#native.dispose();
    this.#native = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  get disposed(): boolean {
    Stream.#brand(this, 'disposed');
    return this.#native === null;
  }

  /**
   * Records the operations `record` queues on this stream, without running them, as a {@link Graph} that
   * `graph.replay()` runs again and again as one operation: one call per decode step instead of one per operation
   * and layer, and on a GPU one CUDA graph launch.
   *
   * Each operation is validated as it is recorded. A replay reads the index tensors (block tables, sequence
   * lengths, slot mappings, positions) as they are at that moment, so a step updates them in place and replays;
   * a decode recorded with a plan is replanned when the lengths changed. Tensors are bound by identity: the outputs
   * the recorded calls returned are the ones each replay writes. `record` must queue synchronously. Inside it,
   * `read()`, copies without `{ stream }` and operations without `{ stream }` are refused (E_ARGUMENT, naming the
   * capture; the default stream is allowed when it is the capturing one); copies on the capturing stream cannot be
   * recorded (E_ARGUMENT). Operations given another stream run at once, as usual.
   */
  capture(record: () => void): Graph {
    Stream.#brand(this, 'capture');
    const stream = this.#check();
    if (this.#capture) throw new MlaError('E_ARGUMENT', 'capture: the stream is already capturing a graph');
    stream.beginCapture();
    const captured = { used: new Set<Written>(), written: new Set<Written>() };
    this.#capture = captured;
    const outer = recording;
    recording = this;
    let result: unknown;
    try {
      result = record();
    } catch (e) {
      stream.endCapture(false);
      throw e;
    } finally {
      this.#capture = null;
      recording = outer;
    }
    if (result !== null && typeof result === 'object' && typeof (result as { then?: unknown }).then === 'function') {
      stream.endCapture(false);
      (result as Promise<unknown>).then(undefined, () => {}); // its failure is this error's, not an unhandled rejection
      throw new MlaError('E_ARGUMENT', 'capture: record must queue its operations synchronously, but it returned a promise');
    }
    return new Graph(this, stream.endCapture(true)!, [...captured.used], [...captured.written]);
  }

  /** True between the start and the end of {@link capture}. */
  get capturing(): boolean {
    Stream.#brand(this, 'capturing');
    return this.#capture !== null;
  }

  /**
   * @internal Queues `op` (given the native stream and the writes on other streams it must wait for), which
   * reads `used` and writes `written`; while capturing, records it instead.
   */
  _submit(used: readonly (Written | undefined)[], written: readonly Written[], op: (s: NativeStream, after: After | undefined) => number): void {
    const stream = this.#check();
    if (this.#capture) {
      op(stream, undefined);
      for (const t of used) if (t) this.#capture.used.add(t);
      for (const t of written) {
        this.#capture.used.add(t);
        this.#capture.written.add(t);
      }
      return;
    }
    const ticket = op(stream, dependencies(this, used, written));
    this.#enqueued = ticket;
    for (const t of written) t._markWritten(this, ticket);
  }

  /** @internal Whether the graph being captured writes `t`. */
  _captures(t: Written): boolean {
    return this.#capture?.written.has(t) ?? false;
  }

  /** @internal The native stream, for calls that queue nothing. */
  _native(): NativeStream {
    return this.#check();
  }

  /** @internal The native stream, disposed or not: what operations on other streams wait for. */
  _handle(): NativeStream {
    return this.#handle;
  }

  /** @internal Runs `run` when the operation with `ticket` completes, before anything waiting for it resumes. */
  _afterComplete(ticket: number, run: (failed: boolean) => void): void {
    this.#afterComplete.push({ ticket, run });
  }

  /** @internal Resolves once the operation with this ticket has finished. */
  _waitFor(ticket: number): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (ticket <= this.#completed) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.push({ ticket, resolve, reject }));
  }

  #check(): NativeStream {
    if (!this.#native) throw new MlaError('E_DISPOSED', `the ${this.device} stream was disposed`);
    return this.#native;
  }

  // Stream's methods on an object that is not one (Object.create(Stream.prototype)): E_ARGUMENT.
  static #brand(s: unknown, what: string): void {
    if (!isStream(s)) throw new MlaError('E_ARGUMENT', `Stream.${what}: called on an object that is not a Stream (make one with new Stream())`);
  }

  static {
    isStream = (x: unknown): x is Stream => typeof x === 'object' && x !== null && #handle in x;
  }

  #onComplete(ticket: number, code: string | null, message: string | null): void {
    this.#completed = ticket;
    if (code && !this.#error) this.#error = new MlaError(code as ErrorCode, message ?? code);
    while (this.#afterComplete.length > 0 && this.#afterComplete[0].ticket <= ticket) {
      const { run } = this.#afterComplete.shift()!;
      try {
        run(code !== null);
      } catch (e) {
        // A bug of ours: said, but not thrown into the addon's callback (an uncaught exception there ends the process).
        process.emitWarning(`mla-kernels: copying a result back failed (ignored): ${(e as Error)?.stack ?? String(e)}`);
      }
    }
    const still: Waiter[] = [];
    for (const w of this.#waiters) {
      if (this.#error) w.reject(this.#error);
      else if (w.ticket <= ticket) w.resolve();
      else still.push(w);
    }
    this.#waiters = this.#error ? [] : still;
  }
}

// The stream whose capture is running, if any. `record` runs synchronously, so whatever runs meanwhile on this
// thread is called from inside it.
let recording: Stream | null = null;

function captureName(): string {
  return `stream.capture() of the ${recording!.device} stream`;
}

/** @internal Refuses `what` inside a capture (by default a read, of tensors no recorded operation has written yet). */
export function refuseWhileCapturing(what: string, why = 'nothing recorded has run yet'): void {
  if (recording) throw new MlaError('E_ARGUMENT', `${what} inside ${captureName()}: ${why}; do it before the capture or after graph.replay()`);
}

/**
 * @internal The stream of an operation given none: the default stream of `device`. Inside a capture that is refused
 * (unless it is the capturing stream): the operation would run at once, unrecorded.
 */
export function implicitStream(op: string, device?: BackendName | DeviceName): Stream {
  const stream = defaultStream(device);
  if (recording && recording !== stream)
    throw new MlaError('E_ARGUMENT', `${op}: called without { stream } inside ${captureName()}: it would run at once on the ${stream.device} default stream, unrecorded; pass { stream } (the capturing one to record it)`);
  return stream;
}

const defaultStreams = new Map<string, Stream>();

/** The default stream of a device or backend (a backend's is its device 0; {@link defaultDevice} when none is named). */
export function defaultStream(device: BackendName | DeviceName = defaultDevice()): Stream {
  const key = device === 'cuda' || device === 'cuda-sim' ? `${device}:0` : device;
  let s = defaultStreams.get(key);
  if (!s || s.disposed) {
    s = new Stream(device);
    defaultStreams.set(key, s);
  }
  return s;
}

/**
 * @internal The writes, on other streams than `stream`, that an operation reading `used` and writing `written` must
 * wait for: the native worker of the operation's stream waits for them, so a tensor written on one stream can be used
 * on another without a synchronize. A failed write fails the operations that read what it wrote; one that rewrites
 * it only waits for it (its ticket negated). Writes on `stream` itself are left out: a stream runs in order anyway
 * (and each entry costs the addon N-API reads). A disposed stream's writes count: they still run.
 */
function dependencies(stream: Stream, used: readonly (Written | undefined)[], written: readonly Written[]): After | undefined {
  let deps: After | undefined; // none, the common case: nothing to allocate or for the addon to read
  for (const t of used) {
    const w = t?._lastWrite();
    if (w && w.stream !== stream && !written.includes(t!)) (deps ??= []).push([w.stream._handle(), w.ticket]);
  }
  for (const t of written) {
    const w = t._lastWrite();
    if (w && w.stream !== stream) (deps ??= []).push([w.stream._handle(), -w.ticket]);
  }
  return deps;
}

/**
 * Operations recorded by {@link Stream.capture}, replayed as one operation of their stream. On `cuda` a replay is
 * one CUDA graph launch after one upload of the index arrays; on `cpu` it saves the per-call overhead.
 */
export class Graph {
  /** The stream it was captured on, and replays on. */
  readonly stream: Stream;
  #handle: NativeGraph | null;
  readonly #used: readonly Written[];
  readonly #written: readonly Written[];

  /** @internal */
  constructor(stream: Stream, handle: NativeGraph, used: readonly Written[], written: readonly Written[]) {
    this.stream = stream;
    this.#handle = handle;
    this.#used = used;
    this.#written = written;
  }

  /** How many operations were recorded. */
  get numOps(): number {
    Graph.#brand(this, 'numOps');
    return this.#live().numOps();
  }

  /**
   * Queues the recorded operations, reading the index tensors as they are now. Each operation is validated again
   * first; an error names the operation (`graph op 3 (mlaDecode): ...`) and nothing is queued. Returns at once;
   * the outputs are written when the stream gets there.
   */
  replay(): void {
    Graph.#brand(this, 'replay');
    const handle = this.#live();
    for (const t of this.#used) {
      if (t.disposed) throw new MlaError('E_DISPOSED', `replay: ${String(t)} was disposed; the graph uses it`);
      t._prepare(t._label(), 'replay: ');
    }
    this.stream._submit(this.#used, this.#written, (s, after) => native().replayGraph(s, handle, after));
  }

  /** Releases what the graph holds (queued replays still run). */
  dispose(): void {
    Graph.#brand(this, 'dispose');
    this.#handle?.dispose();
    this.#handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  get disposed(): boolean {
    Graph.#brand(this, 'disposed');
    return this.#handle === null;
  }

  #live(): NativeGraph {
    if (!this.#handle) throw new MlaError('E_DISPOSED', 'the graph was disposed');
    return this.#handle;
  }

  // Graph's methods on an object that is not one (Object.create(Graph.prototype)): E_ARGUMENT.
  static #brand(g: unknown, what: string): void {
    if (typeof g !== 'object' || g === null || !(#used in g))
      throw new MlaError('E_ARGUMENT', `Graph.${what}: called on an object that is not a Graph (make one with stream.capture)`);
  }
}
