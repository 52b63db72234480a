// The README's usage example, run exactly as written.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';

describe('README', () => {
  it('the usage example runs as written', async () => {
    const readme = readFileSync(path.join(__dirname, '..', '..', 'README.md'), 'utf8');
    const block = /<!-- example:start -->\s*```ts\n([\s\S]*?)```\s*<!-- example:end -->/.exec(readme);
    expect(block, 'README.md has no example block').not.toBeNull();
    const dir = path.join(__dirname, '..', '.tmp');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'readme-example.ts');
    writeFileSync(file, block![1]);
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      await import(file);
      const [, values, , lse] = log.mock.calls.find((c) => c[0] === 'o[0, 0, 0, :4] =')!;
      expect(Array.from(values as Float32Array).every(Number.isFinite)).toBe(true);
      expect(Number.isFinite(lse)).toBe(true);
    } finally {
      log.mockRestore();
    }
  });
});
