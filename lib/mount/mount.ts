// mount(): attach an image and mount it with mount(2) (no `mount` binary is spawned), so that
// the mount, not this process, holds the loop device: the device goes away with the unmount,
// even if this process dies in between. The jobs around it live beside this file: plan.ts (options),
// mount-point.ts (mkdir, rmdir), source.ts (the node and its type), reuse.ts (a device already
// bound to the image), hints.ts (what failures mean), unmount.ts.
import { addon } from '../core/addon';
import { call, checkAborted, runAsync, runSync, type Flow } from '../core/flow';
import { attachFlow, withBackingOpen } from '../loop/attach';
import { kBinding } from '../loop/binding';
import { closeFlow, detachFlow, waitReleased } from '../loop/detach';
import type { LoopDevice } from '../loop/handle';
import type { AttachOptions, BackingFile } from '../loop/options';
import { lockImage } from '../loop/sharing';
import { Mounted, type MountedImage } from './mounted';
import { prepareMountPoint, removeMountPoint } from './mount-point';
import { planMount, type MountPlan } from './plan';
import { mountReused } from './reuse';
import { mountSourceFlow, sourceOf } from './source';

export interface MountOptions extends Omit<AttachOptions, 'hold' | 'autoclear' | 'reuse' | 'detachOnExit'> {
  /**
   * The filesystem type for mount(2). Default: detected from the superblock (ext2/3/4, xfs,
   * btrfs, vfat, squashfs, erofs); ERR_LOOP_UNKNOWN_FSTYPE when none is found.
   */
  fstype?: string;
  /** Mount partition M (/dev/loopNpM) instead of the whole device; implies `partscan: true`. */
  partition?: number;
  /** Attach the device read-only and mount with MS_RDONLY (also set by `ro` in `options`). */
  readOnly?: boolean;
  /**
   * Mount options as mount(8) takes them, e.g. "noatime,errors=remount-ro". Flag words (ro, rw,
   * nosuid, suid, nodev, dev, noexec, exec, noatime, atime, nodiratime, diratime, relatime,
   * norelatime, strictatime, nostrictatime, lazytime, nolazytime, sync, async, dirsync) become
   * mount(2) flags; mount(8)'s own words (defaults, auto, noauto, nofail, _netdev, x-*,
   * comment=) are dropped; the rest goes to the filesystem as its data string.
   */
  options?: string;
  /** MS_NOSUID. Default true: images are often untrusted. */
  nosuid?: boolean;
  /** MS_NODEV. Default true. */
  nodev?: boolean;
  /** MS_NOEXEC. Default false. */
  noexec?: boolean;
  /** Create the mount point (recursively) if it is missing; removed again if the mount fails. */
  mkdir?: boolean;
}

/** How long a failed mount() waits for the kernel to unbind the device it attached (ms). */
const UNDO_WAIT_MS = 2000;

/** Undoes the attach of a failed mount() (or mountImage()); errors here would hide the one that matters. */
export function* letGo(device: LoopDevice): Flow<void> {
  try {
    if (!device.released) {
      yield* detachFlow(device, { wait: UNDO_WAIT_MS });
    } else {
      // The held fd was closed before mount(2): AUTOCLEAR unbound the device at our last
      // close, or will at the close of whoever (udev, blkid) opened it meanwhile.
      yield* waitReleased(device.number, device.diskseq, device[kBinding].partscan, UNDO_WAIT_MS);
    }
  } catch {
    // AUTOCLEAR is set: the kernel frees it at the last close anyway.
  }
}

function* mountFlow(image: unknown, target: unknown, options: unknown): Flow<MountedImage> {
  const planned = planMount(image, target, options);
  // The image is opened once: its lock, the look for its devices and the attach use that fd.
  return yield* withBackingOpen(planned.attachPlan, (attachPlan) => mountOpened({ ...planned, attachPlan }));
}

function* mountOpened(plan: MountPlan): Flow<MountedImage> {
  checkAborted(plan.signal);
  const point = yield* prepareMountPoint(plan.target, plan.mkdir);
  let lock = -1;
  let device: LoopDevice | undefined;
  try {
    // The look for a device already bound to the image, the attach and mount(2) happen under
    // the image's lock, so that a cooperating process mounting it at the same moment waits
    // and then finds our device (see loop/sharing.ts).
    // (An in-memory copy is made for this mount alone: nobody else can have it attached.)
    if (!plan.attachPlan.inMemory) {
      lock = yield* lockImage(plan.attachPlan);
      const reused = yield* mountReused(plan, point);
      if (reused !== undefined) return reused;
    }
    device = yield* attachFlow(plan.attachPlan);
    const held = device;
    const source = yield* sourceOf(device, plan.partition);
    const fstype = yield* mountSourceFlow(
      { ...plan, source, deviceNumber: device.number, target: point.real, fstype: plan.fstype },
      // Close the held fd (not LOOP_CLR_FD): from here the device lives as long as it has
      // an opener, which is the mount once mount(2) succeeds. Nothing to wait for.
      function* () {
        yield* closeFlow(held, { wait: false });
      },
    );
    return new Mounted(point.real, device, source, plan.partition === null ? null : source, fstype, false);
  } catch (error) {
    if (device !== undefined) yield* letGo(device);
    yield* removeMountPoint(point);
    throw error;
  } finally {
    if (lock >= 0) yield* call(addon.closeOwned, lock);
  }
}

/**
 * Attaches `image` to a free loop device and mounts it on `target` with mount(2).
 *
 * The device is attached with AUTOCLEAR in the same ioctl that binds it, and held by an fd
 * until the mount holds it; then that fd is closed. So the device goes away with the unmount
 * (by unmount(), umount(8) or anyone), and a crash at any point leaves no device bound. On
 * any failure (bad fstype, missing partition, EINVAL...) the device is released and a mount
 * point created by `mkdir` is removed. nosuid and nodev are on by default.
 *
 * Errors: LoopError; mount(2)'s own errors keep `code`, `errno`, `syscall: 'mount'` and
 * `path` (the target). ERR_LOOP_UNKNOWN_FSTYPE, ERR_LOOP_NO_PARTITION, ERR_LOOP_INVALID_OPTION.
 */
export const mount = (image: BackingFile, target: string, options?: MountOptions): Promise<MountedImage> =>
  runAsync(mountFlow(image, target, options));
/** Sync form of {@link mount}. */
export const mountSync = (image: BackingFile, target: string, options?: MountOptions): MountedImage =>
  runSync(mountFlow(image, target, options));
