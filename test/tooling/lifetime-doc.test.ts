// docs/lifetime.md's example, run exactly as written.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect, it, vi } from 'vitest';

it("docs/lifetime.md's example runs as written and says what the page says", async () => {
  const page = readFileSync(path.join(__dirname, '..', '..', 'docs', 'lifetime.md'), 'utf8');
  const blocks = [...page.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  expect(blocks).toHaveLength(1);
  const dir = path.join(__dirname, '..', '.tmp');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'lifetime-example.ts');
  writeFileSync(file, blocks[0]);
  const log = vi.spyOn(console, 'log').mockImplementation(() => {});
  try {
    await import(file);
    const said = (first: string) => log.mock.calls.find((c) => c[0] === first)!;
    expect(Number.isFinite(said('out[0] after the decode:')[1])).toBe(true);
    expect(said('read:').slice(1)).toEqual(['E_DISPOSED', expect.stringContaining('read: out was detached')]);
    expect(said('call:').slice(1)).toEqual(['E_DISPOSED', expect.stringContaining('out was detached')]);
  } finally {
    log.mockRestore();
  }
});
