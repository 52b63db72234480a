// What a benchmark prints about the machine it ran on.
import { spawnSync } from 'node:child_process';
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

/** The processor as the notes name it: model name, then family and model numbers (one model name covers several). */
export const processor = (() => {
  let info = '';
  try { info = readFileSync('/proc/cpuinfo', 'utf8'); } catch {}
  const field = (name) => info.match(new RegExp(`^${name}\\s*:\\s*(\\S+)`, 'm'))?.[1] ?? '?';
  return `${cpuModel} (family ${field('cpu family')}, model ${field('model')})`;
})();

/** The median (the mean of the middle two for an even count). */
export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * The A/B harnesses' alternation: `measure(side)` for each of the two sides, `rounds` times, the order swapped every
 * round so that other work on a shared machine (whose memory speed drifts from minute to minute) falls on both alike.
 * Returns each side's results in round order, so that ratios can be taken round by round.
 */
export function alternate(rounds, [first, second], measure) {
  const results = { [first]: [], [second]: [] };
  for (let r = 0; r < rounds; r++) for (const side of r % 2 ? [second, first] : [first, second]) results[side].push(measure(side));
  return results;
}

/** Runs a Node script in a fresh process; its stdout, or an error with its stderr. */
export function runNode(args, env = process.env, what = args.join(' ')) {
  const p = spawnSync(process.execPath, args.map(String), { encoding: 'utf8', env });
  if (p.status !== 0) throw new Error(`${what}: exit ${p.status}\n${p.stderr}`);
  return p.stdout;
}

/** The last line of a child's stdout, as JSON (what the harnesses' children print). */
export const lastJson = (stdout) => JSON.parse(stdout.trim().split('\n').pop());
