// Reading state from sysfs: cheap, and free of side effects (nothing opens the device). The one
// sysfs reader: every attribute is read with readAttribute (an io step, so that the async forms
// read it off the main thread).
import { basename } from 'node:path';

import { parseU64, type U64 } from '../core/u64';
import { fail } from '../core/errors';
import { call, type Flow } from '../core/flow';
import * as io from '../core/io';
import { splitDev } from './dev-number';

export const LOOP_MAJOR = 7;

export const sysBlock = (number: number): string => `/sys/block/loop${number}`;
export const devicePath = (number: number): string => `/dev/loop${number}`;
export const partitionPath = (number: number, partition: number): string => `/dev/loop${number}p${partition}`;

/** A sysfs attribute's text, trimmed, or undefined when it does not exist (e.g. loop/* of an unbound device). */
export function* readAttribute(path: string): Flow<string | undefined> {
  try {
    return (yield* call(io.readText, path)).trim();
  } catch {
    return undefined;
  }
}

/** A numeric sysfs attribute (size, diskseq, loop/autoclear...), 0 when it is missing or not a number. */
export function* readNumber(path: string): Flow<number> {
  return Number((yield* readAttribute(path)) ?? 0) || 0;
}

/** major:minor of a device or partition from `.../dev`, or undefined if it does not exist. */
export function* readDevNumbers(sysPath: string): Flow<{ major: number; minor: number } | undefined> {
  const text = yield* readAttribute(`${sysPath}/dev`);
  const match = text === undefined ? null : /^(\d+):(\d+)$/.exec(text);
  return match ? { major: Number(match[1]), minor: Number(match[2]) } : undefined;
}

export const deviceExists = (number: number): Flow<boolean> => call(io.exists, sysBlock(number));

/** Whether loopN is bound now: sysfs has `loop/` only while it is. */
export const isBound = (number: number): Flow<boolean> => call(io.exists, `${sysBlock(number)}/loop`);

/**
 * Whether loopN is still bound to the binding we know (its diskseq, when the kernel has
 * one): a device unbound and bound again by someone else counts as released. Unbinding
 * removes `loop/` first and drops a PARTSCAN device's partitions after it (the kernel's
 * `__loop_clr_fd`), so for such a device (`partscan`) the release is over only when they are
 * gone too.
 */
export function* isStillBound(number: number, diskseq: U64, partscan = false): Flow<boolean> {
  const bound = yield* isBound(number);
  if (!bound && !partscan) return false;
  if (diskseq !== 0) {
    const current = yield* readAttribute(`${sysBlock(number)}/diskseq`);
    if (current !== undefined && parseU64(current) !== diskseq) return false;
  }
  return bound || (yield* partitionsOf(number)).length > 0;
}

/** The partitions sysfs shows under loopN (1 for loopNp1, ...), in order; none if it is gone. */
export function* partitionsOf(number: number): Flow<number[]> {
  const pattern = new RegExp(`^loop${number}p(\\d+)$`);
  let names: string[];
  try {
    names = yield* call(io.readdir, sysBlock(number));
  } catch {
    return [];
  }
  return names
    .map((name) => pattern.exec(name))
    .filter((match) => match !== null)
    .map((match) => Number(match[1]))
    .sort((a, b) => a - b);
}

/** The whole loop device behind a block device's major:minor (also of a partition: .../loop3/loop3p2), or null. */
export function* loopOfDev(major: number, minor: number): Flow<number | null> {
  if (major === 0) return null;
  try {
    const match = /\/loop(\d+)(?:\/loop\d+p\d+)?$/.exec(yield* call(io.readlink, `/sys/dev/block/${major}:${minor}`));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/**
 * The loop device number behind a device node path, checked with stat: refuses anything
 * that is not a loop block device, so no loop ioctl is ever sent to it.
 */
export function* loopNumberOfNode(path: string): Flow<number> {
  const stats = yield* call(io.stat, path);
  const { major, minor } = splitDev(stats.rdev);
  if (!stats.isBlockDevice() || major !== LOOP_MAJOR) {
    fail('ERR_LOOP_NOT_LOOP_DEVICE', `${path} is not a loop block device`, { path });
  }
  try {
    const name = basename(yield* call(io.readlink, `/sys/dev/block/${major}:${minor}`));
    const match = /^loop(\d+)$/.exec(name);
    if (match) return Number(match[1]);
  } catch {
    // fall through: no sysfs entry for it
  }
  fail('ERR_LOOP_NOT_LOOP_DEVICE', `${path} is not a whole loop device`, { path });
}
