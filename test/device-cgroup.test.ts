// A container given some loop devices, not --privileged (docker and podman `--device`): its
// device cgroup refuses every other loop device, while the kernel's free device is chosen for
// the whole machine. Played with a v1 devices cgroup in a private mount namespace
// (fixtures/device-cgroup.js); read back from sysfs.
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { addDeviceSync, removeDeviceSync } from '../lib';
import { devicesBackedBy, privileged, suiteTempDir } from './helpers/kernel';

const fixture = join(__dirname, 'fixtures', 'device-cgroup.js');

interface Report {
  number?: number;
  backingFile?: string;
  detach?: { released: boolean };
  error?: { code: string; message: string; path?: string; device?: number; cause?: string };
}

function inContainer(options: { image: string; allow: number[]; device?: number; tmpfsDev?: boolean }): Report {
  const output = execFileSync('unshare', ['-m', '--propagation', 'private', process.execPath, fixture, JSON.stringify({ device: -1, tmpfsDev: false, ...options })], {
    encoding: 'utf8',
  });
  return JSON.parse(output) as Report;
}

describe.skipIf(!privileged())('in a device cgroup that allows only some loop devices', () => {
  const dir = suiteTempDir();
  let image: string;
  // A device of this file's own, made past every existing number, so that the kernel's free
  // device (the lowest) is never it: the one the container is given.
  let given: number;

  beforeAll(() => {
    image = dir.image('given.img', 1024 * 1024);
    const numbers = readdirSync('/sys/block')
      .map((name) => /^loop(\d+)$/.exec(name))
      .filter((match) => match !== null)
      .map((match) => Number(match[1]));
    given = Math.max(0, ...numbers) + 64;
    addDeviceSync(given);
  });

  afterAll(() => {
    removeDeviceSync(given);
  });

  it.each([
    ['a /dev of its own holding only the given nodes (--device)', true],
    ['every node in /dev, only the given one allowed', false],
  ])('attach takes the device it was given when the kernel offers one it may not open: %s', (_, tmpfsDev) => {
    const report = inContainer({ image, allow: [given], tmpfsDev });
    expect(report.error).toBeUndefined();
    expect(report.number).toBe(given);
    expect(report.backingFile).toBe(image);
    expect(report.detach?.released).toBe(true);
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('with no loop device allowed: ERR_LOOP_DEVICE_DENIED says which flag fixes it, and nothing is attached', () => {
    const report = inContainer({ image, allow: [], tmpfsDev: true });
    expect(report.error).toMatchObject({ code: 'ERR_LOOP_DEVICE_DENIED', cause: 'EPERM' });
    expect(report.error?.message).toMatch(/--device-cgroup-rule='b 7:\* rmw'/);
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('a named device it may not open: ERR_LOOP_DEVICE_DENIED for that device, no other taken', () => {
    const report = inContainer({ image, allow: [], device: given });
    expect(report.error).toMatchObject({ code: 'ERR_LOOP_DEVICE_DENIED', path: `/dev/loop${given}`, device: given, cause: 'EPERM' });
    expect(devicesBackedBy(image)).toEqual([]);
  });
});
