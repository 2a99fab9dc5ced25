// The columns of `loopdev list`: losetup's (its names, order, alignment and JSON types, so a
// `losetup -O` column list works unchanged) and loopdev's own, and the three ways to print
// them: an aligned table, losetup's --raw format and losetup's --json format. Loads no addon:
// parse.ts checks -O with it.
import type { LoopInfo } from '../loop/inspect';
import { splitDev } from '../loop/dev-number';
import { toJson } from './json';
import { parseU64, type U64 } from '../core/u64';

export interface Column {
  /** as losetup spells it; -O matches it case-insensitively */
  name: string;
  help: string;
  /** loopdev's own column, which losetup does not have */
  ours: boolean;
  align: 'left' | 'right';
  /** the cell's text, before any escaping; '' when there is nothing to show */
  text: (info: LoopInfo) => string;
  /** the value under the column's key in JSON (losetup's type: a string, number or boolean; null for an empty cell) */
  json: (info: LoopInfo) => unknown;
}

const flag = (value: boolean): string => (value ? '1' : '0');
/** A number losetup leaves blank when it is 0 (no backing device or inode known). */
const unlessZero = (value: U64): string => (value === 0 ? '' : String(value));
const orNull = (text: string): string | null => (text === '' ? null : text);
const numberOrNull = (text: string): U64 | null => (text === '' ? null : (parseU64(text) ?? Number(text)));
const backingDev = (info: LoopInfo): { major: number; minor: number } | undefined =>
  info.backingDevice === 0 ? undefined : splitDev(info.backingDevice);

function stringColumn(name: string, help: string, align: Column['align'], text: Column['text'], ours = false): Column {
  return { name, help, ours, align, text, json: (info) => orNull(text(info)) };
}
function numberColumn(name: string, help: string, text: Column['text'], ours = false): Column {
  return { name, help, ours, align: 'right', text, json: (info) => numberOrNull(text(info)) };
}
function flagColumn(name: string, help: string, value: (info: LoopInfo) => boolean): Column {
  return { name, help, ours: false, align: 'right', text: (info) => flag(value(info)), json: value };
}

/** Every column, in the order `--output-all` prints them: losetup's (as util-linux 2.40 lists them), then loopdev's. */
export const COLUMNS: readonly Column[] = [
  stringColumn('NAME', 'loop device name', 'left', (info) => info.path),
  flagColumn('AUTOCLEAR', 'autoclear flag set', (info) => info.autoclear),
  stringColumn('BACK-FILE', 'device backing file', 'left', (info) => info.backingFile),
  numberColumn('BACK-INO', 'backing file inode number', (info) => unlessZero(info.backingInode)),
  stringColumn('BACK-MAJ:MIN', 'backing file major:minor device number', 'left', (info) => {
    const dev = backingDev(info);
    return dev ? `${dev.major}:${dev.minor}` : '';
  }),
  // losetup gives these two as JSON strings, not numbers; so do we, for scripts written against it.
  stringColumn('BACK-MAJ', 'backing file major device number', 'left', (info) => (backingDev(info) ? String(backingDev(info)!.major) : '')),
  stringColumn('BACK-MIN', 'backing file minor device number', 'left', (info) => (backingDev(info) ? String(backingDev(info)!.minor) : '')),
  stringColumn('MAJ:MIN', 'loop device major:minor number', 'left', (info) => `${info.major}:${info.minor}`),
  numberColumn('MAJ', 'loop device major number', (info) => String(info.major)),
  numberColumn('MIN', 'loop device minor number', (info) => String(info.minor)),
  numberColumn('OFFSET', 'offset from the beginning', (info) => String(info.offset)),
  flagColumn('PARTSCAN', 'partscan flag set', (info) => info.partscan),
  stringColumn('REF', 'loop device reference string (the label, lo_file_name)', 'left', (info) => info.label),
  flagColumn('RO', 'read-only device', (info) => info.readOnly),
  numberColumn('SIZELIMIT', 'size limit of the file in bytes', (info) => String(info.sizeLimit)),
  flagColumn('DIO', 'access backing file with direct-io', (info) => info.directIO),
  numberColumn('LOG-SEC', 'logical sector size in bytes', (info) => String(info.sectorSize)),
  numberColumn('SIZE', 'bytes the device exposes', (info) => String(info.size), true),
  numberColumn('DISKSEQ', "the kernel's sequence number of this binding (0 before Linux 5.15)", (info) => String(info.diskseq), true),
  numberColumn('PARTS', 'number of partition devices', (info) => String(info.partitions.length), true),
  {
    name: 'PARTITIONS',
    help: 'partition devices, comma-separated (a JSON array)',
    ours: true,
    align: 'left',
    text: (info) => info.partitions.map((part) => part.path).join(','),
    json: (info) => info.partitions.map((part) => part.path),
  },
];

/** `loopdev list`'s columns without -O: losetup --list's, then PARTS. */
export const DEFAULT_COLUMNS: readonly string[] = ['NAME', 'SIZELIMIT', 'OFFSET', 'AUTOCLEAR', 'RO', 'BACK-FILE', 'DIO', 'LOG-SEC', 'PARTS'];

const BY_NAME = new Map(COLUMNS.map((column) => [column.name, column]));

export function columnNamed(name: string): Column {
  const column = BY_NAME.get(name);
  if (column === undefined) throw new Error(`no column ${name}`);
  return column;
}

/**
 * The columns an -O list names (comma-separated, any case; a leading + adds them to the
 * default ones, as losetup's -O +LIST does), as their canonical names. Throws an Error whose
 * message names the known columns.
 */
export function parseColumnList(text: string): string[] {
  const adding = text.startsWith('+');
  const words = (adding ? text.slice(1) : text).split(',');
  const names: string[] = [];
  for (const word of words) {
    const name = word.trim().toUpperCase();
    if (name === '') throw new Error(`an empty column name in '${text}' (columns: ${COLUMNS.map((column) => column.name).join(', ')})`);
    if (!BY_NAME.has(name)) throw new Error(`unknown column '${word.trim()}' (columns: ${COLUMNS.map((column) => column.name).join(', ')})`);
    names.push(name);
  }
  return adding ? [...DEFAULT_COLUMNS, ...names] : names;
}

/** Control characters shown as \xNN, so that one device is always one line. */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f]/g, (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * A cell as losetup's --raw prints it (libsmartcols' fputs_nonblank): every byte of the UTF-8
 * text that is blank, a backslash, or not printable ASCII becomes \xNN, so that the values
 * split at single spaces.
 */
export function rawEscape(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out += byte > 0x20 && byte < 0x7f && byte !== 0x5c ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`;
  }
  return out;
}

export interface TableFormat {
  /** print the line of column names first */
  headings: boolean;
  /** losetup's --raw: one space between cells, nothing aligned, cells escaped by rawEscape */
  raw: boolean;
}

/**
 * The list as a table of `columns`: aligned (numbers to the right, text to the left, one space
 * apart, as losetup --list prints them) or raw. Empty when there are no devices.
 */
export function formatColumns(devices: readonly LoopInfo[], names: readonly string[], format: TableFormat): string {
  if (devices.length === 0) return '';
  const columns = names.map(columnNamed);
  const escape = format.raw ? rawEscape : printable;
  const rows = devices.map((info) => columns.map((column) => escape(column.text(info))));
  if (format.headings) rows.unshift(columns.map((column) => column.name));
  if (format.raw) return rows.map((row) => `${row.join(' ')}\n`).join('');
  const widths = columns.map((_, index) => Math.max(...rows.map((row) => row[index]!.length)));
  const lines = rows.map((row) =>
    row
      .map((cell, index) => {
        const column = columns[index]!;
        if (column.align === 'right') return cell.padStart(widths[index]!);
        return index === row.length - 1 ? cell : cell.padEnd(widths[index]!);
      })
      .join(' ')
      .trimEnd(),
  );
  return `${lines.join('\n')}\n`;
}

/** The list as losetup --json prints it with -O: `{ "loopdevices": [...] }`, keyed by the lowercase column names. */
export function formatColumnsJson(devices: readonly LoopInfo[], names: readonly string[]): string {
  const columns = names.map(columnNamed);
  const entries = devices.map((info) => Object.fromEntries(columns.map((column) => [column.name.toLowerCase(), column.json(info)])));
  return toJson({ loopdevices: entries });
}
