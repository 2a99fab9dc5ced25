// One implementation, two forms. A flow is a generator that yields the native calls and
// sleeps it needs; runSync() performs them on the calling thread, runAsync() through the
// addon's Promise forms and timers. So retry, waiting and validation are written once and
// the sync and async APIs cannot drift apart. The one exception is speed: attachSync(),
// detachSync() and closeSync() make their usual first kernel step as a plain call (the
// same step functions, lib/steps.ts) and hand anything else, a failure included, to the
// same flow, which goes on from there; on the attach+detach cycle the generators and the
// driver had cost more than the rest of the TypeScript layer. attach(), detach() and
// close() do the same with the step's Promise form.
import { setTimeout as delay } from 'node:timers/promises';

import { LoopError, fail } from './errors';
import { native, type Native } from './addon';

type SyncName =
  | 'openControl'
  | 'addDevice'
  | 'removeDevice'
  | 'attach'
  | 'detach'
  | 'mknod'
  | 'closeOwned'
  | 'openOwned'
  | 'lockFile'
  | 'list'
  | 'mount'
  | 'unmount';
type Call = { kind: 'call'; name: SyncName; args: unknown[] };
type Sleep = { kind: 'sleep'; ms: number; signal: AbortSignal | undefined };
type Exclusive = { kind: 'exclusive'; enter: boolean };
type Lane = { kind: 'lane'; enter: boolean };
export type Effect = Call | Sleep | Exclusive | Lane;
export type Flow<T> = Generator<Effect, T, unknown>;

/** Performs one native step, sync or async depending on the driver. */
export function* call<K extends SyncName>(name: K, ...args: Parameters<Native[K]>): Flow<ReturnType<Native[K]>> {
  return (yield { kind: 'call', name, args }) as ReturnType<Native[K]>;
}

/**
 * The effect of one native step, to `yield` directly where a step is on the hot path: each
 * `yield*` level is a generator object and a resume per effect, which on the attach+detach
 * cycle cost more than the rest of the TypeScript layer (measured).
 */
export function nativeStep<K extends SyncName>(name: K, ...args: Parameters<Native[K]>): Effect {
  return { kind: 'call', name, args };
}

/**
 * Entering and leaving the exclusive section: between the two, no other async flow of this
 * process is inside one, so concurrent attach() calls never race each other for the same
 * free device. (The sync driver needs nothing: sync code cannot interleave.)
 */
export const ENTER_EXCLUSIVE: Effect = Object.freeze({ kind: 'exclusive', enter: true });
export const LEAVE_EXCLUSIVE: Effect = Object.freeze({ kind: 'exclusive', enter: false });

/**
 * How many async attaches of this process may be in the kernel at once, each through its own
 * fd on /dev/loop-control: flock on different open files excludes them in the kernel, so the
 * next attach already waits in flock on a worker thread while the previous one's result is
 * on its way back, instead of starting only after it. (libuv's default pool has 4 threads.)
 */
export const LANES = 4;
/**
 * Taking and giving back a lane: `yield ENTER_LANE` answers the lane's number (0..LANES-1;
 * -1 in the sync driver, whose calls run one at a time on the calling thread).
 */
export const ENTER_LANE: Effect = Object.freeze({ kind: 'lane', enter: true });
export const LEAVE_LANE: Effect = Object.freeze({ kind: 'lane', enter: false });

/** Waits `ms` milliseconds (blocking in the sync form; a timer in the async form). */
export function* sleep(ms: number, signal?: AbortSignal): Flow<void> {
  if (ms > 0) yield { kind: 'sleep', ms, signal };
}

export function abortError(signal: AbortSignal): LoopError {
  return new LoopError('the operation was aborted', { code: 'ERR_LOOP_ABORTED', cause: signal.reason });
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Runs a flow to completion on the calling thread. */
export function runSync<T>(flow: Flow<T>): T {
  let input: unknown;
  let error: unknown;
  let failed = false;
  for (;;) {
    const step = failed ? flow.throw(error) : flow.next(input);
    if (step.done) return step.value;
    failed = false;
    input = undefined;
    const effect = step.value;
    try {
      if (effect.kind === 'call') {
        input = (native[effect.name] as (...args: unknown[]) => unknown)(...effect.args);
      } else if (effect.kind === 'sleep') {
        if (effect.signal?.aborted) throw abortError(effect.signal);
        Atomics.wait(sleeper, 0, 0, effect.ms);
      } else if (effect.kind === 'lane' && effect.enter) {
        input = -1;
      }
    } catch (thrown) {
      failed = true;
      error = thrown;
    }
  }
}

let exclusiveTail: Promise<void> = Promise.resolve();

const freeLanes: number[] = Array.from({ length: LANES }, (_, lane) => LANES - 1 - lane);
const laneWaiters: ((lane: number) => void)[] = [];

/** A free lane's number at once, or a promise of the next one given back. */
export function takeLane(): number | Promise<number> {
  return freeLanes.pop() ?? new Promise<number>((resolve) => laneWaiters.push(resolve));
}

/** Gives a lane back (to the longest waiter, if any). */
export function giveLane(lane: number): void {
  const next = laneWaiters.shift();
  if (next) next(lane);
  else freeLanes.push(lane);
}

/** Runs a flow with the addon's Promise forms; nothing blocks the event loop. */
export async function runAsync<T>(flow: Flow<T>): Promise<T> {
  let input: unknown;
  let error: unknown;
  let failed = false;
  const releases: (() => void)[] = [];
  const lanes: number[] = [];
  try {
    for (;;) {
      const step = failed ? flow.throw(error) : flow.next(input);
      if (step.done) return step.value;
      failed = false;
      input = undefined;
      const effect = step.value;
      try {
        if (effect.kind === 'call') {
          const name = `${effect.name}Async` as const;
          input = await (native[name] as (...args: unknown[]) => Promise<unknown>)(...effect.args);
        } else if (effect.kind === 'sleep') {
          await delay(effect.ms, undefined, { signal: effect.signal }).catch((reason: unknown) => {
            throw effect.signal?.aborted ? abortError(effect.signal) : reason;
          });
        } else if (effect.kind === 'lane') {
          if (effect.enter) {
            // A free lane is taken without a turn of the microtask queue.
            const free = takeLane();
            const lane = typeof free === 'number' ? free : await free;
            lanes.push(lane);
            input = lane;
          } else {
            giveLane(lanes.pop()!);
          }
        } else if (effect.enter) {
          const previous = exclusiveTail;
          let release!: () => void;
          exclusiveTail = new Promise<void>((resolve) => (release = resolve));
          releases.push(release);
          await previous;
        } else {
          releases.pop()?.();
        }
      } catch (thrown) {
        failed = true;
        error = thrown;
      }
    }
  } finally {
    // A flow abandoned inside an exclusive section must not block everyone after it.
    for (const release of releases) release();
    for (const lane of lanes) giveLane(lane);
  }
}

/** Throws ERR_LOOP_ABORTED if the signal has fired. */
export function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

export { fail };
