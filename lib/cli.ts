#!/usr/bin/env node
// The package's bin: `npx mla-kernels [info | estimate | --help | --version]` (lib/commands.ts).
import { runCli } from './commands.js';

void runCli(process.argv.slice(2), { out: (t) => console.log(t), err: (t) => console.error(t) }).then((code) => {
  process.exitCode = code;
});
