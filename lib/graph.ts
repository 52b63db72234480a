import { MlaError } from './errors.js';
import { native, type NativeGraph } from './native.js';
import type { Stream } from './stream.js';
import type { Tensor } from './tensor.js';

/**
 * Operations recorded by {@link Stream.capture}, replayed as one operation of their stream. On `cuda` a replay is
 * one CUDA graph launch after one upload of the index arrays; on `cpu` it saves the per-call overhead.
 */
export class Graph {
  /** The stream it was captured on, and replays on. */
  readonly stream: Stream;
  #handle: NativeGraph | null;
  readonly #used: readonly Tensor[];
  readonly #written: readonly Tensor[];

  /** @internal */
  constructor(stream: Stream, handle: NativeGraph, used: readonly Tensor[], written: readonly Tensor[]) {
    this.stream = stream;
    this.#handle = handle;
    this.#used = used;
    this.#written = written;
  }

  /** How many operations were recorded. */
  get numOps(): number {
    return this.#live().numOps();
  }

  /**
   * Queues the recorded operations, reading the index tensors as they are now. Each operation is validated again
   * first; an error names the operation (`graph op 3 (mlaDecode): ...`) and nothing is queued. Returns at once;
   * the outputs are written when the stream gets there.
   */
  replay(): void {
    const handle = this.#live();
    for (const t of this.#used) if (t.disposed) throw new MlaError('E_DISPOSED', `replay: ${String(t)} was disposed; the graph uses it`);
    this.stream._submit(this.#used, this.#written, (s, after) => native().replayGraph(s, handle, after));
  }

  /** Releases what the graph holds (queued replays still run). */
  dispose(): void {
    this.#handle?.dispose();
    this.#handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  get disposed(): boolean {
    return this.#handle === null;
  }

  #live(): NativeGraph {
    if (!this.#handle) throw new MlaError('E_DISPOSED', 'the graph was disposed');
    return this.#handle;
  }
}
