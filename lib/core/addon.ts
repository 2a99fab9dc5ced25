// The addon's whole surface, typed in one place, and how it is found and loaded.
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';

import { fail, fromNative } from './errors';

export interface NativePartition {
  number: number;
  /** bytes */
  start: number;
  /** bytes */
  length: number;
}

export interface AttachRequest {
  controlFd: number;
  /** -1: ask LOOP_CTL_GET_FREE */
  device: number;
  /** an fd the caller opened, or -1: the addon opens backingPath (O_CLOEXEC) */
  backingFd: number;
  backingPath: string;
  offset: number | bigint;
  sizeLimit: number | bigint;
  flags: number;
  blockSize: number;
  label: string;
  /** LOOP_SET_FD + LOOP_SET_STATUS64 instead of LOOP_CONFIGURE */
  legacy: boolean;
  keepFd: boolean;
  lockControl: boolean;
  /** look for a partition table first (partscan): if found, attach nothing and say so */
  probeTable: boolean;
  partitions: NativePartition[];
}

/** A bound device's state as the addon reads it with ioctls (bytes). */
export interface DeviceStatus {
  number: number;
  major: number;
  minor: number;
  backingDevice: number;
  backingInode: number;
  offset: number;
  sizeLimit: number;
  flags: number;
  /** attach reads the geometry only when a sector size was asked: else 0 there */
  size: number;
  sectorSize: number;
  diskseq: number;
}

export interface AttachResult extends DeviceStatus {
  /** the device fd, owned by the addon, when keepFd was asked; else -1 */
  fd: number;
  /** bound with LOOP_SET_FD + LOOP_SET_STATUS64 rather than LOOP_CONFIGURE */
  legacy: boolean;
  /** per requested partition: 0 or the errno of BLKPG_ADD_PARTITION */
  partitionErrors: readonly number[];
  /** a probe was asked and the file has a partition table: nothing was attached (read it, ask again) */
  table: boolean;
}

export interface DetachRequest {
  path: string;
  /** the caller named the device by this path (else it is /dev/loopN of `number`) */
  named: boolean;
  number: number;
  /** a held device fd to use instead of opening path; the addon closes it on success */
  fd: number;
  checkIdentity: boolean;
  diskseq: number;
  backingDevice: number;
  backingInode: number;
  partitions: NativePartition[];
}

export interface DetachOutcome {
  /** LOOP_CLR_FD was accepted (false: the device was not bound) */
  cleared: boolean;
  /** the device is unbound once our fd was closed (we were its last opener, or sysfs says so) */
  released: boolean;
  /** the binding's diskseq before the detach (0 if unknown) */
  diskseq: number;
}

type Both<Name extends string, Args extends unknown[], Result> = {
  [K in Name]: (...args: Args) => Result;
} & {
  [K in `${Name}Async`]: (...args: Args) => Promise<Result>;
};

export type Native = {
  setErrorFactory(factory: typeof fromNative): void;
  readonly attachSlots: readonly string[];
  readonly detachSlots: readonly string[];
  readonly listSlots: readonly string[];
  readonly attachArgs: readonly string[];
  readonly detachArgs: readonly string[];
  /** where the hot steps read their numbers (see lib/steps.ts) */
  readonly stepNumbers: Float64Array;
} & Both<'openControl', [], number> &
  Both<'addDevice', [controlFd: number, number: number], number> &
  Both<'removeDevice', [controlFd: number, number: number], number> &
  // The numbers in stepNumbers (by attachArgs / detachArgs), results as a Float64Array (see
  // lib/steps.ts, the only caller). An absent label: the backing path; an absent path: /dev/loopN.
  Both<'attach', [backingPath: string, label: string | undefined, partitions: Float64Array | undefined], Float64Array> &
  Both<'detach', [path: string | undefined, partitions: Float64Array | undefined], Float64Array> &
  Both<'mknod', [path: string, mode: number, major: number, minor: number], void> &
  Both<'closeOwned', [fd: number], void> &
  // An fd the addon owns (closed at environment teardown), opened with O_CLOEXEC added.
  Both<'openOwned', [path: string, flags: number], number> &
  // An owned fd on `path` with flock(LOCK_EX | LOCK_NB) taken; EWOULDBLOCK when it is held.
  Both<'lockFile', [path: string], number> &
  // [numbers by ListSlot (+3 per partition), backing files, labels] (see lib/steps.ts)
  Both<'list', [only?: number], [Float64Array, string[], string[]]> &
  Both<'mount', [source: string, target: string, fstype: string, flags: number, data: string], void> &
  Both<'unmount', [target: string, flags: number], void>;

// ELF e_machine of the architectures Node runs on here (a binary of another one cannot load).
const ELF_MACHINES: Record<string, number> = { x64: 62, arm64: 183, arm: 40, ia32: 3, ppc64: 21, s390x: 22, riscv64: 243, loong64: 258 };

/** Why `file` cannot be this process's addon, or undefined when it may be: missing, or built for another architecture. */
function unusable(file: string): string | undefined {
  const header = Buffer.alloc(20);
  try {
    const fd = openSync(file, 'r');
    try {
      readSync(fd, header, 0, header.length, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    return 'not there';
  }
  if (header.length < 20 || header.readUInt32BE(0) !== 0x7f454c46) return 'not an ELF binary';
  const machine = header.readUInt16LE(18);
  const built = Object.keys(ELF_MACHINES).find((arch) => ELF_MACHINES[arch] === machine) ?? `ELF machine ${machine}`;
  return ELF_MACHINES[process.arch] === machine ? undefined : `built for ${built}, this is ${process.arch}`;
}

function load(): Native {
  if (process.platform !== 'linux') {
    fail('ERR_LOOP_NATIVE_LOAD', `loopdev works only on Linux (this is ${process.platform})`);
  }
  const arch = `${process.platform}-${process.arch}`;
  const root = join(__dirname, '..', '..');
  // A local build wins over the prebuilt binary that `npm pack` puts in the tarball (npm 11
  // blocks dependencies' install scripts, so the prebuilt one is the usual case), unless it
  // was built for another architecture (a checkout shared with an arm64 machine or guest).
  const candidates = [
    ['build', 'Release'],
    ['build', 'Debug'],
    ['prebuilds', arch],
  ];
  const tried: string[] = [];
  const usable: string[][] = [];
  for (const parts of candidates) {
    const why = unusable(join(root, ...parts, 'loopdev.node'));
    tried.push(`${parts.join('/')}/loopdev.node (${why ?? 'present'})`);
    if (why === undefined) usable.push(['module_root', ...parts, 'bindings']);
  }
  let addon: Native;
  try {
    if (usable.length === 0) throw new Error('no binary for this platform');
    addon = require('bindings')({ bindings: 'loopdev.node', module_root: root, try: usable }) as Native;
  } catch (error) {
    fail(
      'ERR_LOOP_NATIVE_LOAD',
      `could not load the loopdev addon for ${arch} (${(error as Error).message.split('\n')[0]}). ` +
        `Tried: ${tried.join('; ')}. ` +
        'Build it from source with `npm rebuild loopdev` (needs python3, make and a C++ compiler).',
      { cause: error },
    );
  }
  addon.setErrorFactory(fromNative);
  // The exports object N-API builds is in dictionary mode; every call looked its function up
  // the slow way. A plain copy has fast properties.
  return { ...addon };
}

/** The loaded addon. */
export const native: Native = load();
