// The hot kernel steps, attach and detach, over the addon's calling convention: numbers in
// the addon's stepNumbers array, strings as arguments, results in a Float64Array (as Node's
// fs binding does for stat). Measured with callgrind, building and reading objects through
// N-API cost more instructions than the rest of an attach+detach cycle, and one JavaScript
// argument per number most of what was left. A sync call returns the addon's scratch array,
// so the result is read here at once, before anything else can run. This file is the only
// place that knows the layouts, checked against the addon's at load.
import { call, type Effect, type Flow } from './flow';
import { native, type AttachResult, type DetachRequest, type DetachOutcome, type NativePartition } from './addon';
import type { LoopInfo, PartitionInfo } from '../loop/inspect';
import { LO_FLAGS, type AttachPlan } from '../loop/options';
import { devicePath, partitionPath } from '../loop/sysfs';

const ATTACH_ARGS = ['controlFd', 'device', 'backingFd', 'offsetHigh', 'offsetLow', 'sizeLimitHigh', 'sizeLimitLow', 'flags', 'sectorSize', 'mode'] as const;
const DETACH_ARGS = ['number', 'heldFd', 'checkIdentity', 'diskseq', 'backingDevice', 'backingInode'] as const;
const ATTACH_SLOTS = ['number', 'major', 'minor', 'backingDevice', 'backingInode', 'offset', 'sizeLimit', 'flags', 'size', 'sectorSize', 'diskseq', 'fd', 'legacy', 'table'] as const;
const DETACH_SLOTS = ['cleared', 'released', 'diskseq'] as const;
const LIST_SLOTS = ['number', 'major', 'minor', 'backingDevice', 'backingInode', 'offset', 'sizeLimit', 'flags', 'size', 'sectorSize', 'diskseq', 'fromSysfs', 'partitionCount'] as const;

function checkLayout(mine: readonly string[], theirs: readonly string[], what: string): void {
  if (mine.join() !== theirs.join()) throw new Error(`loopdev: ${what} layout differs from the addon's (${theirs.join()}): rebuild`);
}
checkLayout(ATTACH_SLOTS, native.attachSlots, 'attach');
checkLayout(DETACH_SLOTS, native.detachSlots, 'detach');
checkLayout(LIST_SLOTS, native.listSlots, 'list');
checkLayout(ATTACH_ARGS, native.attachArgs, 'attach arguments');
checkLayout(DETACH_ARGS, native.detachArgs, 'detach arguments');

// The numbers of the next attach or detach step go into the addon's own array, not into the
// call (see LOOPDEV_ATTACH_ARGS in native/status.h). The addon copies them out before the call
// returns (sync and async alike), and a driver makes the call as soon as the step is yielded,
// so one array serves every call.
const stepNumbers = native.stepNumbers;
if (stepNumbers.length < Math.max(ATTACH_ARGS.length, DETACH_ARGS.length)) throw new Error('loopdev: the addon\'s stepNumbers is too short: rebuild');
const TWO_32 = 2 ** 32;

/** Stores a byte count (a safe integer or a bigint below 2^63) as two 32-bit halves at `at`. */
function putU64(numbers: Float64Array, at: number, value: number | bigint): void {
  if (typeof value === 'bigint') {
    numbers[at] = Number(value >> 32n);
    numbers[at + 1] = Number(value & 0xffffffffn);
  } else {
    const high = Math.floor(value / TWO_32);
    numbers[at] = high;
    numbers[at + 1] = value - high * TWO_32;
  }
}

const MODE_LEGACY = 1;
const MODE_KEEP_FD = 2;
const MODE_LOCK_CONTROL = 4;
const MODE_PROBE_TABLE = 8;

/** Partitions as the addon takes them: (number, start, length) triples, or undefined for none. */
export function packPartitions(partitions: readonly NativePartition[]): Float64Array | undefined {
  if (partitions.length === 0) return undefined;
  const packed = new Float64Array(partitions.length * 3);
  partitions.forEach((part, index) => packed.set([part.number, part.start, part.length], index * 3));
  return packed;
}

// The effects and their argument lists are reused the same way (see stepNumbers).
const attachArgs: [string, string | undefined, Float64Array | undefined] = ['', undefined, undefined];
const attachCall: Effect = { kind: 'call', name: 'attach', args: attachArgs };
const detachArgs: [string | undefined, Float64Array | undefined] = [undefined, undefined];
const detachCall: Effect = { kind: 'call', name: 'detach', args: detachArgs };

/** How one attempt to bind goes, beyond the plan. */
export interface AttachWay {
  /** LOOP_SET_FD + LOOP_SET_STATUS64 instead of LOOP_CONFIGURE */
  legacy: boolean;
  /** partitions to add with BLKPG, from packPartitions() */
  packed: Float64Array | undefined;
  /** look for a partition table first: if there is one, attach nothing and say so (`table`) */
  probe: boolean;
}

/**
 * The native step of one attempt to bind (see native/device.cc AttachOp), to `yield`
 * directly, at once.
 */
export function attachEffect(plan: AttachPlan, controlFd: number, way: AttachWay): Effect {
  fillAttach(plan, controlFd, way);
  return attachCall;
}

/** The same step made at once on this thread (a sync attach's first attempt), decoded. */
export function attachNow(plan: AttachPlan, controlFd: number, way: AttachWay): AttachResult {
  fillAttach(plan, controlFd, way);
  const { packed } = way;
  return decodeAttach(native.attach(attachArgs[0], attachArgs[1], attachArgs[2]), packed === undefined ? 0 : packed.length / 3);
}

/**
 * The same step through the addon's Promise form (an async attach's first attempt): the
 * addon's answer, for decodeAttach(). (The addon copies stepNumbers before it returns.)
 */
export function attachLater(plan: AttachPlan, controlFd: number, way: AttachWay): Promise<Float64Array> {
  fillAttach(plan, controlFd, way);
  return native.attachAsync(attachArgs[0], attachArgs[1], attachArgs[2]);
}

function fillAttach(plan: AttachPlan, controlFd: number, way: AttachWay): void {
  const numbers = stepNumbers;
  numbers[0] = controlFd;
  numbers[1] = plan.device;
  numbers[2] = plan.backingFd;
  putU64(numbers, 3, plan.offset);
  putU64(numbers, 5, plan.sizeLimit);
  numbers[7] = plan.flags;
  numbers[8] = plan.sectorSize;
  numbers[9] =
    (way.legacy ? MODE_LEGACY : 0) | (plan.hold ? MODE_KEEP_FD : 0) | (plan.lockControl ? MODE_LOCK_CONTROL : 0) | (way.probe ? MODE_PROBE_TABLE : 0);
  attachArgs[0] = plan.backingPath;
  attachArgs[1] = plan.label === '' ? undefined : plan.label;
  attachArgs[2] = way.packed;
}

const NO_ERRORS: readonly number[] = Object.freeze([]);

/**
 * What the attach step answered (read at once: a sync call's array is the addon's scratch),
 * as one object literal of its final shape. List's layout starts with the same eleven status
 * slots; listStep reads them straight into LoopInfo objects instead.
 */
export function decodeAttach(out: Float64Array, partitionCount: number): AttachResult {
  return {
    number: out[0],
    major: out[1],
    minor: out[2],
    backingDevice: out[3],
    backingInode: out[4],
    offset: out[5],
    sizeLimit: out[6],
    flags: out[7],
    size: out[8],
    sectorSize: out[9],
    diskseq: out[10],
    fd: out[11],
    legacy: out[12] === 1,
    table: out[13] === 1,
    partitionErrors: partitionCount === 0 ? NO_ERRORS : Array.from(out.subarray(ATTACH_SLOTS.length, ATTACH_SLOTS.length + partitionCount)),
  };
}

/** The native step of one attempt to unbind (see native/device.cc DetachOp), to `yield` directly, at once. */
export function detachEffect(request: DetachRequest, partitions: Float64Array | undefined): Effect {
  fillDetach(request, partitions);
  return detachCall;
}

/** The same step made at once on this thread (a sync detach's first attempt), decoded. */
export function detachNow(request: DetachRequest, partitions: Float64Array | undefined): DetachOutcome {
  fillDetach(request, partitions);
  return decodeDetach(native.detach(detachArgs[0], partitions));
}

/** The same step through the addon's Promise form (an async detach's first attempt): the answer, for decodeDetach(). */
export function detachLater(request: DetachRequest, partitions: Float64Array | undefined): Promise<Float64Array> {
  fillDetach(request, partitions);
  return native.detachAsync(detachArgs[0], partitions);
}

function fillDetach(request: DetachRequest, partitions: Float64Array | undefined): void {
  const numbers = stepNumbers;
  numbers[0] = request.number;
  numbers[1] = request.fd;
  numbers[2] = request.checkIdentity ? 1 : 0;
  numbers[3] = request.diskseq;
  numbers[4] = request.backingDevice;
  numbers[5] = request.backingInode;
  // The addon opens /dev/loopN itself unless the caller named the device by a path of theirs.
  detachArgs[0] = request.named ? request.path : undefined;
  detachArgs[1] = partitions;
}

/** What the detach step answered (read at once, as for attach). */
export function decodeDetach(out: Float64Array): DetachOutcome {
  return { cleared: out[0] === 1, released: out[1] === 1, diskseq: out[2] };
}

/**
 * The bound loop devices (or only device `only`), as the addon reads them (see
 * native/list.cc), decoded straight into LoopInfo objects of one shape: with 256 devices,
 * an intermediate record spread into the final object cost as much as reading the devices.
 */
export function* listStep(only?: number): Flow<LoopInfo[]> {
  const [numbers, files, labels] = only === undefined ? yield* call('list') : yield* call('list', only);
  const infos: LoopInfo[] = new Array(files.length);
  let at = 0;
  for (let index = 0; index < files.length; index++) {
    const number = numbers[at];
    const flags = numbers[at + 7];
    const count = numbers[at + 12];
    const partitions: PartitionInfo[] = new Array(count);
    for (let part = 0, base = at + LIST_SLOTS.length; part < count; part++, base += 3) {
      partitions[part] = { path: partitionPath(number, numbers[base]), number: numbers[base], start: numbers[base + 1], size: numbers[base + 2] };
    }
    if (count > 1) partitions.sort((a, b) => a.number - b.number);
    infos[index] = {
      path: devicePath(number),
      number,
      backingFile: files[index],
      backingDevice: numbers[at + 3],
      backingInode: numbers[at + 4],
      offset: numbers[at + 5],
      sizeLimit: numbers[at + 6],
      size: numbers[at + 8],
      readOnly: (flags & LO_FLAGS.READ_ONLY) !== 0,
      autoclear: (flags & LO_FLAGS.AUTOCLEAR) !== 0,
      partscan: (flags & LO_FLAGS.PARTSCAN) !== 0,
      directIO: (flags & LO_FLAGS.DIRECT_IO) !== 0,
      sectorSize: numbers[at + 9],
      major: numbers[at + 1],
      minor: numbers[at + 2],
      diskseq: numbers[at + 10],
      label: labels[index],
      partitions,
    };
    at += LIST_SLOTS.length + count * 3;
  }
  return infos;
}
