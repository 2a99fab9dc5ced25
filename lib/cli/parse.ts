// The command line, read: argv into a Command checked by the library's own option checks
// (sizes in bytes), or a UsageError in the flags' terms. Those checks live in modules that
// load no addon, so a wrong command line is answered where the addon cannot load.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { LoopError } from '../core/errors';
import { parseSize } from '../core/size';
import type { ReconfigureOptions } from '../loop/change';
import { byteCount, checkLabel, checkPath, checkSectorSize, deviceNumber, planAttach, type AttachOptions } from '../loop/options';
import type { ReapOptions } from '../loop/reap';
import type { MountOptions } from '../mount/mount';
import { planDissect, type DissectOptions } from '../dissect/options';
import type { MountImageOptions } from '../dissect/mount-image';
import type { UnmountOptions } from '../mount/unmount';
import { checkPartition, splitOptions } from '../mount/options';
import { COLUMNS, parseColumnList } from './columns';
import { ALIASES, isCommandName, SPECS, type CommandName } from './spec';

/** What the command line asks for, checked and converted (sizes in bytes). */
export type Command =
  | { name: 'help'; topic: CommandName | null }
  | { name: 'version' }
  | { name: 'attach'; image: string; options: AttachOptions; hold: boolean; json: boolean }
  | { name: 'detach'; targets: string[]; verbose: boolean }
  | { name: 'list'; json: boolean; columns: string[] | null; headings: boolean; raw: boolean }
  | { name: 'info'; device: number | string; json: boolean }
  | { name: 'find'; image: string; json: boolean }
  | { name: 'set'; device: number | string; changes: ReconfigureOptions; json: boolean; verbose: boolean }
  | { name: 'set-capacity'; device: number | string; json: boolean; verbose: boolean }
  | { name: 'change-backing'; device: number | string; file: string; json: boolean; verbose: boolean }
  | { name: 'add' | 'remove'; numbers: number[]; verbose: boolean }
  | { name: 'mount'; image: string; target: string; options: MountOptions; json: boolean; verbose: boolean }
  | { name: 'umount'; target: string; options: UnmountOptions; verbose: boolean }
  | { name: 'dissect'; action: 'show'; image: string; options: DissectOptions; json: boolean }
  | { name: 'dissect'; action: 'mount'; image: string; directory: string; options: MountImageOptions; json: boolean }
  | { name: 'dissect'; action: 'umount'; directory: string; json: boolean }
  | { name: 'reap'; options: ReapOptions; json: boolean };

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

type Usage = (message: string) => never;

// The library names an option as its API spells it; the user typed the flag.
const FLAG_OF_OPTION: Record<string, string> = {
  offset: '--offset',
  sizeLimit: '--size-limit',
  sectorSize: '--sector-size',
  directIO: '--direct-io',
  inMemory: '--in-memory',
  device: '--device',
  label: '--label',
  partition: '--partition',
};

// The API's spellings inside the library's messages, in the flags' terms.
const FLAG_PHRASES: [RegExp, string][] = [
  [/directIO: 'prefer'/g, '--direct-io prefer'],
  [/; pass 'prefer' or leave it out/g, '; leave it out'],
  [/readOnly: true/g, '--read-only'],
  [/\bdirectIO\b/g, '--direct-io'],
  [/\bsectorSize\b/g, '--sector-size'],
  [/\bsizeLimit\b/g, '--size-limit'],
];

/**
 * A message of the library in the command line's terms: `option 'sectorSize'` becomes
 * `option '--sector-size'`, and so on for the API names it uses in its explanations.
 */
export function inFlagTerms(message: string): string {
  const flagged = message.replace(/^option '(\w+)'/, (named, key: string) => (Object.hasOwn(FLAG_OF_OPTION, key) ? `option '${FLAG_OF_OPTION[key]}'` : named));
  return FLAG_PHRASES.reduce((text, [pattern, flag]) => text.replace(pattern, flag), flagged);
}

/**
 * Makes one of the library's own checks now, before anything runs: what it refuses
 * (ERR_LOOP_INVALID_OPTION, ERR_LOOP_INVALID_ARGUMENT) is a wrong command line, and its
 * message is the library's with the flag in place of the option's API name.
 */
function libraryCheck<T>(check: () => T, usage: Usage): T {
  try {
    return check();
  } catch (error) {
    const refused = error instanceof LoopError && (error.code === 'ERR_LOOP_INVALID_OPTION' || error.code === 'ERR_LOOP_INVALID_ARGUMENT');
    if (!refused) throw error;
    return usage(inFlagTerms(error.message));
  }
}

/** The N of `N`, `loopN` or `/dev/loopN`; undefined for anything else. Its range is the library's to check. */
export function loopNumberOf(text: string): number | undefined {
  const match = /^(?:\/dev\/)?(?:loop)?(\d+)$/.exec(text);
  return match ? Number(match[1]) : undefined;
}

/**
 * A DEV argument: `3` and `loop3` become the number 3, checked by the library's deviceNumber
 * (a LoopError out of range); a path (`/dev/loop3`, or a symlink to a loop device) is passed
 * on as it is, and the library refuses it if it is not a loop device.
 */
export function parseDeviceArgument(text: string): number | string {
  return /^(?:loop)?\d+$/.test(text) ? deviceNumber(loopNumberOf(text)) : text;
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
  const usage: Usage = (message) => {
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
    case 'attach': {
      const image = positionals[0]!;
      const options = attachOptions(values, usage);
      libraryCheck(() => planAttach(checkPath(image, 'IMAGE'), options), usage);
      return { name, image, options, hold: flag('hold') || flag('autoclear'), json: flag('json') };
    }
    case 'detach':
      // A device number out of range is a typo, not an image to look up.
      libraryCheck(() => positionals.forEach(parseDeviceArgument), usage);
      return { name, targets: positionals, verbose: flag('verbose') };
    case 'list':
      return listOptions(values, usage);
    case 'info':
      return { name, device: libraryCheck(() => parseDeviceArgument(positionals[0]!), usage), json: flag('json') };
    case 'find':
      return { name, image: positionals[0]!, json: flag('json') };
    case 'set': {
      const device = libraryCheck(() => parseDeviceArgument(positionals[0]!), usage);
      return { name, device, changes: reconfigureOptions(values, usage), json: flag('json'), verbose: flag('verbose') };
    }
    case 'set-capacity':
      return { name, device: libraryCheck(() => parseDeviceArgument(positionals[0]!), usage), json: flag('json'), verbose: flag('verbose') };
    case 'change-backing': {
      const device = libraryCheck(() => parseDeviceArgument(positionals[0]!), usage);
      const file = libraryCheck(() => checkPath(positionals[1]!, 'FILE'), usage);
      return { name, device, file, json: flag('json'), verbose: flag('verbose') };
    }
    case 'add':
    case 'remove':
      return { name, numbers: positionals.map((text) => controlNumber(text, usage)), verbose: flag('verbose') };
    case 'mount': {
      const [image, target] = positionals as [string, string];
      const options = mountOptions(values, usage);
      // mount() attaches with these: planAttach checks them, as planMount will.
      const { offset, sizeLimit, sectorSize } = options;
      libraryCheck(() => planAttach(checkPath(image, 'IMAGE'), { offset, sizeLimit, sectorSize }), usage);
      libraryCheck(() => checkPath(target, 'TARGET'), usage);
      return { name, image, target, options, json: flag('json'), verbose: flag('verbose') };
    }
    case 'umount':
      return { name, target: positionals[0]!, options: { lazy: flag('lazy'), force: flag('force') }, verbose: flag('verbose') };
    case 'reap':
      return { name, options: reapOptions(values, usage), json: flag('json') };
    case 'dissect':
      return dissectCommand(positionals, values, usage);
  }
}

/** dissect's three forms: IMAGE, --mount IMAGE DIR, --umount DIR. */
function dissectCommand(positionals: string[], values: Values, usage: Usage): Command {
  const json = values.json === true;
  if (values.mount === true && values.umount === true) usage(`options '--mount' and '--umount' exclude each other`);
  const options: MountImageOptions = {};
  if (values['read-only'] === true) options.readOnly = true;
  if (typeof values.architecture === 'string') options.architecture = values.architecture as MountImageOptions['architecture'];
  libraryCheck(() => planDissect(options), usage);
  if (values.umount === true) {
    if (positionals.length !== 1) usage(positionals.length === 0 ? 'missing DIR' : `unexpected argument '${positionals[1]}'`);
    for (const key of ['read-only', 'mkdir', 'architecture']) if (values[key] !== undefined) usage(`option '--${key}' is for --mount, not --umount`);
    return { name: 'dissect', action: 'umount', directory: libraryCheck(() => checkPath(positionals[0]!, 'DIR'), usage), json };
  }
  if (values.mount === true) {
    if (positionals.length !== 2) usage(positionals.length < 2 ? 'missing DIR (--mount IMAGE DIR)' : `unexpected argument '${positionals[2]}'`);
    if (values.mkdir === true) options.mkdir = true;
    const [image, directory] = positionals.map((text, index) => libraryCheck(() => checkPath(text, index === 0 ? 'IMAGE' : 'DIR'), usage)) as [string, string];
    return { name: 'dissect', action: 'mount', image, directory, options, json };
  }
  if (positionals.length !== 1) usage(`unexpected argument '${positionals[1]}' (to mount IMAGE on a directory: --mount IMAGE DIR)`);
  if (values.mkdir === true) usage(`option '--mkdir' is for --mount`);
  return { name: 'dissect', action: 'show', image: libraryCheck(() => checkPath(positionals[0]!, 'IMAGE'), usage), options, json };
}

/** reap's filters and --dry-run, as reap() takes them. */
function reapOptions(values: Values, usage: Usage): ReapOptions {
  const options: ReapOptions = {};
  if (values['dry-run']) options.dryRun = true;
  if (values['keep-deleted']) options.deleted = false;
  if (typeof values.under === 'string') options.backingDirectory = libraryCheck(() => checkPath(values.under, 'DIR'), usage);
  if (typeof values['label-prefix'] === 'string') {
    if (values['label-prefix'] === '') usage(`option '--label-prefix' must not be empty`);
    options.labelPrefix = values['label-prefix'];
  }
  return options;
}

/** An N of add or remove: N, loopN or /dev/loopN, in the library's range. */
function controlNumber(text: string, usage: Usage): number {
  const number = loopNumberOf(text);
  if (number === undefined) usage(`N must be a number, loopN or /dev/loopN, got '${text}'`);
  return libraryCheck(() => deviceNumber(number), usage);
}

/** list's -O, --output-all, -n, --raw and --json, and the combinations that mean nothing. */
function listOptions(values: Values, usage: Usage): Extract<Command, { name: 'list' }> {
  const json = values.json === true;
  const raw = values.raw === true;
  const headings = values.noheadings !== true;
  if (json && raw) usage(`options '--json' and '--raw' cannot be used together`);
  if (json && !headings) usage(`option '--noheadings' has no meaning with '--json'`);
  let columns: string[] | null = null;
  if (typeof values.output === 'string') {
    if (values['output-all']) usage(`options '--output' and '--output-all' cannot be used together`);
    try {
      columns = parseColumnList(values.output);
    } catch (error) {
      usage(`option '--output': ${(error as Error).message}`);
    }
  } else if (values['output-all']) {
    columns = COLUMNS.map((column) => column.name);
  }
  return { name: 'list', json, columns, headings, raw };
}

/** An on/off (or on/off/prefer) value, as losetup's --direct-io takes it. */
function switchValue<T extends string>(values: Values, key: string, words: Record<T, true>, usage: Usage): T | undefined {
  const value = values[key];
  if (typeof value !== 'string') return undefined;
  const known = Object.keys(words) as T[];
  if (!known.includes(value as T)) {
    const choices = known.length === 2 ? `${known[0]} or ${known[1]}` : `${known.slice(0, -1).join(', ')} or ${known.at(-1)}`;
    usage(`option '--${key}' must be ${choices}, got '${value}'`);
  }
  return value as T;
}

const SET_FLAGS = ['--direct-io', '--sector-size', '--offset', '--size-limit', '--autoclear', '--partscan', '--label'];

/** set's changes, checked by the library's own checks (reconfigure makes the same ones). */
function reconfigureOptions(values: Values, usage: Usage): ReconfigureOptions {
  const changes: ReconfigureOptions = {};
  const directIO = switchValue(values, 'direct-io', { on: true, off: true, prefer: true }, usage);
  if (directIO !== undefined) changes.directIO = directIO === 'prefer' ? 'prefer' : directIO === 'on';
  const { offset, sizeLimit, sectorSize } = sizeOptionsOf(values, usage);
  if (sectorSize !== undefined) changes.sectorSize = libraryCheck(() => checkSectorSize(sectorSize, 'sectorSize'), usage) as ReconfigureOptions['sectorSize'];
  if (offset !== undefined) changes.offset = libraryCheck(() => byteCount(offset, 'offset'), usage);
  if (sizeLimit !== undefined) changes.sizeLimit = libraryCheck(() => byteCount(sizeLimit, 'sizeLimit'), usage);
  const autoclear = switchValue(values, 'autoclear', { on: true, off: true }, usage);
  if (autoclear !== undefined) changes.autoclear = autoclear === 'on';
  if (values.partscan === true) changes.partscan = true;
  if (typeof values.label === 'string') changes.label = libraryCheck(() => checkLabel(utf8Label(values.label as string, usage)), usage);
  if (Object.keys(changes).length === 0) usage(`nothing to change: give at least one of ${SET_FLAGS.join(', ')}`);
  return changes;
}

/** A --label as typed; Node hands on invalid UTF-8 as U+FFFD, which the library cannot tell from a real one. */
function utf8Label(label: string, usage: Usage): string {
  if (!cameAsUtf8(label)) usage(`option '--label' is not valid UTF-8 (labels are stored and read back as text)`);
  return label;
}

function size(values: Values, key: string, usage: Usage): number | undefined {
  const value = values[key];
  if (typeof value !== 'string') return undefined;
  try {
    return parseSize(value);
  } catch (error) {
    return usage(`option '--${key}': ${(error as Error).message}`);
  }
}

type SizeOptions = Pick<AttachOptions, 'offset' | 'sizeLimit' | 'sectorSize'>;

/** --offset, --size-limit (or --sizelimit) and --sector-size, in bytes (the library checks their values). */
function sizeOptionsOf(values: Values, usage: Usage): SizeOptions {
  const result: SizeOptions = {};
  const offset = size(values, 'offset', usage);
  if (offset !== undefined) result.offset = offset;
  const sizeLimit = size(values, 'size-limit', usage) ?? size(values, 'sizelimit', usage);
  if (sizeLimit !== undefined) result.sizeLimit = sizeLimit;
  const sectorSize = size(values, 'sector-size', usage);
  if (sectorSize !== undefined) result.sectorSize = sectorSize as SizeOptions['sectorSize'];
  return result;
}

function attachOptions(values: Values, usage: Usage): AttachOptions {
  const options: AttachOptions = sizeOptionsOf(values, usage);
  if (values['read-only']) options.readOnly = true;
  if (values.partscan) options.partscan = true;
  if (values['direct-io']) options.directIO = true;
  // --autoclear is --hold: the library sets AUTOCLEAR and keeps the fd that holds the device.
  // The owner tag lets `loopdev reap` find a device whose holder died with a mount on top.
  if (values.hold || values.autoclear) {
    options.hold = true;
    options.owner = true;
  }
  if (typeof values.device === 'string') {
    const number = loopNumberOf(values.device);
    if (number === undefined) usage(`option '--device' must be N, loopN or /dev/loopN, got '${values.device}'`);
    options.device = number;
  }
  if (values['in-memory']) options.inMemory = true;
  if (typeof values.label === 'string') options.label = utf8Label(values.label, usage);
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

function mountOptions(values: Values, usage: Usage): MountOptions {
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
    const text = values.partition;
    // Digits as a number; anything else as typed, for the library's message to quote.
    const partition = libraryCheck(() => checkPartition(/^\d+$/.test(text) ? Number(text) : text), usage);
    if (partition !== null) options.partition = partition;
  }
  return options;
}
