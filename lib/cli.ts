#!/usr/bin/env node
// npx mla-kernels info: what this installation found.
import { info } from './info.js';

function main(argv: string[]): number {
  const command = argv[0] ?? 'info';
  if (command === 'info') {
    const i = info();
    console.log(`mla-kernels ${i.version} (node ${i.node}, ${i.platform})`);
    console.log(`addon: ${i.addon}`);
    for (const b of i.backends) console.log(`  ${b.name.padEnd(9)} ${b.available ? 'available  ' : 'unavailable'}  ${b.reason}`);
    console.log(`default backend: ${i.defaultBackend}`);
    return 0;
  }
  if (command === '--help' || command === 'help') {
    console.log('usage: mla-kernels info    what this installation found (addon, backends)');
    return 0;
  }
  console.error(`mla-kernels: unknown command '${command}' (try: mla-kernels info)`);
  return 2;
}

process.exitCode = main(process.argv.slice(2));
