// mount() of an image someone (loopdev, losetup, mount(8)) already attached with the same
// settings: that device is mounted again, as mount(8) does (one device, one superblock), and a
// device over an overlapping range with other settings is refused (see loop/sharing.ts).
import { fail, LoopError } from '../core/errors';
import { type Flow } from '../core/flow';
import { LoopDevice } from '../loop/handle';
import { listStep, type LoopInfo } from '../loop/inspect';
import { loopMounts, pointsOf, readMountInfo, type LoopMount } from '../loop/mountinfo';
import { ensureDeviceNode, ensurePartitionNodes } from '../loop/nodes';
import { differences, imageStats, sharingOf } from '../loop/sharing';
import { mountedAtText } from './hints';
import { Mounted, type MountedImage } from './mounted';
import type { MountPoint } from './mount-point';
import type { MountPlan } from './plan';
import { mountSourceFlow, sourceOf } from './source';

/** How often mount() looks again when a device it meant to reuse went away meanwhile. */
const REUSE_ATTEMPTS = 3;

/** Mounts the device already bound to the image with the plan's settings, if there is one; undefined when there is none. */
export function* mountReused(plan: MountPlan, point: MountPoint): Flow<MountedImage | undefined> {
  for (let attempt = 1; ; attempt++) {
    const existing = yield* reusableDevice(plan);
    if (existing === undefined) return undefined;
    const mounted = yield* mountExisting(plan, point, existing);
    if (mounted !== undefined) return mounted;
    // The device was released between the look and our open: look again.
    if (attempt === REUSE_ATTEMPTS) {
      fail('ERR_LOOP_BUSY', `${existing.path}, bound to the image, went away ${REUSE_ATTEMPTS} times while it was being mounted`, { path: existing.path, attempts: attempt });
    }
  }
}

/**
 * A device already bound to the image with the plan's settings, to mount again as mount(8)
 * does (one device, one superblock); a mounted one is preferred. A device over an overlapping
 * range with other settings is refused: two devices on the same bytes are two filesystems
 * that overwrite each other.
 */
function* reusableDevice(plan: MountPlan): Flow<LoopInfo | undefined> {
  const mounts = yield* readMountInfo();
  // Which loop device each mount comes from is asked of sysfs only when the image has a device.
  let known: LoopMount[] | undefined;
  const mountedAt = function* (number: number): Flow<string[]> {
    known ??= yield* loopMounts(mounts);
    return pointsOf(number, known);
  };
  const image = plan.attachPlan;
  const { same, clash } = yield* sharingOf(image, yield* imageStats(image), function* (info) {
    return (yield* mountedAt(info.number)).length > 0;
  });
  if (clash !== undefined) {
    fail(
      'ERR_LOOP_OVERLAP',
      `${image.backingPath || 'the image'} is already attached as ${clash.path}${mountedAtText(yield* mountedAt(clash.number))} ` +
        `with other settings (${differences(image, clash)}); a second device over the same bytes would be a second, ` +
        'independent filesystem: unmount and detach it first, or mount with its settings',
      { path: clash.path, device: clash.number },
    );
  }
  if (same !== undefined && plan.partition !== null && !same.partitions.some((part) => part.number === plan.partition)) {
    if (same.partscan) yield* sourceOf(same, plan.partition); // ERR_LOOP_NO_PARTITION, listing what it has
    fail(
      'ERR_LOOP_OVERLAP',
      `${image.backingPath || 'the image'} is already attached as ${same.path}${mountedAtText(yield* mountedAt(same.number))} ` +
        `without partitions; mounting partition ${plan.partition} from a second device would put two filesystems over its bytes: ` +
        'detach it first, or attach it with partscan',
      { path: same.path, device: same.number },
    );
  }
  return same;
}


/**
 * Mounts a device someone (loopdev, losetup, mount(8)) already bound to the image. Its node
 * is opened first and the binding checked again through sysfs and ioctls: an AUTOCLEAR device
 * whose last holder let go after the look is gone or bound to something else by now, and our
 * open keeps one that is not from going (libmount does the same). Answers undefined when it
 * is gone. The handle attached nothing and never detaches: the device's own autoclear, or
 * whoever attached it, decides when it goes.
 */
function* mountExisting(plan: MountPlan, point: MountPoint, existing: LoopInfo): Flow<MountedImage | undefined> {
  const source = yield* sourceOf(existing, plan.partition);
  const stillSame = function* (): Flow<void> {
    const [now] = yield* listStep(existing.number);
    const same =
      now !== undefined &&
      now.backingDevice === existing.backingDevice &&
      now.backingInode === existing.backingInode &&
      now.offset === existing.offset &&
      now.sizeLimit === existing.sizeLimit &&
      (existing.diskseq === 0 || now.diskseq === existing.diskseq);
    if (!same) throw GONE;
  };
  // A container's /dev may lack the nodes of a device someone else attached.
  yield* ensureDeviceNode(existing.number);
  if (plan.partition !== null) yield* ensurePartitionNodes(existing.number, [plan.partition]);
  let fstype: string;
  try {
    fstype = yield* mountSourceFlow(
      { ...plan, source, deviceNumber: existing.number, target: point.real, fstype: plan.fstype, alreadyMountedAt: pointsOf(existing.number, yield* loopMounts()) },
      stillSame,
    );
  } catch (error) {
    // ENXIO from open: the device is being torn down (Lo_rundown).
    if (error === GONE || (error instanceof LoopError && error.syscall === 'open' && error.code === 'ENXIO')) return undefined;
    throw error;
  }
  const device = new LoopDevice({
    number: existing.number,
    path: existing.path,
    diskseq: existing.diskseq,
    backingDevice: existing.backingDevice,
    backingInode: existing.backingInode,
    fd: -1,
    partitions: [],
    released: true,
    partscan: existing.partscan,
    setupIoctl: null,
  });
  return new Mounted(point.real, device, source, plan.partition === null ? null : source, fstype, true);
}

const GONE = Symbol('the device to reuse went away');
