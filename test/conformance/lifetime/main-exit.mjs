// process.exit() on the main thread while streams have work queued (and running): the process ends with the code
// it was given, with nothing run on freed memory on the way out. LT_BACKEND, LT_DELAY (ms before exiting).
import { busy, device, mla } from './common.mjs';

const streams = [new mla.Stream(device), new mla.Stream(device)];
for (const s of streams) busy(s, 300);
console.log('RESULT {}');
setTimeout(() => process.exit(7), Number(process.env.LT_DELAY ?? 20));
