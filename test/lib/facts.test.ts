// One place per fact in each language: the TS tables must agree with the addon's (csrc/core).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backends, DTYPE_SIZES, ERROR_CODES } from 'mla-kernels';
import { DS_MLA_TILE, DTYPE_CODES } from '../../lib/dtypes.js';
import { native } from '../../lib/native.js';
import { DEVICE_KINDS } from '../../lib/device.js';
import pkg from '../../package.json' with { type: 'json' };

describe('facts shared by lib/ and csrc/core/', () => {
  it('dtypes and their sizes agree', () => {
    expect(native().facts().dtypeSizes).toEqual(DTYPE_SIZES);
  });
  it("the fp8_ds_mla layout's scale tile agrees", () => {
    expect(native().facts().dsMlaTile).toBe(DS_MLA_TILE);
  });
  it('dtype and device kind numbers of tensor descriptors agree', () => {
    expect(native().facts().dtypeCodes).toEqual(DTYPE_CODES);
    expect(native().facts().deviceKinds).toEqual(DEVICE_KINDS);
  });
  it('error codes agree', () => {
    expect(native().facts().errorCodes).toEqual([...ERROR_CODES]);
  });
  it('the cuda backend is usable, or says why not with the CUDA error name (or that it was not built)', () => {
    const cuda = backends().find((b) => b.name === 'cuda')!;
    if (!cuda.available) expect(cuda.reason).toMatch(/^(cuda[A-Za-z]+: |not built: )/);
    else expect(cuda.reason).toMatch(/sm_\d+/);
  });

  it("the addon's N-API version is the one package.json declares", () => {
    expect(pkg.binary.napi_versions).toContain(native().facts().napiVersion);
  });

  it('an addon built for another argument interface is refused with the reason, and info says it in one line', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mla-addon-'));
    try {
      const stale = path.join(dir, 'stale-addon.js');
      writeFileSync(stale, 'module.exports = { interface: 1 };\n');
      const bin = path.join(__dirname, '..', '..', 'dist', 'cli.js');
      const r = spawnSync(process.execPath, [bin, 'info'], { encoding: 'utf8', env: { ...process.env, MLA_ADDON_PATH: stale } });
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`could not be loaded from ${stale}: it was built from another version of mla-kernels (addon interface 1, this library needs ${native().interface})`);
      expect(r.stderr).not.toContain('    at ');  // no stack trace
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
