// Mounting a bound device: the node to mount (the device or one of its partitions), its
// filesystem type read from the superblock, and mount(2) itself.
import { constants } from 'node:fs';
import { basename } from 'node:path';

import { addon } from '../core/addon';
import { fail } from '../core/errors';
import { call, checkAborted, type Flow } from '../core/flow';
import * as io from '../core/io';
import { ensurePartitionNodes, expectNodeOf } from '../loop/nodes';
import { partitionPath, partitionsOf, sysBlock } from '../loop/sysfs';
import { detectFsType } from './fstype';
import { explainMountError, partitionHint, whyNoPartitions } from './hints';
import type { MountFlags } from './options';

/**
 * The node to mount: the device, or its partition, which must exist in sysfs; its node is made
 * where /dev has none, or remade where it has other numbers (see loop/nodes.ts).
 */
export function* sourceOf(device: { readonly number: number; readonly path: string }, partition: number | null): Flow<string> {
  if (partition === null) return device.path;
  const number = device.number;
  if (yield* call(io.exists, `${sysBlock(number)}/loop${number}p${partition}`)) {
    yield* ensurePartitionNodes(number, [partition]);
    return partitionPath(number, partition);
  }
  const present = yield* partitionsOf(number);
  const has = present.length > 0 ? `it has ${present.map((p) => partitionPath(number, p)).join(', ')}` : `it has no partitions (${yield* whyNoPartitions(number, device.path)})`;
  fail('ERR_LOOP_NO_PARTITION', `${device.path} has no partition ${partition}: ${has}`, {
    path: partitionPath(number, partition),
    device: number,
  });
}

/** The filesystem type on `fd` (the node `source` of loop device `number`), or ERR_LOOP_UNKNOWN_FSTYPE. */
function* detectOn(fd: number, source: string, number: number, wholeDevice: boolean): Flow<string> {
  const type = yield* io.parseReads(fd, detectFsType);
  if (type !== null) return type;
  const hint = wholeDevice ? yield* partitionHint(fd, number) : '';
  fail(
    'ERR_LOOP_UNKNOWN_FSTYPE',
    `no known filesystem on ${source} (looked for ext2/3/4, xfs, btrfs, vfat, squashfs, erofs); pass fstype to name it.${hint}`,
    { path: source, device: number },
  );
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
  /** unmounted (lazily) when this thread ends, unless unmounted before (the testing fixture) */
  unmountAtExit?: boolean;
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
    // What was opened is the device or partition sysfs names, not whatever a node there pointed at.
    const number = request.deviceNumber;
    const whole = !new RegExp(`^/dev/loop${number}p\\d+$`).test(request.source);
    yield* expectNodeOf(fd, request.source, whole ? sysBlock(number) : `${sysBlock(number)}/${basename(request.source)}`);
    const fstype = request.fstype ?? (yield* detectOn(fd, request.source, number, whole));
    if (beforeMount) yield* beforeMount();
    checkAborted(request.signal);
    try {
      yield* call(addon.mount, request.source, request.target, fstype, request.flags, request.data, request.unmountAtExit ?? false);
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
