// What a benchmark prints about the machine it ran on.
import { readFileSync } from 'node:fs';
import os from 'node:os';

/** The load average (1, 5, 15 minutes) as printed beside results: other work on the machine skews timings. */
export const load = () => os.loadavg().map((x) => x.toFixed(2)).join(' ');

/** The processor's model name. */
export const cpuModel = (() => {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? os.cpus()[0]?.model;
  } catch {
    return os.cpus()[0]?.model;
  }
})();
