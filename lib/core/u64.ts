// 64-bit values (inodes, device numbers, diskseq) kept exact: a number while it is a safe
// integer, a bigint beyond. Exactly one form for each value, so that two of them compare with ===.

/** A 64-bit value: a number while it is a safe integer, else a bigint (see u64()). */
export type U64 = number | bigint;

/**
 * A 64-bit value the addon wrote as two 32-bit halves (low at `index`, high right after it):
 * a number while it is a safe integer, a bigint beyond (an inode on overlayfs with xino, for
 * one). Exactly one form for each value, so that two of them compare with ===.
 */
export function u64(slots: Float64Array, index: number): U64 {
  const high = slots[index + 1]!;
  return high < 0x200000 ? high * 0x100000000 + slots[index]! : (BigInt(high) << 32n) | BigInt(slots[index]!);
}

/**
 * A 64-bit value from elsewhere in u64()'s form: a bigint fs.Stats field (which Node reads as
 * signed, so an inode of 2^63 or more arrives negative) or a parsed decimal.
 */
export function exactU64(value: bigint): U64 {
  const unsigned = BigInt.asUintN(64, value);
  return unsigned <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(unsigned) : unsigned;
}

/** A decimal 64-bit value as sysfs writes it, in u64()'s form; undefined for anything else. */
export function parseU64(text: string): U64 | undefined {
  return /^\d{1,20}$/.test(text) ? exactU64(BigInt(text)) : undefined;
}

