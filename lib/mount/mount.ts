// mount(): attach an image and mount it with mount(2) (no `mount` binary is spawned), so that
// the mount, not this process, holds the loop device: the device goes away with the unmount,
// even if this process dies in between. unmount(): umount2, then an honest answer about
// whether the kernel released the loop device.
import { addon } from '../core/addon';
import {
  constants,
  existsSync,
  mkdirSync,
  readFileSync,
  readSync,
  realpathSync,
  rmdirSync,
  statSync,
} from 'node:fs';
import { dirname, resolve } from 'node:path';

import { attachFlow } from '../loop/attach';
import { kBinding } from '../loop/binding';
import { LoopDevice } from '../loop/handle';
import { closeFlow, detachFlow, waitReleased } from '../loop/detach';
import { LoopError, fail, fromNodeError, hasCode } from '../core/errors';
import { call, checkAborted, runAsync, runSync, type Flow } from '../core/flow';
import { detectFsType } from './fstype';
import { loopNumberOfMount, mountPointsOf, readMountInfo } from '../loop/mountinfo';
import { checkFsType, checkPartition, planMountFlags, type MountFlags } from './options';
import { checkPath, invalid, optionalBoolean, optionsObject, planAttach, waitOption, type AttachOptions, type AttachPlan, type BackingFile } from '../loop/options';
import { readPartitionTable, whyNoTable } from '../partitions/table';
import { differences, imageStats, lockImage, sharingOf } from '../loop/sharing';
import { listStep } from '../loop/inspect';
import { ensureDeviceNode, ensurePartitionNodes } from '../loop/nodes';
import type { LoopInfo } from '../loop/inspect';
import { devicePath, isStillBound, partitionPath, partitionsOf, sysBlock } from '../loop/sysfs';

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

/** A mounted image, as mount() returns it. */
export interface MountedImage {
  /** the mount point (absolute, symlinks resolved) */
  readonly target: string;
  /** the loop device; its handle is already closed: the mount holds the device now */
  readonly device: LoopDevice;
  /** what was mounted: /dev/loopN, or /dev/loopNpM with `partition` */
  readonly source: string;
  /** /dev/loopNpM when a partition was mounted, else null */
  readonly partitionPath: string | null;
  readonly fstype: string;
  /**
   * true when the image was already attached with the same settings (by loopdev, losetup or
   * mount(8)) and that device was mounted instead of a second one: the kernel then shares one
   * filesystem between the mount points, as mount(8) does. Such a handle never detaches the
   * device; its own autoclear, or whoever attached it, decides.
   */
  readonly reused: boolean;
  /** Unmounts it (see unmount()); refuses if another filesystem was mounted over it since. */
  unmount(options?: UnmountOptions): Promise<UnmountResult>;
  unmountSync(options?: UnmountOptions): UnmountResult;
  /** Unmounts it unless it is no longer mounted. */
  [Symbol.asyncDispose](): Promise<void>;
  [Symbol.dispose](): void;
}

const MNT_FORCE = 1;
const MNT_DETACH = 2;
export const DEFAULT_UNMOUNT_WAIT_MS = 2000;
/** How long a failed mount() waits for the kernel to unbind the device it attached (ms). */
const UNDO_WAIT_MS = 2000;
const MOUNT_KEYS = ['fstype', 'partition', 'options', 'nosuid', 'nodev', 'noexec', 'mkdir'];
const ATTACH_KEYS = [
  'readOnly', 'offset', 'sizeLimit', 'partscan', 'directIO', 'sectorSize', 'inMemory', 'noFollow', 'device', 'label', 'lockControl', 'retry', 'signal', 'onRetry',
];
const NOT_FOR_MOUNT: Record<string, string> = {
  hold: 'mount() always holds the device until the mount holds it',
  autoclear: 'mount() always sets autoclear: the device goes away with the unmount',
  reuse: 'mount() always reuses a device already bound to the image with the same settings',
  detachOnExit: 'the mount holds the device, not this process: unmount it to release it',
};
const mountKeys = new Set([...MOUNT_KEYS, ...ATTACH_KEYS]);
const unmountKeys = new Set(['lazy', 'force', 'wait']);

interface MountPlan extends MountFlags {
  image: BackingFile;
  /** absolute, not yet resolved through symlinks */
  target: string;
  fstype: string | null;
  partition: number | null;
  mkdir: boolean;
  attach: AttachOptions;
  /** the attach options checked, for the look for a device already bound to the image */
  attachPlan: AttachPlan;
  signal?: AbortSignal;
}

function planMount(image: unknown, target: unknown, rawOptions: unknown): MountPlan {
  const options = optionsObject(rawOptions);
  for (const key of Object.keys(options)) {
    if (NOT_FOR_MOUNT[key] !== undefined) invalid(`option '${key}' is not a mount option: ${NOT_FOR_MOUNT[key]}`);
    if (!mountKeys.has(key)) invalid(`unknown mount option '${key}' (known: ${[...mountKeys].join(', ')})`);
  }
  const targetPath = resolve(checkPath(target, 'target'));
  const fstype = checkFsType(options.fstype);
  const partition = checkPartition(options.partition);
  const partscan = optionalBoolean(options, 'partscan');
  if (partition !== null && partscan === false) invalid(`option 'partition' needs partscan; do not pass 'partscan: false'`);
  const flags = planMountFlags(options);
  const attach: AttachOptions = {};
  for (const key of ATTACH_KEYS) {
    if (options[key] !== undefined) (attach as Record<string, unknown>)[key] = options[key];
  }
  attach.readOnly = flags.readOnly;
  attach.partscan = partition !== null || partscan === true;
  // AUTOCLEAR set by the same ioctl that binds, and an fd that keeps the device until the
  // mount holds it: a crash at any point leaves nothing bound.
  attach.hold = true;
  const attachPlan = planAttach(image, attach); // checks the attach options and the image argument now, before anything is made
  return {
    ...flags,
    image: image as BackingFile,
    target: targetPath,
    fstype,
    partition,
    mkdir: optionalBoolean(options, 'mkdir') ?? false,
    attach,
    attachPlan,
    signal: options.signal as AbortSignal | undefined,
  };
}

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

/** A mount point: checked (or created), and where mkdir started creating directories. */
export interface MountPoint {
  /** absolute, symlinks resolved: the path the kernel will show in mountinfo */
  real: string;
  /** absolute as given */
  given: string;
  /** the first directory mkdir created, if it created any */
  created: string | undefined;
}

export function prepareMountPoint(target: string, mkdir: boolean): MountPoint {
  let created: string | undefined;
  try {
    const stats = statSync(target);
    if (!stats.isDirectory()) fail('ERR_LOOP_INVALID_ARGUMENT', `the mount point ${target} is not a directory`, { path: target });
  } catch (error) {
    if (error instanceof LoopError) throw error;
    if (!hasCode(error, 'ENOENT') || !mkdir) {
      const system = fromNodeError(error);
      const hint = hasCode(error, 'ENOENT') ? ' (the mount point does not exist: create it, or pass mkdir: true)' : '';
      throw new LoopError(`${system.message}${hint}`, {
        code: system.code,
        errno: system.errno,
        syscall: system.syscall,
        path: system.path,
        cause: error,
      });
    }
    try {
      created = mkdirSync(target, { recursive: true });
    } catch (mkdirError) {
      throw fromNodeError(mkdirError);
    }
  }
  try {
    return { real: realpathSync(target), given: target, created };
  } catch (error) {
    removeMountPoint({ real: target, given: target, created });
    throw fromNodeError(error);
  }
}

/** Removes the directories prepareMountPoint() created (only empty ones, deepest first). */
export function removeMountPoint(point: MountPoint): void {
  if (point.created === undefined) return;
  // Walk the path as given, the same spelling mkdir returned, so that a symlinked parent
  // can never lead us to a directory we did not create.
  for (let dir = point.given; dir.length >= point.created.length; dir = dirname(dir)) {
    try {
      rmdirSync(dir);
    } catch {
      return;
    }
    if (dir === point.created) return;
  }
}

/** The node to mount: the device, or its partition (which must exist in sysfs). */
function* sourceOf(device: { readonly number: number; readonly path: string }, partition: number | null): Flow<string> {
  if (partition === null) return device.path;
  const number = device.number;
  if (existsSync(`${sysBlock(number)}/loop${number}p${partition}`)) return partitionPath(number, partition);
  const present = partitionsOf(number);
  const has = present.length > 0 ? `it has ${present.map((p) => partitionPath(number, p)).join(', ')}` : `it has no partitions (${yield* whyNoPartitions(number, device.path)})`;
  fail('ERR_LOOP_NO_PARTITION', `${device.path} has no partition ${partition}: ${has}`, {
    path: partitionPath(number, partition),
    device: number,
  });
}

/** What the device's first sectors say about its (missing) partition table. */
function* whyNoPartitions(number: number, path: string): Flow<string> {
  let fd = -1;
  try {
    fd = yield* call(addon.openOwned, path, constants.O_RDONLY, false);
    return whyNoTable(
      (buffer, position) => readSync(fd, buffer, 0, buffer.length, position),
      readSysNumber(`${sysBlock(number)}/size`) * 512,
      readSysNumber(`${sysBlock(number)}/queue/logical_block_size`) || 512,
    );
  } catch {
    return 'its first sectors could not be read';
  } finally {
    if (fd >= 0) yield* call(addon.closeOwned, fd);
  }
}

function readSysNumber(path: string): number {
  try {
    return Number(readFileSync(path, 'latin1').trim()) || 0;
  } catch {
    return 0;
  }
}

/** The filesystem type on `fd` (the node `source` of loop device `number`), or ERR_LOOP_UNKNOWN_FSTYPE. */
function detectOn(fd: number, source: string, number: number, wholeDevice: boolean): string {
  const read = (buffer: Buffer, position: number): number => readSync(fd, buffer, 0, buffer.length, position);
  let type: string | null;
  try {
    type = detectFsType(read);
  } catch (error) {
    throw fromNodeError(error);
  }
  if (type !== null) return type;
  let hint = '';
  if (wholeDevice) {
    const sectorSize = readSysNumber(`${sysBlock(number)}/queue/logical_block_size`) || 512;
    const size = readSysNumber(`${sysBlock(number)}/size`) * 512;
    try {
      const table = readPartitionTable(read, sectorSize, size);
      if (table !== null) {
        hint = ` It holds ${table.type === 'gpt' ? 'a GPT' : 'an MBR'} with partitions ${table.partitions.map((p) => p.number).join(', ')}: pass partition.`;
      }
    } catch {
      // no hint then
    }
  }
  fail(
    'ERR_LOOP_UNKNOWN_FSTYPE',
    `no known filesystem on ${source} (looked for ext2/3/4, xfs, btrfs, vfat, squashfs, erofs); pass fstype to name it.${hint}`,
    { path: source, device: number },
  );
}

function explainMountError(error: unknown, request: MountRequest, fstype: string): unknown {
  if (!(error instanceof LoopError) || error.syscall !== 'mount') return error;
  const what = `mounting ${request.source} as ${fstype}`;
  let hint: string;
  switch (error.code) {
    case 'EBUSY':
      if (request.alreadyMountedAt !== undefined && request.alreadyMountedAt.length > 0) {
        hint =
          `the filesystem is already mounted at ${request.alreadyMountedAt.join(', ')}, and the kernel keeps one superblock per ` +
          'device: a second mount must have the same read-only state (ro/rw) as the first';
        break;
      }
      hint =
        'the device or the mount point is busy. Kernels 6.8+ built with BLK_DEV_WRITE_MOUNTED=n refuse to mount a block ' +
        'device that some process has open for writing (loopdev keeps only a read-only fd on it during mount(2)); ' +
        'a btrfs whose UUID is already mounted from another device is refused the same way';
      break;
    case 'EINVAL':
      hint = `wrong fstype, an option ${fstype} does not know, or a damaged superblock; the kernel log (dmesg) says which`;
      break;
    case 'ENODEV':
      hint = `this kernel does not know the filesystem type '${fstype}' (not built in, module not loaded)`;
      break;
    case 'EROFS':
    case 'EACCES':
      hint = 'the device is read-only: pass readOnly: true';
      break;
    case 'ENOTBLK':
      hint = `${request.source} is not a block device`;
      break;
    default:
      hint = 'see the kernel log (dmesg)';
  }
  return new LoopError(`${error.message}: ${what}: ${hint}`, {
    code: error.code,
    errno: error.errno,
    syscall: error.syscall,
    path: error.path,
    device: request.deviceNumber,
    cause: error,
  });
}

/** What mountSourceFlow() mounts. */
export interface MountRequest extends MountFlags {
  /** /dev/loopN or /dev/loopNpM */
  source: string;
  deviceNumber: number;
  /** absolute, symlinks resolved */
  target: string;
  /** null: detect it */
  fstype: string | null;
  /** the device is already mounted there (a reused device): said when mount(2) refuses */
  alreadyMountedAt?: readonly string[];
  signal?: AbortSignal;
}

/**
 * Mounts an attached loop device (or one of its partitions). A read-only fd on the source is
 * open from before the type is detected until mount(2) returns; `beforeMount` runs with it
 * open, so mount() can close its read-write held fd there without the device ever having no
 * opener (with AUTOCLEAR it would be unbound at once), and no writer is open during mount(2)
 * (kernels 6.8+ with BLK_DEV_WRITE_MOUNTED=n refuse to mount a device open for writing).
 * @returns the filesystem type that was mounted.
 */
export function* mountSourceFlow(request: MountRequest, beforeMount?: () => Flow<void>): Flow<string> {
  // Owned by the addon: a worker terminated before the `finally` cannot keep the device open.
  const fd = yield* call(addon.openOwned, request.source, constants.O_RDONLY, false);
  try {
    const fstype = request.fstype ?? detectOn(fd, request.source, request.deviceNumber, request.source === devicePath(request.deviceNumber));
    if (beforeMount) yield* beforeMount();
    checkAborted(request.signal);
    try {
      yield* call(addon.mount, request.source, request.target, fstype, request.flags, request.data);
    } catch (error) {
      throw explainMountError(error, request, fstype);
    }
    return fstype;
  } finally {
    // After a successful mount the filesystem holds the device; after a failed one, with
    // AUTOCLEAR, this last close unbinds it.
    yield* call(addon.closeOwned, fd);
  }
}

/** Undoes the attach of a failed mount(); errors here would hide the one that matters. */
function* letGo(device: LoopDevice): Flow<void> {
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

class Mounted implements MountedImage {
  constructor(
    readonly target: string,
    readonly device: LoopDevice,
    readonly source: string,
    readonly partitionPath: string | null,
    readonly fstype: string,
    readonly reused: boolean,
  ) {}

  unmount(options?: UnmountOptions): Promise<UnmountResult> {
    return runAsync(unmountFlow(this.target, options, this.source));
  }

  unmountSync(options?: UnmountOptions): UnmountResult {
    return runSync(unmountFlow(this.target, options, this.source));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.unmount();
    } catch (error) {
      if (!hasCode(error, 'ERR_LOOP_NOT_MOUNTED')) throw error;
    }
  }

  [Symbol.dispose](): void {
    try {
      this.unmountSync();
    } catch (error) {
      if (!hasCode(error, 'ERR_LOOP_NOT_MOUNTED')) throw error;
    }
  }

  toJSON(): { target: string; source: string; fstype: string; reused: boolean } {
    return { target: this.target, source: this.source, fstype: this.fstype, reused: this.reused };
  }
}

function* mountFlow(image: unknown, target: unknown, options: unknown): Flow<MountedImage> {
  const plan = planMount(image, target, options);
  checkAborted(plan.signal);
  const point = prepareMountPoint(plan.target, plan.mkdir);
  let lock = -1;
  let device: LoopDevice | undefined;
  try {
    // The look for a device already bound to the image, the attach and mount(2) happen under
    // the image's lock, so that a cooperating process mounting it at the same moment waits
    // and then finds our device (see sharing.ts).
    // (An in-memory copy is made for this mount alone: nobody else can have it attached.)
    if (!plan.attachPlan.inMemory) lock = yield* lockImage(plan.attachPlan);
    for (let attempt = 1; !plan.attachPlan.inMemory; attempt++) {
      const existing = yield* reusableDevice(plan);
      if (existing === undefined) break;
      const mounted = yield* mountExisting(plan, point, existing);
      if (mounted !== undefined) return mounted;
      // The device was released between the look and our open: look again.
      if (attempt === REUSE_ATTEMPTS) {
        fail('ERR_LOOP_BUSY', `${existing.path}, bound to the image, went away ${REUSE_ATTEMPTS} times while it was being mounted`, { path: existing.path, attempts: attempt });
      }
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
    removeMountPoint(point);
    throw error;
  } finally {
    if (lock >= 0) yield* call(addon.closeOwned, lock);
  }
}

/** How often mount() looks again when a device it meant to reuse went away meanwhile. */
const REUSE_ATTEMPTS = 3;

const mountedAtText = (points: readonly string[]): string => (points.length === 0 ? ' (not mounted)' : ` (mounted at ${points.join(', ')})`);

/**
 * A device already bound to the image with the plan's settings, to mount again as mount(8)
 * does (one device, one superblock); a mounted one is preferred. A device over an overlapping
 * range with other settings is refused: two devices on the same bytes are two filesystems
 * that overwrite each other.
 */
function* reusableDevice(plan: MountPlan): Flow<LoopInfo | undefined> {
  const mounts = readMountInfo();
  const image = plan.attachPlan;
  const { same, clash } = yield* sharingOf(image, imageStats(image), (info) => mountPointsOf(info.number, mounts).length > 0);
  if (clash !== undefined) {
    fail(
      'ERR_LOOP_OVERLAP',
      `${image.backingPath || 'the image'} is already attached as ${clash.path}${mountedAtText(mountPointsOf(clash.number, mounts))} ` +
        `with other settings (${differences(image, clash)}); a second device over the same bytes would be a second, ` +
        'independent filesystem: unmount and detach it first, or mount with its settings',
      { path: clash.path, device: clash.number },
    );
  }
  if (same !== undefined && plan.partition !== null && !same.partitions.some((part) => part.number === plan.partition)) {
    if (same.partscan) yield* sourceOf(same, plan.partition); // ERR_LOOP_NO_PARTITION, listing what it has
    fail(
      'ERR_LOOP_OVERLAP',
      `${image.backingPath || 'the image'} is already attached as ${same.path}${mountedAtText(mountPointsOf(same.number, mounts))} ` +
        `without partitions; mounting partition ${plan.partition} from a second device would put two filesystems over its bytes: ` +
        'detach it first, or attach it with partscan',
      { path: same.path, device: same.number },
    );
  }
  return same;
}

/**
 * Mounts a device someone (loopdev, losetup, mount(8)) already bound to the image. Its node
 * is opened first and the binding checked again through sysfs and ioctls: an AUTOCLEAR device
 * whose last holder let go after the look is gone or bound to something else by now, and our
 * open keeps one that is not from going (libmount does the same). Answers undefined when it
 * is gone. The handle attached nothing and never detaches: the device's own autoclear, or
 * whoever attached it, decides when it goes.
 */
function* mountExisting(plan: MountPlan, point: MountPoint, existing: LoopInfo): Flow<MountedImage | undefined> {
  const source = yield* sourceOf(existing, plan.partition);
  const stillSame = function* (): Flow<void> {
    const [now] = yield* listStep(existing.number);
    const same =
      now !== undefined &&
      now.backingDevice === existing.backingDevice &&
      now.backingInode === existing.backingInode &&
      now.offset === existing.offset &&
      now.sizeLimit === existing.sizeLimit &&
      (existing.diskseq === 0 || now.diskseq === existing.diskseq);
    if (!same) throw GONE;
  };
  // A container's /dev may lack the nodes of a device someone else attached.
  yield* ensureDeviceNode(existing.number);
  if (plan.partition !== null) yield* ensurePartitionNodes(existing.number, [plan.partition]);
  let fstype: string;
  try {
    fstype = yield* mountSourceFlow(
      { ...plan, source, deviceNumber: existing.number, target: point.real, fstype: plan.fstype, alreadyMountedAt: mountPointsOf(existing.number, readMountInfo()) },
      stillSame,
    );
  } catch (error) {
    // ENXIO from open: the device is being torn down (Lo_rundown).
    if (error === GONE || (error instanceof LoopError && error.syscall === 'open' && error.code === 'ENXIO')) return undefined;
    throw error;
  }
  const device = new LoopDevice({
    number: existing.number,
    path: existing.path,
    diskseq: existing.diskseq,
    backingDevice: existing.backingDevice,
    backingInode: existing.backingInode,
    fd: -1,
    partitions: [],
    released: true,
    partscan: existing.partscan,
    setupIoctl: null,
  });
  return new Mounted(point.real, device, source, plan.partition === null ? null : source, fstype, true);
}

const GONE = Symbol('the device to reuse went away');

function explainUnmountError(error: unknown, target: string): unknown {
  if (!(error instanceof LoopError) || error.syscall !== 'umount2') return error;
  let hint: string;
  if (error.code === 'EBUSY') {
    hint =
      `${target} is in use (a file open or a working directory inside it, or a mount below it); ` +
      'close them and try again, or pass lazy: true to detach it now and let the kernel finish when it is no longer used';
  } else if (error.code === 'EINVAL') {
    hint = `${target} is not a mount point (any more)`;
  } else {
    return error;
  }
  return new LoopError(`${error.message}: ${hint}`, {
    code: error.code,
    errno: error.errno,
    syscall: error.syscall,
    path: error.path,
    cause: error,
  });
}

/**
 * @param expectedSource refuse unless the top mount at the target comes from this node (a
 *   MountedImage never unmounts what someone mounted over it).
 */
export function* unmountFlow(target: unknown, rawOptions: unknown, expectedSource?: string): Flow<UnmountResult> {
  const plan = planUnmount(rawOptions);
  const given = resolve(checkPath(target, 'target'));
  let real: string;
  try {
    real = realpathSync(given);
  } catch (error) {
    if (hasCode(error, 'ENOENT', 'ENOTDIR')) fail('ERR_LOOP_NOT_MOUNTED', `nothing is mounted at ${given}: it does not exist`, { path: given, cause: error });
    throw fromNodeError(error);
  }
  const here = readMountInfo().filter((entry) => entry.mountPoint === real);
  const top = here.at(-1);
  if (top === undefined) fail('ERR_LOOP_NOT_MOUNTED', `nothing is mounted at ${real}`, { path: real });
  if (expectedSource !== undefined && top.source !== expectedSource) {
    if (here.some((entry) => entry.source === expectedSource)) {
      fail('ERR_LOOP_BUSY', `${top.source} is mounted over ${expectedSource} at ${real}: unmount it first`, { path: real });
    }
    fail('ERR_LOOP_NOT_MOUNTED', `${expectedSource} is not mounted at ${real} any more (${top.source} is)`, { path: real });
  }

  const number = loopNumberOfMount(top);
  // Read before the unmount: with AUTOCLEAR the binding may be gone right after it.
  const diskseq = number === null ? 0 : readSysNumber(`${sysBlock(number)}/diskseq`);
  const autoclear = number !== null && readSysNumber(`${sysBlock(number)}/loop/autoclear`) === 1;
  const partscan = number !== null && readSysNumber(`${sysBlock(number)}/loop/partscan`) === 1;

  try {
    yield* call(addon.unmount, real, plan.flags);
  } catch (error) {
    throw explainUnmountError(error, real);
  }
  if (number === null) return { target: real, device: null, released: true };
  const device = devicePath(number);
  // Still mounted elsewhere (a bind mount, a second mount point), or no AUTOCLEAR: the kernel
  // will not release it now, so there is nothing to wait for.
  const stillMounted = readMountInfo().some(
    (entry) => entry.majorMinor === top.majorMinor || new RegExp(`^/dev/loop${number}(p\\d+)?$`).test(entry.source),
  );
  if (!autoclear || stillMounted || plan.waitMs === 0) {
    return { target: real, device, released: !isStillBound(number, diskseq, partscan) };
  }
  return { target: real, device, released: yield* waitReleased(number, diskseq, partscan, plan.waitMs) };
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
