// Safe by construction: the promises that must hold whatever the timing. One fd closed by one
// owner; the file bound is the file asked for; no loop ioctl on a device nobody verified; exact
// identities; nothing left bound when an attach's result cannot be delivered.
import { execFileSync } from 'node:child_process';
import { closeSync, fstatSync, mkdirSync, openSync, renameSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { attach, attachSync, find, findSync, info, LoopError, mount, type LoopDevice } from '../lib/index';
import { addon as native, ATTACH, ATTACH_MODE } from '../lib/core/addon';
import { kBinding } from '../lib/loop/binding';
import { writeGpt } from './helpers/images';
import { devicesBackedBy, privileged, RELEASE_WAIT_MS, repetitions, sysRead, tempDir, testTime, type TempDir } from './helpers/kernel';

const MiB = 1024 * 1024;
const ROUNDS = Number(process.env.LOOPDEV_STRESS_ROUNDS ?? repetitions(40, 10));

/** Settled results that are failures, as [code, message]. */
const failures = (results: PromiseSettledResult<unknown>[]): [string, string][] =>
  results.filter((result): result is PromiseRejectedResult => result.status === 'rejected').map((result) => [(result.reason as LoopError).code, String(result.reason)]);

describe.skipIf(!privileged())('safe by construction', () => {
  let dir: TempDir;
  let image: string;

  beforeAll(() => {
    dir = tempDir('loopdev-safety-');
    image = dir.image('plain.img', 4 * MiB);
  });

  afterAll(() => {
    dir.remove();
  });

  describe('one owner per fd', () => {
    let worker: Worker;
    let asked = 0;
    const answers = new Map<number, (outcome: { code?: string }) => void>();

    beforeAll(() => {
      // A worker that detaches by number whatever the main thread asks: a second thread racing
      // the handle's own detach and close. Only while the device is still bound to this test's
      // image: once the others have released it, other test files running beside this one may
      // be given its number, and a detach by number would release their device. (The look and
      // the detach are two steps: this narrows that window to the instant between them.)
      worker = new Worker(
        `const { parentPort } = require('node:worker_threads');
         const { readFileSync } = require('node:fs');
         const loopdev = require(${JSON.stringify(join(__dirname, '..', 'dist', 'index.js'))});
         const boundTo = (number) => { try { return readFileSync('/sys/block/loop' + number + '/loop/backing_file', 'utf8').trim(); } catch { return ''; } };
         parentPort.on('message', ({ id, number, image }) => (boundTo(number) === image ? loopdev.detach(number, { wait: false }) : Promise.reject(Object.assign(new Error('not attached'), { code: 'ERR_LOOP_NOT_ATTACHED' }))).then(
           () => parentPort.postMessage({ id }), (error) => parentPort.postMessage({ id, code: error.code })));`,
        { eval: true },
      );
      worker.on('message', ({ id, code }: { id: number; code?: string }) => answers.get(id)?.({ code }));
    });

    afterAll(async () => {
      await worker.terminate();
    });

    const detachInWorker = (number: number): Promise<{ code?: string }> =>
      new Promise((resolve) => {
        const id = ++asked;
        answers.set(id, resolve);
        worker.postMessage({ id, number, image });
      });

    it(`detach, close, reconfigure and info of one held handle at once, and a worker's detach, never close a stranger's fd (${ROUNDS} rounds)`, async () => {
      const strangers = [0, 1, 2, 3].map((index) => {
        const file = join(dir.path, `stranger-${index}`);
        writeFileSync(file, `stranger ${index}`);
        return { file, inode: statSync(file).ino };
      });
      const seen: [string, string][] = [];
      for (let round = 0; round < ROUNDS; round++) {
        const device = await attach(image, { hold: true });
        const opened: Promise<import('node:fs/promises').FileHandle>[] = [];
        const results = await Promise.allSettled([
          device.detach({ wait: RELEASE_WAIT_MS }),
          (opened.push(open(strangers[0]!.file)), device.close({ wait: RELEASE_WAIT_MS })),
          (opened.push(open(strangers[1]!.file)), device.reconfigure({ label: `round ${round}` })),
          (opened.push(open(strangers[2]!.file)), device.info()),
          (opened.push(open(strangers[3]!.file)), detachInWorker(device.number).then(({ code }) => {
            if (code !== undefined && code !== 'ERR_LOOP_NOT_ATTACHED') throw Object.assign(new Error(code), { code });
          })),
        ]);
        seen.push(...failures(results));
        // Each unrelated file is still open, on its own file: no fd number of theirs was closed or reused under them.
        const handles = await Promise.all(opened);
        handles.forEach((handle, index) => expect(fstatSync(handle.fd).ino).toBe(strangers[index]!.inode));
        await Promise.all(handles.map((handle) => handle.close()));
        expect(device.released).toBe(true);
      }
      // A change or a look at a device that the others let go of meanwhile is refused as such, never EBADF.
      for (const [code, message] of seen) expect(['ERR_LOOP_NOT_ATTACHED', 'ERR_LOOP_REUSED'], message).toContain(code);
      expect(devicesBackedBy(image)).toEqual([]);
    });

    it('an fd the addon does not own is refused (EBADF), never used', () => {
      const device = attachSync(image, { hold: true });
      try {
        const file = join(dir.path, 'not-a-device');
        writeFileSync(file, 'x');
        const stranger = openSync(file, 'r') as number;
        try {
          const out = new Float64Array(16);
          expect(() => native.detach.sync(device.number, undefined, stranger, false, 0, 0, 0, undefined, out)).toThrow(expect.objectContaining({ code: 'EBADF' }));
          expect(fstatSync(stranger).ino).toBe(statSync(file).ino);
        } finally {
          closeSync(stranger);
        }
      } finally {
        expect(device.closeSync({ wait: RELEASE_WAIT_MS }).released).toBe(true);
      }
    });
  });

  describe('the file bound is the file asked for', () => {
    /** An absolute path under the test's dir of exactly `bytes` bytes of UTF-8 (nested directories of at most 200 bytes each). */
    function pathOfLength(bytes: number, tail: string): { path: string; prefix: string } {
      let prefix = join(dir.path, 'long');
      const tailBytes = Buffer.byteLength(tail);
      while (Buffer.byteLength(prefix) + 1 + 200 + tailBytes < bytes) prefix = join(prefix, 'd'.repeat(200));
      mkdirSync(prefix, { recursive: true });
      const fill = bytes - Buffer.byteLength(prefix) - 1 - tailBytes;
      return { path: `${prefix}/${'f'.repeat(fill)}${tail}`, prefix: `${prefix}/${'f'.repeat(fill)}` };
    }

    it.each([4095, 4096, 4097])('a path of %i bytes ending in a multibyte character is refused with ENAMETOOLONG, never cut to a file that exists', async (bytes) => {
      const { path, prefix } = pathOfLength(bytes, '€');
      // The file a cut path would name: it must not be attached instead.
      writeFileSync(prefix, '');
      truncateSync(prefix, MiB);
      try {
        if (bytes < 4096) {
          // Within PATH_MAX: the kernel answers for the (missing) file itself.
          await expect(attach(path)).rejects.toMatchObject({ code: 'ENOENT' });
        } else {
          await expect(attach(path)).rejects.toMatchObject({ code: 'ENAMETOOLONG', path });
          expect(() => attachSync(path, { readOnly: true })).toThrow(expect.objectContaining({ code: 'ENAMETOOLONG' }));
          // The addon's own reader refuses it too, whatever lib/ checked.
          expect(() => native.openBacking.sync(path, true, false)).toThrow(expect.objectContaining({ code: 'ENAMETOOLONG' }));
        }
        expect(devicesBackedBy(prefix)).toEqual([]);
      } finally {
        rmSync(prefix);
      }
    });

    it('a rename while attach retries: the file that was opened is the one bound and the one whose table is read', async () => {
      const original = join(dir.path, 'renamed.img');
      const moved = join(dir.path, 'renamed-away.img');
      writeFileSync(original, '');
      truncateSync(original, 8 * MiB);
      writeGpt(original, 8 * MiB, [{ startBytes: MiB, sizeBytes: 2 * MiB }]);
      const decoy = join(dir.path, 'decoy.img');
      writeFileSync(decoy, '');
      truncateSync(decoy, 8 * MiB);
      writeGpt(decoy, 8 * MiB, [{ startBytes: MiB, sizeBytes: MiB }, { startBytes: 2 * MiB, sizeBytes: MiB }, { startBytes: 3 * MiB, sizeBytes: MiB }]);
      const real = native.attach.async;
      let calls = 0;
      const spy = vi.spyOn(native.attach, 'async').mockImplementation(async (...args) => {
        if (++calls === 1) {
          // The first attempt loses its device to someone else; meanwhile the path is renamed
          // away and another image put in its place.
          renameSync(original, moved);
          renameSync(decoy, original);
          throw LoopError.system(16, 'ioctl(LOOP_CONFIGURE)', '/dev/loop0', { device: 0, stage: 'configure' });
        }
        return real(...args);
      });
      let device: LoopDevice | undefined;
      try {
        device = await attach(original, { partscan: true });
        expect(calls).toBeGreaterThanOrEqual(3); // the lost attempt, the table probe, the bind
      } finally {
        spy.mockRestore();
      }
      try {
        expect(sysRead(device.number, 'loop/backing_file')).toBe(moved);
        const found = await info(device);
        expect(found.partitions.map((part) => [part.start, part.size])).toEqual([[MiB, 2 * MiB]]);
      } finally {
        expect((await device.detach({ wait: RELEASE_WAIT_MS })).released).toBe(true);
        rmSync(moved);
        rmSync(original);
      }
    });

    describe('noFollow is kept by every option that opens the file', () => {
      let link: string;
      beforeAll(() => {
        link = join(dir.path, 'link.img');
        symlinkSync(image, link);
      });

      it.each([
        ['nothing else', {}],
        ['readOnly', { readOnly: true }],
        ['inMemory', { inMemory: true }],
        ['reuse', { reuse: true }],
        ["sectorSize 'auto'", { sectorSize: 'auto' as const }],
        ['partscan', { partscan: true }],
        ['hold', { hold: true }],
        ['directIO prefer', { directIO: 'prefer' as const }],
      ])('%s', async (_name, options) => {
        await expect(attach(link, { noFollow: true, ...options })).rejects.toMatchObject({ code: 'ELOOP' });
        expect(() => attachSync(link, { noFollow: true, ...options })).toThrow(expect.objectContaining({ code: 'ELOOP' }));
        expect(devicesBackedBy(image)).toEqual([]);
      });

      it('mount', async () => {
        const target = join(dir.path, 'nofollow-mount');
        await expect(mount(link, target, { mkdir: true, noFollow: true })).rejects.toMatchObject({ code: 'ELOOP' });
        expect(devicesBackedBy(image)).toEqual([]);
      });
    });
  });

  describe('exact identities', () => {
    let layers: string;
    let merged: string;
    let mounted: string[] = [];

    beforeAll(() => {
      // overlayfs with xino=on over layers on two file systems puts a layer's number in an
      // inode's high bits: inodes past 2^53.
      layers = join(dir.path, 'overlay');
      for (const name of ['lower', 'upper']) {
        mkdirSync(join(layers, name), { recursive: true });
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', `loopdev-${name}`, join(layers, name)]);
        mounted.unshift(join(layers, name));
      }
      // Files of the lower layer get the layer's number in their high bits.
      for (const name of ['xino.img', 'xino-cli.img']) {
        writeFileSync(join(layers, 'lower', name), '');
        truncateSync(join(layers, 'lower', name), MiB);
      }
      mkdirSync(join(layers, 'upper', 'data'));
      mkdirSync(join(layers, 'upper', 'work'));
      merged = join(layers, 'merged');
      mkdirSync(merged);
      execFileSync('mount', ['-t', 'overlay', '-o', `lowerdir=${join(layers, 'lower')},upperdir=${join(layers, 'upper', 'data')},workdir=${join(layers, 'upper', 'work')},xino=on`, 'loopdev-overlay', merged]);
      mounted.unshift(merged);
    });

    afterAll(() => {
      for (const target of mounted) execFileSync('umount', [target]);
      mounted = [];
    });

    it('an image whose inode passes 2^53: info() and find() exact, detach() by device and inode (as without diskseq) works', async () => {
      const file = join(merged, 'xino.img');
      // Node reads st_ino as signed: 2^63 and up arrive negative.
      const { dev } = statSync(file, { bigint: true });
      const ino = BigInt.asUintN(64, statSync(file, { bigint: true }).ino);
      expect(ino > BigInt(Number.MAX_SAFE_INTEGER)).toBe(true);
      const device = await attach(file);
      try {
        const found = await info(device);
        expect(found.backingInode).toBe(ino);
        expect(found.backingDevice).toBe(Number(dev));
        expect((await find(file)).map((entry) => entry.number)).toEqual([device.number]);
        expect(findSync(file).map((entry) => entry.number)).toEqual([device.number]);
        // As on kernels before 5.15: the handle knows its binding by device and inode alone.
        device[kBinding].diskseq = 0;
      } finally {
        expect((await device.detach({ wait: RELEASE_WAIT_MS })).released).toBe(true);
      }
      expect(devicesBackedBy(merged)).toEqual([]);
    });

    it('the CLI prints such an inode exactly in JSON', async () => {
      const file = join(merged, 'xino-cli.img');
      const ino = BigInt.asUintN(64, statSync(file, { bigint: true }).ino);
      const device = await attach(file);
      try {
        const output = execFileSync(process.execPath, [join(__dirname, '..', 'dist', 'cli.js'), 'info', '--json', device.path], { encoding: 'utf8' });
        expect(output).toContain(`"backingInode": ${ino}`);
      } finally {
        expect((await device.detach({ wait: RELEASE_WAIT_MS })).released).toBe(true);
      }
    });
  });

  describe('nothing is left when an attach cannot be delivered', () => {
    it('a result array too short is refused before anything is bound (sync and async)', async () => {
      const fd = openSync(image, 'r+') as number;
      try {
        const control = native.openControl.sync();
        try {
          const short = new Float64Array(ATTACH.count - 1);
          const args = [control, -1, fd, image, 0, 0, 0, 0, undefined, ATTACH_MODE.lockControl, undefined, short] as const;
          expect(() => native.attach.sync(...args)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_ARGUMENT' }));
          expect(() => native.attach.async(...args)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_ARGUMENT' }));
          expect(devicesBackedBy(image)).toEqual([]);
        } finally {
          native.closeOwned.sync(control);
        }
      } finally {
        closeSync(fd);
      }
    }, testTime(10_000));
  });
});
