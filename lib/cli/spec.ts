// What the `loopdev` command offers: its commands, their options and arguments, and the help
// text made from them. parse.ts reads the same tables, so help and parsing cannot disagree.
import { COLUMNS, DEFAULT_COLUMNS } from './columns';

export type CommandName =
  | 'attach'
  | 'detach'
  | 'list'
  | 'info'
  | 'find'
  | 'set'
  | 'set-capacity'
  | 'change-backing'
  | 'mount'
  | 'umount'
  | 'dissect'
  | 'add'
  | 'remove'
  | 'reap';

export interface OptionSpec {
  type: 'boolean' | 'string';
  short?: string;
  /** the value's name in help, for string options */
  value?: string;
  help: string;
  /** listed in help under another name's line (e.g. --sizelimit beside --size-limit) */
  hidden?: boolean;
}

export interface CommandSpec {
  usage: string;
  /** for the list of commands in `loopdev --help` */
  brief: string;
  summary: string;
  /** positional arguments: exactly these, or at least these when `variadic` (the last repeats) */
  positionals: { names: string[]; variadic?: boolean };
  options: Record<string, OptionSpec>;
  notes?: string[];
}

const help: OptionSpec = { type: 'boolean', short: 'h', help: 'show this help' };
const json: OptionSpec = { type: 'boolean', help: 'print JSON (keys: "JSON output" in the README)' };
const verbose: OptionSpec = { type: 'boolean', short: 'v', help: 'say what was done' };
const deviceJson: OptionSpec = { type: 'boolean', help: 'print the device as `info --json` does (keys: "JSON output" in the README)' };
const sizeOptions: Record<string, OptionSpec> = {
  offset: { type: 'string', short: 'o', value: 'SIZE', help: 'start this many bytes into IMAGE' },
  'size-limit': { type: 'string', value: 'SIZE', help: 'expose at most this many bytes (also --sizelimit)' },
  sizelimit: { type: 'string', value: 'SIZE', help: '', hidden: true },
  'sector-size': { type: 'string', short: 'b', value: 'SIZE', help: 'logical sector size: 512, 1024, 2048 or 4096' },
};

/** Every command, in the order `loopdev --help` lists them. */
export const SPECS: Record<CommandName, CommandSpec> = {
  attach: {
    brief: 'bind IMAGE to a free loop device, print its path',
    usage: 'loopdev attach [options] IMAGE',
    summary: 'Bind IMAGE to a free loop device and print the device path (losetup -f --show).',
    positionals: { names: ['IMAGE'] },
    options: {
      'read-only': { type: 'boolean', short: 'r', help: 'bind read-only' },
      ...sizeOptions,
      partscan: { type: 'boolean', short: 'P', help: 'create partition devices /dev/loopNpM (MBR or GPT)' },
      'direct-io': { type: 'boolean', help: 'the kernel reads and writes IMAGE with O_DIRECT' },
      'in-memory': { type: 'boolean', help: 'attach a sealed in-memory copy of IMAGE: IMAGE may then change or go, writes never reach it' },
      device: { type: 'string', value: 'DEV', help: 'use this device (created if missing), not a free one' },
      label: { type: 'string', value: 'TEXT', help: "store TEXT as the device's label (63 bytes at most)" },
      hold: { type: 'boolean', help: 'keep running, holding the device, until SIGINT, SIGTERM or SIGHUP (or loopdev dies); its label gets the owner tag (see `loopdev reap`)' },
      autoclear: { type: 'boolean', help: 'same as --hold (see below)' },
      json,
      help,
    },
    notes: [
      'Without --hold the device stays bound after loopdev exits: release it with `loopdev detach`.',
      "The kernel's autoclear flag frees a device when its last user closes it; for a command that",
      'exits at once that would be immediately, so --autoclear means --hold. To keep an image',
      'mounted without a holder, use `loopdev mount`.',
    ],
  },
  detach: {
    brief: 'unbind devices, or every device backed by IMAGE',
    usage: 'loopdev detach [options] DEV|IMAGE...',
    summary: 'Unbind loop devices; an IMAGE detaches every loop device backed by that file.',
    positionals: { names: ['DEV|IMAGE'], variadic: true },
    options: { verbose, help },
    notes: [
      'Detaching a device that is not bound succeeds. A device still open elsewhere (mounted,',
      'held by `attach --hold`) is released by the kernel at its last close: loopdev says so on',
      'stderr and exits 0.',
    ],
  },
  list: {
    brief: 'show all bound loop devices',
    usage: 'loopdev list [-O COLUMNS | --output-all] [-n] [--raw | --json]',
    summary: 'Show every bound loop device (losetup --list).',
    positionals: { names: [] },
    options: {
      output: { type: 'string', short: 'O', value: 'COLUMNS', help: 'show these columns (comma-separated, any case; +COLUMNS: the default ones and these)' },
      'output-all': { type: 'boolean', help: 'show every column' },
      noheadings: { type: 'boolean', short: 'n', help: 'leave out the line of column names' },
      raw: { type: 'boolean', help: "losetup's raw format: values one space apart, not aligned, blanks and backslashes as \\xNN" },
      json,
      help,
    },
    notes: [
      'With -O or --output-all, --json keys each device by the lowercase column names, as losetup does.',
      `Default columns: ${DEFAULT_COLUMNS.join(',')}. All of them (* marks loopdev's own, the others are losetup's):`,
      ...columnLines(),
    ],
  },
  info: {
    brief: 'show one loop device',
    usage: 'loopdev info [--json] DEV',
    summary: 'Show one bound loop device.',
    positionals: { names: ['DEV'] },
    options: { json, help },
  },
  find: {
    brief: 'show the loop devices backed by IMAGE',
    usage: 'loopdev find [--json] IMAGE',
    summary: 'Print the loop devices backed by IMAGE, one per line (losetup -j).',
    positionals: { names: ['IMAGE'] },
    options: { json, help },
  },
  set: {
    brief: 'change a bound device in place',
    usage: 'loopdev set [options] DEV',
    summary: 'Change settings of a bound loop device in place, without detaching it.',
    positionals: { names: ['DEV'] },
    options: {
      'direct-io': { type: 'string', value: 'on|off|prefer', help: 'the kernel reads and writes the file with O_DIRECT (prefer: if the file allows it)' },
      'sector-size': sizeOptions['sector-size'],
      offset: { type: 'string', short: 'o', value: 'SIZE', help: 'start this many bytes into the file' },
      'size-limit': sizeOptions['size-limit'],
      sizelimit: sizeOptions.sizelimit,
      autoclear: { type: 'string', value: 'on|off', help: 'the kernel frees the device at its last close (see below)' },
      partscan: { type: 'boolean', short: 'P', help: 'create partition devices /dev/loopNpM (it cannot be turned off)' },
      label: { type: 'string', value: 'TEXT', help: "store TEXT as the device's label (63 bytes at most)" },
      verbose: { type: 'boolean', short: 'v', help: 'print the new settings and size' },
      json: deviceJson,
      help,
    },
    notes: [
      'At least one change. Partition devices follow a new offset or size limit. With',
      '--autoclear on, a device that nothing holds open (not mounted, not held) is freed at once.',
    ],
  },
  'set-capacity': {
    brief: "re-read the size of DEV's backing file",
    usage: 'loopdev set-capacity [-v] [--json] DEV',
    summary: 'Make DEV take the new size of its backing file after the file grew or shrank (losetup -c).',
    positionals: { names: ['DEV'] },
    options: { verbose: { type: 'boolean', short: 'v', help: 'print the new size' }, json: deviceJson, help },
  },
  'change-backing': {
    brief: 'swap the backing file of a read-only device',
    usage: 'loopdev change-backing [-v] [--json] DEV FILE',
    summary: "Make FILE the backing file of DEV, in place (LOOP_CHANGE_FD), as live systems swap their root image.",
    positionals: { names: ['DEV', 'FILE'] },
    options: { verbose: { type: 'boolean', short: 'v', help: 'print the new backing file' }, json: deviceJson, help },
    notes: ['The kernel does this only for a device attached --read-only, and a FILE that gives it the same size.'],
  },
  mount: {
    brief: 'attach IMAGE and mount it on TARGET',
    usage: 'loopdev mount [options] IMAGE TARGET',
    summary: 'Attach IMAGE and mount it on TARGET (mount -o loop). The device is released at umount.',
    notes: [
      'The mount holds the loop device, not loopdev: it stays after loopdev exits and goes away',
      'with the unmount (by `loopdev umount` or umount(8)). nosuid and nodev are on unless -o',
      'says suid or dev.',
    ],
    positionals: { names: ['IMAGE', 'TARGET'] },
    options: {
      type: { type: 'string', short: 't', value: 'TYPE', help: 'filesystem type (default: read from the superblock)' },
      options: { type: 'string', short: 'o', value: 'OPTS', help: 'comma-separated, as mount(8): ro, noexec, noatime, offset=SIZE, filesystem options...' },
      partition: { type: 'string', value: 'N', help: 'mount partition N of the image (MBR or GPT)' },
      'read-only': { type: 'boolean', short: 'r', help: 'mount read-only (and bind the device read-only)' },
      offset: { type: 'string', value: 'SIZE', help: 'the filesystem starts this many bytes into IMAGE' },
      'size-limit': sizeOptions['size-limit'],
      sizelimit: sizeOptions.sizelimit,
      'sector-size': sizeOptions['sector-size'],
      mkdir: { type: 'boolean', help: 'create TARGET if it does not exist' },
      json: { type: 'boolean', help: 'print what was mounted as JSON' },
      verbose,
      help,
    },
  },
  umount: {
    brief: 'unmount TARGET and release its loop device',
    usage: 'loopdev umount [options] TARGET',
    summary: 'Unmount TARGET and release its loop device.',
    positionals: { names: ['TARGET'] },
    options: {
      lazy: { type: 'boolean', short: 'l', help: 'detach the mount now, clean up once it is no longer busy' },
      force: { type: 'boolean', short: 'f', help: 'force the unmount (MNT_FORCE)' },
      verbose,
      help,
    },
  },
  dissect: {
    brief: 'show a whole disk image (Discoverable Partitions), or mount or unmount it whole',
    usage: 'loopdev dissect [--json] IMAGE | dissect --mount [-r] [--mkdir] IMAGE DIR | dissect --umount DIR',
    summary: "Show what a disk image holds by the Discoverable Partitions Specification (systemd-dissect's view), or mount all of it on DIR, or unmount it.",
    positionals: { names: ['IMAGE|DIR'], variadic: true },
    options: {
      mount: { type: 'boolean', short: 'm', help: 'mount IMAGE on DIR: root, /usr, /home, /srv, /var, /var/tmp, /boot, /efi in order' },
      umount: { type: 'boolean', short: 'u', help: 'unmount everything mounted on and under DIR and release its loop device' },
      'read-only': { type: 'boolean', short: 'r', help: 'attach and mount read-only' },
      mkdir: { type: 'boolean', help: 'create DIR and mount points missing inside the image' },
      architecture: { type: 'string', value: 'ARCH', help: "use root and /usr partitions of ARCH (systemd's names: x86-64, arm64...), not this machine's" },
      json: { type: 'boolean', help: 'print what dissect() or mountImage() returns as JSON' },
      help,
    },
    notes: [
      'Without --mount or --umount it only reads IMAGE: no root, no loop device. Encrypted (LUKS) and',
      'dm-verity images are shown, not mounted. The mounts hold the loop device: it goes away with',
      '`loopdev dissect --umount DIR`.',
    ],
  },
  add: {
    brief: 'create loop devices /dev/loopN',
    usage: 'loopdev add [-v] N...',
    summary: 'Create the loop devices /dev/loopN, unbound (LOOP_CTL_ADD).',
    positionals: { names: ['N'], variadic: true },
    options: { verbose: { type: 'boolean', short: 'v', help: 'say what was created' }, help },
    notes: ['N is a number, loopN or /dev/loopN. A device that exists already is an error (EEXIST).'],
  },
  remove: {
    brief: 'remove unbound loop devices /dev/loopN',
    usage: 'loopdev remove [-v] N...',
    summary: 'Remove the loop devices /dev/loopN (LOOP_CTL_REMOVE, losetup --remove).',
    positionals: { names: ['N'], variadic: true },
    options: { verbose: { type: 'boolean', short: 'v', help: 'say what was removed' }, help },
    notes: ['N is a number, loopN or /dev/loopN. A bound or open device is not removed (EBUSY): detach it first.'],
  },
  reap: {
    brief: 'release leaked devices (owner gone, backing file deleted)',
    usage: 'loopdev reap [--dry-run] [--json] [--under DIR] [--label-prefix TEXT] [--keep-deleted]',
    summary: 'Release the loop devices nobody will release: those whose owner is gone, and those whose backing file was deleted.',
    positionals: { names: [] },
    options: {
      'dry-run': { type: 'boolean', help: 'only list what would be released; release nothing' },
      under: { type: 'string', value: 'DIR', help: 'only devices whose backing file lies under DIR' },
      'label-prefix': { type: 'string', value: 'TEXT', help: 'only devices whose label starts with TEXT' },
      'keep-deleted': { type: 'boolean', help: 'leave devices whose backing file was deleted (and that carry no owner tag)' },
      json: { type: 'boolean', help: 'print the entries as reap() returns them (keys: "reap" in the README)' },
      help,
    },
    notes: [
      'Without --dry-run it releases what it finds. Each device found gets one line: released, or',
      'kept and why. The owner is the process that attached the device with the owner tag in its',
      'label (`attach --hold`, the API\'s `owner: true`), gone when no such process runs any more.',
      'Never released: a device that is mounted (in this mount namespace), held (device-mapper),',
      'open in a process or locked (udev, systemd), or that the kernel finds open at the release;',
      'nor an in-memory copy, nor a device whose owner is alive. Exit status 1 when a release failed.',
    ],
  },
};

/** Other names a command answers to. */
export const ALIASES: Record<string, CommandName> = { unmount: 'umount', ls: 'list' };

export function isCommandName(name: string): name is CommandName {
  return Object.hasOwn(SPECS, name);
}

/** list's column names and what they show, for its help. */
function columnLines(): string[] {
  const width = Math.max(...COLUMNS.map((column) => column.name.length)) + 1;
  return COLUMNS.map((column) => `  ${`${column.name}${column.ours ? '*' : ''}`.padEnd(width)}  ${column.help}`);
}

function optionLines(options: Record<string, OptionSpec>): string[] {
  const rows = Object.entries(options)
    .filter(([, spec]) => !spec.hidden)
    .map(([name, spec]) => {
      const flag = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.value ? ` ${spec.value}` : ''}`;
      return [flag, spec.help] as const;
    });
  const width = Math.max(...rows.map(([flag]) => flag.length));
  return rows.map(([flag, text]) => `  ${flag.padEnd(width)}  ${text}`);
}

const GENERAL_NOTES = [
  'DEV is /dev/loopN, loopN or N. SIZE is bytes or a number with K, M, G, T (powers of 1024).',
  'Exit status: 0 done, 1 the command failed, 2 wrong command line.',
];

/** The help text of the whole CLI (topic null) or of one command. */
export function helpText(topic: CommandName | null = null): string {
  if (topic === null) {
    const rows = (Object.keys(SPECS) as CommandName[]).map((name) => {
      const spec = SPECS[name];
      const args = spec.positionals.names.join(' ') + (spec.positionals.variadic ? '...' : '');
      return [`${name} ${args}`.trim(), spec.brief] as const;
    });
    const width = Math.max(...rows.map(([left]) => left.length));
    return [
      'Usage: loopdev COMMAND [options] [arguments]',
      '',
      'Attach image files to Linux loop devices, inspect, mount and release them.',
      '',
      'Commands:',
      ...rows.map(([left, text]) => `  ${left.padEnd(width)}  ${text}`),
      '',
      'Options:',
      '  -h, --help     show help (also `loopdev COMMAND --help`)',
      '  -V, --version  print the version',
      '',
      ...GENERAL_NOTES,
      '',
    ].join('\n');
  }
  const spec = SPECS[topic];
  return [
    `Usage: ${spec.usage}`,
    '',
    spec.summary,
    '',
    'Options:',
    ...optionLines(spec.options),
    ...(spec.notes ? ['', ...spec.notes] : []),
    '',
    ...GENERAL_NOTES,
    '',
  ].join('\n');
}
