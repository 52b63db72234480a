// Included by a kernel unit after all of its includes, with MLA_TARGET defined to a target string: every function
// that follows is compiled for that instruction set (GCC: #pragma GCC target; clang: #pragma clang attribute).
// Nothing after it may instantiate a header's inline function or template (see kernels.h).
#if defined(MLA_TARGET)
#define MLA_PRAGMA_(x) _Pragma(#x)
#if defined(__clang__)
#define MLA_TARGET_PUSH_(t) MLA_PRAGMA_(clang attribute push(__attribute__((target(t))), apply_to = function))
#elif defined(__GNUC__)
#define MLA_TARGET_PUSH_(t) MLA_PRAGMA_(GCC push_options) MLA_PRAGMA_(GCC target(t))
#else
#define MLA_TARGET_PUSH_(t)
#endif
MLA_TARGET_PUSH_(MLA_TARGET)
#endif
