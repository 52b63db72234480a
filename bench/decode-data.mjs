// The data of the decode A/B scripts (bench/decode-ab.mjs, bench/decode-bound.mjs): the same pseudo-random values on
// every run, in shared memory (Tensor.from wraps it without a copy per call).

/** n values of `dtype` ('f32', 'bf16' or 'f16') drawn from `seed`: uniform in [-0.5, 0.5), f16 of magnitude in [0.5, 1). */
export function randomArray(dtype, n, seed) {
  const Ctor = dtype === 'f32' ? Float32Array : Uint16Array;
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  const a = new Ctor(new SharedArrayBuffer(n * Ctor.BYTES_PER_ELEMENT));
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const x = s / 2 ** 32 - 0.5;
    if (dtype === 'f32') a[i] = x;
    else if (dtype === 'bf16') { f[0] = x; a[i] = u[0] >>> 16; }
    else a[i] = 0x3800 ^ (s & 0x83ff);
  }
  return a;
}

export const KV_LORA_RANK = 512, WIDTH = 576, BLOCK = 64;

/**
 * One decode row as the A/B scripts time it: DeepSeek's shape (kvLoraRank 512 + rope 64, blocks of 64 rows), the
 * batch's blocks in a shuffled order, or (resident) every block-table entry at block 0, the same instructions on a
 * cache that stays in L2. `api` is the package's module. Returns `run` (one decode, synchronised) and `out`.
 */
export function decodeRow(api, { dtype, heads, queryLen = 1, batch, context, resident = false }) {
  const { Stream, Tensor, mlaDecode } = api;
  const tableBlocks = (batch * context) / BLOCK;
  const numBlocks = resident ? 1 : tableBlocks;
  const perm = new Int32Array(tableBlocks);
  if (!resident) {
    for (let i = 0; i < tableBlocks; i++) perm[i] = i;
    for (let i = tableBlocks - 1; i > 0; i--) { const j = (i * 2654435761) % (i + 1); [perm[i], perm[j]] = [perm[j], perm[i]]; }
  }
  const cache = Tensor.from(randomArray(dtype, numBlocks * BLOCK * WIDTH, 5), [numBlocks, BLOCK, WIDTH], dtype);
  const q = Tensor.from(randomArray(dtype, batch * queryLen * heads * WIDTH, 7), [batch, queryLen, heads, WIDTH], dtype);
  const blockTable = Tensor.from(perm, [batch, context / BLOCK]);
  const seqLens = Tensor.from(new Int32Array(batch).fill(context), [batch]);
  const out = Tensor.empty([batch, queryLen, heads, KV_LORA_RANK], dtype), lse = Tensor.empty([batch, heads, queryLen], 'f32');
  const stream = new Stream('cpu');
  const run = async () => {
    mlaDecode({ q, cache, blockTable, seqLens, softmaxScale: 0.07, kvLoraRank: KV_LORA_RANK, causal: queryLen > 1, out, lse, stream });
    await stream.synchronize();
  };
  return { run, out };
}

/** The median time of `reps` calls of `run` after three warm-up calls, in ms. */
export async function medianMs(run, reps) {
  for (let i = 0; i < 3; i++) await run();
  const ms = [];
  for (let i = 0; i < reps; i++) { const t0 = process.hrtime.bigint(); await run(); ms.push(Number(process.hrtime.bigint() - t0) / 1e6); }
  ms.sort((a, b) => a - b);
  return ms[ms.length >> 1];
}
