// detach(): LOOP_CLR_FD, retried while the kernel says "busy", then an honest answer about
// whether the device is really unbound (the kernel defers it while anyone holds it open).
// close(): lets go of a handle, by closing its held fd or by detaching.
import { addon, DETACH, packPartitions, ResultArrays, u64, type U64 } from '../core/addon';
import { LoopError } from '../core/errors';
import { call, checkAborted, runAsync, runSync, sleep, type Flow } from '../core/flow';
import { poll, Retrier, retryWhileBusy } from '../core/retry';
import { bindingOf, type Binding } from './binding';
import { resolveNumber } from './inspect';
import { mountPointsOf } from './mountinfo';
import { checkPath, planDetach, type DetachOptions, type DetachPlan, type DeviceRef } from './options';
import { deviceExists, devicePath, isStillBound } from './sysfs';

/** What detach() (or close()) did. */
export interface DetachResult {
  path: string;
  /**
   * true: the device was bound and this call's LOOP_CLR_FD unbound it (or, while someone
   * else holds it, marked it to be unbound at their last close). false: it was not bound
   * (already detached), so there was nothing to do.
   */
  wasBound: boolean;
  /**
   * true: the device is unbound now, as sysfs says (or was not bound). false: the kernel
   * accepted the detach but the device is still open elsewhere (a mount, another fd) and
   * will be unbound at the last close.
   */
  released: boolean;
}

/** What close() may be told. */
export interface CloseOptions {
  /** wait until the kernel has really unbound the device: false, or a timeout (ms, default 1000) */
  wait?: false | number;
}

const RESULTS = new ResultArrays(DETACH.count);

/** Unbinds a loop device (path, number or handle). Detaching an unbound device is not an error. */
export const detach = (device: DeviceRef, options?: DetachOptions): Promise<DetachResult> => runAsync(detachFlow(device, options));
/** Sync form of {@link detach}. */
export const detachSync = (device: DeviceRef, options?: DetachOptions): DetachResult => runSync(detachFlow(device, options));

/** Everything one detach settles before its first attempt. */
interface DetachJob {
  readonly plan: DetachPlan;
  /** the handle's binding, when detaching a handle */
  readonly binding: Binding | undefined;
  readonly number: number;
  readonly path: string;
  /** the caller named the device by this path of theirs (else the addon opens /dev/loopN) */
  readonly named: boolean;
  readonly partitions: Float64Array | undefined;
}

function prepare(device: DeviceRef, plan: DetachPlan, binding: Binding | undefined, number: number): DetachJob {
  // The caller's own path goes to the addon, which checks it is a loop device before any ioctl.
  const named = binding === undefined && typeof device === 'string';
  const path = named ? checkPath(device, 'device') : (binding?.path ?? devicePath(number));
  return { plan, binding, number, path, named, partitions: packPartitions(binding?.partitions ?? []) };
}

export function* detachFlow(device: DeviceRef, options?: DetachOptions): Flow<DetachResult> {
  const plan = planDetach(options);
  const binding = bindingOf(device);
  // A handle knows its number (no generator on the common path); a path may need a stat.
  const job = prepare(device, plan, binding, binding?.number ?? (yield* resolveNumber(device)));
  // Let go of before (by close(), or a detach whose release was still under way): answers
  // whether it is gone now, waiting as a detach does.
  if (binding?.released) return { path: job.path, wasBound: false, released: yield* waitReleased(job.number, binding.diskseq, binding.partscan, plan.waitMs, plan.signal) };
  let retry: Retrier | undefined; // made at the first failure: most detaches have none
  for (;;) {
    checkAborted(plan.signal);
    const out = RESULTS.take();
    let cleared: boolean, released: boolean, diskseq: U64, partscan: boolean;
    // The step takes the held fd over: the handle gives it up first, so that a close() or
    // another detach meanwhile can never close it a second time.
    const heldFd = binding?.fd ?? -1;
    if (binding !== undefined) binding.fd = -1;
    try {
      // A handle is checked to still be its binding (diskseq, or backing device and inode),
      // so that a stranger's device that took the same number is never cleared.
      yield* call(
        addon.detach,
        job.number,
        job.named ? job.path : undefined,
        heldFd,
        binding !== undefined,
        binding?.diskseq ?? 0,
        binding?.backingDevice ?? 0,
        binding?.backingInode ?? 0,
        job.partitions,
        out,
      );
      cleared = out[DETACH.cleared] === 1;
      released = out[DETACH.released] === 1;
      diskseq = u64(out, DETACH.diskseq);
      partscan = out[DETACH.partscan] === 1;
    } catch (error) {
      // Failed before LOOP_CLR_FD: the addon owns the held fd again, and the handle keeps it.
      if (heldFd >= 0) yield* giveBack(binding!, heldFd);
      if (!(error instanceof LoopError)) throw error;
      retry ??= new Retrier('detach', plan.retry, plan.onRetry);
      yield* sleep(yield* nextPause(job, retry, error), plan.signal);
      continue;
    } finally {
      RESULTS.give(out);
    }
    // The kernel accepted: the handle is spent (the addon closed its held fd).
    if (binding !== undefined) binding.released = true;
    if (released) return { path: job.path, wasBound: cleared, released: true };
    // Someone else still has it open: the kernel unbinds it at their close, and drops the
    // partitions of a PARTSCAN device after it leaves sysfs's loop/ (the addon reads PARTSCAN
    // before LOOP_CLR_FD, so it knows unless the device was unbound already; a handle knows it).
    const withPartitions = partscan || (binding?.partscan ?? true);
    return { path: job.path, wasBound: cleared, released: yield* waitReleased(job.number, diskseq, withPartitions, plan.waitMs, plan.signal) };
  }
}

/** A held fd back in the handle after a failed step; if the handle was let go meanwhile (a close() by path), it is closed instead. */
function* giveBack(binding: Binding, fd: number): Flow<void> {
  if (!binding.released && binding.fd < 0) binding.fd = fd;
  else yield* call(addon.closeOwned, fd);
}

/** The pause before the next attempt; a final failure is thrown, in the user's words where the errno alone would mislead. */
function* nextPause(job: DetachJob, retry: Retrier, error: LoopError): Flow<number> {
  try {
    return retry.next(error, retryWhileBusy(error));
  } catch (final) {
    // ENOENT on /dev/loopN with no loopN in sysfs: there is no such device (as info() says), not a missing file.
    if (final === error && error.syscall === 'open' && error.code === 'ENOENT' && error.path === devicePath(job.number) && !(yield* deviceExists(job.number))) {
      throw new LoopError(`${error.path} does not exist (no such loop device)`, {
        code: error.code,
        errno: error.errno,
        syscall: error.syscall,
        path: error.path,
        device: job.number,
        cause: error,
      });
    }
    throw final;
  }
}

/** Waits (bounded) until the binding is gone (see isStillBound); polls sysfs, which opens nothing. */
export function* waitReleased(number: number, diskseq: U64, partscan: boolean, waitMs: number, signal?: AbortSignal): Flow<boolean> {
  const released = yield* poll(waitMs, signal, function* () {
    return (yield* isStillBound(number, diskseq, partscan)) ? undefined : true;
  });
  return released === true;
}

/** Lets go of a handle (see closeFlow). */
export const close = (device: DeviceRef, options?: CloseOptions): Promise<DetachResult> => runAsync(closeFlow(device, options));
/** Sync form of {@link close}. */
export const closeSync = (device: DeviceRef, options?: CloseOptions): DetachResult => runSync(closeFlow(device, options));

/**
 * Lets go of a handle's device. A held fd is closed without LOOP_CLR_FD: with AUTOCLEAR the
 * kernel unbinds the device at its last close. A device without a held fd is detached. Both
 * wait, bounded, for the release, so that the end of an `await using` block means the device
 * is gone whenever that can be known.
 */
export function* closeFlow(device: DeviceRef, options?: CloseOptions): Flow<DetachResult> {
  // Checked before anything is let go: close takes detach's options.
  const plan = planDetach(options);
  const binding = bindingOf(device);
  if (binding === undefined || binding.released || binding.fd < 0) return yield* detachFlow(device, options);
  const { number, path, diskseq, fd, partscan } = binding;
  // Taken from the handle first, so that it is closed once whatever happens next.
  binding.released = true;
  binding.fd = -1;
  // Usually ours was the last close, and its release, partitions included, was over when
  // close() returned. When someone else has it open (udev probes every device that changed or
  // that a writer closed; blkid), the kernel unbinds it at their close: wait for that, bounded,
  // partitions included. A mount holds it on purpose, until the unmount: nothing to wait for.
  // Their close may be under way as we look: the kernel takes sysfs's loop/ away before it
  // drops the partitions of a PARTSCAN device, so those count as the binding still there.
  const bound = yield* call(addon.closeHeld, fd, number);
  if ((!bound && !partscan) || !(yield* isStillBound(number, diskseq, partscan))) return { path, wasBound: true, released: true };
  if (plan.waitMs === 0 || (yield* mountPointsOf(number)).length > 0) return { path, wasBound: true, released: false };
  return { path, wasBound: true, released: yield* waitReleased(number, diskseq, partscan, plan.waitMs, plan.signal) };
}
