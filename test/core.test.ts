// Core behaviour against the real kernel: every option through both configure paths, both
// API forms, info/list/find, bad input, and the lazy release. The kernel's state is read
// independently of the library (sysfs, the device's bytes).
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, fstatSync, openSync, readdirSync, readlinkSync, symlinkSync, unlinkSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  attach,
  attachSync,
  detach,
  detachSync,
  find,
  findSync,
  info,
  infoSync,
  list,
  listSync,
  LoopDevice,
  LoopError,
  addDeviceSync,
  removeDeviceSync,
} from '../lib/index';
import { forceLegacyConfigure } from '../lib/loop/attach';
import { fillPattern } from './helpers/images';
import { devicesBackedBy, privileged, readBytes, sysBound, sysBoundTo, sysRead, suiteTempDir, udevRuns, until } from './helpers/kernel';

const MiB = 1024 * 1024;

describe.skipIf(!privileged())('core on the real kernel', () => {
  // Every image lives here; afterwards nothing may still be bound to one of them.
  const dir = suiteTempDir();

  describe.each([
    ['LOOP_CONFIGURE', '0'],
    ['LOOP_SET_FD', '1'],
  ] as const)('options through %s', (setupIoctl, legacy) => {
    beforeAll(() => {
      forceLegacyConfigure(legacy === '1');
    });
    afterAll(() => {
      forceLegacyConfigure(false);
    });

    it('plain attach: sysfs shows the file, reading the device gives its bytes', () => {
      const image = dir.image(`plain-${legacy}.img`, 8 * MiB);
      const written = fillPattern(image, 0, 64 * 1024, 'plain');
      const device = attachSync(image);
      try {
        expect(device.setupIoctl).toBe(setupIoctl);
        expect(device.path).toBe(`/dev/loop${device.number}`);
        expect(sysRead(device.number, 'loop/backing_file')).toBe(image);
        expect(Number(sysRead(device.number, 'size')) * 512).toBe(8 * MiB);
        expect(sysRead(device.number, 'ro')).toBe('0');
        expect(readBytes(device.path, 0, written.length).equals(written)).toBe(true);
      } finally {
        expect(detachSync(device)).toEqual({ path: device.path, wasBound: true, released: true });
      }
      expect(sysBoundTo(device.number, image)).toBe(false);
    });

    it('offset and sizeLimit: the device starts at the offset and is cut at the limit', async () => {
      const image = dir.image(`offset-${legacy}.img`, 8 * MiB);
      const written = fillPattern(image, MiB, 4096, 'offset');
      const device = await attach(image, { offset: MiB, sizeLimit: 2n * BigInt(MiB) });
      try {
        expect(sysRead(device.number, 'loop/offset')).toBe(String(MiB));
        expect(sysRead(device.number, 'loop/sizelimit')).toBe(String(2 * MiB));
        expect(Number(sysRead(device.number, 'size')) * 512).toBe(2 * MiB);
        expect(readBytes(device.path, 0, 4096).equals(written)).toBe(true);
        const status = await device.info();
        expect(status).toMatchObject({ offset: MiB, sizeLimit: 2 * MiB, size: 2 * MiB });
      } finally {
        await device.detach();
      }
    });

    it('readOnly: the device is read-only and refuses writes', () => {
      const image = dir.image(`ro-${legacy}.img`, 4 * MiB);
      const device = attachSync(image, { readOnly: true });
      try {
        expect(sysRead(device.number, 'ro')).toBe('1');
        expect(device.infoSync().readOnly).toBe(true);
        // Root may open it for writing; the write itself is refused.
        let fd = -1;
        try {
          fd = openSync(device.path, 'r+');
          expect(() => writeSync(fd, Buffer.alloc(512), 0, 512, 0)).toThrow(expect.objectContaining({ code: 'EPERM' }));
        } catch (error) {
          expect(error).toMatchObject({ code: expect.stringMatching(/^(EROFS|EACCES)$/) });
        } finally {
          if (fd >= 0) closeSync(fd);
        }
      } finally {
        device.detachSync();
      }
    });

    it('partscan, directIO, sectorSize and label are applied', () => {
      const image = dir.image(`flags-${legacy}.img`, 4 * MiB);
      const device = attachSync(image, { partscan: true, directIO: true, sectorSize: 4096, label: 'flags-test' });
      try {
        expect(sysRead(device.number, 'loop/partscan')).toBe('1');
        expect(sysRead(device.number, 'loop/dio')).toBe('1');
        expect(sysRead(device.number, 'queue/logical_block_size')).toBe('4096');
        expect(device.infoSync()).toMatchObject({ partscan: true, directIO: true, sectorSize: 4096, label: 'flags-test' });
      } finally {
        device.detachSync();
      }
    });

    it('the default label is the path cut to 63 bytes, never inside a UTF-8 character', () => {
      // A 3-byte character at bytes 62..64 of the path: a byte cut at 63 would split it.
      const padding = 62 - Buffer.byteLength(`${dir.path}/`) - legacy.length;
      expect(padding).toBeGreaterThan(0);
      const image = dir.image(`${legacy}${'a'.repeat(padding)}€€€.img`, MiB);
      const device = attachSync(image);
      try {
        const { label } = device.infoSync();
        expect(Buffer.byteLength(label)).toBe(62);
        expect(label).toBe(image.slice(0, image.indexOf('€')));
        expect(sysRead(device.number, 'loop/backing_file')).toBe(image);
      } finally {
        device.detachSync();
      }
    });

    it('autoclear: the handle holds the device and the kernel frees it when the handle closes', async () => {
      const image = dir.image(`autoclear-${legacy}.img`, 4 * MiB);
      const device = await attach(image, { autoclear: true });
      expect(device.held).toBe(true);
      expect(sysRead(device.number, 'loop/autoclear')).toBe('1');
      expect(await device.close()).toEqual({ path: device.path, wasBound: true, released: true });
      expect(sysBoundTo(device.number, image)).toBe(false);
    });

    it('close() of a held device that someone else opened a moment ago (as udev does) waits for their close and says so', async () => {
      const image = dir.image(`close-wait-${legacy}.img`, MiB);
      for (const form of ['async', 'sync'] as const) {
        const device = attachSync(image, { hold: true });
        const other = openSync(device.path, 'r');
        if (form === 'async') {
          setTimeout(() => closeSync(other), 150);
          expect(await device.close()).toEqual({ path: device.path, wasBound: true, released: true });
        } else {
          // The sync form blocks this thread: the other opener is a process that holds it 150 ms.
          closeSync(other);
          const child = spawn(process.execPath, ['-e', `require('fs').openSync(${JSON.stringify(device.path)}, 'r'); setTimeout(() => {}, 150)`]);
          const holding = (): boolean => {
            try {
              return readdirSync(`/proc/${child.pid}/fd`).some((fd) => readlinkSync(`/proc/${child.pid}/fd/${fd}`) === device.path);
            } catch {
              return false;
            }
          };
          expect(await until(holding)).toBe(true);
          expect(device.closeSync()).toEqual({ path: device.path, wasBound: true, released: true });
        }
        expect(sysBoundTo(device.number, image)).toBe(false);
      }
      // wait: false reports at once.
      const device = attachSync(image, { hold: true });
      const other = openSync(device.path, 'r');
      expect(await device.close({ wait: false })).toMatchObject({ released: false });
      closeSync(other);
      expect(await until(() => !sysBoundTo(device.number, image))).toBe(true);
    });
  });

  it('device: attaches to the device asked for, creating it when it does not exist', () => {
    const image = dir.image('device.img', MiB);
    // A number well above what exists, so LOOP_CTL_ADD has to create it.
    let number = 200 + Math.floor(Math.random() * 300);
    while (sysRead(number, 'dev') !== undefined) number++;
    const device = attachSync(image, { device: `/dev/loop${number}` });
    try {
      expect(device.number).toBe(number);
      expect(sysRead(number, 'loop/backing_file')).toBe(image);
    } finally {
      device.detachSync();
      removeDeviceSync(number);
    }
    expect(sysRead(number, 'dev')).toBeUndefined();
  });

  it('device: a device bound by someone else is EBUSY, not retried and not cleared', () => {
    const image = dir.image('busy.img', MiB);
    const first = attachSync(image);
    try {
      expect(() => attachSync(image, { device: first.number })).toThrow(
        expect.objectContaining({ code: 'EBUSY', syscall: 'ioctl(LOOP_CONFIGURE)', path: first.path }),
      );
      expect(sysRead(first.number, 'loop/backing_file')).toBe(image);
    } finally {
      first.detachSync();
    }
  });

  it('attaches an open fd or FileHandle, so an unlinked file can be used', async () => {
    const image = dir.image('unlinked.img', MiB);
    const written = fillPattern(image, 0, 512, 'unlinked');
    const handle = await open(image, 'r+');
    unlinkSync(image);
    try {
      const device = await attach(handle);
      expect(readBytes(device.path, 0, 512).equals(written)).toBe(true);
      expect(sysRead(device.number, 'loop/backing_file')).toBe(`${image} (deleted)`);
      await device.detach();
      const fd = openSync(`/proc/self/fd/${handle.fd}`, 'r+');
      try {
        const byFd = attachSync(fd);
        expect(fstatSync(fd).ino).toBe(byFd.infoSync().backingInode);
        byFd.detachSync();
      } finally {
        closeSync(fd);
      }
    } finally {
      await handle.close();
    }
  });

  it('a read-only fd without readOnly: true is refused and nothing stays bound', () => {
    const image = dir.image('rofd.img', MiB);
    const fd = openSync(image, 'r');
    try {
      expect(() => attachSync(fd)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_SETTING_IGNORED' }));
      expect(devicesBackedBy(image)).toEqual([]);
      const device = attachSync(fd, { readOnly: true });
      expect(sysRead(device.number, 'ro')).toBe('1');
      device.detachSync();
    } finally {
      closeSync(fd);
    }
  });

  it('await using detaches at the end of the block', async () => {
    const image = dir.image('using.img', MiB);
    let number = -1;
    {
      await using device = await attach(image);
      number = device.number;
      expect(sysBound(number)).toBe(true);
    }
    expect(sysBoundTo(number, image)).toBe(false);
    {
      using device = attachSync(image, { hold: true });
      number = device.number;
      expect(sysBound(number)).toBe(true);
    }
    expect(sysBoundTo(number, image)).toBe(false);
  });

  it('info, list and find report what sysfs reports', async () => {
    const image = dir.image('inspect.img', 4 * MiB);
    const link = `${dir.path}/inspect-link.img`;
    symlinkSync(image, link);
    const a = attachSync(image, { offset: 4096 });
    const b = await attach(image, { readOnly: true });
    try {
      for (const device of [a, b]) {
        const status = infoSync(device.path);
        expect(status.backingFile).toBe(sysRead(device.number, 'loop/backing_file'));
        expect(status.offset).toBe(Number(sysRead(device.number, 'loop/offset')));
        expect(status.size).toBe(Number(sysRead(device.number, 'size')) * 512);
        expect(status.readOnly).toBe(sysRead(device.number, 'ro') === '1');
        expect(`${status.major}:${status.minor}`).toBe(sysRead(device.number, 'dev'));
        // 0 on kernels without diskseq (before 5.15), which have no such file.
        expect(status.diskseq).toBe(Number(sysRead(device.number, 'diskseq') ?? 0));
        expect(await info(device.number)).toEqual(status);
      }
      // Other test files attach and detach in parallel: compare our own devices only.
      const all = listSync();
      const ours = all.filter((entry) => entry.number === a.number || entry.number === b.number);
      expect(ours.map((entry) => entry.backingFile)).toEqual([image, image]);
      expect(ours.map((entry) => entry.offset)).toEqual(
        [a, b].sort((x, y) => x.number - y.number).map((device) => Number(sysRead(device.number, 'loop/offset'))),
      );
      expect(all.map((entry) => entry.number)).toEqual([...all.map((entry) => entry.number)].sort((x, y) => x - y));
      expect((await list()).map((entry) => entry.number)).toEqual(expect.arrayContaining([a.number, b.number]));
      const expected = [a.number, b.number].sort((x, y) => x - y);
      expect(findSync(image).map((entry) => entry.number)).toEqual(expected);
      expect((await find(link)).map((entry) => entry.number)).toEqual(expected);
      expect(findSync(relative(process.cwd(), image)).map((entry) => entry.number)).toEqual(expected);
    } finally {
      a.detachSync();
      await b.detach();
    }
    expect(findSync(image)).toEqual([]);
  });

  it('info of an unbound device is ERR_LOOP_NOT_ATTACHED', () => {
    // A device of our own making that nobody else can be handed: a high number, created
    // and removed here, never bound.
    let number = 700 + Math.floor(Math.random() * 200);
    while (sysRead(number, 'dev') !== undefined) number++;
    addDeviceSync(number);
    try {
      expect(() => infoSync(number)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_NOT_ATTACHED', path: `/dev/loop${number}` }));
    } finally {
      removeDeviceSync(number);
    }
  });

  it('reuse: the same file and settings give the existing device; an overlapping range is refused', () => {
    const image = dir.image('reuse.img', 8 * MiB);
    const first = attachSync(image, { offset: MiB, sizeLimit: 2 * MiB });
    const others: LoopDevice[] = [];
    try {
      const again = attachSync(`${dir.path}/./reuse.img`, { offset: MiB, sizeLimit: 2 * MiB, reuse: true });
      expect(again.number).toBe(first.number);
      expect(again.setupIoctl).toBeNull();
      expect(devicesBackedBy(image)).toEqual([first.number]);

      expect(() => attachSync(image, { offset: 2 * MiB, reuse: true })).toThrow(
        expect.objectContaining({ code: 'ERR_LOOP_OVERLAP', path: first.path }),
      );
      expect(() => attachSync(image, { offset: MiB, sizeLimit: 2 * MiB, readOnly: true, reuse: true })).toThrow(
        expect.objectContaining({ code: 'ERR_LOOP_OVERLAP' }),
      );
      // A range that does not overlap gets a device of its own.
      others.push(attachSync(image, { offset: 4 * MiB, reuse: true }));
      expect(others[0].number).not.toBe(first.number);
      expect(() => attachSync(image, { reuse: true, hold: true })).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_OPTION' }));
    } finally {
      for (const device of others) device.detachSync();
      first.detachSync();
    }
  });

  it('detach of a device held open elsewhere says released: false, then the kernel frees it', async () => {
    const image = dir.image('held.img', MiB);
    const device = attachSync(image);
    const other = openSync(device.path, 'r');
    let closed = false;
    try {
      const result = await detach(device.path, { wait: 50 });
      expect(result).toEqual({ path: device.path, wasBound: true, released: false });
      expect(sysBound(device.number)).toBe(true);
      expect(sysRead(device.number, 'loop/autoclear')).toBe('1');
      closeSync(other);
      closed = true;
      expect(await until(() => !sysBoundTo(device.number, image))).toBe(true);
    } finally {
      if (!closed) closeSync(other);
    }
    // Twice: harmless, and it says there was nothing to do. Once the kernel has freed the
    // device, another test file running beside this one may have been given its number; then
    // the handle refuses to touch it, as it promises. (Not by number here: that would detach
    // whatever that other file bound.)
    for (let time = 0; time < 2; time++) {
      let result: unknown;
      try {
        result = detachSync(device);
      } catch (error) {
        expect(error).toMatchObject({ code: 'ERR_LOOP_REUSED', path: device.path });
        continue;
      }
      expect(result).toEqual({ path: device.path, wasBound: false, released: true });
    }
  });

  it('released: true is what sysfs says right after, for plain, held and by-path detaches', async () => {
    // detach() learns "we were the last opener" from the kernel instead of walking sysfs;
    // check every answer against sysfs, including while a second fd makes it false.
    const image = dir.image('released.img', MiB);
    const seen = { released: 0, held: 0 };
    for (let round = 0; round < 60; round++) {
      const device = attachSync(image, { hold: round % 3 === 1 });
      const other = round % 5 === 4 ? openSync(device.path, 'r') : -1;
      const result =
        round % 3 === 2 ? await detach(device.path, { wait: 0 }) : round % 2 === 0 ? device.detachSync({ wait: 0 }) : await device.detach({ wait: 0 });
      const boundAfter = sysBoundTo(device.number, image);
      if (other >= 0) closeSync(other);
      // released: true is never said of a bound device. false is said while any other opener
      // has it: our second fd, or udev probing it right after the attach, where udev runs.
      if (result.released) expect(boundAfter).toBe(false);
      if (other >= 0) expect(result.released).toBe(false);
      expect(result.wasBound).toBe(true);
      if (result.released) seen.released++;
      else seen.held++;
      if (!result.released) expect(await until(() => !sysBoundTo(device.number, image))).toBe(true);
    }
    expect(seen.released + seen.held).toBe(60);
    expect(seen.held).toBeGreaterThanOrEqual(12);
    if (!udevRuns()) expect(seen).toEqual({ released: 48, held: 12 });
  });

  it('a handle whose device someone else detached says there was nothing to do', () => {
    const image = dir.image('gone.img', MiB);
    // A number well above what GET_FREE hands out, so that no parallel test binds it meanwhile
    // (the handle would then rightly refuse with ERR_LOOP_REUSED).
    let number = 600 + Math.floor(Math.random() * 300);
    while (sysRead(number, 'dev') !== undefined) number++;
    const device = attachSync(image, { device: number });
    expect(detachSync(device.number)).toEqual({ path: device.path, wasBound: true, released: true });
    expect(device.detachSync()).toEqual({ path: device.path, wasBound: false, released: true });
    expect(sysBoundTo(device.number, image)).toBe(false);
    removeDeviceSync(number);
  });

  it('detach waits for a holder that lets go within the timeout', async () => {
    const image = dir.image('wait.img', MiB);
    const device = attachSync(image);
    const other = openSync(device.path, 'r');
    setTimeout(() => closeSync(other), 30);
    expect(await device.detach({ wait: 2000 })).toEqual({ path: device.path, wasBound: true, released: true });
    expect(sysBoundTo(device.number, image)).toBe(false);
  });

  it('a handle refuses to detach a device that was released and bound again by someone else', () => {
    const image = dir.image('reused-a.img', MiB);
    const other = dir.image('reused-b.img', MiB);
    const mine = attachSync(image);
    detachSync(mine.number); // behind the handle's back
    const stranger = attachSync(other, { device: mine.number });
    try {
      expect(() => mine.detachSync()).toThrow(expect.objectContaining({ code: 'ERR_LOOP_REUSED', path: mine.path }));
      expect(sysRead(mine.number, 'loop/backing_file')).toBe(other);
    } finally {
      stranger.detachSync();
    }
  });

  it('detach by a path of the caller\'s own (a symlink to the node) opens that path', () => {
    const image = dir.image('named.img', MiB);
    const device = attachSync(image);
    const link = `${dir.path}/named-loop`;
    symlinkSync(device.path, link);
    try {
      expect(detachSync(link)).toEqual({ path: link, wasBound: true, released: true });
      expect(sysBoundTo(device.number, image)).toBe(false);
    } finally {
      unlinkSync(link);
      if (sysBoundTo(device.number, image)) device.detachSync();
    }
  });

  it('detach refuses anything that is not a loop block device', () => {
    for (const path of ['/dev/null', '/dev/zero', '/dev/vda', '/dev/zram0']) {
      if (sysRead(0, 'dev') === undefined) continue;
      try {
        fstatSync(openSync(path, 'r'));
      } catch {
        continue;
      }
      expect(() => detachSync(path)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_NOT_LOOP_DEVICE' }));
      expect(() => infoSync(path)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_NOT_LOOP_DEVICE' }));
    }
  });

  describe('bad input is a typed LoopError before anything is attached', () => {
    let image: string;
    let fifo: string;
    beforeAll(() => {
      image = dir.image('bad-input.img', MiB);
      fifo = `${dir.path}/bad-input.fifo`;
      execFileSync('mkfifo', [fifo]);
    });
    // The FIFO's path is known only once the suite's directory exists.
    const fifoFields = { code: 'ERR_LOOP_INVALID_BACKING', get path() { return fifo; } };

    const cases: [string, () => unknown, Record<string, unknown>][] = [
      ['missing file', () => attachSync(`${dir.path}/nope.img`), { code: 'ENOENT', syscall: 'open' }],
      ['a directory', () => attachSync('/tmp'), { code: 'EISDIR', syscall: 'open', path: '/tmp' }],
      ['a directory, read-only', () => attachSync('/tmp', { readOnly: true }), { code: 'ERR_LOOP_INVALID_BACKING', path: '/tmp' }],
      ['a FIFO, read-only (no hang in open)', () => attachSync(fifo, { readOnly: true }), fifoFields],
      ['a FIFO', () => attachSync(fifo), fifoFields],
      ['a char device', () => attachSync('/dev/null'), { code: 'ERR_LOOP_INVALID_BACKING' }],
      ['an empty string', () => attachSync(''), { code: 'ERR_LOOP_INVALID_ARGUMENT' }],
      ['a NUL byte', () => attachSync('/tmp/a\0b'), { code: 'ERR_LOOP_INVALID_ARGUMENT' }],
      ['a non-string', () => attachSync({} as unknown as string), { code: 'ERR_LOOP_INVALID_ARGUMENT' }],
      ['a negative offset', () => attachSync(image, { offset: -1 }), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['a fractional offset', () => attachSync(image, { offset: 1.5 }), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['a NaN size limit', () => attachSync(image, { sizeLimit: NaN }), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['a huge offset', () => attachSync(image, { offset: 2n ** 64n }), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['an inexact number', () => attachSync(image, { sizeLimit: 2 ** 60 }), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['sector size 1234', () => attachSync(image, { sectorSize: 1234 as 512 }), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['an unknown option', () => attachSync(image, { readonly: true } as object), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['a non-boolean flag', () => attachSync(image, { readOnly: 'yes' as unknown as boolean }), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['a negative device', () => attachSync(image, { device: -1 }), { code: 'ERR_LOOP_INVALID_ARGUMENT' }],
      ['a fractional device', () => attachSync(image, { device: 1.5 }), { code: 'ERR_LOOP_INVALID_ARGUMENT' }],
      ['a device path that is not a loop', () => attachSync(image, { device: '/dev/sda' }), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['a too long label', () => attachSync(image, { label: 'x'.repeat(64) }), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['a label with a lone surrogate (no UTF-8 form)', () => attachSync(image, { label: 'half \uD800 a pair' }), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['a detach option typo', () => detachSync(0, { wiat: 5 } as object), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['a negative wait', () => detachSync(0, { wait: -5 }), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['a bad retry', () => attachSync(image, { retry: { attempts: 0 } }), { code: 'ERR_LOOP_INVALID_OPTION' }],
      ['an offset past the end (the kernel would make it 0 bytes)', () => attachSync(image, { offset: 4 * MiB }), { code: 'ERR_LOOP_INVALID_OPTION' }],
    ];
    it.each(cases)('%s', (_name, action, fields) => {
      let thrown: unknown;
      try {
        const device = action();
        if (device instanceof LoopDevice) device.detachSync();
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(LoopError);
      expect(thrown).toMatchObject(fields);
      expect((thrown as Error).message.length).toBeGreaterThan(10);
      if ((thrown as LoopError).errno !== undefined) expect((thrown as LoopError).errno).toBeLessThan(0);
      expect(devicesBackedBy(image)).toEqual([]);
    });

    it("reads only the options object's own keys, as Object.keys does", () => {
      // An inherited readOnly is not an option, and an inherited unknown name is not refused.
      const options = Object.create({ readOnly: true, bogus: 1 }) as { label: string };
      options.label = 'own keys';
      const device = attachSync(image, options);
      try {
        expect(sysRead(device.number, 'ro')).toBe('0');
        expect(device.infoSync().label).toBe('own keys');
      } finally {
        device.detachSync();
      }
      expect(devicesBackedBy(image)).toEqual([]);
    });

    it('rejects the async form the same way', async () => {
      await expect(attach(image, { sectorSize: 1000 as 512 })).rejects.toMatchObject({ code: 'ERR_LOOP_INVALID_OPTION' });
      await expect(attach('/tmp', { readOnly: true })).rejects.toMatchObject({ code: 'ERR_LOOP_INVALID_BACKING' });
      await expect(detach('/dev/null')).rejects.toMatchObject({ code: 'ERR_LOOP_NOT_LOOP_DEVICE' });
    });
  });

  it('reading the device writes through to the file', () => {
    const image = dir.image('write.img', MiB);
    const device = attachSync(image, { offset: 512 });
    try {
      const fd = openSync(device.path, 'r+');
      writeSync(fd, Buffer.from('through the device'), 0, 18, 0);
      closeSync(fd);
    } finally {
      device.detachSync();
    }
    expect(readBytes(image, 512, 18).toString()).toBe('through the device');
  });
});
