// Property tests over the public functions' options: any value of any JS type, mixed with
// valid ones so that a good share of runs really attach, either works or is refused with a
// LoopError (a string code), never another error class; and after every run nothing the run
// attached is still bound (sysfs, read here, not asked of the library). The CLI's argument
// parser gets arbitrary argv. Run counts: fuzzParameters() (LOOPDEV_FUZZ_RUNS scales them).
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, symlinkSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';

import { parseCommand, UsageError } from '../lib/cli/parse';
import { LoopError } from '../lib/core/errors';
import { attach, attachSync, detach, detachSync, find, findSync, info, infoSync, list, listSync, LoopDevice, mountSync, reconfigure, reconfigureSync, setCapacitySync, unmountSync, addDeviceSync, removeDeviceSync } from '../lib/index';
import { optionsObject } from '../lib/loop/options';
import { createImage } from '../lib/testing';
import { checkFsType, checkPartition, planMountFlags } from '../lib/mount/options';
import { fuzzParameters, fuzzRuns, resultOrLoopError, settleOrLoopError } from './helpers/fuzz';
import { attachInputValid, detachOptionsValid, REFUSED } from './helpers/option-oracle';
import { findTool, writeGpt } from './helpers/images';
import { devicesBackedBy, mountTable, privileged, RELEASE_WAIT_MS, suiteTempDir, sysRead, until } from './helpers/kernel';

const KiB = 1024;
const MiB = 1024 * KiB;
const run = privileged();
// Runs of the properties whose runs attach devices (the pure ones run 100 to 1000 times); each
// asserts afterwards that a good share of its runs really worked.
const ATTACH_RUNS = 120;
const RECONFIGURE_RUNS = 50;
const MOUNT_RUNS = 40;
const IMAGE_RUNS = 40;

/** Values of every JS type, for any option: most are wrong for every option, a few right for some. */
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(undefined, null, NaN, -1, -0, 0.5, 1e-300, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 64, Number.MAX_VALUE, true, false),
  fc.constantFrom<unknown>('', ' ', 'yes', 'true', '512', '0x200', '1e3', '-1', 'a\0b', '\0', '\uD800', '/dev/null', 'x'.repeat(100_000)),
  fc.constantFrom<unknown>(-1n, 0n, 1n, 512n, 2n ** 63n, 2n ** 64n, -(2n ** 63n)),
  fc.constantFrom<unknown>(Symbol('option'), () => 512, {}, [], [512], { valueOf: () => 512 }, { toString: () => '512' }, new Date(0), Buffer.alloc(4), Object.create(null), new Map()),
  fc.integer(),
  fc.double(),
  fc.bigInt(),
  fc.string({ unit: 'binary', maxLength: 80 }),
);

/** Left out (undefined) in most runs: for options that exclude each other or often fail for good reasons. */
const sometimes = <T,>(valid: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: valid });

/** A valid value most of the time, any value now and then. */
const mostly = <T,>(valid: fc.Arbitrary<T>): fc.Arbitrary<unknown> => fc.oneof({ weight: 30, arbitrary: valid }, { weight: 1, arbitrary: anyValue });

/**
 * An options object of these keys (each present or not): all of valid values, or with any value
 * now and then; an unknown key now and then; or any value instead of an object.
 */
function optionsOf(keys: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<unknown> {
  const valid = fc.record(keys, { requiredKeys: [] });
  const record = fc.record(Object.fromEntries(Object.entries(keys).map(([key, value]) => [key, mostly(value)])), { requiredKeys: [] });
  const withUnknown = fc.tuple(record, fc.string({ minLength: 1, maxLength: 10 }), anyValue).map(([options, key, value]) => ({ ...options, [`x${key}`]: value }));
  return fc.oneof({ weight: 10, arbitrary: valid }, { weight: 10, arbitrary: record }, { weight: 1, arbitrary: withUnknown }, { weight: 1, arbitrary: anyValue });
}

const retryOption = fc.oneof(
  fc.constant(false),
  fc.record({ attempts: fc.integer({ min: 1, max: 3 }), minDelayMs: fc.integer({ min: 0, max: 2 }), maxDelayMs: fc.integer({ min: 0, max: 3 }) }, { requiredKeys: [] }),
);
const hooks = {
  retry: sometimes(retryOption),
  // An aborted signal makes every run that gets that far an ERR_LOOP_ABORTED: now and then only.
  signal: sometimes(fc.oneof({ weight: 3, arbitrary: fc.constant(new AbortController().signal) }, { weight: 1, arbitrary: fc.constant(AbortSignal.abort()) })),
  onRetry: sometimes(fc.constant(() => {})),
};
const byteCounts = (...extra: (number | bigint)[]): fc.Arbitrary<number | bigint> => fc.constantFrom<number | bigint>(0, 512, 1000, 4096, 64 * KiB, MiB - 512, MiB, 4 * MiB, 0n, 4096n, 2n ** 63n - 1n, ...extra);

describe.runIf(run)('properties of the public functions (root, real loop devices)', () => {
  const dir = suiteTempDir();
  let image = '';
  let copy = '';
  let link = '';
  /** Loop devices that exist now: a `device` option may name them (never one it would create). */
  let existing: number[] = [];

  beforeAll(() => {
    image = join(dir.path, 'disk.img');
    writeGpt(image, 1 * MiB, [
      { startBytes: 64 * KiB, sizeBytes: 256 * KiB },
      { startBytes: 512 * KiB, sizeBytes: 256 * KiB },
    ]);
    copy = join(dir.path, 'copy.img');
    writeGpt(copy, 1 * MiB, []);
    link = join(dir.path, 'link.img');
    symlinkSync(image, link);
    existing = readdirSync('/sys/block')
      .map((name) => /^loop(\d+)$/.exec(name)?.[1])
      .filter((n): n is string => n !== undefined)
      .map(Number)
      .slice(0, 8);
  });

  /** A kernel binding as sysfs reads it: the device's diskseq while it is bound. */
  const bindingOf = (device: LoopDevice): string | undefined => (sysRead(device.number, 'loop/backing_file') === undefined ? undefined : sysRead(device.number, 'diskseq'));

  /** Detaches what a run attached and checks that nothing of the run is left bound. */
  async function release(device: LoopDevice | undefined): Promise<void> {
    if (device !== undefined) {
      expect(device).toBeInstanceOf(LoopDevice);
      const seq = bindingOf(device);
      // A run that detached the device by number or let autoclear free it leaves the handle a
      // number someone else may have bound since: the handle then refuses to touch it.
      const letGo = device.released;
      const detached = await settleOrLoopError(() => device.detach({ wait: RELEASE_WAIT_MS }));
      if ('error' in detached) expect(detached.error.code).toBe('ERR_LOOP_REUSED');
      // A handle the run closed while someone else had the device open does not wait again
      // (detach of a released handle answers at once): AUTOCLEAR unbinds it at that other close.
      if (letGo && seq !== undefined) await until(() => bindingOf(device) !== seq, RELEASE_WAIT_MS);
      // Another test may bind the freed number at once: the same binding must be gone.
      if (seq !== undefined) expect(bindingOf(device)).not.toBe(seq);
    }
    expect(devicesBackedBy(dir.path)).toEqual([]);
  }

  type FileKind = 'image' | 'link' | 'fd' | 'handle' | 'bytes' | 'missing' | 'directory' | 'devnull' | 'weird';
  const fileKind = fc.oneof(
    { weight: 20, arbitrary: fc.constant<FileKind>('image') },
    { weight: 2, arbitrary: fc.constantFrom<FileKind>('link', 'fd', 'handle', 'bytes') },
    { weight: 1, arbitrary: fc.constantFrom<FileKind>('missing', 'directory', 'devnull', 'weird') },
  );

  /** The `file` argument of a kind, and how to close what was opened for it. */
  async function backing(kind: FileKind, weird: unknown): Promise<{ file: unknown; done: () => Promise<void> }> {
    const none = async (): Promise<void> => {};
    switch (kind) {
      case 'image':
        return { file: image, done: none };
      case 'link':
        return { file: link, done: none };
      case 'fd': {
        const fd = openSync(image, 'r+');
        return { file: fd, done: async () => closeSync(fd) };
      }
      case 'handle': {
        const handle = await open(image, 'r+');
        return { file: handle, done: () => handle.close() };
      }
      case 'bytes':
        return { file: new Uint8Array(64 * KiB), done: none };
      case 'missing':
        return { file: join(dir.path, 'missing.img'), done: none };
      case 'directory':
        return { file: dir.path, done: none };
      case 'devnull':
        return { file: '/dev/null', done: none };
      case 'weird':
        // numbers here are never 0..2 (stdio) nor an fd this process may have open
        return { file: typeof weird === 'number' && Number.isInteger(weird) && weird >= 0 && weird < 2 ** 20 ? -1 : weird, done: none };
    }
  }

  const attachOptions = (): fc.Arbitrary<unknown> =>
    optionsOf({
      readOnly: fc.boolean(),
      offset: byteCounts(),
      sizeLimit: byteCounts(),
      partscan: fc.boolean(),
      autoclear: sometimes(fc.boolean()),
      directIO: fc.constantFrom(false, 'prefer', undefined, true),
      sectorSize: fc.constantFrom(512, 1024, 2048, 4096, 'auto'),
      inMemory: sometimes(fc.boolean()),
      noFollow: sometimes(fc.boolean()),
      // Devices that exist (often bound by others: EBUSY), or past the range; never one it would create.
      device: sometimes(fc.constantFrom(...existing.flatMap((n) => [n, `/dev/loop${n}`]), 0x100000, '/dev/loop1048576')),
      label: fc.string({ maxLength: 40 }),
      hold: sometimes(fc.boolean()),
      reuse: sometimes(fc.boolean()),
      lockControl: fc.boolean(),
      detachOnExit: sometimes(fc.boolean()),
      ...hooks,
    });

  it('attach and attachSync: any options work or give a LoopError (a typed refusal for bad input), and nothing stays bound', async () => {
    let attached = 0;
    await fc.assert(
      fc.asyncProperty(fileKind, anyValue, fc.boolean(), attachOptions(), async (kind, weird, sync, options) => {
        const { file, done } = await backing(kind, weird);
        let device: LoopDevice | undefined;
        try {
          const outcome = sync
            ? resultOrLoopError(() => attachSync(file as string, options as object))
            : await settleOrLoopError(() => attach(file as string, options as object));
          if ('value' in outcome) device = outcome.value;
          if (!attachInputValid(file, options)) expect('error' in outcome && outcome.error.code, 'bad input is refused').toBeOneOf(REFUSED);
          if ('value' in outcome) {
            attached++;
            // What it says it did, sysfs agrees with.
            const asked = options as { readOnly?: boolean; offset?: number | bigint; sizeLimit?: number | bigint };
            expect(sysRead(outcome.value.number, 'ro')).toBe(asked.readOnly === true ? '1' : '0');
            expect(sysRead(outcome.value.number, 'loop/offset')).toBe(String(asked.offset ?? 0));
            expect(sysRead(outcome.value.number, 'loop/sizelimit')).toBe(String(asked.sizeLimit ?? 0));
          }
        } finally {
          await release(device);
          await done();
        }
      }),
      fuzzParameters(ATTACH_RUNS, { kernel: true }),
    );
    // Most runs must really attach, or the property says little about what works.
    expect(attached).toBeGreaterThan(fuzzRuns(ATTACH_RUNS) / 4);
  });

  const detachOptions = optionsOf({ wait: fc.oneof(fc.constant(false), fc.integer({ min: 0, max: 50 })), ...hooks });

  /** Device references that are not this test's device and name no one else's either. */
  const strangerRef = fc.constantFrom<unknown>(-1, 1.5, NaN, 2 ** 20, 2 ** 53, '', 'loop', '/dev/loop', '/dev/loopX', '/dev/null', '/nonexistent/loop5', 'a\0b', {}, { path: 5 }, { number: 'x' }, null, undefined, 2n, Symbol('device'), () => 0);

  /** Polls `check` every 10 ms, blocking (a sync property cannot await), for up to `timeoutMs`. */
  const untilSync = (check: () => boolean, timeoutMs: number): boolean => {
    const pause = new Int32Array(new SharedArrayBuffer(4));
    for (const end = Date.now() + timeoutMs; !check(); Atomics.wait(pause, 0, 0, 10)) if (Date.now() > end) return false;
    return true;
  };

  type RefKind = 'handle' | 'number' | 'path' | 'stranger';
  const refKind = fc.oneof({ weight: 6, arbitrary: fc.constantFrom<RefKind>('handle', 'number', 'path') }, { weight: 1, arbitrary: fc.constant<RefKind>('stranger') });
  const refTo = (kind: RefKind, device: LoopDevice, stranger: unknown): unknown =>
    kind === 'handle' ? device : kind === 'number' ? device.number : kind === 'path' ? device.path : stranger === '/dev/null' ? image : stranger;

  it('detach, detachSync, close, closeSync: any options work or give a LoopError, and nothing stays bound', async () => {
    await fc.assert(
      fc.asyncProperty(refKind, strangerRef, fc.constantFrom('detach', 'detachSync', 'close', 'closeSync'), fc.boolean(), detachOptions, async (kind, stranger, how, hold, options) => {
        const device = attachSync(image, { hold });
        try {
          const ref = refTo(kind, device, stranger);
          const outcome = await settleOrLoopError(async () => {
            switch (how) {
              case 'detach':
                return detach(ref as number, options as object);
              case 'detachSync':
                return detachSync(ref as number, options as object);
              case 'close':
                return device.close(options as object);
              case 'closeSync':
                return device.closeSync(options as object);
            }
          });
          if (!detachOptionsValid(options)) expect('error' in outcome && outcome.error.code, 'bad options are refused').toBeOneOf(REFUSED);
          if ('value' in outcome) {
            expect(typeof outcome.value.path).toBe('string');
            expect(typeof outcome.value.wasBound).toBe('boolean');
            expect(typeof outcome.value.released).toBe('boolean');
          }
        } finally {
          await release(device);
        }
      }),
      fuzzParameters(60, { kernel: true }),
    );
  });

  const reconfigureOptions = optionsOf({
    directIO: fc.constantFrom(true, false, 'prefer'),
    sectorSize: fc.constantFrom(512, 1024, 2048, 4096),
    offset: byteCounts(),
    sizeLimit: byteCounts(),
    autoclear: sometimes(fc.boolean()),
    // false is refused (the kernel cannot clear PARTSCAN): any value brings it now and then.
    partscan: sometimes(fc.constant(true)),
    label: fc.string({ maxLength: 40 }),
    signal: hooks.signal,
  });

  it('reconfigure, setCapacity, info, find and list: any arguments work or give a LoopError, and nothing stays bound', async () => {
    let changedCount = 0;
    await fc.assert(
      fc.asyncProperty(refKind, strangerRef, fc.boolean(), fc.boolean(), reconfigureOptions, fc.oneof(fc.constant<unknown>(image), anyValue), async (kind, stranger, sync, hold, changes, findArgument) => {
        // Left out: turning partscan on together with a change that moves the table out of sight
        // (offset, size, sector size): the partitions then read are none (see the it.fails below).
        const asked = changes as { partscan?: unknown; offset?: unknown; sizeLimit?: unknown; sectorSize?: unknown } | null | undefined;
        fc.pre(typeof asked !== 'object' || asked === null || asked.partscan !== true || (asked.offset === undefined && asked.sizeLimit === undefined && asked.sectorSize === undefined));
        const device = attachSync(image, { hold });
        try {
          const ref = refTo(kind, device, stranger);
          const changed = sync ? resultOrLoopError(() => reconfigureSync(ref as number, changes as object)) : await settleOrLoopError(() => reconfigure(ref as number, changes as object));
          if ('value' in changed) {
            changedCount++;
            expect(changed.value.number).toBe(device.number);
          }
          resultOrLoopError(() => setCapacitySync(ref as number));
          const state = sync ? resultOrLoopError(() => infoSync(ref as number)) : await settleOrLoopError(() => info(ref as number));
          if ('value' in state) expect(state.value.number).toBe(device.number);
          const found = sync ? resultOrLoopError(() => findSync(findArgument as string)) : await settleOrLoopError(() => find(findArgument as string));
          if ('value' in found) expect(Array.isArray(found.value)).toBe(true);
          const listed = sync ? resultOrLoopError(() => listSync()) : await settleOrLoopError(() => list());
          if ('value' in listed) expect(listed.value.every((entry) => Number.isInteger(entry.number))).toBe(true);
        } finally {
          await release(device);
        }
      }),
      fuzzParameters(RECONFIGURE_RUNS, { kernel: true }),
    );
    expect(changedCount).toBeGreaterThan(fuzzRuns(RECONFIGURE_RUNS) / 5);
  });

  // Found by the property above: the addon's rescanPartitions answered RangeError for the empty
  // result array of a table with no partitions (an empty Float64Array has no data pointer), and
  // its async form never settled, leaving the device bound.
  it('reconfigure moves a partscan device to where no partition table is (native rescanPartitions: RangeError on an empty result array)', () => {
    const device = attachSync(image, { partscan: true });
    try {
      expect(reconfigureSync(device, { offset: 4096 }).offset).toBe(4096);
    } finally {
      device.detachSync({ wait: RELEASE_WAIT_MS });
      expect(devicesBackedBy(dir.path)).toEqual([]);
    }
  });

  // Found by the detach/close property: closeFlow let go of a held fd first and read `wait` only
  // afterwards, and only when the device was still bound; other keys were never looked at.
  it('close() of a held handle refuses bad options before letting go (detach.ts reads them after closing)', () => {
    const device = attachSync(image, { hold: true });
    try {
      expect(resultOrLoopError(() => device.closeSync({ wait: 'soon', bogus: 1 } as object))).toMatchObject({ error: { code: 'ERR_LOOP_INVALID_OPTION' } });
    } finally {
      device.detachSync({ wait: RELEASE_WAIT_MS });
      expect(devicesBackedBy(dir.path)).toEqual([]);
    }
  });

  it('addDevice and removeDevice refuse every number that is not a device number before any ioctl', () => {
    fc.assert(
      fc.property(anyValue, (value) => {
        // Valid numbers would add or remove devices other tests use: only the others are given.
        fc.pre(!(typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0xfffff));
        for (const call of [addDeviceSync, removeDeviceSync]) {
          const outcome = resultOrLoopError(() => call(value as number));
          expect('error' in outcome && outcome.error.code).toBe('ERR_LOOP_INVALID_ARGUMENT');
        }
      }),
      fuzzParameters(100),
    );
  });

  const mkfs = findTool('mkfs.ext4');

  it.runIf(mkfs !== null)('mountSync and unmountSync: any options work or give a LoopError, and nothing stays mounted or bound', () => {
    const fsImage = join(dir.path, 'fs.img');
    execFileSync(mkfs!, ['-q', '-F', fsImage, '4M'], { stdio: 'ignore' });
    const target = join(dir.path, 'mnt');
    mkdirSync(target);
    // Each kind of failure now and then (1 in 8), so that most runs mount.
    const rarely = <T,>(usual: fc.Arbitrary<T>, unusual: fc.Arbitrary<T>): fc.Arbitrary<T> => fc.oneof({ weight: 7, arbitrary: usual }, { weight: 1, arbitrary: unusual });
    const mountOptions = optionsOf({
      // 'ro'/'rw' in `options` against an explicit readOnly is refused: given now and then only.
      readOnly: sometimes(fc.boolean()),
      // mke2fs gives a 4 MiB image 1 KiB blocks: a 4096-byte sector or a moved start is EINVAL.
      offset: rarely(fc.constantFrom(0, 0n), fc.constant(512)),
      sizeLimit: fc.constantFrom(0, 4 * MiB, 4n * BigInt(MiB)),
      directIO: fc.constantFrom(false, 'prefer'),
      sectorSize: rarely(fc.constantFrom(512, 1024), fc.constant(4096)),
      inMemory: fc.boolean(),
      fstype: rarely(fc.constantFrom('ext4', undefined), fc.constantFrom('ext2', 'xfs', 'fuse.x', 'no such')),
      // The image has no partition table: any partition is ERR_LOOP_NO_PARTITION.
      partition: rarely(fc.constant(undefined), fc.constantFrom(1, 255, 0)),
      options: rarely(
        fc.constantFrom('', 'noatime', 'ro', 'rw,nosuid', 'errors=remount-ro', 'x-foo,comment=1', 'data=ordered'),
        fc.constantFrom('loop', 'bind', '"a,b"', 'no_such_option', 'ro,rw,ro'),
      ),
      nosuid: sometimes(fc.boolean()),
      nodev: fc.boolean(),
      noexec: fc.boolean(),
      mkdir: fc.boolean(),
      ...hooks,
    });
    const unmountOptions = optionsOf({ lazy: fc.boolean(), force: fc.boolean(), wait: fc.oneof(fc.constant(false), fc.integer({ min: 0, max: 50 })) });
    let mounts = 0;
    fc.assert(
      fc.property(mountOptions, unmountOptions, (options, unmountWith) => {
        const mounted = resultOrLoopError(() => mountSync(fsImage, target, options as object));
        try {
          if ('value' in mounted) {
            mounts++;
            expect(mountTable().filter((line) => line.mountPoint === target)).toHaveLength(1);
            resultOrLoopError(() => mounted.value.unmountSync(unmountWith as object));
          }
        } finally {
          if (mountTable().some((line) => line.mountPoint === target)) unmountSync(target, { wait: RELEASE_WAIT_MS });
          expect(mountTable().filter((line) => line.mountPoint === target)).toEqual([]);
          // An unmount told not to wait (wait: false, a few ms, lazy) returns before udev's
          // close, and the kernel releases the device at that close, as unmount says: bounded.
          expect(untilSync(() => devicesBackedBy(dir.path).length === 0, RELEASE_WAIT_MS)).toBe(true);
        }
      }),
      fuzzParameters(MOUNT_RUNS, { kernel: true }),
    );
    expect(mounts).toBeGreaterThan(fuzzRuns(MOUNT_RUNS) / 5);
  });

  it('createImage: any spec works (and its disposal leaves nothing) or gives a LoopError leaving nothing', async () => {
    // createImage makes its directory under os.tmpdir(): a private one here, so that what a run
    // leaves is seen apart from what other test files make at the same time.
    const privateTmp = join(dir.path, 'tmp');
    mkdirSync(privateTmp);
    const target = join(dir.path, 'image-mnt');
    const spec = optionsOf({
      size: fc.constantFrom<unknown>('1M', '4M', 4 * MiB, '64K', 1536, '1G', '-1M', '1.5M'),
      partitions: sometimes(fc.constantFrom('mbr', 'gpt')),
      layout: sometimes(fc.constantFrom<unknown>([{}], [{ size: '1M' }, {}], [{ size: 512 }], [], [{ size: '1M' }], [[]], Array.from({ length: 5 }, () => ({ size: '64K' })))),
      fstype: sometimes(fc.oneof({ weight: 3, arbitrary: fc.constant('ext4') }, { weight: 1, arbitrary: fc.constantFrom('no_such_fs', 'ext4 -x', '') })),
      mount: sometimes(fc.constantFrom<unknown>(false, true, target)),
      attach: sometimes(fc.constantFrom<unknown>({}, { readOnly: true }, { hold: true }, { sectorSize: 4096 }, { partscan: false }, { bogus: 1 })),
    }).map((value) => {
      // A mount path other than the suite's own would make a directory wherever it points.
      const asked = value as { mount?: unknown } | null;
      return typeof asked === 'object' && asked !== null && typeof asked.mount === 'string' ? { ...asked, mount: target } : value;
    });
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = privateTmp;
    let made = 0;
    try {
      await fc.assert(
        fc.asyncProperty(spec, async (asked) => {
          const outcome = await settleOrLoopError(() => createImage(asked as { size: string }));
          if ('value' in outcome) {
            made++;
            const image = outcome.value;
            expect(sysRead(image.device.number, 'loop/backing_file')).toBe(image.path);
            await image[Symbol.asyncDispose]();
            expect(existsSync(image.dir)).toBe(false);
          }
          expect(readdirSync(privateTmp)).toEqual([]);
          expect(mountTable().filter((line) => line.mountPoint.startsWith(dir.path))).toEqual([]);
          expect(devicesBackedBy(privateTmp)).toEqual([]);
        }),
        fuzzParameters(IMAGE_RUNS, { kernel: true }),
      );
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
    expect(made).toBeGreaterThan(fuzzRuns(IMAGE_RUNS) / 5);
  });
});

describe('properties of the pure option checks', () => {
  const words = fc.constantFrom('ro', 'rw', 'nosuid', 'suid', 'nodev', 'dev', 'noexec', 'exec', 'noatime', 'relatime', 'sync', 'defaults', 'x-a', 'comment=b', 'loop', 'offset=1', 'bind', 'shared', 'errors=remount-ro', '"', 'context="a,b"', '', '\0', 'x'.repeat(5000));
  const optionsText = fc.oneof(fc.array(words, { maxLength: 6 }).map((list) => list.join(',')), fc.string({ unit: 'binary', maxLength: 200 }));

  it('planMountFlags gives flags and at most one page of data, or a LoopError', () => {
    fc.assert(
      fc.property(optionsOf({ readOnly: fc.boolean(), nosuid: fc.boolean(), nodev: fc.boolean(), noexec: fc.boolean(), options: optionsText }), (options) => {
        // mount() hands it an object checked by optionsObject(), as here.
        const outcome = resultOrLoopError(() => planMountFlags(optionsObject(options)));
        if ('value' in outcome) {
          const { flags, data, readOnly } = outcome.value;
          expect(Number.isInteger(flags) && flags >= 0).toBe(true);
          expect(Buffer.byteLength(data)).toBeLessThanOrEqual(4095);
          expect(data.includes('\0')).toBe(false);
          expect(Boolean(flags & 1)).toBe(readOnly);
        }
      }),
      fuzzParameters(300),
    );
  });

  it('checkFsType and checkPartition take what fits and refuse the rest with a LoopError', () => {
    fc.assert(
      fc.property(fc.oneof(anyValue, fc.string({ maxLength: 70 })), (value) => {
        const fstype = resultOrLoopError(() => checkFsType(value));
        if ('value' in fstype && fstype.value !== null) expect(fstype.value).toMatch(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/);
        const partition = resultOrLoopError(() => checkPartition(value));
        if ('value' in partition && partition.value !== null) expect(Number.isInteger(partition.value) && partition.value >= 1 && partition.value <= 255).toBe(true);
      }),
      fuzzParameters(300),
    );
  });

  // Tokens the parser knows, mixed with sizes, numbers and noise.
  const token = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom('attach', 'detach', 'list', 'ls', 'info', 'find', 'set', 'set-capacity', 'change-backing', 'mount', 'umount', 'add', 'remove', 'help', '-h', '--help', '-V', '--version') },
    {
      weight: 4,
      arbitrary: fc.constantFrom('-r', '--read-only', '-o', '--offset', '--size-limit', '--sizelimit', '-b', '--sector-size', '--partscan', '-P', '--direct-io', '--in-memory', '--device', '--label', '--hold', '--json', '--verbose', '-v', '--columns', '--noheadings', '--raw', '--partition', '--fstype', '-t', '--options', '--mkdir', '--lazy', '--force', '--wait', '--autoclear', '--', '-', '--x', '--offset=', '--label=a\0b'),
    },
    { weight: 3, arbitrary: fc.constantFrom('0', '512', '1K', '1M', '1G', '1.5M', '1e3', '0x10', '-1', '9007199254740993', '18446744073709551616', 'auto', 'prefer', 'loop3', '/dev/loop3', '/tmp/none.img', 'ro,noatime', 'NAME,SIZE', 'BOGUS', '') },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
  );

  it('parseCommand turns any argv into a Command or a UsageError, never anything else', () => {
    fc.assert(
      fc.property(fc.array(token, { maxLength: 8 }), (argv) => {
        try {
          const command = parseCommand(argv);
          expect(typeof command.name).toBe('string');
        } catch (error) {
          if (!(error instanceof UsageError)) throw error;
          expect(error).not.toBeInstanceOf(LoopError);
        }
      }),
      fuzzParameters(1000),
    );
  });
});
