// The suite's container claims in a real container runtime: podman (Debian's package), run where
// `npm run vm` boots a distribution kernel with udev and podman is installed (.ci/guests installs
// it in the trixie guest and sets LOOPDEV_PODMAN=1; vitest.config.ts leaves this file out
// elsewhere). The containers' root file system is the guest's own, under an overlay, so no
// registry is needed. What is checked on the guest afterwards comes from sysfs: nothing left
// bound to a file the containers made.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { addDeviceSync, removeDeviceSync } from '../lib';
import { devicesBackedBy, testTime } from './helpers/kernel';

const ROOT = join(__dirname, '..');
const fixture = join(__dirname, 'fixtures', 'in-container.js');

describe('podman', () => {
  let work: string;
  let rootfs: string;
  let mountedCgroup2 = false;

  /** podman run with the guest's root file system (copy-on-write) and this repository and Node inside. */
  function podman(flags: string[], command: string[]): { status: number | null; stdout: string; stderr: string } {
    const node = dirname(process.execPath);
    const result = spawnSync(
      'podman',
      [
        '--cgroup-manager=cgroupfs',
        '--events-backend=file',
        'run',
        '--rm',
        '--network=none',
        '--security-opt=label=disable',
        ...flags,
        '-v', `${ROOT}:${ROOT}`,
        '-v', `${node}:${node}:ro`,
        '-v', `${work}:${work}`,
        // udev runs on this machine: the tests inside see it as a container given /run/udev does.
        '-v', '/run/udev:/run/udev:ro',
        '-w', ROOT,
        // Every file the container makes is under `work` (TMPDIR too): what is left bound to one
        // of them is the container's leak; other test files bind their own devices meanwhile.
        '-e', `TMPDIR=${work}`,
        '-e', 'LOOPDEV_REQUIRE_PRIVILEGED=1',
        '-e', `LOOPDEV_GUEST_EMULATED=${process.env.LOOPDEV_GUEST_EMULATED ?? ''}`,
        '--rootfs', `${rootfs}:O`,
        process.execPath,
        ...command,
      ],
      { encoding: 'utf8', timeout: testTime(600_000) },
    );
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  beforeAll(() => {
    // Podman 5 needs the unified hierarchy, which the guest's init does not mount.
    if (!readFileSync('/proc/self/mountinfo', 'utf8').includes(' /sys/fs/cgroup ')) {
      execFileSync('mount', ['-t', 'cgroup2', 'cgroup2', '/sys/fs/cgroup']);
      mountedCgroup2 = true;
    }
    work = mkdtempSync(join(tmpdir(), 'loopdev-podman-'));
    rootfs = mkdtempSync(join(tmpdir(), 'loopdev-rootfs-'));
    // The root file system alone (not /proc, /sys, /dev or the shares mounted on it).
    execFileSync('mount', ['--bind', '/', rootfs]);
  });

  afterAll(() => {
    execFileSync('umount', [rootfs]);
    rmSync(rootfs, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
    if (mountedCgroup2) execFileSync('umount', ['/sys/fs/cgroup']);
  });

  it('--privileged: attaches past the device nodes the container started with, partitions and a mount included, and leaves nothing bound', () => {
    const run = podman(['--privileged'], [fixture, JSON.stringify({ dir: work, case: 'privileged' })]);
    expect(run.stderr).not.toMatch(/Error/);
    expect(run.status).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report.error).toBeUndefined();
    // More devices than /dev had when the container started: the rest had no node until the library made it.
    expect(report.numbers.length).toBeGreaterThan(report.nodesAtStart.length);
    expect(report.madeNodes.length).toBeGreaterThan(0);
    expect(report.partitionNode).toBe(true);
    expect(report.mounted).toBe('written in a container');
    expect(report.released).toBe(true);
    expect(devicesBackedBy(work)).toEqual([]);
  });

  it('--privileged: the files that attach, partition, mount and use the fixture pass inside it', () => {
    const run = podman(['--privileged'], [join(ROOT, 'node_modules', 'vitest', 'vitest.mjs'), 'run', 'test/core.test.ts', 'test/partitions.test.ts', 'test/mount.test.ts', 'test/testing.test.ts']);
    // vitest reports failures on stderr.
    const failed = run.stderr.indexOf('Failed Tests');
    expect(run.status, failed >= 0 ? run.stderr.slice(failed, failed + 8000) : run.stdout.slice(-4000)).toBe(0);
    expect(devicesBackedBy(work)).toEqual([]);
  });

  describe('without --privileged, given devices with --device (CAP_SYS_ADMIN added)', () => {
    let given: number;

    beforeAll(() => {
      // A device past every existing number: the kernel's free device is never it.
      given = Math.max(0, ...readdirSync('/sys/block').map((name) => Number(/^loop(\d+)$/.exec(name)?.[1] ?? 0))) + 16;
      addDeviceSync(given);
    });

    afterAll(() => {
      removeDeviceSync(given);
    });

    const unprivileged = (flags: string[]) =>
      podman(['--cap-add=SYS_ADMIN', '--device=/dev/loop-control', ...flags], [fixture, JSON.stringify({ dir: work, case: 'attach' })]);

    it('takes the device it was given when the kernel offers one the container may not open', () => {
      const run = unprivileged([`--device=/dev/loop${given}`]);
      expect(run.status, run.stderr).toBe(0);
      const report = JSON.parse(run.stdout);
      expect(report.error).toBeUndefined();
      expect(report.numbers).toEqual([given]);
      expect(report.released).toBe(true);
      expect(devicesBackedBy(work)).toEqual([]);
    });

    it('given no loop device: ERR_LOOP_DEVICE_DENIED names the rule that fixes it, and nothing is bound', () => {
      const run = unprivileged([]);
      const report = JSON.parse(run.stdout);
      expect(report.error).toMatchObject({ code: 'ERR_LOOP_DEVICE_DENIED' });
      expect(report.error.message).toMatch(/--device-cgroup-rule='b 7:\* rmw'.*--cap-add MKNOD/);
      expect(devicesBackedBy(work)).toEqual([]);
    });

    it("with what the error names (--device-cgroup-rule='b 7:* rmw', --cap-add MKNOD), any free device works: its node is made", () => {
      const run = unprivileged(['--device-cgroup-rule=b 7:* rmw', '--cap-add=MKNOD']);
      expect(run.status, run.stderr).toBe(0);
      const report = JSON.parse(run.stdout);
      expect(report.error).toBeUndefined();
      expect(report.numbers).toHaveLength(1);
      expect(report.released).toBe(true);
      expect(devicesBackedBy(work)).toEqual([]);
    });
  });
});
