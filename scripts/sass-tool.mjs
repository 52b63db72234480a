// A SASS disassembler for check-cuda.mjs. The CUDA 13 toolkit here ships neither cuobjdump nor nvdisasm, and
// NVIDIA's apt repository is not reachable; Debian's non-free archive is, and its nvidia-cuda-toolkit 11.8 package
// holds a cuobjdump that decodes sm_80 … sm_90 machine code. Two facts make it usable on our cubins:
//  - CUDA 12.8+ writes cubins in ELF ABI version 8, whose e_flags carry the architecture in bits 8–15; 11.8 reads ABI 7,
//    with the architecture in bits 0–7 and 16–23 (plus 0x500: 64-bit, unified texture mode). The machine code is the
//    same for a given architecture, so a copy with the older header disassembles (checked: the sm_80 decode kernel
//    shows HMMA.16816.F32.BF16 and .F32 in equal numbers, one per mma.sync of the bf16 and f16 instantiations).
//  - 11.8 knows no architecture after sm_90: sm_100 and sm_120 are reported as not inspected.
// Order of search: $CUOBJDUMP, the toolkit's own, PATH, then a cached copy of Debian's (downloaded once, its sha256
// pinned, when CI=true or MLA_FETCH_CUOBJDUMP=1).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const DEB = {
  url: 'http://deb.debian.org/debian/pool/non-free/n/nvidia-cuda-toolkit/nvidia-cuda-toolkit_11.8.89~11.8.0-5~deb12u1_amd64.deb',
  sha256: 'd1156026e704fe0368b6295db06224ed00a727966fb13454f34e3f3102db0457',
  maxArch: 90,
};
const cacheDir = path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'mla-kernels', 'cuobjdump-11.8');

export function which(cmd) {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
}

async function fetchDebian() {
  const res = await fetch(DEB.url);
  if (!res.ok) throw new Error(`${DEB.url}: HTTP ${res.status}`);
  const deb = Buffer.from(await res.arrayBuffer());
  const sum = createHash('sha256').update(deb).digest('hex');
  if (sum !== DEB.sha256) throw new Error(`${DEB.url}: sha256 ${sum}, expected ${DEB.sha256}`);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'mla-cuobjdump-'));
  try {
    writeFileSync(path.join(tmp, 'pkg.deb'), deb);
    execFileSync('dpkg-deb', ['-x', path.join(tmp, 'pkg.deb'), path.join(tmp, 'x')]);
    mkdirSync(cacheDir, { recursive: true });
    // cuobjdump -sass runs nvdisasm, looked up beside it
    for (const tool of ['nvdisasm', 'cuobjdump']) {
      copyFileSync(path.join(tmp, 'x', 'usr', 'bin', tool), path.join(cacheDir, tool));
      chmodSync(path.join(cacheDir, tool), 0o755);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// { path, version (e.g. 11.8), maxArch, origin } or { reason } when none can be had.
export async function findCuobjdump() {
  const candidates = [
    [process.env.CUOBJDUMP, '$CUOBJDUMP'],
    ['/usr/local/cuda/bin/cuobjdump', 'the CUDA toolkit'],
    [which('cuobjdump'), 'PATH'],
    [path.join(cacheDir, 'cuobjdump'), `Debian's nvidia-cuda-toolkit 11.8, cached in ${cacheDir}`],
  ];
  let found = candidates.find(([p], i) => p && existsSync(p) && (i < 3 || existsSync(path.join(cacheDir, 'nvdisasm'))));
  if (!found && (process.env.CI === 'true' || process.env.MLA_FETCH_CUOBJDUMP === '1')) {
    try {
      await fetchDebian();
      found = candidates[3];
    } catch (e) {
      return { reason: `cuobjdump could not be fetched from Debian: ${e.message}` };
    }
  }
  if (!found) return { reason: 'cuobjdump not installed (MLA_FETCH_CUOBJDUMP=1 fetches Debian\'s 11.8 one)' };
  const text = execFileSync(found[0], ['--version'], { encoding: 'utf8' });
  const version = /release (\d+\.\d+)/.exec(text)?.[1] ?? '0.0';
  const [major, minor] = version.split('.').map(Number);
  const maxArch = major > 12 || (major === 12 && minor >= 8) ? 1000 : major === 12 || (major === 11 && minor >= 8) ? 90 : 86;
  return { path: found[0], version, maxArch, origin: found[1] };
}

// The SASS of a cubin, with the ELF header rewritten to ABI 7 when the tool predates ABI 8 (see above).
export function disassemble(tool, cubin, arch) {
  if (arch > tool.maxArch) return null;
  let file = cubin;
  const elf = readFileSync(cubin);
  if (elf[8] >= 8 && tool.maxArch < 1000) {
    const flags = elf.readUInt32LE(0x30);
    const sm = (flags >> 8) & 0xff;
    if (sm !== arch) throw new Error(`${cubin}: e_flags 0x${flags.toString(16)} do not name sm_${arch}`);
    const old = Buffer.from(elf);
    old[7] = 0x33; // ELFOSABI_CUDA of ABI 7
    old[8] = 7;
    old.writeUInt32LE(((sm << 16) | 0x500 | sm) >>> 0, 0x30);
    file = `${cubin}.abi7`;
    writeFileSync(file, old);
  }
  const env = { ...process.env, PATH: `${path.dirname(tool.path)}${path.delimiter}${process.env.PATH ?? ''}` };
  return execFileSync(tool.path, ['-sass', file], { encoding: 'utf8', maxBuffer: 1 << 28, env });
}
