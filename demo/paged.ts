// A small paged-cache manager, as an inference engine has one (vLLM's block manager, much reduced): a pool of
// fixed-size blocks; each sequence takes blocks as it grows and gives them back when it ends; per step it builds
// the slot mapping of the new tokens (slot = block · blockSize + offset, −1 for padding) and the block table of
// the batch. It only hands out block numbers: the memory is the model's (the latent cache tensors of the MLA
// model, the per-head K/V arrays of the MHA one).

export class BlockPool {
  readonly numBlocks: number;
  #free: number[];
  #peakInUse = 0;
  constructor(numBlocks: number) {
    this.numBlocks = numBlocks;
    // Handed out from the top so block ids are not just 0, 1, 2, … of one sequence.
    this.#free = Array.from({ length: numBlocks }, (_, i) => i);
  }
  allocate(): number {
    const b = this.#free.pop();
    if (b === undefined) throw new Error(`out of cache blocks: all ${this.numBlocks} are in use`);
    this.#peakInUse = Math.max(this.#peakInUse, this.inUse);
    return b;
  }
  free(blocks: readonly number[]): void {
    for (const b of blocks) this.#free.push(b);
  }
  get inUse(): number {
    return this.numBlocks - this.#free.length;
  }
  get peakInUse(): number {
    return this.#peakInUse;
  }
}

export class PagedCacheManager {
  readonly blockSize: number;
  readonly pool: BlockPool;
  #blocks = new Map<number, number[]>();
  #lengths = new Map<number, number>();
  #peakTokens = 0;
  constructor(numBlocks: number, blockSize: number) {
    this.pool = new BlockPool(numBlocks);
    this.blockSize = blockSize;
  }

  /** Blocks needed for sequences of these lengths at once. */
  static blocksFor(lengths: readonly number[], blockSize: number): number {
    return lengths.reduce((n, l) => n + Math.ceil(l / blockSize), 0);
  }

  add(seq: number): void {
    if (this.#blocks.has(seq)) throw new Error(`sequence ${seq} is already cached`);
    this.#blocks.set(seq, []);
    this.#lengths.set(seq, 0);
  }

  length(seq: number): number {
    return this.#lengths.get(seq) ?? 0;
  }

  /** Grows a sequence by n tokens, taking blocks as needed; returns the slots of the new tokens. */
  grow(seq: number, n: number, slots: Int32Array, at: number): void {
    const blocks = this.#blocks.get(seq);
    if (!blocks) throw new Error(`sequence ${seq} is not cached`);
    const start = this.#lengths.get(seq)!;
    for (let i = 0; i < n; i++) {
      const pos = start + i;
      const j = Math.floor(pos / this.blockSize);
      if (j === blocks.length) blocks.push(this.pool.allocate());
      slots[at + i] = blocks[j] * this.blockSize + (pos % this.blockSize);
    }
    this.#lengths.set(seq, start + n);
    let tokens = 0;
    for (const l of this.#lengths.values()) tokens += l;
    this.#peakTokens = Math.max(this.#peakTokens, tokens);
  }

  /** The sequence has ended: its blocks go back to the pool. */
  release(seq: number): void {
    const blocks = this.#blocks.get(seq);
    if (!blocks) return;
    this.pool.free(blocks);
    this.#blocks.delete(seq);
    this.#lengths.delete(seq);
  }

  /** [seqs.length, maxBlocks] block table (unused entries −1) and the sequences' lengths. */
  table(seqs: readonly number[]): { blockTable: Int32Array; maxBlocks: number; seqLens: Int32Array } {
    const maxBlocks = Math.max(1, ...seqs.map((s) => this.#blocks.get(s)!.length));
    const blockTable = new Int32Array(seqs.length * maxBlocks).fill(-1);
    const seqLens = new Int32Array(seqs.length);
    seqs.forEach((s, b) => {
      blockTable.set(this.#blocks.get(s)!, b * maxBlocks);
      seqLens[b] = this.#lengths.get(s)!;
    });
    return { blockTable, maxBlocks, seqLens };
  }

  /** The cache slot of a sequence's token at `pos` (for attention computed in TS). */
  slot(seq: number, pos: number): number {
    const blocks = this.#blocks.get(seq)!;
    return blocks[Math.floor(pos / this.blockSize)] * this.blockSize + (pos % this.blockSize);
  }

  blocksOf(seq: number): readonly number[] {
    return this.#blocks.get(seq) ?? [];
  }

  /** Most tokens cached at once. */
  get peakTokens(): number {
    return this.#peakTokens;
  }
}
