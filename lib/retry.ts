// Bounded retry with jittered backoff, shared by attach, detach and device removal.
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
  classify(error: LoopError): Verdict;
}

/**
 * Runs `attempt` until it succeeds, a failure is not worth retrying, or the attempts run
 * out; then the error is ERR_LOOP_BUSY with `attempts` and the last failure as `cause`.
 */
export function* retrying<T>(plan: RetryPlan, attempt: (n: number) => Flow<T>): Flow<T> {
  const attempts = plan.options === false ? 1 : plan.options.attempts;
  let retries = 0;
  for (let n = 1; ; n++) {
    checkAborted(plan.signal);
    try {
      return yield* attempt(n);
    } catch (thrown) {
      if (!(thrown instanceof LoopError)) throw thrown;
      const verdict = plan.classify(thrown);
      if (verdict === 'fail') throw thrown;
      if (n >= attempts) {
        if (plan.options === false) throw thrown;
        fail('ERR_LOOP_BUSY', `${plan.operation} gave up after ${n} attempts: ${thrown.message}`, {
          attempts: n,
          cause: thrown,
          path: thrown.path,
          device: thrown.device,
        });
      }
      const delayMs = verdict === 'now' ? 0 : backoffMs(++retries, plan.options as RetryOptions);
      const event: RetryEvent = { operation: plan.operation, attempt: n, error: thrown, delayMs };
      log('%s: attempt %d failed (%s), retrying in %d ms', plan.operation, n, thrown.message, delayMs);
      plan.onRetry?.(event);
      yield* sleep(delayMs, plan.signal);
    }
  }
}
