// dissect(), mountImage() and unmountImage(): golden images built here with sfdisk and mkfs,
// dissected from the file, then mounted on the real kernel. The kernel's state is read
// independently of the library (/proc/self/mountinfo, sysfs). Every test leaves nothing
// mounted under its directory and nothing bound to its images.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

import { dissect, dissectSync, mountImage, mountImageSync, unmountImage, type DissectedImage } from '../lib/index';
import { compareVersions } from '../lib/dissect/version';
import { parseCommand } from '../lib/cli/parse';
import { runWithoutAddon, usageError } from './helpers/cli';
import { buildImage, GUID, mkfsExt4, mkfsVfat, sfdisk } from './helpers/dps-images';
import { devicesBackedBy, mountTable, privileged, suiteTempDir } from './helpers/kernel';

const root = resolve(__dirname, '..');
const arch = { architecture: 'x86-64' } as const;
const canBuild = sfdisk !== null && mkfsExt4 !== null;
const missing = [sfdisk === null ? 'sfdisk' : '', mkfsExt4 === null ? 'mkfs.ext4' : ''].filter(Boolean).join(', ');
if (!canBuild) console.warn(`skipping dissect image tests: needs ${missing}`);

const used = (image: DissectedImage): Record<string, number | null> =>
  Object.fromEntries(image.partitions.filter((p) => p.used).map((p) => [p.mountPoint ?? p.designator, p.number]));
const order = (image: DissectedImage): string[] => image.mounts.map((m) => `${m.mountPoint}=${m.designator}:${m.partition}`);
const code = (value: string): unknown => expect.objectContaining({ code: value });

describe('version order of labels (UAPI.10)', () => {
  it('sorts as the specification says', () => {
    const sorted = ['122.1', '123~rc1-1', '123', '123-a', '123-a.1', '123-1', '123-1.1', '123^post1', '123.a-1', '123.1-1', '123a-1', '124-1'];
    for (let k = 0; k + 1 < sorted.length; k++) expect(compareVersions(sorted[k]!, sorted[k + 1]!), `${sorted[k]} < ${sorted[k + 1]}`).toBeLessThan(0);
    expect(compareVersions('root_1.9', 'root_1.10')).toBeLessThan(0);
    expect(compareVersions('B', 'a')).toBeLessThan(0);
    expect(compareVersions('01', '1')).toBe(0);
    expect(compareVersions('os_2', 'os_2')).toBe(0);
  });
});

describe('loopdev dissect: the command line (no kernel)', () => {
  it('parses its three forms', () => {
    expect(parseCommand(['dissect', 'a.img'])).toEqual({ name: 'dissect', action: 'show', image: 'a.img', options: {}, json: false });
    expect(parseCommand(['dissect', '--json', '-r', '--architecture', 'arm64', 'a.img'])).toEqual({
      name: 'dissect', action: 'show', image: 'a.img', options: { readOnly: true, architecture: 'arm64' }, json: true,
    });
    expect(parseCommand(['dissect', '-m', '--mkdir', 'a.img', '/mnt/x'])).toEqual({ name: 'dissect', action: 'mount', image: 'a.img', directory: '/mnt/x', options: { mkdir: true }, json: false });
    expect(parseCommand(['dissect', '-u', '/mnt/x'])).toEqual({ name: 'dissect', action: 'umount', directory: '/mnt/x', json: false });
  });

  it('refuses what does not fit a form, with exit status 2', () => {
    const cases: [string[], RegExp][] = [
      [['dissect'], /missing IMAGE\|DIR/],
      [['dissect', 'a.img', 'b'], /unexpected argument 'b'/],
      [['dissect', '-m', 'a.img'], /missing DIR/],
      [['dissect', '-u'], /missing/],
      [['dissect', '-u', 'd', 'e'], /unexpected argument 'e'/],
      [['dissect', '-m', '-u', 'a', 'b'], /exclude each other/],
      [['dissect', '-u', '-r', 'd'], /'--read-only' is for --mount/],
      [['dissect', '--mkdir', 'a.img'], /'--mkdir' is for --mount/],
      [['dissect', '--architecture', 'vax', 'a.img'], /option 'architecture' must be one of/],
    ];
    for (const [argv, message] of cases) expect(usageError(argv).message, argv.join(' ')).toMatch(message);
  });

  it('answers --help where the addon cannot load', () => {
    const help = runWithoutAddon(['dissect', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: loopdev dissect /);
    expect(help.stdout).toMatch(/-m, --mount/);
    expect(help.stdout).toMatch(/-u, --umount/);
  });
});

describe.skipIf(!canBuild)('dissect() of images built with sfdisk', () => {
  const dir = suiteTempDir();
  let count = 0;
  const image = (spec: Parameters<typeof buildImage>[1]): string => {
    const file = join(dir.path, `image-${count++}.raw`);
    buildImage(file, spec);
    return file;
  };

  it('512-byte sectors: every designator, chosen and mounted in systemd\'s order with its options', async () => {
    const file = image({
      label: 'gpt',
      sizeMiB: 40,
      parts: [
        { size: '4M', type: GUID.esp, name: 'esp' },
        { size: '4M', type: GUID.xbootldr },
        { size: '4M', type: GUID.swap },
        { size: '4M', type: GUID.tmp, fs: {} },
        { size: '4M', type: GUID.var, fs: {} },
        { size: '4M', type: GUID.srv, fs: {} },
        { size: '4M', type: GUID.home, fs: {}, attrs: 'GUID:59' },
        { size: '4M', type: GUID.usrX86_64, fs: {} },
        { size: '4M', type: GUID.rootX86_64, name: 'root', fs: { 'usr/': '' } },
      ],
    });
    const result = dissectSync(file, arch);
    expect(result).toMatchObject({ sectorSize: 512, table: 'gpt', header: 'primary', architectures: ['x86-64', 'x86'] });
    expect(result.partitions.map((p) => p.designator)).toEqual(['esp', 'xbootldr', 'swap', 'tmp', 'var', 'srv', 'home', 'usr', 'root']);
    expect(order(result)).toEqual(['/=root:9', '/usr=usr:8', '/home=home:7', '/srv=srv:6', '/var=var:5', '/var/tmp=tmp:4', '/boot=xbootldr:2', '/efi=esp:1']);
    expect(result.mounts[0]!.options).toEqual(['rw', 'nodev']);
    expect(result.mounts.at(-1)!.options).toEqual(['rw', 'nodev', 'nosuid', 'noexec', 'nosymfollow', 'umask=0077']);
    expect(result.partitions[6]).toMatchObject({ growFs: true, noAuto: false, readOnly: false, fstype: 'ext4' });
    expect(result.partitions[8]).toMatchObject({ label: 'root', architecture: 'x86-64', uuid: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    // Swap is found but never mounted; the unformatted ESP and XBOOTLDR make it unmountable.
    expect(result.partitions[2]).toMatchObject({ designator: 'swap', used: true, mountPoint: null });
    expect(result.refusals.map((r) => r.code)).toEqual(['ERR_LOOP_UNKNOWN_FSTYPE', 'ERR_LOOP_UNKNOWN_FSTYPE']);
    // The async form reads the same, off the main thread.
    expect(await dissect(file, arch)).toEqual(result);
    // Read-only: every mount ro, norecovery where the file system replays a journal.
    expect(dissectSync(file, { ...arch, readOnly: true }).mounts[0]!.options).toEqual(['ro', 'nodev', 'norecovery']);
  });

  it('A/B root labels: the newest version wins, no-auto and pending partitions are left out', () => {
    const file = image({
      label: 'gpt',
      sizeMiB: 16,
      parts: [
        { size: '2M', type: GUID.rootX86_64, name: 'os_1.9' },
        { size: '2M', type: GUID.rootX86_64, name: 'os_1.10' },
        { size: '2M', type: GUID.rootX86_64, name: 'os_1.2' },
        { size: '2M', type: GUID.rootX86_64, name: 'os_9.0', attrs: 'GUID:63' },
        { size: '2M', type: GUID.rootX86_64, name: 'PND#os_8.0' },
      ],
    });
    expect(used(dissectSync(file, arch))).toEqual({ '/': 2 });
  });

  it('architecture: native before secondary whatever the labels; secondary alone is used; a foreign one is not', () => {
    const both = image({
      label: 'gpt',
      sizeMiB: 8,
      parts: [
        { size: '2M', type: GUID.rootX86, name: 'os_9' },
        { size: '2M', type: GUID.rootX86_64, name: 'os_1' },
      ],
    });
    expect(used(dissectSync(both, arch))).toEqual({ '/': 2 });
    const secondary = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '2M', type: GUID.rootX86 }, { size: '2M', type: GUID.rootArm64 }] });
    const onX64 = dissectSync(secondary, arch);
    expect(used(onX64)).toEqual({ '/': 1 });
    expect(onX64.partitions[1]).toMatchObject({ designator: 'root', architecture: 'arm64', used: false });
    expect(used(dissectSync(secondary, { architecture: 'arm64' }))).toEqual({ '/': 2 });
    const foreign = dissectSync(secondary, { architecture: 'riscv64' });
    expect(foreign.mounts).toEqual([]);
    expect(foreign.refusals.map((r) => r.code)).toEqual(['ERR_LOOP_NOTHING_TO_MOUNT']);
  });

  it('no-auto and read-only flags: a no-auto /srv is not mounted, a read-only /home is mounted ro', () => {
    const file = image({
      label: 'gpt',
      sizeMiB: 12,
      parts: [
        { size: '2M', type: GUID.rootX86_64, fs: {} },
        { size: '2M', type: GUID.home, attrs: 'GUID:60', fs: {} },
        { size: '2M', type: GUID.srv, attrs: 'GUID:63', fs: {} },
      ],
    });
    const result = dissectSync(file, arch);
    expect(result.partitions.map((p) => [p.noAuto, p.readOnly])).toEqual([[false, false], [false, true], [true, false]]);
    expect(order(result)).toEqual(['/=root:1', '/home=home:2']);
    expect(result.mounts[1]!.options).toEqual(['ro', 'nodev', 'norecovery']);
  });

  it('/usr without root: a tmpfs root first, then /usr', () => {
    const file = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '4M', type: GUID.usrX86_64, fs: {} }] });
    const result = dissectSync(file, arch);
    expect(order(result)).toEqual(['/=tmpfs:null', '/usr=usr:1']);
    expect(result.refusals).toEqual([]);
    // The tmpfs holds nothing of the image: read-write, so that /usr's mount point can be made.
    expect(dissectSync(file, { ...arch, readOnly: true }).mounts.map((m) => m.options[0])).toEqual(['rw', 'ro']);
  });

  it('an ESP alone: dissected, nothing to mount', () => {
    const file = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '4M', type: GUID.esp, ...(mkfsVfat === null ? {} : { fs: 'vfat' as const }) }] });
    const result = dissectSync(file, arch);
    expect(result.partitions[0]).toMatchObject({ designator: 'esp', used: true, fstype: mkfsVfat === null ? null : 'vfat' });
    expect(result.mounts.map((m) => m.mountPoint)).toEqual(['/boot']);
    expect(result.refusals.map((r) => r.code)).toContain('ERR_LOOP_NOTHING_TO_MOUNT');
  });

  it('Linux data partitions: a single one is the root, two are refused', () => {
    const one = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '2M', type: GUID.generic, fs: {} }] });
    expect(order(dissectSync(one, arch))).toEqual(['/=linux-generic:1']);
    const two = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '2M', type: GUID.generic }, { size: '2M', type: GUID.generic }] });
    expect(() => dissectSync(two, arch)).toThrow(code('ERR_LOOP_AMBIGUOUS_IMAGE'));
  });

  it('MBR: a bootable 0x83 is the root and 0xEA the XBOOTLDR; without the boot flag nothing is mounted', () => {
    const booted = image({
      label: 'dos',
      sizeMiB: 8,
      parts: [
        { size: '2M', type: 'ea' },
        { size: '2M', type: '83', fs: {} },
        { size: '2M', type: '83', bootable: true, fs: {} },
      ],
    });
    const result = dissectSync(booted);
    expect(result).toMatchObject({ table: 'mbr', header: null, sectorSize: 512 });
    expect(result.partitions.map((p) => [p.type, p.designator])).toEqual([['0xea', 'xbootldr'], ['0x83', null], ['0x83', 'root']]);
    expect(order(result)).toEqual(['/=root:3', '/boot=xbootldr:1']);
    const plain = image({ label: 'dos', sizeMiB: 8, parts: [{ size: '2M', type: '83', fs: {} }] });
    expect(dissectSync(plain).refusals.map((r) => r.code)).toEqual(['ERR_LOOP_NOTHING_TO_MOUNT']);
  });

  it('a broken primary GPT: the backup header is read; with the backup gone too (truncated) the image is refused', () => {
    const file = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '2M', type: GUID.rootX86_64, name: 'os_1', fs: {} }] });
    const fd = openSync(file, 'r+');
    writeSync(fd, Buffer.from([0xff, 0xff]), 0, 2, 512 + 16); // the primary header's CRC
    closeSync(fd);
    const result = dissectSync(file, arch);
    expect(result).toMatchObject({ table: 'gpt', header: 'backup' });
    expect(used(result)).toEqual({ '/': 1 });
    truncateSync(file, 6 * 1024 * 1024);
    expect(() => dissectSync(file, arch)).toThrow(code('ERR_LOOP_BAD_IMAGE'));
  });

  it('a bare file system is the root, the whole image', () => {
    const file = join(dir.path, 'bare.ext4');
    execFileSync(mkfsExt4!, ['-q', '-F', file, '4M'], { stdio: 'pipe' });
    const result = dissectSync(file);
    expect(result).toMatchObject({ table: null, sectorSize: 512 });
    expect(result.partitions).toEqual([expect.objectContaining({ number: null, designator: 'root', fstype: 'ext4', used: true })]);
    expect(order(result)).toEqual(['/=root:null']);
  });

  it('LUKS and dm-verity are reported, and refused for mounting', () => {
    const luks = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '2M', type: GUID.rootX86_64, fs: 'luks' }] });
    const result = dissectSync(luks, arch);
    expect(result.partitions[0]!.fstype).toBe('crypto_LUKS');
    expect(result.refusals.map((r) => r.code)).toEqual(['ERR_LOOP_UNSUPPORTED_IMAGE']);
    const verity = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '2M', type: GUID.rootX86_64, fs: {} }, { size: '2M', type: GUID.rootVerityX86_64 }] });
    const withVerity = dissectSync(verity, arch);
    expect(withVerity.partitions[1]).toMatchObject({ designator: 'root-verity', used: true });
    expect(withVerity.refusals).toEqual([expect.objectContaining({ code: 'ERR_LOOP_UNSUPPORTED_IMAGE', message: expect.stringMatching(/dm-verity/) })]);
  });

  it('bad input: typed errors', async () => {
    const empty = join(dir.path, 'empty.raw');
    writeFileSync(empty, '');
    expect(() => dissectSync(empty)).toThrow(code('ERR_LOOP_BAD_IMAGE'));
    const zeros = join(dir.path, 'zeros.raw');
    writeFileSync(zeros, Buffer.alloc(1 << 20));
    await expect(dissect(zeros)).rejects.toThrow(expect.objectContaining({ code: 'ERR_LOOP_BAD_IMAGE', path: zeros }));
    expect(() => dissectSync(dir.path)).toThrow(code('ERR_LOOP_INVALID_BACKING'));
    expect(() => dissectSync(join(dir.path, 'absent'))).toThrow(code('ENOENT'));
    expect(() => dissectSync(zeros, { architecture: 'vax' as never })).toThrow(code('ERR_LOOP_INVALID_OPTION'));
    expect(() => dissectSync(zeros, { mkdir: true } as never)).toThrow(code('ERR_LOOP_INVALID_OPTION'));
  });
});

/** Mounts under `directory`, read from mountinfo here. */
const mountsUnder = (directory: string): ReturnType<typeof mountTable> =>
  mountTable().filter((line) => line.mountPoint === directory || line.mountPoint.startsWith(`${directory}/`));

describe.skipIf(!canBuild || !privileged())('mountImage() on the real kernel', () => {
  const dir = suiteTempDir();
  let count = 0;
  const image = (spec: Parameters<typeof buildImage>[1]): string => {
    const file = join(dir.path, `image-${count++}.raw`);
    buildImage(file, spec);
    return file;
  };
  const target = (): string => join(dir.path, `mnt-${count++}`);

  afterEach(() => {
    // Whatever a failed test left: unmount it (lazily) so that the next ones and the suite's
    // leak check see the state the library leaves, then fail on it.
    const left = mountsUnder(dir.path);
    for (const line of [...left].reverse()) execFileSync('umount', ['-l', line.mountPoint]);
    expect(left.map((line) => line.mountPoint)).toEqual([]);
  });

  const fullImage = (): string =>
    image({
      label: 'gpt',
      sizeMiB: 24,
      parts: [
        { size: '4M', type: GUID.rootX86_64, name: 'os_1', fs: { 'etc/os-release': 'ID=old\n', 'usr/': '', 'home/': '', 'srv/': '' } },
        { size: '4M', type: GUID.rootX86_64, name: 'os_2', fs: { 'etc/os-release': 'ID=new\n', 'usr/': '', 'home/': '', 'srv/': '' } },
        { size: '4M', type: GUID.usrX86_64, fs: { 'lib/os-release': 'usr\n' } },
        { size: '4M', type: GUID.home, attrs: 'GUID:60', fs: { 'user/file': 'home\n' } },
        { size: '4M', type: GUID.srv, fs: { 'www/index': 'srv\n' } },
      ],
    });

  it('mounts every partition in order with its options, and unmount() undoes it all and releases the device', async () => {
    const file = fullImage();
    const where = target();
    const mounted = await mountImage(file, where, { ...arch, mkdir: true });
    expect(mounted.directory).toBe(where);
    expect(readFileSync(join(where, 'etc/os-release'), 'utf8')).toBe('ID=new\n');
    expect(readFileSync(join(where, 'usr/lib/os-release'), 'utf8')).toBe('usr\n');
    expect(readFileSync(join(where, 'home/user/file'), 'utf8')).toBe('home\n');
    expect(readFileSync(join(where, 'srv/www/index'), 'utf8')).toBe('srv\n');
    const number = Number(/^\/dev\/loop(\d+)$/.exec(mounted.device)![1]);
    expect(devicesBackedBy(file)).toEqual([number]);
    const lines = mountsUnder(where);
    expect(lines.map((line) => [line.mountPoint.slice(where.length) || '/', line.source])).toEqual([
      ['/', `${mounted.device}p2`],
      ['/usr', `${mounted.device}p3`],
      ['/home', `${mounted.device}p4`],
      ['/srv', `${mounted.device}p5`],
    ]);
    for (const line of lines) expect(line.options).toContain('nodev');
    expect(lines[2]!.options).toContain('ro');
    expect(lines[2]!.superOptions).toContain('norecovery');
    expect(lines[0]!.options).toContain('rw');
    expect(readFileSync(`/sys/block/loop${number}/loop/autoclear`, 'utf8').trim()).toBe('1');

    const result = await mounted.unmount({ wait: 30_000 });
    expect(result).toEqual({ directory: where, unmounted: [`${where}/srv`, `${where}/home`, `${where}/usr`, where], device: mounted.device, released: true });
    expect(mountsUnder(where)).toEqual([]);
    expect(devicesBackedBy(file)).toEqual([]);
  });

  it('read-only: the device and every mount read-only, norecovery on ext4', () => {
    const file = fullImage();
    const where = target();
    mkdirSync(where);
    using mounted = mountImageSync(file, where, { ...arch, readOnly: true });
    const number = Number(/(\d+)$/.exec(mounted.device)![1]);
    expect(readFileSync(`/sys/block/loop${number}/ro`, 'utf8').trim()).toBe('1');
    for (const line of mountsUnder(where)) {
      expect(line.options).toContain('ro');
      expect(line.superOptions).toContain('norecovery');
    }
  });

  it('a failure after the second mount undoes everything: mounts, directories it made, the device', async () => {
    const file = image({
      label: 'gpt',
      sizeMiB: 16,
      parts: [
        { size: '4M', type: GUID.rootX86_64, fs: { 'usr/': '', 'home/': '' } },
        { size: '4M', type: GUID.usrX86_64, fs: { 'bin/x': 'x' } },
        { size: '4M', type: GUID.home, fs: 'broken-ext4' },
      ],
    });
    expect(dissectSync(file, arch).refusals).toEqual([]);
    const where = join(target(), 'deeper');
    await expect(mountImage(file, where, { ...arch, mkdir: true })).rejects.toThrow(expect.objectContaining({ syscall: 'mount', path: `${where}/home` }));
    expect(mountsUnder(dir.path)).toEqual([]);
    expect(existsSync(where)).toBe(false);
    expect(existsSync(resolve(where, '..'))).toBe(false);
    expect(devicesBackedBy(file)).toEqual([]);
  });

  it('a failed first mount on a directory that is a mount point already leaves that mount alone', async () => {
    const file = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '4M', type: GUID.rootX86_64, fs: 'broken-ext4' }] });
    const where = target();
    mkdirSync(where);
    execFileSync('mount', ['-t', 'tmpfs', 'theirs', where]);
    try {
      await expect(mountImage(file, where, arch)).rejects.toThrow(expect.objectContaining({ syscall: 'mount' }));
      expect(mountsUnder(where).map((line) => line.source)).toEqual(['theirs']);
      expect(devicesBackedBy(file)).toEqual([]);
    } finally {
      execFileSync('umount', [where]);
    }
  });

  it('a missing mount point without mkdir is a failure midway too, undone', () => {
    const file = image({ label: 'gpt', sizeMiB: 12, parts: [{ size: '4M', type: GUID.rootX86_64, fs: { 'usr/': '' } }, { size: '4M', type: GUID.usrX86_64, fs: {} }, { size: '2M', type: GUID.srv, fs: {} }] });
    const where = target();
    mkdirSync(where);
    expect(() => mountImageSync(file, where, arch)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_ARGUMENT', path: `${where}/srv` }));
    expect(mountsUnder(where)).toEqual([]);
    expect(existsSync(where)).toBe(true);
    expect(devicesBackedBy(file)).toEqual([]);
  });

  it('a mount point that is a symlink in the image is refused', async () => {
    const file = image({ label: 'gpt', sizeMiB: 12, parts: [{ size: '4M', type: GUID.rootX86_64, fs: {} }, { size: '4M', type: GUID.usrX86_64, fs: {} }] });
    const where = target();
    // Put a symlink /usr -> / in the root file system (mounted once by hand for that).
    mkdirSync(where);
    const setup = await mountImage(file, where, { ...arch, mkdir: true });
    execFileSync('umount', [`${where}/usr`]);
    execFileSync('rmdir', [`${where}/usr`]);
    execFileSync('ln', ['-s', '/', `${where}/usr`]);
    execFileSync('umount', [where]);
    await expect(setup.unmount()).rejects.toThrow(code('ERR_LOOP_NOT_MOUNTED'));
    await expect(mountImage(file, where, { ...arch, mkdir: true })).rejects.toThrow(code('ERR_LOOP_BAD_IMAGE'));
    expect(mountsUnder(where)).toEqual([]);
    expect(devicesBackedBy(file)).toEqual([]);
  });

  it('/usr without root: a tmpfs root with /usr in it', async () => {
    const file = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '4M', type: GUID.usrX86_64, fs: { 'lib/marker': 'usr only\n' } }] });
    const where = target();
    await using mounted = await mountImage(file, where, { ...arch, mkdir: true, readOnly: true });
    expect(mounted.mounts.map((m) => m.source)).toEqual(['tmpfs', `${mounted.device}p1`]);
    expect(readFileSync(join(where, 'usr/lib/marker'), 'utf8')).toBe('usr only\n');
    const lines = mountsUnder(where);
    expect(lines.map((line) => [line.fstype, line.options.includes('nodev'), line.options[0]])).toEqual([['tmpfs', true, 'rw'], ['ext4', true, 'ro']]);
  });

  it('4096-byte sectors: the loop device gets them and the files are read', async () => {
    const file = image({ label: 'gpt', sizeMiB: 16, sectorSize: 4096, parts: [{ size: '8M', type: GUID.rootX86_64, fs: { hello: 'four k\n' } }] });
    expect(dissectSync(file, arch)).toMatchObject({ sectorSize: 4096, table: 'gpt' });
    const where = target();
    const mounted = await mountImage(file, where, { ...arch, mkdir: true });
    const number = Number(/(\d+)$/.exec(mounted.device)![1]);
    expect(readFileSync(`/sys/block/loop${number}/queue/logical_block_size`, 'utf8').trim()).toBe('4096');
    expect(readFileSync(join(where, 'hello'), 'utf8')).toBe('four k\n');
    expect((await unmountImage(where, { wait: 30_000 })).released).toBe(true);
    expect(devicesBackedBy(file)).toEqual([]);
  });

  it('GPT headers for two sector sizes: refused before anything is attached', async () => {
    const file = image({ label: 'gpt', sizeMiB: 16, sectorSize: 4096, parts: [{ size: '8M', type: GUID.rootX86_64, fs: {} }] });
    const other = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '2M', type: GUID.rootX86_64 }] });
    // The 512-byte table's header (LBA 1) into the 4096-byte image's unused first sector.
    const header = readFileSync(other).subarray(512, 1024);
    const fd = openSync(file, 'r+');
    writeSync(fd, header, 0, header.length, 512);
    closeSync(fd);
    expect(() => dissectSync(file, arch)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_AMBIGUOUS_IMAGE', message: expect.stringMatching(/512 and 4096/) }));
    const where = target();
    await expect(mountImage(file, where, { ...arch, mkdir: true })).rejects.toThrow(code('ERR_LOOP_AMBIGUOUS_IMAGE'));
    expect(existsSync(where)).toBe(false);
    expect(devicesBackedBy(file)).toEqual([]);
  });

  it('refusals leave nothing behind: nothing to mount, LUKS, a bare file system mounted whole', async () => {
    const espOnly = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '4M', type: GUID.esp }] });
    const luks = image({ label: 'gpt', sizeMiB: 8, parts: [{ size: '4M', type: GUID.rootX86_64, fs: 'luks' }] });
    const where = target();
    await expect(mountImage(espOnly, where, { ...arch, mkdir: true })).rejects.toThrow(code('ERR_LOOP_NOTHING_TO_MOUNT'));
    await expect(mountImage(luks, where, { ...arch, mkdir: true })).rejects.toThrow(code('ERR_LOOP_UNSUPPORTED_IMAGE'));
    expect(existsSync(where)).toBe(false);
    expect(devicesBackedBy(dir.path)).toEqual([]);

    const bare = join(dir.path, 'bare.ext4');
    execFileSync(mkfsExt4!, ['-q', '-F', '-d', resolve(root, 'docs', 'spec'), bare, '4M'], { stdio: 'pipe' });
    const mounted = await mountImage(bare, where, { mkdir: true });
    expect(mounted.mounts.map((m) => m.source)).toEqual([mounted.device]);
    expect(existsSync(join(where, 'discoverable-partitions.md'))).toBe(true);
    expect((await mounted.unmount({ wait: 30_000 })).released).toBe(true);
  });

  it('unmountImage(directory) finds the mounts in mountinfo, and refuses a stranger among them', async () => {
    const file = fullImage();
    const where = target();
    await mountImage(file, where, { ...arch, mkdir: true });
    execFileSync('mount', ['-t', 'tmpfs', 'stranger', `${where}/srv/www`]);
    await expect(unmountImage(where)).rejects.toThrow(expect.objectContaining({ code: 'ERR_LOOP_BUSY', message: expect.stringMatching(/stranger/) }));
    expect(mountsUnder(where)).toHaveLength(5);
    execFileSync('umount', [`${where}/srv/www`]);
    const result = await unmountImage(where, { wait: 30_000 });
    expect(result.unmounted).toEqual([`${where}/srv`, `${where}/home`, `${where}/usr`, where]);
    expect(result.released).toBe(true);
    expect(devicesBackedBy(file)).toEqual([]);
    await expect(unmountImage(where)).rejects.toThrow(code('ERR_LOOP_NOT_MOUNTED'));
  });

  it('the CLI: dissect --json, --mount and --umount', () => {
    const file = fullImage();
    const where = target();
    const cli = (...args: string[]): string => execFileSync(process.execPath, [join(root, 'dist', 'cli.js'), 'dissect', ...args], { encoding: 'utf8' });
    const shown = JSON.parse(cli('--json', '--architecture', 'x86-64', file)) as DissectedImage;
    expect(shown.mounts.map((m) => m.mountPoint)).toEqual(['/', '/usr', '/home', '/srv']);
    expect(cli('--architecture', 'x86-64', file)).toMatch(/Mounts, in order:\n {2}\/ +partition 2 \(ext4\) rw,nodev\n/);
    expect(cli('-m', '--mkdir', '-r', '--architecture', 'x86-64', file, where)).toMatch(new RegExp(`mounted /dev/loop\\d+p2 on ${where} \\(ext4, ro,nodev,norecovery\\)`));
    expect(mountsUnder(where)).toHaveLength(4);
    expect(cli('-u', where)).toMatch(/released \/dev\/loop\d+\n$/);
    expect(mountsUnder(where)).toEqual([]);
    expect(devicesBackedBy(file)).toEqual([]);
  });
});
