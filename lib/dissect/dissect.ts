// dissect(): what a whole disk image holds and how mountImage() would mount it, read from the
// file alone (no loop device, no root). The file is opened once; its bytes are read as steps,
// so the async form never blocks the event loop on it.
import { addon } from '../core/addon';
import { fail, LoopError } from '../core/errors';
import { call, runAsync, runSync, type Flow } from '../core/flow';
import * as io from '../core/io';
import { checkPath } from '../loop/options';
import { analyseImage, type DissectedImage } from './analyse';
import { planDissect, type DissectOptions, type DissectPlan } from './options';

/** Dissects the image open on `fd` (a regular file). */
export function* dissectOpened(fd: number, path: string, plan: DissectPlan): Flow<DissectedImage> {
  const stats = yield* call(io.fstat, fd);
  if (!stats.isFile()) fail('ERR_LOOP_BAD_IMAGE', `${path} is not a regular file: dissect() reads image files`, { path });
  // The loop device exposes whole 512-byte sectors only.
  const deviceSize = stats.size - (stats.size % 512);
  try {
    return yield* io.parseReads(fd, (read) => analyseImage(read, deviceSize, plan.architectures, plan.readOnly), 0, deviceSize);
  } catch (error) {
    // The parser's verdicts name no file: say which one.
    if (error instanceof LoopError && error.path === undefined && error.syscall === undefined) {
      throw new LoopError(`${path}: ${error.message}`, { code: error.code, path, cause: error });
    }
    throw error;
  }
}

function* dissectFlow(image: unknown, rawOptions: unknown): Flow<DissectedImage> {
  const path = checkPath(image, 'image');
  const plan = planDissect(rawOptions);
  const fd = yield* call(addon.openBacking, path, true, false);
  try {
    return yield* dissectOpened(fd, path, plan);
  } finally {
    yield* call(addon.closeOwned, fd);
  }
}

/**
 * Reads a whole disk image (a GPT, an MBR, or a bare file system) and answers what it holds by
 * the Discoverable Partitions Specification: each partition's designator, architecture, flags,
 * label, UUID and file system, which partition each designator uses, and the mounts
 * mountImage() would make, in order, with their options. Needs no root and no loop device.
 *
 * Errors: ERR_LOOP_BAD_IMAGE (no table or file system, a damaged GPT, a block device),
 * ERR_LOOP_INVALID_BACKING (a directory or other non-file),
 * ERR_LOOP_AMBIGUOUS_IMAGE (GPT headers for two sector sizes, two candidates for the root),
 * ERR_LOOP_INVALID_OPTION, and open(2)'s errors. What mountImage() would refuse is in `refusals`.
 */
export const dissect = (image: string, options?: DissectOptions): Promise<DissectedImage> => runAsync(dissectFlow(image, options));
/** Sync form of {@link dissect}. */
export const dissectSync = (image: string, options?: DissectOptions): DissectedImage => runSync(dissectFlow(image, options));

export { planDissect, type DissectOptions, type DissectPlan };
