// detach(): LOOP_CLR_FD, retried while the kernel says "busy", then an honest answer about
// whether the device is really unbound (the kernel defers it while anyone holds it open).
import { bindingOf } from './binding';
import { LoopError } from './errors';
import { checkAborted, nativeStep, runAsync, runSync, sleep, type Flow } from './flow';
import { resolveNumber } from './inspect';
import { checkPath, planDetach, type DetachOptions, type DeviceRef } from './options';
import type { DetachOutcome, DetachRequest } from './native';
import { Retrier } from './retry';
import { decodeDetach, detachEffect, packPartitions } from './steps';
import { devicePath, isStillBound } from './sysfs';

/** What detach() did. */
export interface DetachResult {
  path: string;
  /**
   * true: the device was bound and this call's LOOP_CLR_FD unbound it (or, while someone
   * else holds it, marked it to be unbound at their last close). false: it was not bound
   * (already detached), so there was nothing to do.
   */
  wasBound: boolean;
  /**
   * true: the device is unbound now (or was not bound). false: the kernel accepted the
   * detach but the device is still open elsewhere (a mount, another fd) and will be
   * unbound at the last close.
   */
  released: boolean;
}

/** Waits (bounded) until the binding is gone; polls sysfs, which opens nothing. */
function* waitReleased(number: number, diskseq: number, waitMs: number, signal?: AbortSignal): Flow<boolean> {
  const deadline = Date.now() + waitMs;
  for (let pause = 1; ; pause = Math.min(pause * 2, 50)) {
    if (!isStillBound(number, diskseq)) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    yield* sleep(Math.min(pause, left), signal);
  }
}

export function* detachFlow(device: DeviceRef, options?: DetachOptions): Flow<DetachResult> {
  const plan = planDetach(options);
  const binding = bindingOf(device);
  const number = resolveNumber(device);
  // The caller's own path goes to the addon, which checks it is a loop device before any ioctl.
  const path = binding?.path ?? (typeof device === 'string' ? checkPath(device, 'device') : devicePath(number));
  if (binding?.released) {
    return { path, wasBound: false, released: !isStillBound(number, binding.diskseq) };
  }

  const request: DetachRequest = {
    path,
    number,
    fd: binding?.fd ?? -1,
    checkIdentity: binding !== undefined,
    diskseq: binding?.diskseq ?? 0,
    backingDevice: binding?.backingDevice ?? 0,
    backingInode: binding?.backingInode ?? 0,
    partitions: binding?.partitions ?? [],
  };
  const packed = packPartitions(request.partitions);
  // Made at the first failure: the usual detach succeeds at once.
  let retry: Retrier | undefined;
  let result: DetachOutcome | undefined;
  while (result === undefined) {
    checkAborted(plan.signal);
    try {
      result = decodeDetach((yield detachEffect(request, packed)) as Float64Array);
    } catch (thrown) {
      if (!(thrown instanceof LoopError)) throw thrown;
      retry ??= new Retrier('detach', plan.retry, plan.onRetry);
      // EAGAIN ("still dirty pages") and EBUSY come from some 5.x kernels and pass.
      yield* sleep(retry.next(thrown, thrown.code === 'EAGAIN' || thrown.code === 'EBUSY' ? 'retry' : 'fail'), plan.signal);
    }
  }
  if (binding) {
    binding.released = true;
    binding.fd = -1; // closed by the addon
  }
  if (result.released) return { path, wasBound: result.cleared, released: true };
  return { path, wasBound: result.cleared, released: yield* waitReleased(number, result.diskseq, plan.waitMs, plan.signal) };
}

/**
 * Lets go of a handle's device. A held fd is closed without LOOP_CLR_FD: with AUTOCLEAR the
 * kernel unbinds the device at its last close (at once, unless a mount or another fd still
 * holds it). A device without a held fd is detached.
 */
export function* closeFlow(device: DeviceRef): Flow<void> {
  const binding = bindingOf(device);
  if (binding === undefined || binding.released) return;
  if (binding.fd < 0) {
    // As detach(): wait (bounded) for a holder to let go, so that the end of an
    // `await using` block means the device is gone whenever that can be known.
    yield* detachFlow(device);
    return;
  }
  const fd = binding.fd;
  binding.released = true;
  binding.fd = -1;
  // Closing the last fd of an AUTOCLEAR device unbinds it (yielded directly: the hold cycle's hot path).
  yield nativeStep('closeOwned', fd);
}

/** Unbinds a loop device (path, number or handle). Detaching an unbound device is not an error. */
export const detach = (device: DeviceRef, options?: DetachOptions): Promise<DetachResult> => runAsync(detachFlow(device, options));
/** Sync form of {@link detach}. */
export const detachSync = (device: DeviceRef, options?: DetachOptions): DetachResult => runSync(detachFlow(device, options));
