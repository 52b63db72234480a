// The public types (test/types/api.ts): the file compiles as it is, and without its `@ts-expect-error` comments
// exactly the lines after them fail, each with a type error (so no expected error passes for another reason).
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const dir = path.join(__dirname, '..', 'types');
const file = path.join(dir, 'api.ts');

function compile(replace?: (text: string) => string): readonly ts.Diagnostic[] {
  const config = ts.getParsedCommandLineOfConfigFile(path.join(dir, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: (d) => { throw new Error(String(d.messageText)); } })!;
  const host = ts.createCompilerHost(config.options);
  if (replace) {
    const read = host.readFile.bind(host);
    host.readFile = (name) => (path.resolve(name) === file ? replace(read(name)!) : read(name));
  }
  const program = ts.createProgram([file], config.options, host);
  return ts.getPreEmitDiagnostics(program).filter((d) => d.file && path.resolve(d.file.fileName) === file);
}

function describeAll(ds: readonly ts.Diagnostic[]): string {
  return ds.map((d) => `${d.file!.getLineAndCharacterOfPosition(d.start!).line + 1}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`).join('\n');
}

describe('public types', () => {
  it('test/types/api.ts compiles: outputs typed by the inputs\' dtype, expected errors present', () => {
    const ds = compile();
    expect(ds, describeAll(ds)).toHaveLength(0);
  });

  it('each @ts-expect-error marks the one line that fails, with a type error', () => {
    const text = ts.sys.readFile(file)!;
    const marked = text.split('\n').flatMap((line, i) => (line.trim().startsWith('// @ts-expect-error') ? [i + 2] : []));
    expect(marked.length).toBeGreaterThanOrEqual(15);
    const ds = compile((t) => t.replace(/\/\/ @ts-expect-error/g, '// expected error:'));
    const failing = [...new Set(ds.map((d) => d.file!.getLineAndCharacterOfPosition(d.start!).line + 1))];
    expect(failing, describeAll(ds)).toEqual(marked);
    // Assignability (2322, 2345) or an unknown option (2353): not a typo or a missing name.
    for (const d of ds) expect([2322, 2345, 2353], describeAll([d])).toContain(d.code);
  });
});
