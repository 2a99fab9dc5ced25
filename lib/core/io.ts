// File-system steps: the node:fs calls flows make (sysfs, /proc, the image's first sectors, mount
// points) as Steps, like the addon's. The sync driver runs the *Sync function on the calling
// thread, the async driver the callback/promise form on libuv's pool, so an async operation never
// blocks the event loop on a file (an image on a hung NFS server stalls its call, not the process).
// Failures are LoopErrors with Node's code, errno, syscall and path, as the addon's are.
import * as fs from 'node:fs';
import { promisify } from 'node:util';

import type { Step } from './addon';
import { fromNodeError } from './errors';
import { call, type Flow } from './flow';

function step<Args extends unknown[], Result>(sync: (...args: Args) => Result, promised: (...args: Args) => Promise<Result>): Step<Args, Result> {
  return {
    sync: (...args) => {
      try {
        return sync(...args);
      } catch (error) {
        throw fromNodeError(error);
      }
    },
    async: (...args) =>
      promised(...args).catch((error: unknown) => {
        throw fromNodeError(error);
      }),
  };
}

const readAsync = promisify(fs.read);
const fstatAsync = promisify(fs.fstat);

/** The file's text (latin1: sysfs and /proc are bytes, not UTF-8). */
export const readText = step(
  (path: string) => fs.readFileSync(path, 'latin1'),
  (path: string) => fs.promises.readFile(path, 'latin1'),
);
/** Whether the path exists (access F_OK); never throws. */
export const exists = step(
  (path: string) => fs.existsSync(path),
  (path: string) => fs.promises.access(path).then(() => true, () => false),
);
export const stat = step(
  (path: string) => fs.statSync(path),
  (path: string) => fs.promises.stat(path),
);
export const fstat = step(
  (fd: number) => fs.fstatSync(fd),
  (fd: number) => fstatAsync(fd),
);
/** stat and fstat with bigint fields: inodes and device numbers past 2^53 (overlayfs with xino) arrive exact. */
export const statExact = step(
  (path: string) => fs.statSync(path, { bigint: true }),
  (path: string) => fs.promises.stat(path, { bigint: true }),
);
export const fstatExact = step(
  (fd: number) => fs.fstatSync(fd, { bigint: true }),
  (fd: number) => new Promise<fs.BigIntStats>((resolve, reject) => fs.fstat(fd, { bigint: true }, (error, stats) => (error ? reject(error) : resolve(stats)))),
);
/** Fills `buffer` from byte `position` of the fd; answers the bytes read (fewer only at the end). */
export const readAt = step(
  (fd: number, buffer: Buffer, position: number) => fs.readSync(fd, buffer, 0, buffer.length, position),
  (fd: number, buffer: Buffer, position: number) => readAsync(fd, buffer, 0, buffer.length, position).then((done) => done.bytesRead),
);
export const readdir = step(
  (path: string) => fs.readdirSync(path),
  (path: string) => fs.promises.readdir(path),
);
/** Whether the path opens for reading (closed at once): false, whatever the reason, when it does not. */
export const opens = step(
  (path: string) => {
    try {
      fs.closeSync(fs.openSync(path, 'r'));
      return true;
    } catch {
      return false;
    }
  },
  (path: string) => fs.promises.open(path, 'r').then((handle) => handle.close().then(() => true), () => false),
);
/** lstat with bigint fields (rdev exact); the link itself, never what it points at. */
export const lstatExact = step(
  (path: string) => fs.lstatSync(path, { bigint: true }),
  (path: string) => fs.promises.lstat(path, { bigint: true }),
);
export const rename = step(
  (from: string, to: string) => fs.renameSync(from, to),
  (from: string, to: string) => fs.promises.rename(from, to),
);
export const unlink = step(
  (path: string) => fs.unlinkSync(path),
  (path: string) => fs.promises.unlink(path),
);
export const readlink = step(
  (path: string) => fs.readlinkSync(path),
  (path: string) => fs.promises.readlink(path),
);
export const realpath = step(
  (path: string) => fs.realpathSync(path),
  (path: string) => fs.promises.realpath(path),
);
/** mkdir -p; answers the first directory it created, if any. */
export const mkdirs = step(
  (path: string) => fs.mkdirSync(path, { recursive: true }),
  (path: string) => fs.promises.mkdir(path, { recursive: true }),
);
export const rmdir = step(
  (path: string) => fs.rmdirSync(path),
  (path: string) => fs.promises.rmdir(path),
);

/**
 * Fills `buffer` from the absolute byte `position` and returns how many bytes were read
 * (fewer than `buffer.length` only at the end of the data).
 */
export type ReadAt = (buffer: Buffer, position: number) => number;

/** A read the parse asked for that is not in memory yet. */
class Unread {
  constructor(
    readonly key: string,
    readonly position: number,
    readonly length: number,
  ) {}
}

/**
 * Runs `parse`, a pure parser that reads through a synchronous ReadAt (the partition table and
 * filesystem superblock readers), over bytes read with io.readAt steps: a read not in memory
 * yet stops the parse, is made as a step (off the main thread in the async form), and the parse
 * runs again from the start. A parse reads a handful of sectors, so the few runs cost
 * microseconds where one blocking read on the main thread can cost the process seconds.
 * Reads are of the fd from byte `start`, and end at `length` bytes past it.
 */
export function* parseReads<T>(fd: number, parse: (read: ReadAt) => T, start = 0, length = Number.POSITIVE_INFINITY): Flow<T> {
  const done = new Map<string, Buffer>();
  const read: ReadAt = (buffer, position) => {
    const key = `${position}:${buffer.length}`;
    const data = done.get(key);
    if (data === undefined) throw new Unread(key, position, buffer.length);
    return data.copy(buffer);
  };
  for (;;) {
    let missing: Unread;
    try {
      return parse(read);
    } catch (thrown) {
      if (!(thrown instanceof Unread)) throw thrown;
      missing = thrown;
    }
    const count = Math.max(0, Math.min(missing.length, length - missing.position));
    const buffer = Buffer.alloc(count);
    const bytes = count === 0 ? 0 : yield* call(readAt, fd, buffer, start + missing.position);
    done.set(missing.key, buffer.subarray(0, bytes));
  }
}
