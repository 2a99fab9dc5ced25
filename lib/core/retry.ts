// The two ways this library tries again, each written once: a bounded retry with jittered
// backoff for a step the kernel calls busy (attach, detach, changes, device removal), and a
// bounded poll for a state to come about (a release, udev's work, another holder's lock).
import { debuglog } from 'node:util';

import { LoopError, fail } from './errors';
import { checkAborted, sleep, type Flow } from './flow';

/** How hard to try again when the kernel says "busy" (times in milliseconds). */
export interface RetryOptions {
  /** total attempts, the first included */
  attempts: number;
  /** the smallest pause between attempts (ms); the first retry is immediate */
  minDelayMs: number;
  /** the largest pause between attempts (ms) */
  maxDelayMs: number;
}

/** What an `onRetry` hook is told before each retry. */
export interface RetryEvent {
  operation: string;
  /** the attempt that just failed (1-based) */
  attempt: number;
  error: LoopError;
  /** the pause before the next attempt (ms) */
  delayMs: number;
}

export type RetryHook = (event: RetryEvent) => void;

/** Whether a failed attempt is worth another: 'retry' after a pause, 'now' without one. */
export type Verdict = 'retry' | 'now' | 'fail';

/**
 * EAGAIN ("still dirty pages", and while udev has the device open: kernel 5.0+, commit
 * 5db470e229e2) and EBUSY come from some 5.x kernels and pass; util-linux retries them 10
 * times, 250 ms apart.
 */
export const retryWhileBusy = (error: LoopError): Verdict => (error.code === 'EAGAIN' || error.code === 'EBUSY' ? 'retry' : 'fail');

const log = debuglog('loopdev');

/** The pause before retry number `retry` (1-based): immediate first, then full jitter. */
export function backoffMs(retry: number, options: RetryOptions, random: () => number = Math.random): number {
  if (retry <= 1 || options.maxDelayMs <= 0) return 0;
  const ceiling = Math.min(options.maxDelayMs, Math.max(options.minDelayMs, 1) * 2 ** (retry - 1));
  return Math.round(options.minDelayMs + random() * Math.max(0, ceiling - options.minDelayMs));
}

export interface RetryPlan {
  operation: string;
  options: RetryOptions | false;
  signal?: AbortSignal;
  onRetry?: RetryHook;
}

/**
 * The bookkeeping of one retry loop: attach and detach write their loop around it, so that
 * the verdict on each failure reads inline (systemd's loop_device_make_internal shape).
 */
export class Retrier {
  /** the attempt under way (1-based) */
  attempt = 1;
  private retries = 0;

  constructor(
    private readonly operation: string,
    private readonly options: RetryOptions | false,
    private readonly onRetry: RetryHook | undefined,
  ) {}

  /**
   * Takes a failed attempt's error and verdict: throws when the failure is final (or the
   * attempts ran out: ERR_LOOP_BUSY with the failure as `cause`), else tells `onRetry` and
   * answers the pause before the next attempt (ms).
   */
  next(error: LoopError, verdict: Verdict): number {
    const { operation, options, attempt } = this;
    if (verdict === 'fail') throw error;
    if (options === false) throw error;
    if (attempt >= options.attempts) {
      fail('ERR_LOOP_BUSY', `${operation} gave up after ${attempt} attempts: ${error.message}`, {
        attempts: attempt,
        cause: error,
        path: error.path,
        device: error.device,
      });
    }
    const delayMs = verdict === 'now' ? 0 : backoffMs(++this.retries, options);
    log('%s: attempt %d failed (%s), retrying in %d ms', operation, attempt, error.message, delayMs);
    this.onRetry?.({ operation, attempt, error, delayMs });
    this.attempt++;
    return delayMs;
  }
}

/**
 * Runs `attempt` until it succeeds, a failure is not worth retrying, or the attempts run
 * out; then the error is ERR_LOOP_BUSY with `attempts` and the last failure as `cause`.
 */
export function* retrying<T>(plan: RetryPlan & { classify(error: LoopError): Verdict }, attempt: (n: number) => Flow<T>): Flow<T> {
  const retry = new Retrier(plan.operation, plan.options, plan.onRetry);
  for (;;) {
    checkAborted(plan.signal);
    try {
      return yield* attempt(retry.attempt);
    } catch (thrown) {
      if (!(thrown instanceof LoopError)) throw thrown;
      yield* sleep(retry.next(thrown, plan.classify(thrown)), plan.signal);
    }
  }
}

/** The longest pause between two looks of poll() (ms). */
const POLL_MAX_PAUSE_MS = 50;

/**
 * Looks with `look` until it answers something other than undefined, and answers that; answers
 * undefined once `waitMs` have passed. The pauses double from 1 ms up to 50 ms: a state that
 * changes at once (the usual case) is seen within a millisecond or two, and a long wait costs
 * some twenty looks a second. An aborted `signal` ends a pause with ERR_LOOP_ABORTED.
 */
export function* poll<T>(waitMs: number, signal: AbortSignal | undefined, look: () => Flow<T | undefined>): Flow<T | undefined> {
  const deadline = Date.now() + waitMs;
  for (let pause = 1; ; pause = Math.min(pause * 2, POLL_MAX_PAUSE_MS)) {
    const seen = yield* look();
    if (seen !== undefined) return seen;
    const left = deadline - Date.now();
    if (left <= 0) return undefined;
    yield* sleep(Math.min(pause, left), signal);
  }
}
