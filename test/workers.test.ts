// Threads that go away with calls in flight: a Worker terminated, or process.exit() from a
// worker or the main thread while list, info, attach and mount are on the thread pool. The
// process must live on, and nothing may stay bound, mounted (unless the mount completed) or
// open: read back from sysfs, /proc/self/mountinfo and /proc/self/fd.
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { findTool } from './helpers/images';
import { devicesBackedBy, interestingFds, mountTable, privileged, repetitions, tempDir, testTime, until, type TempDir } from './helpers/kernel';

const MiB = 1024 * 1024;
const fixture = join(__dirname, 'fixtures', 'worker-mix.js');
const mkfsExt4 = findTool('mkfs.ext4');

/** Unmounts whatever is mounted under `dir` (mounts that completed before their thread went); answers how many. */
function unmountUnder(dir: string): number {
  let count = 0;
  for (;;) {
    const line = mountTable().find((entry) => entry.mountPoint.startsWith(`${dir}/`));
    if (line === undefined) return count;
    execFileSync('umount', [line.mountPoint]);
    count++;
  }
}

const TERMINATIONS = repetitions(80, 20);

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(!privileged() || mkfsExt4 === null)('threads that go away with calls in flight', () => {
  let dir: TempDir;
  let image: string;
  let fsImage: string;
  let fdsBefore: string[];

  beforeAll(() => {
    dir = tempDir('loopdev-workers-');
    image = dir.image('plain.img', 4 * MiB);
    fsImage = dir.image('fs.img', 16 * MiB);
    execFileSync(mkfsExt4!, ['-q', '-F', fsImage]);
    fdsBefore = interestingFds(dir.path);
  });

  afterAll(async () => {
    unmountUnder(dir.path);
    await until(() => devicesBackedBy(dir.path).length === 0, 5000);
    const leaked = devicesBackedBy(dir.path);
    if (mountTable().every((line) => !line.mountPoint.startsWith(`${dir.path}/`))) dir.remove();
    expect(leaked).toEqual([]);
  });

  /** After the threads are gone: mounts that completed are unmounted, then nothing may be left. */
  async function expectNothingLeft(): Promise<number> {
    const mounts = unmountUnder(dir.path);
    // An unmounted AUTOCLEAR device is released at once; a held one at its fd's close, which
    // the addon's teardown of the worker made.
    expect(await until(() => devicesBackedBy(dir.path).length === 0, 10_000)).toBe(true);
    expect(interestingFds(dir.path)).toEqual(fdsBefore);
    return mounts;
  }

  it(`terminating workers at random moments of mixed async calls (${TERMINATIONS} times) never takes the process down and leaves nothing`, async () => {
    let completedMounts = 0;
    for (let round = 0; round < TERMINATIONS; round++) {
      const selfExit = round % 2 === 1;
      const worker = new Worker(fixture, {
        workerData: { mode: 'mix', image, fsImage, mountDir: join(dir.path, 'mnt', String(round)), exitAfterMs: selfExit ? 5 + Math.random() * 60 : undefined },
        stderr: true,
      });
      let stderr = '';
      worker.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
      const exited = new Promise<number>((resolve) => worker.on('exit', resolve));
      await new Promise((resolve) => worker.once('online', resolve));
      if (selfExit) {
        expect(await exited).toBe(0);
      } else {
        await sleep(5 + Math.random() * 60);
        await worker.terminate();
        await exited;
      }
      expect(stderr).toBe('');
      if (round % 10 === 9) completedMounts += await expectNothingLeft();
    }
    console.log(`worker terminations: ${TERMINATIONS} (half terminate(), half process.exit() in the worker); mounts left by completed calls: ${completedMounts}`);
  }, testTime(120_000));

  it('two attaches and a mount still in flight when a worker calls process.exit() are undone (10 workers)', async () => {
    for (let round = 0; round < 10; round++) {
      const worker = new Worker(fixture, { workerData: { mode: 'exit', image, fsImage, mountDir: join(dir.path, 'exit', String(round)) } });
      expect(await new Promise((resolve) => worker.on('exit', resolve))).toBe(0);
    }
    await expectNothingLeft();
  });

  it('the same in flight at process.exit() on the main thread (5 processes)', async () => {
    for (let round = 0; round < 5; round++) {
      const options = { mode: 'exit', image, fsImage, mountDir: join(dir.path, 'main-exit', String(round)) };
      const child = spawnSync(process.execPath, [fixture, JSON.stringify(options)], { encoding: 'utf8' });
      expect(child.status, child.stderr).toBe(0);
      expect(child.stderr).toBe('');
    }
    await expectNothingLeft();
  });
});
