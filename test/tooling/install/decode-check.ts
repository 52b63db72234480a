// The install tests' consumer, compiled with tsc against the *installed* package's types (strict, NodeNext, no
// skipLibCheck) and run in a fresh project, once as an ES module and once as CommonJS (the same source: no top-level
// await, so tsc can emit require() for a CommonJS project), and, its types stripped, as plain JavaScript
// (install/common.mjs, writeJsConsumer): a small absorbed decode on the default backend, checked against
// mla-kernels/reference. Prints one line "RESULT <json>".
import { Tensor, info, mlaDecode, type Info, type MlaDecodeResult } from 'mla-kernels';
import { refMlaDecode } from 'mla-kernels/reference';

let seed = 12345;
const rand = (n: number): Float32Array => Float32Array.from({ length: n }, () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) - 0.5);

const batch = 2, heads = 4, kvLoraRank = 32, ropeDim = 16, blockSize = 4, numBlocks = 6;
const dim = kvLoraRank + ropeDim;
const q = rand(batch * heads * dim);
const cache = rand(numBlocks * blockSize * dim);
const blockTable = new Int32Array([4, 1, 0, 2, 5, 3]);
const seqLens = new Int32Array([5, 9]);
const softmaxScale = 1 / Math.sqrt(dim);

async function main(): Promise<void> {
  const result: MlaDecodeResult = mlaDecode({
    q: Tensor.from(q, [batch, 1, heads, dim]),
    cache: Tensor.from(cache, [numBlocks, blockSize, dim]),
    blockTable: Tensor.from(blockTable, [batch, 3]),
    seqLens: Tensor.from(seqLens, [batch]),
    softmaxScale,
    kvLoraRank,
  });
  const out: Float32Array = await result.out.toFloat32();
  const lse = await result.lse.read();
  const ref = refMlaDecode({
    q: { data: q, shape: [batch, 1, heads, dim] },
    cache: { data: cache, shape: [numBlocks, blockSize, dim] },
    blockTable: { data: blockTable, shape: [batch, 3] },
    seqLens: { data: seqLens, shape: [batch] },
    softmaxScale,
    kvLoraRank,
  });
  let num = 0, den = 0;
  out.forEach((v, i) => ((num += (v - ref.out[i]) ** 2), (den += ref.out[i] ** 2)));
  const i: Info = info();
  console.log('RESULT ' + JSON.stringify({ lang: typeof require === 'function' ? 'cjs' : 'esm', relErr: Math.sqrt(num / den), out: Array.from(out), lse: Array.from(lse as Float32Array), info: i }));
}
void main();
