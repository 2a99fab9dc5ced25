// The loopdev/testing fixture: images are made, attached, formatted and mounted, and always
// cleaned up. Cleanup is checked against the kernel (sysfs, /proc/self/mountinfo) and the
// file system, not against what the fixture says.
import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { LoopError } from '../lib/index';
import { createImage, parseSize, withImage, type TestImage } from '../lib/testing/fixture';
import { findTool } from './helpers/images';
import { devicesBackedBy, privileged, readBytes, sysRead, until } from './helpers/kernel';

const MiB = 1024 * 1024;

const mountPoints = (): string[] =>
  readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split(' ')[4]!.replace(/\\040/g, ' '));

const mountLine = (target: string): { options: string[]; source: string; fstype: string } | undefined => {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n').reverse()) {
    const fields = line.split(' ');
    if (fields[4] !== target) continue;
    const dash = fields.indexOf('-');
    return { options: fields[5]!.split(','), fstype: fields[dash + 1]!, source: fields[dash + 2]! };
  }
  return undefined;
};

const fixtureDirs = (): string[] => readdirSync(tmpdir()).filter((name) => name.startsWith('loopdev-image-'));

/** ext4 superblock magic at byte 1080 of the filesystem: read straight from the node. */
const isExt4 = (node: string): boolean => readBytes(node, 1024 + 56, 2).readUInt16LE(0) === 0xef53;

/** Everything the fixture made for `image` is gone: device, mount, files. */
function expectCleanedUp(image: TestImage): void {
  // The image file is deleted, so sysfs would show "<path> (deleted)": match on the dir.
  expect(devicesBackedBy(image.dir)).toEqual([]);
  expect(existsSync(image.dir)).toBe(false);
  if (image.mountPoint !== null) expect(mountPoints()).not.toContain(image.mountPoint);
}

describe('parseSize', () => {
  it('reads bytes and K/M/G/T suffixes (powers of 1024)', () => {
    expect(parseSize(4096)).toBe(4096);
    expect(parseSize('512K')).toBe(512 * 1024);
    expect(parseSize('64M')).toBe(64 * MiB);
    expect(parseSize('1G')).toBe(1024 * MiB);
    expect(parseSize('2GiB')).toBe(2048 * MiB);
    expect(parseSize('1T')).toBe(1024 * 1024 * MiB);
    expect(() => parseSize('12Q')).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_ARGUMENT' }));
    expect(() => parseSize(-1)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_ARGUMENT' }));
  });
});

const mkfsExt4 = findTool('mkfs.ext4');

describe.skipIf(!privileged() || mkfsExt4 === null)('withImage and createImage on the real kernel', () => {
  const before = fixtureDirs();
  afterAll(() => {
    expect(fixtureDirs().filter((name) => !before.includes(name))).toEqual([]);
  });

  it('ext4 + mount: fn writes through the mount; afterwards nothing is attached, mounted or left on disk', async () => {
    let seen: TestImage | undefined;
    const result = await withImage({ size: '32M', fstype: 'ext4', mount: true }, async (image) => {
      seen = image;
      expect(image.path.startsWith(`${image.dir}/`)).toBe(true);
      expect(image.dir.startsWith(tmpdir())).toBe(true);
      expect(image.partitions).toEqual([]);
      expect(image.mountPoint).not.toBeNull();
      expect(sysRead(image.device.number, 'loop/backing_file')).toBe(image.path);
      expect(mountLine(image.mountPoint!)).toMatchObject({ source: image.device.path, fstype: 'ext4' });
      expect(mountLine(image.mountPoint!)!.options).toEqual(expect.arrayContaining(['rw', 'nosuid', 'nodev']));
      writeFileSync(join(image.mountPoint!, 'file.txt'), 'hello');
      expect(readFileSync(join(image.mountPoint!, 'file.txt'), 'utf8')).toBe('hello');
      return 42;
    });
    expect(result).toBe(42);
    expectCleanedUp(seen!);
  });

  it("fn's error propagates as it is, and cleanup still happened", async () => {
    let seen: TestImage | undefined;
    const failure = new Error('the test failed');
    await expect(
      withImage({ size: '16M', fstype: 'ext4', mount: true }, (image) => {
        seen = image;
        writeFileSync(join(image.mountPoint!, 'x'), 'x');
        throw failure;
      }),
    ).rejects.toBe(failure);
    expectCleanedUp(seen!);
  });

  it('GPT with two ext4 partitions: partition 1 is mounted, both are formatted', async () => {
    let seen: TestImage | undefined;
    await withImage(
      { size: '64M', partitions: 'gpt', layout: [{ size: '16M', fstype: 'ext4' }, { fstype: 'ext4' }], mount: true },
      (image) => {
        seen = image;
        const { number } = image.device;
        expect(sysRead(number, 'loop/partscan')).toBe('1');
        expect(image.partitions.map((part) => [part.path, part.start, part.size])).toEqual([
          [`/dev/loop${number}p1`, 1 * MiB, 16 * MiB],
          // 64 MiB minus the first MiB, the first partition and the GPT backup (33 sectors).
          [`/dev/loop${number}p2`, 17 * MiB, 64 * MiB - 17 * MiB - 33 * 512],
        ]);
        expect(isExt4(`/dev/loop${number}p1`)).toBe(true);
        expect(isExt4(`/dev/loop${number}p2`)).toBe(true);
        expect(mountLine(image.mountPoint!)).toMatchObject({ source: `/dev/loop${number}p1`, fstype: 'ext4' });
      },
    );
    expectCleanedUp(seen!);
  });

  it('MBR: a formatted partition and a raw one; no mount', async () => {
    let seen: TestImage | undefined;
    await withImage({ size: '32M', partitions: 'mbr', layout: [{ size: '8M', fstype: 'ext4' }, { size: '8M' }] }, (image) => {
      seen = image;
      expect(image.mountPoint).toBeNull();
      expect(image.partitions.map((part) => part.number)).toEqual([1, 2]);
      expect(isExt4(image.partitions[0]!.path)).toBe(true);
      expect(isExt4(image.partitions[1]!.path)).toBe(false);
    });
    expectCleanedUp(seen!);
  });

  it('createImage: `await using` disposes of it; a mount at a given path is removed with the dir it made', async () => {
    let seen: TestImage | undefined;
    const mountAt = join(tmpdir(), `loopdev-fixture-mnt-${process.pid}`, 'inner');
    {
      await using image = await createImage({ size: '16M', fstype: 'ext4', mount: mountAt });
      seen = image;
      expect(image.mountPoint).toBe(mountAt);
      expect(mountLine(mountAt)).toMatchObject({ source: image.device.path });
    }
    expectCleanedUp(seen!);
    expect(existsSync(join(tmpdir(), `loopdev-fixture-mnt-${process.pid}`))).toBe(false);
  });

  it('a file left open in the mount makes cleanup fail loudly, but nothing stays mounted', async () => {
    let seen: TestImage | undefined;
    let fd = -1;
    const error = await withImage({ size: '16M', fstype: 'ext4', mount: true }, (image) => {
      seen = image;
      fd = openSync(join(image.mountPoint!, 'leaked.txt'), 'w');
    }).catch((thrown: unknown) => thrown);
    try {
      // EBUSY from the unmount, then the device that the open file still holds: one LoopError
      // a caller can switch on, each failure kept.
      expect(error).toBeInstanceOf(LoopError);
      expect(error).toMatchObject({ code: 'ERR_LOOP_STILL_HELD' });
      expect((error as LoopError).errors!.map((e) => (e as LoopError).code)).toEqual(['EBUSY', 'ERR_LOOP_STILL_HELD']);
      expect((error as LoopError).cause).toBe((error as LoopError).errors![0]);
      expect(mountPoints()).not.toContain(seen!.mountPoint);
      expect(existsSync(seen!.dir)).toBe(false);
    } finally {
      closeSync(fd);
    }
    // The last close lets the kernel finish the lazy unmount and release the device.
    expect(await until(() => devicesBackedBy(seen!.dir).length === 0)).toBe(true);
  });

  it("when fn and cleanup both fail, an ERR_LOOP_STILL_HELD LoopError holds fn's error as cause and first in errors", async () => {
    let seen: TestImage | undefined;
    let fd = -1;
    const failure = new Error('assertion failed');
    const error = await withImage({ size: '16M', fstype: 'ext4', mount: true }, (image) => {
      seen = image;
      fd = openSync(join(image.mountPoint!, 'leaked.txt'), 'w');
      throw failure;
    }).catch((thrown: unknown) => thrown);
    closeSync(fd);
    expect(error).toBeInstanceOf(LoopError);
    expect(error).toMatchObject({ code: 'ERR_LOOP_STILL_HELD', cause: failure });
    expect((error as LoopError).errors![0]).toBe(failure);
    expect((error as Error).message).toContain('assertion failed');
    expect(await until(() => devicesBackedBy(seen!.dir).length === 0)).toBe(true);
  });

  it('a missing mkfs is ERR_LOOP_MISSING_TOOL, and what was made is undone', async () => {
    const dirs = fixtureDirs();
    await expect(createImage({ size: '8M', fstype: 'nosuchfs' })).rejects.toMatchObject({ code: 'ERR_LOOP_MISSING_TOOL' });
    expect(fixtureDirs()).toEqual(dirs);
  });

  it('a bad spec is refused before anything is made', async () => {
    const dirs = fixtureDirs();
    const cases: unknown[] = [
      { size: '12Q' },
      { size: 1000 },
      { size: '8M', bogus: 1 },
      { size: '8M', partitions: 'apm' },
      { size: '8M', layout: [{ size: '1M' }] },
      { size: '8M', partitions: 'gpt', layout: [{ size: '16M' }] },
      { size: '8M', partitions: 'gpt', layout: [{}, { size: '1M' }] },
      { size: '8M', partitions: 'mbr', layout: [{}, {}, {}, {}, {}] },
      { size: '8M', partitions: 'gpt', layout: [{ size: '1M', colour: 'red' }] },
      { size: '8M', fstype: 'ext4; rm -rf /' },
      { size: '8M', fstype: '../../bin/sh' },
      { size: '8M', mount: true },
      { size: '8M', fstype: 'ext4', attach: { readOnly: true } },
      { size: '8M', attach: { sectorSize: 3 } },
    ];
    for (const spec of cases) {
      await expect(withImage(spec as never, () => undefined), JSON.stringify(spec)).rejects.toMatchObject({ code: 'ERR_LOOP_INVALID_OPTION' });
    }
    expect(fixtureDirs()).toEqual(dirs);
  });

  describe.each([
    ['xfs', 'mkfs.xfs', '320M'],
    ['btrfs', 'mkfs.btrfs', '256M'],
    ['squashfs', 'mksquashfs', '8M'],
    ['erofs', 'mkfs.erofs', '8M'],
  ] as const)('%s', (fstype, tool, size) => {
    it.skipIf(findTool(tool) === null)(`is made and mounted (needs ${tool})`, async () => {
      let seen: TestImage | undefined;
      await withImage({ size, fstype, mount: true }, (image) => {
        seen = image;
        expect(mountLine(image.mountPoint!)).toMatchObject({ source: image.device.path, fstype });
      });
      expectCleanedUp(seen!);
    });
  });
});
