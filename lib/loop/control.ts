// /dev/loop-control: one fd per thread, opened on first use, owned by the addon (closed when
// the thread's environment is torn down).
import { addon } from '../core/addon';
import { LoopError, fail, hasCode } from '../core/errors';
import { call, runAsync, runSync, type Flow } from '../core/flow';
import { deviceNumber } from './options';
import { retrying, type RetryHook, type RetryOptions } from '../core/retry';
import { deviceExists } from './sysfs';

// Index 0: the one the sync forms (and other callers) use; 1 + n: attach's lane n, each an
// open file of its own, because flock excludes open files (see LANES in attach.ts).
const controlFds: number[] = [];

/** The control fd of attach's lane `lane` (-1: the shared one) if it is open. */
export const openedControl = (lane = -1): number | undefined => controlFds[lane + 1];

/** The control fd of attach's lane `lane` (-1: the shared one), opened on first use; explains what is missing when it cannot be. */
export function* control(lane = -1): Flow<number> {
  const cached = controlFds[lane + 1];
  if (cached !== undefined) return cached;
  try {
    const fd = yield* call(addon.openControl);
    controlFds[lane + 1] = fd;
    return fd;
  } catch (error) {
    if (error instanceof LoopError && hasCode(error, 'ENOENT', 'EACCES', 'EPERM', 'ENXIO', 'ENODEV')) {
      fail(
        'ERR_LOOP_NO_CONTROL',
        `cannot open /dev/loop-control (${error.code}): loop devices need root or CAP_SYS_ADMIN, ` +
          'and the loop module (modprobe loop); in a container, run it privileged or pass /dev/loop-control in',
        { path: '/dev/loop-control', errno: error.errno, syscall: 'open', cause: error },
      );
    }
    throw error;
  }
}

/** Creates loopN if it does not exist yet (LOOP_CTL_ADD); EEXIST is fine. */
export function* ensureDevice(number: number): Flow<void> {
  if (yield* deviceExists(number)) return;
  const fd = yield* control();
  try {
    yield* call(addon.addDevice, fd, number);
  } catch (error) {
    if (!hasCode(error, 'EEXIST')) throw error;
  }
}

export interface RemoveOptions {
  retry?: Partial<RetryOptions> | false;
  onRetry?: RetryHook;
  signal?: AbortSignal;
}

function* addFlow(number: unknown): Flow<number> {
  const n = deviceNumber(number);
  const fd = yield* control();
  return yield* call(addon.addDevice, fd, n);
}

function* removeFlow(number: unknown, options: RemoveOptions = {}): Flow<void> {
  const n = deviceNumber(number);
  const fd = yield* control();
  const retry = options.retry === false ? false : { attempts: 10, minDelayMs: 10, maxDelayMs: 250, ...options.retry };
  yield* retrying(
    {
      operation: 'removeDevice',
      options: retry,
      signal: options.signal,
      onRetry: options.onRetry,
      // EBUSY: bound or still open (udev probing it after a detach, for a moment).
      classify: (error) => (error.code === 'EBUSY' ? 'retry' : 'fail'),
    },
    function* () {
      yield* call(addon.removeDevice, fd, n);
    },
  );
}

/** Creates the loop device `number` (LOOP_CTL_ADD). Resolves to its number; EEXIST if it exists. */
export const addDevice = (number: number): Promise<number> => runAsync(addFlow(number));
/** Sync form of {@link addDevice}. */
export const addDeviceSync = (number: number): number => runSync(addFlow(number));
/** Removes the unbound loop device `number` (LOOP_CTL_REMOVE), retrying while it is briefly busy. */
export const removeDevice = (number: number, options?: RemoveOptions): Promise<void> => runAsync(removeFlow(number, options));
/** Sync form of {@link removeDevice}. */
export const removeDeviceSync = (number: number, options?: RemoveOptions): void => runSync(removeFlow(number, options));
