// AVX-512F kernels (16 fp32 lanes, 32 registers): the fp32 path of kernels_generic.inl, f16 through vcvtph2ps.
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define MLA_TARGET "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"
#include "target_begin.h"

namespace mla::cpu {
namespace {

#include "kernels_scalar.inl"

#include "vo_avx512.inl"
#include "kernels_generic.inl"
#include "prefill_generic.inl"

double noLoop(int64_t) { return 0.0; }

}  // namespace
}  // namespace mla::cpu

#include "target_end.h"

namespace mla::cpu {
// Outside the target region: this runs on any x86-64 (the backend calls it only after checking the processor).
const KernelSet& avx512Kernels() {
  static const KernelSet k{"avx512", decodeScratchGeneric, decodeGeneric, VO::loadElems, VO::storeElems,
                           axpyGeneric, dotGeneric, ropeGeneric, VO::streamCopy, VO::streamFence, fmaLoopGeneric, noLoop,
                           prefillScratchGeneric, prefillGeneric, gemmScratchGeneric, gemmNTGeneric};
  return k;
}
}  // namespace mla::cpu
#endif
