import { fail } from './errors';

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

/**
 * A size in bytes from a number or text such as '512', '4K', '10M', '1G', '2GiB' (powers of
 * 1024, as losetup reads them). Throws ERR_LOOP_INVALID_ARGUMENT for anything else.
 */
export function parseSize(value: string | number): number {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value >= 0) return value;
  } else {
    const match = /^\s*(\d+)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(value);
    if (match) {
      const bytes = Number(match[1]) * UNITS[match[2].toUpperCase()];
      if (Number.isSafeInteger(bytes)) return bytes;
    }
  }
  const negative = typeof value === 'number' ? value < 0 : /^\s*-/.test(value);
  if (negative) fail('ERR_LOOP_INVALID_ARGUMENT', `a size cannot be negative, got ${JSON.stringify(value)}`);
  fail('ERR_LOOP_INVALID_ARGUMENT', `not a size: ${JSON.stringify(value)} (use bytes or a suffix: 512, 4K, 10M, 1G)`);
}
