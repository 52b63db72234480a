// Compile-time checks of the public types, compiled by test/lib/types.test.ts (nothing here runs): what each
// operation's outputs are for each dtype, and the misuse the types refuse. Each line after a `@ts-expect-error` must
// fail to compile; the test also compiles the file without those comments and checks that exactly those lines fail.
import { expectTypeOf } from 'vitest';
import {
  absorbQuery,
  appendLatentCache,
  gatherLatentCache,
  lightningIndexer,
  mergeAttentionStates,
  mlaDecode,
  mlaPrefill,
  mlaSparseDecode,
  mlaSparsePrefill,
  appendIndexerCache,
  Tensor,
  unabsorbOutput,
  upProjectKv,
  type FloatDType,
  type LatentCacheDType,
} from '../../lib/index.js';

declare function t<D extends 'f32' | 'f16' | 'bf16' | 'i32' | 'fp8_e4m3' | 'fp8_ds_mla'>(dtype: D): Tensor<D>;
const index = t('i32');
const decodeArgs = { blockTable: index, seqLens: index, softmaxScale: 0.1, kvLoraRank: 512 };

export async function reads(): Promise<void> {
  // read() gives the stored elements, typed by dtype; toFloat32() the values.
  expectTypeOf(await t('bf16').read()).toEqualTypeOf<Uint16Array>();
  expectTypeOf(await t('f16').read()).toEqualTypeOf<Uint16Array>();
  expectTypeOf(await t('f32').read()).toEqualTypeOf<Float32Array>();
  expectTypeOf(await t('i32').read()).toEqualTypeOf<Int32Array>();
  expectTypeOf(await t('fp8_e4m3').read()).toEqualTypeOf<Uint8Array>();
  expectTypeOf(await t('bf16').toFloat32()).toEqualTypeOf<Float32Array>();
  // @ts-expect-error a bf16 tensor's read() is 16-bit patterns, not values
  const values: Float32Array = await t('bf16').read();
  void values;
}

export async function decode(): Promise<void> {
  const { out, lse } = mlaDecode({ q: t('bf16'), cache: t('bf16'), ...decodeArgs });
  expectTypeOf(out).toEqualTypeOf<Tensor<'bf16'>>();
  expectTypeOf(await out.read()).toEqualTypeOf<Uint16Array>();
  expectTypeOf(lse).toEqualTypeOf<Tensor<'f32'>>();
  expectTypeOf(mlaDecode({ q: t('f32'), cache: t('f32'), ...decodeArgs }).out).toEqualTypeOf<Tensor<'f32'>>();
  expectTypeOf(await mlaDecode({ q: t('f32'), cache: t('f32'), ...decodeArgs }).out.read()).toEqualTypeOf<Float32Array>();
  // An fp8 cache goes with any float q; out has q's dtype.
  expectTypeOf(mlaDecode({ q: t('f16'), cache: t('fp8_e4m3'), ...decodeArgs }).out).toEqualTypeOf<Tensor<'f16'>>();
  // A dtype known only at run time stays open.
  const q = t('bf16') as Tensor<FloatDType>;
  const cache = t('fp8_e4m3') as Tensor<LatentCacheDType>;
  expectTypeOf(mlaDecode({ q, cache, ...decodeArgs }).out).toEqualTypeOf<Tensor<FloatDType>>();
  expectTypeOf(mlaDecode({ q: t('bf16'), cache: t('bf16'), ...decodeArgs, out: t('bf16') }).out).toEqualTypeOf<Tensor<'bf16'>>();

  // @ts-expect-error an f16 cache for a bf16 query
  mlaDecode({ q: t('bf16'), cache: t('f16'), ...decodeArgs });
  // @ts-expect-error an f32 out for a bf16 query
  mlaDecode({ q: t('bf16'), cache: t('bf16'), ...decodeArgs, out: t('f32') });
  // @ts-expect-error q must be a float dtype
  mlaDecode({ q: t('fp8_e4m3'), cache: t('fp8_e4m3'), ...decodeArgs });
  // @ts-expect-error the scale is the cache's own, not an option
  mlaDecode({ q: t('bf16'), cache: t('fp8_e4m3'), ...decodeArgs, cacheScale: 0.5 });
}

export function projections(): void {
  expectTypeOf(absorbQuery({ qNope: t('bf16'), wUk: t('bf16'), qPe: t('bf16') })).toEqualTypeOf<Tensor<'bf16'>>();
  expectTypeOf(unabsorbOutput({ oLat: t('f16'), wUv: t('f16') })).toEqualTypeOf<Tensor<'f16'>>();
  expectTypeOf(upProjectKv({ kvC: t('f32'), wUk: t('f32'), wUv: t('f32') })).toEqualTypeOf<{ kNope: Tensor<'f32'>; v: Tensor<'f32'> }>();
  // @ts-expect-error f16 weights for a bf16 query
  absorbQuery({ qNope: t('bf16'), wUk: t('f16') });
  // @ts-expect-error a qPe of another dtype
  absorbQuery({ qNope: t('bf16'), wUk: t('bf16'), qPe: t('f32') });
  // @ts-expect-error an out of another dtype
  unabsorbOutput({ oLat: t('f16'), wUv: t('f16'), out: t('bf16') });
  // @ts-expect-error wUv of another dtype
  upProjectKv({ kvC: t('bf16'), wUk: t('bf16'), wUv: t('f16') });
}

export function append(): void {
  const args = { slotMapping: index };
  appendLatentCache({ cache: t('bf16'), kvC: t('bf16'), kPe: t('bf16'), ...args });
  appendLatentCache({ cache: t('fp8_e4m3'), kvC: t('f32'), kPe: t('f32'), ...args });
  // @ts-expect-error kPe of another dtype than kvC
  appendLatentCache({ cache: t('bf16'), kvC: t('bf16'), kPe: t('f16'), ...args });
  // @ts-expect-error a float cache of another dtype than kvC
  appendLatentCache({ cache: t('f16'), kvC: t('bf16'), kPe: t('bf16'), ...args });
  // @ts-expect-error the scale is the cache's own, not an option
  appendLatentCache({ cache: t('fp8_e4m3'), kvC: t('bf16'), kPe: t('bf16'), ...args, cacheScale: 2 });
}

export function prefill(): void {
  const lens = { cuSeqLensQ: index, cuSeqLensKv: index, softmaxScale: 0.1 };
  const { out, lse } = mlaPrefill({ q: t('bf16'), kNope: t('bf16'), kPe: t('bf16'), v: t('bf16'), ...lens });
  expectTypeOf(out).toEqualTypeOf<Tensor<'bf16'>>();
  expectTypeOf(lse).toEqualTypeOf<Tensor<'f32'>>();
  expectTypeOf(mergeAttentionStates({ outA: out, lseA: lse, outB: out, lseB: lse }).out).toEqualTypeOf<Tensor<'bf16'>>();
  // @ts-expect-error v of another dtype than q
  mlaPrefill({ q: t('bf16'), kNope: t('bf16'), kPe: t('bf16'), v: t('f16'), ...lens });
  // @ts-expect-error outB of another dtype than outA
  mergeAttentionStates({ outA: out, lseA: lse, outB: t('f32'), lseB: lse });

  const gather = { blockTable: index, cuSeqLens: index, kvLoraRank: 512 };
  expectTypeOf(gatherLatentCache({ cache: t('f16'), ...gather }).kvC).toEqualTypeOf<Tensor<'f16'>>();
  expectTypeOf(gatherLatentCache({ cache: t('fp8_e4m3'), ...gather }).kPe).toEqualTypeOf<Tensor<'bf16'>>();
  expectTypeOf(gatherLatentCache({ cache: t('fp8_e4m3'), ...gather, dtype: 'f32' }).kvC).toEqualTypeOf<Tensor<'f32'>>();
  expectTypeOf(gatherLatentCache({ cache: t('fp8_e4m3'), ...gather, kvC: t('f16') }).kPe).toEqualTypeOf<Tensor<'f16'>>();
  // @ts-expect-error the scale is the cache's own, not an option
  gatherLatentCache({ cache: t('fp8_e4m3'), ...gather, cacheScale: 2 });
}

export function scales(): void {
  expectTypeOf(Tensor.zeros([4, 16, 576], 'fp8_e4m3', { scale: 0.02 }).scale).toEqualTypeOf<number>();
  Tensor.from(new Uint8Array(4), [4], 'fp8_e4m3', { scale: 0.5 });
  Tensor.fromValues([1, 2], [2], 'fp8_e4m3', { scale: 0.5 });
  // @ts-expect-error only fp8 tensors have a scale
  Tensor.zeros([4], 'bf16', { scale: 2 });
  // @ts-expect-error only fp8 tensors have a scale
  Tensor.from(new Uint16Array(4), [4], 'bf16', { scale: 2 });
}

export async function sparse(): Promise<void> {
  const args = { indices: index, softmaxScale: 0.1, kvLoraRank: 512 };
  expectTypeOf(mlaSparseDecode({ q: t('bf16'), cache: t('fp8_ds_mla'), ...args }).out).toEqualTypeOf<Tensor<'bf16'>>();
  expectTypeOf(await mlaSparseDecode({ q: t('f32'), cache: t('f32'), ...args }).out.read()).toEqualTypeOf<Float32Array>();
  expectTypeOf(mlaSparsePrefill({ q: t('f16'), kv: t('f16'), ...args }).out).toEqualTypeOf<Tensor<'f16'>>();
  appendIndexerCache({ cache: t('fp8_e4m3'), scales: t('f32'), k: t('bf16'), slotMapping: index });
  const indexer = { weights: t('f32'), blockTable: index, seqLens: index, topk: 2048 };
  expectTypeOf(lightningIndexer({ q: t('bf16'), cache: t('bf16'), ...indexer }).indices).toEqualTypeOf<Tensor<'i32'>>();
  // @ts-expect-error an f16 cache for a bf16 query
  mlaSparseDecode({ q: t('bf16'), cache: t('f16'), ...args });
  // @ts-expect-error an out of another dtype than q
  mlaSparseDecode({ q: t('bf16'), cache: t('bf16'), ...args, out: t('f32') });
  // @ts-expect-error kv of another dtype than q
  mlaSparsePrefill({ q: t('bf16'), kv: t('f32'), ...args });
  // @ts-expect-error a float indexer cache of another dtype than k
  appendIndexerCache({ cache: t('f16'), k: t('bf16'), slotMapping: index });
  // @ts-expect-error a float indexer cache of another dtype than q
  lightningIndexer({ q: t('bf16'), cache: t('f32'), ...indexer });
}
