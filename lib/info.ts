import { createRequire } from 'node:module';
import path from 'node:path';
import { nativePath, packageRoot } from './native.js';
import { backends, defaultBackend, type BackendInfo, type BackendName } from './stream.js';

const require = createRequire(import.meta.url);

export interface Info {
  version: string;
  /** The addon file in use (a prebuild, or a local build). */
  addon: string;
  backends: BackendInfo[];
  defaultBackend: BackendName;
  node: string;
  platform: string;
}

/** What this installation found: version, the addon in use, each backend and why one is unavailable. */
export function info(): Info {
  const pkg = require(path.join(packageRoot, 'package.json')) as { version: string };
  return {
    version: pkg.version,
    addon: path.relative(packageRoot, nativePath()) || nativePath(),
    backends: backends(),
    defaultBackend: defaultBackend(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}
