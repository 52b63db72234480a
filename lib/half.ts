/**
 * Exact conversions between numbers and the 16-bit float formats bf16 and f16 (and FP8 e4m3, below): round to nearest, ties to
 * even, directly from the float64 value (no double rounding through f32); overflow gives ±Infinity,
 * tiny values give subnormals or signed zero, NaN gives a quiet NaN (0x7fc0 / 0x7e00 with the sign bit kept).
 * The C++ kernels use csrc/cpu/conversions.inl, which agrees bit for bit on every f32 input.
 */

interface Format {
  mantissaBits: number; // stored fraction bits
  exponentBits: number;
  bias: number;
  quietNaN: number;
}

const BF16: Format = { mantissaBits: 7, exponentBits: 8, bias: 127, quietNaN: 0x7fc0 };
const F16: Format = { mantissaBits: 10, exponentBits: 5, bias: 15, quietNaN: 0x7e00 };

function encode(x: number, f: Format): number {
  const infBits = ((1 << f.exponentBits) - 1) << f.mantissaBits;
  if (Number.isNaN(x)) return f.quietNaN;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | infBits;
  if (a === 0) return sign;
  const minExp = 1 - f.bias; // exponent of the smallest normal
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1; // log2 may round up just below a power of two
  else if (2 ** (e + 1) <= a) e += 1;
  e = Math.max(e, minExp);
  const ulp = 2 ** (e - f.mantissaBits); // spacing of the format's values at this exponent
  const q = a / ulp; // exact: a power-of-two scaling
  let r = Math.floor(q);
  const rest = q - r;
  if (rest > 0.5 || (rest === 0.5 && r % 2 === 1)) r += 1;
  // r * ulp is the rounded magnitude; r may have carried into the next binade.
  if (r >= 2 ** (f.mantissaBits + 1)) {
    r /= 2;
    e += 1;
  }
  const maxExp = (1 << f.exponentBits) - 2 - f.bias;
  if (e > maxExp) return sign | infBits;
  if (r < 2 ** f.mantissaBits) return sign | r; // subnormal (e is minExp): biased exponent 0
  return sign | ((e + f.bias) << f.mantissaBits) | (r - 2 ** f.mantissaBits);
}

function decode(h: number, f: Format): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> f.mantissaBits) & ((1 << f.exponentBits) - 1);
  const man = h & ((1 << f.mantissaBits) - 1);
  if (exp === (1 << f.exponentBits) - 1) return man ? NaN : sign * Infinity;
  if (exp === 0) return sign * man * 2 ** (1 - f.bias - f.mantissaBits);
  return sign * (2 ** f.mantissaBits + man) * 2 ** (exp - f.bias - f.mantissaBits);
}

/** The bf16 bit pattern nearest to `x` (ties to even). */
export function toBf16Bits(x: number): number {
  return encode(x, BF16);
}
/** The value of a bf16 bit pattern. */
export function fromBf16Bits(h: number): number {
  return decode(h & 0xffff, BF16);
}
/** The f16 (IEEE half) bit pattern nearest to `x` (ties to even). */
export function toF16Bits(x: number): number {
  return encode(x, F16);
}
/** The value of an f16 bit pattern. */
export function fromF16Bits(h: number): number {
  return decode(h & 0xffff, F16);
}

/** Converts numbers to bf16 bit patterns. */
export function toBf16Array(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = encode(values[i], BF16);
  return out;
}
/** Converts numbers to f16 bit patterns. */
export function toF16Array(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = encode(values[i], F16);
  return out;
}
/** Expands bf16 bit patterns to float32 (exact). */
export function bf16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = bits[i] << 16;
  return new Float32Array(out.buffer);
}
/** Expands f16 bit patterns to float32 (exact). */
export function f16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = decode(bits[i], F16);
  return out;
}

/**
 * The FP8 e4m3 ("e4m3fn", PyTorch's float8_e4m3fn) bit pattern nearest to `x` (ties to even). Magnitudes beyond 448,
 * the largest finite value, saturate to ±448 (the format has no infinities); NaN gives 0x7f.
 * csrc/cpu/conversions.inl agrees bit for bit on every f32 input.
 */
export function toFp8E4M3Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7f;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= 448) return sign | 0x7e;
  if (a === 0) return sign;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1;
  else if (2 ** (e + 1) <= a) e += 1;
  e = Math.max(e, -6); // below 2^-6 the values are the subnormal multiples of 2^-9
  const q = a / 2 ** (e - 3); // exact: in units of this binade's spacing
  let r = Math.floor(q);
  const rest = q - r;
  if (rest > 0.5 || (rest === 0.5 && r % 2 === 1)) r += 1;
  // Exponent field e + 7 above mantissa r - 8 (a carry to r = 16 lands on the next binade's pattern); for e = -6 the
  // patterns 0..15 are r itself, subnormals included.
  return sign | ((e + 6) * 8 + r);
}
/** The value of an FP8 e4m3 bit pattern (0x7f and 0xff are NaN). */
export function fromFp8E4M3Bits(b: number): number {
  const sign = b & 0x80 ? -1 : 1;
  const exp = (b >> 3) & 0xf, man = b & 7;
  if ((b & 0x7f) === 0x7f) return NaN;
  return sign * (exp === 0 ? man * 2 ** -9 : (8 + man) * 2 ** (exp - 10));
}
/** Converts numbers to FP8 e4m3 bit patterns. */
export function toFp8E4M3Array(values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = toFp8E4M3Bits(values[i]);
  return out;
}
/** Expands FP8 e4m3 bit patterns to float32 (exact). */
export function fp8E4M3ToFloat32(bits: Uint8Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = fromFp8E4M3Bits(bits[i]);
  return out;
}
