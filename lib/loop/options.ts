// Option checking: everything a caller passes is checked here, before anything is opened
// or attached, and turned into a plain request for the addon.
import type { FileHandle } from 'node:fs/promises';

import { fail, LoopError } from '../core/errors';
import type { RetryHook, RetryOptions } from '../core/retry';

/**
 * Where the device's data comes from: a path, a file the caller already opened (fd or
 * FileHandle), or bytes (attached from a sealed in-memory copy, as with `inMemory`).
 */
export type BackingFile = string | number | FileHandle | Uint8Array;

/** A loop device: its path (`/dev/loop3`), its number (3), or a handle from attach(). */
export type DeviceRef = string | number | { readonly path: string; readonly number: number };

export interface AttachOptions {
  /** bind read-only (the backing file is opened read-only too) */
  readOnly?: boolean;
  /** where the device starts in the file (bytes) */
  offset?: number | bigint;
  /** the most the device exposes (bytes; 0: to the end of the file) */
  sizeLimit?: number | bigint;
  /** expose the image's partitions as /dev/loopNpM (read in userspace if the kernel cannot) */
  partscan?: boolean;
  /** set the kernel's AUTOCLEAR flag; the handle then holds the device (see `hold`) */
  autoclear?: boolean;
  /**
   * The kernel reads and writes the file with O_DIRECT (no double caching). true: or fail
   * (ERR_LOOP_SETTING_IGNORED) when the backing file cannot; 'prefer': when it can, else
   * buffered (info().directIO says which).
   */
  directIO?: boolean | 'prefer';
  /**
   * Logical sector size of the device (bytes): 512, 1024, 2048 or 4096; 'auto': the one the
   * image's GPT was written for (512 when it has none).
   */
  sectorSize?: 512 | 1024 | 2048 | 4096 | 'auto';
  /**
   * Attach a sealed in-memory copy of the file (a memfd) instead of the file: the file can
   * then be deleted or replaced, and writes through the device never reach it.
   */
  inMemory?: boolean;
  /** refuse a backing path with a symbolic link anywhere in it (resolved without a race) */
  noFollow?: boolean;
  /** attach to this device (number or /dev/loopN path), creating it if it does not exist */
  device?: number | string;
  /** free text stored in the kernel's lo_file_name (63 bytes at most) */
  label?: string;
  /**
   * Write this process's owner tag into the label (after `label`, if given), so that reap()
   * releases the device once this process is gone, even after a SIGKILL.
   */
  owner?: boolean;
  /**
   * Keep an fd on the device and bind it with AUTOCLEAR in the same ioctl: the device lives
   * as long as the handle, and the kernel frees it if the process dies, even by SIGKILL.
   */
  hold?: boolean;
  /** return the existing device when this file is already attached with the same settings */
  reuse?: boolean;
  /** take flock on /dev/loop-control while allocating, as systemd does (default true) */
  lockControl?: boolean;
  /** detach this device when the process exits or gets SIGINT/SIGTERM */
  detachOnExit?: boolean;
  retry?: Partial<RetryOptions> | false;
  signal?: AbortSignal;
  onRetry?: RetryHook;
}

export interface DetachOptions {
  /** wait until the kernel has really unbound the device: false, or a timeout (ms, default 1000) */
  wait?: false | number;
  retry?: Partial<RetryOptions> | false;
  signal?: AbortSignal;
  onRetry?: RetryHook;
}

export const LO_FLAGS = { READ_ONLY: 1, AUTOCLEAR: 4, PARTSCAN: 8, DIRECT_IO: 16 } as const;
export const DEFAULT_ATTACH_RETRY: RetryOptions = Object.freeze({ attempts: 64, minDelayMs: 1, maxDelayMs: 250 });
// util-linux retries a "still dirty" EAGAIN 10 times, 250 ms apart.
export const DEFAULT_DETACH_RETRY: RetryOptions = Object.freeze({ attempts: 10, minDelayMs: 25, maxDelayMs: 250 });
export const DEFAULT_DETACH_WAIT_MS = 1000;
const MAX_U63 = 2n ** 63n - 1n;
const SECTOR_SIZES = [512, 1024, 2048, 4096];
const PATH_MAX = 4096;
const ENAMETOOLONG = 36;
/** Whether `text` has a UTF-8 form: a lone surrogate has none (it would reach the kernel as U+FFFD, another name). */
const wellFormed = (text: string): boolean => (text as string & { isWellFormed(): boolean }).isWellFormed();

// The option names, for the message that refuses an unknown one.
const ATTACH_OPTIONS = 'readOnly, offset, sizeLimit, partscan, autoclear, directIO, sectorSize, inMemory, noFollow, device, label, owner, hold, reuse, lockControl, detachOnExit, retry, signal, onRetry';
const DETACH_OPTIONS = 'wait, retry, signal, onRetry';

export interface AttachPlan {
  backingPath: string;
  backingFd: number;
  /** the bytes to attach (a Uint8Array backing), copied into memory like inMemory */
  bytes: Uint8Array | undefined;
  flags: number;
  offset: number | bigint;
  sizeLimit: number | bigint;
  /** 0: the kernel's default; -1: 'auto' (read from the image's GPT before the attach) */
  sectorSize: number;
  /** directIO: 'prefer' (DIRECT_IO is in flags, and may not take) */
  directIOIfPossible: boolean;
  inMemory: boolean;
  noFollow: boolean;
  label: string;
  /** write this process's owner tag after the label (attach does, see owner.ts): always (or refuse), if it fits, or not */
  owner: 'always' | 'ifRoom' | 'never';
  device: number;
  hold: boolean;
  reuse: boolean;
  lockControl: boolean;
  detachOnExit: boolean;
  retry: RetryOptions | false;
  signal?: AbortSignal;
  onRetry?: RetryHook;
}

/** A logical sector size: 512, 1024, 2048 or 4096 (LOOP_SET_BLOCK_SIZE takes 512 to the page size). */
export function checkSectorSize(value: unknown, name: string): number {
  if (typeof value !== 'number' || !SECTOR_SIZES.includes(value)) invalid(`option '${name}' must be one of ${SECTOR_SIZES.join(', ')}, got ${describe(value)}`);
  return value;
}

/** `text` cut to at most `maxBytes` bytes of UTF-8 (lo_file_name holds 63), never inside a character. */
export function cutLabel(text: string, maxBytes = 63): string {
  if (Buffer.byteLength(text) <= maxBytes) return text; // measured without a copy: most fit
  const bytes = Buffer.from(text);
  let end = maxBytes;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString();
}

/** A label for lo_file_name: a string without NUL bytes, valid Unicode, at most 63 bytes of UTF-8. */
export function checkLabel(label: unknown): string {
  if (typeof label !== 'string' || label.includes('\0')) invalid(`option 'label' must be a string without NUL bytes`);
  // A lone surrogate has no UTF-8 form: it would be stored as U+FFFD, and read back as another label.
  if (!wellFormed(label)) invalid(`option 'label' is not valid Unicode (it has a lone surrogate, which UTF-8 cannot store)`);
  if (Buffer.byteLength(label) > 63) invalid(`option 'label' must be at most 63 bytes (lo_file_name)`);
  return label;
}

export function invalid(message: string): never {
  fail('ERR_LOOP_INVALID_OPTION', message);
}

export function checkKeys(options: object, known: Set<string>, what: string): void {
  for (const key of Object.keys(options)) {
    if (!known.has(key)) invalid(`unknown ${what} option '${key}' (known: ${[...known].join(', ')})`);
  }
}

/** An optional boolean option, checked. */
export function optionalBoolean(options: Record<string, unknown>, key: string): boolean | undefined {
  const value = options[key];
  if (value !== undefined && typeof value !== 'boolean') invalid(`option '${key}' must be a boolean, got ${describe(value)}`);
  return value;
}

function flag(value: unknown, name: string, fallback = false): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') invalid(`option '${name}' must be a boolean, got ${describe(value)}`);
  return value;
}

export function describe(value: unknown): string {
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') return String(value);
  return value === null ? 'null' : typeof value;
}

/** A byte count: a non-negative integer number (exact) or bigint, at most 2^63-1. */
export function byteCount(value: unknown, name: string): number | bigint {
  if (typeof value === 'bigint') {
    if (value < 0n || value > MAX_U63) invalid(`option '${name}' must be between 0 and 2^63-1 bytes, got ${value}n`);
    return value;
  }
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    invalid(`option '${name}' must be a non-negative integer number of bytes, got ${describe(value)}`);
  }
  if (!Number.isSafeInteger(value)) invalid(`option '${name}' is too large to be exact as a number: pass a bigint`);
  return value;
}

/** Checks a path argument: a non-empty string without NUL bytes. */
export function checkPath(value: unknown, what: string): string {
  if (typeof value !== 'string') {
    fail('ERR_LOOP_INVALID_ARGUMENT', `${what} must be a string path, got ${describe(value)}`);
  }
  if (value.length === 0) fail('ERR_LOOP_INVALID_ARGUMENT', `${what} must not be empty`);
  if (value.includes('\0')) fail('ERR_LOOP_INVALID_ARGUMENT', `${what} must not contain a NUL byte`);
  if (!wellFormed(value)) fail('ERR_LOOP_INVALID_ARGUMENT', `${what} is not valid Unicode (a lone surrogate)`);
  // The kernel takes at most PATH_MAX bytes, NUL included; a path is never shortened to fit.
  if (value.length >= PATH_MAX / 3 && Buffer.byteLength(value) >= PATH_MAX) throw LoopError.system(-ENAMETOOLONG, 'open', value);
  return value;
}

/** A device number: a non-negative integer within the kernel's minor range. */
export function deviceNumber(value: unknown, what = 'device number'): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xfffff) {
    fail('ERR_LOOP_INVALID_ARGUMENT', `${what} must be an integer from 0 to ${0xfffff}, got ${describe(value)}`);
  }
  return value;
}

function retryOptions(value: unknown, fallback: RetryOptions): RetryOptions | false {
  if (value === undefined) return fallback;
  if (value === false) return false;
  // An array is an object too, and [] has no unknown key: refused as optionsObject() refuses one.
  if (typeof value !== 'object' || value === null || Array.isArray(value)) invalid(`option 'retry' must be false or an object`);
  checkKeys(value, new Set(['attempts', 'minDelayMs', 'maxDelayMs']), 'retry');
  const merged = { ...fallback, ...(value as Partial<RetryOptions>) };
  for (const [key, number] of Object.entries(merged)) {
    if (typeof number !== 'number' || !Number.isInteger(number) || number < 0) {
      invalid(`option 'retry.${key}' must be a non-negative integer, got ${describe(number)}`);
    }
  }
  if (merged.attempts < 1) invalid(`option 'retry.attempts' must be at least 1`);
  if (merged.minDelayMs > merged.maxDelayMs) invalid(`option 'retry.minDelayMs' must not exceed 'retry.maxDelayMs'`);
  return merged;
}

function checkHooks(signal: unknown, onRetry: unknown): void {
  if (signal !== undefined && !(signal instanceof AbortSignal)) invalid(`option 'signal' must be an AbortSignal`);
  if (onRetry !== undefined && typeof onRetry !== 'function') invalid(`option 'onRetry' must be a function`);
}

export function optionsObject(options: unknown): Record<string, unknown> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    fail('ERR_LOOP_INVALID_ARGUMENT', `options must be an object, got ${describe(options)}`);
  }
  return options as Record<string, unknown>;
}

/** Parses `/dev/loopN` (or a number) into N; other paths are resolved by the caller. */
export function loopNumberFromPath(path: string): number | undefined {
  const match = /^\/dev\/loop(\d+)$/.exec(path);
  return match ? Number(match[1]) : undefined;
}

function unknownOption(what: string, key: string, known: string): never {
  invalid(`unknown ${what} option '${key}' (known: ${known})`);
}

export function planAttach(file: unknown, rawOptions: unknown): AttachPlan {
  // Read with for-in and a switch into locals: callers' options objects come in any shape, and
  // named reads of each option go megamorphic once a process has seen a few shapes.
  let readOnly, offset, sizeLimit, partscan, autoclear, directIO, sectorSize, inMemory, noFollow, device, label, owner, hold, reuse, lockControl, detachOnExit, retry, signal, onRetry: unknown;
  if (rawOptions !== undefined) {
    const options = optionsObject(rawOptions);
    for (const key in options) {
      if (!Object.hasOwn(options, key)) continue; // own keys only, as Object.keys
      const value = options[key];
      switch (key) {
        case 'readOnly': readOnly = value; break;
        case 'offset': offset = value; break;
        case 'sizeLimit': sizeLimit = value; break;
        case 'partscan': partscan = value; break;
        case 'autoclear': autoclear = value; break;
        case 'directIO': directIO = value; break;
        case 'sectorSize': sectorSize = value; break;
        case 'inMemory': inMemory = value; break;
        case 'noFollow': noFollow = value; break;
        case 'device': device = value; break;
        case 'label': label = value; break;
        case 'owner': owner = value; break;
        case 'hold': hold = value; break;
        case 'reuse': reuse = value; break;
        case 'lockControl': lockControl = value; break;
        case 'detachOnExit': detachOnExit = value; break;
        case 'retry': retry = value; break;
        case 'signal': signal = value; break;
        case 'onRetry': onRetry = value; break;
        default: unknownOption('attach', key, ATTACH_OPTIONS);
      }
    }
  }
  let backingPath = '';
  let backingFd = -1;
  let bytes: Uint8Array | undefined;
  if (file instanceof Uint8Array) {
    if (file.byteLength === 0) fail('ERR_LOOP_INVALID_ARGUMENT', 'the bytes to attach are empty');
    bytes = file;
  } else if (typeof file === 'number') {
    if (!Number.isInteger(file) || file < 0) fail('ERR_LOOP_INVALID_ARGUMENT', `file descriptor must be a non-negative integer, got ${file}`);
    backingFd = file;
  } else if (typeof file === 'object' && file !== null && typeof (file as FileHandle).fd === 'number') {
    backingFd = (file as FileHandle).fd;
    if (backingFd < 0) fail('ERR_LOOP_INVALID_ARGUMENT', 'the FileHandle is closed');
  } else {
    backingPath = checkPath(file, 'file');
  }

  checkHooks(signal, onRetry);
  // Both read before they are combined: `||` skipped the check of autoclear when hold was true.
  const holdAsked = flag(hold, 'hold');
  const autoclearAsked = flag(autoclear, 'autoclear');
  const holds = holdAsked || autoclearAsked;
  const directIOIfPossible = directIO === 'prefer';
  if (directIO !== undefined && directIO !== 'prefer' && typeof directIO !== 'boolean') invalid(`option 'directIO' must be true, false or 'prefer', got ${describe(directIO)}`);
  const flags =
    (flag(readOnly, 'readOnly') ? LO_FLAGS.READ_ONLY : 0) |
    (holds ? LO_FLAGS.AUTOCLEAR : 0) |
    (flag(partscan, 'partscan') ? LO_FLAGS.PARTSCAN : 0) |
    (directIO === true || directIOIfPossible ? LO_FLAGS.DIRECT_IO : 0);

  if (sectorSize !== undefined && sectorSize !== 'auto') checkSectorSize(sectorSize, 'sectorSize');
  const memory = flag(inMemory, 'inMemory') || bytes !== undefined;
  // A memfd has no O_DIRECT, and a copy made for this call is never anyone else's device.
  if (memory && directIO === true) invalid(`option 'directIO' cannot be used with an in-memory copy (a memfd has no direct I/O); pass 'prefer' or leave it out`);
  if (memory && flag(reuse, 'reuse')) invalid(`option 'reuse' cannot be used with an in-memory copy: it is always a new file`);
  const follow = !flag(noFollow, 'noFollow');
  if (!follow && backingPath === '') invalid(`option 'noFollow' needs a path to resolve (the file was given as ${bytes ? 'bytes' : 'an fd'})`);

  // Empty: attach stores the backing path (cut to 63 bytes), as losetup does.
  if (label !== undefined) checkLabel(label);

  let deviceNumberAsked = -1;
  if (device !== undefined) {
    if (typeof device === 'string') {
      const number = loopNumberFromPath(checkPath(device, `option 'device'`));
      if (number === undefined) invalid(`option 'device' must be a number or a /dev/loopN path, got ${describe(device)}`);
      deviceNumberAsked = deviceNumber(number, `option 'device'`);
    } else {
      deviceNumberAsked = deviceNumber(device, `option 'device'`);
    }
  }

  return {
    backingPath,
    backingFd,
    bytes,
    flags,
    offset: offset === undefined ? 0 : byteCount(offset, 'offset'),
    sizeLimit: sizeLimit === undefined ? 0 : byteCount(sizeLimit, 'sizeLimit'),
    sectorSize: sectorSize === 'auto' ? -1 : ((sectorSize as number | undefined) ?? 0),
    directIOIfPossible,
    inMemory: memory,
    noFollow: !follow,
    label: (label as string | undefined) ?? '',
    // detachOnExit tags the device too, so that reap() finds it should the process be killed
    // before its exit handlers run; there, a label with no room left keeps its words.
    owner: flag(owner, 'owner') ? 'always' : flag(detachOnExit, 'detachOnExit') ? 'ifRoom' : 'never',
    device: deviceNumberAsked,
    hold: holds,
    reuse: flag(reuse, 'reuse'),
    lockControl: flag(lockControl, 'lockControl', true),
    detachOnExit: flag(detachOnExit, 'detachOnExit'),
    retry: retryOptions(retry, DEFAULT_ATTACH_RETRY),
    signal: signal as AbortSignal | undefined,
    onRetry: onRetry as RetryHook | undefined,
  };
}

export interface DetachPlan {
  waitMs: number;
  retry: RetryOptions | false;
  signal?: AbortSignal;
  onRetry?: RetryHook;
}

/** A `wait` option: false (0), or a timeout in milliseconds; `fallback` when not given. */
export function waitOption(value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (value === false) return 0;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    invalid(`option 'wait' must be false or a timeout in milliseconds, got ${describe(value)}`);
  }
  return value;
}

const DEFAULT_DETACH_PLAN: DetachPlan = Object.freeze({ waitMs: DEFAULT_DETACH_WAIT_MS, retry: DEFAULT_DETACH_RETRY, signal: undefined, onRetry: undefined });

export function planDetach(rawOptions: unknown): DetachPlan {
  if (rawOptions === undefined) return DEFAULT_DETACH_PLAN;
  let wait, retry, signal, onRetry: unknown;
  const options = optionsObject(rawOptions);
  for (const key in options) {
    if (!Object.hasOwn(options, key)) continue;
    const value = options[key];
    switch (key) {
      case 'wait': wait = value; break;
      case 'retry': retry = value; break;
      case 'signal': signal = value; break;
      case 'onRetry': onRetry = value; break;
      default: unknownOption('detach', key, DETACH_OPTIONS);
    }
  }
  checkHooks(signal, onRetry);
  return { waitMs: waitOption(wait, DEFAULT_DETACH_WAIT_MS), retry: retryOptions(retry, DEFAULT_DETACH_RETRY), signal: signal as AbortSignal | undefined, onRetry: onRetry as RetryHook | undefined };
}
