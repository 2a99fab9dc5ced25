import { getSystemErrorMap, getSystemErrorName } from 'node:util';

/** Codes of the library's own errors (system errors carry the errno name instead, e.g. 'EBUSY'). */
export type LoopErrorCode =
  | 'ERR_LOOP_INVALID_ARGUMENT'
  | 'ERR_LOOP_INVALID_OPTION'
  | 'ERR_LOOP_INVALID_BACKING'
  | 'ERR_LOOP_NOT_LOOP_DEVICE'
  | 'ERR_LOOP_NOT_ATTACHED'
  | 'ERR_LOOP_NO_CONTROL'
  | 'ERR_LOOP_DEVICE_DENIED'
  | 'ERR_LOOP_BUSY'
  | 'ERR_LOOP_REUSED'
  | 'ERR_LOOP_OVERLAP'
  | 'ERR_LOOP_SETTING_IGNORED'
  | 'ERR_LOOP_ABORTED'
  | 'ERR_LOOP_UNKNOWN_FSTYPE'
  | 'ERR_LOOP_NO_PARTITION'
  | 'ERR_LOOP_STILL_HELD'
  | 'ERR_LOOP_MISSING_TOOL'
  | 'ERR_LOOP_TOOL_FAILED'
  | 'ERR_LOOP_NOT_MOUNTED'
  | 'ERR_LOOP_NATIVE_LOAD'
  | 'ERR_LOOP_BAD_IMAGE'
  | 'ERR_LOOP_AMBIGUOUS_IMAGE'
  | 'ERR_LOOP_UNSUPPORTED_IMAGE'
  | 'ERR_LOOP_NOTHING_TO_MOUNT';

export interface LoopErrorDetails {
  code?: string;
  errno?: number;
  syscall?: string;
  path?: string;
  /** The loop device number the failed step worked on. */
  device?: number;
  /** How many attempts were made before giving up. */
  attempts?: number;
  /** Several failures reported as one (the first is also the `cause`). */
  errors?: unknown[];
  /** The step of the operation that failed, for a failure in the kernel-facing steps (e.g. 'configure', 'openDevice'). */
  stage?: string;
  cause?: unknown;
}

/**
 * The one error class of the library. System errors look like Node's own (`code` 'EBUSY',
 * negative `errno`, `syscall`, `path`); the library's own errors have `ERR_LOOP_*` codes.
 */
export class LoopError extends Error {
  readonly code: string;
  // `declare`: absent fields stay absent (no own `undefined` keys), as on Node's errors.
  declare readonly errno?: number;
  declare readonly syscall?: string;
  declare readonly path?: string;
  declare readonly device?: number;
  declare readonly attempts?: number;
  declare readonly errors?: unknown[];
  declare readonly stage?: string;

  constructor(message: string, details: LoopErrorDetails) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'LoopError';
    this.code = details.code ?? (details.errno === undefined ? 'ERR_LOOP' : errnoText(-Math.abs(details.errno))[0]);
    const fields = this as { -readonly [K in keyof LoopError]: LoopError[K] };
    if (details.errno !== undefined) fields.errno = details.errno;
    if (details.syscall !== undefined) fields.syscall = details.syscall;
    if (details.path !== undefined) fields.path = details.path;
    if (details.device !== undefined) fields.device = details.device;
    if (details.attempts !== undefined) fields.attempts = details.attempts;
    if (details.errors !== undefined) fields.errors = details.errors;
    if (details.stage !== undefined) fields.stage = details.stage;
  }

  /** A system error: `errno` may be given positive (as C returns it) or negative (as Node does). */
  static system(errno: number, syscall: string, path?: string, extra: Partial<LoopErrorDetails> = {}): LoopError {
    const negative = -Math.abs(errno);
    const [code, meaning] = errnoText(negative);
    const text = `${code}: ${meaning}, ${syscall}${path === undefined ? '' : ` '${path}'`}`;
    return new LoopError(text, { ...extra, errno: negative, syscall, path, code });
  }
}

/** Throws (never returns) a library error with an `ERR_LOOP_*` code. */
export function fail(code: LoopErrorCode, message: string, details: Omit<LoopErrorDetails, 'code'> = {}): never {
  throw new LoopError(message, { ...details, code });
}

// Linux errnos libuv does not know (util.getSystemErrorMap() has no entry for them).
const LINUX_ONLY: ReadonlyMap<number, readonly [string, string]> = new Map([
  [-15, ['ENOTBLK', 'block device required']],
  [-37, ['ENOLCK', 'no locks available']],
  [-117, ['EUCLEAN', 'structure needs cleaning']],
  [-122, ['EDQUOT', 'disk quota exceeded']],
  [-123, ['ENOMEDIUM', 'no medium found']],
  [-124, ['EMEDIUMTYPE', 'wrong medium type']],
]);
let systemErrors: Map<number, [string, string]> | undefined;

/** The errno's name and what it means, in Node's words (`errno` negative). */
function errnoText(errno: number): readonly [string, string] {
  // A failure that came without an errno is a bug of ours: still a LoopError, with the step's
  // stage, path and device, rather than a RangeError from util.getSystemErrorName(0).
  if (errno === 0) return ['UNKNOWN', 'failed without an errno (a loopdev bug: please report it)'];
  systemErrors ??= getSystemErrorMap();
  return systemErrors.get(errno) ?? LINUX_ONLY.get(errno) ?? [getSystemErrorName(errno), 'system error'];
}

/** What the addon says about a failure (native/errors.cc). */
export interface NativeErrorDetails {
  errno?: number;
  syscall?: string;
  path?: string;
  device?: number;
  code?: string;
  message?: string;
  /** an index into the addon's stage names */
  stage?: number;
}

/** Called by the addon (core/addon.ts hands it over, with the addon's stage names) to build the error it throws. */
export function fromNative(details: NativeErrorDetails, stages: readonly string[]): LoopError {
  const stage = details.stage === undefined ? undefined : stages[details.stage];
  if (details.code !== undefined) {
    return new LoopError(details.message ?? details.code, { code: details.code, path: details.path, device: details.device, stage });
  }
  return LoopError.system(details.errno ?? 0, details.syscall ?? 'unknown', details.path, { device: details.device, stage });
}

/** Turns an error thrown by Node's fs module into a LoopError, keeping its fields. */
export function fromNodeError(error: unknown): LoopError {
  if (error instanceof LoopError) return error;
  const nodeError = error as NodeJS.ErrnoException;
  if (typeof nodeError?.errno === 'number' && typeof nodeError.syscall === 'string') {
    return LoopError.system(nodeError.errno, nodeError.syscall, nodeError.path, { cause: error });
  }
  return new LoopError(String((error as Error)?.message ?? error), { code: 'ERR_LOOP_INVALID_ARGUMENT', cause: error });
}

/** True for a LoopError (or Node error) with one of the given codes. */
export function hasCode(error: unknown, ...codes: string[]): boolean {
  return typeof error === 'object' && error !== null && codes.includes((error as { code?: string }).code ?? '');
}

/** A failed step's error, which the caller judges (retry or not); anything but a LoopError is a bug and is thrown on. */
export function stepFailure(thrown: unknown): LoopError {
  if (thrown instanceof LoopError) return thrown;
  throw thrown;
}
