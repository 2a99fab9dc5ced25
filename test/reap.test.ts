// reap() and `loopdev reap` against the real kernel: processes that attached devices are
// SIGKILLed, and reap() must release exactly their leftovers, say why, and leave alone (as
// sysfs shows) everything in use or not leaked. Every reap here is filtered to this suite's
// temp dir (or its own label prefix): other test files run beside it, and their devices must
// never be reaped.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, readlinkSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';

import { addon } from '../lib/core/addon';
import { attachSync, detachSync, infoSync, LoopError, type LoopDevice, ownerTag, reap, reapSync, unmountSync, type ReapEntry, type ReapOptions } from '../lib/index';
import { runSync } from '../lib/core/flow';
import * as owner from '../lib/loop/owner';
import { formatTag, parseOwnerTag, type OwnerTag } from '../lib/loop/owner';

/**
 * `losetup --find --show`: losetup takes a device number from GET_FREE and gives up when another
 * process is releasing that device at that moment (ENXIO from its open, which it does not
 * retry): asked again then, as its users do.
 */
function losetupFind(image: string): number {
  for (let attempt = 1; ; attempt++) {
    try {
      return Number(/loop(\d+)$/.exec(execFileSync('losetup', ['--find', '--show', image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim())![1]);
    } catch (error) {
      if (attempt === 5 || !String((error as { stderr?: unknown }).stderr).includes('No such device or address')) throw error;
    }
  }
}

// The owner's reads of /proc are flows (sync or async): run here in the sync form.
const ownTag = (): OwnerTag => runSync(owner.ownTag());
const ownerState = (tag: OwnerTag, self?: OwnerTag) => runSync(owner.ownerState(tag, self));
import { formatReap } from '../lib/cli/format';
import { parseCommand } from '../lib/cli/parse';
import { helpText } from '../lib/cli/spec';
import { cli, run, usageError } from './helpers/cli';
import { devicesBackedBy, mountsAt, mountTable, privileged, sysBoundTo, sysRead, suiteTempDir, udevRuns, until } from './helpers/kernel';

const MiB = 1024 * 1024;
const distIndex = join(__dirname, '..', 'dist', 'index.js');

/** A process that ran `body` (with `loopdev` and `image` in scope) and printed one JSON line. */
interface Child {
  process: ChildProcess;
  said: { number: number; [key: string]: unknown };
}

const children = new Set<ChildProcess>();

/** Starts a node child running `body`; resolves with the JSON line it prints (it then waits, alive). */
function startChild(body: string, image: string): Promise<Child> {
  const script = `const loopdev = require(${JSON.stringify(distIndex)});
    const { execFileSync } = require('node:child_process');
    const image = ${JSON.stringify(image)};
    ${body}
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  return new Promise((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes('\n')) resolve({ process: child, said: JSON.parse(text) as Child['said'] });
    });
    child.once('exit', (code) => reject(new Error(`child exited (${code}) before it said anything`)));
  });
}

/** The mounts under `path`, the last made first. */
const mountsUnder = (path: string) => mountTable().filter((line) => line.mountPoint.startsWith(`${path}/`)).reverse();

/** SIGKILLs a child and waits until the kernel has closed its fds (it has exited). */
async function kill(child: Child): Promise<void> {
  const exited = new Promise((resolve) => child.process.once('exit', resolve));
  child.process.kill('SIGKILL');
  await exited;
  children.delete(child.process);
}

afterEach(async () => {
  for (const child of children) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    // A test's opener runs in its own group (see below), with a child of its own.
    if (processGroupAlive(child.pid!)) process.kill(-child.pid!, 'SIGKILL');
  }
  children.clear();
});

/**
 * Detaches a handle of this test; reap() may have released it already, and its number may be
 * another test's by now, which the handle's identity check refuses to touch (ERR_LOOP_REUSED).
 */
function detachUnlessReused(device: LoopDevice): void {
  try {
    detachSync(device);
  } catch (error) {
    if ((error as LoopError).code !== 'ERR_LOOP_REUSED') throw error;
  }
}

/** Whether any process of the group is still there (kill with signal 0 asks without sending). */
function processGroupAlive(group: number): boolean {
  try {
    process.kill(-group, 0);
    return true;
  } catch {
    return false;
  }
}

// Other test files on this machine call list() and find(), which open every bound device for
// an instant: a device can be kept as in use ('open', 'opened', 'locked', 'pending') for
// that moment, and a later reap releases it, as reap documents. So a test that expects a
// release reaps again while a device is kept for such a use (bounded).
const MOMENTARY: ReadonlySet<string> = new Set(['open', 'opened', 'locked', 'pending']);

/** reap(), again for devices kept for a use that may be a moment's; each device's last entry, by number. */
async function reapSettled(options: ReapOptions): Promise<ReapEntry[]> {
  const last = new Map<number, ReapEntry>();
  for (let attempt = 0; attempt < 50; attempt++) {
    for (const entry of await reap(options)) last.set(entry.number, entry);
    if (![...last.values()].some((entry) => entry.kept !== undefined && MOMENTARY.has(entry.kept))) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return [...last.values()].sort((a, b) => a.number - b.number);
}

/** The CLI run again (bounded) until `accept` says its output is the settled one (see reapSettled). */
function runSettled(args: string[], accept: (stdout: string) => boolean): ReturnType<typeof run> {
  let result = run(args);
  for (let attempt = 0; attempt < 50 && !accept(result.stdout); attempt++) result = run(args);
  return result;
}

const byNumber = (entries: ReapEntry[], number: number): ReapEntry | undefined => entries.find((entry) => entry.number === number);

describe('the owner tag', () => {
  it('names this boot, pid namespace, pid and start time, and is read back', () => {
    const tag = ownerTag();
    expect(tag).toMatch(/^loopdev:[0-9a-f]{8}:[0-9a-f]+:\d+:\d+$/);
    expect(tag.split(':')[3]).toBe(String(process.pid));
    expect(parseOwnerTag(tag)).toEqual(ownTag());
    expect(parseOwnerTag(`job 7 ${tag}`)).toEqual(ownTag());
    expect(parseOwnerTag(`job7${tag}`)).toBeUndefined();
    expect(parseOwnerTag('/tmp/a.img')).toBeUndefined();
  });

  it('judges owners: this process alive; a reused pid, a gone pid, another boot gone; another namespace searched', () => {
    const self = ownTag();
    expect(ownerState(self).state).toBe('alive');
    // A live pid with another start time: the pid was reused by another process.
    const reused = ownerState({ ...self, startTime: self.startTime + 1 });
    expect(reused).toEqual({ state: 'gone', detail: expect.stringMatching(`^pid ${process.pid} is now another process`) as unknown as string });
    // pid_max itself is never handed out.
    const pidMax = Number(execFileSync('cat', ['/proc/sys/kernel/pid_max'], { encoding: 'utf8' }));
    expect(ownerState({ ...self, pid: pidMax })).toEqual({ state: 'gone', detail: `pid ${pidMax} is gone` });
    expect(ownerState({ ...self, boot: self.boot === '00000000' ? '00000001' : '00000000' }).state).toBe('gone');
    // A namespace with no process: from the initial namespace, gone; from any other, unknown.
    const elsewhere = ownerState({ ...self, pidNamespace: 1 });
    expect(elsewhere.state).toBe(self.pidNamespace === 0xeffffffc ? 'gone' : 'unknown');
  });
});

describe('loopdev reap, parsed (no kernel)', () => {
  it('takes --dry-run, --under, --label-prefix, --keep-deleted and --json as reap() options', () => {
    expect(parseCommand(['reap'])).toEqual({ name: 'reap', options: {}, json: false });
    expect(parseCommand(['reap', '--dry-run', '--under', '/var/tmp/ci', '--label-prefix', 'ci-', '--keep-deleted', '--json'])).toEqual({
      name: 'reap',
      options: { dryRun: true, backingDirectory: '/var/tmp/ci', labelPrefix: 'ci-', deleted: false },
      json: true,
    });
    expect(usageError(['reap', '--label-prefix=']).message).toBe(`option '--label-prefix' must not be empty`);
    expect(usageError(['reap', 'extra']).message).toBe(`unexpected argument 'extra'`);
    expect(helpText('reap')).toMatch(/^Usage: loopdev reap \[--dry-run\]/);
  });

  it('prints one line per device: released, kept and why, or would release', () => {
    const entry = { path: '/dev/loop3', number: 3, backingFile: '/tmp/a.img', label: 'loopdev:x', reason: 'owner-gone', detail: 'pid 7 is gone' } as const;
    expect(
      formatReap([
        { ...entry, released: true },
        { ...entry, path: '/dev/loop4', released: false, kept: 'mounted', keptDetail: 'mounted on /mnt' },
        { ...entry, path: '/dev/loop5', reason: 'backing-deleted', detail: '/tmp/b.img was deleted', released: false, kept: 'dry-run' },
      ]),
    ).toBe(
      '/dev/loop3: released (owner gone: pid 7 is gone)\n' +
        '/dev/loop4: kept, mounted on /mnt (owner gone: pid 7 is gone)\n' +
        '/dev/loop5: would release (backing file deleted: /tmp/b.img was deleted)\n',
    );
    expect(formatReap([])).toBe('no leaked loop devices\n');
  });

  it('refuses bad options before looking at anything', () => {
    expect(() => reapSync({ labelPrefix: '' })).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_OPTION' }));
    expect(() => reapSync({ dryRun: 'yes' as unknown as boolean })).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_OPTION' }));
    expect(() => reapSync({ olderThan: 5 } as unknown as ReapOptions)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_OPTION' }));
    expect(() => reapSync({ backingDirectory: '' })).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_ARGUMENT' }));
  });
});

describe.skipIf(!privileged())('reap on the real kernel', () => {
  const dir = suiteTempDir();
  // After a failed test, what its SIGKILLed children left is released here (before
  // suiteTempDir's check): reap itself, filtered to this suite's images.
  afterAll(() => {
    // A test that failed midway may have left its mount on top of a child's device: reap keeps
    // a mounted device, so the mount goes first.
    for (const line of mountsUnder(dir.path)) execFileSync('umount', [line.mountPoint]);
    reapSync({ backingDirectory: dir.path });
  });
  /** A directory of its own for one test's images, so that each test's reap sees only its own. */
  const area = (name: string): { path: string; image: (file: string, size: number) => string } => {
    const path = join(dir.path, name);
    mkdirSync(path);
    return { path, image: (file, size) => dir.image(`${name}/${file}`, size) };
  };

  it.skipIf(ownTag().pidNamespace !== 0xeffffffc)('an owner in another pid namespace is found by its pid there, from the initial namespace', async () => {
    // --kill-child: the sleep (pid 1 of the new namespace) dies with unshare.
    const outer = spawn('unshare', ['--pid', '--fork', '--kill-child', 'sleep', '600'], { stdio: 'ignore' });
    children.add(outer);
    let inner = '';
    try {
      expect(await until(() => (inner = execFileSync('ps', ['-o', 'pid=', '--ppid', String(outer.pid)], { encoding: 'utf8' }).trim()) !== '')).toBe(true);
      const namespace = Number(/\d+/.exec(readlinkSync(`/proc/${inner}/ns/pid`))![0]);
      const startTime = Number(readFileSync(`/proc/${inner}/stat`, 'latin1').split(') ')[1]!.split(' ')[19]);
      // The sleep is pid 1 of its namespace.
      expect(ownerState({ ...ownTag(), pidNamespace: namespace, pid: 1, startTime })).toEqual({ state: 'alive', detail: 'pid 1 is running' });
      expect(ownerState({ ...ownTag(), pidNamespace: namespace, pid: 1, startTime: startTime + 1 }).state).toBe('gone');
      expect(ownerState({ ...ownTag(), pidNamespace: namespace, pid: 2, startTime }).state).toBe('gone');
    } finally {
      outer.kill('SIGKILL');
      try {
        if (inner !== '') process.kill(Number(inner), 'SIGKILL');
      } catch {
        // --kill-child was first
      }
    }
  });

  it('attach({ owner }) writes the tag after a label of the caller, and refuses a label with no room for it', () => {
    const image = dir.image('tag.img', MiB);
    const plain = attachSync(image, { owner: true });
    try {
      expect(plain.infoSync().label).toBe(ownerTag());
    } finally {
      detachSync(plain);
    }
    const labelled = attachSync(image, { owner: true, label: 'job-42' });
    try {
      expect(labelled.infoSync().label).toBe(`job-42 ${ownerTag()}`);
    } finally {
      detachSync(labelled);
    }
    const room = 63 - Buffer.byteLength(ownerTag()) - 1;
    expect(() => attachSync(image, { owner: true, label: 'x'.repeat(room + 1) })).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_OPTION' }));
    expect(() => attachSync(image, { owner: 'yes' as unknown as boolean })).toThrow(LoopError);
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('SIGKILLed owners: reap() releases exactly their leftovers and says why; what is in use or not leaked stays', async () => {
    const trial = area('trial');
    const plainImage = trial.image('plain.img', 8 * MiB);
    const heldImage = trial.image('held.img', 8 * MiB);
    const exitImage = trial.image('exit.img', 8 * MiB);
    const liveImage = trial.image('live.img', 8 * MiB);
    const losetupImage = trial.image('losetup.img', 8 * MiB);
    const deletedImage = trial.image('deleted.img', 8 * MiB);
    const reusedImage = trial.image('reused.img', 8 * MiB);
    const memoryImage = trial.image('memory.img', 8 * MiB);
    execFileSync('mkfs.ext4', ['-q', '-F', heldImage]);
    const mountPoint = join(trial.path, 'mnt');
    mkdirSync(mountPoint);

    const plain = await startChild(`console.log(JSON.stringify({ number: loopdev.attachSync(image, { owner: true }).number }));`, plainImage);
    // hold, with a mount on top: the kernel's AUTOCLEAR cannot free it while it is mounted.
    const held = await startChild(
      `const device = loopdev.attachSync(image, { hold: true, owner: true });
       execFileSync('mount', [device.path, ${JSON.stringify(mountPoint)}]);
       console.log(JSON.stringify({ number: device.number }));`,
      heldImage,
    );
    const exiting = await startChild(`console.log(JSON.stringify({ number: loopdev.attachSync(image, { detachOnExit: true, owner: true }).number }));`, exitImage);
    const live = await startChild(`console.log(JSON.stringify({ number: loopdev.attachSync(image, { owner: true }).number }));`, liveImage);
    const losetup = losetupFind(losetupImage);
    const deleted = attachSync(deletedImage);
    unlinkSync(deletedImage);
    // A tag naming this live process, with another start time: as if our pid had been reused.
    const reused = attachSync(reusedImage, { label: formatTag({ ...ownTag(), startTime: ownTag().startTime + 1 }) });
    const memory = attachSync(memoryImage, { inMemory: true });
    try {
      await kill(plain);
      await kill(held);
      await kill(exiting);
      expect(sysBoundTo(plain.said.number, plainImage)).toBe(true);
      expect(sysBoundTo(held.said.number, heldImage)).toBe(true);
      expect(sysBoundTo(exiting.said.number, exitImage)).toBe(true);

      const dry = await reapSettled({ backingDirectory: trial.path, dryRun: true });
      expect(dry.map((entry) => [entry.number, entry.kept]).sort()).toEqual(
        [
          [plain.said.number, 'dry-run'],
          [held.said.number, 'mounted'],
          [exiting.said.number, 'dry-run'],
          [deleted.number, 'dry-run'],
          [reused.number, 'dry-run'],
        ].sort(),
      );
      expect(dry.every((entry) => !entry.released)).toBe(true);
      expect(sysBoundTo(plain.said.number, plainImage)).toBe(true);

      const entries = await reapSettled({ backingDirectory: trial.path });
      expect(entries).toHaveLength(5);
      expect(byNumber(entries, plain.said.number)).toMatchObject({ reason: 'owner-gone', detail: `pid ${plain.process.pid} is gone`, released: true, backingFile: plainImage });
      expect(byNumber(entries, exiting.said.number)).toMatchObject({ reason: 'owner-gone', detail: `pid ${exiting.process.pid} is gone`, released: true });
      expect(byNumber(entries, deleted.number)).toMatchObject({ reason: 'backing-deleted', detail: `${deletedImage} was deleted`, released: true });
      expect(byNumber(entries, reused.number)).toMatchObject({ reason: 'owner-gone', released: true });
      expect(byNumber(entries, reused.number)!.detail).toMatch(`pid ${process.pid} is now another process`);
      // Mounted: reported, not released.
      expect(byNumber(entries, held.said.number)).toMatchObject({ reason: 'owner-gone', released: false, kept: 'mounted', keptDetail: `mounted on ${mountPoint}` });
      expect(entries.filter((entry) => !entry.released).map((entry) => entry.number)).toEqual([held.said.number]);

      // sysfs: released exactly those.
      expect(sysBoundTo(plain.said.number, plainImage)).toBe(false);
      expect(sysBoundTo(exiting.said.number, exitImage)).toBe(false);
      expect(sysBoundTo(deleted.number, `${deletedImage} (deleted)`)).toBe(false);
      expect(sysBoundTo(reused.number, reusedImage)).toBe(false);
      expect(sysBoundTo(held.said.number, heldImage)).toBe(true);
      expect(mountsAt(mountPoint)).toHaveLength(1);
      expect(sysBoundTo(live.said.number, liveImage)).toBe(true);
      expect(sysBoundTo(losetup, losetupImage)).toBe(true);
      expect(sysRead(memory.number, 'loop/backing_file')).toMatch(/^\/memfd:.* \(deleted\)$/);

      // The in-memory copy, picked by its label, is still no leak.
      expect(reapSync({ labelPrefix: `memory:${trial.path}/` })).toEqual([]);
      expect(sysRead(memory.number, 'loop/backing_file')).toMatch(/^\/memfd:/);

      // Once the live owner dies, its device goes too.
      await kill(live);
      expect((await reapSettled({ backingDirectory: trial.path })).map((entry) => [entry.number, entry.released]).sort()).toEqual(
        [
          [held.said.number, false],
          [live.said.number, true],
        ].sort(),
      );
      expect(sysBoundTo(live.said.number, liveImage)).toBe(false);
    } finally {
      if (mountsAt(mountPoint).length > 0) unmountSync(mountPoint);
      execFileSync('losetup', ['--detach', `/dev/loop${losetup}`]);
      for (const device of [deleted, reused, memory]) detachUnlessReused(device);
    }
    // The unmount freed the held device (its AUTOCLEAR), as hold promises.
    expect(await until(() => !sysBoundTo(held.said.number, heldImage))).toBe(true);
  });

  // Between the look (no opener then) and the release, another process opens the device:
  // plainly (the kernel counts it at LOOP_CLR_FD), or with a BSD lock as udev and systemd take.
  const opening = (path: string): [string, string[]] => [
    process.execPath,
    ['-e', `require('node:fs').openSync(${JSON.stringify(path)}, 'r'); console.log('open'); setInterval(() => {}, 1000);`],
  ];
  const locking = (path: string): [string, string[]] => ['flock', ['--shared', path, process.execPath, '-e', `console.log('locked'); setInterval(() => {}, 1000);`]];

  it.each([
    ['opened', opening],
    ['locked', locking],
  ] as const)('a device another process opens during the reap is left as it was (%s), AUTOCLEAR not left set', async (kept, how) => {
    const own = area(kept);
    const image = own.image(`${kept}.img`, 8 * MiB);
    const owner = await startChild(`console.log(JSON.stringify({ number: loopdev.attachSync(image, { owner: true }).number }));`, image);
    await kill(owner);
    let opener: ChildProcess | undefined;
    const real = addon.reap.async;
    const spy = vi.spyOn(addon.reap, 'async').mockImplementationOnce(async (...args) => {
      const [command, commandArgs] = how(`/dev/loop${owner.said.number}`);
      // Its own process group: flock(1) runs node as its child, which inherits the locked fd.
      opener = spawn(command, commandArgs, { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
      children.add(opener);
      await new Promise((resolve) => opener!.stdout!.once('data', resolve));
      return real(...args);
    });
    try {
      // Until the release step ran: another file's list() at the look makes it 'open' first.
      let entries = await reap({ backingDirectory: own.path });
      for (let attempt = 0; attempt < 50 && opener === undefined; attempt++) entries = await reap({ backingDirectory: own.path });
      // Where udev runs, its probe after the owner's last close may hold its lock at that very
      // moment: the device is left as it was then too, and says so.
      const expectedKept = udevRuns() && kept === 'opened' ? expect.stringMatching(/^(opened|locked)$/) : kept;
      expect(entries).toEqual([expect.objectContaining({ number: owner.said.number, reason: 'owner-gone', released: false, kept: expectedKept })]);
      expect(sysBoundTo(owner.said.number, image)).toBe(true);
      expect(sysRead(owner.said.number, 'loop/autoclear')).toBe('0');
    } finally {
      spy.mockRestore();
    }
    // The opener's close does not release it: no AUTOCLEAR was left behind.
    const exited = new Promise((resolve) => opener!.once('exit', resolve));
    process.kill(-opener!.pid!, 'SIGKILL');
    await exited;
    children.delete(opener!);
    expect(await until(() => !processGroupAlive(opener!.pid!))).toBe(true);
    expect(sysBoundTo(owner.said.number, image)).toBe(true);
    expect(await reapSettled({ backingDirectory: own.path })).toEqual([expect.objectContaining({ number: owner.said.number, released: true })]);
    expect(sysBoundTo(owner.said.number, image)).toBe(false);
  });

  it('a device open in a live process (found in /proc) is reported, not released', async () => {
    const own = area('open-fd');
    const image = own.image('open-fd.img', 8 * MiB);
    const owner = await startChild(`console.log(JSON.stringify({ number: loopdev.attachSync(image, { owner: true }).number }));`, image);
    await kill(owner);
    const opener = await startChild(`require('node:fs').openSync('/dev/loop${owner.said.number}', 'r'); console.log(JSON.stringify({ number: ${owner.said.number} }));`, image);
    const entries = reapSync({ backingDirectory: own.path });
    expect(entries).toEqual([expect.objectContaining({ released: false, kept: 'open' })]);
    expect(entries[0]!.keptDetail).toMatch(new RegExp(`^open in pid .*\\b${opener.process.pid}\\b`));
    expect(sysRead(owner.said.number, 'loop/autoclear')).toBe('0');
    await kill(opener);
    expect(sysBoundTo(owner.said.number, image)).toBe(true);
    expect(await reapSettled({ backingDirectory: own.path })).toEqual([expect.objectContaining({ released: true })]);
  });

  it('loopdev reap: --dry-run changes nothing; text and JSON say what was done', async () => {
    const own = area('cli');
    const image = own.image('cli.img', 8 * MiB);
    const owner = await startChild(`console.log(JSON.stringify({ number: loopdev.attachSync(image, { owner: true }).number }));`, image);
    await kill(owner);
    const number = owner.said.number;
    const before = [sysRead(number, 'loop/backing_file'), sysRead(number, 'loop/autoclear'), sysRead(number, 'diskseq')];

    const dry = runSettled(['reap', '--dry-run', '--under', own.path], (stdout) => stdout.includes('would release'));
    expect(dry.status).toBe(0);
    expect(dry.stdout).toBe(`/dev/loop${number}: would release (owner gone: pid ${owner.process.pid} is gone)\n`);
    const dryJson = runSettled(['reap', '--dry-run', '--json', '--under', own.path], (stdout) => stdout.includes('"dry-run"'));
    expect(JSON.parse(dryJson.stdout)).toEqual([expect.objectContaining({ path: `/dev/loop${number}`, reason: 'owner-gone', released: false, kept: 'dry-run' })]);
    expect([sysRead(number, 'loop/backing_file'), sysRead(number, 'loop/autoclear'), sysRead(number, 'diskseq')]).toEqual(before);

    const done = runSettled(['reap', '--json', '--under', own.path], (stdout) => stdout.includes('"released": true'));
    expect(done.status).toBe(0);
    expect(JSON.parse(done.stdout)).toEqual([
      { path: `/dev/loop${number}`, number, backingFile: image, label: expect.stringMatching(/^loopdev:/), reason: 'owner-gone', detail: `pid ${owner.process.pid} is gone`, released: true },
    ]);
    expect(sysBoundTo(number, image)).toBe(false);
    expect(run(['reap', '--under', own.path]).stdout).toBe('no leaked loop devices\n');
  });

  it('loopdev attach --hold writes the owner tag of its own process', async () => {
    const image = dir.image('hold.img', 8 * MiB);
    const holder = spawn(process.execPath, [cli, 'attach', '--hold', image], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.add(holder);
    const path = await new Promise<string>((resolve) => holder.stdout!.once('data', (chunk: Buffer) => resolve(chunk.toString().trim())));
    const number = Number(/\d+$/.exec(path)![0]);
    expect(sysBoundTo(number, image)).toBe(true);
    const tag = parseOwnerTag(infoSync(number).label);
    expect(tag).toMatchObject({ pid: holder.pid });
    expect(ownerState(tag!).state).toBe('alive');
    const exited = new Promise((resolve) => holder.once('exit', resolve));
    holder.kill('SIGTERM');
    await exited;
    children.delete(holder);
    expect(await until(() => !sysBoundTo(number, image))).toBe(true);
  });
});

