// /proc/self/mountinfo: what is mounted, and which loop device a mount comes from.
import { readFileSync, readlinkSync, statSync } from 'node:fs';

import { fromNodeError } from '../core/errors';
import { splitDev } from './sysfs';

/** One line of /proc/self/mountinfo. */
export interface MountInfoEntry {
  /** major:minor of the filesystem (0:N for btrfs and other anonymous devices) */
  majorMinor: string;
  mountPoint: string;
  /** per-mount options: rw, nosuid, nodev, noexec, relatime... */
  options: string[];
  fstype: string;
  source: string;
  superOptions: string[];
}

/** The kernel escapes space, tab, newline and backslash as \ooo; the rest are raw bytes. */
function unescapeField(field: string): string {
  const bytes = field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

/** This process's mount table, in mount order (the last entry of a mount point is on top). */
export function readMountInfo(): MountInfoEntry[] {
  let text: string;
  try {
    text = readFileSync('/proc/self/mountinfo', 'latin1');
  } catch (error) {
    throw fromNodeError(error);
  }
  const entries: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-', 6);
    if (fields.length < 10 || separator < 0) continue;
    entries.push({
      majorMinor: fields[2]!,
      mountPoint: unescapeField(fields[4]!),
      options: fields[5]!.split(','),
      fstype: unescapeField(fields[separator + 1]!),
      source: unescapeField(fields[separator + 2]!),
      superOptions: (fields[separator + 3] ?? '').split(','),
    });
  }
  return entries;
}

/** The loop device number behind a sysfs block device link, e.g. .../loop3 or .../loop3/loop3p2. */
function loopOfDev(major: number, minor: number): number | null {
  if (major === 0) return null;
  try {
    const match = /\/loop(\d+)(?:\/loop\d+p\d+)?$/.exec(readlinkSync(`/sys/dev/block/${major}:${minor}`));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/** The loop device a mount comes from, or null when it is not on a loop device or partition. */
export function loopNumberOfMount(entry: MountInfoEntry): number | null {
  const named = /^\/dev\/loop(\d+)(?:p\d+)?$/.exec(entry.source);
  if (named) return Number(named[1]);
  // A symlink (/dev/disk/by-uuid/...) or a filesystem with an anonymous st_dev (btrfs): ask sysfs.
  try {
    if (!entry.source.startsWith('/')) throw new Error('not a path'); // "proc", "tmpfs", "none"...
    const stats = statSync(entry.source);
    if (stats.isBlockDevice()) {
      const { major, minor } = splitDev(stats.rdev);
      const number = loopOfDev(major, minor);
      if (number !== null) return number;
    }
  } catch {
    // not a path
  }
  const [major, minor] = entry.majorMinor.split(':').map(Number);
  return loopOfDev(major!, minor!);
}

/** Where loop device `number` (or one of its partitions) is mounted, in this process's mount table. */
export function mountPointsOf(number: number, mounts: readonly MountInfoEntry[] = readMountInfo()): string[] {
  return mounts.filter((entry) => loopNumberOfMount(entry) === number).map((entry) => entry.mountPoint);
}
