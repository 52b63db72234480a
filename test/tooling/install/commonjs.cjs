// CommonJS: the package is ESM-only, so require() is refused (Node 20: ERR_PACKAGE_PATH_NOT_EXPORTED, as the
// exports map has no "require" condition); import() from CommonJS works. Prints one line "RESULT <json>".
let requireError = null;
try {
  require('mla-kernels');
} catch (e) {
  requireError = e.code ?? String(e);
}
import('mla-kernels').then((m) => {
  const t = m.Tensor.from(new Float32Array([1, 2, 3]), [3]);
  return t.read().then((v) => console.log('RESULT ' + JSON.stringify({ lang: 'cjs', requireError, importWorks: v[2] === 3 })));
});
