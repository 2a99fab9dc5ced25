// loopdev/testing never leaks what it made: a child `vitest run` over a project whose tests
// forget a dispose, time out inside withImage() and keep a detachOnExit device, in both of
// vitest's pools, leaves nothing bound, mounted or in its temp dir. The project uses this
// checkout as its node_modules/loopdev (the packed tarball is test/package.test.ts's subject;
// packing here would only add its minute).
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { addon } from '../lib/core/addon';
import { findTool } from './helpers/images';
import { devicesBackedBy, mountTable, privileged, tempDir, testTime, type TempDir } from './helpers/kernel';

const root = join(__dirname, '..');
const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');

/** This environment without what vitest sets for its own workers (VITEST_POOL_ID and the like). */
function outsideVitest(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('VITEST')));
}

describe.skipIf(!privileged() || findTool('mkfs.ext4') === null)('the fixture when vitest tears its workers down', () => {
  let dir: TempDir;

  beforeAll(() => {
    dir = tempDir('loopdev-leaky-');
  });

  afterAll(() => {
    const leaked = devicesBackedBy(dir.path);
    const mounted = mountTable().filter((line) => line.mountPoint.startsWith(`${dir.path}/`));
    if (mounted.length === 0) dir.remove();
    expect({ leaked, mounted }).toEqual({ leaked: [], mounted: [] });
  });

  it('a run SIGKILLed with an image made: the next process that makes one releases its device and deletes its directory', async () => {
    const child = join(__dirname, 'fixtures', 'fixture-child.js');
    // TMPDIR: the fixture's images of both processes under the test's own directory.
    const env = { ...outsideVitest(), TMPDIR: dir.path };
    const killed = spawn(process.execPath, [child], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const made = await new Promise<{ path: string; number: number; dir: string }>((resolve, reject) => {
      let out = '';
      killed.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('\n')) resolve(JSON.parse(out));
      });
      killed.on('exit', () => reject(new Error('the child ended before it made its image')));
    });
    expect(devicesBackedBy(made.path)).toEqual([made.number]);
    killed.kill('SIGKILL');
    await new Promise((resolve) => killed.on('exit', resolve));
    // Nothing ran in the child at its death: its device and directory are still there.
    expect(devicesBackedBy(made.path)).toEqual([made.number]);
    expect(existsSync(made.dir)).toBe(true);

    const next = spawn(process.execPath, [child], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const second = await new Promise<{ path: string }>((resolve, reject) => {
      let out = '';
      next.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('\n')) resolve(JSON.parse(out));
      });
      next.on('exit', () => reject(new Error('the second child ended before it made its image')));
    });
    try {
      expect(devicesBackedBy(made.path)).toEqual([]);
      expect(existsSync(made.dir)).toBe(false);
    } finally {
      next.kill('SIGTERM');
      await new Promise((resolve) => next.on('exit', resolve));
    }
    // SIGTERM: the second child's own teardown released its image.
    expect(devicesBackedBy(second.path)).toEqual([]);
  }, testTime(30_000));

  it("the fixture's temp dir is deleted without following a symbolic link out of it or entering a mount", () => {
    const outside = join(dir.path, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'keep'), 'kept');
    const made = addon.makeTempDir.sync(join(dir.path, 'made-'));
    mkdirSync(join(made, 'nested', 'deeper'), { recursive: true });
    writeFileSync(join(made, 'nested', 'deeper', 'file'), 'gone');
    symlinkSync(outside, join(made, 'link-to-dir'));
    symlinkSync(join(outside, 'keep'), join(made, 'nested', 'link-to-file'));
    const tmpfs = join(made, 'mounted');
    mkdirSync(tmpfs);
    spawnSync('mount', ['-t', 'tmpfs', 'loopdev-test', tmpfs]);
    writeFileSync(join(tmpfs, 'inside-a-mount'), 'kept');
    try {
      // A mount inside stays, and so does the directory that holds it.
      expect(() => addon.removeTempDir.sync(made)).toThrow(expect.objectContaining({ code: 'ENOTEMPTY', syscall: 'rmdir' }));
      expect(readFileSync(join(tmpfs, 'inside-a-mount'), 'utf8')).toBe('kept');
      expect(readdirSync(made)).toEqual(['mounted']);
    } finally {
      spawnSync('umount', [tmpfs]);
    }
    addon.removeTempDir.sync(made);
    expect(existsSync(made)).toBe(false);
    expect(readFileSync(join(outside, 'keep'), 'utf8')).toBe('kept');
    // Only a directory makeTempDir() made (and has not deleted yet) is deleted.
    expect(() => addon.removeTempDir.sync(outside)).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_ARGUMENT' }));
    expect(existsSync(outside)).toBe(true);
  });

  it.each(['threads', 'forks'] as const)(
    'with --pool %s: nothing bound, mounted or left in the temp dir afterwards',
    (pool) => {
      const project = join(dir.path, pool, 'project');
      const temp = join(dir.path, pool, 'tmp');
      mkdirSync(join(project, 'node_modules'), { recursive: true });
      mkdirSync(temp, { recursive: true });
      symlinkSync(root, join(project, 'node_modules', 'loopdev'));
      copyFileSync(join(__dirname, 'fixtures', 'leaky-project', 'leaky.test.js'), join(project, 'leaky.test.js'));
      const plain = dir.image(`${pool}-plain.img`, 1024 * 1024);

      // TMPDIR: the fixture makes its directories under os.tmpdir(), here one of this test's own.
      const run = spawnSync(process.execPath, [vitest, 'run', '--root', project, '--globals', '--pool', pool], {
        encoding: 'utf8',
        env: { ...outsideVitest(), TMPDIR: temp, LEAKY_PLAIN_IMAGE: plain, CI: '1', NO_COLOR: '1' },
        timeout: testTime(120_000),
      });
      const output = `${run.stdout}${run.stderr}`;
      // The timed-out test fails; the other two pass.
      expect(output).toMatch(/Tests\s+1 failed \| 2 passed/);
      expect(output).toContain('Test timed out in 1000ms');

      expect(devicesBackedBy(dir.path)).toEqual([]);
      expect(mountTable().filter((line) => line.mountPoint.startsWith(`${dir.path}/`))).toEqual([]);
      expect(readdirSync(temp)).toEqual([]);
    },
    testTime(180_000),
  );
});
