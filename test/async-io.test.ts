// The async forms must not block the event loop: between the call of a public async function and
// its settlement, no synchronous node:fs (or node:child_process) function may run. An image on a
// hung NFS server would otherwise freeze the whole process inside an "async" call.
import { closeSync, openSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';

const recorder = vi.hoisted(() => ({ on: false, calls: [] as string[] }));

/** The module with each *Sync function wrapped so that it records its calls while `recorder.on`. */
function recording<T extends object>(actual: T): T {
  const wrapped: Record<string, unknown> = { ...(actual as Record<string, unknown>) };
  for (const [name, value] of Object.entries(actual)) {
    if (!name.endsWith('Sync') || typeof value !== 'function') continue;
    const original = value as (...args: unknown[]) => unknown;
    const spy = function (this: unknown, ...args: unknown[]): unknown {
      if (recorder.on) recorder.calls.push(`${name}(${String(args[0])})`);
      return original.apply(this, args);
    };
    wrapped[name] = Object.assign(spy, original); // keeps realpathSync.native
  }
  return { ...wrapped, default: wrapped } as T;
}

vi.mock('node:fs', async (importOriginal) => recording(await importOriginal<object>()));
vi.mock('node:child_process', async (importOriginal) => recording(await importOriginal<object>()));

import * as io from '../lib/core/io';
import {
  attach,
  attachSync,
  find,
  info,
  list,
  mount,
  reconfigure,
  setCapacity,
  unmount,
  waitForUdev,
  type LoopDevice,
} from '../lib/index';
import { createImage, withImage } from '../lib/testing';
import { findTool, writeGpt, writeMbr } from './helpers/images';
import { privileged, RELEASE_WAIT_MS, suiteTempDir, testTime, udevRuns } from './helpers/kernel';

const MiB = 1024 * 1024;

/**
 * Runs one public async call and answers its result, failing the test (softly, so that it
 * goes on and cleans up what it made) if a synchronous node:fs or child_process function ran
 * between the call and its settlement.
 */
async function settled<T>(what: string, run: () => Promise<T>): Promise<T> {
  recorder.calls.length = 0;
  recorder.on = true;
  try {
    return await run();
  } finally {
    recorder.on = false;
    expect.soft([...recorder.calls], `${what} made synchronous calls`).toEqual([]);
  }
}

/** Like settled(), for a call that must fail: answers its error. */
async function rejected(what: string, run: () => Promise<unknown>): Promise<unknown> {
  try {
    await settled(what, run);
  } catch (error) {
    return error;
  }
  throw new Error(`${what} did not fail`);
}

const mkfsExt4 = findTool('mkfs.ext4');

describe.skipIf(!privileged())('async operations make no synchronous file-system call', () => {
  const dir = suiteTempDir();
  const attached: LoopDevice[] = [];

  afterAll(async () => {
    for (const device of attached) await device.detach().catch(() => undefined);
  });

  const gptImage = (name: string): string => {
    const path = join(dir.path, name);
    writeGpt(path, 16 * MiB, [{ startBytes: MiB, sizeBytes: 4 * MiB }, { startBytes: 5 * MiB, sizeBytes: 4 * MiB }]);
    return path;
  };

  it('the plain cycle makes no file-system call when the kernel releases at once, in either form', async () => {
    const image = dir.image('cycle.img', 4 * MiB);
    const steps: string[] = [];
    const spies = Object.entries(io).flatMap(([name, value]) =>
      typeof value === 'object' && value !== null && 'sync' in value
        ? (['sync', 'async'] as const).map((form) => vi.spyOn(value, form).mockName(`${name}.${form}`))
        : [],
    );
    // Where udev runs it opens each new device, and the kernel then releases it at udev's close:
    // detach and close wait for that (as they promise), reading sysfs, and close first looks in
    // the mount table (a mount holds the device on purpose: nothing to wait for), reading
    // /proc/self/mountinfo and stat-ing its sources under /dev. Those reads are the wait, and
    // nothing else may be read; without udev the release is at once and nothing is read.
    const isWaitRead = (args: unknown[]): boolean =>
      typeof args[0] === 'string' && (args[0].startsWith('/sys/') || args[0].startsWith('/dev/') || args[0] === '/proc/self/mountinfo');
    const waited = (): boolean => spies.some((spy) => spy.mock.calls.some(isWaitRead));
    try {
      const results = [
        attachSync(image).detachSync({ wait: RELEASE_WAIT_MS }),
        attachSync(image, { hold: true }).closeSync({ wait: RELEASE_WAIT_MS }),
        await (await attach(image)).detach({ wait: RELEASE_WAIT_MS }),
        await (await attach(image, { hold: true })).close({ wait: RELEASE_WAIT_MS }),
      ];
      expect(results.every((result) => result.released)).toBe(true);
      for (const spy of spies) {
        const calls = udevRuns() ? spy.mock.calls.filter((args) => !isWaitRead(args)) : spy.mock.calls;
        if (calls.length > 0) steps.push(spy.getMockName());
      }
      if (!udevRuns()) expect(waited()).toBe(false);
    } finally {
      for (const spy of spies) spy.mockRestore();
    }
    expect(steps).toEqual([]);
  });

  it('attach and detach, plain and holding', async () => {
    const image = dir.image('plain.img', 4 * MiB);
    const device = await settled('attach', () => attach(image));
    await settled('detach', () => device.detach());
    const held = await settled('attach hold', () => attach(image, { hold: true }));
    await settled('close', () => held.close());
  });

  it('attach with partscan (GPT and MBR), sectorSize auto, info, list, find', async () => {
    const gpt = gptImage('gpt.img');
    const mbr = join(dir.path, 'mbr.img');
    writeMbr(mbr, 16 * MiB, [{ startBytes: MiB, sizeBytes: 4 * MiB }]);
    for (const image of [gpt, mbr]) {
      const device = await settled('attach partscan', () => attach(image, { partscan: true }));
      attached.push(device);
      const state = await settled('info', () => info(device));
      expect(state.partitions.length).toBeGreaterThan(0);
      await settled('info by number', () => info(device.number));
      await settled('list', () => list());
      expect((await settled('find', () => find(image))).map((found) => found.number)).toContain(device.number);
      await settled('detach partscan', () => device.detach());
    }
    const auto = await settled("attach sectorSize 'auto'", () => attach(gpt, { sectorSize: 'auto' }));
    await settled('detach', () => auto.detach());
  });

  it('attach with reuse, and inMemory', async () => {
    const image = dir.image('reuse.img', 4 * MiB);
    const first = await settled('attach', () => attach(image));
    attached.push(first);
    const again = await settled('attach reuse', () => attach(image, { reuse: true }));
    expect(again.number).toBe(first.number);
    await settled('detach', () => first.detach());
    const memory = await settled('attach inMemory', () => attach(image, { inMemory: true }));
    await settled('close', () => memory.close());
  });

  it('a device named by another path, and one someone else holds open', async () => {
    const image = dir.image('named.img', 4 * MiB);
    const device = await settled('attach', () => attach(image, { hold: true }));
    attached.push(device);
    const link = join(dir.path, 'device-link');
    symlinkSync(device.path, link);
    await settled('info by a link to the node', () => info(link));
    const fd = openSync(device.path, 'r');
    try {
      // The kernel defers the release until our fd closes: close() waits and answers false.
      expect((await settled('close of a device held elsewhere', () => device.close({ wait: 20 }))).released).toBe(false);
    } finally {
      closeSync(fd);
    }
    const other = await settled('attach', () => attach(image));
    attached.push(other);
    const fd2 = openSync(other.path, 'r');
    try {
      expect((await settled('detach of a device held elsewhere', () => other.detach({ wait: 20 }))).released).toBe(false);
    } finally {
      closeSync(fd2);
    }
  });

  it('reconfigure, setCapacity and waitForUdev', async () => {
    const image = gptImage('change.img');
    const device = await settled('attach', () => attach(image));
    attached.push(device);
    await settled('reconfigure partscan', () => reconfigure(device, { partscan: true }));
    await settled('reconfigure label', () => reconfigure(device, { label: 'changed' }));
    await settled('setCapacity', () => setCapacity(device));
    await settled('waitForUdev', () => waitForUdev(device, { timeoutMs: testTime(30_000) }));
    await settled('detach', () => device.detach());
  });

  it.skipIf(mkfsExt4 === null)('mount and unmount (ext4), again on the same device, and the refusals', async () => {
    await withImage({ size: '32M', fstype: 'ext4' }, async (made) => {
      await made.device.close();
      const first = join(dir.path, 'mnt-a');
      const second = join(dir.path, 'mnt-b');
      const mounted = await settled('mount', () => mount(made.path, first, { mkdir: true }));
      const reused = await settled('mount reusing the device', () => mount(made.path, second, { mkdir: true }));
      expect(reused.reused).toBe(true);
      await settled('unmount of the reused one', () => reused.unmount());
      await settled('unmount', () => unmount(mounted.target));
    });
    const empty = dir.image('empty.img', 4 * MiB);
    expect(await rejected('mount of no filesystem', () => mount(empty, join(dir.path, 'mnt-c'), { mkdir: true }))).toMatchObject({ code: 'ERR_LOOP_UNKNOWN_FSTYPE' });
    expect(await rejected('mount of a missing partition', () => mount(empty, join(dir.path, 'mnt-d'), { mkdir: true, partition: 2 }))).toMatchObject({ code: 'ERR_LOOP_NO_PARTITION' });
    const gpt = gptImage('mount-gpt.img');
    expect(await rejected('mount of a partitioned disk', () => mount(gpt, join(dir.path, 'mnt-e'), { mkdir: true }))).toMatchObject({ code: 'ERR_LOOP_UNKNOWN_FSTYPE' });
  });

  it.skipIf(mkfsExt4 === null)('the testing fixture', async () => {
    const image = await settled('createImage', () => createImage({ size: '32M', partitions: 'gpt', fstype: 'ext4', mount: true }));
    await settled('its disposal', async () => {
      await image[Symbol.asyncDispose]();
    });
  });
});
