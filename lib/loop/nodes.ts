// Device nodes where /dev has no devtmpfs (many containers): GET_FREE hands out loopN but
// /dev/loopN does not exist, and partitions never get nodes. Create them with mknod, taking
// major:minor from sysfs (the minor is not N when max_part > 0; partitions use major 259).
// Such a /dev is also a snapshot (podman and docker copy the host's nodes at the container's
// start): a partition node there keeps the numbers of a binding long gone, and the kernel
// hands partition minors out anew at every scan, so the node may now open another device's
// partition. A node with other numbers than sysfs's is replaced.
import { addon } from '../core/addon';
import { fail, hasCode } from '../core/errors';
import { call, type Flow } from '../core/flow';
import * as io from '../core/io';
import { splitDev } from './dev-number';
import { devicePath, partitionPath, readDevNumbers, sysBlock } from './sysfs';

const NODE_MODE = 0o660;

type Numbers = { major: number; minor: number };
const same = (a: Numbers, b: Numbers): boolean => a.major === b.major && a.minor === b.minor;

/** What is at `path`: nothing (undefined), or its lstat. */
function* nodeAt(path: string): Flow<import('node:fs').BigIntStats | undefined> {
  try {
    return yield* call(io.lstatExact, path);
  } catch (error) {
    if (hasCode(error, 'ENOENT')) return undefined;
    throw error;
  }
}

/** Makes `path` the node of what sysfs describes at `sysPath`; true if it made or replaced one. */
function* makeNode(path: string, sysPath: string): Flow<boolean> {
  const numbers = yield* readDevNumbers(sysPath);
  if (numbers === undefined) return false;
  const node = yield* nodeAt(path);
  if (node !== undefined && node.isBlockDevice() && same(splitDev(node.rdev), numbers)) return false;
  if (node !== undefined && !node.isBlockDevice()) {
    fail('ERR_LOOP_NOT_LOOP_DEVICE', `${path} is not a block device node; it should be ${numbers.major}:${numbers.minor}`, { path });
  }
  if (node === undefined) {
    try {
      yield* call(addon.mknod, path, NODE_MODE, numbers.major, numbers.minor);
    } catch (error) {
      if (!hasCode(error, 'EEXIST')) throw error; // someone else made it first: fine
    }
    return true;
  }
  // A stale node: a new one beside it, renamed over it (rename(2) replaces it in one step).
  const fresh = `${path}.loopdev-${process.pid}-${Math.random().toString(36).slice(2)}`;
  yield* call(addon.mknod, fresh, NODE_MODE, numbers.major, numbers.minor);
  try {
    yield* call(io.rename, fresh, path);
  } catch (error) {
    // The rename's error is the one to report, whatever the unlink of the new node answers.
    try {
      yield* call(io.unlink, fresh);
    } catch {
      // reported below: the rename's error
    }
    throw error;
  }
  return true;
}

/** Creates /dev/loopN if it is missing (or replaces it when its numbers are not loopN's); true if it did. */
export function* ensureDeviceNode(number: number): Flow<boolean> {
  return yield* makeNode(devicePath(number), sysBlock(number));
}

/** Creates the /dev/loopNpM nodes of the given partitions, or replaces those with other numbers. */
export function* ensurePartitionNodes(number: number, partitions: readonly number[]): Flow<void> {
  for (const partition of partitions) {
    yield* makeNode(partitionPath(number, partition), `${sysBlock(number)}/loop${number}p${partition}`);
  }
}

/**
 * Refuses an fd opened on `path` that is not the device sysfs describes at `sysPath` (a node
 * replaced, or made stale, between the check and the open).
 */
export function* expectNodeOf(fd: number, path: string, sysPath: string): Flow<void> {
  const numbers = yield* readDevNumbers(sysPath);
  const stats = yield* call(io.fstatExact, fd);
  const opened = splitDev(stats.rdev);
  if (numbers !== undefined && stats.isBlockDevice() && same(opened, numbers)) return;
  fail(
    'ERR_LOOP_NOT_LOOP_DEVICE',
    numbers === undefined
      ? `${path} is gone from sysfs (released meanwhile?)`
      : `${path} opened ${stats.isBlockDevice() ? `device ${opened.major}:${opened.minor}` : 'something that is not a block device'}, not ${numbers.major}:${numbers.minor} as sysfs says`,
    { path },
  );
}
