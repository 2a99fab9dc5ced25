// unmount(): umount2, then an honest answer about whether the kernel released the loop device
// the mount came from.
import { resolve } from 'node:path';

import { addon } from '../core/addon';
import { fail, hasCode } from '../core/errors';
import { call, runAsync, runSync, type Flow } from '../core/flow';
import * as io from '../core/io';
import { waitReleased } from '../loop/detach';
import { loopNumberOfMount, readMountInfo } from '../loop/mountinfo';
import { checkPath, invalid, optionalBoolean, optionsObject, waitOption } from '../loop/options';
import { parseU64, type U64 } from '../core/u64';
import { devicePath, isStillBound, readAttribute, readNumber, sysBlock } from '../loop/sysfs';
import { explainUnmountError } from './hints';

export interface UnmountOptions {
  /** MNT_DETACH: detach the mount now, the kernel finishes when it is no longer in use */
  lazy?: boolean;
  /** MNT_FORCE: abort pending requests (only some filesystems, e.g. NFS, honour it) */
  force?: boolean;
  /** wait until the kernel has released the loop device: false, or a timeout (ms, default 2000) */
  wait?: false | number;
}

export interface UnmountResult {
  /** the mount point, as the kernel reports it (absolute, symlinks resolved) */
  target: string;
  /** the loop device that was mounted (/dev/loopN, also for a partition), or null if it was not a loop device */
  device: string | null;
  /**
   * true: the loop device is unbound now (or the mount was not on a loop device). false: it
   * is still bound after the wait: mounted elsewhere too, open by someone, a lazy unmount
   * whose filesystem is still in use, or a device attached without autoclear.
   */
  released: boolean;
}

const MNT_FORCE = 1;
const MNT_DETACH = 2;
export const DEFAULT_UNMOUNT_WAIT_MS = 2000;
const unmountKeys = new Set(['lazy', 'force', 'wait']);

interface UnmountPlan {
  flags: number;
  waitMs: number;
}

function planUnmount(rawOptions: unknown): UnmountPlan {
  const options = optionsObject(rawOptions);
  for (const key of Object.keys(options)) {
    if (!unmountKeys.has(key)) invalid(`unknown unmount option '${key}' (known: ${[...unmountKeys].join(', ')})`);
  }
  const waitMs = waitOption(options.wait, DEFAULT_UNMOUNT_WAIT_MS);
  const flags = (optionalBoolean(options, 'lazy') ? MNT_DETACH : 0) | (optionalBoolean(options, 'force') ? MNT_FORCE : 0);
  return { flags, waitMs };
}

/**
 * The real path of a mount point given by the caller (argument `name`), as mountinfo names it:
 * ERR_LOOP_NOT_MOUNTED when it does not exist.
 */
export function* realTarget(target: unknown, name: string): Flow<string> {
  const given = resolve(checkPath(target, name));
  try {
    return yield* call(io.realpath, given);
  } catch (error) {
    if (hasCode(error, 'ENOENT', 'ENOTDIR')) fail('ERR_LOOP_NOT_MOUNTED', `nothing is mounted at ${given}: it does not exist`, { path: given, cause: error });
    throw error;
  }
}

/**
 * @param expectedSource refuse unless the top mount at the target comes from this node (a
 *   MountedImage never unmounts what someone mounted over it).
 */
export function* unmountFlow(target: unknown, rawOptions: unknown, expectedSource?: string): Flow<UnmountResult> {
  const plan = planUnmount(rawOptions);
  const real = yield* realTarget(target, 'target');
  const here = (yield* readMountInfo()).filter((entry) => entry.mountPoint === real);
  const top = here.at(-1);
  if (top === undefined) fail('ERR_LOOP_NOT_MOUNTED', `nothing is mounted at ${real}`, { path: real });
  if (expectedSource !== undefined && top.source !== expectedSource) {
    if (here.some((entry) => entry.source === expectedSource)) {
      fail('ERR_LOOP_BUSY', `${top.source} is mounted over ${expectedSource} at ${real}: unmount it first`, { path: real });
    }
    fail('ERR_LOOP_NOT_MOUNTED', `${expectedSource} is not mounted at ${real} any more (${top.source} is)`, { path: real });
  }

  const number = yield* loopNumberOfMount(top);
  const release = number === null ? null : yield* releaseState(number);
  try {
    yield* call(addon.unmount, real, plan.flags);
  } catch (error) {
    throw explainUnmountError(error, real);
  }
  if (release === null) return { target: real, device: null, released: true };
  return { target: real, device: devicePath(release.number), released: yield* releasedAfterUnmount(release, plan.waitMs, top.majorMinor) };
}

/** What a loop device's release after an unmount depends on. */
export interface ReleaseState {
  number: number;
  diskseq: U64;
  autoclear: boolean;
  partscan: boolean;
}

/** Read before the unmount: with AUTOCLEAR the binding may be gone right after it. */
export function* releaseState(number: number): Flow<ReleaseState> {
  const sys = sysBlock(number);
  return {
    number,
    diskseq: parseU64((yield* readAttribute(`${sys}/diskseq`)) ?? '0') ?? 0,
    autoclear: (yield* readNumber(`${sys}/loop/autoclear`)) === 1,
    partscan: (yield* readNumber(`${sys}/loop/partscan`)) === 1,
  };
}

/**
 * After the unmounts: whether the kernel released the device. It waits, bounded, only when the
 * release is due: with AUTOCLEAR and no mount of the device or a partition left (a bind mount,
 * a second mount point; `majorMinor`: the filesystem's, which a bind mount shows too).
 */
export function* releasedAfterUnmount(state: ReleaseState, waitMs: number, majorMinor?: string): Flow<boolean> {
  const { number, diskseq, partscan } = state;
  const source = new RegExp(`^/dev/loop${number}(p\\d+)?$`);
  const stillMounted = (yield* readMountInfo()).some((entry) => entry.majorMinor === majorMinor || source.test(entry.source));
  if (!state.autoclear || stillMounted || waitMs === 0) return !(yield* isStillBound(number, diskseq, partscan));
  return yield* waitReleased(number, diskseq, partscan, waitMs);
}

/**
 * Unmounts the filesystem on top of `target` (umount2; MNT_DETACH with `lazy`, MNT_FORCE
 * with `force`). When it came from a loop device (or a loop partition), waits up to
 * `wait` ms (default 2000) until the kernel has released that device, and says whether it did.
 *
 * Errors: ERR_LOOP_NOT_MOUNTED when nothing is mounted at `target` (checked in
 * /proc/self/mountinfo before umount2); umount2's own errors (EBUSY: in use, suggests
 * `lazy: true`) with `syscall: 'umount2'`. A failed unmount leaves everything as it was.
 */
export const unmount = (target: string, options?: UnmountOptions): Promise<UnmountResult> => runAsync(unmountFlow(target, options));
/** Sync form of {@link unmount}. */
export const unmountSync = (target: string, options?: UnmountOptions): UnmountResult => runSync(unmountFlow(target, options));
