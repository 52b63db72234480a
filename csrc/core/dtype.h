// Element types: the one C++ place for their names and sizes (lib/dtypes.ts is the TypeScript one;
// a test checks the two agree through the addon's `facts()`).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace mla {

// FP8E4M3 is OCP FP8 e4m3 ("e4m3fn", PyTorch's float8_e4m3fn): a cache format only (the latent cache with a
// per-tensor scale, cacheScale; the indexer's key cache with a scale per token); every other tensor is f32, f16, bf16
// or i32. FP8DSMLA is a latent cache of whole tokens in FlashMLA's V3.2 layout (vLLM's "fp8_ds_mla"): each row is
// dsMlaRowBytes() bytes [kvLoraRank e4m3 | kvLoraRank / kDsMlaTile fp32 scales | ropeDim bf16], its elements bytes.
// The values are the codes lib/ passes in tensor descriptors (DTYPE_CODES in lib/dtypes.ts; a test checks they agree).
enum class DType : uint8_t { F32 = 0, F16 = 1, BF16 = 2, I32 = 3, FP8E4M3 = 4, FP8DSMLA = 5 };

inline constexpr DType kAllDTypes[] = {DType::F32, DType::F16, DType::BF16, DType::I32, DType::FP8E4M3, DType::FP8DSMLA};

// The latent values sharing one fp32 scale in an FP8DSMLA row (DS_MLA_TILE in lib/dtypes.ts; a test checks they agree).
inline constexpr int64_t kDsMlaTile = 128;
// Bytes of one token's row in an FP8DSMLA cache: 656 for DeepSeek-V3.2 (512 + 16 + 128).
inline constexpr int64_t dsMlaRowBytes(int64_t kvLoraRank, int64_t ropeDim) { return kvLoraRank + 4 * (kvLoraRank / kDsMlaTile) + 2 * ropeDim; }

inline const char* dtypeName(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::FP8E4M3: return "fp8_e4m3";
    case DType::FP8DSMLA: return "fp8_ds_mla";
  }
  return "?";
}

inline size_t dtypeSize(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::FP8E4M3: return 1;
    case DType::FP8DSMLA: return 1;
  }
  return 0;
}

// The types kernels compute in (inputs, weights, outputs).
inline bool isFloating(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }
// The types a latent cache may have.
inline bool isCacheDType(DType t) { return isFloating(t) || t == DType::FP8E4M3 || t == DType::FP8DSMLA; }

// Returns false when `name` is not a dtype.
inline bool parseDType(const std::string& name, DType* out) {
  for (DType t : kAllDTypes)
    if (name == dtypeName(t)) { *out = t; return true; }
  return false;
}

}  // namespace mla
