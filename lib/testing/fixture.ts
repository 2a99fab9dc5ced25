// loopdev/testing: disk images on real loop devices for integration tests. One call makes a
// sparse image (with an MBR or GPT if asked), attaches it, makes filesystems, mounts it, and
// afterwards always unmounts, detaches and deletes it, also when the test throws. What is
// still there when the thread or process ends (a forgotten dispose, a test that timed out
// inside withImage) is undone then: the directory, the device and the mount are registered
// with the addon's per-thread teardown (native/exit.h) as they are made.
// Its API is async only: files are made with fs.promises and mkfs runs with execFile, so that a
// test's event loop (its timers, a concurrent test) keeps turning meanwhile.
import { execFile } from 'node:child_process';
import { mkdir, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, delimiter, dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';

import { attach } from '../loop/attach';
import type { LoopDevice } from '../loop/handle';
import { LoopError, fail, fromNodeError, hasCode } from '../core/errors';
import { addon } from '../core/addon';
import { call, runAsync } from '../core/flow';
import { watchExit } from '../loop/exit';
import { reapFlow } from '../loop/reap';
import type { PartitionInfo } from '../loop/inspect';
import { checkFsType, planMountFlags } from '../mount/options';
import { toolDirs } from './tools';
import { prepareMountPoint, removeMountPoint, type MountPoint } from '../mount/mount-point';
import { ensurePartitionNodes } from '../loop/nodes';
import { mountSourceFlow } from '../mount/source';
import { unmountFlow } from '../mount/unmount';
import { readMountInfo } from '../loop/mountinfo';
import { planAttach, type AttachOptions } from '../loop/options';
import { gptLayout, mbrLayout, type ImageLayout, type PartitionSpec } from '../partitions/writer';
import { parseSize } from '../core/size';
import { partitionPath } from '../loop/sysfs';

export { parseSize };

/** One partition of an {@link ImageSpec}. */
export interface PartitionLayout {
  /** bytes, or text such as '64M'; may be left out on the last partition: the rest of the disk */
  size?: number | string;
  /** make this filesystem on it (default: the spec's `fstype`) */
  fstype?: string;
}

/** What image to make. */
export interface ImageSpec {
  /** bytes, or text such as '64M', '1G', '512K' (powers of 1024); a multiple of 512 */
  size: number | string;
  /** write a partition table; partitions start on 1 MiB boundaries */
  partitions?: 'mbr' | 'gpt' | undefined;
  /** the partitions (default: one filling the disk); needs `partitions` */
  layout?: PartitionLayout[];
  /**
   * Run mkfs.<fstype> (mksquashfs, mkfs.erofs for the read-only ones, from an empty directory)
   * on the whole device, or with a table on every partition whose layout names none.
   */
  fstype?: string;
  /** also mount the filesystem (of partition 1 with a table): true for a temp dir, or this path */
  mount?: boolean | string;
  /** how to attach (partscan is turned on for a partitioned image) */
  attach?: AttachOptions;
}

/** An image made by {@link withImage} or {@link createImage}. */
export interface TestImage {
  /** the image file */
  path: string;
  device: LoopDevice;
  /** the device's partitions as the kernel sees them */
  partitions: PartitionInfo[];
  /** where it is mounted (absolute), or null */
  mountPoint: string | null;
  /** the private temp directory that holds the image (and the default mount point) */
  dir: string;
}

const ALIGNMENT = 1024 * 1024;
const SECTOR = 512;
/** A GPT's backup: 32 sectors of entries and the header, at the end of the disk. */
const GPT_BACKUP_BYTES = 33 * SECTOR;
const RELEASE_WAIT_MS = 2000;

interface PlannedPartition extends PartitionSpec {
  number: number;
  fstype: string | null;
}

interface ImagePlan {
  size: number;
  table: 'mbr' | 'gpt' | null;
  partitions: PlannedPartition[];
  /** whole-device filesystem (no table) */
  fstype: string | null;
  /** null: no mount; '': a temp dir */
  mount: string | null;
  attach: AttachOptions;
}

const specKeys = new Set(['size', 'partitions', 'layout', 'fstype', 'mount', 'attach']);

function invalid(message: string): never {
  fail('ERR_LOOP_INVALID_OPTION', message);
}

function size(value: unknown, what: string): number {
  if (typeof value !== 'number' && typeof value !== 'string') invalid(`${what} must be a number of bytes or a text such as '64M'`);
  let bytes: number;
  try {
    bytes = parseSize(value);
  } catch (error) {
    invalid(`${what}: ${(error as Error).message}`);
  }
  if (bytes <= 0 || bytes % SECTOR !== 0) invalid(`${what} must be a positive multiple of ${SECTOR} bytes, got ${bytes}`);
  return bytes;
}

/** mkfs.<type> is run from PATH, so the name must not be able to name anything else. */
function mkfsType(value: unknown, what: string): string | null {
  const type = checkFsType(value, what);
  if (type !== null && !/^[a-z0-9]+$/.test(type)) invalid(`${what} must be lower-case letters and digits (mkfs.<fstype> is run), got ${JSON.stringify(type)}`);
  return type;
}

const alignUp = (value: number): number => Math.ceil(value / ALIGNMENT) * ALIGNMENT;

function planImage(spec: unknown): ImagePlan {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) fail('ERR_LOOP_INVALID_ARGUMENT', 'the image spec must be an object');
  const options = spec as Record<string, unknown>;
  for (const key of Object.keys(options)) {
    if (!specKeys.has(key)) invalid(`unknown image option '${key}' (known: ${[...specKeys].join(', ')})`);
  }
  const bytes = size(options.size, "option 'size'");
  const table = options.partitions ?? null;
  if (table !== null && table !== 'mbr' && table !== 'gpt') invalid(`option 'partitions' must be 'mbr' or 'gpt', got ${JSON.stringify(table)}`);
  const fstype = mkfsType(options.fstype, "option 'fstype'");

  const partitions: PlannedPartition[] = [];
  if (options.layout !== undefined && table === null) invalid(`option 'layout' needs a partition table: pass partitions: 'gpt' or 'mbr'`);
  if (table !== null) {
    const layout = options.layout ?? [{}];
    if (!Array.isArray(layout) || layout.length === 0) invalid(`option 'layout' must be a non-empty array`);
    const most = table === 'mbr' ? 4 : 128;
    if (layout.length > most) invalid(`an ${table.toUpperCase()} here holds at most ${most} partitions, got ${layout.length}`);
    const end = table === 'gpt' ? bytes - GPT_BACKUP_BYTES : bytes;
    let start = ALIGNMENT;
    layout.forEach((entry: unknown, index) => {
      const what = `layout[${index}]`;
      if (typeof entry !== 'object' || entry === null) invalid(`${what} must be an object`);
      const { size: given, fstype: partFstype, ...rest } = entry as PartitionLayout;
      if (Object.keys(rest).length > 0) invalid(`unknown ${what} option '${Object.keys(rest)[0]}' (known: size, fstype)`);
      const last = index === layout.length - 1;
      if (given === undefined && !last) invalid(`${what}.size may be left out only on the last partition`);
      const sizeBytes = given === undefined ? end - start : size(given, `${what}.size`);
      if (sizeBytes <= 0 || start + sizeBytes > end) {
        invalid(`partition ${index + 1} (${Math.max(sizeBytes, 0)} bytes at ${start}) does not fit in a ${bytes}-byte image with ${table.toUpperCase()}`);
      }
      partitions.push({ number: index + 1, startBytes: start, sizeBytes, fstype: mkfsType(partFstype, `${what}.fstype`) ?? fstype });
      start = alignUp(start + sizeBytes);
    });
  }

  let mount: string | null = null;
  if (options.mount === true) mount = '';
  else if (typeof options.mount === 'string' && options.mount !== '' && !options.mount.includes('\0')) mount = resolve(options.mount);
  else if (options.mount !== undefined && options.mount !== false) invalid(`option 'mount' must be a boolean or a path`);
  const mountedFstype = table === null ? fstype : partitions[0]!.fstype;
  if (mount !== null && mountedFstype === null) invalid(`option 'mount' needs a filesystem: pass fstype`);

  if (options.attach !== undefined && (typeof options.attach !== 'object' || options.attach === null)) invalid(`option 'attach' must be an object`);
  const attachOptions: AttachOptions = { ...(options.attach as AttachOptions | undefined) };
  if (table !== null) attachOptions.partscan = true;
  planAttach('/dev/null', attachOptions); // checks the attach options before anything is made
  const formats = fstype !== null || partitions.some((p) => p.fstype !== null);
  if (attachOptions.readOnly && formats) invalid(`cannot make a filesystem on a device attached read-only`);

  return { size: bytes, table: table as ImagePlan['table'], partitions, fstype: table === null ? fstype : null, mount, attach: attachOptions };
}

interface Mkfs {
  command: string;
  /** the Debian/Ubuntu package that has it */
  package?: string;
  args(node: string, emptyRoot: string): string[];
}

function mkfsFor(type: string): Mkfs {
  switch (type) {
    case 'ext2':
    case 'ext3':
    case 'ext4':
      return { command: `mkfs.${type}`, package: 'e2fsprogs', args: (node) => ['-q', '-F', node] };
    case 'xfs':
      return { command: 'mkfs.xfs', package: 'xfsprogs', args: (node) => ['-q', '-f', node] };
    case 'btrfs':
      return { command: 'mkfs.btrfs', package: 'btrfs-progs', args: (node) => ['-q', '-f', node] };
    case 'vfat':
      // -I: a whole (unpartitioned) device is fine.
      return { command: 'mkfs.vfat', package: 'dosfstools', args: (node) => ['-I', node] };
    case 'squashfs':
      return { command: 'mksquashfs', package: 'squashfs-tools', args: (node, root) => [root, node, '-noappend', '-quiet', '-no-progress'] };
    case 'erofs':
      // No --quiet: erofs-utils before 1.3 (Debian 11's 1.2) refuses it; execFile keeps the output.
      return { command: 'mkfs.erofs', package: 'erofs-utils', args: (node, root) => [node, root] };
    default:
      return { command: `mkfs.${type}`, args: (node) => [node] };
  }
}


function missingTool(mkfs: Mkfs, cause?: unknown): never {
  const install = mkfs.package === undefined ? '' : ` (Debian/Ubuntu: apt-get install ${mkfs.package})`;
  fail('ERR_LOOP_MISSING_TOOL', `${mkfs.command} is not installed${install}`, { path: mkfs.command, cause });
}

const execFileAsync = promisify(execFile);

/** Runs mkfs on a device node; its output is kept for the error only. */
async function makeFilesystem(type: string, node: string, dir: string): Promise<void> {
  const mkfs = mkfsFor(type);
  const emptyRoot = join(dir, 'empty-root');
  await mkdir(emptyRoot, { recursive: true });
  try {
    // Looked up by execFile in the env's PATH: ENOENT is a missing tool.
    await execFileAsync(mkfs.command, mkfs.args(node, emptyRoot), { encoding: 'buffer', env: { ...process.env, PATH: toolDirs().join(delimiter) } });
  } catch (error) {
    if (hasCode(error, 'ENOENT')) missingTool(mkfs, error);
    const output = `${(error as { stderr?: Buffer }).stderr ?? ''}`.trim() || (error as Error).message;
    fail('ERR_LOOP_TOOL_FAILED', `${mkfs.command} failed on ${node}: ${output}`, { path: node, cause: error });
  } finally {
    await rm(emptyRoot, { recursive: true, force: true });
  }
}

/** Creates the sparse image file the layout describes. */
async function writeImage(path: string, layout: ImageLayout): Promise<void> {
  const file = await open(path, 'w');
  try {
    await file.truncate(layout.sizeBytes);
    for (const { data, position } of layout.writes) await file.write(data, 0, data.length, position);
  } finally {
    await file.close();
  }
}

/** What has been made so far, so that tearDown() undoes exactly that. */
interface Made {
  dir?: string;
  path?: string;
  device?: LoopDevice;
  point?: MountPoint;
  /** the node mounted, once mount(2) succeeded */
  mountedSource?: string;
}

/** The images this fixture makes: `<tmpdir>/loopdev-image-XXXXXX/disk.img`. */
const IMAGE_DIR_PREFIX = 'loopdev-image-';
const isFixtureImage = (backingFile: string, root: string): boolean => {
  const path = backingFile.endsWith(' (deleted)') ? backingFile.slice(0, -' (deleted)'.length) : backingFile;
  return dirname(dirname(path)) === root && basename(dirname(path)).startsWith(IMAGE_DIR_PREFIX) && basename(path) === 'disk.img';
};

let leftovers: Promise<void> | undefined;

/**
 * Once per process, before its first image: what earlier runs left behind (a run SIGKILLed, or
 * killed by its runner before any exit handler ran) is released by reap() (the fixture's devices
 * carry their owner's tag), and the image directory of each device released is deleted. Only
 * this fixture's images are looked at, and a device that is mounted, open or whose owner lives is
 * left alone. LOOPDEV_TESTING_REAP=0 turns it off.
 */
function reapLeftovers(): Promise<void> {
  if (process.env.LOOPDEV_TESTING_REAP === '0') return Promise.resolve();
  leftovers ??= (async () => {
    const root = tmpdir();
    const entries = await runAsync(reapFlow({ backingDirectory: root, deleted: false }, (info) => isFixtureImage(info.backingFile, root)));
    for (const entry of entries) {
      if (entry.released) await rm(dirname(entry.backingFile.replace(/ \(deleted\)$/, '')), { recursive: true, force: true }).catch(() => undefined);
    }
  })().catch(() => undefined); // a look that fails must not stop the tests: nothing was released then
  return leftovers;
}

async function setUp(plan: ImagePlan, made: Made): Promise<TestImage> {
  watchExit();
  await reapLeftovers();
  const dir = (made.dir = await runAsync(call(addon.makeTempDir, join(tmpdir(), IMAGE_DIR_PREFIX))));
  const path = (made.path = join(dir, 'disk.img'));
  try {
    if (plan.table === 'gpt') await writeImage(path, gptLayout(plan.size, plan.partitions));
    else if (plan.table === 'mbr') await writeImage(path, mbrLayout(plan.size, plan.partitions));
    else await writeImage(path, { sizeBytes: plan.size, writes: [] });
  } catch (error) {
    throw fromNodeError(error);
  }

  const device = (made.device = await attach(path, { ...plan.attach, detachOnExit: true }));
  if (plan.fstype !== null) await makeFilesystem(plan.fstype, device.path, dir);
  // mkfs opens the partitions by path: their nodes must be this device's (see loop/nodes.ts).
  await runAsync(ensurePartitionNodes(device.number, plan.partitions.map((partition) => partition.number)));
  for (const partition of plan.partitions) {
    if (partition.fstype !== null) await makeFilesystem(partition.fstype, partitionPath(device.number, partition.number), dir);
  }
  const { partitions } = await device.info();

  let mountPoint: string | null = null;
  if (plan.mount !== null) {
    const point = (made.point = await runAsync(prepareMountPoint(plan.mount === '' ? join(dir, 'mnt') : plan.mount, true)));
    const source = plan.table === null ? device.path : partitionPath(device.number, 1);
    await runAsync(
      mountSourceFlow({
        ...planMountFlags({ readOnly: plan.attach.readOnly ?? false }),
        source,
        deviceNumber: device.number,
        target: point.real,
        fstype: plan.table === null ? plan.fstype : plan.partitions[0]!.fstype,
        unmountAtExit: true,
      }),
    );
    made.mountedSource = source;
    mountPoint = point.real;
  }
  return { path, device, partitions, mountPoint, dir };
}

/** Undoes what setUp() made, in reverse order; collects every failure instead of stopping. */
async function tearDown(made: Made): Promise<unknown[]> {
  const errors: unknown[] = [];
  let stillInUse = false;
  if (made.mountedSource !== undefined && made.point !== undefined) {
    const target = made.point.real;
    try {
      await runAsync(unmountFlow(target, { wait: false }, made.mountedSource));
    } catch (error) {
      if (!hasCode(error, 'ERR_LOOP_NOT_MOUNTED')) {
        errors.push(error);
        stillInUse = true;
        // Leave nothing in the mount table: the kernel finishes when the last user is gone.
        try {
          await runAsync(unmountFlow(target, { lazy: true, wait: false }, made.mountedSource));
        } catch (lazyError) {
          if (!hasCode(lazyError, 'ERR_LOOP_NOT_MOUNTED')) errors.push(lazyError);
        }
      }
    }
  }
  if (made.point !== undefined) await runAsync(removeMountPoint(made.point));
  if (made.device !== undefined) {
    try {
      // A filesystem still in use holds the device: no point waiting for its release.
      const result = await made.device.detach({ wait: stillInUse ? false : RELEASE_WAIT_MS });
      if (!result.released) {
        errors.push(
          new LoopError(`${result.path} is still open (a mount or an fd): the kernel releases it at its last close`, {
            code: 'ERR_LOOP_STILL_HELD',
            path: result.path,
            device: made.device.number,
          }),
        );
      }
    } catch (error) {
      errors.push(error);
    }
  }
  if (made.dir !== undefined) {
    const dir = made.dir;
    // Never delete through a mount that is still there.
    const inside = (await runAsync(readMountInfo())).filter((entry) => entry.mountPoint === dir || entry.mountPoint.startsWith(`${dir}/`));
    if (inside.length > 0) {
      errors.push(
        new LoopError(`${dir} was not deleted: ${inside.map((entry) => entry.mountPoint).join(', ')} still mounted`, {
          code: 'ERR_LOOP_BUSY',
          path: dir,
        }),
      );
    } else {
      try {
        await runAsync(call(addon.removeTempDir, dir));
      } catch (error) {
        errors.push(error);
      }
    }
  }
  return errors;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** One cleanup error as it is; several as one ERR_LOOP_STILL_HELD that keeps each (`errors`, the first as `cause`). */
function cleanupFailure(errors: unknown[]): unknown {
  if (errors.length === 1) return errors[0];
  return new LoopError(`cleanup failed: ${errors.map(message).join('; ')}`, { code: 'ERR_LOOP_STILL_HELD', errors, cause: errors[0] });
}

/** The error to throw when both the work (or the set-up) and the cleanup failed: the work's is the `cause`. */
function bothFailed(error: unknown, cleanupErrors: unknown[]): unknown {
  if (cleanupErrors.length === 0) return error;
  return new LoopError(`${message(error)} (and cleanup failed too: ${cleanupErrors.map(message).join('; ')})`, {
    code: 'ERR_LOOP_STILL_HELD',
    errors: [error, ...cleanupErrors],
    cause: error,
  });
}

/**
 * Makes the image `spec` describes under os.tmpdir() (sparse), attaches it (partscan when
 * partitioned), makes the filesystems and mounts it; the caller disposes of it:
 * `await using image = await createImage({ size: '64M', fstype: 'ext4', mount: true })`.
 * Disposal unmounts, detaches and deletes everything; it throws if any step failed (several
 * failures as one ERR_LOOP_STILL_HELD LoopError whose `errors` holds each). If the set-up
 * fails, what was made is undone first.
 * Errors: ERR_LOOP_INVALID_OPTION for a bad spec (checked before anything is made),
 * ERR_LOOP_MISSING_TOOL (names the package) and ERR_LOOP_TOOL_FAILED for mkfs.
 */
export async function createImage(spec: ImageSpec): Promise<TestImage & AsyncDisposable> {
  const plan = planImage(spec);
  const made: Made = {};
  let image: TestImage;
  try {
    image = await setUp(plan, made);
  } catch (error) {
    throw bothFailed(error, await tearDown(made));
  }
  let disposed = false;
  return {
    ...image,
    async [Symbol.asyncDispose]() {
      if (disposed) return;
      disposed = true;
      const errors = await tearDown(made);
      if (errors.length > 0) throw cleanupFailure(errors);
    },
  };
}

/**
 * Runs `fn` with the image `spec` describes (see {@link createImage}) and always cleans up:
 * unmount, detach, delete. If `fn` throws, its error is rethrown as it is; if cleanup fails
 * too, a LoopError (ERR_LOOP_STILL_HELD) has `fn`'s error as `cause` and first in `errors`,
 * then the cleanup errors.
 */
export async function withImage<T>(spec: ImageSpec, fn: (image: TestImage) => Promise<T> | T): Promise<T> {
  const image = await createImage(spec);
  let result: T;
  try {
    result = await fn(image);
  } catch (error) {
    let cleanupErrors: unknown[] = [];
    try {
      await image[Symbol.asyncDispose]();
    } catch (cleanupError) {
      const several = cleanupError instanceof LoopError ? cleanupError.errors : undefined;
      cleanupErrors = several ?? [cleanupError];
    }
    throw bothFailed(error, cleanupErrors);
  }
  await image[Symbol.asyncDispose]();
  return result;
}
