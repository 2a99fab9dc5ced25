// One implementation, two forms. An operation is written once, as a generator (a "flow") that
// yields the steps it needs: an addon call, a pause, a turn. runSync() performs them on the
// calling thread; runAsync() through the addon's Promise forms and timers, never blocking the
// event loop. So every decision (retry, repair, read-back checks, hand-over) is written once,
// and the sync and async APIs cannot drift apart.
import { setTimeout as delay } from 'node:timers/promises';

import type { Step } from './addon';
import { LoopError } from './errors';

type Call = { kind: 'call'; step: Step<unknown[], unknown>; args: unknown[] };
type Sleep = { kind: 'sleep'; ms: number; signal: AbortSignal | undefined };
type Turn = { kind: 'turn'; turns: Turns; take: boolean };
export type Effect = Call | Sleep | Turn;
export type Flow<T> = Generator<Effect, T, unknown>;

/** One addon step (e.g. `call(addon.attach, ...)`), sync or async depending on the driver. */
export function* call<Args extends unknown[], Result>(step: Step<Args, Result>, ...args: Args): Flow<Result> {
  return (yield { kind: 'call', step: step as Step<unknown[], unknown>, args }) as Result;
}

/** Waits `ms` milliseconds (blocking in the sync form; a timer in the async form). */
export function* sleep(ms: number, signal?: AbortSignal): Flow<void> {
  if (ms > 0) yield { kind: 'sleep', ms, signal };
}

/**
 * A fixed number of turns that async flows of this process take and give back, e.g. so that
 * concurrent attach() calls never race each other for the same free device. A turn's number
 * (0..count-1) names a resource the holder uses alone, such as its own fd. Sync flows cannot
 * interleave: there, taking a turn answers -1 at once. A flow yields `turns.taking` (and gets
 * the turn's number back) and later `turns.giving`, which gives back the turn it took last.
 */
export class Turns {
  private readonly free: number[];
  private readonly waiting: ((turn: number) => void)[] = [];
  /** the two effects, made once */
  readonly taking: Turn = { kind: 'turn', turns: this, take: true };
  readonly giving: Turn = { kind: 'turn', turns: this, take: false };

  constructor(readonly count: number) {
    this.free = Array.from({ length: count }, (_, turn) => count - 1 - turn);
  }

  /** A free turn at once, or a promise of the next one given back. */
  take(): number | Promise<number> {
    return this.free.pop() ?? new Promise<number>((resolve) => this.waiting.push(resolve));
  }

  give(turn: number): void {
    const next = this.waiting.shift();
    if (next) next(turn);
    else this.free.push(turn);
  }
}

export function abortError(signal: AbortSignal): LoopError {
  return new LoopError('the operation was aborted', { code: 'ERR_LOOP_ABORTED', cause: signal.reason });
}

/** Throws ERR_LOOP_ABORTED if the signal has fired. */
export function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
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
        input = effect.step.sync(...effect.args);
      } else if (effect.kind === 'sleep') {
        checkAborted(effect.signal);
        Atomics.wait(sleeper, 0, 0, effect.ms);
      } else if (effect.take) {
        input = -1;
      }
    } catch (thrown) {
      failed = true;
      error = thrown;
    }
  }
}

/** Runs a flow with the addon's Promise forms and timers. */
export async function runAsync<T>(flow: Flow<T>): Promise<T> {
  let input: unknown;
  let error: unknown;
  let failed = false;
  const held: { turns: Turns; turn: number }[] = [];
  try {
    for (;;) {
      const step = failed ? flow.throw(error) : flow.next(input);
      if (step.done) return step.value;
      failed = false;
      input = undefined;
      const effect = step.value;
      try {
        if (effect.kind === 'call') {
          input = await effect.step.async(...effect.args);
        } else if (effect.kind === 'sleep') {
          await delay(effect.ms, undefined, { signal: effect.signal }).catch((reason: unknown) => {
            throw effect.signal?.aborted ? abortError(effect.signal) : reason;
          });
        } else if (effect.take) {
          // A free turn is taken without a turn of the microtask queue.
          const free = effect.turns.take();
          const turn = typeof free === 'number' ? free : await free;
          held.push({ turns: effect.turns, turn });
          input = turn;
        } else {
          let index = held.length - 1;
          while (held[index]!.turns !== effect.turns) index--;
          const [entry] = held.splice(index, 1);
          entry!.turns.give(entry!.turn);
        }
      } catch (thrown) {
        failed = true;
        error = thrown;
      }
    }
  } finally {
    // A flow abandoned while holding a turn must not keep it from everyone after it.
    for (const entry of held) entry.turns.give(entry.turn);
  }
}
