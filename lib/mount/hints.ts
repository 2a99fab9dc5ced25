// What mount() and unmount() say when something fails: the kernel's errno alone (EBUSY, EINVAL)
// rarely tells a user what to do, so each message says what was found and what would help.
import { constants } from 'node:fs';

import { addon } from '../core/addon';
import { LoopError } from '../core/errors';
import { call, type Flow } from '../core/flow';
import * as io from '../core/io';
import { readNumber, sysBlock } from '../loop/sysfs';
import { readPartitionTable, whyNoTable } from '../partitions/table';
import type { MountRequest } from './source';

/** What the device's first sectors say about its (missing) partition table. */
export function* whyNoPartitions(number: number, path: string): Flow<string> {
  let fd = -1;
  try {
    fd = yield* call(addon.openOwned, path, constants.O_RDONLY, false);
    const size = (yield* readNumber(`${sysBlock(number)}/size`)) * 512;
    const sectorSize = (yield* readNumber(`${sysBlock(number)}/queue/logical_block_size`)) || 512;
    return yield* io.parseReads(fd, (read) => whyNoTable(read, size, sectorSize));
  } catch {
    return 'its first sectors could not be read';
  } finally {
    if (fd >= 0) yield* call(addon.closeOwned, fd);
  }
}

/** For a whole device with no filesystem: the partitions its table names, to pass as `partition` (or nothing). */
export function* partitionHint(fd: number, number: number): Flow<string> {
  const sectorSize = (yield* readNumber(`${sysBlock(number)}/queue/logical_block_size`)) || 512;
  const size = (yield* readNumber(`${sysBlock(number)}/size`)) * 512;
  try {
    const table = yield* io.parseReads(fd, (read) => readPartitionTable(read, sectorSize, size));
    if (table !== null) return ` It holds ${table.type === 'gpt' ? 'a GPT' : 'an MBR'} with partitions ${table.partitions.map((p) => p.number).join(', ')}: pass partition.`;
  } catch {
    // no hint then
  }
  return '';
}

export const mountedAtText = (points: readonly string[]): string => (points.length === 0 ? ' (not mounted)' : ` (mounted at ${points.join(', ')})`);

export function explainMountError(error: unknown, request: MountRequest, fstype: string): unknown {
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

export function explainUnmountError(error: unknown, target: string): unknown {
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
