// /proc/self/mountinfo: what is mounted, and which loop device a mount comes from.
import { call, type Flow } from '../core/flow';
import * as io from '../core/io';
import { splitDev } from './dev-number';
import { loopOfDev } from './sysfs';

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
export function* readMountInfo(): Flow<MountInfoEntry[]> {
  const text = yield* call(io.readText, '/proc/self/mountinfo');
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

/** The loop device a mount comes from, or null when it is not on a loop device or partition. */
export function* loopNumberOfMount(entry: MountInfoEntry): Flow<number | null> {
  const named = /^\/dev\/loop(\d+)(?:p\d+)?$/.exec(entry.source);
  if (named) return Number(named[1]);
  // A symlink (/dev/disk/by-uuid/...) or a filesystem with an anonymous st_dev (btrfs): ask sysfs.
  // "proc", "tmpfs", "none"... are not paths.
  if (entry.source.startsWith('/')) {
    try {
      const stats = yield* call(io.stat, entry.source);
      if (stats.isBlockDevice()) {
        const { major, minor } = splitDev(stats.rdev);
        const number = yield* loopOfDev(major, minor);
        if (number !== null) return number;
      }
    } catch {
      // gone, or not a path after all
    }
  }
  const [major, minor] = entry.majorMinor.split(':').map(Number);
  return yield* loopOfDev(major!, minor!);
}

/** A mount, and the loop device it comes from (null: not a loop device or partition). */
export interface LoopMount {
  entry: MountInfoEntry;
  number: number | null;
}

/** This process's mounts (read now unless given) with the loop device each comes from, each asked of sysfs once. */
export function* loopMounts(mounts?: readonly MountInfoEntry[]): Flow<LoopMount[]> {
  const found: LoopMount[] = [];
  for (const entry of mounts ?? (yield* readMountInfo())) found.push({ entry, number: yield* loopNumberOfMount(entry) });
  return found;
}

/** Where loop device `number` (or one of its partitions) is mounted, among `mounts`. */
export const pointsOf = (number: number, mounts: readonly LoopMount[]): string[] =>
  mounts.filter((mount) => mount.number === number).map((mount) => mount.entry.mountPoint);

/** Where loop device `number` (or one of its partitions) is mounted, in this process's mount table. */
export function* mountPointsOf(number: number): Flow<string[]> {
  return pointsOf(number, yield* loopMounts());
}
