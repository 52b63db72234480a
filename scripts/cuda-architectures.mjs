// The CUDA architectures of csrc/kernels/architectures.txt (the one list; CMakeLists.txt reads it too), as numbers.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const file = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'csrc', 'kernels', 'architectures.txt');

/** Every architecture, e.g. [80, 86, 89, 90, 100, 120]. */
export function cudaArchitectures() {
  const archs = readFileSync(file, 'utf8').split('\n').filter((l) => /^\d+$/.test(l.trim())).map(Number);
  if (!archs.length) throw new Error(`${file} lists no architecture`);
  return archs;
}

/** MLA_CUDA_ARCHS when set (one architecture while developing), else every architecture. */
export function selectedCudaArchitectures(env = process.env) {
  return env.MLA_CUDA_ARCHS ? env.MLA_CUDA_ARCHS.split(/[;,\s]+/).filter(Boolean).map(Number) : cudaArchitectures();
}
