// The addon's argument readers, by property: every step, with any one argument replaced by a
// value of the wrong type or range, refuses the call with a LoopError before it does anything
// (sync and async forms alike), never casts, rounds, cuts or reads out of bounds, never crashes
// the process, and leaves nothing bound. The other arguments are valid but harmless: a step
// that wrongly took the bad value would act on nothing of anyone else's.
import fc from 'fast-check';
import { closeSync, fstatSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { addon as native, ATTACH, ATTACH_MODE, DETACH, LIST } from '../lib/core/addon';
import { detachSync, LoopError } from '../lib/index';
import { devicesBackedBy, privileged, RELEASE_WAIT_MS, tempDir, type TempDir } from './helpers/kernel';

const RUNS = Number(process.env.LOOPDEV_FUZZ_RUNS ?? 300);
const NOWHERE = 0xfffff; // a device number no machine has

/** What an argument must be; each kind has valid values and values its reader must refuse. */
type Kind = 'int' | 'fd' | 'device' | 'bool' | 'u64' | 'string' | 'path' | 'optionalPath' | 'label' | 'partitions' | 'bytes' | 'out' | 'optionalDevice';

const wrongTypes = fc.constantFrom<unknown>(undefined, null, true, 'text', {}, [], () => 0, Symbol('s'), 1n, new Uint8Array(3));
const badNumbers = fc.oneof(
  fc.constantFrom(Number.NaN, Infinity, -Infinity, 0.5, -0.5, 2 ** 31, -(2 ** 31) - 1, 2 ** 53, 2 ** 64, -1e300, Number.MIN_VALUE),
  fc.double({ noInteger: true }),
);

/** Values the reader of `kind` must refuse. */
function invalid(kind: Kind): fc.Arbitrary<unknown> {
  switch (kind) {
    case 'int':
    case 'fd':
    case 'device':
    case 'optionalDevice':
      return fc.oneof(
        wrongTypes.filter((value) => !(kind === 'optionalDevice' && value === undefined)),
        badNumbers,
        ...(kind === 'int' ? [] : [fc.integer({ min: -(2 ** 31), max: -2 })]),
        ...(kind === 'device' || kind === 'optionalDevice' ? [fc.integer({ min: 0x100000, max: 2 ** 31 - 1 })] : []),
      );
    case 'bool':
      return fc.constantFrom<unknown>(undefined, null, 0, 1, 'true', {}, 1n);
    case 'u64':
      return fc.oneof(
        fc.constantFrom<unknown>(undefined, null, true, 'text', {}, -1, -1n, 2n ** 64n, -(2n ** 63n), 2 ** 53 + 2, 2 ** 64, Number.NaN, Infinity, -Infinity, 0.5, Number.MIN_VALUE),
        fc.double({ noInteger: true }),
        fc.bigInt({ min: 2n ** 64n, max: 2n ** 70n }),
      );
    case 'bytes':
      return fc.constantFrom<unknown>(null, 3, 'text', {}, [1, 2, 3], 1n);
    case 'string':
    case 'path':
    case 'optionalPath':
    case 'label':
      return fc.oneof(
        // undefined is a value of its own for an optional argument (the default), not a refusal.
        fc.constantFrom<unknown>(...(kind === 'optionalPath' || kind === 'label' ? [] : [undefined]), null, 3, {}, [], 1n, 'nul\0inside'),
        ...(kind === 'label' ? [fc.string({ minLength: 64, maxLength: 80, unit: 'binary-ascii' }).filter((text) => !text.includes('\0'))] : []),
      );
    case 'partitions':
      return fc.oneof(
        fc.constantFrom<unknown>(null, 3, 'text', [1, 0, 512], new Uint8Array(9), new Int32Array(3), new Float32Array(3), new BigUint64Array(3), new Float64Array(2), new Float64Array(4)),
        fc.tuple(fc.oneof(badNumbers, fc.constant(0)), fc.nat(), fc.nat()).map((triple) => Float64Array.from(triple)),
      );
    case 'out':
      return fc.constantFrom<unknown>(undefined, null, 3, [], new Uint8Array(64), new Float32Array(64), new BigUint64Array(64), new Float64Array(0));
  }
}

interface StepCase {
  name: keyof typeof native;
  kinds: Kind[];
  /** valid, harmless arguments */
  args: () => unknown[];
}

describe.skipIf(!privileged())("the addon's argument readers", () => {
  let dir: TempDir;
  let image: string;
  let imageFd: number;
  let nullFd: number;
  let control: number;

  beforeAll(() => {
    dir = tempDir('loopdev-arguments-');
    image = dir.image('args.img', 1024 * 1024);
    writeFileSync(join(dir.path, 'file'), 'x');
    imageFd = openSync(image, 'r+');
    nullFd = openSync('/dev/null', 'r');
    control = native.openControl.sync();
  });

  afterAll(() => {
    native.closeOwned.sync(control);
    closeSync(imageFd);
    closeSync(nullFd);
    dir.remove();
  });

  const target: Kind[] = ['device', 'optionalPath', 'fd', 'bool', 'u64', 'u64', 'u64'];
  const nowhere = (): unknown[] => [NOWHERE, undefined, -1, false, 0, 0, 0];
  const cases: StepCase[] = [
    {
      name: 'attach',
      kinds: ['fd', 'device', 'fd', 'string', 'u64', 'u64', 'int', 'int', 'label', 'int', 'partitions', 'out'],
      // A real attach of the test's image, were the bad value taken.
      args: () => [control, -1, imageFd, image, 0, 0, 0, 0, 'args', ATTACH_MODE.lockControl, undefined, new Float64Array(ATTACH.count)],
    },
    { name: 'detach', kinds: [...target, 'partitions', 'out'], args: () => [...nowhere(), undefined, new Float64Array(DETACH.count)] },
    { name: 'list', kinds: ['optionalDevice'], args: () => [NOWHERE] },
    { name: 'addDevice', kinds: ['fd', 'device'], args: () => [nullFd, NOWHERE] },
    { name: 'removeDevice', kinds: ['fd', 'device'], args: () => [nullFd, NOWHERE] },
    { name: 'mknod', kinds: ['path', 'int', 'int', 'int'], args: () => [join(dir.path, 'file'), 0o600, 7, NOWHERE] },
    { name: 'openOwned', kinds: ['path', 'int', 'bool'], args: () => [join(dir.path, 'missing'), 0, false] },
    { name: 'openBacking', kinds: ['path', 'bool', 'bool'], args: () => [join(dir.path, 'missing'), true, false] },
    { name: 'lockFile', kinds: ['fd'], args: () => [2 ** 30] },
    { name: 'memoryCopy', kinds: ['string', 'fd', 'bytes', 'string'], args: () => ['x', nullFd, undefined, 'loopdev-test'] },
    { name: 'setCapacity', kinds: target, args: nowhere },
    { name: 'setDirectIO', kinds: [...target, 'bool'], args: () => [...nowhere(), false] },
    { name: 'setBlockSize', kinds: [...target, 'int'], args: () => [...nowhere(), 512] },
    { name: 'setStatus', kinds: [...target, 'int', 'u64', 'u64', 'int', 'label'], args: () => [...nowhere(), 0, 0, 0, 0, undefined] },
    { name: 'changeBacking', kinds: [...target, 'fd', 'path'], args: () => [...nowhere(), -1, join(dir.path, 'missing')] },
    { name: 'rescanPartitions', kinds: [...target, 'partitions', 'out'], args: () => [...nowhere(), Float64Array.from([1, 0, 512]), new Float64Array(1)] },
    { name: 'closeOwned', kinds: ['fd'], args: () => [2 ** 30] },
    { name: 'closeHeld', kinds: ['fd', 'device'], args: () => [2 ** 30, NOWHERE] },
    { name: 'mount', kinds: ['path', 'path', 'string', 'u64', 'string'], args: () => [join(dir.path, 'missing'), join(dir.path, 'missing'), 'ext4', 0, ''] },
    { name: 'unmount', kinds: ['path', 'int'], args: () => [join(dir.path, 'missing'), 0] },
  ];

  /** The step's call, sync or async; answers the error it threw (sync, before anything ran) or undefined. */
  function thrownBy(name: keyof typeof native, form: 'sync' | 'async', args: unknown[]): unknown {
    const step = native[name] as unknown as Record<'sync' | 'async', (...values: unknown[]) => unknown>;
    try {
      const result = step[form](...args);
      if (result instanceof Promise) result.catch(() => undefined);
    } catch (error) {
      return error;
    }
    return undefined;
  }

  for (const { name, kinds, args } of cases) {
    it(`${name}: any one argument of the wrong type or range is refused with a LoopError before anything runs`, () => {
      const badArgument = fc.nat({ max: kinds.length - 1 }).chain((index) => fc.tuple(fc.constant(index), invalid(kinds[index]!)));
      const form = fc.constantFrom('sync', 'async') as fc.Arbitrary<'sync' | 'async'>;
      fc.assert(
        fc.property(badArgument, form, ([index, bad], which) => {
          const values = args();
          values[index] = bad;
          const error = thrownBy(name, which, values);
          expect(error, `argument ${index} = ${typeof bad === 'symbol' ? 'a symbol' : String(bad)}`).toBeInstanceOf(LoopError);
          // A step that took the bad value and bound the image: let go of it before the verdict, so
          // that one failure neither leaks a device nor fails every run after it.
          const bound = devicesBackedBy(image);
          for (const number of bound) detachSync(number, { wait: RELEASE_WAIT_MS });
          expect(bound, `argument ${index} = ${String(bad)} was taken`).toEqual([]);
          expect(['ERR_LOOP_INVALID_ARGUMENT', 'ENAMETOOLONG'], `argument ${index} = ${String(bad)}: ${String(error)}`).toContain((error as LoopError).code);
        }),
        { numRuns: Math.max(20, Math.round(RUNS / 4)) },
      );
    });
  }

  it('closeOwned closes only an fd the addon owns: any other is refused with EBADF and stays open', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 100_000, max: 2 ** 31 - 1 }), fc.constant(-1)), fc.boolean(), (number, stranger) => {
        // A file this test opened itself (never the addon's), or a number nothing has open.
        const fd = stranger ? openSync(join(dir.path, 'file'), 'r') : number;
        try {
          expect(() => native.closeOwned.sync(fd)).toThrow(LoopError);
          if (stranger) expect(fstatSync(fd).isFile()).toBe(true);
        } finally {
          if (stranger) closeSync(fd);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('a string arrives whole or is refused: never cut', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 600 }), fc.constantFrom(1, 2, 3), (text, repeat) => {
        const path = join(dir.path, 'missing', text.repeat(repeat * 8));
        const error = thrownBy('openBacking', 'sync', [path, true, false]) as LoopError;
        // The kernel's answer for the whole path, never for a prefix: the missing file itself.
        if (path.includes('\0')) expect(error.code).toBe('ERR_LOOP_INVALID_ARGUMENT');
        else if (Buffer.byteLength(path) >= 4096) expect(error.code).toBe('ENAMETOOLONG');
        else expect(['ENOENT', 'ENAMETOOLONG'], String(error)).toContain(error.code);
        if (error.path !== undefined) expect(error.path).toBe(path);
      }),
      { numRuns: RUNS },
    );
  });

  it('list of one device decodes the exact layout it asked for', () => {
    const [numbers, files] = native.list.sync(NOWHERE);
    expect(files).toEqual([]);
    expect(numbers.length).toBe(0);
    expect(LIST.count).toBeGreaterThan(0);
  });
});
