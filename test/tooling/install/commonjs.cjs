// CommonJS: require('mla-kernels') loads the package (Node's require() of an ES module without top-level await), and
// so do require('mla-kernels/reference') and import(); all give the same module. A small decode through require()
// is checked against the reference. Prints one line "RESULT <json>".
const mla = require('mla-kernels');
const { refMlaDecode } = require('mla-kernels/reference');
const { estimateKvCache } = require('mla-kernels/estimate');

const dim = 48, kvLoraRank = 32;
const q = Float32Array.from({ length: 4 * dim }, (_, i) => Math.sin(i));
const cache = Float32Array.from({ length: 2 * 4 * dim }, (_, i) => Math.cos(i));
const blockTable = new Int32Array([1, 0]), seqLens = new Int32Array([7]);
const { out } = mla.mlaDecode({
  q: mla.Tensor.from(q, [1, 1, 4, dim]),
  cache: mla.Tensor.from(cache, [2, 4, dim]),
  blockTable: mla.Tensor.from(blockTable, [1, 2]),
  seqLens: mla.Tensor.from(seqLens, [1]),
  softmaxScale: 0.1,
  kvLoraRank,
});
out.toFloat32().then(async (got) => {
  const ref = refMlaDecode({
    q: { data: q, shape: [1, 1, 4, dim] },
    cache: { data: cache, shape: [2, 4, dim] },
    blockTable: { data: blockTable, shape: [1, 2] },
    seqLens: { data: seqLens, shape: [1] },
    softmaxScale: 0.1,
    kvLoraRank,
  });
  const maxErr = got.reduce((m, v, i) => Math.max(m, Math.abs(v - ref.out[i])), 0);
  const imported = await import('mla-kernels');
  console.log('RESULT ' + JSON.stringify({
    lang: 'cjs',
    maxErr,
    sameModule: imported.Tensor === mla.Tensor,
    estimate: estimateKvCache({ heads: 24, emb: 2048, layers: 48, kvHeads: 6, kvLoraRank: 1024, context: 8192 }).mla.totalBytes,
  }));
});
