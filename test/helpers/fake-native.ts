// Test doubles for the addon's attach and detach: they turn the positional call into a request
// object and a result object into the addon's Float64Array, with every argument position, slot
// and mode bit taken from the addon's own layout (lib/core/addon.ts), so that policy tests read
// as plain requests and results.
import { argumentIndex, ATTACH, ATTACH_MODE, byName, DETACH, type Addon, type U64 } from '../../lib/core/addon';
import type { PartitionEntry } from '../../lib/partitions/table';

export interface AttachRequest {
  controlFd: number;
  device: number;
  backingFd: number;
  backingPath: string;
  offset: number | bigint;
  sizeLimit: number | bigint;
  flags: number;
  blockSize: number;
  label: string;
  legacy: boolean;
  keepFd: boolean;
  lockControl: boolean;
  probeTable: boolean;
  partitions: PartitionEntry[];
}

/** Every ATTACH slot, then the partition errors. */
export interface AttachResult {
  number: number;
  major: number;
  minor: number;
  backingDevice: number;
  backingInode: number;
  offset: number;
  sizeLimit: number;
  flags: number;
  size: number;
  sectorSize: number;
  diskseq: number;
  fd: number;
  legacy: boolean;
  table: boolean;
  partitionErrors: readonly number[];
}

export interface DetachRequest {
  number: number;
  /** the caller's own path, or /dev/loopN */
  path: string;
  named: boolean;
  fd: number;
  checkIdentity: boolean;
  diskseq: U64;
  backingDevice: U64;
  backingInode: U64;
  partitions: PartitionEntry[];
}

export interface DetachOutcome {
  cleared: boolean;
  released: boolean;
  diskseq: number;
  /** the device had PARTSCAN (default false) */
  partscan?: boolean;
}

type AttachArgs = Parameters<Addon['attach']['sync']>;
type DetachArgs = Parameters<Addon['detach']['sync']>;
const ATTACH_OUT = argumentIndex('attach', 'out');
const DETACH_OUT = argumentIndex('detach', 'out');

function partitions(packed: Float64Array | undefined): PartitionEntry[] {
  const list: PartitionEntry[] = [];
  for (let i = 0; packed && i < packed.length; i += 3) list.push({ number: packed[i]!, start: packed[i + 1]!, length: packed[i + 2]! });
  return list;
}

/** The call by argument name (its types are AttachArgs', by those names). */
interface AttachCall {
  controlFd: number;
  device: number;
  backingFd: number;
  backingPath: string;
  offset: number | bigint;
  sizeLimit: number | bigint;
  flags: number;
  sectorSize: number;
  label: string | undefined;
  mode: number;
  partitions: Float64Array | undefined;
}

function attachRequest(args: AttachArgs): AttachRequest {
  const { controlFd, device, backingFd, backingPath, offset, sizeLimit, flags, sectorSize, label, mode, partitions: packed } = byName('attach', args) as unknown as AttachCall;
  return {
    controlFd, device, backingFd, backingPath, offset, sizeLimit, flags, blockSize: sectorSize, label: label ?? '',
    legacy: (mode & ATTACH_MODE.legacy) !== 0, keepFd: (mode & ATTACH_MODE.keepFd) !== 0,
    lockControl: (mode & ATTACH_MODE.lockControl) !== 0, probeTable: (mode & ATTACH_MODE.probeTable) !== 0,
    partitions: partitions(packed),
  };
}

/** A 64-bit value as the addon writes it: low 32 bits at `index`, high ones after it. */
function setU64(out: Float64Array, index: number, value: number): void {
  out[index] = value % 2 ** 32;
  out[index + 1] = Math.floor(value / 2 ** 32);
}

function encodeAttach(result: AttachResult, out: Float64Array): void {
  for (const [name, index] of Object.entries(ATTACH)) {
    if (name === 'count' || name.endsWith('High')) continue;
    const value = result[name as keyof AttachResult] as number | boolean;
    if (`${name}High` in ATTACH) setU64(out, index, value as number);
    else out[index] = typeof value === 'boolean' ? Number(value) : value;
  }
  out.set(result.partitionErrors, ATTACH.count);
}

/** A fake `attach` that answers with `impl(request)` (or throws what it throws). */
export function fakeAttach(impl: (request: AttachRequest) => AttachResult): (...args: AttachArgs) => void {
  return (...args) => encodeAttach(impl(attachRequest(args)), args[ATTACH_OUT] as Float64Array);
}

export function fakeAttachAsync(impl: (request: AttachRequest) => Promise<AttachResult>): (...args: AttachArgs) => Promise<void> {
  return async (...args) => encodeAttach(await impl(attachRequest(args)), args[ATTACH_OUT] as Float64Array);
}

interface DetachCall {
  number: number;
  path: string | undefined;
  heldFd: number;
  checkIdentity: boolean;
  diskseq: U64;
  backingDevice: U64;
  backingInode: U64;
  partitions: Float64Array | undefined;
}

function detachRequest(args: DetachArgs): DetachRequest {
  const { number, path, heldFd, checkIdentity, diskseq, backingDevice, backingInode, partitions: packed } = byName('detach', args) as unknown as DetachCall;
  return { number, path: path ?? `/dev/loop${number}`, named: path !== undefined, fd: heldFd, checkIdentity, diskseq, backingDevice, backingInode, partitions: partitions(packed) };
}

function encodeDetach(result: DetachOutcome, out: Float64Array): void {
  out[DETACH.cleared] = result.cleared ? 1 : 0;
  out[DETACH.released] = result.released ? 1 : 0;
  setU64(out, DETACH.diskseq, result.diskseq);
  out[DETACH.partscan] = result.partscan === true ? 1 : 0;
}

export function fakeDetach(impl: (request: DetachRequest) => DetachOutcome): (...args: DetachArgs) => void {
  return (...args) => encodeDetach(impl(detachRequest(args)), args[DETACH_OUT] as Float64Array);
}

export function fakeDetachAsync(impl: (request: DetachRequest) => DetachOutcome): (...args: DetachArgs) => Promise<void> {
  return async (...args) => encodeDetach(impl(detachRequest(args)), args[DETACH_OUT] as Float64Array);
}
