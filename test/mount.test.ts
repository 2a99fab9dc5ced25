// mount() and unmount() against the real kernel: real filesystems, real mounts. The kernel's
// state is read independently of the library (/proc/self/mountinfo, sysfs, /proc/self/fd).
// Mounts are visible machine-wide: every test unmounts what it mounted, in afterEach at the latest.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { LoopError, mount, mountSync, unmount, unmountSync, type MountedImage } from '../lib/index';
import { checkPartition, MS, planMountFlags } from '../lib/mount/options';
import { findTool, writeGpt, writeMbr } from './helpers/images';
import { devicesBackedBy, holdsFd, mountsAt, mountTable, privileged, sysRead, tempDir, until, type TempDir } from './helpers/kernel';

const MiB = 1024 * 1024;
const root = resolve(__dirname, '..');

/**
 * Whether loopN is still bound to `image`. Other test files (and other people) attach devices
 * concurrently, so a released number may be bound again at once: compare the backing file.
 */
const boundTo = (number: number, image: string): boolean => sysRead(number, 'loop/backing_file') === image;

const mkfsExt4 = findTool('mkfs.ext4');

describe('mount options (no kernel)', () => {
  it('defaults: nosuid and nodev, read-write, no data', () => {
    expect(planMountFlags({})).toEqual({ readOnly: false, flags: MS.NOSUID | MS.NODEV, data: '' });
  });

  it('flag words become flags, the rest is data; mount(8) words are dropped', () => {
    const plan = planMountFlags({ options: 'noatime,errors=remount-ro,defaults,x-systemd.automount,nofail,dirsync,lazytime,commit=7' });
    expect(plan.flags).toBe(MS.NOSUID | MS.NODEV | MS.NOATIME | MS.DIRSYNC | MS.LAZYTIME);
    expect(plan.data).toBe('errors=remount-ro,commit=7');
  });

  it('the last of a pair wins, and the booleans and the words agree or are refused', () => {
    expect(planMountFlags({ options: 'ro,rw,noexec' })).toMatchObject({ readOnly: false, flags: MS.NOSUID | MS.NODEV | MS.NOEXEC });
    expect(planMountFlags({ options: 'sync,async,atime' }).flags).toBe(MS.NOSUID | MS.NODEV);
    expect(planMountFlags({ options: 'ro,suid,dev' })).toEqual({ readOnly: true, flags: MS.RDONLY, data: '' });
    expect(planMountFlags({ readOnly: true, options: 'ro' }).flags & MS.RDONLY).toBe(MS.RDONLY);
    expect(() => planMountFlags({ nosuid: true, options: 'suid' })).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_OPTION' }));
    expect(() => planMountFlags({ readOnly: false, options: 'ro' })).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_OPTION' }));
  });

  it('commas inside double quotes stay in one option (SELinux contexts)', () => {
    expect(planMountFlags({ options: 'context="system_u:object_r:tmp_t:s0:c1,c2",noatime' }).data).toBe(
      'context="system_u:object_r:tmp_t:s0:c1,c2"',
    );
  });

  it('refuses what is not about mounting this image, and oversized data', () => {
    for (const options of ['loop', 'loop=/dev/loop3', 'offset=512', 'bind', 'remount', 'rshared', 'user']) {
      expect(() => planMountFlags({ options }), options).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_OPTION' }));
    }
    expect(() => planMountFlags({ options: `a=${'x'.repeat(5000)}` })).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_OPTION' }));
    expect(() => planMountFlags({ options: 3 })).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_OPTION' }));
  });

  it('a partition is a number from 1 to 255', () => {
    expect(checkPartition(undefined)).toBeNull();
    expect(checkPartition(1)).toBe(1);
    expect(checkPartition(255)).toBe(255);
    for (const value of [0, 256, 1.5, '2', NaN]) {
      expect(() => checkPartition(value), String(value)).toThrow(
        expect.objectContaining({ code: 'ERR_LOOP_INVALID_OPTION', message: expect.stringMatching(/^option 'partition' must be an integer from 1 to 255, got /) }),
      );
    }
  });
});

describe.skipIf(!privileged() || mkfsExt4 === null)('mount() and unmount() on the real kernel', () => {
  let dir: TempDir;
  const targets: string[] = [];

  /** A mount point inside the test dir; afterEach unmounts whatever is left on it. */
  function target(name: string): string {
    const path = join(dir.path, 'mnt', name);
    targets.push(path);
    return path;
  }

  function ext4Image(name: string, sizeBytes = 32 * MiB): string {
    const image = dir.image(name, sizeBytes);
    execFileSync(mkfsExt4!, ['-q', '-F', image]);
    return image;
  }

  beforeAll(() => {
    dir = tempDir();
  });

  afterEach(async () => {
    for (const path of targets.splice(0)) {
      while (mountsAt(path).length > 0) execFileSync('umount', ['-l', path]);
    }
  });

  afterAll(async () => {
    // Nothing this file attached may still be bound (a lazy release may take a moment).
    const released = await until(() => devicesBackedBy(dir.path).length === 0, 5000);
    const leaked = devicesBackedBy(dir.path);
    if (mountTable().every((line) => !line.mountPoint.startsWith(`${dir.path}/`))) dir.remove();
    expect(leaked).toEqual([]);
    expect(released).toBe(true);
  });

  it('ext4: read-write mount, write, unmount releases the device; read-only mount reads it back and refuses writes', async () => {
    const image = ext4Image('rw.img');
    const mnt = target('rw');
    const m = await mount(image, mnt, { fstype: 'ext4', mkdir: true });
    expect(m.target).toBe(mnt);
    expect(m.source).toBe(m.device.path);
    expect(m.partitionPath).toBeNull();
    expect(m.fstype).toBe('ext4');
    const [line] = mountsAt(mnt);
    expect(line).toMatchObject({ source: m.device.path, fstype: 'ext4' });
    expect(line!.options).toContain('rw');
    // The device is bound with autoclear, and the mount alone holds it: not one fd of ours.
    expect(sysRead(m.device.number, 'loop/backing_file')).toBe(image);
    expect(sysRead(m.device.number, 'loop/autoclear')).toBe('1');
    expect(sysRead(m.device.number, 'ro')).toBe('0');
    expect(holdsFd(m.device.path)).toBe(false);

    writeFileSync(join(mnt, 'hello.txt'), 'written through the mount\n');
    const number = m.device.number;
    const result = await m.unmount();
    expect(result).toEqual({ target: mnt, device: `/dev/loop${number}`, released: true });
    expect(mountsAt(mnt)).toEqual([]);
    expect(boundTo(number, image)).toBe(false);
    expect(devicesBackedBy(image)).toEqual([]);

    const ro = mountSync(image, mnt, { readOnly: true });
    try {
      expect(ro.fstype).toBe('ext4');
      expect(sysRead(ro.device.number, 'ro')).toBe('1');
      expect(sysRead(ro.device.number, 'loop/backing_file')).toBe(image);
      expect(mountsAt(mnt)[0]!.options).toContain('ro');
      expect(readFileSync(join(mnt, 'hello.txt'), 'utf8')).toBe('written through the mount\n');
      expect(() => writeFileSync(join(mnt, 'other.txt'), 'x')).toThrow(expect.objectContaining({ code: 'EROFS' }));
    } finally {
      const again = ro.unmountSync();
      expect(again.released).toBe(true);
    }
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it("'ro' in options attaches read-only too, as mount -o ro,loop does", async () => {
    const image = ext4Image('ro-word.img');
    const mnt = target('ro-word');
    await using m = await mount(image, mnt, { options: 'ro', mkdir: true });
    expect(sysRead(m.device.number, 'ro')).toBe('1');
    expect(mountsAt(mnt)[0]!.options).toContain('ro');
  });

  it('detects ext4 when no fstype is given', async () => {
    const image = ext4Image('detect.img');
    const mnt = target('detect');
    await using m = await mount(image, mnt, { mkdir: true });
    expect(m.fstype).toBe('ext4');
    expect(mountsAt(mnt)[0]!.fstype).toBe('ext4');
  });

  it('an unknown filesystem is ERR_LOOP_UNKNOWN_FSTYPE and leaves nothing attached or created', async () => {
    const image = dir.image('blank.img', 8 * MiB);
    const mnt = target('blank/deeper');
    const error = await mount(image, mnt, { mkdir: true }).catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(LoopError);
    expect(error).toMatchObject({ code: 'ERR_LOOP_UNKNOWN_FSTYPE' });
    expect(devicesBackedBy(image)).toEqual([]);
    expect(existsSync(join(dir.path, 'mnt', 'blank'))).toBe(false);
  });

  it('nosuid and nodev by default; absent when turned off; flag words become flags, the rest data', async () => {
    const image = ext4Image('flags.img');
    const mnt = target('flags');
    {
      await using _m = await mount(image, mnt, { mkdir: true });
      const [line] = mountsAt(mnt);
      expect(line!.options).toEqual(expect.arrayContaining(['nosuid', 'nodev']));
      expect(line!.options).not.toContain('noexec');
    }
    {
      await using _m = await mount(image, mnt, { nosuid: false, nodev: false });
      const [line] = mountsAt(mnt);
      expect(line!.options).not.toContain('nosuid');
      expect(line!.options).not.toContain('nodev');
    }
    {
      await using _m = await mount(image, mnt, { noexec: true, options: 'noatime,commit=7,suid' });
      const [line] = mountsAt(mnt);
      expect(line!.options).toEqual(expect.arrayContaining(['noexec', 'noatime', 'nodev']));
      expect(line!.options).not.toContain('nosuid');
      expect(line!.superOptions).toContain('commit=7');
    }
  });

  it('mounts partition 2 of an MBR image as /dev/loopNp2; a missing partition lists what exists', async () => {
    const image = join(dir.path, 'mbr.img');
    writeMbr(image, 48 * MiB, [
      { startBytes: 1 * MiB, sizeBytes: 16 * MiB },
      { startBytes: 20 * MiB, sizeBytes: 24 * MiB },
    ]);
    execFileSync(mkfsExt4!, ['-q', '-F', '-E', `offset=${20 * MiB}`, image, '24M']);
    const mnt = target('part2');
    {
      await using m = await mount(image, mnt, { partition: 2, mkdir: true });
      expect(m.source).toBe(`/dev/loop${m.device.number}p2`);
      expect(m.partitionPath).toBe(m.source);
      expect(m.fstype).toBe('ext4');
      expect(mountsAt(mnt)[0]).toMatchObject({ source: `/dev/loop${m.device.number}p2`, fstype: 'ext4' });
      expect(sysRead(m.device.number, 'loop/partscan')).toBe('1');
      expect(holdsFd(m.source)).toBe(false);
    }
    expect(mountsAt(mnt)).toEqual([]);
    expect(await until(() => devicesBackedBy(image).length === 0)).toBe(true);

    const error = await mount(image, mnt, { partition: 3 }).catch((thrown: unknown) => thrown);
    expect(error).toMatchObject({ code: 'ERR_LOOP_NO_PARTITION' });
    expect((error as Error).message).toMatch(/p1, \/dev\/loop\d+p2/);
    expect(devicesBackedBy(image)).toEqual([]);

    // Whole device: no filesystem at offset 0, and the error points at the partitions.
    const whole = await mount(image, mnt).catch((thrown: unknown) => thrown);
    expect(whole).toMatchObject({ code: 'ERR_LOOP_UNKNOWN_FSTYPE' });
    expect((whole as Error).message).toContain('pass partition');
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('a GPT whose primary and backup fail their CRCs is reported as damaged, not as missing', async () => {
    const image = join(dir.path, 'bad-gpt.img');
    const size = 16 * MiB;
    writeGpt(image, size, [{ startBytes: 1 * MiB, sizeBytes: 8 * MiB }]);
    const fd = openSync(image, 'r+');
    try {
      // A byte of each header's own CRC (offset 16 of LBA 1 and of the last LBA).
      for (const position of [512 + 16, size - 512 + 16]) writeSync(fd, Buffer.from([0x5a]), 0, 1, position);
    } finally {
      closeSync(fd);
    }
    const error = await mount(image, target('bad-gpt'), { partition: 1, mkdir: true }).catch((thrown: unknown) => thrown);
    expect(error).toMatchObject({ code: 'ERR_LOOP_NO_PARTITION' });
    expect((error as Error).message).toMatch(/has no partitions \(it has a GPT, but neither its primary nor its backup .* the table is damaged\)/);
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('a failed mount (xfs on ext4) leaves no device attached and removes the directories mkdir made', async () => {
    const image = ext4Image('wrongtype.img');
    mkdirSync(join(dir.path, 'mnt', 'existing'), { recursive: true });
    const mnt = target('existing/made/here');
    const error = await mount(image, mnt, { fstype: 'xfs', mkdir: true }).catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(LoopError);
    expect(error).toMatchObject({ code: 'EINVAL', syscall: 'mount', path: mnt });
    expect(devicesBackedBy(image)).toEqual([]);
    expect(existsSync(join(dir.path, 'mnt', 'existing', 'made'))).toBe(false);
    expect(existsSync(join(dir.path, 'mnt', 'existing'))).toBe(true);
    expect(mountsAt(mnt)).toEqual([]);

    // Same in the sync form.
    expect(() => mountSync(image, mnt, { fstype: 'btrfs', mkdir: true })).toThrow(expect.objectContaining({ syscall: 'mount' }));
    expect(devicesBackedBy(image)).toEqual([]);
    expect(existsSync(join(dir.path, 'mnt', 'existing', 'made'))).toBe(false);
  });

  it('a missing mount point without mkdir is ENOENT, before anything is attached', async () => {
    const image = ext4Image('nomnt.img');
    const mnt = target('absent');
    await expect(mount(image, mnt)).rejects.toMatchObject({ code: 'ENOENT', path: mnt });
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('bad options are refused before anything is attached or created', async () => {
    const image = ext4Image('badopts.img');
    const mnt = target('badopts');
    const cases: [unknown, string][] = [
      [{ bogus: true }, 'ERR_LOOP_INVALID_OPTION'],
      [{ hold: true }, 'ERR_LOOP_INVALID_OPTION'],
      [{ reuse: true }, 'ERR_LOOP_INVALID_OPTION'],
      [{ partition: 0 }, 'ERR_LOOP_INVALID_OPTION'],
      [{ partition: 1.5 }, 'ERR_LOOP_INVALID_OPTION'],
      [{ partition: 1, partscan: false }, 'ERR_LOOP_INVALID_OPTION'],
      [{ fstype: '' }, 'ERR_LOOP_INVALID_OPTION'],
      [{ fstype: 4 }, 'ERR_LOOP_INVALID_OPTION'],
      [{ nosuid: 'yes' }, 'ERR_LOOP_INVALID_OPTION'],
      [{ readOnly: true, options: 'rw' }, 'ERR_LOOP_INVALID_OPTION'],
      [{ options: 'loop' }, 'ERR_LOOP_INVALID_OPTION'],
      [{ options: 'offset=4096' }, 'ERR_LOOP_INVALID_OPTION'],
      [{ options: 'context="a,b' }, 'ERR_LOOP_INVALID_OPTION'],
      [{ sectorSize: 3 }, 'ERR_LOOP_INVALID_OPTION'],
    ];
    for (const [options, code] of cases) {
      await expect(mount(image, mnt, { mkdir: true, ...(options as object) }), JSON.stringify(options)).rejects.toMatchObject({ code });
    }
    await expect(mount(image, mnt, 'ro' as unknown as object)).rejects.toMatchObject({ code: 'ERR_LOOP_INVALID_ARGUMENT' });
    await expect(mount(image, '' as string)).rejects.toMatchObject({ code: 'ERR_LOOP_INVALID_ARGUMENT' });
    await expect(mount(image, 42 as unknown as string)).rejects.toMatchObject({ code: 'ERR_LOOP_INVALID_ARGUMENT' });
    expect(existsSync(mnt)).toBe(false);
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('unmount while busy (an open file, a working directory) fails with EBUSY and changes nothing', async () => {
    const image = ext4Image('busy.img');
    const mnt = target('busy');
    const m = await mount(image, mnt, { mkdir: true });
    const number = m.device.number;
    try {
      const fd = openSync(join(mnt, 'open.txt'), 'w');
      const error = await m.unmount().catch((thrown: unknown) => thrown);
      closeSync(fd);
      expect(error).toBeInstanceOf(LoopError);
      expect(error).toMatchObject({ code: 'EBUSY', syscall: 'umount2', path: mnt });
      expect((error as Error).message).toContain(mnt);
      expect((error as Error).message).toContain('lazy: true');
      expect(mountsAt(mnt)).toHaveLength(1);
      expect(sysRead(number, 'loop/backing_file')).toBe(image);

      const child = spawn('sleep', ['60'], { cwd: mnt, stdio: 'ignore' });
      try {
        await until(() => existsSync(`/proc/${child.pid}/cwd`) && readlinkSync(`/proc/${child.pid}/cwd`) === mnt);
        expect(() => unmountSync(mnt)).toThrow(expect.objectContaining({ code: 'EBUSY', syscall: 'umount2' }));
        expect(mountsAt(mnt)).toHaveLength(1);
        expect(boundTo(number, image)).toBe(true);
      } finally {
        const exited = new Promise((done) => child.once('exit', done));
        child.kill('SIGKILL');
        await exited;
      }
      const result = await m.unmount();
      expect(result.released).toBe(true);
      expect(boundTo(number, image)).toBe(false);
    } finally {
      if (mountsAt(mnt).length > 0) await m.unmount({ lazy: true });
    }
  });

  it('the device goes away with the unmount even when the process that mounted it died (SIGKILL)', async () => {
    const image = ext4Image('orphan.img');
    const mnt = target('orphan');
    const script = `
      const { mountSync } = require(${JSON.stringify(join(root, 'dist', 'index.js'))});
      const m = mountSync(${JSON.stringify(image)}, ${JSON.stringify(mnt)}, { mkdir: true });
      process.stdout.write(JSON.stringify({ number: m.device.number }), () => process.kill(process.pid, 'SIGKILL'));
    `;
    const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(child.signal, child.stderr).toBe('SIGKILL');
    const { number } = JSON.parse(child.stdout) as { number: number };
    expect(mountsAt(mnt)[0]).toMatchObject({ source: `/dev/loop${number}`, fstype: 'ext4' });
    expect(sysRead(number, 'loop/backing_file')).toBe(image);
    expect(sysRead(number, 'loop/autoclear')).toBe('1');

    const result = await unmount(mnt);
    expect(result).toEqual({ target: mnt, device: `/dev/loop${number}`, released: true });
    expect(boundTo(number, image)).toBe(false);
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('await using unmounts at the end of the block', async () => {
    const image = ext4Image('using.img');
    const mnt = target('using');
    let number = -1;
    {
      await using m = await mount(image, mnt, { mkdir: true });
      number = m.device.number;
      expect(mountsAt(mnt)).toHaveLength(1);
    }
    expect(mountsAt(mnt)).toEqual([]);
    expect(boundTo(number, image)).toBe(false);
  });

  it('disposal after an explicit unmount is harmless', async () => {
    const image = ext4Image('twice.img');
    const mnt = target('twice');
    const m: MountedImage = await mount(image, mnt, { mkdir: true });
    await m.unmount();
    await expect(m[Symbol.asyncDispose]()).resolves.toBeUndefined();
    await expect(m.unmount()).rejects.toMatchObject({ code: 'ERR_LOOP_NOT_MOUNTED' });
  });

  it('a MountedImage does not unmount a filesystem mounted over it', async () => {
    const image = ext4Image('stacked.img');
    const mnt = target('stacked');
    const m = await mount(image, mnt, { mkdir: true });
    execFileSync('mount', ['-t', 'tmpfs', 'loopdev-test-tmpfs', mnt]);
    await expect(m.unmount()).rejects.toMatchObject({ code: 'ERR_LOOP_BUSY' });
    expect(mountsAt(mnt).map((line) => line.fstype)).toEqual(['ext4', 'tmpfs']);
    // unmount(target) takes the top one, reports no loop device for it.
    expect(await unmount(mnt)).toEqual({ target: mnt, device: null, released: true });
    expect((await m.unmount()).released).toBe(true);
  });

  it('unmount of a path where nothing is mounted is ERR_LOOP_NOT_MOUNTED', async () => {
    mkdirSync(join(dir.path, 'plain'), { recursive: true });
    await expect(unmount(join(dir.path, 'plain'))).rejects.toMatchObject({ code: 'ERR_LOOP_NOT_MOUNTED' });
    expect(() => unmountSync(join(dir.path, 'nowhere'))).toThrow(expect.objectContaining({ code: 'ERR_LOOP_NOT_MOUNTED' }));
    await expect(unmount(join(dir.path, 'plain'), { bogus: 1 } as object)).rejects.toMatchObject({ code: 'ERR_LOOP_INVALID_OPTION' });
  });

  it('a mount point with a space in its name (\\040 in mountinfo), unmounted lazily', async () => {
    const image = ext4Image('space.img');
    const mnt = target('with space');
    const m = await mount(image, mnt, { mkdir: true });
    expect(mountsAt(mnt)).toHaveLength(1);
    const fd = openSync(join(mnt, 'held.txt'), 'w');
    // Lazy: gone from the mount table now, but the open file keeps the filesystem (and device).
    const result = await unmount(mnt, { lazy: true, wait: 100 });
    expect(result).toEqual({ target: mnt, device: m.device.path, released: false });
    expect(mountsAt(mnt)).toEqual([]);
    expect(boundTo(m.device.number, image)).toBe(true);
    closeSync(fd);
    expect(await until(() => !boundTo(m.device.number, image))).toBe(true);
  });

  describe.each([
    ['xfs', 'mkfs.xfs', 320 * MiB],
    ['btrfs', 'mkfs.btrfs', 256 * MiB],
  ] as const)('%s', (fstype, tool, sizeBytes) => {
    const path = findTool(tool);
    it.skipIf(path === null)(`is detected and mounted read-write (needs ${tool})`, async () => {
      const image = dir.image(`${fstype}.img`, sizeBytes);
      execFileSync(path!, ['-q', '-f', image]);
      const mnt = target(fstype);
      {
        await using m = await mount(image, mnt, { mkdir: true });
        expect(m.fstype).toBe(fstype);
        expect(mountsAt(mnt)[0]).toMatchObject({ fstype, source: m.device.path });
        writeFileSync(join(mnt, 'file'), fstype);
      }
      expect(await until(() => devicesBackedBy(image).length === 0)).toBe(true);
      {
        await using m = await mount(image, mnt, { readOnly: true });
        expect(m.fstype).toBe(fstype);
        expect(readFileSync(join(mnt, 'file'), 'utf8')).toBe(fstype);
      }
    });
  });

  describe.each([
    ['squashfs', 'mksquashfs', (tool: string, from: string, image: string) => [tool, [from, image, '-noappend', '-quiet', '-no-progress']] as const],
    // No --quiet: Debian 11's erofs-utils 1.2 has none (its chatter goes to the pipe below).
    ['erofs', 'mkfs.erofs', (tool: string, from: string, image: string) => [tool, [image, from]] as const],
  ] as const)('%s', (fstype, tool, command) => {
    const path = findTool(tool);
    it.skipIf(path === null)(`is detected and mounted (needs ${tool})`, async () => {
      const from = join(dir.path, `${fstype}-root`);
      mkdirSync(from, { recursive: true });
      writeFileSync(join(from, 'file'), fstype);
      const image = join(dir.path, `${fstype}.img`);
      const [file, args] = command(path!, from, image);
      execFileSync(file, [...args], { stdio: 'pipe' });
      const mnt = target(fstype);
      await using m = await mount(image, mnt, { mkdir: true, readOnly: true });
      expect(m.fstype).toBe(fstype);
      expect(mountsAt(mnt)[0]).toMatchObject({ fstype, source: m.device.path });
      expect(readFileSync(join(mnt, 'file'), 'utf8')).toBe(fstype);
    });
  });
});
