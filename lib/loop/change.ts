// Changing a device while it is attached: setCapacity() (LOOP_SET_CAPACITY), reconfigure()
// (LOOP_SET_STATUS64, LOOP_SET_BLOCK_SIZE, LOOP_SET_DIRECT_IO) and changeBacking()
// (LOOP_CHANGE_FD). Each checks what it is asked before any ioctl, retries what the kernel
// calls busy, reads the state back and says when a change did not take.
import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

import { addon, packPartitions, STATUS_CHANGE } from '../core/addon';
import { LoopError, fail } from '../core/errors';
import { call, runAsync, runSync, type Flow } from '../core/flow';
import * as io from '../core/io';
import { retrying, retryWhileBusy } from '../core/retry';
import { readPartitionTable } from '../partitions/table';
import { bindingOf } from './binding';
import { listStep, type LoopInfo } from './inspect';
import { followOnExit } from './exit';
import { ensurePartitionNodes } from './nodes';
import { byteCount, checkLabel, checkPath, checkSectorSize, describe, invalid, LO_FLAGS, optionsObject, type DeviceRef } from './options';
import { devicePath } from './sysfs';
import { targetOf, type Target } from './target';

/** What reconfigure() may change (every field optional; bytes for sizes). */
export interface ReconfigureOptions {
  /** LOOP_SET_DIRECT_IO; 'prefer': on if the backing file allows it, else left off */
  directIO?: boolean | 'prefer';
  /** LOOP_SET_BLOCK_SIZE: 512, 1024, 2048 or 4096 */
  sectorSize?: 512 | 1024 | 2048 | 4096;
  /** where the device starts in the file */
  offset?: number | bigint;
  /** the most the device exposes; 0: to the end of the file */
  sizeLimit?: number | bigint;
  autoclear?: boolean;
  /** only true: the kernel cannot turn a device's partition scanning off */
  partscan?: boolean;
  label?: string;
  signal?: AbortSignal;
}

const KNOWN = ['directIO', 'sectorSize', 'offset', 'sizeLimit', 'autoclear', 'partscan', 'label', 'signal'];

// How hard a change is retried while the kernel calls the device busy (see retryWhileBusy).
const RETRY = { attempts: 10, minDelayMs: 25, maxDelayMs: 250 };


/** One change step, retried while the kernel calls the device busy. */
function retried<T>(operation: string, signal: AbortSignal | undefined, step: () => Flow<T>): Flow<T> {
  return retrying({ operation, options: RETRY, signal, classify: retryWhileBusy }, step);
}

/** The device's state now; ERR_LOOP_NOT_ATTACHED when it is not bound. */
function* current(number: number): Flow<LoopInfo> {
  const [found] = yield* listStep(number);
  if (found === undefined) fail('ERR_LOOP_NOT_ATTACHED', `${devicePath(number)} is not attached to a file`, { path: devicePath(number), device: number });
  return found;
}

/**
 * A handle follows the device it changed: the kernel may count a change as a new disk
 * sequence, LOOP_CHANGE_FD moves the binding to another file, and PARTSCAN may be set now. (The change itself checked
 * that the binding was the handle's.)
 */
function* follow(device: DeviceRef, after: LoopInfo): Flow<LoopInfo> {
  const binding = bindingOf(device);
  if (binding !== undefined) {
    binding.diskseq = after.diskseq;
    binding.backingDevice = after.backingDevice;
    binding.backingInode = after.backingInode;
    binding.partscan = after.partscan;
    yield* followOnExit(device);
  }
  return after;
}

/** Makes the device re-read its backing file's size (after the file grew or shrank); resolves to its state then. */
export const setCapacity = (device: DeviceRef): Promise<LoopInfo> => runAsync(setCapacityFlow(device));
/** Sync form of {@link setCapacity}. */
export const setCapacitySync = (device: DeviceRef): LoopInfo => runSync(setCapacityFlow(device));

function* setCapacityFlow(device: DeviceRef): Flow<LoopInfo> {
  const target = yield* targetOf(device);
  yield* retried('setCapacity', undefined, () => call(addon.setCapacity, ...target));
  return yield* follow(device, yield* current(target[0]));
}

interface ChangePlan {
  directIO: boolean | 'prefer' | undefined;
  sectorSize: number | undefined;
  offset: number | bigint | undefined;
  sizeLimit: number | bigint | undefined;
  autoclear: boolean | undefined;
  partscan: true | undefined;
  label: string | undefined;
  signal: AbortSignal | undefined;
}

function planChanges(raw: unknown): ChangePlan {
  const options = optionsObject(raw);
  for (const key of Object.keys(options)) if (!KNOWN.includes(key)) invalid(`unknown reconfigure option '${key}' (known: ${KNOWN.join(', ')})`);
  const bool = (key: string): boolean | undefined => {
    const value = options[key];
    if (value !== undefined && typeof value !== 'boolean') invalid(`option '${key}' must be a boolean, got ${describe(value)}`);
    return value as boolean | undefined;
  };
  const directIO = options.directIO;
  if (directIO !== undefined && directIO !== 'prefer' && typeof directIO !== 'boolean') invalid(`option 'directIO' must be true, false or 'prefer', got ${describe(directIO)}`);
  const partscan = bool('partscan');
  // LTP ioctl_loop01: LOOP_SET_STATUS64 cannot clear PARTSCAN once set.
  if (partscan === false) invalid(`option 'partscan' cannot be false: the kernel cannot turn partition scanning off on a bound device (detach and attach again)`);
  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) invalid(`option 'signal' must be an AbortSignal`);
  return {
    directIO: directIO as boolean | 'prefer' | undefined,
    sectorSize: options.sectorSize === undefined ? undefined : checkSectorSize(options.sectorSize, 'sectorSize'),
    offset: options.offset === undefined ? undefined : byteCount(options.offset, 'offset'),
    sizeLimit: options.sizeLimit === undefined ? undefined : byteCount(options.sizeLimit, 'sizeLimit'),
    autoclear: bool('autoclear'),
    partscan: partscan === true ? true : undefined,
    label: options.label === undefined ? undefined : checkLabel(options.label),
    signal: signal as AbortSignal | undefined,
  };
}

/**
 * Changes a bound device in place, and resolves to its state then: offset, size limit,
 * autoclear, partscan and label (LOOP_SET_STATUS64), the sector size (LOOP_SET_BLOCK_SIZE),
 * direct I/O (LOOP_SET_DIRECT_IO). Partitions follow an offset or size change.
 */
export const reconfigure = (device: DeviceRef, changes: ReconfigureOptions): Promise<LoopInfo> => runAsync(reconfigureFlow(device, changes));
/** Sync form of {@link reconfigure}. */
export const reconfigureSync = (device: DeviceRef, changes: ReconfigureOptions): LoopInfo => runSync(reconfigureFlow(device, changes));

function* reconfigureFlow(device: DeviceRef, raw: unknown): Flow<LoopInfo> {
  const plan = planChanges(raw);
  const target = yield* targetOf(device);
  const number = target[0];
  const before = yield* current(number);
  const offset = plan.offset === undefined ? before.offset : Number(plan.offset);
  const sectorSize = plan.sectorSize ?? before.sectorSize;
  // LTP ioctl_loop05: the kernel refuses direct I/O with EINVAL when the offset is not a
  // multiple of the logical block size; say so before anything changes.
  if (plan.directIO === true && offset % sectorSize !== 0) {
    invalid(`direct I/O needs the offset (${offset}) to be a multiple of the sector size (${sectorSize}): change the offset or the sectorSize too`);
  }

  let changes = 0;
  let flags = 0;
  if (plan.offset !== undefined) changes |= STATUS_CHANGE.offset;
  if (plan.sizeLimit !== undefined) changes |= STATUS_CHANGE.sizeLimit;
  if (plan.autoclear !== undefined) {
    changes |= STATUS_CHANGE.autoclear;
    if (plan.autoclear) flags |= LO_FLAGS.AUTOCLEAR;
  }
  if (plan.partscan) {
    changes |= STATUS_CHANGE.partscan;
    flags |= LO_FLAGS.PARTSCAN;
  }
  if (plan.label !== undefined) changes |= STATUS_CHANGE.label;
  if (changes !== 0) {
    yield* retried('reconfigure', plan.signal, () => call(addon.setStatus, ...target, changes, plan.offset ?? 0, plan.sizeLimit ?? 0, flags, plan.label));
  }
  // The block size before direct I/O: direct I/O needs the offset aligned to it.
  if (plan.sectorSize !== undefined && plan.sectorSize !== before.sectorSize) {
    yield* retried('reconfigure', plan.signal, () => call(addon.setBlockSize, ...target, plan.sectorSize!));
  }
  if (plan.directIO !== undefined && plan.directIO !== before.directIO) {
    try {
      yield* retried('reconfigure', plan.signal, () => call(addon.setDirectIO, ...target, plan.directIO !== false));
    } catch (error) {
      if (plan.directIO !== 'prefer') throw explainDirectIO(error);
    }
  }
  let after: LoopInfo;
  try {
    after = yield* follow(device, yield* current(number));
  } catch (error) {
    // The kernel unbinds an AUTOCLEAR device at its last close: the change's own, when nothing else holds it.
    if (plan.autoclear === true && error instanceof LoopError && error.code === 'ERR_LOOP_NOT_ATTACHED') {
      fail('ERR_LOOP_NOT_ATTACHED', `${devicePath(number)}: with autoclear set and nothing else holding it open, the kernel released it at once`, { path: devicePath(number), device: number, cause: error });
    }
    throw error;
  }
  // Turning partscan on makes the kernel scan with its own parsers only (a kernel built without
  // CONFIG_EFI_PARTITION finds no GPT): read the table here too, as attach does with partscan.
  const partscanTurnedOn = plan.partscan === true && !before.partscan;
  if ((plan.offset !== undefined || plan.sizeLimit !== undefined || partscanTurnedOn) && after.partscan) after = yield* followPartitions(device, target, after);
  const wrong = notTaken(plan, after);
  if (wrong.length > 0) {
    fail('ERR_LOOP_SETTING_IGNORED', `${after.path}: the kernel did not apply the changes: ${wrong.join('; ')}`, { path: after.path, device: number });
  }
  return after;
}

function explainDirectIO(error: unknown): unknown {
  if (!(error instanceof LoopError) || error.code !== 'EINVAL') return error;
  return new LoopError(
    `${error.message}: the kernel refused direct I/O: the backing file's filesystem has no O_DIRECT, or its sectors are larger than the device's, or the offset is not aligned to them; directIO: 'prefer' accepts buffered I/O`,
    { code: error.code, errno: error.errno, syscall: error.syscall, path: error.path, device: error.device, cause: error },
  );
}

/** The asked changes the state read back does not show. */
function notTaken(plan: ChangePlan, after: LoopInfo): string[] {
  const wrong: string[] = [];
  if (plan.offset !== undefined && after.offset !== Number(plan.offset)) wrong.push(`offset is ${after.offset}, not ${plan.offset}`);
  if (plan.sizeLimit !== undefined && after.sizeLimit !== Number(plan.sizeLimit)) wrong.push(`sizeLimit is ${after.sizeLimit}, not ${plan.sizeLimit}`);
  if (plan.autoclear !== undefined && after.autoclear !== plan.autoclear) wrong.push(`autoclear is ${after.autoclear}`);
  if (plan.partscan && !after.partscan) wrong.push('partscan did not take');
  if (plan.label !== undefined && after.label !== plan.label) wrong.push(`the label is ${JSON.stringify(after.label)}`);
  if (plan.sectorSize !== undefined && after.sectorSize !== plan.sectorSize) wrong.push(`sectorSize is ${after.sectorSize}, not ${plan.sectorSize}`);
  if (plan.directIO === true && !after.directIO) {
    wrong.push("directIO did not take (the backing file's filesystem has no O_DIRECT, or its sectors are larger than the device's; directIO: 'prefer' accepts that)");
  }
  if (plan.directIO === false && after.directIO) wrong.push('directIO is still on');
  return wrong;
}

/**
 * After an offset or size change the kernel keeps the partitions of the old geometry (and
 * when partscan is turned on it finds only what its own parsers know): drop
 * them (BLKRRPART, which also adds what the kernel's own parsers find) and add, with BLKPG,
 * the ones the table at the new place names that the kernel did not make. A handle learns
 * which it added, so that detach deletes them.
 */
function* followPartitions(device: DeviceRef, target: Target, info: LoopInfo): Flow<LoopInfo> {
  const fd = yield* call(addon.openOwned, info.path, constants.O_RDONLY, false);
  let partitions;
  try {
    partitions = (yield* io.parseReads(fd, (read) => readPartitionTable(read, info.sectorSize || 512, info.size)))?.partitions ?? [];
  } finally {
    yield* call(addon.closeOwned, fd);
  }
  const out = new Float64Array(partitions.length);
  yield* retried('reconfigure', undefined, () => call(addon.rescanPartitions, ...target, packPartitions(partitions), out));
  // EBUSY from BLKPG_ADD_PARTITION: the kernel's own scan made that partition.
  const failed = Array.from(out).find((errno) => errno !== 0 && errno !== 16);
  if (failed !== undefined) throw LoopError.system(failed, 'ioctl(BLKPG_ADD_PARTITION)', info.path, { device: info.number });
  const binding = bindingOf(device);
  if (binding !== undefined) {
    binding.partitions = partitions.filter((_, index) => out[index] === 0);
    yield* followOnExit(device);
  }
  yield* ensurePartitionNodes(info.number, partitions.map((part) => part.number));
  return yield* current(info.number);
}

/**
 * Swaps the backing file of a read-only device for another of the same size
 * (LOOP_CHANGE_FD), as live systems do; a handle's identity moves to the new file.
 */
export const changeBacking = (device: DeviceRef, file: string | number | FileHandle): Promise<LoopInfo> => runAsync(changeBackingFlow(device, file));
/** Sync form of {@link changeBacking}. */
export const changeBackingSync = (device: DeviceRef, file: string | number | FileHandle): LoopInfo => runSync(changeBackingFlow(device, file));

function* changeBackingFlow(device: DeviceRef, file: unknown): Flow<LoopInfo> {
  let backingFd = -1;
  let backingPath = '';
  if (typeof file === 'number' && Number.isInteger(file) && file >= 0) backingFd = file;
  else if (typeof file === 'object' && file !== null && typeof (file as FileHandle).fd === 'number') backingFd = (file as FileHandle).fd;
  else backingPath = checkPath(file, 'file');
  const target = yield* targetOf(device);
  const before = yield* current(target[0]);
  const stats = backingFd >= 0 ? yield* call(io.fstat, backingFd) : yield* call(io.stat, backingPath);
  // LTP ioctl_loop02 and ioctl_loop03: the kernel answers a bare EINVAL to both; say which.
  if (!before.readOnly) {
    fail('ERR_LOOP_INVALID_ARGUMENT', `${before.path} is writable: the kernel changes the backing file only of a read-only device (attach it with readOnly: true)`, { path: before.path, device: before.number });
  }
  if (!stats.isFile() && !stats.isBlockDevice()) fail('ERR_LOOP_INVALID_BACKING', `${backingPath || 'the file'} is not a regular file or a block device`, { path: backingPath || undefined });
  const exposed = (size: number): number => {
    let bytes = Math.max(0, size - before.offset);
    if (before.sizeLimit > 0) bytes = Math.min(bytes, before.sizeLimit);
    return bytes - (bytes % 512);
  };
  if (stats.isFile() && exposed(stats.size) !== before.size) {
    fail('ERR_LOOP_INVALID_ARGUMENT', `${backingPath || 'the file'} would give the device ${exposed(stats.size)} bytes, not its ${before.size}: the kernel changes the backing file only for one of the same size`, {
      path: backingPath || undefined,
      device: before.number,
    });
  }
  yield* retried('changeBacking', undefined, () => call(addon.changeBacking, ...target, backingFd, backingPath));
  return yield* follow(device, yield* current(target[0]));
}
