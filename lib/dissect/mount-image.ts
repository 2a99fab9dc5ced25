// mountImage(): a whole disk image on one loop device (its sector size, its partitions added),
// its partitions mounted in dissect()'s plan, in order, with systemd's options; and the undo of
// every step made when a later one fails. The loop device is attached with AUTOCLEAR and held
// until the first mount holds it: from then on the mounts keep it, and the kernel releases it
// (partitions included, PARTSCAN being set) at the last unmount, whoever makes it.
import { dirname, join, resolve } from 'node:path';

import { addon } from '../core/addon';
import { fail } from '../core/errors';
import { call, runAsync, runSync, type Flow } from '../core/flow';
import * as io from '../core/io';
import { attachFlow, withBackingOpen } from '../loop/attach';
import { closeFlow } from '../loop/detach';
import type { LoopDevice } from '../loop/handle';
import { checkPath, optionalBoolean, optionsObject, planAttach } from '../loop/options';
import { letGo } from '../mount/mount';
import { doneIfNotMounted } from '../mount/mounted';
import { prepareMountPoint, removeMountPoint, type MountPoint } from '../mount/mount-point';
import { MS } from '../mount/options';
import { mountSourceFlow, sourceOf } from '../mount/source';
import type { DissectedImage, PlannedMount } from './analyse';
import { dissectOpened, planDissect, type DissectOptions } from './dissect';
import { unmountImageFlow, type ImageUnmountOptions, type ImageUnmountResult, type MountedEntry } from './unmount-image';

export interface MountImageOptions extends DissectOptions {
  /** Create the directory, and mount points missing inside the image (as systemd-dissect --mkdir). Default false. */
  mkdir?: boolean;
}

const MOUNT_IMAGE_KEYS: ReadonlySet<string> = new Set(['architecture', 'readOnly', 'mkdir']);
/** MS_NOSYMFOLLOW (Linux 5.10): symlinks on the ESP and XBOOTLDR are not followed. */
const MS_NOSYMFOLLOW = 256;
const FLAG_WORDS: Readonly<Record<string, number>> = { ro: MS.RDONLY, rw: 0, nodev: MS.NODEV, nosuid: MS.NOSUID, noexec: MS.NOEXEC, nosymfollow: MS_NOSYMFOLLOW };
const MNT_DETACH = 2;

/** One mount of a mounted image. */
export interface ImageMount extends PlannedMount {
  /** where it is mounted (absolute) */
  target: string;
  /** /dev/loopNpM, /dev/loopN (a bare file system), or "tmpfs" */
  source: string;
}

/** A mounted disk image, as mountImage() returns it. */
export interface MountedDiskImage {
  /** the directory the image's root is mounted on (absolute, symlinks resolved) */
  readonly directory: string;
  /** the loop device (/dev/loopN); the mounts hold it now */
  readonly device: string;
  /** what dissect() found */
  readonly image: DissectedImage;
  /** the mounts made, in order */
  readonly mounts: readonly ImageMount[];
  /** Unmounts them in reverse order and waits for the kernel to release the device (see unmountImage()). */
  unmount(options?: ImageUnmountOptions): Promise<ImageUnmountResult>;
  unmountSync(options?: ImageUnmountOptions): ImageUnmountResult;
  /** Unmounts it unless it is no longer mounted. */
  [Symbol.asyncDispose](): Promise<void>;
  [Symbol.dispose](): void;
}

class MountedImageHandle implements MountedDiskImage {
  constructor(
    readonly directory: string,
    readonly device: string,
    readonly image: DissectedImage,
    readonly mounts: readonly ImageMount[],
  ) {}

  private get expected(): MountedEntry[] {
    return this.mounts.map(({ target, source }) => ({ target, source }));
  }

  unmount(options?: ImageUnmountOptions): Promise<ImageUnmountResult> {
    return runAsync(unmountImageFlow(this.directory, options, this.expected));
  }

  unmountSync(options?: ImageUnmountOptions): ImageUnmountResult {
    return runSync(unmountImageFlow(this.directory, options, this.expected));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.unmount().catch(doneIfNotMounted);
  }

  [Symbol.dispose](): void {
    try {
      this.unmountSync();
    } catch (error) {
      doneIfNotMounted(error);
    }
  }

  toJSON(): { directory: string; device: string; mounts: readonly ImageMount[] } {
    return { directory: this.directory, device: this.device, mounts: this.mounts };
  }
}

/** A plan's mount(8) words as mount(2) flags and data. */
function mountFlags(options: readonly string[]): { flags: number; data: string; readOnly: boolean } {
  let flags = 0;
  const data: string[] = [];
  for (const word of options) {
    const flag = FLAG_WORDS[word];
    if (flag === undefined) data.push(word);
    else flags |= flag;
  }
  return { flags, data: data.join(','), readOnly: (flags & MS.RDONLY) !== 0 };
}

/**
 * A mount point inside the image's tree: `relative` under `root`, which must be a directory of
 * the image itself. A symlink anywhere on the way (an image's /usr pointing at the host's /usr)
 * is refused: the mount would land outside the image.
 */
function* innerMountPoint(root: string, relative: string, mkdir: boolean): Flow<MountPoint> {
  const target = join(root, relative);
  let existing = target;
  while (!(yield* call(io.exists, existing))) existing = dirname(existing);
  if ((yield* call(io.realpath, existing)) !== existing) {
    fail('ERR_LOOP_BAD_IMAGE', `${existing.slice(root.length) || '/'} in the image is a symbolic link: mountImage() mounts only on the image's own directories`, { path: existing });
  }
  if (existing !== target && !mkdir) {
    fail('ERR_LOOP_INVALID_ARGUMENT', `the image has no ${relative} to mount on (pass mkdir: true to create it)`, { path: target });
  }
  const point = yield* prepareMountPoint(target, mkdir);
  if (point.real !== target) {
    yield* removeMountPoint(point);
    fail('ERR_LOOP_BAD_IMAGE', `${relative} in the image is a symbolic link: mountImage() mounts only on the image's own directories`, { path: target });
  }
  return point;
}

/**
 * Where the ESP goes, decided as systemd does once the rest is mounted: /efi when the image has
 * one; else /boot, when it is an empty directory and XBOOTLDR is not mounted there; else /efi.
 */
function* espMountPoint(root: string, mounted: readonly ImageMount[]): Flow<string> {
  if (yield* call(io.exists, join(root, 'efi'))) return '/efi';
  if (mounted.some((m) => m.designator === 'xbootldr')) return '/efi';
  try {
    if ((yield* call(io.readdir, join(root, 'boot'))).length === 0) return '/boot';
  } catch {
    // No /boot (or not a directory): /efi.
  }
  return '/efi';
}

/** What a mountImage() made so far, for the undo. */
interface Made {
  target: string;
  /** mount points created inside the tree for it */
  point: MountPoint | undefined;
  /** false until its mount(2) succeeded: never unmount what we did not mount (the directory may be someone's mount point) */
  mounted: boolean;
}

/** Undoes what a failed mountImage() made, last first; errors here would hide the one that matters. */
function* undo(made: Made[], device: LoopDevice | undefined, point: MountPoint): Flow<void> {
  for (const { target, point: inner, mounted } of made.reverse()) {
    if (mounted) yield* unmountForUndo(target);
    if (inner !== undefined) yield* removeMountPoint(inner);
  }
  if (device !== undefined) yield* letGo(device);
  yield* removeMountPoint(point);
}

function* unmountForUndo(target: string): Flow<void> {
  try {
    yield* call(addon.unmount, target, 0);
  } catch {
    try {
      // Busy (someone looked inside meanwhile): gone from the tree now, freed when let go.
      yield* call(addon.unmount, target, MNT_DETACH);
    } catch {
      // not mounted any more
    }
  }
}

function* mountImageFlow(image: unknown, directory: unknown, rawOptions: unknown): Flow<MountedDiskImage> {
  const path = checkPath(image, 'image');
  const given = resolve(checkPath(directory, 'directory'));
  const plan = planDissect(rawOptions, MOUNT_IMAGE_KEYS);
  const mkdir = optionalBoolean(optionsObject(rawOptions), 'mkdir') ?? false;
  // The image is opened once: dissect reads it and the attach binds it through that fd.
  return yield* withBackingOpen(planAttach(path, { readOnly: plan.readOnly }), function* (opened) {
    const dissected = yield* dissectOpened(opened.backingFd, path, plan);
    const refusal = dissected.refusals[0];
    if (refusal !== undefined) fail(refusal.code, `${path}: ${dissected.refusals.map((r) => r.message).join('; ')}`, { path });
    const attachPlan = planAttach(path, { readOnly: plan.readOnly, partscan: dissected.table !== null, sectorSize: dissected.sectorSize, hold: true });
    attachPlan.backingFd = opened.backingFd; // a plan is made for one call
    return yield* mountDissected(dissected, attachPlan, given, mkdir);
  });
}

function* mountDissected(dissected: DissectedImage, attachPlan: ReturnType<typeof planAttach>, given: string, mkdir: boolean): Flow<MountedDiskImage> {
  const point = yield* prepareMountPoint(given, mkdir);
  const made: Made[] = [];
  const mounts: ImageMount[] = [];
  let device: LoopDevice | undefined;
  try {
    device = yield* attachFlow(attachPlan);
    const held = device;
    let holder = false;
    for (const plannedHere of dissected.mounts) {
      const planned = plannedHere.designator === 'esp' ? { ...plannedHere, mountPoint: yield* espMountPoint(point.real, mounts) } : plannedHere;
      const { flags, data, readOnly } = mountFlags(planned.options);
      // Our own tmpfs root gets its mount points without asking.
      const inner = planned.mountPoint === '/' ? undefined : yield* innerMountPoint(point.real, planned.mountPoint, mkdir || dissected.mounts[0]!.designator === 'tmpfs');
      const target = inner?.real ?? point.real;
      const step: Made = { target, point: inner, mounted: false };
      made.push(step);
      if (planned.designator === 'tmpfs') {
        yield* call(addon.mount, 'tmpfs', target, 'tmpfs', flags, data, false);
        step.mounted = true;
        mounts.push({ ...planned, target, source: 'tmpfs' });
        continue;
      }
      const source = yield* sourceOf(device, planned.partition);
      yield* mountSourceFlow(
        { source, deviceNumber: device.number, target, fstype: planned.fstype, flags, data, readOnly },
        // The held fd is closed (not LOOP_CLR_FD) just before the first mount: from there the
        // mounts hold the device, and no writer of ours is open while mount(2) runs.
        holder
          ? undefined
          : function* () {
              yield* closeFlow(held, { wait: false });
            },
      );
      step.mounted = true;
      holder = true;
      mounts.push({ ...planned, target, source });
    }
    if (!holder) yield* closeFlow(held, { wait: false });
    return new MountedImageHandle(point.real, device.path, dissected, mounts);
  } catch (error) {
    yield* undo(made, device, point);
    throw error;
  }
}

/**
 * Mounts a whole disk image on `directory` as dissect() plans it: one loop device with the
 * image's sector size and its partitions, then root (or a tmpfs when the image has /usr but no
 * root), /usr, /home, /srv, /var, /var/tmp, /boot and /efi, in that order, with systemd's
 * options (nodev everywhere; nosuid,noexec,nosymfollow,umask=0077 on the ESP and XBOOTLDR; ro
 * with `readOnly` or a partition's read-only flag, and then norecovery on ext3/ext4/xfs).
 * Mount points inside the image must exist unless `mkdir` is given. On any failure everything
 * made so far is undone: mounts, directories it created, the loop device.
 *
 * Errors: dissect()'s; ERR_LOOP_UNSUPPORTED_IMAGE (LUKS, dm-verity), ERR_LOOP_NOTHING_TO_MOUNT,
 * ERR_LOOP_UNKNOWN_FSTYPE, ERR_LOOP_BAD_IMAGE (a mount point inside the image is a symlink),
 * ERR_LOOP_INVALID_ARGUMENT (a missing mount point without `mkdir`), and attach's and mount(2)'s.
 */
export const mountImage = (image: string, directory: string, options?: MountImageOptions): Promise<MountedDiskImage> =>
  runAsync(mountImageFlow(image, directory, options));
/** Sync form of {@link mountImage}. */
export const mountImageSync = (image: string, directory: string, options?: MountImageOptions): MountedDiskImage =>
  runSync(mountImageFlow(image, directory, options));

