// waitForUdev(): for callers whose next step uses udev's work on a device (its /dev/disk/by-*
// links: mount by UUID or label). udev processes a device some time after the kernel announced
// it; where systemd-udevd does not run (minimal VMs, most containers) there is nothing to wait
// for. The test that udev is done with this binding, not an earlier one of the same number:
// its /dev/disk/by-diskseq/N link (systemd 250+) for the current diskseq, then udev's database
// entry of each partition. Kernels before 5.15 have no diskseq: there it waits for udev's queue
// to drain, as udevadm settle does.
import { resolve } from 'node:path';

import { fail } from '../core/errors';
import { call, checkAborted, runAsync, runSync, type Flow } from '../core/flow';
import { poll } from '../core/retry';
import * as io from '../core/io';
import { resolveNumber } from './inspect';
import { optionsObject, invalid, type DeviceRef } from './options';
import { devicePath, isBound, partitionPath, partitionsOf, readAttribute, sysBlock } from './sysfs';

export interface UdevOptions {
  /** how long to wait (ms, default 10000) */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface UdevState {
  /** false when udev does not run here (nothing was waited for) */
  udev: boolean;
  /** the /dev/disk/by-* links udev made for the device and its partitions, sorted */
  links: string[];
}

const DEFAULT_TIMEOUT_MS = 10_000;
const UDEV_CONTROL = '/run/udev/control';
const BY_DISKSEQ = '/dev/disk/by-diskseq';
const UDEV_DATA = '/run/udev/data';
const UDEV_QUEUE = '/run/udev/queue';

/**
 * Waits until udev has processed loop device `device` as it is bound now, and its partitions:
 * resolves at once where udev does not run. ERR_LOOP_NOT_ATTACHED if it is not bound,
 * ERR_LOOP_BUSY when udev has not caught up within `timeoutMs`.
 */
export const waitForUdev = (device: DeviceRef, options?: UdevOptions): Promise<UdevState> => runAsync(udevFlow(device, options));
/** Sync form of {@link waitForUdev}. */
export const waitForUdevSync = (device: DeviceRef, options?: UdevOptions): UdevState => runSync(udevFlow(device, options));

function* udevFlow(device: DeviceRef, rawOptions: unknown): Flow<UdevState> {
  const options = optionsObject(rawOptions);
  for (const key of Object.keys(options)) if (key !== 'timeoutMs' && key !== 'signal') invalid(`unknown waitForUdev option '${key}' (known: timeoutMs, signal)`);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0) invalid(`option 'timeoutMs' must be a number of milliseconds, got ${String(timeoutMs)}`);
  const signal = options.signal as AbortSignal | undefined;
  const number = yield* resolveNumber(device);
  yield* checkBound(number);
  if (!(yield* call(io.exists, UDEV_CONTROL))) return { udev: false, links: [] };
  let missing: string[] = [];
  const done = yield* poll(timeoutMs, signal, function* () {
    checkAborted(signal);
    missing = yield* pending(number);
    return missing.length === 0 ? true : undefined;
  });
  if (done === undefined) {
    fail('ERR_LOOP_BUSY', `udev has not processed ${devicePath(number)} after ${timeoutMs} ms (waiting for ${missing.join(', ')})`, {
      path: devicePath(number),
      device: number,
    });
  }
  return { udev: true, links: yield* linksOf(number) };
}

/** ERR_LOOP_NOT_ATTACHED unless loopN is bound. */
function* checkBound(number: number): Flow<void> {
  if (!(yield* isBound(number))) fail('ERR_LOOP_NOT_ATTACHED', `${devicePath(number)} is not attached to a file`, { path: devicePath(number), device: number });
}

/**
 * What udev has yet to do for the device's current binding: its by-diskseq link (systemd
 * 250+), then a database entry for each partition (Debian 12's systemd 252 makes by-diskseq
 * links for whole disks only). udev handles a device's events in order, children after their
 * parent, so once the link names this binding's diskseq, a partition's entry is this binding's.
 */
function* pending(number: number): Flow<string[]> {
  yield* checkBound(number);
  const diskseq = yield* readAttribute(`${sysBlock(number)}/diskseq`);
  const entry = function* (sysPath: string): Flow<string> {
    return `${UDEV_DATA}/b${(yield* readAttribute(`${sysPath}/dev`)) ?? '?'}`;
  };
  const missing: string[] = [];
  if (diskseq === undefined) {
    // Before 5.15 there is no diskseq, and nothing udev makes names a binding: an earlier
    // binding of the same number left the device's database entry. What is left is udev's own
    // sign that it has work (the file its queue keeps while events wait, which udevadm settle
    // reads too) and the entry. An event the kernel has sent but udevd has not read yet is
    // not in that queue: a narrow window this check cannot close.
    if (yield* call(io.exists, UDEV_QUEUE)) missing.push(UDEV_QUEUE);
    const file = yield* entry(sysBlock(number));
    if (!(yield* call(io.exists, file))) missing.push(file);
  } else if ((yield* pointsAt(`${BY_DISKSEQ}/${diskseq}`)) !== devicePath(number)) {
    return [`${BY_DISKSEQ}/${diskseq}`];
  }
  for (const partition of yield* partitionsOf(number)) {
    const file = yield* entry(`${sysBlock(number)}/loop${number}p${partition}`);
    if (!(yield* call(io.exists, file))) missing.push(file);
  }
  return missing;
}

/** Where a /dev/disk symlink leads, as an absolute path, or undefined. */
function* pointsAt(link: string): Flow<string | undefined> {
  try {
    return resolve(link, '..', yield* call(io.readlink, link));
  } catch {
    return undefined;
  }
}

/** Every /dev/disk/by-* link to the device or one of its partitions. */
function* linksOf(number: number): Flow<string[]> {
  const nodes = new Set([devicePath(number), ...(yield* partitionsOf(number)).map((partition) => partitionPath(number, partition))]);
  const links: string[] = [];
  let kinds: string[] = [];
  try {
    kinds = (yield* call(io.readdir, '/dev/disk')).filter((name) => name.startsWith('by-'));
  } catch {
    return links;
  }
  for (const kind of kinds) {
    let names: string[] = [];
    try {
      names = yield* call(io.readdir, `/dev/disk/${kind}`);
    } catch {
      continue;
    }
    for (const name of names) {
      const link = `/dev/disk/${kind}/${name}`;
      const target = yield* pointsAt(link);
      if (target !== undefined && nodes.has(target)) links.push(link);
    }
  }
  return links.sort();
}
