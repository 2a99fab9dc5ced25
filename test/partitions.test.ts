// partscan on a kernel without partition-table parsers: the library reads the MBR/GPT and
// adds the partitions with BLKPG, and nothing is left behind at detach.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';

import { describe, expect, it } from 'vitest';

import { attach, attachSync, detachSync } from '../lib/index';
import { fillPattern, writeGpt, writeMbr } from './helpers/images';
import { privileged, readBytes, RELEASE_WAIT_MS, sysBound, sysBoundTo, sysRead, suiteTempDir } from './helpers/kernel';

const MiB = 1024 * 1024;

/** loopNpM entries in sysfs, read without the library. */
function sysPartitions(number: number): string[] {
  try {
    return readdirSync(`/sys/block/loop${number}`).filter((name) => name.startsWith(`loop${number}p`)).sort();
  } catch {
    return [];
  }
}

/** The backing file sysfs names for /sys/block/NAME, or undefined when unbound. */
function sysBacking(name: string): string | undefined {
  try {
    return readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * Released means the device's partitions are gone too. Other files running beside this one may
 * have been given the number since: partitions there are theirs when it is bound to another file.
 */
function expectNoPartitionsLeft(number: number, image: string): void {
  const left = sysPartitions(number);
  if (left.length > 0) expect(sysBound(number) && !sysBoundTo(number, image), `partitions of ours left: ${left.join(', ')}`).toBe(true);
}

describe.skipIf(!privileged())('partitions', () => {
  // Every image lives here; afterwards nothing may still be bound to one of them.
  const dir = suiteTempDir();

  it('MBR: partitions appear with the right geometry and bytes, and go away at detach', () => {
    const image = dir.image('mbr.img', 16 * MiB);
    writeMbr(image, 16 * MiB, [
      { startBytes: MiB, sizeBytes: 4 * MiB },
      { startBytes: 6 * MiB, sizeBytes: 8 * MiB },
    ]);
    const first = fillPattern(image, MiB, 1024, 'p1');
    const second = fillPattern(image, 6 * MiB, 1024, 'p2');
    const device = attachSync(image, { partscan: true });
    try {
      expect(sysPartitions(device.number)).toEqual([`loop${device.number}p1`, `loop${device.number}p2`]);
      expect(sysRead(device.number, `loop${device.number}p2/start`)).toBe(String((6 * MiB) / 512));
      expect(sysRead(device.number, `loop${device.number}p2/size`)).toBe(String((8 * MiB) / 512));
      expect(readBytes(`${device.path}p1`, 0, 1024).equals(first)).toBe(true);
      expect(readBytes(`${device.path}p2`, 0, 1024).equals(second)).toBe(true);
      expect(device.infoSync().partitions).toEqual([
        { path: `${device.path}p1`, number: 1, start: MiB, size: 4 * MiB },
        { path: `${device.path}p2`, number: 2, start: 6 * MiB, size: 8 * MiB },
      ]);
    } finally {
      expect(device.detachSync({ wait: RELEASE_WAIT_MS }).released).toBe(true);
    }
    expectNoPartitionsLeft(device.number, image);
  });

  it('GPT with 4096-byte sectors, attached with an offset, through the async API', async () => {
    const image = dir.image('gpt.img', 40 * MiB);
    const inner = dir.image('gpt-inner.img', 32 * MiB);
    writeGpt(inner, 32 * MiB, [
      { startBytes: MiB, sizeBytes: 2 * MiB },
      { startBytes: 4 * MiB, sizeBytes: 2 * MiB },
      { startBytes: 8 * MiB, sizeBytes: 16 * MiB },
    ], 4096);
    // Place the GPT disk 8 MiB into a bigger file, so the table is read at the offset.
    const { openSync, readSync, writeSync, closeSync } = await import('node:fs');
    const source = openSync(inner, 'r');
    const target = openSync(image, 'r+');
    const buffer = Buffer.alloc(MiB);
    for (let position = 0; position < 32 * MiB; position += MiB) {
      const read = readSync(source, buffer, 0, MiB, position);
      if (buffer.some((byte) => byte !== 0)) writeSync(target, buffer, 0, read, 8 * MiB + position);
    }
    closeSync(source);
    closeSync(target);
    const third = fillPattern(image, 8 * MiB + 8 * MiB, 4096, 'gpt3');

    const device = await attach(image, { partscan: true, offset: 8 * MiB, sectorSize: 4096 });
    try {
      const info = await device.info();
      expect(info.partitions.map((part) => [part.number, part.start, part.size])).toEqual([
        [1, MiB, 2 * MiB],
        [2, 4 * MiB, 2 * MiB],
        [3, 8 * MiB, 16 * MiB],
      ]);
      expect(readBytes(`${device.path}p3`, 0, 4096).equals(third)).toBe(true);
    } finally {
      expect((await device.detach({ wait: RELEASE_WAIT_MS })).released).toBe(true);
    }
    expectNoPartitionsLeft(device.number, image);
  });

  it('an image without a table gets no partitions', () => {
    const image = dir.image('bare.img', 4 * MiB);
    const device = attachSync(image, { partscan: true });
    try {
      expect(sysPartitions(device.number)).toEqual([]);
      expect(device.infoSync().partitions).toEqual([]);
    } finally {
      device.detachSync();
    }
  });

  it('an MBR is found through a FileHandle too, and a file too short for a sector has none', async () => {
    const image = dir.image('fd.img', 8 * MiB);
    writeMbr(image, 8 * MiB, [{ startBytes: MiB, sizeBytes: 2 * MiB }]);
    const handle = await open(image, 'r+');
    try {
      const device = await attach(handle, { partscan: true });
      try {
        expect(sysPartitions(device.number)).toEqual([`loop${device.number}p1`]);
      } finally {
        await device.detach();
      }
    } finally {
      await handle.close();
    }
    // 511 bytes: no sector to hold a signature (the device is 0 bytes).
    const tiny = dir.image('tiny.img', 511);
    const device = attachSync(tiny, { partscan: true });
    try {
      expect(sysPartitions(device.number)).toEqual([]);
    } finally {
      device.detachSync();
    }
  });

  it('a table that cannot be read is an error before anything is attached', () => {
    // The look for a table is part of the attach step, after its checks of the file: a
    // directory is refused as without partscan (EISDIR from open; read-only, by the check).
    const before = readdirSync('/sys/block').filter((name) => /^loop\d+$/.test(name) && sysBacking(name) === dir.path);
    expect(() => attachSync(dir.path, { partscan: true })).toThrow(expect.objectContaining({ code: 'EISDIR', syscall: 'open', path: dir.path }));
    expect(() => attachSync(dir.path, { partscan: true, readOnly: true })).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_BACKING', path: dir.path }));
    expect(readdirSync('/sys/block').filter((name) => /^loop\d+$/.test(name) && sysBacking(name) === dir.path)).toEqual(before);
    // A FIFO does not hang the look for a table, and is refused as attach refuses it.
    const fifo = `${dir.path}/fifo`;
    execFileSync('mkfifo', [fifo]);
    expect(() => attachSync(fifo, { partscan: true })).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_BACKING', path: fifo }));
  });

  it('with hold, the kernel drops the partitions itself when the handle closes (PARTSCAN)', async () => {
    const image = dir.image('held.img', 8 * MiB);
    writeMbr(image, 8 * MiB, [{ startBytes: MiB, sizeBytes: 2 * MiB }]);
    const device = attachSync(image, { partscan: true, hold: true });
    expect(sysPartitions(device.number)).toEqual([`loop${device.number}p1`]);
    expect(device.closeSync({ wait: RELEASE_WAIT_MS }).released).toBe(true);
    expectNoPartitionsLeft(device.number, image);
    expect(sysBoundTo(device.number, image)).toBe(false);
  });

  it('detaching by path also leaves no partition behind', () => {
    const image = dir.image('bypath.img', 8 * MiB);
    writeMbr(image, 8 * MiB, [{ startBytes: MiB, sizeBytes: 2 * MiB }]);
    const device = attachSync(image, { partscan: true });
    expect(sysPartitions(device.number)).toEqual([`loop${device.number}p1`]);
    expect(detachSync(device.path, { wait: RELEASE_WAIT_MS }).released).toBe(true);
    expectNoPartitionsLeft(device.number, image);
  });
});
