// The `loopdev` command: losetup's everyday jobs plus mount and umount, through the library's
// ioctls; it never spawns a shell, losetup or mount. Parsing arguments into a Command and
// formatting output are pure functions (unit-tested without a kernel). The library is loaded
// only when a command runs, so --help, --version and usage errors work even where the addon
// cannot load, and a load failure is one clean error line rather than a stack at require time.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import type { LoopDevice } from '../loop/handle';
import { LoopError, fromNodeError } from '../core/errors';
import type { LoopInfo } from '../loop/inspect';
import type { MountOptions, UnmountOptions } from '../mount/mount';
import { splitOptions } from '../mount/options';
import type { AttachOptions } from '../loop/options';
import { parseSize } from '../core/size';

/** The library, loaded on first use (see the comment at the top). */
function library(): typeof import('../index') {
  return require('../index') as typeof import('../index');
}

function mountLibrary(): typeof import('../mount/mount') {
  return require('../mount/mount') as typeof import('../mount/mount');
}

export const EXIT_OK = 0;
/** A command ran and failed (the kernel or the library said no). */
export const EXIT_FAILURE = 1;
/** The command line itself is wrong: unknown command or option, missing argument, bad number. */
export const EXIT_USAGE = 2;

export type CommandName = 'attach' | 'detach' | 'list' | 'info' | 'find' | 'mount' | 'umount';

/** What the command line asks for, checked and converted (sizes in bytes). */
export type Command =
  | { name: 'help'; topic: CommandName | null }
  | { name: 'version' }
  | { name: 'attach'; image: string; options: AttachOptions; hold: boolean; json: boolean }
  | { name: 'detach'; targets: string[]; verbose: boolean }
  | { name: 'list'; json: boolean }
  | { name: 'info'; device: number | string; json: boolean }
  | { name: 'find'; image: string; json: boolean }
  | { name: 'mount'; image: string; target: string; options: MountOptions; json: boolean; verbose: boolean }
  | { name: 'umount'; target: string; options: UnmountOptions; verbose: boolean };

/**
 * A wrong command line. Only the CLI throws it and it never leaves the CLI: the library's
 * errors stay LoopErrors, and this one only decides exit status 2 and the usage hint.
 */
export class UsageError extends Error {
  readonly command: CommandName | null;
  constructor(message: string, command: CommandName | null) {
    super(message);
    this.name = 'UsageError';
    this.command = command;
  }
}

interface OptionSpec {
  type: 'boolean' | 'string';
  short?: string;
  /** the value's name in help, for string options */
  value?: string;
  help: string;
  /** listed in help under another name's line (e.g. --sizelimit beside --size-limit) */
  hidden?: boolean;
}

interface CommandSpec {
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
const json: OptionSpec = { type: 'boolean', help: 'print JSON (see docs/cli.md for the keys)' };
const verbose: OptionSpec = { type: 'boolean', short: 'v', help: 'say what was done' };
const sizeOptions: Record<string, OptionSpec> = {
  offset: { type: 'string', short: 'o', value: 'SIZE', help: 'start this many bytes into IMAGE' },
  'size-limit': { type: 'string', value: 'SIZE', help: 'expose at most this many bytes (also --sizelimit)' },
  sizelimit: { type: 'string', value: 'SIZE', help: '', hidden: true },
  'sector-size': { type: 'string', short: 'b', value: 'SIZE', help: 'logical sector size: 512, 1024, 2048 or 4096' },
};

const SPECS: Record<CommandName, CommandSpec> = {
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
      device: { type: 'string', value: 'DEV', help: 'use this device (created if missing), not a free one' },
      label: { type: 'string', value: 'TEXT', help: "store TEXT as the device's label (63 bytes at most)" },
      hold: { type: 'boolean', help: 'keep running, holding the device, until SIGINT, SIGTERM or SIGHUP (or loopdev dies)' },
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
    usage: 'loopdev list [--json]',
    summary: 'Show every bound loop device (losetup --list).',
    positionals: { names: [] },
    options: { json, help },
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
};

const ALIASES: Record<string, CommandName> = { unmount: 'umount', ls: 'list' };
const SECTOR_SIZES = [512, 1024, 2048, 4096] as const;
const MAX_DEVICE_NUMBER = 0xfffff;

function isCommandName(name: string): name is CommandName {
  return Object.hasOwn(SPECS, name);
}

// ---------------------------------------------------------------------------------------------
// Help

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

/** The one-line hint printed after a usage error. */
export function usageHint(command: CommandName | null): string {
  return command === null
    ? 'Usage: loopdev COMMAND [options] (see `loopdev --help`)'
    : `Usage: ${SPECS[command].usage} (see \`loopdev ${command} --help\`)`;
}

// ---------------------------------------------------------------------------------------------
// Parsing

/** `3`, `loop3` or `/dev/loop3` as a device number; undefined for anything else. */
export function loopNumberOf(text: string): number | undefined {
  const match = /^(?:\/dev\/)?(?:loop)?(\d+)$/.exec(text);
  if (!match) return undefined;
  const number = Number(match[1]);
  return number <= MAX_DEVICE_NUMBER ? number : undefined;
}

/**
 * A DEV argument: `3` and `loop3` become the number 3; a path (`/dev/loop3`, or a symlink to a
 * loop device) is passed on as it is, and the library refuses it if it is not a loop device.
 */
export function parseDeviceArgument(text: string): number | string {
  if (/^(?:loop)?\d+$/.test(text)) {
    const number = loopNumberOf(text);
    if (number === undefined) throw new RangeError(`not a loop device number: '${text}' (0 to ${MAX_DEVICE_NUMBER})`);
    return number;
  }
  return text;
}

/** Parses `argv` (without node and the script) into a Command; throws UsageError. */
export function parseCommand(argv: readonly string[]): Command {
  const [first, ...rest] = argv;
  if (first === undefined) throw new UsageError('missing command', null);
  if (first === '-h' || first === '--help') return { name: 'help', topic: null };
  if (first === '-V' || first === '--version') return { name: 'version' };
  if (first === 'help') {
    if (rest.length === 0) return { name: 'help', topic: null };
    const topic = ALIASES[rest[0]!] ?? rest[0]!;
    if (!isCommandName(topic) || rest.length > 1) throw new UsageError(`unknown help topic '${rest.join(' ')}'`, null);
    return { name: 'help', topic };
  }
  if (first.startsWith('-')) throw new UsageError(`unknown option '${first}' (options go after the command)`, null);
  const name = ALIASES[first] ?? first;
  if (!isCommandName(name)) {
    throw new UsageError(`unknown command '${first}' (commands: ${Object.keys(SPECS).join(', ')})`, null);
  }
  return parseCommandArguments(name, rest);
}

type Values = Record<string, string | boolean | undefined>;

/**
 * Whether an argument reached us as valid UTF-8. Node decodes argv with U+FFFD for invalid
 * bytes, so a text with U+FFFD is looked up in the raw bytes of /proc/self/cmdline.
 */
function cameAsUtf8(text: string): boolean {
  if (!text.includes('\uFFFD')) return true;
  let raw: Buffer;
  try {
    raw = readFileSync('/proc/self/cmdline');
  } catch {
    return true; // cannot tell: take it as Node decoded it
  }
  const strict = new TextDecoder('utf-8', { fatal: true });
  for (let start = 0; start < raw.length; ) {
    let end = raw.indexOf(0, start);
    if (end < 0) end = raw.length;
    const argument = raw.subarray(start, end);
    const decoded = argument.toString('utf8');
    if (decoded === text || decoded.endsWith(`=${text}`)) {
      try {
        strict.decode(argument);
      } catch {
        return false;
      }
    }
    start = end + 1;
  }
  return true;
}

function parseCommandArguments(name: CommandName, args: readonly string[]): Command {
  const spec = SPECS[name];
  const usage = (message: string): never => {
    throw new UsageError(message, name);
  };
  const options: Record<string, { type: 'boolean' | 'string'; short?: string }> = {};
  for (const [option, { type, short }] of Object.entries(spec.options)) options[option] = short ? { type, short } : { type };

  // Not strict: parseArgs' own messages are long and name no command, so its tokens are
  // checked here instead.
  const { tokens } = parseArgs({ args: [...args], options, strict: false, allowPositionals: true, tokens: true });
  if (tokens.some((token) => token.kind === 'option' && token.name === 'help')) return { name: 'help', topic: name };

  const values: Values = {};
  const positionals: string[] = [];
  for (const token of tokens) {
    if (token.kind === 'positional') positionals.push(token.value);
    if (token.kind !== 'option') continue;
    const option = Object.hasOwn(spec.options, token.name) ? spec.options[token.name] : undefined;
    if (!option) usage(`unknown option '${token.rawName}'`);
    else if (option.type === 'boolean') {
      if (token.value !== undefined) usage(`option '${token.rawName}' takes no value`);
      values[token.name] = true;
    } else {
      // Like strict parseArgs: `--offset --json` is a forgotten value, not an offset of "--json".
      // A negative number is a value, refused for what it is by the option's own check.
      if (token.value === undefined || (!token.inlineValue && token.value.startsWith('-') && !/^-\d/.test(token.value))) {
        usage(`option '${token.rawName}' needs a value (${option.value})`);
      }
      values[token.name] = token.value;
    }
  }

  const wanted = spec.positionals.names;
  if (positionals.length < wanted.length) usage(`missing ${wanted[positionals.length]}`);
  if (!spec.positionals.variadic && positionals.length > wanted.length) {
    usage(`unexpected argument '${positionals[wanted.length]}'`);
  }
  const flag = (key: string): boolean => values[key] === true;

  switch (name) {
    case 'attach':
      return {
        name,
        image: positionals[0]!,
        options: attachOptions(values, usage),
        hold: flag('hold') || flag('autoclear'),
        json: flag('json'),
      };
    case 'detach':
      try {
        positionals.forEach(parseDeviceArgument); // a device number out of range is a typo, not an image
      } catch (error) {
        return usage((error as Error).message);
      }
      return { name, targets: positionals, verbose: flag('verbose') };
    case 'list':
      return { name, json: flag('json') };
    case 'info':
      try {
        return { name, device: parseDeviceArgument(positionals[0]!), json: flag('json') };
      } catch (error) {
        return usage((error as Error).message);
      }
    case 'find':
      return { name, image: positionals[0]!, json: flag('json') };
    case 'mount':
      return {
        name,
        image: positionals[0]!,
        target: positionals[1]!,
        options: mountOptions(values, usage),
        json: flag('json'),
        verbose: flag('verbose'),
      };
    case 'umount':
      return { name, target: positionals[0]!, options: { lazy: flag('lazy'), force: flag('force') }, verbose: flag('verbose') };
  }
}

function size(values: Values, key: string, usage: (message: string) => never): number | undefined {
  const value = values[key];
  if (typeof value !== 'string') return undefined;
  try {
    return parseSize(value);
  } catch (error) {
    return usage(`option '--${key}': ${(error as Error).message}`);
  }
}

type SectorSize = (typeof SECTOR_SIZES)[number];

/** --offset, --size-limit (or --sizelimit) and --sector-size, in bytes. */
function sizeOptionsOf(values: Values, usage: (message: string) => never): { offset?: number; sizeLimit?: number; sectorSize?: SectorSize } {
  const result: { offset?: number; sizeLimit?: number; sectorSize?: SectorSize } = {};
  const offset = size(values, 'offset', usage);
  if (offset !== undefined) result.offset = offset;
  const sizeLimit = size(values, 'size-limit', usage) ?? size(values, 'sizelimit', usage);
  if (sizeLimit !== undefined) result.sizeLimit = sizeLimit;
  const sectorSize = size(values, 'sector-size', usage);
  if (sectorSize !== undefined) {
    if (!(SECTOR_SIZES as readonly number[]).includes(sectorSize)) {
      usage(`option '--sector-size' must be 512, 1024, 2048 or 4096, got ${sectorSize}`);
    }
    result.sectorSize = sectorSize as SectorSize;
  }
  return result;
}

function attachOptions(values: Values, usage: (message: string) => never): AttachOptions {
  const options: AttachOptions = sizeOptionsOf(values, usage);
  if (values['read-only']) options.readOnly = true;
  if (values.partscan) options.partscan = true;
  if (values['direct-io']) options.directIO = true;
  // --autoclear is --hold: the library sets AUTOCLEAR and keeps the fd that holds the device.
  if (values.hold || values.autoclear) options.hold = true;
  if (typeof values.device === 'string') {
    const number = loopNumberOf(values.device);
    if (number === undefined) usage(`option '--device' must be N, loopN or /dev/loopN, got '${values.device}'`);
    options.device = number;
  }
  if (typeof values.label === 'string') {
    if (!cameAsUtf8(values.label)) usage(`option '--label' is not valid UTF-8 (labels are stored and read back as text)`);
    if (Buffer.byteLength(values.label) > 63) usage(`option '--label' must be at most 63 bytes (the kernel's lo_file_name)`);
    options.label = values.label;
  }
  return options;
}

/**
 * mount(8)'s loop words in `-o` (`loop`, `offset=`, `sizelimit=`) as options; every other word
 * stays in the text, which the library reads as mount(8) does (ro, nosuid, noatime, data...).
 * Splits at commas outside double quotes, as SELinux contexts hold commas.
 */
export function splitMountOptions(text: string): { offset?: number; sizeLimit?: number; rest: string } {
  const words = splitOptions(text);
  const result: { offset?: number; sizeLimit?: number; rest: string } = { rest: '' };
  const rest: string[] = [];
  for (const word of words) {
    if (word === 'loop') continue; // `mount -o loop`: loopdev mount always uses one
    const match = /^(offset|sizelimit)=(.*)$/.exec(word);
    if (match) result[match[1] === 'offset' ? 'offset' : 'sizeLimit'] = parseSize(match[2]!);
    else rest.push(word);
  }
  result.rest = rest.join(',');
  return result;
}

function mountOptions(values: Values, usage: (message: string) => never): MountOptions {
  const options: MountOptions = {};
  if (typeof values.options === 'string') {
    try {
      const { rest, ...sizes } = splitMountOptions(values.options);
      Object.assign(options, sizes);
      if (rest !== '') options.options = rest;
    } catch (error) {
      usage(`option '-o': ${(error as Error).message}`);
    }
  }
  // --offset and the others win over offset= in -o, as the later, more specific spelling.
  Object.assign(options, sizeOptionsOf(values, usage));
  if (values['read-only']) options.readOnly = true;
  if (values.mkdir) options.mkdir = true;
  if (typeof values.type === 'string') options.fstype = values.type;
  if (typeof values.partition === 'string') {
    const partition = /^\d+$/.test(values.partition) ? Number(values.partition) : NaN;
    if (!(partition >= 1 && partition <= 255)) usage(`option '--partition' must be a partition number from 1 to 255, got '${values.partition}'`);
    options.partition = partition;
  }
  return options;
}

// ---------------------------------------------------------------------------------------------
// Output

/** A LoopInfo with the keys this CLI documents, in a fixed order (docs/cli.md). */
export function loopInfoJson(info: LoopInfo): Record<string, unknown> {
  return {
    path: info.path,
    number: info.number,
    backingFile: info.backingFile,
    backingDevice: info.backingDevice,
    backingInode: info.backingInode,
    offset: info.offset,
    sizeLimit: info.sizeLimit,
    size: info.size,
    readOnly: info.readOnly,
    autoclear: info.autoclear,
    partscan: info.partscan,
    directIO: info.directIO,
    sectorSize: info.sectorSize,
    major: info.major,
    minor: info.minor,
    diskseq: info.diskseq,
    label: info.label,
    partitions: info.partitions.map((part) => ({ path: part.path, number: part.number, start: part.start, size: part.size })),
  };
}

/** `{ "loopdevices": [...] }`, the top-level key `losetup --json` uses. */
export function formatListJson(devices: readonly LoopInfo[]): string {
  return `${JSON.stringify({ loopdevices: devices.map(loopInfoJson) }, null, 2)}\n`;
}

/** Control characters shown as \xNN, so that one device is always one line. */
function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f]/g, (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

const COLUMNS: { title: string; align: 'left' | 'right'; value: (info: LoopInfo) => string }[] = [
  { title: 'NAME', align: 'left', value: (info) => info.path },
  { title: 'SIZELIMIT', align: 'right', value: (info) => String(info.sizeLimit) },
  { title: 'OFFSET', align: 'right', value: (info) => String(info.offset) },
  { title: 'AUTOCLEAR', align: 'right', value: (info) => (info.autoclear ? '1' : '0') },
  { title: 'RO', align: 'right', value: (info) => (info.readOnly ? '1' : '0') },
  { title: 'BACK-FILE', align: 'left', value: (info) => printable(info.backingFile) },
  { title: 'DIO', align: 'right', value: (info) => (info.directIO ? '1' : '0') },
  { title: 'LOG-SEC', align: 'right', value: (info) => String(info.sectorSize) },
  { title: 'PARTS', align: 'right', value: (info) => String(info.partitions.length) },
];

/**
 * The `list` table: losetup --list's columns (numbers right-aligned, text left-aligned, one
 * space apart) plus PARTS, the number of partition devices. Empty when nothing is bound.
 */
export function formatTable(devices: readonly LoopInfo[]): string {
  if (devices.length === 0) return '';
  const cells = [COLUMNS.map((column) => column.title), ...devices.map((info) => COLUMNS.map((column) => column.value(info)))];
  const widths = COLUMNS.map((_, index) => Math.max(...cells.map((row) => row[index]!.length)));
  const lines = cells.map((row) =>
    row
      .map((cell, index) => {
        if (index === row.length - 1 && COLUMNS[index]!.align === 'left') return cell;
        return COLUMNS[index]!.align === 'left' ? cell.padEnd(widths[index]!) : cell.padStart(widths[index]!);
      })
      .join(' ')
      .trimEnd(),
  );
  return `${lines.join('\n')}\n`;
}

/** `info` without --json: one `key value` line per field, the keys of the JSON form. */
export function formatInfo(info: LoopInfo): string {
  const rows: [string, string][] = [
    ['path', info.path],
    ['backingFile', printable(info.backingFile)],
    ['backingInode', `${info.backingInode} (device ${info.backingDevice})`],
    ['offset', String(info.offset)],
    ['sizeLimit', String(info.sizeLimit)],
    ['size', String(info.size)],
    ['readOnly', String(info.readOnly)],
    ['autoclear', String(info.autoclear)],
    ['partscan', String(info.partscan)],
    ['directIO', String(info.directIO)],
    ['sectorSize', String(info.sectorSize)],
    ['major:minor', `${info.major}:${info.minor}`],
    ['diskseq', String(info.diskseq)],
    ['label', printable(info.label)],
    ['partitions', String(info.partitions.length)],
  ];
  const width = Math.max(...rows.map(([key]) => key.length));
  const lines = rows.map(([key, value]) => `${key.padEnd(width)}  ${value}`);
  for (const part of info.partitions) lines.push(`  ${part.path}  start ${part.start}  size ${part.size}`);
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------
// Errors

function debugEnabled(): boolean {
  return /\bloopdev\b/i.test(process.env.NODE_DEBUG ?? '');
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** What to suggest after a failure, when there is something useful to say. */
export function hintFor(error: unknown, command: CommandName): string | undefined {
  if (!(error instanceof LoopError)) return undefined;
  switch (error.code) {
    case 'ERR_LOOP_NO_CONTROL':
    case 'EACCES':
    case 'EPERM':
      if (!isRoot()) return 'run as root (loop devices need CAP_SYS_ADMIN)';
      // mount(2) says EACCES for a read-only device mounted read-write.
      return error.code === 'EACCES' && error.syscall === 'mount' ? 'add --read-only' : undefined;
    case 'ERR_LOOP_NOT_LOOP_DEVICE':
      if (command === 'info') return 'DEV is /dev/loopN, loopN or N; `loopdev find IMAGE` shows the devices of an image';
      return command === 'detach' ? 'give a loop device (/dev/loopN, loopN or N) or an image file' : undefined;
    case 'ERR_LOOP_NOT_ATTACHED':
      return '`loopdev list` shows the bound devices';
    case 'EBUSY':
      if (command === 'attach') return 'that device is in use: leave out --device to take a free one';
      if (command === 'umount') return 'the filesystem is in use: close what uses it, or unmount with --lazy';
      return undefined;
    case 'EROFS':
      return 'the image or the device is read-only: add --read-only';
    case 'ERR_LOOP_SETTING_IGNORED':
      return /read-only/.test(error.message) ? 'the image is not writable: add --read-only' : undefined;
    case 'ERR_LOOP_UNKNOWN_FSTYPE':
      return /pass partition/.test(error.message) ? 'choose one with --partition N' : 'name the filesystem with -t TYPE';
    case 'ERR_LOOP_OVERLAP':
      return command === 'mount' ? 'mount it with the settings of the device that is already there, or unmount and detach that one first' : undefined;
    case 'ERR_LOOP_NO_PARTITION':
      if (/damaged/.test(error.message)) return 'repair the partition table (fdisk or sgdisk rewrite it), or mount the filesystem with -o offset=BYTES';
      return /no partitions/.test(error.message) ? 'leave out --partition to mount the whole image' : 'choose one of its partitions with --partition N';
    case 'ENOENT':
      return command === 'mount' && /mkdir/.test(error.message) ? 'add --mkdir to create the mount point' : undefined;
    default:
      return undefined;
  }
}

/** The error line (and hint) for a failure: `loopdev: <what failed>: <message>`. */
export function formatFailure(what: string, error: unknown, command: CommandName): string {
  const loopError = error instanceof LoopError ? error : undefined;
  // Not a LoopError: a bug or a failed require; its first line says enough (NODE_DEBUG shows all).
  let message = loopError?.message ?? (error instanceof Error ? error.message : String(error)).split('\n')[0]!;
  // System errors start with their code already ('ENOENT: ...'); the library's own do not.
  if (loopError && !message.includes(loopError.code)) message += ` (${loopError.code})`;
  const lines = [`loopdev: ${what}: ${printable(message)}`];
  const hint = hintFor(error, command);
  if (hint) lines.push(`hint: ${hint}`);
  if (debugEnabled()) {
    for (let cause: unknown = error; cause instanceof Error; cause = cause.cause) lines.push(cause.stack ?? String(cause));
  }
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------
// Running

/** Where the CLI writes; tests can pass their own. */
export interface Output {
  stdout(text: string): void;
  stderr(text: string): void;
}

const processOutput: Output = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
};

function readSysfs(path: string): string | undefined {
  try {
    return readFileSync(path, 'latin1').trim();
  } catch {
    return undefined;
  }
}

function version(): string {
  const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** Thrown by a command after it reported its own failures (for detach's many arguments). */
class Reported extends Error {}

const HOLD_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Keeps the process (and so the held fd) alive until a signal, then closes the device: with
 * AUTOCLEAR the kernel unbinds it at once, or at umount if it was mounted meanwhile. If a
 * signal lands before the handlers are in, the default action kills the process and the
 * kernel frees the device all the same, as it does on SIGKILL.
 */
function holdUntilSignal(device: LoopDevice): Promise<void> {
  return new Promise((resolve, reject) => {
    const keepAlive = setInterval(() => undefined, 2 ** 30);
    const release = (): void => {
      clearInterval(keepAlive);
      for (const signal of HOLD_SIGNALS) process.removeListener(signal, release);
      device.close().then(() => resolve(), reject);
    };
    for (const signal of HOLD_SIGNALS) process.on(signal, release);
  });
}

async function attachCommand(command: Extract<Command, { name: 'attach' }>, output: Output): Promise<void> {
  const lib = library();
  const device = await lib.attach(command.image, command.options);
  try {
    output.stdout(command.json ? `${JSON.stringify(loopInfoJson(await lib.info(device)), null, 2)}\n` : `${device.path}\n`);
  } catch (error) {
    // Nothing may stay attached after a failed command.
    await device.detach({ wait: false }).catch(() => undefined);
    throw error;
  }
  if (command.hold) await holdUntilSignal(device);
}

/** What a DEV|IMAGE argument of detach names: a device, or an image to look devices up by. */
function detachTarget(text: string): { device: number | string } | { image: string } {
  const device = parseDeviceArgument(text);
  if (typeof device === 'number' || /^\/dev\/loop\d+$/.test(text)) return { device };
  let stats;
  try {
    stats = statSync(text);
  } catch (error) {
    throw fromNodeError(error);
  }
  // Anything but a regular file goes to the library, which refuses what is not a loop device.
  return stats.isFile() ? { image: text } : { device: text };
}

async function detachCommand(command: Extract<Command, { name: 'detach' }>, output: Output): Promise<void> {
  const lib = library();
  let failed = false;
  const detachOne = async (device: number | string, what: string): Promise<void> => {
    try {
      const result = await lib.detach(device);
      if (!result.released) {
        output.stderr(
          `loopdev: warning: ${result.path} is still open (mounted or held by another process); ` +
            'the kernel will release it at the last close\n',
        );
      } else if (command.verbose) {
        output.stdout(`${result.path}: ${result.wasBound ? 'detached' : 'was not attached'}\n`);
      }
    } catch (error) {
      failed = true;
      output.stderr(formatFailure(`detach ${what}`, error, 'detach'));
    }
  };
  for (const text of command.targets) {
    let target;
    try {
      target = detachTarget(text);
    } catch (error) {
      failed = true;
      output.stderr(formatFailure(`detach ${text}`, error, 'detach'));
      continue;
    }
    if ('device' in target) {
      await detachOne(target.device, text);
      continue;
    }
    let devices: LoopInfo[];
    try {
      devices = await lib.find(target.image);
    } catch (error) {
      failed = true;
      output.stderr(formatFailure(`detach ${text}`, error, 'detach'));
      continue;
    }
    if (devices.length === 0 && command.verbose) output.stdout(`${text}: no loop device\n`);
    for (const info of devices) await detachOne(info.path, `${info.path} (${text})`);
  }
  if (failed) throw new Reported();
}

async function mountCommand(command: Extract<Command, { name: 'mount' }>, output: Output): Promise<void> {
  const mounted = await mountLibrary().mount(command.image, command.target, command.options);
  const summary = {
    target: mounted.target,
    device: mounted.device.path,
    source: mounted.source,
    partitionPath: mounted.partitionPath,
    fstype: mounted.fstype,
    reused: mounted.reused,
  };
  if (command.json) output.stdout(`${JSON.stringify(summary, null, 2)}\n`);
  else if (command.verbose) {
    const how = mounted.reused ? `, reusing ${summary.device}, which the image was already attached to` : '';
    output.stdout(`mounted ${command.image} on ${summary.target} (${summary.source}, ${summary.fstype}${how})\n`);
  }
}

async function umountCommand(command: Extract<Command, { name: 'umount' }>, output: Output): Promise<void> {
  const result = await mountLibrary().unmount(command.target, command.options);
  if (result.device !== null && !result.released) {
    const number = loopNumberOf(result.device);
    // Without AUTOCLEAR (attached by hand, then mounted) nothing will ever release it.
    const autoclear = number !== undefined && readSysfs(`/sys/block/loop${number}/loop/autoclear`) === '1';
    output.stderr(
      autoclear
        ? `loopdev: warning: ${result.device} is still open (mounted elsewhere, or in use); the kernel will release it at the last close\n`
        : `loopdev: warning: ${result.device} stays attached (it was attached without autoclear): \`loopdev detach ${result.device}\` releases it\n`,
    );
  } else if (command.verbose) {
    output.stdout(`unmounted ${result.target}${result.device === null ? '' : `; released ${result.device}`}\n`);
  }
}

/** The command's description in an error line: `attach /tmp/a.img`, `umount /mnt`. */
function describeCommand(command: Command): string {
  switch (command.name) {
    case 'attach':
    case 'find':
      return `${command.name} ${command.image}`;
    case 'info':
      return `info ${command.device}`;
    case 'mount':
      return `mount ${command.image} on ${command.target}`;
    case 'umount':
      return `umount ${command.target}`;
    default:
      return command.name;
  }
}

async function run(command: Command, output: Output): Promise<void> {
  switch (command.name) {
    case 'help':
      output.stdout(helpText(command.topic));
      return;
    case 'version':
      output.stdout(`${version()}\n`);
      return;
    case 'attach':
      return attachCommand(command, output);
    case 'detach':
      return detachCommand(command, output);
    case 'list': {
      const devices = await library().list();
      output.stdout(command.json ? formatListJson(devices) : formatTable(devices));
      return;
    }
    case 'info': {
      const info = await library().info(command.device);
      output.stdout(command.json ? `${JSON.stringify(loopInfoJson(info), null, 2)}\n` : formatInfo(info));
      return;
    }
    case 'find': {
      const devices = await library().find(command.image);
      output.stdout(command.json ? formatListJson(devices) : devices.map((info) => `${info.path}\n`).join(''));
      return;
    }
    case 'mount':
      return mountCommand(command, output);
    case 'umount':
      return umountCommand(command, output);
  }
}

/** Runs the CLI; resolves to the exit status (0, 1 or 2). Never throws. */
export async function main(argv: readonly string[], output: Output = processOutput): Promise<number> {
  let command: Command;
  try {
    command = parseCommand(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) {
      output.stderr(formatFailure('parsing the command line', error, 'list'));
      return EXIT_FAILURE;
    }
    const where = error.command === null ? '' : `${error.command}: `;
    output.stderr(`loopdev: ${where}${error.message}\n${usageHint(error.command)}\n`);
    return EXIT_USAGE;
  }
  try {
    await run(command, output);
    return EXIT_OK;
  } catch (error) {
    if (error instanceof Reported) return EXIT_FAILURE;
    const name = command.name === 'help' || command.name === 'version' ? 'list' : command.name;
    output.stderr(formatFailure(describeCommand(command), error, name));
    // The library checks its options before it does anything: one it refuses (a -o word
    // mount() does not take) is a wrong command line too.
    if (error instanceof LoopError && error.code === 'ERR_LOOP_INVALID_OPTION') {
      output.stderr(`${usageHint(name)}\n`);
      return EXIT_USAGE;
    }
    return EXIT_FAILURE;
  }
}

/** Runs the command line of this process (the `loopdev` binary). */
export function runMain(): void {
  // `loopdev list | head -1`: a closed pipe ends the output, quietly.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? EXIT_OK);
    throw error;
  });
  main(process.argv.slice(2)).then((status) => {
    process.exitCode = status;
  });
}
