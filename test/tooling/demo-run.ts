// Runs the demo quietly on the tiny model (cpu, f32, MHA compared, three sequences), returning its result and report.
import { CONFIGS } from '../../demo/main.js';
import { runDemo, type DemoOptions } from '../../demo/run.js';

export async function runTinyDemo(o: Partial<DemoOptions>, config: Partial<DemoOptions['config']> = {}, seed = 11) {
  const lines: string[] = [];
  const result = await runDemo({
    config: { ...CONFIGS.tiny, dtype: 'f32', seed, ...config },
    promptLens: [5, 11, 2],
    newTokens: [4, 3, 5],
    backend: 'cpu',
    mhaCompare: true,
    progress: false,
    print: (l) => lines.push(l),
    ...o,
  });
  return { result, text: lines.join('\n') };
}
