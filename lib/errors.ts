/**
 * Every error mla-kernels throws or rejects with is an {@link MlaError} with one of these stable codes.
 * The C++ list is csrc/core/errors.h; a test checks the two agree.
 */
export const ERROR_CODES = [
  'E_ARGUMENT', // a missing or malformed argument: not a Tensor, not a number, an unknown option
  'E_SHAPE', // wrong rank, or a dimension that disagrees with another argument
  'E_DTYPE', // wrong element type (an fp8 scale included), or a TypedArray of the wrong kind
  'E_DEVICE', // a tensor on a device the operation's stream cannot reach
  'E_RANGE', // a value out of range: slot, block id, sequence length, scale, position
  'E_DISPOSED', // a tensor or stream used after dispose()
  'E_UNSUPPORTED', // valid input this backend or build does not handle
  'E_OOM', // out of memory
  'E_CUDA', // a CUDA runtime error, named in the message
  'E_INTERNAL', // a bug in mla-kernels: please report it
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** The error type of mla-kernels: `code` is stable, `message` names the argument, what was expected and what came. */
export class MlaError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'MlaError';
    this.code = code;
  }
}
