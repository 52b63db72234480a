// The decode shapes bench:gpu times and model:gpu models (DeepSeek dims 512 + 64, block size 64, one query per
// sequence): heads 16 (DeepSeek-V3 at tensor-parallel 8, memory-bound) and 128 (compute-bound), latency (batch 1) to
// throughput (batch 32-128) and short to long contexts, bf16 caches and a few fp8 ones. `quick` marks the rows CI models.
export const KV_LORA_RANK = 512;
export const ROPE_DIM = 64;
export const BLOCK_SIZE = 64;

export const GPU_SHAPES = [];
for (const heads of [16, 128])
  for (const batch of [1, 8, 32])
    for (const context of [512, 4096, 32768]) GPU_SHAPES.push({ heads, batch, context, cache: 'bf16' });
GPU_SHAPES.push({ heads: 128, batch: 64, context: 4096, cache: 'bf16' }, { heads: 128, batch: 128, context: 4096, cache: 'bf16' });
GPU_SHAPES.push({ heads: 16, batch: 32, context: 4096, cache: 'fp8_e4m3' }, { heads: 128, batch: 64, context: 4096, cache: 'fp8_e4m3' }, { heads: 128, batch: 1, context: 32768, cache: 'fp8_e4m3' });
const QUICK = new Set(['16/1/32768/bf16', '128/1/32768/bf16', '16/32/4096/bf16', '128/64/4096/bf16', '128/64/4096/fp8_e4m3']);
for (const s of GPU_SHAPES) s.quick = QUICK.has(shapeKey(s));

export function shapeKey(s) {
  return `${s.heads}/${s.batch}/${s.context}/${s.cache}`;
}

// What FlashMLA's benchmark counts for a shape: the bytes of the cache, q and out, and 2 * heads * context * (576 + 512)
// FLOP per sequence.
export function shapeWork(s) {
  const width = KV_LORA_RANK + ROPE_DIM;
  const cacheBytes = s.batch * s.context * width * (s.cache === 'bf16' ? 2 : 1);
  const bytes = cacheBytes + s.batch * s.heads * (width + KV_LORA_RANK) * 2;
  const flop = 2 * s.batch * s.heads * s.context * (width + KV_LORA_RANK);
  return { bytes, flop };
}
