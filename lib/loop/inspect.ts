// info(), list() and find(): what the kernel says about bound loop devices.
import { fail } from '../core/errors';
import { addon, exactU64, LIST, u64, type U64 } from '../core/addon';
import { call, runAsync, runSync, type Flow } from '../core/flow';
import * as io from '../core/io';
import { checkPath, deviceNumber, LO_FLAGS, loopNumberFromPath, type DeviceRef } from './options';
import { deviceExists, devicePath, loopNumberOfNode, partitionPath } from './sysfs';
import { bindingOf } from './binding';

/** A partition of a loop device. */
export interface PartitionInfo {
  /** e.g. /dev/loop3p1 */
  path: string;
  number: number;
  /** offset from the start of the device (bytes) */
  start: number;
  /** bytes */
  size: number;
}

/** A bound loop device as the kernel reports it (sizes and offsets in bytes). */
export interface LoopInfo {
  path: string;
  number: number;
  /** the backing file's path as the kernel reports it (sysfs), e.g. "/tmp/a.img (deleted)" once unlinked */
  backingFile: string;
  /** st_dev and st_ino of the backing file: numbers, or bigints past 2^53 (an inode on overlayfs with xino) */
  backingDevice: U64;
  backingInode: U64;
  offset: number;
  /** 0: no limit */
  sizeLimit: number;
  /** bytes the device exposes */
  size: number;
  readOnly: boolean;
  autoclear: boolean;
  partscan: boolean;
  directIO: boolean;
  /** logical sector size (bytes) */
  sectorSize: number;
  major: number;
  minor: number;
  /** the kernel's sequence number of this binding (0 on kernels before 5.15; a bigint past 2^53) */
  diskseq: U64;
  /** lo_file_name: a free label, not necessarily the path */
  label: string;
  partitions: PartitionInfo[];
}

/** The number of a loop device given as a number, a path or a handle (checked, never guessed). */
export function* resolveNumber(device: DeviceRef): Flow<number> {
  const binding = bindingOf(device);
  if (binding) return binding.number;
  if (typeof device === 'number') return deviceNumber(device);
  const path = checkPath(device, 'device');
  return loopNumberFromPath(path) ?? (yield* loopNumberOfNode(path));
}

/**
 * The bound loop devices (or only device `only`), as the addon reads them (see
 * native/list.cc), decoded straight into LoopInfo objects of one shape: with 256 devices,
 * an intermediate record spread into the final object cost as much as reading the devices.
 */
export function* listStep(only?: number): Flow<LoopInfo[]> {
  const [numbers, files, labels] = yield* call(addon.list, only);
  const infos: LoopInfo[] = new Array(files.length);
  let at = 0;
  for (let index = 0; index < files.length; index++) {
    const number = numbers[at + LIST.number]!;
    const flags = numbers[at + LIST.flags]!;
    const count = numbers[at + LIST.partitionCount]!;
    const partitions: PartitionInfo[] = new Array(count);
    for (let part = 0, base = at + LIST.count; part < count; part++, base += 3) {
      partitions[part] = { path: partitionPath(number, numbers[base]!), number: numbers[base]!, start: numbers[base + 1]!, size: numbers[base + 2]! };
    }
    if (count > 1) partitions.sort((a, b) => a.number - b.number);
    infos[index] = {
      path: devicePath(number),
      number,
      backingFile: files[index]!,
      backingDevice: u64(numbers, at + LIST.backingDevice),
      backingInode: u64(numbers, at + LIST.backingInode),
      offset: numbers[at + LIST.offset]!,
      sizeLimit: numbers[at + LIST.sizeLimit]!,
      size: numbers[at + LIST.size]!,
      readOnly: (flags & LO_FLAGS.READ_ONLY) !== 0,
      autoclear: (flags & LO_FLAGS.AUTOCLEAR) !== 0,
      partscan: (flags & LO_FLAGS.PARTSCAN) !== 0,
      directIO: (flags & LO_FLAGS.DIRECT_IO) !== 0,
      sectorSize: numbers[at + LIST.sectorSize]!,
      major: numbers[at + LIST.major]!,
      minor: numbers[at + LIST.minor]!,
      diskseq: u64(numbers, at + LIST.diskseq),
      label: labels[index]!,
      partitions,
    };
    at += LIST.count + count * 3;
  }
  return infos;
}

function* infoFlow(device: DeviceRef): Flow<LoopInfo> {
  const number = yield* resolveNumber(device);
  const [found] = yield* listStep(number);
  if (found === undefined) {
    const what = (yield* deviceExists(number)) ? 'is not attached to a file' : 'does not exist (no such loop device)';
    fail('ERR_LOOP_NOT_ATTACHED', `${devicePath(number)} ${what}`, { path: devicePath(number), device: number });
  }
  return found;
}

export function* listFlow(): Flow<LoopInfo[]> {
  return (yield* listStep()).sort((a, b) => a.number - b.number);
}

function* findFlow(file: unknown): Flow<LoopInfo[]> {
  const path = checkPath(file, 'file');
  const stats = yield* call(io.statExact, path);
  const real = yield* call(io.realpath, path);
  const all = yield* listFlow();
  // Matched by device and inode, so symlinks, relative paths and bind mounts still match.
  return all.filter((info) => {
    // A device described from sysfs alone (no node to open) has no inode: compare paths.
    const fromSysfs = info.backingInode === 0 && info.backingDevice === 0;
    return fromSysfs ? info.backingFile === real : info.backingDevice === exactU64(stats.dev) && info.backingInode === exactU64(stats.ino);
  });
}

/** The state of one bound loop device. Throws ERR_LOOP_NOT_ATTACHED if it is not bound. */
export const info = (device: DeviceRef): Promise<LoopInfo> => runAsync(infoFlow(device));
/** Sync form of {@link info}. */
export const infoSync = (device: DeviceRef): LoopInfo => runSync(infoFlow(device));
/** Every bound loop device on the machine (not only this process's), by number. */
export const list = (): Promise<LoopInfo[]> => runAsync(listFlow());
/** Sync form of {@link list}. */
export const listSync = (): LoopInfo[] => runSync(listFlow());
/** The loop devices backed by `file` (matched by device and inode). */
export const find = (file: string): Promise<LoopInfo[]> => runAsync(findFlow(file));
/** Sync form of {@link find}. */
export const findSync = (file: string): LoopInfo[] => runSync(findFlow(file));
