// bf16 and f16 conversions on known bit patterns: exact values, ties to even, subnormals, overflow, NaN.
import { describe, expect, it } from 'vitest';
import { fromBf16Bits, fromF16Bits, toBf16Array, toBf16Bits, toF16Bits, bf16ToFloat32, f16ToFloat32 } from 'mla-kernels';

const f32 = (bits: number) => new Float32Array(new Uint32Array([bits]).buffer)[0];

describe('bf16', () => {
  it('known values', () => {
    expect(toBf16Bits(1)).toBe(0x3f80);
    expect(toBf16Bits(-2)).toBe(0xc000);
    expect(toBf16Bits(0)).toBe(0x0000);
    expect(toBf16Bits(-0)).toBe(0x8000);
    expect(toBf16Bits(Infinity)).toBe(0x7f80);
    expect(toBf16Bits(-Infinity)).toBe(0xff80);
    expect(toBf16Bits(NaN)).toBe(0x7fc0);
    expect(toBf16Bits(3.140625)).toBe(0x4049);
    expect(fromBf16Bits(0x4049)).toBe(3.140625);
  });
  it('ties go to even, anything above a tie goes up', () => {
    expect(toBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // halfway 0x3f80..0x3f81: even is 0x3f80
    expect(toBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // halfway 0x3f81..0x3f82: even is 0x3f82
    expect(toBf16Bits(1 + 2 ** -8 + 2 ** -30)).toBe(0x3f81);
    expect(toBf16Bits(f32(0x3f808000))).toBe(0x3f80);
    expect(toBf16Bits(f32(0x3f818000))).toBe(0x3f82);
    expect(toBf16Bits(f32(0x3f808001))).toBe(0x3f81);
  });
  it('no double rounding through f32', () => {
    // 1 + 2^-8 + 2^-40 is above the tie, but rounds to the tie 1 + 2^-8 in f32 first.
    expect(toBf16Bits(1 + 2 ** -8 + 2 ** -40)).toBe(0x3f81);
  });
  it('overflow and subnormals', () => {
    expect(toBf16Bits(f32(0x7f7f7fff))).toBe(0x7f7f); // below the tie with infinity
    expect(toBf16Bits(f32(0x7f7f8000))).toBe(0x7f80); // tie at the top rounds to infinity (even)
    expect(toBf16Bits(2 ** -133)).toBe(0x0001); // smallest subnormal
    expect(toBf16Bits(2 ** -134)).toBe(0x0000); // tie with zero: even
    expect(toBf16Bits(3 * 2 ** -135)).toBe(0x0001);
    expect(fromBf16Bits(0x0001)).toBe(2 ** -133);
    expect(fromBf16Bits(0x807f)).toBe(-(127 * 2 ** -133));
  });
  it('every bit pattern round-trips', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const values = bf16ToFloat32(all);
    for (let h = 0; h < 65536; h++) {
      const v = values[h];
      expect(fromBf16Bits(h)).toBe(Number.isNaN(v) ? NaN : v);
      if (!Number.isNaN(v)) expect(toBf16Bits(v)).toBe(h);
    }
    const back = toBf16Array(values);
    for (let h = 0; h < 65536; h++) if (!Number.isNaN(values[h])) expect(back[h]).toBe(h);
  });
});

describe('f16', () => {
  it('known values', () => {
    expect(toF16Bits(1)).toBe(0x3c00);
    expect(toF16Bits(-2)).toBe(0xc000);
    expect(toF16Bits(65504)).toBe(0x7bff);
    expect(toF16Bits(0.1)).toBe(0x2e66);
    expect(toF16Bits(-0)).toBe(0x8000);
    expect(toF16Bits(NaN)).toBe(0x7e00);
    expect(toF16Bits(-Infinity)).toBe(0xfc00);
    expect(fromF16Bits(0x3555)).toBeCloseTo(1 / 3, 3);
  });
  it('ties to even and overflow', () => {
    expect(toF16Bits(1 + 2 ** -11)).toBe(0x3c00);
    expect(toF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(toF16Bits(65519.99)).toBe(0x7bff);
    expect(toF16Bits(65520)).toBe(0x7c00); // the tie above the largest finite value goes to infinity
    expect(toF16Bits(1e6)).toBe(0x7c00);
  });
  it('subnormals', () => {
    expect(toF16Bits(2 ** -24)).toBe(0x0001);
    expect(toF16Bits(2 ** -25)).toBe(0x0000); // tie with zero: even
    expect(toF16Bits(3 * 2 ** -26)).toBe(0x0001);
    expect(toF16Bits(3 * 2 ** -25)).toBe(0x0002); // 1.5 units: tie, even is 2
    expect(toF16Bits(2 ** -14 - 2 ** -25)).toBe(0x0400); // rounds up into the smallest normal
    expect(fromF16Bits(0x03ff)).toBe(1023 * 2 ** -24);
  });
  it('every bit pattern round-trips', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const values = f16ToFloat32(all);
    for (let h = 0; h < 65536; h++) {
      if (Number.isNaN(values[h])) continue;
      expect(fromF16Bits(h)).toBe(values[h]);
      expect(toF16Bits(values[h])).toBe(h);
    }
  });
});
