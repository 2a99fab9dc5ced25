// dissect() and mountImage() against systemd-dissect (Debian's systemd-container), image by
// image: which partition each designator uses, and where, in which order and with which options
// each is mounted, as mountinfo shows them. Runs where systemd-dissect is installed and udev
// runs: the trixie guest (.ci/guests sets LOOPDEV_SYSTEMD_DISSECT=1); vitest.config.mts leaves
// it out elsewhere. The differences that are meant are in the README (dissect()).
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { dissectSync, LoopError, mountImageSync } from '../lib/index';
import { buildImage, GUID, type ImageSpec } from './helpers/dps-images';
import { mountTable, suiteTempDir } from './helpers/kernel';

/** What a mount looks like from outside: where (relative), the file system, the flags and the masks. */
function mountsUnder(directory: string): string[] {
  const kept = new Set(['ro', 'rw', 'nodev', 'nosuid', 'noexec', 'nosymfollow']);
  return mountTable()
    .filter((line) => line.mountPoint === directory || line.mountPoint.startsWith(`${directory}/`))
    .map((line) => {
      const flags = line.options.filter((option) => kept.has(option)).sort();
      const masks = line.superOptions.filter((option) => /^[fd]mask=/.test(option));
      return `${line.mountPoint.slice(directory.length) || '/'} ${line.fstype} ${[...flags, ...masks].join(',')}`;
    });
}

/** systemd-dissect's designators of the partitions it uses: "designator:number". */
function theirDesignators(file: string): string[] | 'refused' {
  const run = spawnSync('systemd-dissect', ['--json=short', file], { encoding: 'utf8' });
  if (run.status !== 0) return 'refused';
  const report = JSON.parse(run.stdout) as { mounts: { designator: string; partno: number }[] };
  return report.mounts.map((m) => `${m.designator}:${m.partno}`).sort();
}

/** Ours, where systemd-dissect refuses to show an image it could not mount: dissect() shows it, and says so in `refusals`. */
function ourDesignators(file: string): string[] | 'refused' {
  try {
    const image = dissectSync(file);
    if (image.refusals.some((refusal) => refusal.code === 'ERR_LOOP_NOTHING_TO_MOUNT')) return 'refused';
    return image.partitions
      .filter((p) => p.used && p.designator !== null)
      .map((p) => `${p.designator === 'linux-generic' ? 'root' : p.designator}:${p.number ?? 1}`)
      .sort();
  } catch (error) {
    if (error instanceof LoopError) return 'refused';
    throw error;
  }
}

function theirMounts(file: string, where: string): string[] | 'refused' {
  const run = spawnSync('systemd-dissect', ['--mount', '--mkdir', file, where], { encoding: 'utf8' });
  if (run.status !== 0) return 'refused';
  const seen = mountsUnder(where);
  const umount = spawnSync('systemd-dissect', ['--umount', where], { encoding: 'utf8' });
  expect(umount.status, umount.stderr).toBe(0);
  return seen;
}

function ourMounts(file: string, where: string): string[] | 'refused' {
  let mounted;
  try {
    mounted = mountImageSync(file, where, { mkdir: true });
  } catch (error) {
    if (error instanceof LoopError) return 'refused';
    throw error;
  }
  const seen = mountsUnder(where);
  expect(mounted.unmountSync().released).toBe(true);
  return seen;
}

const root = (name: string, files: Record<string, string> = { 'usr/': '', 'var/': '', 'home/': '', 'srv/': '' }) => ({ size: '4M', type: GUID.rootX86_64, name, fs: files });

const CASES: [string, ImageSpec][] = [
  [
    'every designator, the root with /efi',
    {
      label: 'gpt',
      sizeMiB: 44,
      parts: [
        { size: '4M', type: GUID.esp, name: 'esp', fs: 'vfat' },
        { size: '4M', type: GUID.xbootldr, fs: 'vfat' },
        { size: '4M', type: GUID.swap },
        { size: '4M', type: GUID.tmp, fs: {} },
        { size: '4M', type: GUID.var, fs: {} },
        { size: '4M', type: GUID.srv, fs: {} },
        { size: '4M', type: GUID.home, fs: {}, attrs: 'GUID:59' },
        { size: '4M', type: GUID.usrX86_64, fs: {} },
        root('root', { 'usr/': '', 'var/': '', 'home/': '', 'srv/': '', 'efi/': '', 'boot/': '' }),
      ],
    },
  ],
  ['an ESP, the root with an empty /boot and no /efi', { label: 'gpt', sizeMiB: 12, parts: [{ size: '4M', type: GUID.esp, fs: 'vfat' }, root('root', { 'boot/': '' })] }],
  ['an ESP, the root with neither /efi nor /boot', { label: 'gpt', sizeMiB: 12, parts: [{ size: '4M', type: GUID.esp, fs: 'vfat' }, root('root', { 'etc/': '' })] }],
  [
    'A/B root labels, no-auto and pending ones',
    {
      label: 'gpt',
      sizeMiB: 24,
      parts: [root('os_1.9'), root('os_1.10'), root('os_1.2'), { ...root('os_9.0'), attrs: 'GUID:63' }, root('PND#os_8.0')],
    },
  ],
  [
    'a no-auto /srv and a read-only /home',
    { label: 'gpt', sizeMiB: 16, parts: [root('root'), { size: '4M', type: GUID.home, attrs: 'GUID:60', fs: {} }, { size: '4M', type: GUID.srv, attrs: 'GUID:63', fs: {} }] },
  ],
  ['/usr without root', { label: 'gpt', sizeMiB: 8, parts: [{ size: '4M', type: GUID.usrX86_64, fs: {} }] }],
  ['a single Linux data partition', { label: 'gpt', sizeMiB: 8, parts: [{ size: '4M', type: GUID.generic, fs: {} }] }],
  ['two Linux data partitions', { label: 'gpt', sizeMiB: 12, parts: [{ size: '4M', type: GUID.generic, fs: {} }, { size: '4M', type: GUID.generic, fs: {} }] }],
  ['an ESP alone', { label: 'gpt', sizeMiB: 8, parts: [{ size: '4M', type: GUID.esp, fs: 'vfat' }] }],
  ['MBR, a bootable 0x83', { label: 'dos', sizeMiB: 12, parts: [{ size: '4M', type: '83', fs: {} }, { size: '4M', type: '83', bootable: true, fs: { 'usr/': '' } }] }],
  ['MBR without the boot flag', { label: 'dos', sizeMiB: 8, parts: [{ size: '4M', type: '83', fs: {} }] }],
  ['4096-byte sectors', { label: 'gpt', sizeMiB: 16, sectorSize: 4096, parts: [root('root'), { size: '4M', type: GUID.home, fs: {} }] }],
  ['a broken primary GPT header', { label: 'gpt', sizeMiB: 8, parts: [root('root')] }],
];

describe('the same images through systemd-dissect', () => {
  const dir = suiteTempDir();

  it.each(CASES)('%s: the same partitions used, mounted in the same order with the same options', (name, spec) => {
    const file = join(dir.path, `${name.replace(/\W+/g, '-')}.raw`);
    buildImage(file, spec);
    if (name === 'a broken primary GPT header') {
      const fd = openSync(file, 'r+');
      writeSync(fd, Buffer.from([0xff, 0xff]), 0, 2, 512 + 16); // the primary header's CRC
      closeSync(fd);
    }
    expect(ourDesignators(file)).toEqual(theirDesignators(file));
    const theirs = theirMounts(file, join(dir.path, `${name.replace(/\W+/g, '-')}-systemd`));
    const ours = ourMounts(file, join(dir.path, `${name.replace(/\W+/g, '-')}-loopdev`));
    expect(ours).toEqual(theirs);
  });
});
