// A minimal ONNX writer (protobuf wire format by hand, no dependency) for the benchmark's peer: absorbed MLA decode as
//   S = MatMul(Q, Transpose(K)) · scale (+ causal mask) → P = Softmax(S) → O = MatMul(P, Slice(K, 0:kvLoraRank))
// with Q [B, M, D], K [B, N, D] (f32), mask [M, N] additive (only when causal), O [B, M, kvLoraRank].

function varint(n) {
  let v = BigInt(n);
  if (v < 0n) v += 1n << 64n;
  const out = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}
const key = (field, wire) => varint((field << 3) | wire);
const bytes = (field, data) => [...key(field, 2), ...varint(data.length), ...data];
const str = (field, s) => bytes(field, [...Buffer.from(s, 'utf8')]);
const int = (field, n) => [...key(field, 0), ...varint(n)];
const f32 = (field, x) => {
  const b = Buffer.alloc(4);
  b.writeFloatLE(x);
  return [...key(field, 5), ...b];
};

const FLOAT = 1, INT64 = 7;
const ATTR_FLOAT = 1, ATTR_INT = 2, ATTR_INTS = 7;

function attrInt(name, v) { return [...str(1, name), ...int(3, v), ...int(20, ATTR_INT)]; }
function attrInts(name, vs) { return [...str(1, name), ...vs.flatMap((v) => int(8, v)), ...int(20, ATTR_INTS)]; }
void ATTR_FLOAT;

function node(op, inputs, outputs, attrs = []) {
  return [...inputs.flatMap((i) => str(1, i)), ...outputs.flatMap((o) => str(2, o)), ...str(3, `${op}_${outputs[0]}`), ...str(4, op),
    ...attrs.flatMap((a) => bytes(5, a))];
}

function tensorInit(name, dims, type, values) {
  const data = type === FLOAT ? values.flatMap((v) => f32(4, v)) : values.flatMap((v) => int(7, v));
  return [...dims.flatMap((d) => int(1, d)), ...int(2, type), ...data, ...str(8, name)];
}

function valueInfo(name, type, dims) {
  const shape = dims.flatMap((d) => bytes(1, typeof d === 'number' ? int(1, d) : str(2, d)));
  const tensorType = [...int(1, type), ...bytes(2, shape)];
  return [...str(1, name), ...bytes(2, bytes(1, tensorType))];
}

// A model of one graph: its nodes, initialisers, inputs and one output, at opset 17.
function model(name, nodes, inits, inputs, output) {
  const graph = [
    ...nodes.flatMap((n) => bytes(1, n)),
    ...str(2, name),
    ...inits.flatMap((t) => bytes(5, t)),
    ...inputs.flatMap((i) => bytes(11, i)),
    ...bytes(12, output),
  ];
  return Uint8Array.from([...int(1, 8), ...str(2, 'mla-kernels-bench'), ...bytes(7, graph), ...bytes(8, [...str(1, ''), ...int(2, 17)])]);
}

// P = Softmax(Q Kᵀ · scale (+ mask)): the nodes both graphs start with.
function softmaxNodes(causal) {
  return [
    node('Transpose', ['K'], ['Kt'], [attrInts('perm', [0, 2, 1])]),
    node('MatMul', ['Q', 'Kt'], ['S']),
    node('Mul', ['S', 'scale'], ['S2']),
    ...(causal ? [node('Add', ['S2', 'mask'], ['S3'])] : []),
    node('Softmax', [causal ? 'S3' : 'S2'], ['P'], [attrInt('axis', -1)]),
  ];
}

/** The ONNX model bytes of absorbed MLA decode for fixed shapes. */
export function mlaDecodeOnnx({ batch, rows, context, width, kvLoraRank, scale, causal }) {
  const nodes = [
    ...softmaxNodes(causal),
    node('Slice', ['K', 'starts', 'ends', 'axes'], ['V']),
    node('MatMul', ['P', 'V'], ['O']),
  ];
  const inits = [
    tensorInit('scale', [], FLOAT, [scale]),
    tensorInit('starts', [1], INT64, [0]),
    tensorInit('ends', [1], INT64, [kvLoraRank]),
    tensorInit('axes', [1], INT64, [2]),
  ];
  const inputs = [valueInfo('Q', FLOAT, [batch, rows, width]), valueInfo('K', FLOAT, [batch, context, width])];
  if (causal) inputs.push(valueInfo('mask', FLOAT, [rows, context]));
  return model('mla_decode', nodes, inits, inputs, valueInfo('O', FLOAT, [batch, rows, kvLoraRank]));
}

/**
 * The ONNX model bytes of multi-head attention for fixed shapes (prefill's peer): per head h,
 * O[h] = Softmax(Q[h] K[h]ᵀ · scale (+ mask)) V[h], with Q [H, M, D], K [H, N, D], V [H, N, Dv] (f32), mask [M, N]
 * additive (only when causal), O [H, M, Dv].
 */
export function attentionOnnx({ heads, queries, keys, width, vWidth, scale, causal }) {
  const nodes = [
    ...softmaxNodes(causal),
    node('MatMul', ['P', 'V'], ['O']),
  ];
  const inputs = [valueInfo('Q', FLOAT, [heads, queries, width]), valueInfo('K', FLOAT, [heads, keys, width]), valueInfo('V', FLOAT, [heads, keys, vWidth])];
  if (causal) inputs.push(valueInfo('mask', FLOAT, [queries, keys]));
  return model('attention', nodes, [tensorInit('scale', [], FLOAT, [scale])], inputs, valueInfo('O', FLOAT, [heads, queries, vWidth]));
}
