// Changing a device while it is attached, in-memory images, sector size from the GPT and
// paths without symbolic links, on the real kernel. What the kernel did is read back apart from
// the library: sysfs, `blockdev --getsize64`, the device's own bytes.
import { execFileSync } from 'node:child_process';
import { mkdirSync, openSync, closeSync, readFileSync, readSync, rmSync, symlinkSync, truncateSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { attach, attachSync, reconfigure, setCapacity, type LoopDevice } from '../lib/index';
import { forceLegacyConfigure } from '../lib/loop/attach';
import { fillPattern, findTool, writeGpt } from './helpers/images';
import { devicesBackedBy, mountsAt, privileged, readBytes, RELEASE_WAIT_MS, sysRead, suiteTempDir, udevRuns } from './helpers/kernel';

const MiB = 1024 * 1024;
const blockdevSize = (device: string): number => Number(execFileSync('blockdev', ['--getsize64', device], { encoding: 'utf8' }).trim());
const sysSize = (device: LoopDevice): number => Number(sysRead(device.number, 'size')) * 512;
const mksquashfs = findTool('mksquashfs');

describe.skipIf(!privileged())('changing a bound device', () => {
  const dir = suiteTempDir();

  it('setCapacity: after the file grows or shrinks, info(), sysfs and the block layer agree with it', async () => {
    const image = dir.image('capacity.img', 16 * MiB);
    await using device = await attach(image);
    truncateSync(image, 32 * MiB);
    expect(sysSize(device)).toBe(16 * MiB); // the kernel does not notice by itself
    expect((await device.setCapacity()).size).toBe(32 * MiB);
    expect(sysSize(device)).toBe(32 * MiB);
    expect(blockdevSize(device.path)).toBe(32 * MiB);
    truncateSync(image, 8 * MiB);
    expect(device.setCapacitySync().size).toBe(8 * MiB);
    expect(blockdevSize(device.path)).toBe(8 * MiB);
  });

  describe.each([false, true])('reconfigure (legacy configure path: %s)', (legacy) => {
    beforeAll(() => forceLegacyConfigure(legacy));
    afterAll(() => forceLegacyConfigure(false));

    it('offset, sizeLimit, label and autoclear change in place, as sysfs and the bytes show', async () => {
      const image = dir.image(`status-${legacy}.img`, 8 * MiB);
      const pattern = fillPattern(image, 0, 8 * MiB, 'status');
      // Held, so that autoclear can be turned off and on without the kernel releasing it at once.
      const device = await attach(image, { hold: true });
      const info = await device.reconfigure({ offset: 1 * MiB, sizeLimit: 2 * MiB, label: 'moved', autoclear: false });
      expect(info).toMatchObject({ offset: 1 * MiB, sizeLimit: 2 * MiB, size: 2 * MiB, label: 'moved', autoclear: false });
      expect(sysRead(device.number, 'loop/offset')).toBe(String(1 * MiB));
      expect(sysRead(device.number, 'loop/sizelimit')).toBe(String(2 * MiB));
      expect(sysRead(device.number, 'loop/autoclear')).toBe('0');
      expect(blockdevSize(device.path)).toBe(2 * MiB);
      expect(readBytes(device.path, 0, 4096)).toEqual(pattern.subarray(1 * MiB, 1 * MiB + 4096));
      expect(device.reconfigureSync({ autoclear: true, sizeLimit: 0 })).toMatchObject({ autoclear: true, size: 7 * MiB });
      expect(sysRead(device.number, 'loop/autoclear')).toBe('1');
      expect(await device.close()).toMatchObject({ released: true });
    });

    it('sectorSize and directIO (on a filesystem that has O_DIRECT), each read back', async () => {
      const image = dir.image(`dio-${legacy}.img`, 8 * MiB);
      await using device = await attach(image);
      expect((await device.reconfigure({ sectorSize: 4096 })).sectorSize).toBe(4096);
      expect(sysRead(device.number, 'queue/logical_block_size')).toBe('4096');
      expect((await device.reconfigure({ directIO: true })).directIO).toBe(true);
      expect(sysRead(device.number, 'loop/dio')).toBe('1');
      expect((await device.reconfigure({ directIO: false })).directIO).toBe(false);
      expect(sysRead(device.number, 'loop/dio')).toBe('0');
    });
  });

  it('refuses before any ioctl what the kernel cannot do, with a typed error that says what to do', async () => {
    const image = dir.image('refuse.img', 8 * MiB);
    await using device = await attach(image, { offset: 512 });
    const before = await device.info();
    const cases: [object, RegExp][] = [
      [{ partscan: false }, /cannot turn partition scanning off/],
      [{ directIO: true, sectorSize: 4096 }, /offset \(512\) to be a multiple of the sector size \(4096\)/],
      [{ sectorSize: 1000 }, /must be one of 512, 1024, 2048, 4096/],
      [{ label: 'x'.repeat(64) }, /at most 63 bytes/],
      [{ offset: -1 }, /non-negative/],
      [{ bogus: true }, /unknown reconfigure option 'bogus'/],
    ];
    for (const [changes, message] of cases) {
      const error = await reconfigure(device, changes).catch((thrown: unknown) => thrown);
      expect(error, JSON.stringify(changes)).toMatchObject({ code: 'ERR_LOOP_INVALID_OPTION' });
      expect((error as Error).message).toMatch(message);
    }
    expect(await device.info()).toEqual(before);
    // autoclear on a device nobody else has open: the kernel releases it at the change's own
    // close. Where udev runs, it may have the device open at that moment (it probes every device
    // that changed): then the change resolves, and the kernel releases the device at udev's close.
    const unheld = attachSync(dir.image('unheld.img', MiB));
    const outcome = await unheld.reconfigure({ autoclear: true }).catch((thrown: unknown) => thrown);
    if (!udevRuns() || outcome instanceof Error) {
      expect(outcome).toMatchObject({ code: 'ERR_LOOP_NOT_ATTACHED', message: expect.stringMatching(/released it at once/) });
    } else {
      expect(outcome).toMatchObject({ autoclear: true });
      expect(unheld.detachSync({ wait: RELEASE_WAIT_MS }).released).toBe(true);
    }
    expect(devicesBackedBy(join(dir.path, 'unheld.img'))).toEqual([]);
    const detached = attachSync(dir.image('gone.img', MiB));
    detached.detachSync();
    await expect(setCapacity(detached.number)).rejects.toMatchObject({ code: 'ERR_LOOP_NOT_ATTACHED' });
    await expect(detached.reconfigure({ label: 'x' })).rejects.toMatchObject({ code: 'ERR_LOOP_NOT_ATTACHED' });
  });

  it('partitions follow an offset change, and none are left after detach', async () => {
    // A GPT disk image 1 MiB into the file: at offset 0 there is no table.
    const disk = join(dir.path, 'disk.img');
    writeGpt(disk, 16 * MiB, [{ startBytes: 1 * MiB, sizeBytes: 4 * MiB }, { startBytes: 6 * MiB, sizeBytes: 4 * MiB }]);
    const image = dir.image('shifted.img', 17 * MiB);
    const fd = openSync(image, 'r+');
    writeSync(fd, readFileSync(disk), 0, 16 * MiB, 1 * MiB);
    closeSync(fd);
    const device = await attach(image, { partscan: true });
    expect((await device.info()).partitions).toEqual([]);
    const info = await device.reconfigure({ offset: 1 * MiB });
    expect(info.partitions.map((part) => [part.number, part.start, part.size])).toEqual([
      [1, 1 * MiB, 4 * MiB],
      [2, 6 * MiB, 4 * MiB],
    ]);
    expect(sysRead(device.number, `loop${device.number}p2/start`)).toBe(String((6 * MiB) / 512));
    expect((await device.detach({ wait: RELEASE_WAIT_MS })).released).toBe(true);
    expect(sysRead(device.number, `loop${device.number}p1/start`)).toBeUndefined();
  });

  it('partscan turned on makes the partition devices of the table, whether or not the kernel has a parser for it', async () => {
    const image = join(dir.path, 'later.img');
    writeGpt(image, 16 * MiB, [{ startBytes: 1 * MiB, sizeBytes: 4 * MiB }]);
    const device = await attach(image);
    try {
      expect(sysRead(device.number, 'loop/partscan')).toBe('0');
      const info = await device.reconfigure({ partscan: true });
      expect(sysRead(device.number, 'loop/partscan')).toBe('1');
      expect(info.partitions.map((part) => [part.number, part.start, part.size])).toEqual([[1, 1 * MiB, 4 * MiB]]);
      expect(sysRead(device.number, `loop${device.number}p1/start`)).toBe(String((1 * MiB) / 512));
      expect(sysRead(device.number, `loop${device.number}p1/size`)).toBe(String((4 * MiB) / 512));
    } finally {
      expect((await device.detach({ wait: RELEASE_WAIT_MS })).released).toBe(true);
    }
    expect(sysRead(device.number, `loop${device.number}p1/start`)).toBeUndefined();
  });
});

describe.skipIf(!privileged())('changeBacking', () => {
  const dir = suiteTempDir();

  it('swaps the file of a read-only device for one of the same size: its bytes are read through the device, and the handle follows it', async () => {
    const first = dir.image('first.img', 4 * MiB);
    const second = dir.image('second.img', 4 * MiB);
    fillPattern(first, 0, 4096, 'first');
    const expected = fillPattern(second, 0, 4096, 'second');
    await using device = await attach(first, { readOnly: true });
    // Open across the change, with the old file's bytes read through it, as udev's probe has it
    // after an attach: the device's page cache (dropped at its last close) holds them, and
    // kernels before 5.15 kept them across LOOP_CHANGE_FD.
    const reader = openSync(device.path, 'r');
    try {
      readSync(reader, Buffer.alloc(4096), 0, 4096, 0);
      const info = await device.changeBacking(second);
      expect(info.backingFile).toBe(second);
      expect(sysRead(device.number, 'loop/backing_file')).toBe(second);
      expect(readBytes(device.path, 0, 4096)).toEqual(expected);
    } finally {
      closeSync(reader);
    }
    // The handle's identity moved too: it detaches the device it now has.
    expect(await device.detach()).toMatchObject({ wasBound: true, released: true });
    expect(devicesBackedBy(second)).toEqual([]);
  });

  it('refuses a writable device and a file of another size, before the kernel answers EINVAL', async () => {
    const image = dir.image('writable.img', 4 * MiB);
    const other = dir.image('other-size.img', 8 * MiB);
    const same = dir.image('same-size.img', 4 * MiB);
    await using writable = await attach(image);
    await expect(writable.changeBacking(same)).rejects.toMatchObject({ code: 'ERR_LOOP_INVALID_ARGUMENT', message: expect.stringMatching(/writable: .*readOnly: true/) });
    await using readOnly = await attach(image, { readOnly: true });
    expect(() => readOnly.changeBackingSync(other)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_ARGUMENT', message: expect.stringMatching(/8388608 bytes, not its 4194304/) }));
    expect(sysRead(readOnly.number, 'loop/backing_file')).toBe(image);
  });
});

describe.skipIf(!privileged())('direct I/O that does not stick', () => {
  const dir = suiteTempDir();
  let mountPoint = '';

  beforeAll(() => {
    if (mksquashfs === null) return;
    // A file on squashfs, which has no O_DIRECT: the kernel leaves such a device buffered.
    mkdirSync(join(dir.path, 'tree'));
    writeFileSync(join(dir.path, 'tree', 'inner.img'), Buffer.alloc(4 * MiB, 7));
    execFileSync(mksquashfs, [join(dir.path, 'tree'), join(dir.path, 'tree.sqfs'), '-quiet', '-noappend', '-no-progress']);
    mountPoint = join(dir.path, 'sqfs');
    mkdirSync(mountPoint);
    execFileSync('mount', ['-o', 'loop,ro', join(dir.path, 'tree.sqfs'), mountPoint]);
  });

  afterAll(() => {
    if (mountPoint !== '' && mountsAt(mountPoint).length > 0) execFileSync('umount', [mountPoint]);
  });

  it.skipIf(mksquashfs === null)('directIO: true is ERR_LOOP_SETTING_IGNORED and leaves nothing bound; "prefer" attaches buffered and says so (needs mksquashfs)', async () => {
    const inner = join(mountPoint, 'inner.img');
    const error = await attach(inner, { readOnly: true, directIO: true }).catch((thrown: unknown) => thrown);
    expect(error).toMatchObject({ code: 'ERR_LOOP_SETTING_IGNORED', message: expect.stringMatching(/directIO did not take .*'prefer'/) });
    expect(devicesBackedBy(inner)).toEqual([]);
    await using device = await attach(inner, { readOnly: true, directIO: 'prefer' });
    expect((await device.info()).directIO).toBe(false);
    expect(sysRead(device.number, 'loop/dio')).toBe('0');
    await expect(device.reconfigure({ directIO: true })).rejects.toMatchObject({ code: 'EINVAL', syscall: 'ioctl(LOOP_SET_DIRECT_IO)', message: expect.stringMatching(/'prefer' accepts buffered I\/O/) });
    expect((await device.reconfigure({ directIO: 'prefer' })).directIO).toBe(false);
  });

  it("'prefer' on a filesystem with O_DIRECT takes it", async () => {
    await using device = await attach(dir.image('prefer.img', MiB), { directIO: 'prefer' });
    expect((await device.info()).directIO).toBe(true);
  });
});

describe.skipIf(!privileged())('in-memory images', () => {
  const dir = suiteTempDir();

  it('inMemory: the device keeps the old bytes after the file is deleted, and writes never reach the file', async () => {
    const image = dir.image('memory.img', 4 * MiB);
    const expected = fillPattern(image, 0, 4096, 'memory');
    const device = await attach(image, { inMemory: true });
    try {
      expect(devicesBackedBy(image)).toEqual([]);
      expect(sysRead(device.number, 'loop/backing_file')).toMatch(/^\/memfd:loopdev:memory\.img \(deleted\)$/);
      expect((await device.info()).label).toBe(`memory:${image}`);
      writeFileSync(join(dir.path, 'copy-of-original.bin'), readFileSync(image));
      writeFileSync(device.path, Buffer.alloc(512, 0xee), { flag: 'r+' });
      expect(readFileSync(image).subarray(0, 4096)).toEqual(expected);
      unlinkSync(image);
      expect(readBytes(device.path, 512, 4096 - 512)).toEqual(expected.subarray(512));
      expect(readBytes(device.path, 0, 512)).toEqual(Buffer.alloc(512, 0xee));
    } finally {
      await device.detach();
    }
  });

  it('a Buffer is attached as the device bytes; direct I/O and reuse are refused with it', async () => {
    const bytes = Buffer.alloc(2 * MiB, 0x5a);
    await using device = await attach(bytes, { label: 'from bytes' });
    expect(await device.info()).toMatchObject({ size: 2 * MiB, label: 'from bytes' });
    expect(readBytes(device.path, MiB, 16)).toEqual(Buffer.alloc(16, 0x5a));
    await expect(attach(bytes, { directIO: true })).rejects.toMatchObject({ code: 'ERR_LOOP_INVALID_OPTION' });
    await expect(attach(bytes, { reuse: true })).rejects.toMatchObject({ code: 'ERR_LOOP_INVALID_OPTION' });
    await expect(attach(Buffer.alloc(0))).rejects.toMatchObject({ code: 'ERR_LOOP_INVALID_ARGUMENT' });
  });
});

describe.skipIf(!privileged())('sectorSize: auto and noFollow', () => {
  const dir = suiteTempDir();

  it.each([512, 4096])("sectorSize 'auto' takes %i from the image's GPT (512 without one)", async (sectorSize) => {
    const image = join(dir.path, `gpt-${sectorSize}.img`);
    writeGpt(image, 16 * MiB, [{ startBytes: 1 * MiB, sizeBytes: 4 * MiB }], sectorSize);
    // hold: a writable device whose read-write fd stays open, so that udev does not re-read its
    // table right after attach (the blip README's Partitions section measures) while this reads it.
    await using device = await attach(image, { sectorSize: 'auto', partscan: true, hold: true });
    const info = await device.info();
    expect(info.sectorSize).toBe(sectorSize);
    expect(sysRead(device.number, 'queue/logical_block_size')).toBe(String(sectorSize));
    expect(info.partitions.map((part) => [part.number, part.start, part.size])).toEqual([[1, 1 * MiB, 4 * MiB]]);
    await using plain = await attach(dir.image(`plain-${sectorSize}.img`, MiB), { sectorSize: 'auto' });
    expect((await plain.info()).sectorSize).toBe(512);
  });

  it('noFollow refuses a symlinked file and a symlinked directory in the path, and takes a plain one', async () => {
    const real = dir.image('real.img', MiB);
    mkdirSync(join(dir.path, 'realdir'));
    const inside = dir.image('realdir/inside.img', MiB);
    symlinkSync(real, join(dir.path, 'file-link.img'));
    symlinkSync(join(dir.path, 'realdir'), join(dir.path, 'dir-link'));
    for (const path of [join(dir.path, 'file-link.img'), join(dir.path, 'dir-link', 'inside.img')]) {
      const error = await attach(path, { noFollow: true }).catch((thrown: unknown) => thrown);
      expect(error, path).toMatchObject({ code: 'ELOOP', message: expect.stringMatching(/has a symbolic link in it/) });
    }
    expect(devicesBackedBy(dir.path)).toEqual([]);
    await using device = await attach(inside, { noFollow: true });
    expect(sysRead(device.number, 'loop/backing_file')).toBe(inside);
    // Without noFollow the link is followed, as before.
    await using followed = await attach(join(dir.path, 'file-link.img'));
    expect(sysRead(followed.number, 'loop/backing_file')).toBe(real);
    rmSync(join(dir.path, 'dir-link'));
  });
});
