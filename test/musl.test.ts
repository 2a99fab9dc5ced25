// The x64 musl binary loaded and used by a musl runtime: Bun's musl build (from npm) on
// Debian's musl loader (apt: musl). What the harness needs: /lib/ld-musl-x86_64.so.1, Bun's
// musl package, and a C++ runtime for Bun, which Debian does not ship for musl: its glibc
// libstdc++ and libgcc_s serve, beside a test-only shim for the few glibc symbols they ask for
// (test/fixtures/musl-shim.c, built with the zig that makes the prebuilt binaries). The library
// runs from a package root of its own holding only the musl binary, so the loader's own choice
// (its C library read from Bun's program interpreter) is what is tested.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readOsRelease, sourceBuildCommand } from '../lib/core/source-build';
import { devicesBackedBy, privileged, tempDir, testTime, type TempDir } from './helpers/kernel';
import { runtimeBinary } from './helpers/runtimes';

const root = join(__dirname, '..');
// The zig that makes the prebuilt binaries (a CommonJS script, untyped).
const { zig, zigEnv } = createRequire(__filename)('../scripts/zig-build.js') as { zig: () => string; zigEnv: () => NodeJS.ProcessEnv };
const LOADER = '/lib/ld-musl-x86_64.so.1';
const binary = join(root, 'prebuilds', 'linux-x64', 'loopdev.musl.node');
const BUN_MUSL = { name: 'bun' as const, spec: '@oven/bun-linux-x64-musl@1.4', member: 'package/bin/bun' };

const missing = process.arch !== 'x64' ? 'an x64 host' : !existsSync(LOADER) ? `${LOADER} (apt-get install musl)` : !existsSync(binary) ? `${binary} (node scripts/zig-build.js --target x64-musl)` : undefined;

/** A library of glibc's this process has mapped (its libstdc++ and libgcc_s are Debian's). */
function mappedLibrary(name: string): string {
  const found = new RegExp(`/\\S*/${name.replace(/[.+]/g, '\\$&')}$`, 'm').exec(readFileSync('/proc/self/maps', 'utf8'))?.[0];
  const fallback = ['/usr/lib/x86_64-linux-gnu', '/lib/x86_64-linux-gnu'].map((dir) => join(dir, name)).find((file) => existsSync(file));
  if (!found && !fallback) throw new Error(`${name} not found`);
  return found ?? fallback!;
}

describe.skipIf(!privileged() || missing !== undefined)(`a musl runtime (needs ${missing ?? 'nothing more'})`, () => {
  let dir: TempDir;
  let bun: string;
  let runtime: string;
  let pkg: string;
  let image: string;

  beforeAll(() => {
    dir = tempDir('loopdev-musl-');
    bun = runtimeBinary(BUN_MUSL);
    runtime = join(dir.path, 'runtime');
    mkdirSync(runtime);
    copyFileSync(mappedLibrary('libstdc++.so.6'), join(runtime, 'libstdc++.so.6'));
    copyFileSync(mappedLibrary('libgcc_s.so.1'), join(runtime, 'libgcc_s.so.1'));
    execFileSync(zig(), ['cc', '-target', 'x86_64-linux-musl', '-shared', '-fPIC', '-O2', '-Wl,-soname,ld-linux-x86-64.so.2', '-o', join(runtime, 'ld-linux-x86-64.so.2'), join(__dirname, 'fixtures', 'musl-shim.c')], { env: zigEnv(), stdio: 'pipe' });
    pkg = join(dir.path, 'package');
    cpSync(join(root, 'dist'), join(pkg, 'dist'), { recursive: true });
    mkdirSync(join(pkg, 'prebuilds', 'linux-x64'), { recursive: true });
    copyFileSync(binary, join(pkg, 'prebuilds', 'linux-x64', 'loopdev.musl.node'));
    image = dir.image('disk.img', 1024 * 1024);
  }, testTime(300_000));

  afterAll(() => {
    const leaked = image ? devicesBackedBy(image) : [];
    dir?.remove();
    expect(leaked).toEqual([]);
  });

  /** Runs `script` (CommonJS, in the package root) under Bun on musl; its JSON output. */
  function run(script: string): unknown {
    writeFileSync(join(pkg, 'run.cjs'), script);
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'LOOPDEV_ADDON_PATH' && name !== 'npm_config_build_from_source'));
    // Bun's own program interpreter is musl's loader: started as Alpine starts it.
    return JSON.parse(execFileSync(bun, [join(pkg, 'run.cjs')], { cwd: pkg, encoding: 'utf8', env: { ...env, LD_LIBRARY_PATH: runtime } }));
  }

  it("Bun runs on musl: musl's libc is mapped, glibc's is not", () => {
    const output = run(`const maps = require('fs').readFileSync('/proc/self/maps', 'utf8');
      console.log(JSON.stringify({ musl: /-linux-musl\\/libc\\.so|ld-musl-/.test(maps), glibc: /libc\\.so\\.6/.test(maps) }));`);
    expect(output).toEqual({ musl: true, glibc: false });
  });

  it('the loader takes loopdev.musl.node, and attach, info, list and detach work through the library', () => {
    const output = run(`const { attachSync, infoSync, listSync } = require('./dist/index.js');
      const device = attachSync(${JSON.stringify(image)}, { readOnly: true });
      const { size, readOnly, backingFile } = infoSync(device);
      const listed = listSync().filter((info) => info.path === device.path).map((info) => info.backingFile);
      const bound = require('fs').existsSync('/sys/block/' + device.path.slice(5) + '/loop/backing_file');
      const result = device.detachSync();
      const addon = require('fs').readFileSync('/proc/self/maps', 'utf8').match(/\\S*loopdev\\.\\w+\\.node/)[0];
      console.log(JSON.stringify({ size, readOnly, backingFile, listed, bound, result, addon }));`);
    expect(output).toMatchObject({
      size: 1024 * 1024,
      readOnly: true,
      backingFile: image,
      listed: [image],
      bound: true,
      result: { wasBound: true, released: true },
      addon: join(pkg, 'prebuilds', 'linux-x64', 'loopdev.musl.node'),
    });
    expect(devicesBackedBy(image)).toEqual([]);
  });

  it('with no binary: the message names musl and what was tried', () => {
    rmSync(join(pkg, 'prebuilds'), { recursive: true });
    const output = run(`try { require('./dist/index.js').listSync(); console.log('"loaded"'); }
      catch (error) { console.log(JSON.stringify({ code: error.code, message: error.message })); }`);
    expect(output).toEqual({
      code: 'ERR_LOOP_NATIVE_LOAD',
      message: [
        // Debian's musl has no /etc/alpine-release: the version is not known.
        'no loopdev addon binary loads here: linux x64 with musl.',
        'Tried:',
        '  build/Release/loopdev.node: not there',
        '  build/Debug/loopdev.node: not there',
        '  prebuilds/linux-x64/loopdev.musl.node: not there',
        `Build it from source: ${sourceBuildCommand(readOsRelease())}`,
      ].join('\n'),
    });
  });
  // A simulated Alpine: no python3, make or g++ on PATH, npm installing the packed tarball
  // (forced down the source-build path where scripts run, or with scripts blocked), then a musl
  // runtime loading the installed package.
  describe.each([
    { mode: 'the install script forced to build from source', args: ['--foreground-scripts'], env: { npm_config_build_from_source: 'true' } },
    { mode: 'scripts blocked', args: ['--ignore-scripts'], env: {} },
  ])('the packed tarball, installed with $mode', ({ args, env }) => {
    let project: string;
    let printed: string;

    beforeAll(() => {
      const work = join(dir.path, `alpine-${args[0]!.slice(2)}`);
      const bin = join(work, 'bin');
      mkdirSync(bin, { recursive: true });
      for (const [name, target] of [['node', process.execPath], ['npm', execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim()], ['sh', '/bin/sh']] as const) symlinkSync(target, join(bin, name));
      for (const tool of ['python3', 'make', 'g++', 'cc']) expect(spawnSync('sh', ['-c', `command -v ${tool}`], { env: { PATH: bin } }).status).not.toBe(0);
      execFileSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', work], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
      project = join(work, 'consumer');
      mkdirSync(project);
      writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
      const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(LOOPDEV_ADDON_PATH|npm_config_build_from_source|PATH)$/.test(name)));
      const result = spawnSync('npm', ['install', '--prefer-offline', ...args, join(work, 'loopdev-0.1.0.tgz')], { cwd: project, encoding: 'utf8', env: { ...clean, ...env, PATH: bin } });
      printed = `${result.stdout}${result.stderr}`;
      expect(result.status, printed).toBe(0);
    }, testTime(180_000));

    it('the install succeeds and builds nothing', () => {
      expect(existsSync(join(project, 'node_modules', 'loopdev', 'build'))).toBe(false);
      if (args[0] === '--foreground-scripts') {
        expect(printed).toMatch(/loopdev: npm_config_build_from_source asks for a source build, and it needs python3, make, a C\+\+ compiler\. The install goes on; to build it: /);
      }
    });

    it('Bun on musl loads the musl binary and attaches, lists and detaches', () => {
      writeFileSync(
        join(project, 'run.cjs'),
        `const { attachSync, listSync } = require('loopdev');
         const device = attachSync(${JSON.stringify(image)});
         const listed = listSync().some((info) => info.path === device.path);
         const result = device.detachSync();
         const addon = require('fs').readFileSync('/proc/self/maps', 'utf8').match(/\\S*loopdev\\.\\w+\\.node/)[0];
         console.log(JSON.stringify({ listed, result, addon }));`,
      );
      const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'LOOPDEV_ADDON_PATH'));
      const output = JSON.parse(execFileSync(bun, ['run.cjs'], { cwd: project, encoding: 'utf8', env: { ...clean, LD_LIBRARY_PATH: runtime } }));
      expect(output).toEqual({
        listed: true,
        result: { path: expect.stringMatching(/^\/dev\/loop\d+$/), wasBound: true, released: true },
        addon: join(project, 'node_modules', 'loopdev', 'prebuilds', 'linux-x64', 'loopdev.musl.node'),
      });
      expect(devicesBackedBy(image)).toEqual([]);
    });
  });
});
