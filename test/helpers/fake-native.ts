// Test doubles for the addon's positional attach/detach (see lib/steps.ts for the layout):
// they decode the call into a request object and encode a result into the `out` array, so
// policy tests read as plain requests and results.
import type { AttachRequest, AttachResult, DetachRequest, DetachOutcome, NativePartition } from '../../lib/native';

type AttachArgs = [number, number, number, string, number | bigint, number | bigint, number, number, string, number, Float64Array | undefined];
type DetachArgs = [string, number, number, boolean, number, number, number, Float64Array | undefined];

function partitions(packed: Float64Array | undefined): NativePartition[] {
  const list: NativePartition[] = [];
  for (let i = 0; packed && i < packed.length; i += 3) list.push({ number: packed[i], start: packed[i + 1], length: packed[i + 2] });
  return list;
}

function attachRequest(args: AttachArgs): AttachRequest {
  const [controlFd, device, backingFd, backingPath, offset, sizeLimit, flags, blockSize, label, mode, packed] = args;
  return {
    controlFd, device, backingFd, backingPath, offset, sizeLimit, flags, blockSize, label,
    legacy: (mode & 1) !== 0, keepFd: (mode & 2) !== 0, lockControl: (mode & 4) !== 0,
    partitions: partitions(packed),
  };
}

function encodeAttach(result: AttachResult): Float64Array {
  return Float64Array.from([result.number, result.major, result.minor, result.backingDevice, result.backingInode, result.offset, result.sizeLimit,
    result.flags, result.size, result.sectorSize, result.diskseq, result.fd, result.legacy ? 1 : 0, ...result.partitionErrors]);
}

/** A fake `attach` that answers with `impl(request)` (or throws what it throws). */
export function fakeAttach(impl: (request: AttachRequest) => AttachResult): (...args: AttachArgs) => Float64Array {
  return (...args) => encodeAttach(impl(attachRequest(args)));
}

export function fakeAttachAsync(impl: (request: AttachRequest) => Promise<AttachResult>): (...args: AttachArgs) => Promise<Float64Array> {
  return async (...args) => encodeAttach(await impl(attachRequest(args)));
}

function detachRequest(args: DetachArgs): DetachRequest {
  const [path, number, fd, checkIdentity, diskseq, backingDevice, backingInode, packed] = args;
  return { path, number, fd, checkIdentity, diskseq, backingDevice, backingInode, partitions: partitions(packed) };
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
