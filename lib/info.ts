import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { native, nativePath, packageRoot, type NativeCudaInfo } from './native.js';
import { backends, defaultBackend, type BackendInfo, type BackendName } from './device.js';

const require = createRequire(import.meta.url);

/**
 * Where the addon in use came from: the prebuilt binary shipped in the package, a source build by node-gyp
 * (binding.gyp: CPU only; npm install's fallback, or `npm rebuild --build-from-source`), a source build by
 * cmake-js (CMakeLists.txt: CPU and CUDA when nvcc was found), or a file we cannot tell.
 */
export type AddonBuild = 'prebuild' | 'node-gyp' | 'cmake-js' | 'unknown';

export interface CudaDeviceInfo {
  index: number;
  name: string;
  /** e.g. 'sm_90'. */
  arch: string;
  totalMemory: number;
  usable: boolean;
  reason?: string;
}

export interface CudaInfo {
  /** Whether this addon has the CUDA backend compiled in. */
  built: boolean;
  /** Whether the `cuda` backend can run here. */
  available: boolean;
  /** The backend's own line: the device in use, or why CUDA is unusable (not built, no driver, old driver, no device). */
  reason: string;
  /** Architectures the kernels were compiled for (e.g. 'sm_80'), when the CUDA backend is built. */
  targets?: string[];
  /** CUDA runtime (linked into the addon) and driver versions, e.g. '13.0'; the driver is absent when there is none. */
  runtimeVersion?: string;
  driverVersion?: string;
  /** The devices the runtime sees, when the CUDA backend is built. */
  devices?: CudaDeviceInfo[];
}

export interface Info {
  version: string;
  /** The addon file in use, relative to the package (a prebuild, or a local build). */
  addon: string;
  addonBuild: AddonBuild;
  /** True when MLA_ADDON_PATH chose the addon (tests, development). */
  addonFromEnv: boolean;
  backends: BackendInfo[];
  defaultBackend: BackendName;
  /** The CPU kernels in use (`simd`: which instruction set). */
  cpu: { simd: string; threads: number; reason: string };
  cuda: CudaInfo;
  node: string;
  platform: string;
}

function addonBuild(file: string): AddonBuild {
  const buildRoot = path.dirname(path.dirname(file)); // prebuilds/linux-x64/x.node, build/Release/x.node
  if (path.basename(buildRoot) === 'prebuilds') return 'prebuild';
  if (existsSync(path.join(buildRoot, 'CMakeCache.txt'))) return 'cmake-js';
  if (existsSync(path.join(buildRoot, 'config.gypi'))) return 'node-gyp';
  return 'unknown';
}

const version = (v: number): string | undefined => (v ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : undefined);

/** The package's version (its package.json). */
export function packageVersion(): string {
  return (require(path.join(packageRoot, 'package.json')) as { version: string }).version;
}

/** What this installation found: version, the addon in use, each backend and why one is unavailable. */
export function info(): Info {
  const file = nativePath();
  const addon = native();
  const list = backends();
  const cpuLine = list.find((b) => b.name === 'cpu');
  const cpu = addon.cpuInfo();
  const cudaLine = list.find((b) => b.name === 'cuda')!;
  const built = addon.cudaInfo !== undefined; // exported by builds with the CUDA backend
  const cuda: CudaInfo = { built, available: cudaLine.available, reason: cudaLine.reason };
  let c: NativeCudaInfo | undefined;
  try {
    c = addon.cudaInfo?.();
  } catch {
    c = undefined; // the backend line above already says what is wrong
  }
  if (c) {
    cuda.targets = c.targets;
    cuda.runtimeVersion = version(c.runtimeVersion);
    cuda.driverVersion = version(c.driverVersion);
    cuda.devices = c.devices.map((d) => ({
      index: d.index,
      name: d.name,
      arch: `sm_${d.computeCapability.replace('.', '')}`,
      totalMemory: d.totalMemory,
      usable: d.usable,
      reason: d.reason,
    }));
  }
  return {
    version: packageVersion(),
    addon: path.relative(packageRoot, file) || file,
    addonBuild: addonBuild(file),
    addonFromEnv: !!process.env.MLA_ADDON_PATH,
    backends: list,
    defaultBackend: defaultBackend(),
    cpu: { simd: cpu.simd, threads: cpu.threads, reason: cpuLine?.reason ?? '' },
    cuda,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}
