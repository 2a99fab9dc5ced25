// detach(): LOOP_CLR_FD, retried while the kernel says "busy", then an honest answer about
// whether the device is really unbound (the kernel defers it while anyone holds it open).
import { bindingOf, type Binding } from './binding';
import { LoopError, stepFailure } from '../core/errors';
import { checkAborted, nativeStep, runAsync, runSync, sleep, type Flow } from '../core/flow';
import { resolveNumber } from './inspect';
import { checkPath, DEFAULT_DETACH_WAIT_MS, planDetach, waitOption, type DetachOptions, type DetachPlan, type DeviceRef } from './options';
import { mountPointsOf } from './mountinfo';
import { native, type DetachOutcome, type DetachRequest } from '../core/addon';
import { Retrier, type Verdict } from '../core/retry';
import { decodeDetach, detachEffect, detachLater, detachNow, packPartitions } from '../core/steps';
import { deviceExists, devicePath, isStillBound } from './sysfs';

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

/** Everything one detach settles before its first attempt (and what that attempt asks the addon). */
interface DetachJob extends DetachRequest {
  readonly plan: DetachPlan;
  readonly binding: Binding | undefined;
  readonly packed: Float64Array | undefined;
}

function prepare(device: DeviceRef, options: DetachOptions | undefined): DetachJob {
  const plan = planDetach(options);
  const binding = bindingOf(device);
  const number = binding?.number ?? resolveNumber(device);
  // The caller's own path goes to the addon, which checks it is a loop device before any ioctl.
  const path = binding?.path ?? (typeof device === 'string' ? checkPath(device, 'device') : devicePath(number));
  const partitions = binding?.partitions ?? [];
  return {
    plan,
    binding,
    packed: packPartitions(partitions),
    path,
    named: binding === undefined && typeof device === 'string',
    number,
    fd: binding?.fd ?? -1,
    checkIdentity: binding !== undefined,
    diskseq: binding?.diskseq ?? 0,
    backingDevice: binding?.backingDevice ?? 0,
    backingInode: binding?.backingInode ?? 0,
    partitions,
  };
}

/** A handle that already let go: nothing to do but say whether the device is gone. */
function alreadyReleased(job: DetachJob, binding: Binding): DetachResult {
  return { path: job.path, wasBound: false, released: !isStillBound(job.number, binding.diskseq) };
}

// EAGAIN ("still dirty pages") and EBUSY come from some 5.x kernels and pass.
const verdict = (error: LoopError): Verdict => (error.code === 'EAGAIN' || error.code === 'EBUSY' ? 'retry' : 'fail');

/** The pause before the next attempt; a final failure is thrown, in the user's words where the errno alone would mislead. */
function nextPause(job: DetachJob, retry: Retrier, error: LoopError): number {
  try {
    return retry.next(error, verdict(error));
  } catch (final) {
    // ENOENT on /dev/loopN with no loopN in sysfs: there is no such device (as info() says), not a missing file.
    if (final === error && error.syscall === 'open' && error.code === 'ENOENT' && error.path === devicePath(job.number) && !deviceExists(job.number)) {
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

/** The kernel accepted: the handle is spent (its fd closed by the addon). The result, unless the release is still pending. */
function accepted(job: DetachJob, result: DetachOutcome): DetachResult | undefined {
  const { binding } = job;
  if (binding) {
    binding.released = true;
    binding.fd = -1;
  }
  return result.released ? { path: job.path, wasBound: result.cleared, released: true } : undefined;
}

/** The result of an accepted detach whose release the kernel deferred: waits (bounded) for it. */
function* deferred(job: DetachJob, result: DetachOutcome): Flow<DetachResult> {
  const released = yield* waitReleased(job.number, result.diskseq, job.plan.waitMs, job.plan.signal);
  return { path: job.path, wasBound: result.cleared, released };
}

/**
 * Attempts to unbind until one is accepted or the Retrier gives up, then the result.
 * `failed`: the first attempt, made directly by detachSync(), failed with this.
 */
function* complete(job: DetachJob, failed?: LoopError): Flow<DetachResult> {
  const { plan } = job;
  const retry = new Retrier('detach', plan.retry, plan.onRetry);
  let error = failed;
  let result: DetachOutcome | undefined;
  while (result === undefined) {
    if (error !== undefined) yield* sleep(nextPause(job, retry, error), plan.signal);
    checkAborted(plan.signal);
    try {
      result = decodeDetach((yield detachEffect(job, job.packed)) as Float64Array);
    } catch (thrown) {
      if (!(thrown instanceof LoopError)) throw thrown;
      error = thrown;
    }
  }
  return accepted(job, result) ?? (yield* deferred(job, result));
}

export function* detachFlow(device: DeviceRef, options?: DetachOptions): Flow<DetachResult> {
  const job = prepare(device, options);
  if (job.binding?.released) return alreadyReleased(job, job.binding);
  return yield* complete(job);
}

/** What is left after a first attempt made outside the flow: nothing (the result), or the rest of the flow. */
function afterFirstAttempt(job: DetachJob, outcome: DetachOutcome | LoopError): DetachResult | Flow<DetachResult> {
  if (outcome instanceof LoopError) return complete(job, outcome);
  return accepted(job, outcome) ?? deferred(job, outcome);
}

const isFlow = (next: DetachResult | Flow<DetachResult>): next is Flow<DetachResult> => typeof (next as Flow<DetachResult>).next === 'function';

/** Unbinds a loop device (path, number or handle). Detaching an unbound device is not an error. */
export async function detach(device: DeviceRef, options?: DetachOptions): Promise<DetachResult> {
  const job = prepare(device, options);
  if (job.binding?.released) return alreadyReleased(job, job.binding);
  checkAborted(job.plan.signal);
  // The first attempt through the step's Promise form, as detachSync() makes it with the plain call.
  let outcome: DetachOutcome | LoopError;
  try {
    outcome = decodeDetach(await detachLater(job, job.packed));
  } catch (thrown) {
    outcome = stepFailure(thrown);
  }
  const next = afterFirstAttempt(job, outcome);
  return isFlow(next) ? runAsync(next) : next;
}

/** Sync form of {@link detach}. */
export function detachSync(device: DeviceRef, options?: DetachOptions): DetachResult {
  const job = prepare(device, options);
  if (job.binding?.released) return alreadyReleased(job, job.binding);
  checkAborted(job.plan.signal);
  // The first attempt as a plain call, as attachSync() makes it; anything else goes on in the flow.
  let outcome: DetachOutcome | LoopError;
  try {
    outcome = detachNow(job, job.packed);
  } catch (thrown) {
    outcome = stepFailure(thrown);
  }
  const next = afterFirstAttempt(job, outcome);
  return isFlow(next) ? runSync(next) : next;
}

/** What close() may be told. */
export interface CloseOptions {
  /** wait until the kernel has really unbound the device: false, or a timeout (ms, default 1000) */
  wait?: false | number;
}

/**
 * Lets go of a handle's device. A held fd is closed without LOOP_CLR_FD: with AUTOCLEAR the
 * kernel unbinds the device at its last close. A device without a held fd is detached. Both
 * wait, bounded, for the release, so that the end of an `await using` block means the device
 * is gone whenever that can be known.
 */
export function* closeFlow(device: DeviceRef, options?: CloseOptions): Flow<DetachResult> {
  const what = letGo(device);
  if (what === 'detach') return yield* detachFlow(device, options);
  if (what === 'done') return alreadyLetGo(device);
  yield nativeStep('closeOwned', what.fd);
  return yield* afterClose(what, waitOption(options?.wait, DEFAULT_DETACH_WAIT_MS));
}

/** Lets go of a handle (see closeFlow): a held fd is closed through the Promise form, at once. */
export async function close(device: DeviceRef, options?: CloseOptions): Promise<DetachResult> {
  const what = letGo(device);
  if (what === 'detach') return detach(device, options);
  if (what === 'done') return alreadyLetGo(device);
  await native.closeOwnedAsync(what.fd);
  const waitMs = waitOption(options?.wait, DEFAULT_DETACH_WAIT_MS);
  return isStillBound(what.number, what.diskseq) ? runAsync(afterClose(what, waitMs)) : closed(what, true);
}

/** Sync form of {@link close} (the hold cycle's hot path: a plain call). */
export function closeSync(device: DeviceRef, options?: CloseOptions): DetachResult {
  const what = letGo(device);
  if (what === 'detach') return detachSync(device, options);
  if (what === 'done') return alreadyLetGo(device);
  native.closeOwned(what.fd);
  const waitMs = waitOption(options?.wait, DEFAULT_DETACH_WAIT_MS);
  return isStillBound(what.number, what.diskseq) ? runSync(afterClose(what, waitMs)) : closed(what, true);
}

interface HeldFd {
  fd: number;
  number: number;
  path: string;
  diskseq: number;
}

const closed = (held: HeldFd, released: boolean): DetachResult => ({ path: held.path, wasBound: true, released });

/**
 * After the held fd's close. Usually it was the last opener and the device is gone. When
 * someone else has it open (udev probes every device that changed or that a writer closed,
 * blkid), the kernel unbinds it at their close: wait for that, bounded. A mount holds it on
 * purpose, until the unmount: nothing to wait for.
 */
function* afterClose(held: HeldFd, waitMs: number): Flow<DetachResult> {
  if (!isStillBound(held.number, held.diskseq)) return closed(held, true);
  if (waitMs === 0 || mountPointsOf(held.number).length > 0) return closed(held, false);
  return closed(held, yield* waitReleased(held.number, held.diskseq, waitMs));
}

/** A handle that let go before (or none): whether its device is gone. */
function alreadyLetGo(device: DeviceRef): DetachResult {
  const binding = bindingOf(device);
  const number = binding?.number ?? resolveNumber(device);
  return { path: binding?.path ?? devicePath(number), wasBound: false, released: !isStillBound(number, binding?.diskseq ?? 0) };
}

/**
 * What letting go of a handle takes: nothing ('done'), a detach ('detach': no held fd), or
 * closing its held fd (taken from the handle here, so that it is closed once).
 */
function letGo(device: DeviceRef): 'done' | 'detach' | HeldFd {
  const binding = bindingOf(device);
  if (binding === undefined || binding.released) return 'done';
  if (binding.fd < 0) return 'detach';
  const held = { fd: binding.fd, number: binding.number, path: binding.path, diskseq: binding.diskseq };
  binding.released = true;
  binding.fd = -1;
  return held;
}
