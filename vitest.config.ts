import path from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Tests and the README example import the package by name; they run the TypeScript source.
    alias: [
      { find: /^mla-kernels\/(reference|estimate)$/, replacement: path.resolve(__dirname, 'lib/$1.ts') },
      { find: /^mla-kernels$/, replacement: path.resolve(__dirname, 'lib/index.ts') },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
