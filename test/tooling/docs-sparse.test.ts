// docs/sparse.md: every ```ts block runs as written (on the cpu backend, where the sparse operations run).
import { docExamples } from './doc-examples.js';

docExamples('sparse.md', ['sparse out', 'sparse prefill out']);
