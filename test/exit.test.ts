// detachOnExit kept wherever a thread or process ends: a worker terminated at any moment of
// its attaches (sync and async), process.exit() and a normal end on the main thread, SIGTERM;
// and never at the cost of a device someone else bound since. Read back from sysfs and
// /proc/self/fd.
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { attachSync, detachOnExit, detachSync, type LoopDevice } from '../lib';
import { addon } from '../lib/core/addon';
import { devicesBackedBy, interestingFds, privileged, repetitions, sysRead, tempDir, testTime, until, type TempDir } from './helpers/kernel';

// Under emulation (the arm64 guest) a worker takes seconds to start: fewer terminations there.
const TERMINATIONS = Number(process.env.LOOPDEV_TERMINATIONS ?? repetitions(150, 20));

const MiB = 1024 * 1024;
const fixture = join(__dirname, 'fixtures', 'exit-worker.js');

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The fixture as a process: its three device numbers, once printed, and its end. */
function child(image: string, end: string): { numbers: Promise<number[]>; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>; process: ReturnType<typeof spawn> } {
  const process = spawn(globalThis.process.execPath, [fixture, JSON.stringify({ image, form: 'process', end })], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  process.stderr!.on('data', (chunk: Buffer) => (stderr += chunk));
  const numbers = new Promise<number[]>((resolve) => process.stdout!.once('data', (chunk: Buffer) => resolve(JSON.parse(chunk.toString()))));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    process.on('exit', (code, signal) => resolve({ code, signal, stderr })),
  );
  return { numbers, exited, process };
}

describe.skipIf(!privileged())('detachOnExit', () => {
  let dir: TempDir;
  let image: string;
  let fdsBefore: string[];

  beforeAll(() => {
    dir = tempDir('loopdev-exit-');
    image = dir.image('plain.img', MiB);
    fdsBefore = interestingFds(dir.path);
  });

  afterAll(async () => {
    await until(() => devicesBackedBy(dir.path).length === 0, 5000);
    const leaked = devicesBackedBy(dir.path);
    dir.remove();
    expect(leaked).toEqual([]);
  });

  it.each(['sync', 'async'] as const)(
    `worker threads terminated at random moments of %s attaches with detachOnExit leave nothing bound or open (${TERMINATIONS} terminations)`,
    async (form) => {
      const started = Date.now();
      let roundsWithLeaks = 0;
      for (let round = 0; round < TERMINATIONS; round++) {
        const worker = new Worker(fixture, { workerData: { image, form }, stderr: true });
        let stderr = '';
        worker.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
        const exited = new Promise((resolve) => worker.on('exit', resolve));
        await new Promise((resolve) => worker.once('message', resolve));
        await sleep(Math.random() * 10);
        await worker.terminate();
        await exited;
        expect(stderr).toBe('');
        // The worker's teardown detached its devices before terminate() resolved: no waiting.
        // What a round leaves is counted and detached, so that every round is judged alone.
        const left = devicesBackedBy(image);
        if (left.length > 0) roundsWithLeaks++;
        for (const number of left) detachSync(number);
      }
      console.log(`${form} attaches: ${TERMINATIONS} worker terminations in ${Date.now() - started} ms, terminations that left a device bound: ${roundsWithLeaks}`);
      expect(roundsWithLeaks).toBe(0);
      expect(interestingFds(dir.path)).toEqual(fdsBefore);
    },
    // Each worker takes 250-500 ms to load the library on a busy 2-core machine.
    testTime(300_000),
  );

  it.each(['exit', 'return'] as const)('a process that ends by %s on the main thread leaves nothing bound', async (end) => {
    const run = child(image, end);
    const numbers = await run.numbers;
    expect(numbers).toHaveLength(3);
    const { code, stderr } = await run.exited;
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('a process killed by SIGTERM detaches its devices and still dies of the signal', async () => {
    const run = child(image, 'signal');
    const numbers = await run.numbers;
    for (const number of numbers) expect(sysRead(number, 'loop/backing_file')).toBe(image);
    run.process.kill('SIGTERM');
    const { signal, stderr } = await run.exited;
    expect(stderr).toBe('');
    expect(signal).toBe('SIGTERM');
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('a device whose binding a change moved (changeBacking) is still detached when its worker is terminated', async () => {
    const replacement = dir.image('replacement.img', MiB);
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const loopdev = require(workerData.dist);
       const device = loopdev.attachSync(workerData.image, { readOnly: true, detachOnExit: true });
       device.changeBackingSync(workerData.replacement);
       parentPort.postMessage(device.number);
       setTimeout(() => {}, 2 ** 31 - 1);`,
      { eval: true, workerData: { dist: join(__dirname, '..', 'dist', 'index.js'), image, replacement } },
    );
    const number = await new Promise<number>((resolve) => worker.once('message', resolve));
    expect(sysRead(number, 'loop/backing_file')).toBe(replacement);
    await worker.terminate();
    expect(devicesBackedBy(dir.path)).toEqual([]);
  });

  /** A worker that attaches `image` with detachOnExit, says the number, and idles until terminated. */
  async function attachingWorker(): Promise<{ worker: Worker; number: number }> {
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const loopdev = require(workerData.dist);
       parentPort.postMessage(loopdev.attachSync(workerData.image, { detachOnExit: true }).number);
       setTimeout(() => {}, 2 ** 31 - 1);`,
      { eval: true, workerData: { dist: join(__dirname, '..', 'dist', 'index.js'), image } },
    );
    return { worker, number: await new Promise<number>((resolve) => worker.once('message', resolve)) };
  }

  it('a device someone else has open for a moment (as udev does) is released when terminate() resolves: the teardown waits for their close', async () => {
    const { worker, number } = await attachingWorker();
    const opened = openSync(`/dev/loop${number}`, 'r');
    const closed = new Promise<void>((resolve) => setTimeout(() => resolve(closeSync(opened)), 200));
    await worker.terminate();
    // (By the image, not the number: once released, the number may be another test file's.)
    const left = devicesBackedBy(image);
    await closed;
    expect(left).toEqual([]);
  });

  it('process.exit() waits the same way for a close someone else makes a moment later', async () => {
    const run = child(image, 'stdin');
    const numbers = await run.numbers;
    const opened = openSync(`/dev/loop${numbers[0]}`, 'r');
    const closed = new Promise<void>((resolve) => setTimeout(() => resolve(closeSync(opened)), 200));
    run.process.stdin!.write('exit\n');
    const { code, stderr } = await run.exited;
    const left = devicesBackedBy(image);
    await closed;
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(left).toEqual([]);
  });

  it('a device someone else keeps open is left to the kernel after a bounded wait: AUTOCLEAR set, released at their close', async () => {
    const { worker, number } = await attachingWorker();
    const opened = openSync(`/dev/loop${number}`, 'r');
    try {
      await worker.terminate();
      expect(sysRead(number, 'loop/backing_file')).toBe(image);
      expect(sysRead(number, 'loop/autoclear')).toBe('1');
    } finally {
      closeSync(opened);
    }
    // The kernel's promise, not the library's: the last close unbinds it (udev's, if it probes).
    expect(await until(() => devicesBackedBy(image).length === 0, testTime(5000))).toBe(true);
  });

  it('detachOnExit() of a device that is not bound is refused before anything is registered', () => {
    const device = attachSync(image);
    device.detachSync();
    expect(() => detachOnExit(device)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_NOT_ATTACHED' }));
    // No such device: open(2) says so (a number nobody makes in a test).
    expect(() => detachOnExit((1 << 20) - 1)).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'open' }));
  });

  it('a device released and bound again by someone else since is left alone', async () => {
    const other = dir.image('other.img', MiB);
    const run = child(image, 'stdin');
    const numbers = await run.numbers;
    // Someone else (here this process) unbinds the child's devices and binds its own file to
    // them, under /dev/loop-control's lock, so that no cooperating tool running beside this
    // test (attach takes that lock) binds a freed number first.
    let lock = -1;
    const control = openSync('/dev/loop-control', 'r');
    const locked = () => {
      try {
        lock = addon.lockFile.sync(control);
        return true;
      } catch {
        return false;
      }
    };
    try {
      expect(await until(locked, testTime(10_000))).toBe(true);
    } finally {
      closeSync(control);
    }
    let ours: LoopDevice[];
    try {
      ours = numbers.map((number) => {
        detachSync(number);
        return attachSync(other, { device: number, lockControl: false });
      });
    } finally {
      addon.closeOwned.sync(lock);
    }
    run.process.stdin!.write('exit\n');
    const { code, stderr } = await run.exited;
    expect(stderr).toBe('');
    expect(code).toBe(0);
    try {
      for (const device of ours) expect(sysRead(device.number, 'loop/backing_file')).toBe(other);
    } finally {
      for (const device of ours) device.detachSync();
    }
    expect(devicesBackedBy(dir.path)).toEqual([]);
  });
});
