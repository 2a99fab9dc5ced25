// Reading state from sysfs: cheap, and free of side effects (nothing opens the device).
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { basename } from 'node:path';

import { parseU64, type U64 } from '../core/u64';
import { fail, fromNodeError } from '../core/errors';

export const LOOP_MAJOR = 7;

export const sysBlock = (number: number): string => `/sys/block/loop${number}`;
export const devicePath = (number: number): string => `/dev/loop${number}`;
export const partitionPath = (number: number, partition: number): string => `/dev/loop${number}p${partition}`;

/** Splits a Linux dev_t (as in fs.Stats rdev) into major and minor. */
export function splitDev(dev: U64): { major: number; minor: number } {
  const low = Number(BigInt(dev) & 0xffffffffn);
  const high = Number(BigInt(dev) >> 32n);
  return {
    major: ((low >>> 8) & 0xfff) | (high & 0xfffff000),
    minor: (low & 0xff) | ((low >>> 12) & 0xfff00) | ((high & 0xfff) << 20),
  };
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'latin1').trim();
  } catch {
    return undefined;
  }
}

/** major:minor of a device or partition from `.../dev`, or undefined if it does not exist. */
export function readDevNumbers(sysPath: string): { major: number; minor: number } | undefined {
  const text = readText(`${sysPath}/dev`);
  const match = text === undefined ? null : /^(\d+):(\d+)$/.exec(text);
  return match ? { major: Number(match[1]), minor: Number(match[2]) } : undefined;
}

export const deviceExists = (number: number): boolean => existsSync(sysBlock(number));

/**
 * Whether loopN is still bound to the binding we know (its diskseq, when the kernel has
 * one): a device unbound and bound again by someone else counts as released. Unbinding
 * removes `loop/` first and drops a PARTSCAN device's partitions after it (the kernel's
 * `__loop_clr_fd`), so for such a device (`partscan`) the release is over only when they are
 * gone too.
 */
export function isStillBound(number: number, diskseq: U64, partscan = false): boolean {
  const bound = existsSync(`${sysBlock(number)}/loop`);
  if (!bound && !partscan) return false;
  if (diskseq !== 0) {
    const current = readText(`${sysBlock(number)}/diskseq`);
    if (current !== undefined && parseU64(current) !== diskseq) return false;
  }
  return bound || partitionsOf(number).length > 0;
}

/** The partitions sysfs shows under loopN (1 for loopNp1, ...), in order; none if it is gone. */
export function partitionsOf(number: number): number[] {
  const pattern = new RegExp(`^loop${number}p(\\d+)$`);
  try {
    return readdirSync(sysBlock(number))
      .map((name) => pattern.exec(name))
      .filter((match) => match !== null)
      .map((match) => Number(match[1]))
      .sort((a, b) => a - b);
  } catch {
    return [];
  }
}

/**
 * The loop device number behind a device node path, checked with stat: refuses anything
 * that is not a loop block device, so no loop ioctl is ever sent to it.
 */
export function loopNumberOfNode(path: string): number {
  let stats;
  try {
    stats = statSync(path);
  } catch (error) {
    throw fromNodeError(error);
  }
  const { major, minor } = splitDev(stats.rdev);
  if (!stats.isBlockDevice() || major !== LOOP_MAJOR) {
    fail('ERR_LOOP_NOT_LOOP_DEVICE', `${path} is not a loop block device`, { path });
  }
  try {
    const name = basename(readlinkSync(`/sys/dev/block/${major}:${minor}`));
    const match = /^loop(\d+)$/.exec(name);
    if (match) return Number(match[1]);
  } catch {
    // fall through: no sysfs entry for it
  }
  fail('ERR_LOOP_NOT_LOOP_DEVICE', `${path} is not a whole loop device`, { path });
}
