// Runs every ```ts block of a page of docs/ as written, each as its own module: the block must print (console.log)
// its label, and any Float32Array it prints after the label (lse values, say) must be finite.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';

export function docExamples(page: string, labels: readonly string[]): void {
  const doc = readFileSync(path.join(__dirname, '..', '..', 'docs', page), 'utf8');
  const blocks = [...doc.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  describe(`docs/${page}`, () => {
    it(`has its ${labels.length} examples`, () => expect(blocks).toHaveLength(labels.length));

    blocks.forEach((code, i) =>
      it(`example ${i + 1} (${labels[i]}) runs as written`, async () => {
        const dir = path.join(__dirname, '..', '.tmp');
        mkdirSync(dir, { recursive: true });
        const file = path.join(dir, `docs-${path.basename(page, '.md')}-${i + 1}.ts`);
        writeFileSync(file, code);
        const log = vi.spyOn(console, 'log').mockImplementation(() => {});
        try {
          await import(file);
          const call = log.mock.calls.find((c) => c[0] === labels[i]);
          expect(call, `example ${i + 1} printed ${JSON.stringify(log.mock.calls)}`).toBeDefined();
          for (const x of call!.slice(1)) if (x instanceof Float32Array) expect(Array.from(x).every(Number.isFinite)).toBe(true);
        } finally {
          log.mockRestore();
        }
      }),
    );
  });
}
