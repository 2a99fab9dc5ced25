// attach(): find a free device and bind the file to it, retrying the races every tool that
// does this has met (docs/kernel.md), and checking that every setting really took. The shape
// is systemd's loop_device_make_internal(): one retry loop around one attempt, the verdict on
// each failure inline.
import { basename } from 'node:path';

import { addon, ATTACH, ATTACH_MODE, packPartitions, ResultArrays, u64, type U64 } from '../core/addon';
import { LoopError, fail } from '../core/errors';
import { call, checkAborted, runAsync, runSync, sleep, Turns, type Flow } from '../core/flow';
import * as io from '../core/io';
import { Retrier, type Verdict } from '../core/retry';
import { gptSectorSize, readPartitionTable, type PartitionEntry, type ReadAt } from '../partitions/table';
import { control, ensureDevice, openedControl } from './control';
import { detachFlow } from './detach';
import { watchExit } from './exit';
import { LoopDevice } from './handle';
import { deviceDenied, openableFreeDevice, refusedDevice } from './cgroup';
import { ensureDeviceNode, ensurePartitionNodes } from './nodes';
import { labelWithOwner } from './owner';
import { cutLabel, LO_FLAGS, planAttach, type AttachOptions, type AttachPlan, type BackingFile } from './options';
import { differences, imageStats, lockImage, sharingOf } from './sharing';
import { devicePath } from './sysfs';

/** What the attach step answered (the ATTACH slots of its result, decoded). */
interface AttachResult {
  number: number;
  backingDevice: U64;
  backingInode: U64;
  offset: number;
  sizeLimit: number;
  flags: number;
  /** read only when a sector size was asked: else 0 */
  sectorSize: number;
  diskseq: U64;
  /** the held device fd (owned by the addon), or -1 */
  fd: number;
  /** bound with LOOP_SET_FD + LOOP_SET_STATUS64 rather than LOOP_CONFIGURE */
  legacy: boolean;
  /** a probe was asked and the file has a partition table: nothing was attached */
  table: boolean;
  /** per requested partition: 0, or the errno of BLKPG_ADD_PARTITION */
  partitionErrors: readonly number[];
}

const NO_ERRORS: readonly number[] = Object.freeze([]);
const RESULTS = new ResultArrays(ATTACH.count);

function decodeAttach(out: Float64Array, partitionCount: number): AttachResult {
  return {
    number: out[ATTACH.number]!,
    backingDevice: u64(out, ATTACH.backingDevice),
    backingInode: u64(out, ATTACH.backingInode),
    offset: out[ATTACH.offset]!,
    sizeLimit: out[ATTACH.sizeLimit]!,
    flags: out[ATTACH.flags]!,
    sectorSize: out[ATTACH.sectorSize]!,
    diskseq: u64(out, ATTACH.diskseq),
    fd: out[ATTACH.fd]!,
    legacy: out[ATTACH.legacy] === 1,
    table: out[ATTACH.table] === 1,
    partitionErrors: partitionCount === 0 ? NO_ERRORS : Array.from(out.subarray(ATTACH.count, ATTACH.count + partitionCount)),
  };
}

// Learned once per thread: this kernel answers LOOP_CONFIGURE with EINVAL, ENOTTY or ENOSYS
// (before 5.8, 32-bit, qemu-user), and LOOP_SET_FD + LOOP_SET_STATUS64 worked instead.
let configureUnsupported = false;

// LOOPDEV_LEGACY_CONFIGURE=1 forces the pre-5.8 path, so that it can be tested on new kernels.
let forcedLegacy = process.env.LOOPDEV_LEGACY_CONFIGURE === '1';

/** Forces (or stops forcing) the pre-5.8 path in this thread, as LOOPDEV_LEGACY_CONFIGURE=1 does. Tests use it. */
export function forceLegacyConfigure(force: boolean): void {
  forcedLegacy = force;
}

/**
 * How many async attaches of this process may be in the kernel at once, each through its own
 * fd on /dev/loop-control: flock on different open files excludes them in the kernel, so the
 * next attach already waits in flock on a worker thread while the previous one's result is
 * on its way back. (libuv's default pool has 4 threads.) Without the control lock, this
 * process's attaches take turns one at a time instead.
 */
/** How many attaches of this process may be in the kernel at once (see LANES). */
export const ATTACH_LANES = 4;
const LANES = new Turns(ATTACH_LANES);
const ONE_AT_A_TIME = new Turns(1);

/** How the attempts of one attach go, beyond the plan (a repair or the partition table changes it). */
interface AttachWay {
  legacy: boolean;
  /** look for a partition table first (partscan); if the file has one, the step attaches nothing */
  probe: boolean;
  /** read from the file's table, added with BLKPG by the attach step */
  partitions: readonly PartitionEntry[];
  /** lo_file_name: the caller's label, else what the file was (cut to 63 bytes), or undefined for none */
  label: string | undefined;
  /** a free device taken because the device cgroup refused GET_FREE's (see cgroup.ts); -1: none */
  device: number;
  /** the devices the device cgroup refused */
  refused: Set<number>;
}

/** Binds `file` (a path, an fd or a FileHandle) to a free loop device (or `options.device`). */
export async function attach(file: BackingFile, options?: AttachOptions): Promise<LoopDevice> {
  return runAsync(attachFlow(planAttach(file, options))); // bad options reject, as any failure
}

/** Sync form of {@link attach}. */
export function attachSync(file: BackingFile, options?: AttachOptions): LoopDevice {
  return runSync(attachFlow(planAttach(file, options)));
}

export function* attachFlow(asked: AttachPlan): Flow<LoopDevice> {
  if (asked.detachOnExit) watchExit();
  // The owner tag is read of /proc once per process, before anything is attached.
  const plan = asked.owner === 'never' ? asked : { ...asked, label: yield* labelWithOwner(asked.label, asked.owner === 'always'), owner: 'never' as const };
  if (plan.backingFd >= 0 || plan.bytes !== undefined) return yield* (plan.reuse ? bindUnlessBound(plan) : bind(plan));
  // Written out here rather than through withBackingOpen(): one generator level less for every
  // step of the attach (each level costs every effect a resume).
  const fd = yield* openBacking(plan);
  plan.backingFd = fd; // a plan is made for one call (planAttach)
  try {
    return yield* (plan.reuse ? bindUnlessBound(plan) : bind(plan));
  } finally {
    plan.backingFd = -1;
    yield* call(addon.closeOwned, fd);
  }
}

/**
 * Runs `body` with the plan's backing file open: a path is opened once (with the noFollow rule)
 * and every attempt, reader, probe, lock and copy of the attach uses that fd, so that a rename
 * meanwhile cannot bind one file and read another's table. A caller's fd is used as given.
 * (mount() opens its image with it; attachFlow() does the same inline.)
 */
export function* withBackingOpen<T>(plan: AttachPlan, body: (opened: AttachPlan) => Flow<T>): Flow<T> {
  if (plan.backingFd >= 0 || plan.bytes !== undefined) return yield* body(plan);
  const fd = yield* openBacking(plan);
  try {
    return yield* body({ ...plan, backingFd: fd });
  } finally {
    yield* call(addon.closeOwned, fd);
  }
}

/** The plan's backing path opened once (an fd the addon owns), read-only if the device will be. */
function* openBacking(plan: AttachPlan): Flow<number> {
  try {
    return yield* call(addon.openBacking, plan.backingPath, (plan.flags & LO_FLAGS.READ_ONLY) !== 0, plan.noFollow);
  } catch (error) {
    throw error instanceof LoopError && plan.noFollow && error.code === 'ELOOP' ? symlinkRefused(error, plan) : error;
  }
}

/** reuse: the look for an existing device and the attach, under the image's lock (see sharing.ts). */
function* bindUnlessBound(plan: AttachPlan): Flow<LoopDevice> {
  const lock = yield* lockImage(plan);
  try {
    return (yield* existingDevice(plan)) ?? (yield* bind(plan));
  } finally {
    if (lock >= 0) yield* call(addon.closeOwned, lock);
  }
}

/**
 * Binds the plan's file: attempts until one binds or the retry gives up; then checks what the
 * kernel did and hands the device over. An in-memory copy and sectorSize 'auto' are settled first.
 */
function* bind(asked: AttachPlan, label = labelOf(asked)): Flow<LoopDevice> {
  if (asked.inMemory) return yield* bindInMemory(asked);
  const plan = asked.sectorSize === -1 ? yield* withSectorSize(asked) : asked;
  const way: AttachWay = { legacy: forcedLegacy || configureUnsupported, probe: (plan.flags & LO_FLAGS.PARTSCAN) !== 0, partitions: [], label, device: -1, refused: new Set() };
  let retry: Retrier | undefined; // made at the first failure: most attaches have none
  for (;;) {
    checkAborted(plan.signal);
    let result: AttachResult;
    try {
      result = yield* attempt(plan, way);
    } catch (error) {
      if (!(error instanceof LoopError)) throw error;
      // A device taken in GET_FREE's place may have been bound by someone else meanwhile: the
      // next attempt asks GET_FREE again.
      if (way.device >= 0 && !refusedDevice(error)) way.device = -1;
      const verdict: Verdict = (yield* repair(error, plan, way)) ? 'now' : classify(error, plan);
      retry ??= new Retrier('attach', plan.retry, plan.onRetry);
      yield* sleep(retry.next(error, verdict), plan.signal);
      continue;
    }
    if (result.table) {
      // The file has a partition table and nothing was attached: read it here, and the next
      // attempt binds the device and adds its partitions.
      way.partitions = yield* readPartitions(plan);
      way.probe = false;
      continue;
    }
    if (way.legacy && !forcedLegacy) configureUnsupported = true;
    return yield* handOver(plan, way, result);
  }
}

/**
 * inMemory: binds a sealed copy of the file (the kernel keeps the memfd open as long as the
 * device is bound: ours is closed once the attach is over, whatever happened).
 */
function* bindInMemory(asked: AttachPlan): Flow<LoopDevice> {
  // memfd_create takes a name of at most 249 bytes.
  const name = asked.backingPath === '' ? 'loopdev' : cutLabel(`loopdev:${basename(asked.backingPath)}`, 249);
  const memory = yield* call(addon.memoryCopy, asked.backingPath, asked.backingFd, asked.bytes, name);
  try {
    // The label says what was copied, where sysfs can only say "/memfd:... (deleted)".
    const label = asked.label !== '' ? asked.label : cutLabel(asked.backingPath === '' ? 'memory' : `memory:${asked.backingPath}`);
    return yield* bind({ ...asked, inMemory: false, backingFd: memory, backingPath: '' }, label);
  } finally {
    yield* call(addon.closeOwned, memory);
  }
}

/** lo_file_name: the caller's label, else the backing path cut to fit, as losetup stores it (the real path is in sysfs either way). */
function labelOf(plan: AttachPlan): string | undefined {
  if (plan.label !== '') return plan.label;
  return plan.backingPath === '' ? undefined : cutLabel(plan.backingPath);
}

/** sectorSize 'auto' (-1): the sector size the image's GPT was written for (512 without one), as systemd finds it. */
function* withSectorSize(plan: AttachPlan): Flow<AttachPlan> {
  const sectorSize = yield* readBacking(plan, (read) => gptSectorSize(read));
  return { ...plan, sectorSize };
}

/**
 * One attempt at the attach step, in a turn: concurrent attach() calls of this process must not
 * race each other for the same free device. With the control lock each turn has its own
 * control fd and the kernel's flock makes them take turns; without it, they take turns here.
 */
function* attempt(plan: AttachPlan, way: AttachWay): Flow<AttachResult> {
  const turns = plan.lockControl ? LANES : ONE_AT_A_TIME;
  const turn = (yield turns.taking) as number;
  try {
    const device = way.device >= 0 ? way.device : plan.device;
    if (device >= 0) yield* ensureDevice(device);
    const lane = plan.lockControl ? turn : -1;
    const controlFd = device >= 0 && !plan.lockControl ? -1 : (openedControl(lane) ?? (yield* control(lane)));
    const mode =
      (way.legacy ? ATTACH_MODE.legacy : 0) |
      (plan.hold ? ATTACH_MODE.keepFd : 0) |
      (plan.lockControl ? ATTACH_MODE.lockControl : 0) |
      (way.probe ? ATTACH_MODE.probeTable : 0) |
      (plan.directIOIfPossible ? ATTACH_MODE.directIOIfPossible : 0) |
      (plan.detachOnExit ? ATTACH_MODE.detachOnExit : 0);
    const out = RESULTS.take(way.partitions.length);
    try {
      yield* call(addon.attach, controlFd, device, plan.backingFd, plan.backingPath, plan.offset, plan.sizeLimit, plan.flags, plan.sectorSize, way.label, mode, packPartitions(way.partitions), out);
      return decodeAttach(out, way.partitions.length);
    } finally {
      RESULTS.give(out);
    }
  } finally {
    yield turns.giving;
  }
}

function symlinkRefused(error: LoopError, plan: AttachPlan): LoopError {
  return new LoopError(`${plan.backingPath} has a symbolic link in it, which noFollow does not follow`, {
    code: error.code,
    errno: error.errno,
    syscall: error.syscall,
    path: error.path,
    cause: error,
  });
}

/** Whether a failed attempt is worth another (the races of docs/kernel.md), judged by the step that failed. */
function classify(error: LoopError, plan: AttachPlan): Verdict {
  switch (error.stage) {
    case 'openDevice':
      // ENXIO: the device is being torn down; ENOENT: its node is not there (yet).
      return error.code === 'ENXIO' || error.code === 'ENOENT' ? 'retry' : 'fail';
    case 'lockDevice':
      // Another process holds the device's lock: it is configuring or using it.
      return error.code === 'EAGAIN' ? 'retry' : 'fail';
    case 'configure':
      // EBUSY: someone bound it between GET_FREE and us; when the caller named the device,
      // it is simply in use. EAGAIN: udev had it open (kernel 5.0+, commit 5db470e229e2).
      if (error.code === 'EBUSY') return plan.device >= 0 ? 'fail' : 'retry';
      return error.code === 'EAGAIN' ? 'retry' : 'fail';
    case 'configureLegacy':
    case 'scanPartitions':
      return error.code === 'EAGAIN' || error.code === 'EBUSY' ? 'retry' : 'fail';
    case 'readBack':
      // Unbound right after our configure: someone else cleared it.
      return error.code === 'ENXIO' ? 'retry' : 'fail';
    case 'getFree':
      return error.code === 'EBUSY' || error.code === 'EAGAIN' ? 'retry' : 'fail';
    default:
      return 'fail';
  }
}

/**
 * Repairs what a failure showed to be missing, so that the next attempt can go at once: a
 * device node (a container's /dev), a device the container may open in place of one its device
 * cgroup refuses, or the pre-5.8 path (LOOP_CONFIGURE refused). Answers whether it repaired
 * anything.
 */
function* repair(error: LoopError, plan: AttachPlan, way: AttachWay): Flow<boolean> {
  if (error.stage === 'openDevice' && error.code === 'ENOENT' && error.device !== undefined) {
    try {
      return yield* ensureDeviceNode(error.device);
    } catch (mknod) {
      if (!(mknod instanceof LoopError) || !refusedDevice(mknod)) throw mknod;
      return yield* takeAllowed(mknod, error.device, plan, way);
    }
  }
  if (refusedDevice(error) && error.device !== undefined) return yield* takeAllowed(error, error.device, plan, way);
  if (!way.legacy && error.stage === 'configure' && (error.code === 'EINVAL' || error.code === 'ENOTTY' || error.code === 'ENOSYS')) {
    way.legacy = true;
    return true;
  }
  return false;
}

/**
 * The device cgroup refused device `number`: the next attempt takes a free one this process may
 * open. ERR_LOOP_DEVICE_DENIED when the caller named the device, or when there is none.
 */
function* takeAllowed(error: LoopError, number: number, plan: AttachPlan, way: AttachWay): Flow<boolean> {
  if (plan.device >= 0) deviceDenied(error, true);
  way.refused.add(number);
  const next = yield* openableFreeDevice(way.refused);
  if (next === undefined) deviceDenied(error, false);
  way.device = next;
  return true;
}

/** The partitions to add with BLKPG, read from the file's MBR or GPT (bytes, device-relative). */
function* readPartitions(plan: AttachPlan): Flow<PartitionEntry[]> {
  return yield* readBacking(plan, (read, deviceSize) => readPartitionTable(read, plan.sectorSize || 512, deviceSize)?.partitions ?? []);
}

/**
 * Reads the part of the backing file the device will expose (from the offset, up to the size
 * limit) with `reader`; a block device's size is not in fstat, so a block device reads as
 * empty (the kernel has its own view of it).
 */
function* readBacking<T>(plan: AttachPlan, reader: (read: ReadAt, deviceSize: number) => T): Flow<T> {
  // The attach's own fd (see withBackingOpen), or the caller's.
  const fd = plan.backingFd;
  const stats = yield* call(io.fstat, fd);
  const offset = Number(plan.offset);
  const limit = Number(plan.sizeLimit);
  let deviceSize = stats.isFile() ? Math.max(0, stats.size - offset) : 0;
  if (limit > 0) deviceSize = Math.min(deviceSize, limit);
  deviceSize -= deviceSize % 512;
  return yield* io.parseReads(fd, (read) => reader(read, deviceSize), offset, deviceSize);
}

// Flags that must be set when asked (the kernel may set others, e.g. none of these unasked).
const REQUESTED_FLAGS = [
  ['autoclear', LO_FLAGS.AUTOCLEAR],
  ['partscan', LO_FLAGS.PARTSCAN],
  ['directIO', LO_FLAGS.DIRECT_IO],
] as const;

const has = (flags: number, bit: number): boolean => (flags & bit) !== 0;

/**
 * Settings the kernel did not take (some 5.8 kernels dropped partscan and the size limit;
 * systemd reads the status back for the same reason), or undefined when it took them all.
 */
function mismatches(plan: AttachPlan, result: AttachResult): string[] | undefined {
  let wrong: string[] | undefined;
  if (result.offset !== Number(plan.offset)) (wrong ??= []).push(`offset is ${result.offset}, not ${plan.offset}`);
  if (result.sizeLimit !== Number(plan.sizeLimit)) (wrong ??= []).push(`sizeLimit is ${result.sizeLimit}, not ${plan.sizeLimit}`);
  if (has(result.flags, LO_FLAGS.READ_ONLY) !== has(plan.flags, LO_FLAGS.READ_ONLY)) {
    (wrong ??= []).push(
      has(result.flags, LO_FLAGS.READ_ONLY)
        ? 'the device is read-only (the file or its fd is not writable: pass readOnly: true)'
        : 'the device is writable although readOnly was asked',
    );
  }
  for (const [name, bit] of REQUESTED_FLAGS) {
    if (bit === LO_FLAGS.DIRECT_IO && plan.directIOIfPossible) continue;
    if (has(plan.flags, bit) && !has(result.flags, bit)) {
      (wrong ??= []).push(
        bit === LO_FLAGS.DIRECT_IO
          ? "directIO did not take (the backing file's filesystem has no O_DIRECT, or its sectors are larger than the device's; pass directIO: 'prefer' to accept buffered I/O)"
          : `${name} did not take`,
      );
    }
  }
  if (plan.sectorSize !== 0 && result.sectorSize !== plan.sectorSize) (wrong ??= []).push(`sectorSize is ${result.sectorSize}, not ${plan.sectorSize}`);
  return wrong;
}

/** Why the bound device cannot be handed over (a setting or a partition did not take), if it cannot. */
function refusal(plan: AttachPlan, device: LoopDevice, result: AttachResult): LoopError | undefined {
  const wrong = mismatches(plan, result);
  if (wrong !== undefined) {
    return new LoopError(`${device.path}: the kernel did not apply the settings: ${wrong.join('; ')}`, {
      code: 'ERR_LOOP_SETTING_IGNORED',
      path: device.path,
      device: device.number,
    });
  }
  // EBUSY from BLKPG_ADD_PARTITION: the kernel's own scan already made that partition.
  const errno = result.partitionErrors.find((error) => error !== 0 && error !== 16);
  return errno === undefined ? undefined : LoopError.system(errno, 'ioctl(BLKPG_ADD_PARTITION)', device.path, { device: device.number });
}

/** The handle for what the kernel bound: released again (then thrown) if it cannot be handed over. */
function* handOver(plan: AttachPlan, way: AttachWay, result: AttachResult): Flow<LoopDevice> {
  const device = new LoopDevice({
    number: result.number,
    path: devicePath(result.number),
    diskseq: result.diskseq,
    backingDevice: result.backingDevice,
    backingInode: result.backingInode,
    fd: result.fd,
    // The ones this library added; those the kernel's scan made, it drops itself at detach.
    partitions: way.partitions.filter((_, index) => result.partitionErrors[index] === 0),
    released: false,
    partscan: has(result.flags, LO_FLAGS.PARTSCAN),
    setupIoctl: result.legacy ? 'LOOP_SET_FD' : 'LOOP_CONFIGURE',
    // the attach step registered it as it delivered it (ATTACH_MODE.detachOnExit)
    detachOnExit: plan.detachOnExit,
  });
  const problem = refusal(plan, device, result);
  if (problem !== undefined) {
    // Waits as detach does: udev opens a device as soon as it is bound, and the kernel then
    // unbinds it at udev's close; nothing of a refused attach may be left when it throws.
    yield* detachFlow(device);
    throw problem;
  }
  if (way.partitions.length > 0) yield* ensurePartitionNodes(device.number, way.partitions.map((part) => part.number));
  return device;
}

/** reuse: an existing device with the same file and settings, or refuse an overlapping one. */
function* existingDevice(plan: AttachPlan): Flow<LoopDevice | undefined> {
  if (plan.hold) fail('ERR_LOOP_INVALID_OPTION', "option 'reuse' cannot be combined with 'hold' or 'autoclear'");
  const { same, clash } = yield* sharingOf(plan, yield* imageStats(plan));
  if (same !== undefined) {
    return new LoopDevice({
      number: same.number,
      path: same.path,
      diskseq: same.diskseq,
      backingDevice: same.backingDevice,
      backingInode: same.backingInode,
      fd: -1,
      partitions: [],
      released: false,
      partscan: same.partscan,
      setupIoctl: null,
    });
  }
  if (clash !== undefined) {
    fail('ERR_LOOP_OVERLAP', `${clash.path} already maps an overlapping range of this file with other settings (${differences(plan, clash)})`, {
      path: clash.path,
      device: clash.number,
    });
  }
  return undefined;
}
