// One image, several loop devices. Two devices on the same bytes are two block devices the
// kernel knows nothing in common about: mounting both writable gives two independent
// superblocks over one file, and whatever one writes the other overwrites. mount(8) therefore
// reuses a device already bound to the file with the same offset and size limit (libmount's
// loopcxt_find_overlap), and refuses an overlapping one. mount() and attach({ reuse }) do the
// same, under a lock on the image so that two cooperating processes cannot both miss the
// other's device.
import { addon, exactU64, type U64 } from '../core/addon';
import { LoopError, fail, hasCode } from '../core/errors';
import { call, checkAborted, type Flow } from '../core/flow';
import * as io from '../core/io';
import { poll } from '../core/retry';
import { listFlow, type LoopInfo } from './inspect';
import { LO_FLAGS, type AttachPlan } from './options';
import { splitDev } from './dev-number';

/** How long a mount() or attach({ reuse }) waits for another one on the same image (ms). */
export const IMAGE_LOCK_WAIT_MS = 30_000;

/**
 * Takes flock(LOCK_EX) on the image (its own open file, so a caller's fd is left alone),
 * waiting with timers while another holder has it: the lock covers the look for existing
 * devices, the attach and the mount. Answers the owned fd whose close releases it, or -1
 * when the file's filesystem has no flock (then the check runs unlocked).
 */
export function* lockImage(plan: AttachPlan): Flow<number> {
  let refusal: LoopError | undefined;
  const fd = yield* poll(IMAGE_LOCK_WAIT_MS, plan.signal, function* () {
    checkAborted(plan.signal);
    try {
      return yield* call(addon.lockFile, plan.backingFd);
    } catch (error) {
      if (!(error instanceof LoopError) || error.syscall !== 'flock') throw error;
      if (hasCode(error, 'ENOLCK', 'EOPNOTSUPP', 'EINVAL')) return -1;
      if (!hasCode(error, 'EAGAIN', 'EWOULDBLOCK')) throw error;
      refusal = error;
      return undefined;
    }
  });
  if (fd !== undefined) return fd;
  const holder = yield* lockHolder(plan.backingFd);
  fail(
    'ERR_LOOP_BUSY',
    `${plan.backingPath || 'the image'} stayed locked for ${IMAGE_LOCK_WAIT_MS} ms` +
      `${holder === undefined ? '' : ` by process ${holder}`} (another loopdev mount or attach of it is under way)`,
    { path: plan.backingPath || undefined, cause: refusal },
  );
}

/** The pid holding a flock on the file behind `fd`, from /proc/locks, if it can be told. */
function* lockHolder(fd: number): Flow<number | undefined> {
  try {
    const { dev, ino } = yield* call(io.fstatExact, fd);
    const { major, minor } = splitDev(dev);
    const id = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${ino}`;
    for (const line of (yield* call(io.readText, '/proc/locks')).split('\n')) {
      const fields = line.trim().split(/\s+/);
      // "1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF"
      if (fields[1] === 'FLOCK' && fields[5] === id) return Number(fields[4]);
    }
  } catch {
    // no answer then
  }
  return undefined;
}

/** The backing file's identity (as the kernel records it in lo_device and lo_inode) and size. */
export interface ImageStats {
  dev: U64;
  ino: U64;
  size: number;
}

/** The identity of the plan's backing file, from its fd (see withBackingOpen: no path is resolved again). */
export function* imageStats(plan: AttachPlan): Flow<ImageStats> {
  const stats = yield* call(io.fstatExact, plan.backingFd);
  return { dev: exactU64(stats.dev), ino: exactU64(stats.ino), size: Number(stats.size) };
}

/** What is already bound to the image: a device to reuse, or one that clashes with the plan. */
export interface Sharing {
  /** bound with the plan's offset, size limit, read-only mode and sector size */
  same: LoopInfo | undefined;
  /** bound over an overlapping range with other settings */
  clash: LoopInfo | undefined;
}

const readOnlyOf = (plan: AttachPlan): boolean => (plan.flags & LO_FLAGS.READ_ONLY) !== 0;

/**
 * The image's bound devices (matched by device and inode, as find() does), judged against
 * the plan. Of several devices with the same settings, `prefer` picks (e.g. a mounted one).
 */
export function* sharingOf(plan: AttachPlan, stats: ImageStats, prefer?: (info: LoopInfo) => Flow<boolean>): Flow<Sharing> {
  const bound = (yield* listFlow()).filter((info) => info.backingDevice === stats.dev && info.backingInode === stats.ino);
  const offset = Number(plan.offset);
  const sizeLimit = Number(plan.sizeLimit);
  const end = (start: number, limit: number): number => (limit > 0 ? start + limit : Math.max(start + 1, stats.size));
  const wantedEnd = end(offset, sizeLimit);
  const matches = bound.filter(
    (info) =>
      info.offset === offset &&
      info.sizeLimit === sizeLimit &&
      info.readOnly === readOnlyOf(plan) &&
      (plan.sectorSize === 0 || info.sectorSize === plan.sectorSize),
  );
  let same = matches[0];
  if (prefer !== undefined && matches.length > 1) {
    for (const info of matches) {
      if (yield* prefer(info)) {
        same = info;
        break;
      }
    }
  }
  const clash = bound.find((info) => !matches.includes(info) && info.offset < wantedEnd && offset < end(info.offset, info.sizeLimit));
  return { same, clash };
}

/** How `info` differs from the plan, in a user's words. */
export function differences(plan: AttachPlan, info: LoopInfo): string {
  const said: string[] = [];
  if (info.offset !== Number(plan.offset) || info.sizeLimit !== Number(plan.sizeLimit)) {
    said.push(`offset ${info.offset} and size limit ${info.sizeLimit} there, ${plan.offset} and ${plan.sizeLimit} asked`);
  }
  if (info.readOnly !== readOnlyOf(plan)) said.push(info.readOnly ? 'it is read-only, read-write was asked' : 'it is writable, read-only was asked');
  if (plan.sectorSize !== 0 && info.sectorSize !== plan.sectorSize) said.push(`sector size ${info.sectorSize} there, ${plan.sectorSize} asked`);
  return said.join('; ');
}
