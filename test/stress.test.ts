// Retry and release under contention, crashes and containers. Each test is bounded (well
// under a minute) and leaves nothing bound.
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';

import { attach, attachSync, LoopError } from '../lib/index';
import { findTool, writeMbr } from './helpers/images';
import { devicesBackedBy, openFds, privileged, repetitions, sysBound, sysRead, suiteTempDir, testTime, udevRuns, until } from './helpers/kernel';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/** Whether /dev is the kernel's devtmpfs, which has a node for every device (not a container's snapshot). */
const devIsDevtmpfs = (): boolean => / \/dev [^\n]* - devtmpfs /.test(readFileSync('/proc/self/mountinfo', 'utf8'));
const cycler = join(__dirname, 'fixtures', 'cycler.js');
const distIndex = join(__dirname, '..', 'dist', 'index.js');
/** Cycles of each contending process, and SIGKILLs of an attach loop. */
const CYCLES = repetitions(150, 40);
const KILLS = repetitions(50, 12);
/** Attach and detach cycles of the soak test (udev's work for each makes them slow in a guest). */
const SOAK = repetitions(3000, 300);

interface CyclerStats {
  cycles: number;
  failures: number;
  retries: number;
  foreign: number;
  errors: string[];
}

function runCycler(image: string, cycles: number, mode: string): Promise<CyclerStats> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cycler, image, String(cycles), mode], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as CyclerStats) : reject(new Error(`cycler exited ${code}`))));
  });
}

describe.skipIf(!privileged())('stress', () => {
  // Every image lives here; afterwards nothing may still be bound to one of them.
  const dir = suiteTempDir();

  it('5 processes cycling (sync, async and hold attaches) plus a losetup loop: no failed attach, no device shared, nothing left', async () => {
    const modes = ['sync', 'async', 'sync', 'async', 'hold'];
    const images = modes.map((_, index) => dir.image(`contend-${index}.img`, MiB));
    const outsider = dir.image('outsider.img', MiB);
    let running = true;
    const outside = { cycles: 0, failures: 0 };
    // An outside competitor that plays by no rules of ours.
    const competitor = (async () => {
      while (running) {
        try {
          const { stdout } = await run('losetup', ['--find', '--show', outsider]);
          await run('losetup', ['--detach', stdout.trim()]);
          outside.cycles++;
        } catch {
          outside.failures++;
        }
      }
    })();
    const results = await Promise.all(modes.map((mode, index) => runCycler(images[index], CYCLES, mode)));
    running = false;
    await competitor;
    const total = results.reduce(
      (sum, stats) => ({
        cycles: sum.cycles + stats.cycles,
        failures: sum.failures + stats.failures,
        retries: sum.retries + stats.retries,
        foreign: sum.foreign + stats.foreign,
      }),
      { cycles: 0, failures: 0, retries: 0, foreign: 0 },
    );
    console.log(
      `contention: ${total.cycles} attaches in ${modes.length} processes, ${total.retries} retries ` +
        `(${(total.retries / total.cycles).toFixed(3)} per attach), losetup beside us: ${outside.cycles} cycles, ${outside.failures} failures`,
    );
    expect(results.flatMap((stats) => stats.errors)).toEqual([]);
    expect(total).toMatchObject({ cycles: CYCLES * modes.length, failures: 0, foreign: 0 });
    expect(outside.cycles).toBeGreaterThan(0);
    expect(devicesBackedBy(dir.path)).toEqual([]);
  });

  it('48 concurrent attach() calls in one process get 48 distinct devices, all released', async () => {
    const images = Array.from({ length: 48 }, (_, index) => dir.image(`parallel-${index}.img`, MiB));
    const retries: string[] = [];
    const devices = await Promise.all(images.map((image) => attach(image, { onRetry: ({ error }) => retries.push(`${error.stage}: ${error.code}`) })));
    try {
      expect(new Set(devices.map((device) => device.number)).size).toBe(48);
      devices.forEach((device, index) => expect(sysRead(device.number, 'loop/backing_file')).toBe(images[index]));
      // Coordinated in-process: they never race each other for the same free device (EBUSY
      // at configure: another binder won it). Where udev runs, it opens and locks each device
      // GET_FREE adds, and an attach that meets it waits its turn: those retries are udev's.
      console.log(`48 concurrent attaches: ${retries.length} retries${retries.length ? ` (${[...new Set(retries)].join(', ')})` : ''}`);
      // In a container whose /dev is a snapshot (podman, docker), the devices GET_FREE adds have
      // no node: an attach that meets one makes it (openDevice: ENOENT), and tries again.
      const repairs = devIsDevtmpfs() ? [] : ['openDevice: ENOENT'];
      if (udevRuns()) expect(retries.filter((reason) => reason === 'configure: EBUSY' || reason.startsWith('getFree'))).toEqual([]);
      else expect(retries.filter((reason) => !repairs.includes(reason))).toEqual([]);
    } finally {
      const results = await Promise.all(devices.map((device) => device.detach()));
      expect(results.every((result) => result.released)).toBe(true);
    }
    expect(devicesBackedBy(dir.path)).toEqual([]);
  });

  it(`SIGKILL at random points of hold attach loops leaks no device (${KILLS} kills)`, async () => {
    const image = dir.image('killed.img', MiB);
    for (let kill = 0; kill < KILLS; kill++) {
      const child = spawn(process.execPath, [cycler, image, '100000', 'hold'], { stdio: 'ignore' });
      const exited = new Promise((resolve) => child.on('exit', resolve));
      await new Promise((resolve) => setTimeout(resolve, 60 + Math.random() * 60));
      child.kill('SIGKILL');
      await exited;
      // The kernel closed the process's fds at exit; AUTOCLEAR unbound the device then.
      expect(await until(() => devicesBackedBy(image).length === 0, 2000)).toBe(true);
    }
  }, testTime(60_000));

  it(`${SOAK} cycles and 300 failed attaches leave fds and memory flat`, () => {
    const image = dir.image('soak.img', MiB);
    for (let i = 0; i < 200; i++) attachSync(image).detachSync(); // warm-up
    const fdsBefore = openFds();
    const rssBefore = process.memoryUsage().rss;
    for (let i = 0; i < SOAK; i++) {
      const device = attachSync(image, { hold: i % 2 === 0 });
      if (device.held) device.closeSync();
      else device.detachSync();
    }
    const busy = attachSync(image);
    for (let i = 0; i < 100; i++) {
      expect(() => attachSync(`${image}.missing`)).toThrow(LoopError);
      expect(() => attachSync('/tmp', { readOnly: true })).toThrow(LoopError);
      expect(() => attachSync(image, { device: busy.number })).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    }
    busy.detachSync();
    const rssGrowth = process.memoryUsage().rss - rssBefore;
    console.log(`soak: ${SOAK} cycles + 300 failed attaches, RSS growth ${(rssGrowth / MiB).toFixed(1)} MiB`);
    expect(openFds()).toEqual(fdsBefore);
    expect(rssGrowth).toBeLessThan(32 * MiB);
  }, testTime(60_000));

  it('a child process spawned while a device is held inherits none of our fds', () => {
    const image = dir.image('inherit.img', MiB);
    const device = attachSync(image, { hold: true });
    try {
      const script = "const fs=require('fs');for(const f of fs.readdirSync('/proc/self/fd')){try{console.log(fs.readlinkSync('/proc/self/fd/'+f))}catch{}}";
      const targets = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' }).stdout.split('\n');
      const ours = readdirSync('/proc/self/fd').map((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`);
        } catch {
          return '';
        }
      });
      expect(ours).toContain(device.path); // the held fd is there in this process...
      expect(targets.filter((target) => target.startsWith('/dev/loop'))).toEqual([]); // ...and not in the child
    } finally {
      device.closeSync();
    }
  });

  it('a worker thread that is terminated releases the devices it held', async () => {
    const image = dir.image('worker.img', MiB);
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const loopdev = require(workerData.dist);
       const device = loopdev.attachSync(workerData.image, { hold: true });
       parentPort.postMessage(device.number);
       setInterval(() => {}, 1000);`,
      { eval: true, workerData: { dist: distIndex, image } },
    );
    const number = await new Promise<number>((resolve) => worker.once('message', resolve));
    expect(sysRead(number, 'loop/backing_file')).toBe(image);
    await worker.terminate();
    expect(await until(() => !sysBound(number) || sysRead(number, 'loop/backing_file') !== image)).toBe(true);
  });

  describe('detachOnExit', () => {
    const script = (image: string) =>
      `const loopdev = require(${JSON.stringify(distIndex)});
       const device = loopdev.attachSync(${JSON.stringify(image)}, { detachOnExit: true });
       console.log(device.number);
       if (process.argv[1] === 'wait') setInterval(() => {}, 1000);`;

    it('detaches at a normal exit', () => {
      const image = dir.image('exit-normal.img', MiB);
      const result = spawnSync(process.execPath, ['-e', script(image), 'exit'], { encoding: 'utf8' });
      expect(result.status).toBe(0);
      expect(Number.isInteger(Number(result.stdout.trim()))).toBe(true);
      expect(devicesBackedBy(image)).toEqual([]);
    });

    it.each(['SIGTERM', 'SIGINT'] as const)('detaches on %s and still dies of the signal', async (signal) => {
      const image = dir.image(`exit-${signal}.img`, MiB);
      const child = spawn(process.execPath, ['-e', script(image), 'wait'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const number = await new Promise<number>((resolve) => child.stdout.once('data', (chunk: Buffer) => resolve(Number(chunk.toString()))));
      expect(sysRead(number, 'loop/backing_file')).toBe(image);
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, killedBy) => resolve(killedBy)));
      child.kill(signal);
      expect(await exited).toBe(signal);
      expect(devicesBackedBy(image)).toEqual([]);
    });
  });

  it('a read-only bind mount: readOnly false is EROFS, readOnly true works', () => {
    const source = join(dir.path, 'rw');
    const readonly = join(dir.path, 'ro');
    execFileSync('mkdir', ['-p', source, readonly]);
    const image = join(source, 'disk.img');
    execFileSync('truncate', ['-s', '1M', image]);
    execFileSync('mount', ['--bind', source, readonly]);
    try {
      execFileSync('mount', ['-o', 'remount,bind,ro', readonly]);
      const viaReadonly = join(readonly, 'disk.img');
      expect(() => attachSync(viaReadonly)).toThrow(expect.objectContaining({ code: 'EROFS', syscall: 'open', path: viaReadonly }));
      expect(devicesBackedBy(viaReadonly)).toEqual([]);
      const device = attachSync(viaReadonly, { readOnly: true });
      expect(sysRead(device.number, 'ro')).toBe('1');
      device.detachSync();
    } finally {
      execFileSync('umount', [readonly]);
    }
  });

  describe('in a container whose /dev is a plain tmpfs', () => {
    const container = join(__dirname, 'fixtures', 'container.js');

    it('creates the missing device and partition nodes and works where losetup fails', () => {
      const image = dir.image('container.img', 8 * MiB);
      writeMbr(image, 8 * MiB, [{ startBytes: MiB, sizeBytes: 2 * MiB }]);
      const marker = Buffer.from('container-bytes!');
      const { openSync, writeSync, closeSync } = require('node:fs') as typeof import('node:fs');
      const fd = openSync(image, 'r+');
      writeSync(fd, marker, 0, marker.length, MiB);
      closeSync(fd);

      const devMount = (): string | undefined => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((line) => line.split(' ')[4] === '/dev');
      const devBefore = devMount();
      const output = execFileSync('unshare', ['-m', '--propagation', 'private', process.execPath, container, image], { encoding: 'utf8' });
      const report = JSON.parse(output);
      expect(report.error?.stack).toBeUndefined();
      expect(report.before).toEqual(['loop-control', 'null']);
      expect(report.nodeExists).toBe(true);
      expect(report.partitionNode).toBe(true);
      expect(report.partitionBytes).toBe('container-bytes!');
      expect(report.info.backingFile).toBe(image);
      expect(report.listed).toBe(true);
      // From sysfs alone: the same geometry, no backing inode (only an open device tells it).
      expect(report.infoWithoutNode).toMatchObject({
        number: report.info.number,
        backingFile: image,
        backingInode: 0,
        offset: 0,
        size: 8 * MiB,
        partscan: true,
        major: 7,
        partitions: [{ path: `${report.path}p1`, number: 1, start: MiB, size: 2 * MiB }],
      });
      expect(report.detach.released).toBe(true);
      expect(devicesBackedBy(image)).toEqual([]);
      // This namespace's /dev was not touched (devtmpfs on a machine, a tmpfs in a real container).
      expect(devMount()).toBe(devBefore);
    });

    // podman and docker copy the host's nodes into the container's /dev when it starts: a
    // partition node there keeps numbers the kernel may since have given another device's
    // partition (minors on major 259 are handed out anew at every scan).
    it.skipIf(findTool('mkfs.ext4') === null)('mounts the partition sysfs names, not the one a stale node there points at, and replaces the node', () => {
      const image = dir.image('stale.img', 16 * MiB);
      writeMbr(image, 16 * MiB, [{ startBytes: MiB, sizeBytes: 8 * MiB }]);
      const content = join(dir.path, 'stale-content');
      mkdirSync(content, { recursive: true });
      writeFileSync(join(content, 'hello.txt'), 'from partition 1');
      execFileSync(findTool('mkfs.ext4')!, ['-q', '-F', '-d', content, '-E', `offset=${MiB}`, image, '8M']);
      const output = execFileSync('unshare', ['-m', '--propagation', 'private', process.execPath, join(__dirname, 'fixtures', 'stale-nodes.js'), image, 'hello.txt'], {
        encoding: 'utf8',
      });
      const report = JSON.parse(output);
      expect(report.error?.stack).toBeUndefined();
      expect(report.content).toBe('from partition 1');
      expect(report.node).toBe(report.sysfs);
      expect(report.leftovers).toEqual([]);
      expect(report.unmount.released).toBe(true);
      expect(devicesBackedBy(image)).toEqual([]);
    });

    it('says what is missing when /dev/loop-control is not there', () => {
      const image = dir.image('nocontrol.img', MiB);
      const output = execFileSync('unshare', ['-m', '--propagation', 'private', process.execPath, container, image, '--no-control'], {
        encoding: 'utf8',
      });
      const report = JSON.parse(output);
      expect(report.error.code).toBe('ERR_LOOP_NO_CONTROL');
      expect(report.error.message).toMatch(/root or CAP_SYS_ADMIN/);
      expect(devicesBackedBy(image)).toEqual([]);
    });
  });
});
