// What the property tests and fuzz targets share: how many runs (scaled by LOOPDEV_FUZZ_RUNS),
// the seed to replay, a ReadAt that checks every read it serves, and the verdict "a result or
// a LoopError".
import fc from 'fast-check';
import { expect } from 'vitest';

import { LoopError } from '../../lib/core/errors';
import type { ReadAt } from '../../lib/partitions/table';

/**
 * LOOPDEV_FUZZ_RUNS=N multiplies every property's run count by N for a long run (default 1,
 * the bounded count CI runs). LOOPDEV_FUZZ_SEED=S replays the seed a failure printed (with
 * the run count it had); =random draws a new one (the default is fixed).
 */
function scale(): number {
  const text = process.env.LOOPDEV_FUZZ_RUNS;
  if (text === undefined || text === '') return 1;
  const factor = Number(text);
  if (!Number.isSafeInteger(factor) || factor < 1) throw new Error(`LOOPDEV_FUZZ_RUNS must be a positive integer, got ${JSON.stringify(text)}`);
  return factor;
}

/**
 * fast-check parameters for a property that runs `runs` times in CI. `kernel`: the runs share
 * the kernel's state, so a run that leaves a device behind makes later runs fail too: the first
 * failure is reported as it is, not shrunk into a run that only met the leftovers.
 */
const DEFAULT_SEED = 20261207;

export function fuzzParameters<T>(runs: number, options: { kernel?: boolean } = {}): fc.Parameters<T> {
  // A fixed seed by default, so that a run's floors (enough runs that really attach, mount...)
  // hold the same way every time; LOOPDEV_FUZZ_SEED=random explores, =S replays what a failure printed.
  const seed = process.env.LOOPDEV_FUZZ_SEED ?? String(DEFAULT_SEED);
  return {
    numRuns: runs * scale(),
    ...(options.kernel === true ? { endOnFailure: true } : {}),
    // fast-check prints the seed and the counterexample's path on failure.
    ...(seed !== 'random' && seed !== '' ? { seed: Number(seed) } : {}),
  };
}

/** The run count a property gets, for tests that report it. */
export const fuzzRuns = (runs: number): number => runs * scale();

export interface GuardedReader {
  read: ReadAt;
  /** how many times read() was called */
  calls: number;
  /** how many bytes it handed out */
  bytes: number;
}

/**
 * A ReadAt over `data` that fails the test when a parser asks for a position that is not a
 * safe integer, is negative, or (with `limit`) reaches past `limit` bytes: a parser told the
 * device's size must not read beyond it. `chunk` caps what one call returns, so that short
 * reads (allowed only at the end of the data by the ReadAt contract, but what a trickling
 * pipe or a signal gives) are exercised too.
 */
export function guardedReader(data: Uint8Array, options: { limit?: number; chunk?: number } = {}): GuardedReader {
  const guard: GuardedReader = {
    calls: 0,
    bytes: 0,
    read: (buffer, position) => {
      guard.calls++;
      if (!Buffer.isBuffer(buffer)) throw new Error(`read() got a ${typeof buffer}, not a Buffer`);
      if (!Number.isSafeInteger(position) || position < 0) throw new Error(`read() at position ${position}`);
      if (options.limit !== undefined && position + buffer.length > options.limit) {
        throw new Error(`read() of ${buffer.length} bytes at ${position} goes past the device's end (${options.limit})`);
      }
      if (position >= data.length) return 0;
      const length = Math.min(buffer.length, data.length - position, options.chunk ?? Infinity);
      buffer.set(data.subarray(position, position + length));
      guard.bytes += length;
      return length;
    },
  };
  return guard;
}

/**
 * Runs `body`: its result, or the LoopError it threw. Any other throw (TypeError, RangeError,
 * a test assertion) fails the property.
 */
export function resultOrLoopError<T>(body: () => T): { value: T } | { error: LoopError } {
  try {
    return { value: body() };
  } catch (error) {
    expectLoopError(error);
    return { error: error as LoopError };
  }
}

/** Async form of resultOrLoopError(). */
export async function settleOrLoopError<T>(body: () => Promise<T>): Promise<{ value: T } | { error: LoopError }> {
  try {
    return { value: await body() };
  } catch (error) {
    expectLoopError(error);
    return { error: error as LoopError };
  }
}

/** A typed refusal: a LoopError with a string code; anything else is rethrown as is. */
export function expectLoopError(error: unknown): void {
  if (!(error instanceof LoopError)) throw error;
  expect(typeof error.code).toBe('string');
  expect(error.code.length).toBeGreaterThan(0);
}
