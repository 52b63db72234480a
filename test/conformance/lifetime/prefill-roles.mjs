// The operations prefill.mjs abuses, the roles it takes away from each (an input, an index tensor where the op has
// one, then the checked output) and each op's checked output: shared by the child and lifetime.test.ts.
export const ROLES = {
  gatherLatentCache: ['cache', 'blockTable', 'kvC'],
  upProjectKv: ['wUk', 'v'],
  mlaPrefill: ['q', 'cuSeqLensQ', 'out'],
  mergeAttentionStates: ['lseA', 'out'],
  mlaSparseDecode: ['q', 'indices', 'out'],
  mlaSparsePrefill: ['kv', 'indices', 'out'],
  lightningIndexer: ['cache', 'seqLens', 'scores'],
};
export const OUTPUTS = Object.fromEntries(Object.entries(ROLES).map(([op, roles]) => [op, roles[roles.length - 1]]));
// Roles that are index tensors (on the host on every backend).
export const INDEX_ROLES = ['blockTable', 'cuSeqLensQ', 'indices', 'seqLens'];
