// One place per fact in each language: the TS tables must agree with the addon's (csrc/core).
import { describe, expect, it } from 'vitest';
import { DTYPE_SIZES, ERROR_CODES } from 'mla-kernels';
import { native } from '../lib/native.js';
import pkg from '../package.json' with { type: 'json' };

describe('facts shared by lib/ and csrc/core/', () => {
  it('dtypes and their sizes agree', () => {
    expect(native().facts().dtypeSizes).toEqual(DTYPE_SIZES);
  });
  it('error codes agree', () => {
    expect(native().facts().errorCodes).toEqual([...ERROR_CODES]);
  });
  it("the addon's N-API version is the one package.json declares", () => {
    expect(pkg.binary.napi_versions).toContain(native().facts().napiVersion);
  });
});
