import { MlaError, type ErrorCode } from './errors.js';
import { Graph } from './graph.js';
import { native, type After, type NativeStream } from './native.js';
import { dependencies, type DeviceName, type Tensor } from './tensor.js';

/** Where operations run: `cpu`, `cuda-sim` (CUDA kernels under emulation; tests) or `cuda`. */
export type BackendName = 'cpu' | 'cuda-sim' | 'cuda';

export interface BackendInfo {
  name: BackendName;
  available: boolean;
  /** Why it is unavailable, or what it runs on. */
  reason: string;
  /** The devices it serves here (`cpu`; `cuda:0`, `cuda:1`, ...); empty when unavailable. */
  devices: DeviceName[];
}

const BACKENDS: readonly string[] = ['cpu', 'cuda-sim', 'cuda'];

/** @internal Each backend's device kind in tensor descriptors (csrc/core/tensor.h's DeviceKind). */
export const DEVICE_KINDS: Readonly<Record<BackendName, number>> = { cpu: 0, cuda: 1, 'cuda-sim': 2 };

/** The backend that owns a device's memory. */
export function backendOf(device: DeviceName): BackendName {
  if (device === 'cpu') return 'cpu';
  if (/^cuda:\d+$/.test(device)) return 'cuda';
  if (/^cuda-sim:\d+$/.test(device)) return 'cuda-sim';
  throw new MlaError('E_DEVICE', `device must be 'cpu', 'cuda:N' or 'cuda-sim:N', got ${String(device)}`);
}

function isDeviceName(x: unknown): x is DeviceName {
  return typeof x === 'string' && /^(cpu|cuda:\d+|cuda-sim:\d+)$/.test(x);
}

/** The backends this build knows, whether each can be used here, and why not. */
export function backends(): BackendInfo[] {
  return native().backends() as BackendInfo[];
}

/** The backend of the default stream: `MLA_DEVICE` when set, else `cuda` when available, else `cpu`. */
export function defaultBackend(): BackendName {
  const forced = process.env.MLA_DEVICE;
  if (forced) {
    const name = isDeviceName(forced) ? backendOf(forced) : (forced as BackendName);
    const info = backends().find((b) => b.name === name);
    if (!info) throw new MlaError('E_ARGUMENT', `MLA_DEVICE must be cpu, cuda-sim, cuda or a device cuda:N / cuda-sim:N, got '${forced}'`);
    if (!info.available) throw new MlaError('E_UNSUPPORTED', `MLA_DEVICE=${forced}, but ${name} is unavailable: ${info.reason}`);
    return name;
  }
  return backends().some((b) => b.name === 'cuda' && b.available) ? 'cuda' : 'cpu';
}

interface Waiter {
  ticket: number;
  resolve: () => void;
  reject: (e: MlaError) => void;
}

/**
 * An ordered queue of operations on one device. Every operation returns as soon as it is queued; work on
 * one stream runs in order on a native worker (a CUDA stream on the GPU), never on Node's main thread.
 * On a GPU the worker only queues each operation's device work; the operation counts as complete (its outputs
 * readable, its inputs free to dispose) when the device has done it.
 * A failed operation makes the stream's later waits reject with its error, as a CUDA error would.
 */
export class Stream {
  readonly backend: BackendName;
  /** Where the stream's operations read and write: outputs it allocates live here. */
  readonly device: DeviceName;
  #native: NativeStream | null;
  #enqueued = 0;
  #completed = 0;
  #waiters: Waiter[] = [];
  #error: MlaError | null = null;
  #capture: { used: Set<Tensor>; written: Set<Tensor> } | null = null;

  /**
   * `device` is a device (`cuda:1`, `cuda-sim:0`, `cpu`) or a backend, meaning its device 0. A device index beyond
   * the devices there are is refused with E_DEVICE.
   */
  constructor(device: BackendName | DeviceName = defaultDevice()) {
    if (!BACKENDS.includes(device) && !isDeviceName(device))
      throw new MlaError('E_ARGUMENT', `backend must be 'cpu', 'cuda-sim' or 'cuda', or a device 'cuda:N' or 'cuda-sim:N', got ${String(device)}`);
    this.#native = new (native().NativeStream)(device, (ticket, code, message) => this.#onComplete(ticket, code, message));
    this.backend = this.#native.backend() as BackendName;
    this.device = this.#native.device() as DeviceName;
  }

  /** Resolves when every operation queued so far has finished; rejects with the error of one that failed. */
  synchronize(): Promise<void> {
    this.#check();
    return this._waitFor(this.#enqueued);
  }

  /** Stops accepting work; what is queued still runs. */
  dispose(): void {
    if (!this.#native) return;
    this.#native.dispose();
    this.#native = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  get disposed(): boolean {
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
   * the recorded calls returned are the ones each replay writes. `record` must queue synchronously; copies
   * (`Tensor.to`, `read`) cannot be recorded (E_ARGUMENT). Operations on other streams run as usual.
   */
  capture(record: () => void): Graph {
    const stream = this.#check();
    if (this.#capture) throw new MlaError('E_ARGUMENT', 'capture: the stream is already capturing a graph');
    stream.beginCapture();
    const captured = { used: new Set<Tensor>(), written: new Set<Tensor>() };
    this.#capture = captured;
    let result: unknown;
    try {
      result = record();
    } catch (e) {
      this.#capture = null;
      stream.endCapture(false);
      throw e;
    }
    this.#capture = null;
    if (result !== null && typeof result === 'object' && typeof (result as { then?: unknown }).then === 'function') {
      stream.endCapture(false);
      throw new MlaError('E_ARGUMENT', 'capture: record must queue its operations synchronously, but it returned a promise');
    }
    return new Graph(this, stream.endCapture(true)!, [...captured.used], [...captured.written]);
  }

  /** True between the start and the end of {@link capture}. */
  get capturing(): boolean {
    return this.#capture !== null;
  }

  /**
   * @internal Queues `op` (given the native stream and the writes on other streams it must wait for), which
   * reads `used` and writes `written`; while capturing, records it instead.
   */
  _submit(used: readonly (Tensor | undefined)[], written: readonly Tensor[], op: (s: NativeStream, after: After | undefined) => number): void {
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
    const ticket = op(stream, dependencies(this, [...used, ...written]));
    this.#enqueued = ticket;
    for (const t of written) t._markWritten(this, ticket);
  }

  /** @internal Runs `op` with the native stream and records the ticket it returns. */
  _enqueue(op: (s: NativeStream) => number): number {
    const ticket = op(this.#check());
    this.#enqueued = ticket;
    return ticket;
  }

  /** @internal The native stream, for calls that queue nothing. */
  _native(): NativeStream {
    return this.#check();
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

  #onComplete(ticket: number, code: string | null, message: string | null): void {
    this.#completed = ticket;
    if (code && !this.#error) this.#error = new MlaError(code as ErrorCode, message ?? code);
    const still: Waiter[] = [];
    for (const w of this.#waiters) {
      if (this.#error) w.reject(this.#error);
      else if (w.ticket <= ticket) w.resolve();
      else still.push(w);
    }
    this.#waiters = this.#error ? [] : still;
  }
}

/** The device of the default stream: MLA_DEVICE when it names one (`cuda:1`), else device 0 of {@link defaultBackend}. */
function defaultDevice(): BackendName | DeviceName {
  const backend = defaultBackend();
  const forced = process.env.MLA_DEVICE;
  return forced && isDeviceName(forced) ? forced : backend;
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
