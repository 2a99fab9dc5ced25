// waitForUdev(): where udev runs (a distribution kernel's guest) it waits until udev has
// processed the current binding and its partitions; elsewhere it returns at once.
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

import { attach, attachSync, waitForUdev, waitForUdevSync } from '../lib/index';
import { writeGpt } from './helpers/images';
import { privileged, suiteTempDir, testTime, udevRuns } from './helpers/kernel';

const MiB = 1024 * 1024;

describe.skipIf(!privileged())('waitForUdev', () => {
  const dir = suiteTempDir();

  it('answers for the device and its partitions, sync and async: links to this binding where udev runs, none (at once) where it does not', async () => {
    const image = `${dir.path}/udev.img`;
    writeGpt(image, 16 * MiB, [
      { startBytes: 1 * MiB, sizeBytes: 4 * MiB },
      { startBytes: 6 * MiB, sizeBytes: 4 * MiB },
    ]);
    for (const form of ['async', 'sync'] as const) {
      await using device = form === 'async' ? await attach(image, { partscan: true }) : attachSync(image, { partscan: true });
      const started = Date.now();
      // Longer than the default 10 s: the suite's other files, running beside this one, bind
      // thousands of devices, and udev handles every event in turn; under emulation its queue
      // was minutes long (the arm64 guest: not caught up after 100 s while the stress and worker
      // tests ran).
      const options = { timeoutMs: testTime(60_000) };
      const state = form === 'async' ? await device.waitForUdev(options) : device.waitForUdevSync(options);
      expect(state.udev).toBe(udevRuns());
      if (!udevRuns()) {
        expect(state.links).toEqual([]);
        expect(Date.now() - started).toBeLessThan(50);
        continue;
      }
      // Kernels before 5.15 have no diskseq (0), and udev makes no by-diskseq links there.
      const diskseq = device.diskseq;
      const target = (link: string): string => resolve(link, '..', readlinkSync(link));
      if (diskseq !== 0) expect(target(`/dev/disk/by-diskseq/${diskseq}`)).toBe(device.path);
      // Each partition: processed (udev's database has it) and linked (by-partuuid: the GPT
      // gives every partition its own GUID; systemd 254+ also makes by-diskseq/N-partM).
      for (const partition of [1, 2]) {
        const dev = readFileSync(`/sys/block/loop${device.number}/loop${device.number}p${partition}/dev`, 'latin1').trim();
        expect(existsSync(`/run/udev/data/b${dev}`), `udev database entry of ${device.path}p${partition}`).toBe(true);
        expect(state.links.filter((link) => link.startsWith('/dev/disk/by-partuuid/') && target(link) === `${device.path}p${partition}`)).toHaveLength(1);
      }
      if (diskseq !== 0) expect(state.links).toContain(`/dev/disk/by-diskseq/${diskseq}`);
      expect(state.links.every((link) => [device.path, `${device.path}p1`, `${device.path}p2`].includes(target(link)))).toBe(true);
    }
  }, testTime(150_000));

  it('refuses a device that is not bound, and bad options, before waiting', async () => {
    const device = attachSync(dir.image('gone.img', MiB));
    device.detachSync();
    await expect(waitForUdev(device.number)).rejects.toMatchObject({ code: 'ERR_LOOP_NOT_ATTACHED' });
    expect(() => waitForUdevSync(0, { timeout: 5 } as object)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_OPTION' }));
  });
});
