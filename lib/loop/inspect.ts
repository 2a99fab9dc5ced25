// info(), list() and find(): what the kernel says about bound loop devices.
import { realpathSync, statSync } from 'node:fs';

import { fail, fromNodeError } from '../core/errors';
import { runAsync, runSync, type Flow } from '../core/flow';
import { listStep } from '../core/steps';
import { checkPath, deviceNumber, loopNumberFromPath, type DeviceRef } from './options';
import { deviceExists, devicePath, loopNumberOfNode } from './sysfs';
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
  /** st_dev and st_ino of the backing file */
  backingDevice: number;
  backingInode: number;
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
  /** the kernel's sequence number of this binding (0 on kernels before 5.15) */
  diskseq: number;
  /** lo_file_name: a free label, not necessarily the path */
  label: string;
  partitions: PartitionInfo[];
}

/** The number of a loop device given as a number, a path or a handle (checked, never guessed). */
export function resolveNumber(device: DeviceRef): number {
  const binding = bindingOf(device);
  if (binding) return binding.number;
  if (typeof device === 'number') return deviceNumber(device);
  const path = checkPath(device, 'device');
  return loopNumberFromPath(path) ?? loopNumberOfNode(path);
}

function* infoFlow(device: DeviceRef): Flow<LoopInfo> {
  const number = resolveNumber(device);
  const [found] = yield* listStep(number);
  if (found === undefined) {
    const what = deviceExists(number) ? 'is not attached to a file' : 'does not exist (no such loop device)';
    fail('ERR_LOOP_NOT_ATTACHED', `${devicePath(number)} ${what}`, { path: devicePath(number), device: number });
  }
  return found;
}

export function* listFlow(): Flow<LoopInfo[]> {
  return (yield* listStep()).sort((a, b) => a.number - b.number);
}

function* findFlow(file: unknown): Flow<LoopInfo[]> {
  const path = checkPath(file, 'file');
  let stats;
  let real: string;
  try {
    stats = statSync(path);
    real = realpathSync(path);
  } catch (error) {
    throw fromNodeError(error);
  }
  const all = yield* listFlow();
  // Matched by device and inode, so symlinks, relative paths and bind mounts still match.
  return all.filter((info) => {
    // A device described from sysfs alone (no node to open) has no inode: compare paths.
    const fromSysfs = info.backingInode === 0 && info.backingDevice === 0;
    return fromSysfs ? info.backingFile === real : info.backingDevice === stats.dev && info.backingInode === stats.ino;
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
