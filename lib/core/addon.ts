// The addon's whole surface, typed in one place (native/*.cc implement it). Every step comes
// twice: `addon.name.sync` runs on the calling thread, `addon.name.async` on Node's thread pool
// (lib/ calls them only through core/flow.ts's call()). Arguments are plain positional values in
// the order native/layout.h gives each step (LOOPDEV_ARGS_step): the labels of the tuples below
// are those names, and test/addon-layout.test.ts holds them to the addon's `layout.arguments`, so
// an argument reordered on one side fails the suite. A result is a plain value or one
// Float64Array whose slots native/layout.h names; those indices are taken from the addon's own
// `layout` at load, so a reordered slot cannot be read from the wrong place.
import { fromNative, type LoopError, type NativeErrorDetails } from './errors';
import { loadAddon } from './load';
import type { U64 } from './u64';

export { exactU64, parseU64, u64, type U64 } from './u64';

/** One step of the addon, in its two forms. */
export interface Step<Args extends unknown[], Result> {
  sync: (...args: Args) => Result;
  async: (...args: Args) => Promise<Result>;
}

type Both<Name extends string, Args extends unknown[], Result> = { readonly [K in Name]: Step<Args, Result> };

/** What the addon says about its steps and results: argument and slot names in order, attach's mode bits, the stages of a failure. */
export interface Layout {
  /** each step's argument names, in the order it takes them */
  readonly arguments: Readonly<Record<string, readonly string[]>>;
  readonly attach: readonly string[];
  readonly detach: readonly string[];
  readonly list: readonly string[];
  readonly stages: readonly string[];
  readonly attachMode: Readonly<Record<string, number>>;
  readonly statusChange: Readonly<Record<string, number>>;
}

/** The device a change works on (LOOPDEV_TARGET_ARGS): number, the caller's path (or undefined: /dev/loopN), a held fd (or -1), and a handle's identity to check. */
export type Target = [number: number, path: string | undefined, heldFd: number, checkIdentity: boolean, diskseq: U64, backingDevice: U64, backingInode: U64];

export type Addon = {
  readonly layout: Layout;
  /** the constructor of every error the addon throws or rejects with */
  setErrorFactory(factory: (details: NativeErrorDetails) => LoopError): void;
} & Both<'openControl', [], number> &
  Both<'addDevice', [controlFd: number, number: number], number> &
  Both<'removeDevice', [controlFd: number, number: number], number> &
  // device -1: LOOP_CTL_GET_FREE (controlFd -1: none, only with a device); backingPath names
  // backingFd in messages; label undefined: none; partitions: (number, start, length) triples in
  // bytes. Fills out: ATTACH slots, then one errno per partition.
  Both<'attach', [controlFd: number, device: number, backingFd: number, backingPath: string, offset: number | bigint, sizeLimit: number | bigint, flags: number, sectorSize: number, label: string | undefined, mode: number, partitions: Float64Array | undefined, out: Float64Array], void> &
  // path undefined: /dev/loopN; heldFd -1: open the path. A held fd is the step's from the
  // call on (the caller gives it up first): closed, or owned again when the step fails. Fills out: DETACH slots.
  Both<'detach', [...Target, partitions: Float64Array | undefined, out: Float64Array], void> &
  // only undefined: every bound device. -> LIST slots per device, then 3 per partition; backing files; labels
  Both<'list', [only: number | undefined], [numbers: Float64Array, backingFiles: string[], labels: string[]]> &
  Both<'mknod', [path: string, mode: number, major: number, minor: number], void> &
  // fds the addon owns: closed when the thread's environment is torn down. noFollow: no
  // symbolic link anywhere in the path is followed.
  Both<'openOwned', [path: string, flags: number, noFollow: boolean], number> &
  // the backing file of an attach, opened once (refused unless a regular file or a block device)
  Both<'openBacking', [path: string, readOnly: boolean, noFollow: boolean], number> &
  // the file behind fd opened again with flock(LOCK_EX | LOCK_NB) on it
  Both<'lockFile', [fd: number], number> &
  // a sealed memfd with a copy of the file behind backingFd (path names it), or of bytes
  Both<'memoryCopy', [path: string, backingFd: number, bytes: Uint8Array | undefined, name: string], number> &
  // changes of a bound device: LOOP_SET_CAPACITY, _DIRECT_IO, _BLOCK_SIZE, _SET_STATUS64 (the
  // settings STATUS_CHANGE names), _CHANGE_FD; BLKRRPART then BLKPG for the given partitions
  // (out: one errno per partition)
  Both<'setCapacity', [...Target], void> &
  Both<'setDirectIO', [...Target, on: boolean], void> &
  Both<'setBlockSize', [...Target, bytes: number], void> &
  Both<'setStatus', [...Target, changes: number, offset: number | bigint, sizeLimit: number | bigint, flags: number, label: string | undefined], void> &
  Both<'changeBacking', [...Target, backingFd: number, backingPath: string], void> &
  Both<'rescanPartitions', [...Target, partitions: Float64Array | undefined, out: Float64Array], void> &
  Both<'closeOwned', [fd: number], void> &
  // a held device's fd -> whether loopN is still bound after its close
  Both<'closeHeld', [fd: number, number: number], boolean> &
  // detachOnExit: the device (bound; a handle's still its binding) is detached at the thread's
  // teardown, or at exitCleanup() (-> how many it unbound), if it is still that binding. The
  // teardown also undoes mounts made with unmountAtExit and deletes makeTempDir()'s directories.
  Both<'registerOnExit', [...Target, partitions: Float64Array | undefined], void> &
  Both<'exitCleanup', [], number> &
  Both<'makeTempDir', [prefix: string], string> &
  Both<'removeTempDir', [path: string], void> &
  Both<'mount', [source: string, target: string, fstype: string, flags: number, data: string, unmountAtExit: boolean], void> &
  Both<'unmount', [target: string, flags: number], void> &
  // LOOP_CLR_FD of a device looked at as leaked, unless locked or opened meanwhile (native/reap.cc)
  Both<'reap', [...Target], ReapOutcome>;

/** The name of every step, each a `{ sync, async }` pair. */
export type StepName = { [K in keyof Addon]: Addon[K] extends Step<never, unknown> ? K : never }[keyof Addon];

/** What the reap step did (native/reap.cc says when each is answered). */
export type ReapOutcome = 'released' | 'pending' | 'locked' | 'opened' | 'autoclear';

/** The loaded addon. */
export const addon: Addon = loadAddon<Addon>();

/**
 * A call of `step` by argument name, for callers outside lib/ that build one (the benchmark, the
 * tests): the values in the order the addon's layout gives, every name required and no other
 * taken, so that a reordered or renamed argument cannot land in the wrong place. lib/ itself
 * passes the typed tuples above (no object on the hot path).
 */
export function positional(step: StepName, values: Readonly<Record<string, unknown>>): unknown[] {
  const names = argumentNames(step);
  const unknown = Object.keys(values).filter((name) => !names.includes(name));
  const missing = names.filter((name) => !(name in values));
  if (unknown.length > 0 || missing.length > 0) {
    throw new Error(`loopdev: ${step} takes (${names.join(', ')}): ${[...missing.map((name) => `${name} missing`), ...unknown.map((name) => `${name} unknown`)].join(', ')}`);
  }
  return names.map((name) => values[name]);
}

/** The other way: a positional call of `step` by argument name (the test fake reads its calls so). */
export function byName(step: StepName, args: readonly unknown[]): Record<string, unknown> {
  return Object.fromEntries(argumentNames(step).map((name, index) => [name, args[index]]));
}

/** The position of `name` among `step`'s arguments; throws for a name the step does not take. */
export function argumentIndex(step: StepName, name: string): number {
  const index = argumentNames(step).indexOf(name);
  if (index < 0) throw new Error(`loopdev: ${step} takes no argument ${name} (${argumentNames(step).join(', ')})`);
  return index;
}

function argumentNames(step: StepName): readonly string[] {
  const names = addon.layout.arguments[step];
  if (!names) throw new Error(`loopdev: the addon has no argument layout for ${step}: rebuild it`);
  return names;
}

/** Slot indices by name, from the addon's layout; the names must be exactly the expected ones. */
function slots<Name extends string>(what: string, names: readonly string[], expected: readonly Name[]): Readonly<Record<Name, number>> & { readonly count: number } {
  const sorted = (list: readonly string[]): string => [...list].sort().join();
  if (sorted(names) !== sorted(expected)) {
    throw new Error(`loopdev: the addon's ${what} layout (${names.join()}) is not this library's (${expected.join()}): rebuild it`);
  }
  const indices: Record<string, number> = { count: names.length };
  names.forEach((name, index) => (indices[name] = index));
  return Object.freeze(indices) as Readonly<Record<Name, number>> & { readonly count: number };
}

// A 64-bit value takes two slots, its low 32 bits at its name and the high ones at nameHigh.
export const ATTACH = slots('attach', addon.layout.attach, [
  'number', 'major', 'minor', 'backingDevice', 'backingDeviceHigh', 'backingInode', 'backingInodeHigh', 'offset', 'sizeLimit', 'flags', 'size', 'sectorSize', 'diskseq', 'diskseqHigh', 'fd', 'legacy', 'table',
] as const);
export const DETACH = slots('detach', addon.layout.detach, ['cleared', 'released', 'diskseq', 'diskseqHigh', 'partscan'] as const);
export const LIST = slots('list', addon.layout.list, [
  'number', 'major', 'minor', 'backingDevice', 'backingDeviceHigh', 'backingInode', 'backingInodeHigh', 'offset', 'sizeLimit', 'flags', 'size', 'sectorSize', 'diskseq', 'diskseqHigh', 'fromSysfs', 'partitionCount',
] as const);

/** The stages a failure of the addon is classified by (native/layout.h's LOOPDEV_STAGES). */
export type Stage =
  | 'none' | 'openBacking' | 'backing' | 'lockControl' | 'getFree' | 'openDevice' | 'lockDevice'
  | 'configure' | 'configureLegacy' | 'scanPartitions' | 'readBack' | 'partitions' | 'clear' | 'change';
const STAGES = addon.layout.stages as readonly Stage[];
{
  const expected: readonly Stage[] = [
    'none', 'openBacking', 'backing', 'lockControl', 'getFree', 'openDevice', 'lockDevice',
    'configure', 'configureLegacy', 'scanPartitions', 'readBack', 'partitions', 'clear', 'change',
  ];
  if (STAGES.join() !== expected.join()) throw new Error(`loopdev: the addon's stages (${STAGES.join()}) are not this library's (${expected.join()}): rebuild it`);
}
addon.setErrorFactory((details) => fromNative(details, STAGES));

/** Bits by name from the addon's layout; the names must be exactly the expected ones. */
function bits<Name extends string>(what: string, found: Readonly<Record<string, number>>, expected: readonly Name[]): Readonly<Record<Name, number>> {
  if (Object.keys(found).sort().join() !== [...expected].sort().join()) {
    throw new Error(`loopdev: the addon's ${what} (${Object.keys(found).join()}) are not this library's (${expected.join()}): rebuild it`);
  }
  return Object.freeze({ ...found }) as Readonly<Record<Name, number>>;
}

/** attach's `mode` bits. */
export const ATTACH_MODE = bits('attach modes', addon.layout.attachMode, ['legacy', 'keepFd', 'lockControl', 'probeTable', 'directIOIfPossible', 'detachOnExit'] as const);
/** setStatus's `changes` bits. */
export const STATUS_CHANGE = bits('status changes', addon.layout.statusChange, ['offset', 'sizeLimit', 'autoclear', 'partscan', 'label'] as const);

/** Partitions as the addon takes them: (number, start, length) triples in bytes, or undefined for none. */
export function packPartitions(partitions: readonly { number: number; start: number; length: number }[]): Float64Array | undefined {
  if (partitions.length === 0) return undefined;
  const packed = new Float64Array(partitions.length * 3);
  partitions.forEach((part, index) => packed.set([part.number, part.start, part.length], index * 3));
  return packed;
}

/**
 * Result arrays for one kind of call, each lent to one call at a time (take, call, read,
 * give) and then reused: allocating an ArrayBuffer per call cost more than the rest of an
 * attach+detach cycle in the addon. Sync calls reuse one array; concurrent async calls get one each.
 */
export class ResultArrays {
  private readonly free: Float64Array[] = [];

  constructor(private readonly length: number) {}

  /** An array of at least `extra` slots beyond the layout's own. */
  take(extra = 0): Float64Array {
    return extra === 0 ? (this.free.pop() ?? new Float64Array(this.length)) : new Float64Array(this.length + extra);
  }

  give(array: Float64Array): void {
    if (array.length === this.length) this.free.push(array);
  }
}
