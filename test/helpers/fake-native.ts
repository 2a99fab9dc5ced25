// Test doubles for the addon's attach/detach (see lib/steps.ts for the layout): they decode
// the call and the addon's stepNumbers into a request object (at once: the next call reuses them)
// and encode a result into the `out` array, so policy tests read as plain requests and results.
import { native, type AttachRequest, type AttachResult, type DetachRequest, type DetachOutcome, type NativePartition } from '../../lib/core/addon';

type AttachArgs = [string, string | undefined, Float64Array | undefined];
type DetachArgs = [string | undefined, Float64Array | undefined];

function partitions(packed: Float64Array | undefined): NativePartition[] {
  const list: NativePartition[] = [];
  for (let i = 0; packed && i < packed.length; i += 3) list.push({ number: packed[i], start: packed[i + 1], length: packed[i + 2] });
  return list;
}

/** The numbers by the addon's own names for them. */
function named(numbers: Float64Array, names: readonly string[]): Record<string, number> {
  return Object.fromEntries(names.map((name, index) => [name, numbers[index]]));
}

const u64 = (high: number, low: number): number | bigint => {
  const value = (BigInt(high) << 32n) | BigInt(low);
  return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
};

function attachRequest([backingPath, label, packed]: AttachArgs): AttachRequest {
  const n = named(native.stepNumbers, native.attachArgs);
  return {
    controlFd: n.controlFd, device: n.device, backingFd: n.backingFd, backingPath,
    offset: u64(n.offsetHigh, n.offsetLow), sizeLimit: u64(n.sizeLimitHigh, n.sizeLimitLow),
    flags: n.flags, blockSize: n.sectorSize, label: label ?? '',
    legacy: (n.mode & 1) !== 0, keepFd: (n.mode & 2) !== 0, lockControl: (n.mode & 4) !== 0, probeTable: (n.mode & 8) !== 0,
    partitions: partitions(packed),
  };
}

/** The result in the addon's own slot order (its `attachSlots` names), then the partition errors. */
function encodeAttach(result: AttachResult): Float64Array {
  const slots = native.attachSlots.map((name) => {
    const value = (result as unknown as Record<string, number | boolean>)[name];
    return typeof value === 'boolean' ? Number(value) : value;
  });
  return Float64Array.from([...slots, ...result.partitionErrors]);
}

/** A fake `attach` that answers with `impl(request)` (or throws what it throws). */
export function fakeAttach(impl: (request: AttachRequest) => AttachResult): (...args: AttachArgs) => Float64Array {
  return (...args) => encodeAttach(impl(attachRequest(args)));
}

export function fakeAttachAsync(impl: (request: AttachRequest) => Promise<AttachResult>): (...args: AttachArgs) => Promise<Float64Array> {
  return async (...args) => encodeAttach(await impl(attachRequest(args)));
}

function detachRequest([path, packed]: DetachArgs): DetachRequest {
  const n = named(native.stepNumbers, native.detachArgs);
  return {
    path: path ?? `/dev/loop${n.number}`, named: path !== undefined, number: n.number, fd: n.heldFd, checkIdentity: n.checkIdentity === 1,
    diskseq: n.diskseq, backingDevice: n.backingDevice, backingInode: n.backingInode, partitions: partitions(packed),
  };
}

export function fakeDetach(impl: (request: DetachRequest) => DetachOutcome): (...args: DetachArgs) => Float64Array {
  return (...args) => {
    const result = impl(detachRequest(args));
    return Float64Array.from([result.cleared ? 1 : 0, result.released ? 1 : 0, result.diskseq]);
  };
}

export function fakeDetachAsync(impl: (request: DetachRequest) => DetachOutcome): (...args: DetachArgs) => Promise<Float64Array> {
  const sync = fakeDetach(impl);
  return async (...args) => sync(...args);
}
