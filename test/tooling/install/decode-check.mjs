// The install tests' consumer in plain JavaScript (ESM), run in a fresh project: the same decode as
// decode-check.ts, checked against mla-kernels/reference. Prints one line "RESULT <json>".
import { Tensor, info, mlaDecode } from 'mla-kernels';
import { refMlaDecode } from 'mla-kernels/reference';

let seed = 12345;
const rand = (n) => Float32Array.from({ length: n }, () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) - 0.5);

const batch = 2, heads = 4, kvLoraRank = 32, ropeDim = 16, blockSize = 4, numBlocks = 6;
const dim = kvLoraRank + ropeDim;
const q = rand(batch * heads * dim);
const cache = rand(numBlocks * blockSize * dim);
const blockTable = new Int32Array([4, 1, 0, 2, 5, 3]);
const seqLens = new Int32Array([5, 9]);
const softmaxScale = 1 / Math.sqrt(dim);

const result = mlaDecode({
  q: Tensor.from(q, [batch, 1, heads, dim]),
  cache: Tensor.from(cache, [numBlocks, blockSize, dim]),
  blockTable: Tensor.from(blockTable, [batch, 3]),
  seqLens: Tensor.from(seqLens, [batch]),
  softmaxScale,
  kvLoraRank,
});
const out = await result.out.toFloat32();
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
console.log('RESULT ' + JSON.stringify({ lang: 'js', relErr: Math.sqrt(num / den), out: Array.from(out), lse: Array.from(lse), info: info() }));
