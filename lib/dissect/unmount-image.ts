// unmountImage(): everything mounted on and under a directory, from one loop device (and the
// tmpfs root of a /usr-only image), unmounted last first; then an honest answer about whether
// the kernel released the device. Nothing is detached by hand: a device mountImage() made has
// AUTOCLEAR, and one that does not was attached by someone else, who decides.

import { addon } from '../core/addon';
import { fail } from '../core/errors';
import { call, runAsync, runSync, type Flow } from '../core/flow';
import { loopNumberOfMount, readMountInfo, type MountInfoEntry } from '../loop/mountinfo';
import { optionsObject, checkKeys, waitOption } from '../loop/options';
import { devicePath } from '../loop/sysfs';
import { explainUnmountError } from '../mount/hints';
import { DEFAULT_UNMOUNT_WAIT_MS, realTarget, releasedAfterUnmount, releaseState } from '../mount/unmount';

export interface ImageUnmountOptions {
  /** wait until the kernel has released the loop device: false, or a timeout (ms, default 2000) */
  wait?: false | number;
}

export interface ImageUnmountResult {
  /** the directory (absolute, symlinks resolved) */
  directory: string;
  /** the mount points unmounted, in the order they were unmounted */
  unmounted: string[];
  /** the loop device the mounts came from (/dev/loopN) */
  device: string;
  /**
   * true: the device is unbound now. false: still bound after the wait (mounted or open
   * elsewhere, or attached without autoclear by someone else, who must detach it).
   */
  released: boolean;
}

/** A mount a handle made: where, and from which source. */
export interface MountedEntry {
  target: string;
  source: string;
}

const under = (directory: string, mountPoint: string): boolean => mountPoint === directory || mountPoint.startsWith(directory === '/' ? '/' : `${directory}/`);

/**
 * @param expected the mounts a mountImage() handle made: refuse unless exactly they are there,
 *   each on top at its target.
 */
export function* unmountImageFlow(directory: unknown, rawOptions: unknown, expected?: readonly MountedEntry[]): Flow<ImageUnmountResult> {
  const options = optionsObject(rawOptions);
  checkKeys(options, new Set(['wait']), 'unmountImage');
  const waitMs = waitOption(options.wait, DEFAULT_UNMOUNT_WAIT_MS);
  const real = yield* realTarget(directory, 'directory');
  const here = (yield* readMountInfo()).filter((entry) => under(real, entry.mountPoint));
  if (here.length === 0 || here[0]!.mountPoint !== real) fail('ERR_LOOP_NOT_MOUNTED', `nothing is mounted at ${real}`, { path: real });

  // Which loop device: every mount must come from one, but the tmpfs root of a /usr-only image.
  let number: number | null = null;
  const strangers: MountInfoEntry[] = [];
  for (const [index, entry] of here.entries()) {
    const from = yield* loopNumberOfMount(entry);
    if (from === null) {
      if (!(index === 0 && entry.fstype === 'tmpfs')) strangers.push(entry);
    } else if (number === null) {
      number = from;
    } else if (from !== number) {
      strangers.push(entry);
    }
  }
  if (expected !== undefined) {
    for (const mount of expected) {
      const top = here.filter((entry) => entry.mountPoint === mount.target).at(-1);
      if (top?.source !== mount.source) fail('ERR_LOOP_NOT_MOUNTED', `${mount.source} is not mounted at ${mount.target} any more${top === undefined ? '' : ` (${top.source} is)`}`, { path: mount.target });
    }
    for (const entry of here) if (!expected.some((mount) => mount.target === entry.mountPoint && mount.source === entry.source)) strangers.push(entry);
  }
  if (strangers.length > 0) {
    const list = [...new Set(strangers)].map((entry) => `${entry.source} on ${entry.mountPoint}`).join(', ');
    fail('ERR_LOOP_BUSY', `${real} has mounts that are not the image's (${list}): unmount them first`, { path: real });
  }
  if (number === null) fail('ERR_LOOP_NOT_MOUNTED', `nothing mounted at ${real} comes from a loop device`, { path: real });

  const release = yield* releaseState(number);
  const unmounted: string[] = [];
  for (const entry of [...here].reverse()) {
    try {
      yield* call(addon.unmount, entry.mountPoint, 0);
    } catch (error) {
      throw explainUnmountError(error, entry.mountPoint);
    }
    unmounted.push(entry.mountPoint);
  }
  return { directory: real, unmounted, device: devicePath(number), released: yield* releasedAfterUnmount(release, waitMs) };
}

/**
 * Unmounts what mountImage() (or systemd-dissect --mount) mounted on `directory`: every mount
 * on and under it, last first, all from one loop device (and a tmpfs root); then waits up to
 * `wait` ms (default 2000) for the kernel to release the device and says whether it did.
 * Nothing is detached by hand: the kernel releases a device with autoclear at the last unmount.
 *
 * Errors: ERR_LOOP_NOT_MOUNTED (nothing there, or not from a loop device), ERR_LOOP_BUSY (a
 * mount under it from elsewhere: nothing is unmounted then), umount2's errors (EBUSY: in use;
 * the mounts after it in the order stay).
 */
export const unmountImage = (directory: string, options?: ImageUnmountOptions): Promise<ImageUnmountResult> => runAsync(unmountImageFlow(directory, options));
/** Sync form of {@link unmountImage}. */
export const unmountImageSync = (directory: string, options?: ImageUnmountOptions): ImageUnmountResult => runSync(unmountImageFlow(directory, options));
