#!/usr/bin/env node
// npx mla-kernels info: what this installation found; npx mla-kernels estimate: KV-cache sizes.
import { estimateCli } from './estimate.js';
import { info } from './info.js';

const BUILT_BY: Record<string, string> = {
  prebuild: 'the prebuilt binary shipped in the package',
  'node-gyp': 'built from source with node-gyp (binding.gyp: CPU only)',
  'cmake-js': 'built from source with cmake-js (CMakeLists.txt: CPU, and CUDA when nvcc was found)',
  unknown: 'a build of unknown origin',
};
const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;

function printInfo(): void {
  const i = info();
  const c = i.cuda;
  console.log(`mla-kernels ${i.version} (node ${i.node}, ${i.platform})`);
  console.log(`addon: ${i.addon}: ${BUILT_BY[i.addonBuild]}${i.addonFromEnv ? ' (chosen by MLA_ADDON_PATH)' : ''}`);
  console.log(`cpu:   ${i.cpu.simd} kernels, ${i.cpu.threads} threads; ${i.cpu.reason}`);
  if (!c.built) console.log(`cuda:  ${c.reason}`);
  else {
    console.log(`cuda:  kernels for ${c.targets?.join(', ')}` +
      `${c.runtimeVersion ? `; CUDA runtime ${c.runtimeVersion} (static)` : ''}${c.runtimeVersion || c.driverVersion ? `, driver ${c.driverVersion ?? 'none'}` : ''}`);
    console.log(`       ${c.available ? 'available' : 'unavailable'}: ${c.reason}`);
    for (const d of c.devices ?? [])
      console.log(`       device ${d.index}: ${d.name}, ${d.arch}${d.totalMemory ? `, ${gib(d.totalMemory)}` : ''}${d.usable ? '' : ` — not usable: ${d.reason ?? 'unsupported'}`}`);
  }
  console.log('backends:');
  for (const b of i.backends)
    console.log(`  ${b.name.padEnd(9)} ${b.available ? 'available  ' : 'unavailable'}  ${b.reason}${b.name !== 'cpu' && b.devices?.length ? ` [devices: ${b.devices.join(', ')}]` : ''}`);
  console.log(`default backend: ${i.defaultBackend}`);
}

function main(argv: string[]): number {
  const command = argv[0] ?? 'info';
  if (command === 'info') {
    try {
      printInfo();
    } catch (e) {
      // No usable addon: say why in one line (the message names the file and the remedy), not with a stack.
      console.error(`mla-kernels: ${(e as Error).message}`);
      return 1;
    }
    return 0;
  }
  if (command === 'estimate') return estimateCli(argv.slice(1));
  if (command === '--help' || command === 'help') {
    console.log('usage: mla-kernels info    what this installation found (addon, backends)');
    console.log('       mla-kernels estimate  KV-cache bytes of MHA, GQA, MQA and MLA (mla-kernels estimate --help)');
    return 0;
  }
  console.error(`mla-kernels: unknown command '${command}' (try: mla-kernels info, mla-kernels estimate)`);
  return 2;
}

process.exitCode = main(process.argv.slice(2));
