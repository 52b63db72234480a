// Error codes: the one C++ place for them (lib/errors.ts mirrors them; a test checks both agree).
// The N-API glue turns an mla::Error into a JS MlaError with the same code.
#pragma once
#include <stdexcept>
#include <string>

namespace mla {

enum class ErrorCode {
  Argument,     // E_ARGUMENT: a missing or malformed argument (not a tensor, not a number, unknown option)
  Shape,        // E_SHAPE: wrong rank or a dimension that disagrees with another argument
  DType,        // E_DTYPE: wrong element type, or a TypedArray of the wrong kind
  Device,       // E_DEVICE: a tensor on a device the operation's stream cannot reach
  Range,        // E_RANGE: a value out of range (slot, block id, sequence length, scale, position)
  Disposed,     // E_DISPOSED: a tensor or stream used after dispose()
  Unsupported,  // E_UNSUPPORTED: valid input this backend or build does not handle
  OutOfMemory,  // E_OOM
  Cuda,         // E_CUDA: a CUDA runtime error, with its name
  Internal,     // E_INTERNAL: a bug in mla-kernels; please report it
};

inline constexpr ErrorCode kAllErrorCodes[] = {
    ErrorCode::Argument, ErrorCode::Shape, ErrorCode::DType, ErrorCode::Device, ErrorCode::Range,
    ErrorCode::Disposed, ErrorCode::Unsupported, ErrorCode::OutOfMemory, ErrorCode::Cuda, ErrorCode::Internal};

inline const char* errorCodeName(ErrorCode c) {
  switch (c) {
    case ErrorCode::Argument: return "E_ARGUMENT";
    case ErrorCode::Shape: return "E_SHAPE";
    case ErrorCode::DType: return "E_DTYPE";
    case ErrorCode::Device: return "E_DEVICE";
    case ErrorCode::Range: return "E_RANGE";
    case ErrorCode::Disposed: return "E_DISPOSED";
    case ErrorCode::Unsupported: return "E_UNSUPPORTED";
    case ErrorCode::OutOfMemory: return "E_OOM";
    case ErrorCode::Cuda: return "E_CUDA";
    case ErrorCode::Internal: return "E_INTERNAL";
  }
  return "E_INTERNAL";
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace mla
