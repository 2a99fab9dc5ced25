// Who uses a loop device, asked without opening it (an open would itself be a use, and a
// writer's close makes udev probe the device again). Each look sees only part of the truth:
//  - mounts: this process's mount namespace only (/proc/self/mountinfo); a mount in a
//    container's namespace is not there;
//  - holders: what the kernel stacked on the device or a partition (device-mapper, md), from
//    sysfs;
//  - open fds: processes of this pid namespace whose fds this process may read (root: all),
//    through nodes under /dev; not the kernel's own openers (mounts, swap, nbd), nor other
//    pid namespaces, nor a node made elsewhere.
// What none of them sees, the kernel does: the reap step's LOOP_CLR_FD counts every opener
// (native/reap.cc), and a BSD lock (udev, systemd) makes it leave the device alone.
import { call, type Flow } from '../core/flow';
import * as io from '../core/io';
import { splitDev } from './dev-number';
import type { LoopInfo } from './inspect';
import { pointsOf, type LoopMount } from './mountinfo';
import { readDevNumbers, sysBlock } from './sysfs';

/** Why a device counts as in use, and in words by whom. */
export interface Use {
  kind: 'mounted' | 'holders' | 'open';
  detail: string;
}

/** major:minor of the device and of each of its partitions. */
function* devNumbersOf(info: LoopInfo): Flow<string[]> {
  const numbers = [`${info.major}:${info.minor}`];
  for (const part of info.partitions) {
    const dev = yield* readDevNumbers(`${sysBlock(info.number)}/loop${info.number}p${part.number}`);
    if (dev !== undefined) numbers.push(`${dev.major}:${dev.minor}`);
  }
  return numbers;
}

function* entries(path: string): Flow<string[]> {
  try {
    return yield* call(io.readdir, path);
  } catch {
    return [];
  }
}

/** What the kernel stacked on the device or one of its partitions (dm-0, md127...). */
function* holdersOf(info: LoopInfo): Flow<string[]> {
  const holders = yield* entries(`${sysBlock(info.number)}/holders`);
  for (const part of info.partitions) holders.push(...(yield* entries(`${sysBlock(info.number)}/loop${info.number}p${part.number}/holders`)));
  return holders;
}

/**
 * The pids with an fd open on any of `wanted` (major:minor), by major:minor: one pass over
 * /proc/PID/fd, and a stat only of links to nodes under /dev (a stat of the node opens nothing).
 */
export function* openersOf(wanted: ReadonlySet<string>): Flow<Map<string, number[]>> {
  const found = new Map<string, number[]>();
  if (wanted.size === 0) return found;
  for (const name of yield* entries('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    for (const fd of yield* entries(`/proc/${name}/fd`)) {
      try {
        const target = yield* call(io.readlink, `/proc/${name}/fd/${fd}`);
        if (!target.startsWith('/dev/')) continue;
        const stats = yield* call(io.stat, `/proc/${name}/fd/${fd}`);
        if (!stats.isBlockDevice()) continue;
        const { major, minor } = splitDev(stats.rdev);
        const key = `${major}:${minor}`;
        if (!wanted.has(key)) continue;
        const pids = found.get(key) ?? [];
        if (!pids.includes(Number(name))) pids.push(Number(name));
        found.set(key, pids);
      } catch {
        // The fd or the process went away meanwhile.
      }
    }
  }
  return found;
}

/** The devices' major:minor numbers, partitions included, for openersOf(). */
export function* devNumbersOfAll(infos: readonly LoopInfo[]): Flow<Set<string>> {
  const numbers = new Set<string>();
  for (const info of infos) for (const number of yield* devNumbersOf(info)) numbers.add(number);
  return numbers;
}

/**
 * The first use found of a device: mounted (in this mount namespace, among `mounts`), holders,
 * or open fds (`openers`, from openersOf()); undefined when none of them sees one.
 */
export function* useOf(info: LoopInfo, mounts: readonly LoopMount[], openers: ReadonlyMap<string, number[]>): Flow<Use | undefined> {
  const mountPoints = pointsOf(info.number, mounts);
  if (mountPoints.length > 0) return { kind: 'mounted', detail: `mounted on ${mountPoints.join(', ')}` };
  const holders = yield* holdersOf(info);
  if (holders.length > 0) return { kind: 'holders', detail: `held by ${holders.join(', ')}` };
  const pids = (yield* devNumbersOf(info)).flatMap((key) => openers.get(key) ?? []);
  if (pids.length > 0) return { kind: 'open', detail: `open in pid ${[...new Set(pids)].join(', ')}` };
  return undefined;
}
