// What integration tests need to check the kernel's state without asking the library:
// sysfs, the device's bytes, /proc/self/fd. And images under the OS temp dir.
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';

/** Whether this process can use loop devices (root and /dev/loop-control). */
export function loopAvailable(): { ok: boolean; reason: string } {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'not root' };
  if (!existsSync('/dev/loop-control')) return { ok: false, reason: 'no /dev/loop-control' };
  return { ok: true, reason: '' };
}

/**
 * Privileged tests skip only with a visible reason, and CI sets LOOPDEV_REQUIRE_PRIVILEGED=1
 * so that a skip becomes a failure: a green CI means they ran.
 */
export function privileged(): boolean {
  const { ok, reason } = loopAvailable();
  if (!ok && process.env.LOOPDEV_REQUIRE_PRIVILEGED === '1') {
    throw new Error(`privileged tests cannot run (${reason}) but LOOPDEV_REQUIRE_PRIVILEGED=1`);
  }
  if (!ok) console.warn(`skipping privileged tests: ${reason}`);
  return ok;
}

export interface TempDir {
  path: string;
  image(name: string, sizeBytes: number): string;
  remove(): void;
}

export function tempDir(prefix = 'loopdev-test-'): TempDir {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return {
    path,
    image(name, sizeBytes) {
      const file = join(path, name);
      writeFileSync(file, '');
      truncateSync(file, sizeBytes);
      return file;
    },
    remove() {
      rmSync(path, { recursive: true, force: true });
    },
  };
}

const sys = (number: number, file: string): string => `/sys/block/loop${number}/${file}`;

export function sysRead(number: number, file: string): string | undefined {
  try {
    return readFileSync(sys(number, file), 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Whether systemd-udevd runs here (its control socket exists): it then opens every device that changed. */
export const udevRuns = (): boolean => existsSync('/run/udev/control');

/**
 * The `wait` (ms) a test gives detach/close when it then checks that nothing is left: where
 * udev runs, its probe of a new device and of each partition holds the device open, and the
 * kernel unbinds it at udev's close; under emulation that took seconds. detach promises to
 * wait for the release up to `wait`.
 */
export const RELEASE_WAIT_MS = 30_000;

/** Bound according to sysfs: loop/backing_file exists. */
export const sysBound = (number: number): boolean => existsSync(sys(number, 'loop/backing_file'));

/**
 * Bound to this backing file according to sysfs. After a detach, ask this rather than
 * sysBound(): test files run in parallel, and another one may bind the freed number at once.
 */
export const sysBoundTo = (number: number, backing: string): boolean => sysRead(number, 'loop/backing_file') === backing;

/** Every loop device whose backing file (per sysfs) is `file` or lies under `dir`. */
export function devicesBackedBy(pathOrDir: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/sys/block')) {
    const match = /^loop(\d+)$/.exec(name);
    if (!match) continue;
    const backing = sysRead(Number(match[1]), 'loop/backing_file');
    if (backing !== undefined && (backing === pathOrDir || backing.startsWith(`${pathOrDir}/`))) found.push(Number(match[1]));
  }
  return found;
}

/** Reads `length` bytes of a block device (or file) at `position`. */
export function readBytes(path: string, position: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const read = readSync(fd, buffer, 0, length, position);
    return buffer.subarray(0, read);
  } finally {
    closeSync(fd);
  }
}

/** What this process's fds point at, for those that matter to a test: loop devices and files under `dir` (worker threads share them). */
export function interestingFds(dir: string): string[] {
  const targets: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (/^\/dev\/loop/.test(target) || target.startsWith(dir)) targets.push(target);
    } catch {
      // closed meanwhile
    }
  }
  return targets.sort();
}

/** The fds this process has open, as "fd -> target". */
export function openFds(): string[] {
  return readdirSync('/proc/self/fd').sort();
}

/**
 * A time limit for the test itself (not for the library): ten times `ms` in a guest without
 * KVM (`npm run vm`), where every instruction is emulated; vitest.config.mts does the same.
 */
export const testTime = (ms: number): number => (process.env.LOOPDEV_GUEST_EMULATED === '1' ? ms * 10 : ms);

/**
 * How many times a test repeats something to meet a rare interleaving: `count` on a real CPU,
 * `emulated` in a guest without KVM. There a repetition costs ten times as long, and what the
 * guest is for (its kernel's and udev's ways) shows in every repetition, not in one of thousands.
 */
export const repetitions = (count: number, emulated: number): number => (process.env.LOOPDEV_GUEST_EMULATED === '1' ? emulated : count);

/** Waits (polling) until `check` is true or `timeoutMs` passes; returns the last result. */
export async function until(check: () => boolean, timeoutMs = testTime(2000)): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * A temp dir for the enclosing suite: made before its tests, and afterwards deleted after
 * checking (in sysfs) that nothing the suite attached is still bound to an image in it.
 */
export function suiteTempDir(): TempDir {
  let dir: TempDir | undefined;
  beforeAll(() => {
    dir = tempDir();
  });
  afterAll(() => {
    if (dir === undefined) return;
    const leaked = devicesBackedBy(dir.path);
    dir.remove();
    expect(leaked).toEqual([]);
  });
  const current = (): TempDir => {
    if (dir === undefined) throw new Error('suiteTempDir() is used before its beforeAll ran');
    return dir;
  };
  return {
    get path() {
      return current().path;
    },
    image: (name, sizeBytes) => current().image(name, sizeBytes),
    remove: () => current().remove(),
  };
}

export interface MountLine {
  mountPoint: string;
  options: string[];
  fstype: string;
  source: string;
  superOptions: string[];
}

/** /proc/self/mountinfo, parsed here rather than by the library under test. */
export function mountTable(): MountLine[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const fields = line.split(' ');
      const dash = fields.indexOf('-');
      const unescape = (text: string): string => text.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
      return {
        mountPoint: unescape(fields[4]!),
        options: fields[5]!.split(','),
        fstype: fields[dash + 1]!,
        source: unescape(fields[dash + 2]!),
        superOptions: fields[dash + 3]!.split(','),
      };
    });
}

export const mountsAt = (target: string): MountLine[] => mountTable().filter((line) => line.mountPoint === target);

/** Whether any fd of this process points at the node. */
export const holdsFd = (node: string): boolean =>
  readdirSync('/proc/self/fd').some((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === node;
    } catch {
      return false;
    }
  });
