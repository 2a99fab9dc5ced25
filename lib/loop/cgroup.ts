// A container given some loop devices (docker or podman `--device /dev/loopN`, not
// `--privileged`): its device cgroup refuses every other loop device, while LOOP_CTL_GET_FREE
// answers for the whole machine, so the free device it hands out may be one the container cannot
// open, or make a node for (EPERM either way). The attach then takes a free device it can open
// among the nodes in /dev; where there is none, ERR_LOOP_DEVICE_DENIED says what to pass.
import { fail, type LoopError } from '../core/errors';
import { call, type Flow } from '../core/flow';
import * as io from '../core/io';
import { splitDev } from './dev-number';
import { devicePath, isBound, readDevNumbers, sysBlock } from './sysfs';

/** Whether `error` is a refusal to open (or make a node for) a loop device: the device cgroup's EPERM. */
export function refusedDevice(error: LoopError): boolean {
  return error.code === 'EPERM' && (error.stage === 'openDevice' || error.syscall === 'mknod');
}

/**
 * A free loop device, other than those in `refused`, whose node in /dev is that device and opens
 * here (the lowest number first); undefined when there is none.
 */
export function* openableFreeDevice(refused: ReadonlySet<number>): Flow<number | undefined> {
  const numbers = (yield* call(io.readdir, '/dev'))
    .map((name) => /^loop(\d+)$/.exec(name))
    .filter((match) => match !== null)
    .map((match) => Number(match[1]))
    .filter((number) => !refused.has(number))
    .sort((a, b) => a - b);
  for (const number of numbers) {
    if (yield* isBound(number)) continue;
    const expected = yield* readDevNumbers(sysBlock(number));
    let stats;
    try {
      stats = yield* call(io.stat, devicePath(number));
    } catch {
      continue;
    }
    const actual = splitDev(stats.rdev);
    if (expected === undefined || !stats.isBlockDevice() || actual.major !== expected.major || actual.minor !== expected.minor) continue;
    if (yield* call(io.opens, devicePath(number))) return number;
  }
  return undefined;
}

/** ERR_LOOP_DEVICE_DENIED for `error` (see refusedDevice), saying what lets the container use loop devices. */
export function deviceDenied(error: LoopError, named: boolean): never {
  const path = error.path ?? (error.device === undefined ? '/dev/loop?' : devicePath(error.device));
  const which = named ? path : `${path}, the free device the kernel chose, nor any other free loop device in /dev`;
  fail(
    'ERR_LOOP_DEVICE_DENIED',
    `this process may not open ${which} (EPERM): a container gets only the devices it was given. ` +
      `Give it every loop device with --device-cgroup-rule='b 7:* rmw' and --device /dev/loop-control ` +
      `(podman also needs --cap-add MKNOD), pass free devices with --device /dev/loopN, or run it --privileged`,
    { errno: error.errno, syscall: error.syscall, path, device: error.device, cause: error },
  );
}
