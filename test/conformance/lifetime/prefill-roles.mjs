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
  // the dense mlaDecode over an fp8_ds_mla cache (on a device: the sparse decode kernel's dense mode)
  mlaDecodeDsMla: ['cache', 'blockTable', 'out'],
};
export const OUTPUTS = Object.fromEntries(Object.entries(ROLES).map(([op, roles]) => [op, roles[roles.length - 1]]));
// Roles that are index tensors (on the host on every backend).
export const INDEX_ROLES = ['blockTable', 'cuSeqLensQ', 'indices', 'seqLens'];
