// What the `loopdev` command prints: the list table, info lines, JSON, and the one-line error
// message with its hint. Pure functions of their arguments (and of NODE_DEBUG and the uid).
import { LoopError } from '../core/errors';
import type { ReconfigureOptions } from '../loop/change';
import type { LoopInfo } from '../loop/inspect';
import type { ReapEntry } from '../loop/reap';
import { DEFAULT_COLUMNS, formatColumns, printable } from './columns';
import { toJson } from './json';
import type { Command } from './parse';
import { SPECS, type CommandName } from './spec';

/** A LoopInfo with the keys this CLI documents, in a fixed order (the README's "JSON output"). */
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
  return toJson({ loopdevices: devices.map(loopInfoJson) });
}

/**
 * The `list` table: losetup --list's columns (numbers right-aligned, text left-aligned, one
 * space apart) plus PARTS, the number of partition devices. Empty when nothing is bound.
 */
export function formatTable(devices: readonly LoopInfo[]): string {
  return formatColumns(devices, DEFAULT_COLUMNS, { headings: true, raw: false });
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

/**
 * What `set -v` prints: each setting it was asked to change, as the device has it now, in the
 * flags' terms (`offset 1048576, direct-io on`).
 */
export function describeChanges(changes: ReconfigureOptions, info: LoopInfo): string {
  const onOff = (value: boolean): string => (value ? 'on' : 'off');
  const parts: string[] = [];
  if (changes.directIO !== undefined) parts.push(`direct-io ${onOff(info.directIO)}`);
  if (changes.sectorSize !== undefined) parts.push(`sector-size ${info.sectorSize}`);
  if (changes.offset !== undefined) parts.push(`offset ${info.offset}`);
  if (changes.sizeLimit !== undefined) parts.push(`size-limit ${info.sizeLimit}`);
  if (changes.autoclear !== undefined) parts.push(`autoclear ${onOff(info.autoclear)}`);
  if (changes.partscan !== undefined) parts.push(`partscan ${onOff(info.partscan)}`);
  if (changes.label !== undefined) parts.push(`label ${JSON.stringify(printable(info.label))}`);
  return parts.join(', ');
}

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
      // set --autoclear on of a device nothing held: the kernel freed it when set let go.
      if (command === 'set' && /autoclear/.test(error.message)) return 'mount the device, or hold it open, before --autoclear on';
      return '`loopdev list` shows the bound devices';
    case 'EBUSY':
      if (command === 'attach') return 'that device is in use: leave out --device to take a free one';
      if (command === 'umount') return 'the filesystem is in use: close what uses it, or unmount with --lazy';
      return undefined;
    case 'ERR_LOOP_BUSY':
      // removeDevice retried EBUSY (bound, or open) and gave up.
      return command === 'remove' ? 'the device is bound or open: `loopdev detach` it first' : undefined;
    case 'EEXIST':
      return command === 'add' ? 'that loop device exists already' : undefined;
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

const REASONS: Record<ReapEntry['reason'], string> = { 'owner-gone': 'owner gone', 'backing-deleted': 'backing file deleted' };

/** reap's report: one line per device found, what was done and why; a line saying so when none was. */
export function formatReap(entries: readonly ReapEntry[]): string {
  if (entries.length === 0) return 'no leaked loop devices\n';
  return entries
    .map((entry) => {
      const done = entry.released ? 'released' : entry.kept === 'dry-run' ? 'would release' : `kept, ${entry.keptDetail ?? entry.kept}`;
      return `${entry.path}: ${done} (${REASONS[entry.reason]}: ${printable(entry.detail)})\n`;
    })
    .join('');
}

/** The one-line hint printed after a usage error. */
export function usageHint(command: CommandName | null): string {
  return command === null
    ? 'Usage: loopdev COMMAND [options] (see `loopdev --help`)'
    : `Usage: ${SPECS[command].usage} (see \`loopdev ${command} --help\`)`;
}

/** The command's description in an error line: `attach /tmp/a.img`, `umount /mnt`. */
export function describeCommand(command: Command): string {
  switch (command.name) {
    case 'attach':
    case 'find':
      return `${command.name} ${command.image}`;
    case 'info':
    case 'set':
    case 'set-capacity':
      return `${command.name} ${command.device}`;
    case 'change-backing':
      return `change-backing ${command.device} to ${command.file}`;
    case 'mount':
      return `mount ${command.image} on ${command.target}`;
    case 'umount':
      return `umount ${command.target}`;
    default:
      return command.name;
  }
}
