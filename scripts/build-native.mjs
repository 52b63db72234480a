#!/usr/bin/env node
// The full native build with cmake-js into build-cmake/: CPU backend, CUDA kernels when nvcc is found,
// the cuda-sim emulator and its self-test. Environment:
//   MLA_CUDA=AUTO|ON|OFF     build the CUDA backend (default AUTO: when nvcc is found)
//   MLA_CUDA_ARCHS=90        one architecture while developing (default: csrc/kernels/architectures.txt)
//   MLA_SANITIZE=1           AddressSanitizer + UndefinedBehaviorSanitizer build (into build-asan/)
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const sanitize = process.env.MLA_SANITIZE === '1';
const out = sanitize ? 'build-asan' : 'build-cmake';
const args = [cmakeJs, 'compile', '-O', out, '--CDMLA_CUDA=' + (process.env.MLA_CUDA ?? 'AUTO'), '--CDMLA_CUDA_SIM=' + (process.env.MLA_CUDA_SIM ?? 'ON'), '--CDMLA_SANITIZE=' + (sanitize ? 'ON' : 'OFF')];
if (process.env.MLA_CUDA_ARCHS) args.push('--CDMLA_CUDA_ARCHS=' + process.env.MLA_CUDA_ARCHS);
if (sanitize) args.push('--config', 'RelWithDebInfo');
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
