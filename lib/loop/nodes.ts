// Device nodes where /dev has no devtmpfs (many containers): GET_FREE hands out loopN but
// /dev/loopN does not exist, and partitions never get nodes. Create them with mknod, taking
// major:minor from sysfs (the minor is not N when max_part > 0; partitions use major 259).
import { addon } from '../core/addon';
import { hasCode } from '../core/errors';
import { call, type Flow } from '../core/flow';
import * as io from '../core/io';
import { devicePath, partitionPath, readDevNumbers, sysBlock } from './sysfs';

const NODE_MODE = 0o660;

function* makeNode(path: string, sysPath: string): Flow<boolean> {
  if (yield* call(io.exists, path)) return false;
  const numbers = yield* readDevNumbers(sysPath);
  if (numbers === undefined) return false;
  try {
    yield* call(addon.mknod, path, NODE_MODE, numbers.major, numbers.minor);
  } catch (error) {
    if (!hasCode(error, 'EEXIST')) throw error; // someone else made it first: fine
  }
  return true;
}

/** Creates /dev/loopN if it is missing; true if it was created. */
export function* ensureDeviceNode(number: number): Flow<boolean> {
  return yield* makeNode(devicePath(number), sysBlock(number));
}

/** Creates missing /dev/loopNpM nodes for the given partitions. */
export function* ensurePartitionNodes(number: number, partitions: readonly number[]): Flow<void> {
  for (const partition of partitions) {
    yield* makeNode(partitionPath(number, partition), `${sysBlock(number)}/loop${number}p${partition}`);
  }
}
