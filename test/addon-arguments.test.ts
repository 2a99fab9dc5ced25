// The addon's argument readers, by property: every step, with any one argument replaced by a
// value of the wrong type or range, refuses the call with a LoopError before it does anything
// (sync and async forms alike), never casts, rounds, cuts or reads out of bounds, never crashes
// the process, and leaves nothing bound. The other arguments are valid but harmless: a step
// that wrongly took the bad value would act on nothing of anyone else's.
import fc from 'fast-check';
import { closeSync, fstatSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { addon as native, ATTACH, ATTACH_MODE, DETACH, LIST, positional, type StepName } from '../lib/core/addon';
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
  name: StepName;
  /** each argument's kind, by name (the addon's layout gives their order) */
  kinds: Record<string, Kind>;
  /** valid, harmless arguments, by name */
  args: () => Record<string, unknown>;
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

  const target: Record<string, Kind> = { number: 'device', path: 'optionalPath', heldFd: 'fd', checkIdentity: 'bool', diskseq: 'u64', backingDevice: 'u64', backingInode: 'u64' };
  const nowhere = { number: NOWHERE, path: undefined, heldFd: -1, checkIdentity: false, diskseq: 0, backingDevice: 0, backingInode: 0 };
  const missing = (): string => join(dir.path, 'missing');
  const cases: StepCase[] = [
    {
      name: 'attach',
      kinds: { controlFd: 'fd', device: 'device', backingFd: 'fd', backingPath: 'string', offset: 'u64', sizeLimit: 'u64', flags: 'int', sectorSize: 'int', label: 'label', mode: 'int', partitions: 'partitions', out: 'out' },
      // A real attach of the test's image, were the bad value taken.
      args: () => ({
        controlFd: control, device: -1, backingFd: imageFd, backingPath: image, offset: 0, sizeLimit: 0, flags: 0, sectorSize: 0, label: 'args',
        mode: ATTACH_MODE.lockControl, partitions: undefined, out: new Float64Array(ATTACH.count),
      }),
    },
    { name: 'detach', kinds: { ...target, partitions: 'partitions', out: 'out' }, args: () => ({ ...nowhere, partitions: undefined, out: new Float64Array(DETACH.count) }) },
    { name: 'list', kinds: { only: 'optionalDevice' }, args: () => ({ only: NOWHERE }) },
    { name: 'addDevice', kinds: { controlFd: 'fd', number: 'device' }, args: () => ({ controlFd: nullFd, number: NOWHERE }) },
    { name: 'removeDevice', kinds: { controlFd: 'fd', number: 'device' }, args: () => ({ controlFd: nullFd, number: NOWHERE }) },
    { name: 'mknod', kinds: { path: 'path', mode: 'int', major: 'int', minor: 'int' }, args: () => ({ path: join(dir.path, 'file'), mode: 0o600, major: 7, minor: NOWHERE }) },
    { name: 'openOwned', kinds: { path: 'path', flags: 'int', noFollow: 'bool' }, args: () => ({ path: missing(), flags: 0, noFollow: false }) },
    { name: 'openBacking', kinds: { path: 'path', readOnly: 'bool', noFollow: 'bool' }, args: () => ({ path: missing(), readOnly: true, noFollow: false }) },
    { name: 'lockFile', kinds: { fd: 'fd' }, args: () => ({ fd: 2 ** 30 }) },
    { name: 'memoryCopy', kinds: { path: 'string', backingFd: 'fd', bytes: 'bytes', name: 'string' }, args: () => ({ path: 'x', backingFd: nullFd, bytes: undefined, name: 'loopdev-test' }) },
    { name: 'setCapacity', kinds: target, args: () => ({ ...nowhere }) },
    { name: 'setDirectIO', kinds: { ...target, on: 'bool' }, args: () => ({ ...nowhere, on: false }) },
    { name: 'setBlockSize', kinds: { ...target, bytes: 'int' }, args: () => ({ ...nowhere, bytes: 512 }) },
    {
      name: 'setStatus',
      kinds: { ...target, changes: 'int', offset: 'u64', sizeLimit: 'u64', flags: 'int', label: 'label' },
      args: () => ({ ...nowhere, changes: 0, offset: 0, sizeLimit: 0, flags: 0, label: undefined }),
    },
    { name: 'changeBacking', kinds: { ...target, backingFd: 'fd', backingPath: 'path' }, args: () => ({ ...nowhere, backingFd: -1, backingPath: missing() }) },
    {
      name: 'rescanPartitions',
      kinds: { ...target, partitions: 'partitions', out: 'out' },
      args: () => ({ ...nowhere, partitions: Float64Array.from([1, 0, 512]), out: new Float64Array(1) }),
    },
    { name: 'closeOwned', kinds: { fd: 'fd' }, args: () => ({ fd: 2 ** 30 }) },
    { name: 'closeHeld', kinds: { fd: 'fd', number: 'device' }, args: () => ({ fd: 2 ** 30, number: NOWHERE }) },
    {
      name: 'mount',
      kinds: { source: 'path', target: 'path', fstype: 'string', flags: 'u64', data: 'string', unmountAtExit: 'bool' },
      args: () => ({ source: missing(), target: missing(), fstype: 'ext4', flags: 0, data: '', unmountAtExit: false }),
    },
    { name: 'unmount', kinds: { target: 'path', flags: 'int' }, args: () => ({ target: missing(), flags: 0 }) },
  ];

  /** The step's call, sync or async; answers the error it threw (sync, before anything ran) or undefined. */
  function thrownBy(name: StepName, form: 'sync' | 'async', args: unknown[]): unknown {
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
      const badArgument = fc.constantFrom(...Object.keys(kinds)).chain((argument) => fc.tuple(fc.constant(argument), invalid(kinds[argument]!)));
      const form = fc.constantFrom('sync', 'async') as fc.Arbitrary<'sync' | 'async'>;
      fc.assert(
        fc.property(badArgument, form, ([argument, bad], which) => {
          const error = thrownBy(name, which, positional(name, { ...args(), [argument]: bad }));
          const shown = typeof bad === 'symbol' ? 'a symbol' : String(bad);
          expect(error, `${argument} = ${shown}`).toBeInstanceOf(LoopError);
          // A step that took the bad value and bound the image: let go of it before the verdict, so
          // that one failure neither leaks a device nor fails every run after it.
          const bound = devicesBackedBy(image);
          for (const number of bound) detachSync(number, { wait: RELEASE_WAIT_MS });
          expect(bound, `${argument} = ${shown} was taken`).toEqual([]);
          expect(['ERR_LOOP_INVALID_ARGUMENT', 'ENAMETOOLONG'], `${argument} = ${shown}: ${String(error)}`).toContain((error as LoopError).code);
          // The refusal names the argument the value was passed as: the addon read it from there.
          if ((error as LoopError).code === 'ERR_LOOP_INVALID_ARGUMENT') expect((error as LoopError).message).toContain(`(${argument}) of ${name}`);
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

  it('a failed system call keeps its errno in every binary (the prebuilt ones link stat and mknod for glibc 2.28)', () => {
    const missing = join(dir.path, 'missing', 'node');
    expect(() => native.mknod.sync(missing, 0o600, 7, 0)).toThrow(expect.objectContaining({ code: 'ENOENT', errno: -2, syscall: 'mknod', path: missing }));
    // An fd number no process here has open (a closed one could be reused by the time of the
    // call): fstat answers EBADF.
    const notOpen = (1 << 20) - 1;
    expect(() => native.memoryCopy.sync('not open', notOpen, undefined, 'not-open')).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'fstat' }));
  });

  it('a string arrives whole or is refused: never cut', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 600 }), fc.constantFrom(1, 2, 3), (text, repeat) => {
        const path = join(dir.path, 'missing', text.repeat(repeat * 8));
        const error = thrownBy('openBacking', 'sync', positional('openBacking', { path, readOnly: true, noFollow: false })) as LoopError;
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
