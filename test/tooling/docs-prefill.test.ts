// docs/prefill.md and docs/fp8.md: every ```ts block runs as written (on the default stream: cpu here, cuda where a GPU is).
import { docExamples } from './doc-examples.js';

docExamples('prefill.md', ['prefill out', 'chunk out', 'planned']);
docExamples('fp8.md', ['decode']);
