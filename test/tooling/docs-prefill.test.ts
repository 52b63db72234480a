// docs/prefill.md and docs/fp8.md: every ```ts block runs as written (on the default stream: cpu here, cuda where a GPU is).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';

// Each page's blocks, by what each prints first: a label, then values that must be finite.
const pages: Record<string, string[]> = { 'prefill.md': ['prefill out', 'chunk out', 'planned'], 'fp8.md': ['decode'] };

describe.each(Object.entries(pages))('docs/%s', (page, expected) => {
  const doc = readFileSync(path.join(__dirname, '..', '..', 'docs', page), 'utf8');
  const blocks = [...doc.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  it(`has its ${expected.length} examples`, () => expect(blocks).toHaveLength(expected.length));

  blocks.forEach((code, i) =>
    it(`example ${i + 1} (${expected[i]}) runs as written`, async () => {
      const dir = path.join(__dirname, '..', '.tmp');
      mkdirSync(dir, { recursive: true });
      const file = path.join(dir, `docs-${path.basename(page, '.md')}-${i + 1}.ts`);
      writeFileSync(file, code);
      const log = vi.spyOn(console, 'log').mockImplementation(() => {});
      try {
        await import(file);
        const call = log.mock.calls.find((c) => c[0] === expected[i]);
        expect(call, `example ${i + 1} printed ${JSON.stringify(log.mock.calls)}`).toBeDefined();
        for (const x of call!.slice(1)) if (x instanceof Float32Array) expect(Array.from(x).every(Number.isFinite)).toBe(true);
      } finally {
        log.mockRestore();
      }
    }),
  );
});
