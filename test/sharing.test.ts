// One image, several mounts: mount() reuses the device the image is already bound to (one
// superblock, as mount(8) does) and refuses an overlapping binding with other settings. The
// image's contents are read back independently (debugfs, e2fsck), the kernel's state from
// sysfs and /proc/self/mountinfo.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { attach, mount, mountSync } from '../lib/index';
import { findTool } from './helpers/images';
import { devicesBackedBy, mountsAt, mountTable, privileged, sysRead, tempDir, until, type TempDir } from './helpers/kernel';

const MiB = 1024 * 1024;
const root = resolve(__dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const mkfsExt4 = findTool('mkfs.ext4');
const debugfs = findTool('debugfs');
const e2fsck = findTool('e2fsck');

describe.skipIf(!privileged() || mkfsExt4 === null)('one image mounted twice', () => {
  let dir: TempDir;
  const targets: string[] = [];

  function target(name: string): string {
    const path = join(dir.path, 'mnt', name);
    mkdirSync(path, { recursive: true });
    targets.push(path);
    return path;
  }

  function ext4Image(name: string, sizeBytes = 32 * MiB, extra: string[] = []): string {
    const image = dir.image(name, sizeBytes);
    execFileSync(mkfsExt4!, ['-q', '-F', ...extra, image]);
    return image;
  }

  /** The names in the image's root directory, read by debugfs from the file itself. */
  function filesInImage(image: string): string[] {
    const listing = execFileSync(debugfs!, ['-R', 'ls -p /', image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return listing
      .split('\n')
      .map((line) => line.split('/')[5])
      .filter((name): name is string => name !== undefined && name !== '' && name !== '.' && name !== '..' && name !== 'lost+found');
  }

  /** e2fsck -fn: the exit status (0: clean) and what it said. */
  const fsck = (image: string) => spawnSync(e2fsck!, ['-fn', image], { encoding: 'utf8' });

  beforeAll(() => {
    dir = tempDir();
  });

  afterEach(() => {
    for (const path of targets.splice(0)) {
      while (mountsAt(path).length > 0) execFileSync('umount', ['-l', path]);
    }
  });

  afterAll(async () => {
    const released = await until(() => devicesBackedBy(dir.path).length === 0, 5000);
    const leaked = devicesBackedBy(dir.path);
    if (mountTable().every((line) => !line.mountPoint.startsWith(`${dir.path}/`))) dir.remove();
    expect(leaked).toEqual([]);
    expect(released).toBe(true);
  });

  it.skipIf(debugfs === null || e2fsck === null)(
    'a second mount reuses the device: every file written through either mount point is in the image, and e2fsck finds it clean',
    async () => {
      const image = ext4Image('twice.img');
      const first = await mount(image, target('a'));
      const second = mountSync(image, target('b'));
      expect(first.reused).toBe(false);
      expect(second.reused).toBe(true);
      expect(second.source).toBe(first.source);
      expect(devicesBackedBy(image)).toEqual([first.device.number]);
      expect(mountsAt(second.target)[0]).toMatchObject({ source: first.source, fstype: 'ext4' });

      const names: string[] = [];
      for (let index = 0; index < 200; index++) {
        const name = `file-${index}`;
        writeFileSync(join(index % 2 === 0 ? first.target : second.target, name), `${name}\n`.repeat(100));
        names.push(name);
      }
      // Unmounting one leaves the other mounted, so the device stays; the last one releases it.
      expect(await first.unmount()).toMatchObject({ released: false });
      expect(sysRead(second.device.number, 'loop/backing_file')).toBe(image);
      expect(second.unmountSync()).toEqual({ target: second.target, device: first.device.path, released: true });
      expect(devicesBackedBy(image)).toEqual([]);

      expect(filesInImage(image).sort()).toEqual(names.sort());
      const check = fsck(image);
      expect(check.status, check.stdout).toBe(0);
    },
  );

  it('four concurrent mount() calls of one process end with one device', async () => {
    const image = ext4Image('concurrent.img');
    const mounted = await Promise.all(['c1', 'c2', 'c3', 'c4'].map((name) => mount(image, target(name))));
    expect(new Set(mounted.map((m) => m.source)).size).toBe(1);
    expect(mounted.filter((m) => !m.reused)).toHaveLength(1);
    expect(devicesBackedBy(image)).toHaveLength(1);
    for (const m of mounted) await m.unmount();
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('a device losetup attached is reused, and unmounting leaves it to its owner', async () => {
    const image = ext4Image('losetup.img');
    const device = execFileSync('losetup', ['--find', '--show', image], { encoding: 'utf8' }).trim();
    try {
      const m = await mount(image, target('losetup'));
      expect(m.reused).toBe(true);
      expect(m.source).toBe(device);
      expect(m.device.released).toBe(true); // the handle holds nothing and never detaches
      expect(await m.unmount()).toEqual({ target: m.target, device, released: false });
      await m.device.detach();
      expect(sysRead(m.device.number, 'loop/backing_file')).toBe(image);
    } finally {
      execFileSync('losetup', ['-d', device]);
    }
  });

  it('a device mount -o loop made is reused; its autoclear releases it at the last unmount', async () => {
    const image = ext4Image('mount8.img');
    const first = target('mount8-a');
    execFileSync('mount', ['-o', 'loop', image, first]);
    const source = mountsAt(first)[0]!.source;
    const m = await mount(image, target('mount8-b'));
    expect(m).toMatchObject({ reused: true, source });
    execFileSync('umount', [first]);
    expect(await m.unmount()).toMatchObject({ device: source, released: true });
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('read-only against read-write, either way round, is refused before anything is bound, naming the device and where it is mounted', async () => {
    const image = ext4Image('modes.img');
    {
      await using rw = await mount(image, target('rw'));
      const error = await mount(image, target('ro'), { readOnly: true }).catch((thrown: unknown) => thrown);
      expect(error).toMatchObject({ code: 'ERR_LOOP_OVERLAP', path: rw.source, device: rw.device.number });
      expect((error as Error).message).toContain(rw.source);
      expect((error as Error).message).toContain(`mounted at ${rw.target}`);
      expect((error as Error).message).toContain('read-only was asked');
      expect(devicesBackedBy(image)).toEqual([rw.device.number]);
    }
    {
      await using ro = await mount(image, target('ro'), { readOnly: true });
      expect(() => mountSync(image, target('rw2'))).toThrow(expect.objectContaining({ code: 'ERR_LOOP_OVERLAP', path: ro.source }));
      expect(devicesBackedBy(image)).toEqual([ro.device.number]);
    }
  });

  it('an overlapping range is refused; a range that does not overlap gets its own device', async () => {
    // Two filesystems in one file: one in the first 16 MiB, one in the second.
    const image = dir.image('halves.img', 32 * MiB);
    execFileSync(mkfsExt4!, ['-q', '-F', image, '16M']);
    execFileSync(mkfsExt4!, ['-q', '-F', '-E', `offset=${16 * MiB}`, image, '16M']);
    await using low = await mount(image, target('low'), { sizeLimit: 16 * MiB });
    await using high = await mount(image, target('high'), { offset: 16 * MiB });
    expect(high.reused).toBe(false);
    expect(high.source).not.toBe(low.source);
    await expect(mount(image, target('middle'), { offset: 8 * MiB, sizeLimit: 16 * MiB })).rejects.toMatchObject({ code: 'ERR_LOOP_OVERLAP' });
    expect(devicesBackedBy(image).sort()).toEqual([low.device.number, high.device.number].sort());
  });

  it('attach() still binds a second device to the same file, as losetup does; attach({ reuse }) returns the first', async () => {
    const image = ext4Image('attach.img');
    await using first = await attach(image);
    await using second = await attach(image);
    expect(second.number).not.toBe(first.number);
    const reused = await attach(image, { reuse: true });
    expect([first.number, second.number]).toContain(reused.number);
    expect(reused.setupIoctl).toBeNull();
  });

  it('two processes mounting the same image at the same moment end with one device (5 rounds of 3)', async () => {
    const image = ext4Image('race.img');
    const script = (mnt: string): string => `
      const { mountSync } = require(${JSON.stringify(join(root, 'dist', 'index.js'))});
      const go = Date.now() + 300; while (Date.now() < go); // start together
      const m = mountSync(${JSON.stringify(image)}, ${JSON.stringify(mnt)});
      process.stdout.write(JSON.stringify({ source: m.source, reused: m.reused }));`;
    for (let round = 0; round < 5; round++) {
      const points = [0, 1, 2].map((index) => target(`race-${round}-${index}`));
      const results = await Promise.all(
        points.map(
          (mnt) =>
            new Promise<{ source: string; reused: boolean }>((done, failed) => {
              const child = spawn(process.execPath, ['-e', script(mnt)], { stdio: ['ignore', 'pipe', 'pipe'] });
              let out = '';
              let err = '';
              child.stdout.on('data', (chunk: Buffer) => (out += chunk));
              child.stderr.on('data', (chunk: Buffer) => (err += chunk));
              child.on('close', (code) => (code === 0 ? done(JSON.parse(out) as { source: string; reused: boolean }) : failed(new Error(err))));
            }),
        ),
      );
      expect(new Set(results.map((result) => result.source)).size).toBe(1);
      expect(results.filter((result) => !result.reused)).toHaveLength(1);
      expect(devicesBackedBy(image)).toHaveLength(1);
      for (const mnt of points) execFileSync('umount', [mnt]);
      expect(await until(() => devicesBackedBy(image).length === 0)).toBe(true);
    }
  });

  it('the CLI says it reused the device, and refuses a read-only mount over a writable one with exit status 1', () => {
    const image = ext4Image('cli.img');
    const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
    const a = target('cli-a');
    const b = target('cli-b');
    expect(run('mount', image, a).status).toBe(0);
    const second = run('mount', '--json', image, b);
    expect(second.status, second.stderr).toBe(0);
    expect(JSON.parse(second.stdout)).toMatchObject({ reused: true, source: mountsAt(a)[0]!.source });
    const refused = run('mount', '--read-only', image, target('cli-c'));
    expect(refused.status).toBe(1);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toMatch(/^loopdev: mount .*: .* is already attached as \/dev\/loop\d+ \(mounted at .*cli-a, .*cli-b\) with other settings .*\(ERR_LOOP_OVERLAP\)\nhint: /);
    expect(run('umount', a).status).toBe(0);
    expect(run('umount', b).status).toBe(0);
    expect(devicesBackedBy(image)).toEqual([]);
  });

});
