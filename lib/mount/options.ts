// mount(8)'s option language, turned into mount(2) flags and data: pure parsing, no kernel
// (the CLI uses it without loading the addon).
import { describe, invalid, optionalBoolean } from '../loop/options';
import { MAX_PARTITION_NUMBER } from '../partitions/table';

/** mount(2) flags, from <linux/mount.h>. */
export const MS = {
  RDONLY: 1,
  NOSUID: 2,
  NODEV: 4,
  NOEXEC: 8,
  SYNCHRONOUS: 16,
  DIRSYNC: 128,
  NOATIME: 1024,
  NODIRATIME: 2048,
  RELATIME: 1 << 21,
  STRICTATIME: 1 << 24,
  LAZYTIME: 1 << 25,
} as const;
/** mount(2) copies at most one page of data. */
const MAX_DATA_BYTES = 4095;

type Switch = 'readOnly' | 'nosuid' | 'nodev' | 'noexec';
const SWITCH_WORDS: Record<string, [Switch, boolean]> = {
  ro: ['readOnly', true],
  rw: ['readOnly', false],
  nosuid: ['nosuid', true],
  suid: ['nosuid', false],
  nodev: ['nodev', true],
  dev: ['nodev', false],
  noexec: ['noexec', true],
  exec: ['noexec', false],
};
const FLAG_WORDS: Record<string, { set?: number; clear?: number }> = {
  noatime: { set: MS.NOATIME },
  atime: { clear: MS.NOATIME },
  nodiratime: { set: MS.NODIRATIME },
  diratime: { clear: MS.NODIRATIME },
  relatime: { set: MS.RELATIME },
  norelatime: { clear: MS.RELATIME },
  strictatime: { set: MS.STRICTATIME },
  nostrictatime: { clear: MS.STRICTATIME },
  lazytime: { set: MS.LAZYTIME },
  nolazytime: { clear: MS.LAZYTIME },
  sync: { set: MS.SYNCHRONOUS },
  async: { clear: MS.SYNCHRONOUS },
  dirsync: { set: MS.DIRSYNC },
};
// mount(8) keeps these for itself (fstab and helpers); the kernel would reject them.
const USERSPACE_WORDS = new Set(['defaults', 'auto', 'noauto', 'nofail', '_netdev', 'nouser']);
// Words that ask for something other than mounting this image.
const REFUSED_WORDS: Record<string, string> = {
  loop: 'mount() sets up the loop device itself',
  offset: "use the 'offset' option",
  sizelimit: "use the 'sizeLimit' option",
  user: 'mount() is not mount(8): there is no fstab user check',
  users: 'mount() is not mount(8): there is no fstab user check',
  owner: 'mount() is not mount(8): there is no fstab user check',
  group: 'mount() is not mount(8): there is no fstab user check',
};
for (const word of ['bind', 'rbind', 'remount', 'move']) REFUSED_WORDS[word] = 'mount() only mounts a new filesystem';
for (const word of ['shared', 'private', 'slave', 'unbindable']) {
  REFUSED_WORDS[word] = REFUSED_WORDS[`r${word}`] = 'propagation is changed with a separate mount(2) call';
}

/** Splits a mount(8) option string at commas outside double quotes (SELinux contexts hold commas). */
export function splitOptions(text: string): string[] {
  const words: string[] = [];
  let current = '';
  let quoted = false;
  for (const char of text) {
    if (char === '"') quoted = !quoted;
    if (char === ',' && !quoted) {
      words.push(current);
      current = '';
    } else {
      current += char;
    }
  }
  if (quoted) invalid(`option 'options' has an unbalanced '"': ${JSON.stringify(text)}`);
  words.push(current);
  return words.filter((word) => word !== '');
}

/** What the options say about the mount itself: flags, data, and whether it is read-only. */
export interface MountFlags {
  readOnly: boolean;
  /** MS_* bits for mount(2) */
  flags: number;
  /** the filesystem's own options, comma-separated */
  data: string;
}

/**
 * Turns `readOnly`, `nosuid`, `nodev`, `noexec` and the `options` string into mount(2) flags
 * and data, as mount(8) does. A word that contradicts an explicit boolean is refused.
 */
export function planMountFlags(options: Record<string, unknown>): MountFlags {
  const explicit: Record<Switch, boolean | undefined> = {
    readOnly: optionalBoolean(options, 'readOnly'),
    nosuid: optionalBoolean(options, 'nosuid'),
    nodev: optionalBoolean(options, 'nodev'),
    noexec: optionalBoolean(options, 'noexec'),
  };
  const fromWords: Partial<Record<Switch, { value: boolean; word: string }>> = {};
  let flags = 0;
  const data: string[] = [];
  if (options.options !== undefined) {
    if (typeof options.options !== 'string' || options.options.includes('\0')) {
      invalid(`option 'options' must be a string without NUL bytes, got ${describe(options.options)}`);
    }
    for (const word of splitOptions(options.options)) {
      const key = word.split('=', 1)[0]!;
      const toggle = SWITCH_WORDS[word];
      const flag = FLAG_WORDS[word];
      if (toggle !== undefined) {
        fromWords[toggle[0]] = { value: toggle[1], word }; // the last one wins, as in mount(8)
      } else if (flag !== undefined) {
        flags = (flags | (flag.set ?? 0)) & ~(flag.clear ?? 0);
      } else if (USERSPACE_WORDS.has(word) || key.startsWith('x-') || key === 'comment') {
        continue;
      } else if (REFUSED_WORDS[key] !== undefined) {
        invalid(`mount option '${word}' is not supported here: ${REFUSED_WORDS[key]}`);
      } else {
        data.push(word);
      }
    }
  }
  const defaults: Record<Switch, boolean> = { readOnly: false, nosuid: true, nodev: true, noexec: false };
  const resolved = { ...defaults };
  for (const name of Object.keys(defaults) as Switch[]) {
    const word = fromWords[name];
    const given = explicit[name];
    if (given !== undefined && word !== undefined && given !== word.value) {
      invalid(`option '${name}: ${given}' contradicts '${word.word}' in options`);
    }
    resolved[name] = given ?? word?.value ?? defaults[name];
  }
  if (resolved.readOnly) flags |= MS.RDONLY;
  if (resolved.nosuid) flags |= MS.NOSUID;
  if (resolved.nodev) flags |= MS.NODEV;
  if (resolved.noexec) flags |= MS.NOEXEC;
  const joined = data.join(',');
  if (Buffer.byteLength(joined) > MAX_DATA_BYTES) invalid(`mount data must be at most ${MAX_DATA_BYTES} bytes (one page)`);
  return { readOnly: resolved.readOnly, flags, data: joined };
}

/** Checks a filesystem type name: letters, digits and . _ + - (e.g. ext4, fuse.sshfs). */
export function checkFsType(value: unknown, what = "option 'fstype'"): string | null {
  if (value === undefined) return null;
  if (typeof value !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/.test(value)) {
    invalid(`${what} must be a filesystem type name such as "ext4", got ${describe(value)}`);
  }
  return value;
}

/** Checks a `partition` option: the partition number M of /dev/loopNpM, 1 to 255; null when not given. */
export function checkPartition(value: unknown): number | null {
  if (value === undefined) return null;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_PARTITION_NUMBER) {
    invalid(`option 'partition' must be an integer from 1 to ${MAX_PARTITION_NUMBER}, got ${describe(value)}`);
  }
  return value;
}
