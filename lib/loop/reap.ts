// reap(): finds loop devices that nobody will ever release (their owner died, their backing
// file is gone) and releases those nobody uses, never one in use. The look is free of side
// effects (sysfs, /proc: see usage.ts); the release is one addon step that leaves a device
// alone when the kernel still counts another opener (native/reap.cc).
import { resolve } from 'node:path';

import { addon } from '../core/addon';
import { LoopError } from '../core/errors';
import { call, runAsync, runSync, type Flow } from '../core/flow';
import * as io from '../core/io';
import { waitReleased } from './detach';
import { listFlow, type LoopInfo } from './inspect';
import { loopMounts } from './mountinfo';
import { checkKeys, checkPath, DEFAULT_DETACH_WAIT_MS, describe, invalid, optionalBoolean, optionsObject } from './options';
import { ownerState, ownTag, parseOwnerTag, type OwnerTag } from './owner';
import { devNumbersOfAll, openersOf, useOf } from './usage';

export interface ReapOptions {
  /** look and report, release nothing */
  dryRun?: boolean;
  /** only devices whose backing file lies under this directory (as sysfs names it) */
  backingDirectory?: string;
  /** only devices whose label starts with this text */
  labelPrefix?: string;
  /** also devices without an owner tag whose backing file was deleted (default true); never an in-memory copy */
  deleted?: boolean;
}

/** Why a device counts as leaked. */
export type ReapReason = 'owner-gone' | 'backing-deleted';

/**
 * Why a leaked device was not released: 'dry-run'; in use ('mounted', 'holders', 'open',
 * 'locked': someone holds a BSD lock on it, 'opened': the kernel counted another opener at
 * the release, which was undone); 'changed': it was released or bound anew between the look
 * and the release; 'pending': the kernel releases it at the close of an opener it did not
 * count; 'autoclear': as 'opened', but the kernel's AUTOCLEAR could not be cleared again, so
 * it goes at its last close; 'failed': the release failed (keptDetail says how).
 */
export type KeptBecause = 'dry-run' | 'mounted' | 'holders' | 'open' | 'locked' | 'opened' | 'changed' | 'pending' | 'autoclear' | 'failed';

/** One device reap() found leaked, and what it did with it. */
export interface ReapEntry {
  path: string;
  number: number;
  /** as sysfs names it, e.g. "/tmp/ci/a.img (deleted)" */
  backingFile: string;
  label: string;
  reason: ReapReason;
  /** the reason in words: "pid 4242 is gone", "pid 17 is now another process (...)" */
  detail: string;
  /** unbound by this call, as sysfs says; false in a dry run */
  released: boolean;
  /** why it was not released (absent when it was) */
  kept?: KeptBecause;
  /** what kept it, in words: "mounted on /mnt", "open in pid 812" */
  keptDetail?: string;
}

interface ReapPlan {
  dryRun: boolean;
  /** a real path, with a trailing slash; '' for any */
  backingDirectory: string;
  labelPrefix: string;
  deleted: boolean;
}

const REAP_OPTIONS = new Set(['dryRun', 'backingDirectory', 'labelPrefix', 'deleted']);
const DELETED = ' (deleted)';

function planReap(rawOptions: unknown): ReapPlan {
  const options = optionsObject(rawOptions);
  checkKeys(options, REAP_OPTIONS, 'reap');
  let backingDirectory = '';
  if (options.backingDirectory !== undefined) {
    const asked = resolve(checkPath(options.backingDirectory, `option 'backingDirectory'`));
    backingDirectory = asked;
  }
  const prefix = options.labelPrefix;
  if (prefix !== undefined && (typeof prefix !== 'string' || prefix === '')) invalid(`option 'labelPrefix' must be a non-empty string, got ${describe(prefix)}`);
  return {
    dryRun: optionalBoolean(options, 'dryRun') ?? false,
    backingDirectory,
    labelPrefix: (prefix as string | undefined) ?? '',
    deleted: optionalBoolean(options, 'deleted') ?? true,
  };
}

/** The backing file's path without the " (deleted)" the kernel appends once it is unlinked. */
const backingPathOf = (info: LoopInfo): string => (info.backingFile.endsWith(DELETED) ? info.backingFile.slice(0, -DELETED.length) : info.backingFile);

function selected(info: LoopInfo, plan: ReapPlan): boolean {
  if (plan.labelPrefix !== '' && !info.label.startsWith(plan.labelPrefix)) return false;
  return plan.backingDirectory === '' || backingPathOf(info).startsWith(plan.backingDirectory);
}

/** Why the device is leaked, or undefined when it is not (a live or unknown owner, no reason). */
function* leak(info: LoopInfo, plan: ReapPlan, self: OwnerTag): Flow<{ reason: ReapReason; detail: string } | undefined> {
  const tag = parseOwnerTag(info.label);
  if (tag !== undefined) {
    // A tagged device is its owner's: alive (or not to be judged from here), it is in use.
    const owner = yield* ownerState(tag, self);
    return owner.state === 'gone' ? { reason: 'owner-gone', detail: owner.detail } : undefined;
  }
  // A memfd always reads "(deleted)": an in-memory copy is attached on purpose.
  if (plan.deleted && info.backingFile.endsWith(DELETED) && !info.backingFile.startsWith('/memfd:')) {
    return { reason: 'backing-deleted', detail: `${backingPathOf(info)} was deleted` };
  }
  return undefined;
}

/** The release of one device found unused; a failure is reported in the entry, and the others still go. */
function* release(info: LoopInfo): Flow<Pick<ReapEntry, 'released' | 'kept' | 'keptDetail'>> {
  let outcome;
  try {
    outcome = yield* call(addon.reap, info.number, undefined, -1, true, info.diskseq, info.backingDevice, info.backingInode);
  } catch (error) {
    if (!(error instanceof LoopError)) throw error;
    if (error.code === 'ERR_LOOP_REUSED' || error.code === 'ERR_LOOP_NOT_ATTACHED') return { released: false, kept: 'changed', keptDetail: error.message };
    return { released: false, kept: 'failed', keptDetail: error.message };
  }
  switch (outcome) {
    case 'released':
      return { released: true };
    case 'pending':
      if (yield* waitReleased(info.number, info.diskseq, info.partscan, DEFAULT_DETACH_WAIT_MS)) return { released: true };
      return { released: false, kept: 'pending', keptDetail: 'cleared; the kernel releases it at the close of an opener it had not counted yet' };
    case 'locked':
      return { released: false, kept: 'locked', keptDetail: 'another process holds a lock on it (udev, systemd, a tool configuring it)' };
    case 'opened':
      return { released: false, kept: 'opened', keptDetail: 'another process opened it; left as it was' };
    case 'autoclear':
      return { released: false, kept: 'autoclear', keptDetail: 'another process opened it; the kernel releases it at the last close' };
  }
}

/** reap() over the devices `only` accepts too (the testing fixture: its own images' leftovers). */
export function* reapFlow(rawOptions: unknown, only?: (info: LoopInfo) => boolean): Flow<ReapEntry[]> {
  const plan = planReap(rawOptions);
  if (plan.backingDirectory !== '') {
    // sysfs names the backing file by its real path; a directory that is gone is taken as written.
    let real = plan.backingDirectory;
    try {
      real = yield* call(io.realpath, real);
    } catch {
      // compared as given
    }
    plan.backingDirectory = real.endsWith('/') ? real : `${real}/`;
  }
  const self = yield* ownTag();
  const found: { info: LoopInfo; reason: ReapReason; detail: string }[] = [];
  for (const info of yield* listFlow()) {
    if (!selected(info, plan) || (only !== undefined && !only(info))) continue;
    const why = yield* leak(info, plan, self);
    if (why !== undefined) found.push({ info, ...why });
  }
  if (found.length === 0) return [];
  const mounts = yield* loopMounts();
  const openers = yield* openersOf(yield* devNumbersOfAll(found.map(({ info }) => info)));
  const entries: ReapEntry[] = [];
  for (const { info, reason, detail } of found) {
    const entry: ReapEntry = { path: info.path, number: info.number, backingFile: info.backingFile, label: info.label, reason, detail, released: false };
    const use = yield* useOf(info, mounts, openers);
    if (use !== undefined) Object.assign(entry, { kept: use.kind, keptDetail: use.detail });
    else if (plan.dryRun) entry.kept = 'dry-run';
    else Object.assign(entry, yield* release(info));
    entries.push(entry);
  }
  return entries;
}

/**
 * Releases leaked loop devices: those whose owner tag (attach's `owner`) names a process that
 * is gone, and, unless `deleted: false`, untagged ones whose backing file was deleted. A
 * device that is mounted, held or open, or that changed since the look, is reported and left
 * alone. Resolves to one entry per leaked device found (see {@link ReapEntry}).
 */
export const reap = (options?: ReapOptions): Promise<ReapEntry[]> => runAsync(reapFlow(options));
/** Sync form of {@link reap}. */
export const reapSync = (options?: ReapOptions): ReapEntry[] => runSync(reapFlow(options));
