// What the README says each option accepts, written out again independently of
// lib/loop/options.ts, so that a property can tell "worked" from "should have been refused":
// a value outside these rules must give ERR_LOOP_INVALID_OPTION or ERR_LOOP_INVALID_ARGUMENT.

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const isBoolean = (value: unknown): boolean => typeof value === 'boolean';
const isByteCount = (value: unknown): boolean =>
  typeof value === 'bigint' ? value >= 0n && value <= 2n ** 63n - 1n : Number.isSafeInteger(value) && (value as number) >= 0;
const isMs = (value: unknown): boolean => typeof value === 'number' && Number.isFinite(value) && value >= 0;

/** A path argument: a non-empty string without NUL. */
export const isPath = (value: unknown): boolean => typeof value === 'string' && value !== '' && !value.includes('\0');

function isRetry(value: unknown, defaults: { attempts: number; minDelayMs: number; maxDelayMs: number }): boolean {
  if (value === false) return true;
  if (!isObject(value)) return false;
  if (Object.keys(value).some((key) => !(key in defaults))) return false;
  const merged = { ...defaults, ...value };
  if (!Object.values(merged).every((n) => Number.isInteger(n) && (n as number) >= 0)) return false;
  return merged.attempts >= 1 && merged.minDelayMs <= merged.maxDelayMs;
}

const isLabel = (value: unknown): boolean => typeof value === 'string' && !value.includes('\0') && !LONE_SURROGATE.test(value) && Buffer.byteLength(value) <= 63;
const isDevice = (value: unknown): boolean => {
  const number = typeof value === 'string' ? /^\/dev\/loop(\d+)$/.exec(value)?.[1] : value;
  const n = typeof number === 'string' ? Number(number) : number;
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xfffff;
};

type Check = (value: unknown) => boolean;
const hookChecks: Record<string, Check> = {
  signal: (value) => value instanceof AbortSignal,
  onRetry: (value) => typeof value === 'function',
};

function optionsValid(options: unknown, checks: Record<string, Check>): boolean {
  if (options === undefined) return true;
  if (!isObject(options)) return false;
  return Object.keys(options).every((key) => Object.hasOwn(checks, key) && (options[key] === undefined || checks[key]!(options[key])));
}

/** Whether attach(file, options) must accept its input (it may still fail in the kernel). */
export function attachInputValid(file: unknown, options: unknown): boolean {
  const fileValid =
    file instanceof Uint8Array ? file.byteLength > 0 : typeof file === 'number' ? Number.isInteger(file) && file >= 0 : isObject(file) && typeof file.fd === 'number' ? file.fd >= 0 : isPath(file);
  const checks: Record<string, Check> = {
    readOnly: isBoolean, partscan: isBoolean, autoclear: isBoolean, inMemory: isBoolean, noFollow: isBoolean, hold: isBoolean, reuse: isBoolean, lockControl: isBoolean, detachOnExit: isBoolean,
    offset: isByteCount, sizeLimit: isByteCount,
    directIO: (value) => value === true || value === false || value === 'prefer',
    sectorSize: (value) => [512, 1024, 2048, 4096, 'auto'].includes(value as number),
    device: isDevice,
    label: isLabel,
    retry: (value) => isRetry(value, { attempts: 64, minDelayMs: 1, maxDelayMs: 250 }),
    ...hookChecks,
  };
  if (!fileValid || !optionsValid(options, checks)) return false;
  const asked = (options ?? {}) as Record<string, unknown>;
  const inMemory = asked.inMemory === true || file instanceof Uint8Array;
  if (inMemory && (asked.directIO === true || asked.reuse === true)) return false;
  if (asked.noFollow === true && typeof file !== 'string') return false;
  return true;
}

/** Whether detach(device, options) must accept its options. */
export function detachOptionsValid(options: unknown): boolean {
  return optionsValid(options, {
    wait: (value) => value === false || isMs(value),
    retry: (value) => isRetry(value, { attempts: 10, minDelayMs: 25, maxDelayMs: 250 }),
    ...hookChecks,
  });
}

/** The codes of a refused input. */
export const REFUSED = ['ERR_LOOP_INVALID_OPTION', 'ERR_LOOP_INVALID_ARGUMENT'];
