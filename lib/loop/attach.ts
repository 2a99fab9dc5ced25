// attach(): find a free device and bind the file to it, retrying the races every tool that
// does this has met (KERNEL-NOTES.md), and checking that every setting really took.
import { constants, fstatSync, readSync } from 'node:fs';

import { cachedControl, control, ensureDevice } from './control';
import { detachFlow } from './detach';
import { LoopDevice } from './handle';
import { LoopError, fail, fromNodeError, stepFailure } from '../core/errors';
import { detachOnExit } from './exit';
import { call, checkAborted, ENTER_EXCLUSIVE, ENTER_LANE, giveLane, LEAVE_EXCLUSIVE, LEAVE_LANE, runAsync, runSync, sleep, takeLane, type Flow } from '../core/flow';
import { native, type AttachResult, type NativePartition } from '../core/addon';
import { ensureDeviceNode, ensurePartitionNodes } from './nodes';
import { LO_FLAGS, planAttach, type AttachOptions, type AttachPlan, type BackingFile } from './options';
import { readPartitionTable } from '../partitions/table';
import { Retrier, type Verdict } from '../core/retry';
import { differences, imageStats, lockImage, sharingOf } from './sharing';
import { attachEffect, attachLater, attachNow, decodeAttach, packPartitions, type AttachWay } from '../core/steps';
import { devicePath } from './sysfs';

// Learned once per thread: this kernel answers LOOP_CONFIGURE with EINVAL, ENOTTY or ENOSYS
// (before 5.8, 32-bit, qemu-user), and LOOP_SET_FD + LOOP_SET_STATUS64 worked instead.
let configureUnsupported = false;

// LOOPDEV_LEGACY_CONFIGURE=1 (read once: process.env is slow to read on every attach) forces
// the pre-5.8 path, so that it can be tested on new kernels.
let forcedLegacy = process.env.LOOPDEV_LEGACY_CONFIGURE === '1';
const legacyForced = (): boolean => forcedLegacy;

/** Forces (or stops forcing) the pre-5.8 path in this thread, as LOOPDEV_LEGACY_CONFIGURE=1 does. Tests use it. */
export function forceLegacyConfigure(force: boolean): void {
  forcedLegacy = force;
}

function classify(error: LoopError, plan: AttachPlan): Verdict {
  if (error.code.startsWith('ERR_LOOP')) return 'fail';
  const onDevice = error.device !== undefined && error.path === devicePath(error.device);
  switch (error.syscall) {
    case 'open':
      // ENXIO: the device is being torn down; ENOENT: its node is not there (yet).
      return onDevice && (error.code === 'ENXIO' || error.code === 'ENOENT') ? 'retry' : 'fail';
    case 'flock':
      // Another process holds the device's lock: it is configuring or using it.
      return onDevice && error.code === 'EAGAIN' ? 'retry' : 'fail';
    case 'ioctl(LOOP_CONFIGURE)':
    case 'ioctl(LOOP_SET_FD)':
      // EBUSY: someone bound it between GET_FREE and us. When the caller named the device,
      // it is simply in use.
      if (error.code === 'EBUSY') return plan.device >= 0 ? 'fail' : 'retry';
      return error.code === 'EAGAIN' ? 'retry' : 'fail';
    case 'ioctl(LOOP_SET_STATUS64)':
      return error.code === 'EAGAIN' || error.code === 'EBUSY' ? 'retry' : 'fail';
    case 'ioctl(LOOP_GET_STATUS64)':
      return error.code === 'ENXIO' ? 'retry' : 'fail';
    case 'ioctl(LOOP_CTL_GET_FREE)':
      return error.code === 'EBUSY' || error.code === 'EAGAIN' ? 'retry' : 'fail';
    default:
      return 'fail';
  }
}

/** The partitions to add with BLKPG, read from the file's MBR or GPT (bytes, device-relative). */
function readPartitions(plan: AttachPlan): NativePartition[] {
  let fd = plan.backingFd;
  try {
    // An fd the addon owns: a worker terminated mid-read cannot leave it open.
    if (fd < 0) fd = native.openOwned(plan.backingPath, constants.O_RDONLY);
    const stats = fstatSync(fd);
    if (!stats.isFile()) return []; // a block device's size is not in fstat: leave it to the kernel
    const offset = Number(plan.offset);
    const limit = Number(plan.sizeLimit);
    const sectorSize = plan.sectorSize || 512;
    let deviceSize = Math.max(0, stats.size - offset);
    if (limit > 0) deviceSize = Math.min(deviceSize, limit);
    deviceSize -= deviceSize % 512;
    const table = readPartitionTable(
      (buffer, position) =>
        position >= deviceSize ? 0 : readSync(fd, buffer, 0, Math.min(buffer.length, deviceSize - position), offset + position),
      sectorSize,
      deviceSize,
    );
    return (table?.partitions ?? []).map(({ number, start, length }) => ({ number, start, length }));
  } catch (error) {
    throw fromNodeError(error);
  } finally {
    if (fd >= 0 && fd !== plan.backingFd) native.closeOwned(fd);
  }
}

const NO_PARTITIONS: readonly NativePartition[] = Object.freeze([]);

// Flags that must be set when asked (the kernel may set others, e.g. none of these unasked).
const REQUESTED_FLAGS = [
  ['autoclear', LO_FLAGS.AUTOCLEAR],
  ['partscan', LO_FLAGS.PARTSCAN],
  ['directIO', LO_FLAGS.DIRECT_IO],
] as const;

const has = (flags: number, bit: number): boolean => (flags & bit) !== 0;

/**
 * Settings the kernel did not take (some 5.8 kernels dropped partscan and the size limit),
 * or undefined when it took them all (no array is made on that path, the usual one).
 */
function mismatches(plan: AttachPlan, status: AttachResult): string[] | undefined {
  let wrong: string[] | undefined;
  if (status.offset !== Number(plan.offset)) (wrong ??= []).push(`offset is ${status.offset}, not ${plan.offset}`);
  if (status.sizeLimit !== Number(plan.sizeLimit)) (wrong ??= []).push(`sizeLimit is ${status.sizeLimit}, not ${plan.sizeLimit}`);
  if (has(status.flags, LO_FLAGS.READ_ONLY) !== has(plan.flags, LO_FLAGS.READ_ONLY)) {
    (wrong ??= []).push(
      has(status.flags, LO_FLAGS.READ_ONLY)
        ? 'the device is read-only (the file or its fd is not writable: pass readOnly: true)'
        : 'the device is writable although readOnly was asked',
    );
  }
  for (let index = 0; index < REQUESTED_FLAGS.length; index++) {
    const [name, bit] = REQUESTED_FLAGS[index]!;
    if (has(plan.flags, bit) && !has(status.flags, bit)) (wrong ??= []).push(`${name} did not take`);
  }
  if (plan.sectorSize !== 0 && status.sectorSize !== plan.sectorSize) {
    (wrong ??= []).push(`sectorSize is ${status.sectorSize}, not ${plan.sectorSize}`);
  }
  return wrong;
}

/** reuse: an existing device with the same file and settings, or refuse an overlapping one. */
function* reuseFlow(plan: AttachPlan): Flow<LoopDevice | undefined> {
  if (plan.hold) fail('ERR_LOOP_INVALID_OPTION', "option 'reuse' cannot be combined with 'hold' or 'autoclear'");
  const { same, clash } = yield* sharingOf(plan, imageStats(plan));
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

/**
 * One attach: its plan and how the attempts go (a repair may switch to the legacy path; with
 * partscan, the first attempt looks for a partition table and, if it finds one, attaches
 * nothing: the table is read here, and the next attempt adds its partitions).
 */
interface AttachJob extends AttachWay {
  readonly plan: AttachPlan;
  /** read from the file's table, added with BLKPG by the attach step */
  partitions: readonly NativePartition[];
}

const prepare = (plan: AttachPlan): AttachJob => ({
  plan,
  partitions: NO_PARTITIONS,
  packed: undefined,
  probe: (plan.flags & LO_FLAGS.PARTSCAN) !== 0,
  legacy: legacyForced() || configureUnsupported,
});

/** The attach step found a partition table: read it here, on the calling thread (a few preads), for the next attempt. */
function readTable(job: AttachJob): void {
  job.partitions = readPartitions(job.plan);
  job.packed = packPartitions(job.partitions);
  job.probe = false;
}

/**
 * Repairs what an attempt's failure showed to be missing, so the next attempt can go at
 * once: a device node (a container's /dev), or the pre-5.8 path (LOOP_CONFIGURE refused).
 * Answers whether it repaired anything.
 */
function* repair(error: LoopError, job: AttachJob): Flow<boolean> {
  if (error.syscall === 'open' && error.code === 'ENOENT' && error.device !== undefined && error.path === devicePath(error.device)) {
    return yield* ensureDeviceNode(error.device);
  }
  if (!job.legacy && error.syscall === 'ioctl(LOOP_CONFIGURE)' && (error.code === 'EINVAL' || error.code === 'ENOTTY' || error.code === 'ENOSYS')) {
    job.legacy = true;
    return true;
  }
  return false;
}

/** A failed attempt: repaired, or judged by the Retrier (which throws when it is final); answers the pause before the next. */
function* afterFailure(job: AttachJob, retry: Retrier, error: LoopError): Flow<number> {
  return retry.next(error, (yield* repair(error, job)) ? 'now' : classify(error, job.plan));
}

/** The handle for what the kernel bound. */
function handle(job: AttachJob, result: AttachResult): LoopDevice {
  const { partitions } = job;
  return new LoopDevice({
    number: result.number,
    path: devicePath(result.number),
    diskseq: result.diskseq,
    backingDevice: result.backingDevice,
    backingInode: result.backingInode,
    fd: result.fd,
    partitions: partitions.length === 0 ? [] : partitions.filter((_, index) => result.partitionErrors[index] === 0),
    released: false,
    setupIoctl: result.legacy ? 'LOOP_SET_FD' : 'LOOP_CONFIGURE',
  });
}

/** Why the device cannot be handed over (a setting or a partition did not take), if it cannot. */
function refusal(job: AttachJob, device: LoopDevice, result: AttachResult): LoopError | undefined {
  const wrong = mismatches(job.plan, result);
  if (wrong !== undefined) {
    return new LoopError(`${device.path}: the kernel did not apply the settings: ${wrong.join('; ')}`, {
      code: 'ERR_LOOP_SETTING_IGNORED',
      path: device.path,
      device: device.number,
    });
  }
  // EBUSY from BLKPG_ADD_PARTITION: the kernel's own scan already made that partition.
  const partitionError = job.partitions.length === 0 ? undefined : result.partitionErrors.find((errno) => errno !== 0 && errno !== 16);
  return partitionError === undefined ? undefined : LoopError.system(partitionError, 'ioctl(BLKPG_ADD_PARTITION)', device.path, { device: device.number });
}

/** Whether handOver() has anything to do: usually not. */
const nothingToHandOver = (job: AttachJob, problem: LoopError | undefined): boolean =>
  problem === undefined && job.partitions.length === 0 && !job.plan.detachOnExit;

/** Releases the device again if it cannot be handed over (then throws), makes its partition nodes, registers it for exit. */
function* handOver(job: AttachJob, device: LoopDevice, problem: LoopError | undefined): Flow<LoopDevice> {
  if (problem !== undefined) {
    yield* detachFlow(device, { wait: false });
    throw problem;
  }
  if (job.partitions.length > 0) yield* ensurePartitionNodes(device.number, job.partitions.map((part) => part.number));
  if (job.plan.detachOnExit) detachOnExit(device);
  return device;
}

/**
 * Attempts to bind until one succeeds or the Retrier gives up, then hands the device over.
 * `failed`: the first attempt, made directly by attachSync(), failed with this (so this goes
 * on from its retry). One generator for the whole way: each `yield*` level costs every
 * effect a resume, and the async form yields three per attempt.
 */
function* complete(job: AttachJob, failed?: LoopError): Flow<LoopDevice> {
  const { plan } = job;
  const retry = new Retrier('attach', plan.retry, plan.onRetry);
  let pause = failed === undefined ? 0 : yield* afterFailure(job, retry, failed);
  let result: AttachResult | undefined;
  while (result === undefined) {
    if (pause > 0) yield* sleep(pause, plan.signal);
    pause = 0;
    checkAborted(plan.signal);
    // Concurrent attach() calls of this process must not race each other for the same free
    // device: with the control lock, each takes a lane with its own control fd and the
    // kernel's flock makes them take turns; without it, they take turns here.
    const answer = yield plan.lockControl ? ENTER_LANE : ENTER_EXCLUSIVE;
    try {
      if (plan.device >= 0) yield* ensureDevice(plan.device);
      const lane = plan.lockControl ? (answer as number) : -1;
      let controlFd = -1;
      if (plan.device < 0 || plan.lockControl) controlFd = cachedControl(lane) >= 0 ? cachedControl(lane) : yield* control(lane);
      const answered = decodeAttach((yield attachEffect(plan, controlFd, job)) as Float64Array, job.partitions.length);
      if (answered.table) readTable(job);
      else result = answered;
    } catch (thrown) {
      if (!(thrown instanceof LoopError)) throw thrown;
      pause = yield* afterFailure(job, retry, thrown);
    } finally {
      yield plan.lockControl ? LEAVE_LANE : LEAVE_EXCLUSIVE;
    }
  }
  if (job.legacy && !legacyForced()) configureUnsupported = true;
  const device = handle(job, result);
  const problem = refusal(job, device, result);
  return nothingToHandOver(job, problem) ? device : yield* handOver(job, device, problem);
}

// A generator, so that bad options reject attach()'s promise rather than throw from the
// call. `planned`: attachSync() planned it already.
export function* attachFlow(file: BackingFile, options?: AttachOptions, planned?: AttachPlan): Flow<LoopDevice> {
  const plan = planned ?? planAttach(file, options);
  if (!plan.reuse) return yield* complete(prepare(plan));
  // The look for an existing device and the attach, under the image's lock (see sharing.ts).
  const lock = yield* lockImage(plan);
  try {
    return (yield* reuseFlow(plan)) ?? (yield* complete(prepare(plan)));
  } finally {
    if (lock >= 0) yield* call('closeOwned', lock);
  }
}

/**
 * What is left after a first attempt made outside the flow: usually nothing (the device);
 * else the rest of the flow (a retry, the partition table, the hand-over), for the
 * caller's driver.
 */
function afterFirstAttempt(job: AttachJob, outcome: AttachResult | LoopError): LoopDevice | Flow<LoopDevice> {
  if (outcome instanceof LoopError) return complete(job, outcome);
  if (outcome.table) {
    readTable(job);
    return complete(job);
  }
  const device = handle(job, outcome);
  const problem = refusal(job, device, outcome);
  return nothingToHandOver(job, problem) ? device : handOver(job, device, problem);
}

/** Binds `file` (a path, an fd or a FileHandle) to a free loop device (or `options.device`). */
export async function attach(file: BackingFile, options?: AttachOptions): Promise<LoopDevice> {
  const plan = planAttach(file, options);
  // The usual attach makes its first attempt here, through the step's Promise form, as
  // attachSync() does with the plain call: the flow's generators and driver were about half
  // of the async TypeScript layer's time per attach+detach cycle (measured pinned to one CPU:
  // 6 -> 3-4 us). It takes a lane as the flow would (see LANES); without the control lock,
  // the flow's turns apply.
  if (plan.reuse || plan.device >= 0 || !plan.lockControl) return runAsync(attachFlow(file, options, plan));
  const free = takeLane();
  const lane = typeof free === 'number' ? free : await free;
  const controlFd = cachedControl(lane);
  // The lane's control fd not open yet, or an abort (which the flow reports): the flow.
  if (controlFd < 0 || plan.signal?.aborted) {
    giveLane(lane);
    return runAsync(attachFlow(file, options, plan));
  }
  const job = prepare(plan);
  let outcome: AttachResult | LoopError;
  try {
    outcome = decodeAttach(await attachLater(plan, controlFd, job), job.partitions.length);
  } catch (thrown) {
    outcome = stepFailure(thrown);
  } finally {
    giveLane(lane);
  }
  const next = afterFirstAttempt(job, outcome);
  return next instanceof LoopDevice ? next : runAsync(next);
}

/** Sync form of {@link attach}. */
export function attachSync(file: BackingFile, options?: AttachOptions): LoopDevice {
  const plan = planAttach(file, options);
  const controlFd = cachedControl();
  // The usual attach (a free device, the control fd open) makes its first attempt here, as a
  // plain call: on this path the flow's generators and driver cost more than the rest of the
  // TypeScript layer together (measured). Anything else, a failed attempt included, goes on
  // in the same flow the async form runs, from where this left off.
  if (plan.reuse || plan.device >= 0 || controlFd < 0) return runSync(attachFlow(file, options, plan));
  checkAborted(plan.signal);
  const job = prepare(plan);
  let outcome: AttachResult | LoopError;
  try {
    outcome = attachNow(plan, controlFd, job);
  } catch (thrown) {
    outcome = stepFailure(thrown);
  }
  const next = afterFirstAttempt(job, outcome);
  return next instanceof LoopDevice ? next : runSync(next);
}
