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
