// The owner tag: which process attached a device, written into its label (lo_file_name) so
// that reap() can tell, after that process died (even by SIGKILL), that the device is nobody's.
//
//   loopdev:<boot>:<pidns>:<pid>:<start>
//
// boot: the first 8 hex digits of /proc/sys/kernel/random/boot_id; pidns: the inode of the
// process's pid namespace (hex), since a pid means something only in its namespace (a pod's
// pid 7 is not the host's); pid; start: the process's start time (/proc/PID/stat field 22,
// clock ticks since boot), which tells a reused pid from the owner. The tag ends the label;
// a label of the caller's own comes first, one space before it. (A reaper in another time
// namespace than the owner reads other start times, and would take the owner for gone;
// containers rarely have one, and the device must still be unused to be released.)
import { fail } from '../core/errors';
import { call, runSync, type Flow } from '../core/flow';
import * as io from '../core/io';

/** What a tag says about the process that attached a device. */
export interface OwnerTag {
  /** the first 8 hex digits of the boot id */
  boot: string;
  /** the inode of the owner's pid namespace */
  pidNamespace: number;
  pid: number;
  /** clock ticks since boot (/proc/PID/stat field 22) */
  startTime: number;
}

/** Whether a tag's owner is still there, and in words why (or why that cannot be told). */
export type OwnerState = { state: 'alive' | 'gone' | 'unknown'; detail: string };

const LABEL_BYTES = 63;
// The kernel's PROC_PID_INIT_INO: the initial pid namespace, from which every process is visible.
const INITIAL_PID_NAMESPACE = 0xeffffffc;
const TAG = /(?:^| )loopdev:([0-9a-f]{8}):([0-9a-f]{1,16}):(\d{1,10}):(\d{1,20})$/;

let own: { pid: number; tag: OwnerTag } | undefined;

/** This process's tag (read once per process: none of its parts changes while it runs). */
export function* ownTag(): Flow<OwnerTag> {
  if (own?.pid !== process.pid) {
    const boot = (yield* call(io.readText, '/proc/sys/kernel/random/boot_id')).replace(/-/g, '').slice(0, 8);
    const pidNamespace = yield* namespaceOf('self');
    const startTime = (yield* statOf('self'))?.startTime;
    if (pidNamespace === undefined || startTime === undefined) throw new Error('loopdev: /proc/self does not say which process this is');
    own = { pid: process.pid, tag: { boot, pidNamespace, pid: process.pid, startTime } };
  }
  return own.tag;
}

/** A tag as the label carries it. */
export function formatTag(tag: OwnerTag): string {
  return `loopdev:${tag.boot}:${tag.pidNamespace.toString(16)}:${tag.pid}:${tag.startTime}`;
}

/**
 * The owner tag of this process, as `attach({ owner: true })` writes it into the label. The
 * hook for anything that attaches on a process's behalf and wants reap() to find the device
 * once the process is gone (detachOnExit, the testing fixture).
 */
export function ownerTag(): string {
  return formatTag(runSync(ownTag()));
}

/**
 * The label of a device attached with `owner`: the caller's label (if any), a space, the tag.
 * When both do not fit in lo_file_name's 63 bytes, refused (`required`) or the label alone: a
 * label is never cut.
 */
export function* labelWithOwner(label: string, required = true): Flow<string> {
  const tag = formatTag(yield* ownTag());
  const combined = label === '' ? tag : `${label} ${tag}`;
  if (Buffer.byteLength(combined) > LABEL_BYTES) {
    if (!required) return label;
    const room = LABEL_BYTES - Buffer.byteLength(tag) - 1;
    fail('ERR_LOOP_INVALID_OPTION', `option 'label' leaves no room for the owner tag (${Buffer.byteLength(tag)} bytes): with 'owner' it may have at most ${room} bytes`);
  }
  return combined;
}

/** The tag at the end of a label, or undefined when it carries none. */
export function parseOwnerTag(label: string): OwnerTag | undefined {
  const match = TAG.exec(label);
  if (match === null) return undefined;
  return { boot: match[1]!, pidNamespace: parseInt(match[2]!, 16), pid: Number(match[3]), startTime: Number(match[4]) };
}

function* readProc(path: string): Flow<string | undefined> {
  try {
    return yield* call(io.readText, path);
  } catch {
    return undefined;
  }
}

/** The inode of a process's pid namespace, or undefined if it cannot be read (gone, or not ours to see). */
function* namespaceOf(pid: number | 'self'): Flow<number | undefined> {
  try {
    const match = /^pid:\[(\d+)\]$/.exec(yield* call(io.readlink, `/proc/${pid}/ns/pid`));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** A process's start time and whether it is a zombie (it has exited: its fds are closed), or undefined if there is no such process. */
function* statOf(pid: number | 'self'): Flow<{ startTime: number; exited: boolean } | undefined> {
  const text = yield* readProc(`/proc/${pid}/stat`);
  if (text === undefined) return undefined;
  // The command name (field 2) may hold spaces and parentheses: the fields after it are counted from its last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { startTime: Number(fields[19]), exited: fields[0] === 'Z' || fields[0] === 'X' };
}

/** The owner judged by a process this reaper sees as `pid` (in its own pid namespace). */
function* judge(tag: OwnerTag, pid: number): Flow<OwnerState> {
  const stat = yield* statOf(pid);
  if (stat === undefined) return { state: 'gone', detail: `pid ${tag.pid} is gone` };
  if (stat.startTime !== tag.startTime) return { state: 'gone', detail: `pid ${tag.pid} is now another process (started at tick ${stat.startTime}, the owner at ${tag.startTime})` };
  if (stat.exited) return { state: 'gone', detail: `pid ${tag.pid} has exited` };
  return { state: 'alive', detail: `pid ${tag.pid} is running` };
}

/**
 * Whether the owner a tag names is still running. A tag of another pid namespace is judged
 * only from the initial one, which sees every process: there the owner is the process whose
 * namespace is the tag's and whose innermost pid (NSpid) is the tag's pid.
 */
export function* ownerState(tag: OwnerTag, self?: OwnerTag): Flow<OwnerState> {
  self ??= yield* ownTag();
  if (tag.boot !== self.boot) return { state: 'gone', detail: `attached in another boot (${tag.boot})` };
  if (tag.pidNamespace === self.pidNamespace) return yield* judge(tag, tag.pid);
  if (self.pidNamespace !== INITIAL_PID_NAMESPACE) {
    return { state: 'unknown', detail: `attached in another pid namespace (${tag.pidNamespace.toString(16)}), which this process cannot see into` };
  }
  let names: string[];
  try {
    names = yield* call(io.readdir, '/proc');
  } catch {
    return { state: 'unknown', detail: 'cannot read /proc' };
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    // NSpid: the process's pid in each namespace from ours inward; one entry, and it lives in
    // ours (the initial one), so it is not the owner, whatever else may be unreadable.
    const nspid = /^NSpid:\s*(.*)$/m.exec((yield* readProc(`/proc/${name}/status`)) ?? '')?.[1]?.trim().split(/\s+/);
    if (nspid === undefined || nspid.length === 1) continue;
    const namespace = yield* namespaceOf(Number(name));
    if (namespace === undefined) {
      // Gone since readdir, or not ours to see (ptrace rules): in the second case it could be the owner.
      if ((yield* readProc(`/proc/${name}/stat`)) !== undefined) return { state: 'unknown', detail: `cannot read the pid namespace of pid ${name}` };
      continue;
    }
    if (namespace === tag.pidNamespace && Number(nspid.at(-1)) === tag.pid) return yield* judge(tag, Number(name));
  }
  return { state: 'gone', detail: `no process of pid namespace ${tag.pidNamespace.toString(16)} has pid ${tag.pid}` };
}
