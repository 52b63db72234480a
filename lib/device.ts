// Devices and backends: their names, the backend that owns a device, the kinds numbered as in csrc/core, and which
// backends this build has.
import { MlaError } from './errors.js';
import { native } from './native.js';

/** Where operations run: `cpu`, `cuda-sim` (CUDA kernels under emulation; tests) or `cuda`. */
export type BackendName = 'cpu' | 'cuda-sim' | 'cuda';

/** Where a tensor's memory lives: the host, a GPU, or the emulator's device memory (tests). */
export type DeviceName = 'cpu' | `cuda:${number}` | `cuda-sim:${number}`;

export interface BackendInfo {
  name: BackendName;
  available: boolean;
  /** Why it is unavailable, or what it runs on. */
  reason: string;
  /** The devices it serves here (`cpu`; `cuda:0`, `cuda:1`, ...); empty when unavailable. */
  devices: DeviceName[];
}

const BACKENDS: readonly string[] = ['cpu', 'cuda-sim', 'cuda'];

/** @internal Each backend's device kind in tensor descriptors (csrc/core/tensor.h's DeviceKind). */
export const DEVICE_KINDS: Readonly<Record<BackendName, number>> = { cpu: 0, cuda: 1, 'cuda-sim': 2 };

/** The backend that owns a device's memory. */
export function backendOf(device: DeviceName): BackendName {
  if (device === 'cpu') return 'cpu';
  if (/^cuda:\d+$/.test(device)) return 'cuda';
  if (/^cuda-sim:\d+$/.test(device)) return 'cuda-sim';
  throw new MlaError('E_DEVICE', `device must be 'cpu', 'cuda:N' or 'cuda-sim:N', got ${String(device)}`);
}

/** @internal */
export function isDeviceName(x: unknown): x is DeviceName {
  return typeof x === 'string' && /^(cpu|cuda:\d+|cuda-sim:\d+)$/.test(x);
}

/**
 * @internal Refuses what is not a backend name or a device, as `new Stream()` takes it: E_DEVICE for a malformed
 * device (a name with a ':', such as 'cuda:x' or 'gpu:0'), E_ARGUMENT for anything else (as csrc/core's parseDevice).
 */
export function checkBackendOrDevice(x: unknown): asserts x is BackendName | DeviceName {
  if (BACKENDS.includes(x as string) || isDeviceName(x)) return;
  if (typeof x === 'string' && x.includes(':'))
    throw new MlaError('E_DEVICE', `device '${x}' is malformed: expected 'cuda:N' or 'cuda-sim:N' with N a device index`);
  throw new MlaError('E_ARGUMENT', `backend must be 'cpu', 'cuda-sim' or 'cuda', or a device 'cuda:N' or 'cuda-sim:N', got ${String(x)}`);
}

/** The backends this build knows, whether each can be used here, and why not. */
export function backends(): BackendInfo[] {
  return native().backends() as BackendInfo[];
}

/** The backend of the default stream: `MLA_DEVICE` when set, else `cuda` when available, else `cpu`. */
export function defaultBackend(): BackendName {
  const forced = process.env.MLA_DEVICE;
  if (forced) {
    const name = isDeviceName(forced) ? backendOf(forced) : (forced as BackendName);
    const info = backends().find((b) => b.name === name);
    if (!info) throw new MlaError('E_ARGUMENT', `MLA_DEVICE must be cpu, cuda-sim, cuda or a device cuda:N / cuda-sim:N, got '${forced}'`);
    if (!info.available) throw new MlaError('E_UNSUPPORTED', `MLA_DEVICE=${forced}, but ${name} is unavailable: ${info.reason}`);
    return name;
  }
  return backends().some((b) => b.name === 'cuda' && b.available) ? 'cuda' : 'cpu';
}

/** The device of the default stream: MLA_DEVICE when it names one (`cuda:1`), else device 0 of {@link defaultBackend}. */
export function defaultDevice(): BackendName | DeviceName {
  const backend = defaultBackend();
  const forced = process.env.MLA_DEVICE;
  return forced && isDeviceName(forced) ? forced : backend;
}

/** Bytes of one device's memory in use and the most ever in use (E_DEVICE beyond the devices there are). */
export function memoryStats(device: DeviceName): { bytesInUse: number; peakBytes: number } {
  backendOf(device);
  return native().memoryStats(device);
}
