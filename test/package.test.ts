// The npm tarball installs without a compiler: it carries four prebuilt N-API binaries (x64
// and arm64, glibc and musl), and `require`, `import` and TypeScript types all work from a
// fresh project.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readElf } from '../lib/core/elf';
import { findTool } from './helpers/images';
import { devicesBackedBy, privileged, testTime } from './helpers/kernel';
import { RUNTIMES, runtimeBinary } from './helpers/runtimes';

const root = join(__dirname, '..');
// The consumer loads the installed package's own binary, whatever this run was pointed at.
const consumerEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'LOOPDEV_ADDON_PATH' && name !== 'npm_config_build_from_source'));
const npm = (args: string[], cwd: string): string =>
  execFileSync('npm', args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_loglevel: 'error' }, stdio: ['ignore', 'pipe', 'pipe'] });

/** Whether prebuilds/ holds all four binaries, each newer than binding.gyp and native/. */
function prebuildsFresh(): boolean {
  const sources = [join(root, 'binding.gyp'), ...readdirSync(join(root, 'native')).map((name) => join(root, 'native', name))];
  const newestSource = Math.max(...sources.map((file) => statSync(file).mtimeMs));
  return ['x64', 'arm64'].every((arch) =>
    ['glibc', 'musl'].every((libc) => {
      const file = join(root, 'prebuilds', `linux-${arch}`, `loopdev.${libc}.node`);
      return existsSync(file) && statSync(file).mtimeMs > newestSource;
    }),
  );
}

describe.skipIf(!privileged())('the packed tarball', () => {
  let work: string;
  let project: string;
  let image: string;

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'loopdev-pack-'));
    // What `npm pack` runs first (prepack), less its rebuild of dist/ and build/: the suite's
    // other files, which may be running beside this one, load those (`npm test` builds first).
    // Its zig builds only when a binary is missing or older than the sources: CI makes them
    // before the suite, and the guests, which share the checkout, have no zig of their own.
    if (!prebuildsFresh()) execFileSync(process.execPath, [join(root, 'scripts', 'prebuild.js')], { cwd: root, stdio: 'pipe' });
    npm(['pack', '--ignore-scripts', '--pack-destination', work], root);
    const tarball = readdirSync(work).find((name) => name.endsWith('.tgz'));
    project = join(work, 'consumer');
    execFileSync('mkdir', ['-p', project]);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
    // Default npm settings: npm 11 runs the install script (scripts/install.js), which finds
    // the prebuilt binary loads and builds nothing.
    npm(['install', '--prefer-offline', join(work, tarball!)], project);
    image = join(work, 'disk.img');
    execFileSync('truncate', ['-s', '1M', image]);
  }, testTime(180_000));

  afterAll(() => {
    const leaked = devicesBackedBy(image);
    rmSync(work, { recursive: true, force: true });
    expect(leaked).toEqual([]);
  });

  it('installs without building: the prebuilt binary is in the package', () => {
    const installed = join(project, 'node_modules', 'loopdev');
    expect(existsSync(join(installed, 'prebuilds', `linux-${process.arch}`, 'loopdev.glibc.node'))).toBe(true);
    expect(existsSync(join(installed, 'build'))).toBe(false);
    expect(existsSync(join(installed, 'dist', 'index.d.ts'))).toBe(true);
    expect(existsSync(join(installed, 'LICENSE'))).toBe(true);
  });

  // `npm pack` makes four binaries with zig (scripts/prebuild.js): each must be for its
  // machine and need no more than its C library: nothing above GLIBC_2.28 (Debian 10, RHEL 8,
  // Ubuntu 20.04), no libstdc++ or libgcc_s (the C++ runtime is linked in), musl's libc alone.
  const MACHINES: Record<string, number> = { x64: 62, arm64: 183 }; // EM_X86_64, EM_AARCH64
  describe.each(['x64', 'arm64'].flatMap((arch) => ['glibc', 'musl'].map((libc) => ({ arch, libc }))))('prebuilds/linux-$arch/loopdev.$libc.node', ({ arch, libc }) => {
    const file = (): string => join(project, 'node_modules', 'loopdev', 'prebuilds', `linux-${arch}`, `loopdev.${libc}.node`);

    it('is built for its machine', () => {
      expect(readElf(file())).toEqual({ machine: MACHINES[arch], interpreter: undefined });
    });

    // readelf (binutils) is on the machines that build the package, not in the test guests.
    it.skipIf(findTool('readelf') === null)(libc === 'glibc' ? 'needs glibc 2.28 at most and no C++ runtime (needs readelf)' : "needs musl's libc alone (needs readelf)", () => {
      const dynamic = execFileSync('readelf', ['-d', '-W', file()], { encoding: 'utf8' });
      const needed = [...dynamic.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((match) => match[1]);
      const versions = execFileSync('readelf', ['-V', '-W', file()], { encoding: 'utf8' });
      const required = [...versions.matchAll(/Name: ([A-Z_]+)_([\d.]+)/g)].map((match) => [match[1], match[2]!.split('.').map(Number)] as const);
      if (libc === 'glibc') {
        for (const library of needed) expect(['libc.so.6', 'libpthread.so.0', 'libdl.so.2', 'libm.so.6', 'librt.so.1']).toContain(library);
        for (const [name, version] of required) {
          expect(name, `${name}_${version.join('.')}`).toBe('GLIBC');
          expect(version[0]! * 1000 + (version[1] ?? 0), `GLIBC_${version.join('.')}`).toBeLessThanOrEqual(2028);
        }
      } else {
        expect(needed).toEqual(['libc.so']); // musl's loader answers for it itself
        expect(required).toEqual([]);
      }
      // Only N-API's entry points are exported: the linked-in C++ runtime stays private.
      const symbols = execFileSync('readelf', ['--dyn-syms', '-W', file()], { encoding: 'utf8' });
      const exported = [...symbols.matchAll(/\s(?:FUNC|OBJECT)\s+(?:GLOBAL|WEAK)\s+DEFAULT\s+\d+\s+(\S+)/g)].map((match) => match[1]).sort();
      expect(exported).toEqual(['napi_register_module_v1', 'node_api_module_get_api_version_v1']);
    });
  });

  it('require() attaches and detaches', () => {
    const script = `const { attachSync, findSync } = require('loopdev');
      const device = attachSync(${JSON.stringify(image)});
      const found = findSync(${JSON.stringify(image)}).map((info) => info.path);
      const result = device.detachSync();
      console.log(JSON.stringify({ path: device.path, found, result }));`;
    const output = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: project, encoding: 'utf8', env: consumerEnv }));
    expect(output.found).toEqual([output.path]);
    expect(output.result).toEqual({ path: output.path, wasBound: true, released: true });
  });

  it('import attaches and detaches', () => {
    writeFileSync(
      join(project, 'esm.mjs'),
      `import { attach, LoopError } from 'loopdev';
       import loopdev from 'loopdev';
       const device = await attach(${JSON.stringify(image)});
       const result = await device.detach();
       console.log(JSON.stringify({ result, error: typeof LoopError, same: loopdev.attach === attach }));`,
    );
    const output = JSON.parse(execFileSync(process.execPath, ['esm.mjs'], { cwd: project, encoding: 'utf8', env: consumerEnv }));
    expect(output).toMatchObject({ result: { released: true }, error: 'function', same: true });
  });

  it.skipIf(findTool('mkfs.ext4') === null)('lists, mounts and unmounts through the installed package', () => {
    const fsImage = join(work, 'fs.img');
    execFileSync('truncate', ['-s', '16M', fsImage]);
    execFileSync(findTool('mkfs.ext4')!, ['-q', '-F', fsImage]);
    const target = join(work, 'mnt');
    const script = `const { mountSync, listSync } = require('loopdev');
      const mounted = mountSync(${JSON.stringify(fsImage)}, ${JSON.stringify(target)}, { mkdir: true });
      require('fs').writeFileSync(${JSON.stringify(join(target, 'hello'))}, 'from the package');
      const listed = listSync().filter((info) => info.path === mounted.device.path).map((info) => info.backingFile);
      const result = mounted.unmountSync();
      console.log(JSON.stringify({ fstype: mounted.fstype, listed, result }));`;
    const output = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: project, encoding: 'utf8', env: consumerEnv }));
    expect(output).toMatchObject({ fstype: 'ext4', listed: [fsImage], result: { released: true } });
    expect(devicesBackedBy(fsImage)).toEqual([]);
  });

  it('the types check from TypeScript', () => {
    writeFileSync(
      join(project, 'use.ts'),
      `import { attach, type LoopInfo, LoopError } from 'loopdev';
       export async function main(): Promise<LoopInfo> {
         await using device = await attach('/tmp/x.img', { readOnly: true, sizeLimit: 1024n });
         try { return await device.info(); } catch (error) { if (error instanceof LoopError) console.log(error.code); throw error; }
       }`,
    );
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const args = ['--noEmit', '--strict', '--module', 'node16', '--target', 'es2022', '--lib', 'es2022,esnext.disposable', '--types', 'node', '--typeRoots', join(root, 'node_modules', '@types'), 'use.ts'];
    expect(() => execFileSync(process.execPath, [tsc, ...args], { cwd: project, encoding: 'utf8', env: consumerEnv })).not.toThrow();
  });

  // The packages hold x64 binaries; elsewhere (the arm64 guest) the test says why it skips.
  describe.skipIf(process.arch !== 'x64')('under Bun and Deno', () => {
    it.each(RUNTIMES)('$name: require and import attach, info and detach', (runtime) => {
      const binary = runtimeBinary(runtime);
      writeFileSync(
        join(project, 'runtime.cjs'),
        `const { attachSync, infoSync } = require('loopdev');
         const device = attachSync(${JSON.stringify(image)});
         const { size } = infoSync(device);
         console.log(JSON.stringify({ size, result: device.detachSync() }));`,
      );
      writeFileSync(
        join(project, 'runtime.mjs'),
        `import { attach, info, LoopError } from 'loopdev';
         const device = await attach(${JSON.stringify(image)}, { readOnly: true });
         const { readOnly } = await info(device);
         const error = await attach('/nonexistent.img').catch((thrown) => thrown);
         console.log(JSON.stringify({ readOnly, result: await device.detach(), code: error.code, typed: error instanceof LoopError }));`,
      );
      const args = (file: string): string[] => (runtime.name === 'deno' ? ['run', '-A', file] : [file]);
      const cjs = JSON.parse(execFileSync(binary, args('runtime.cjs'), { cwd: project, encoding: 'utf8', env: consumerEnv }));
      expect(cjs).toMatchObject({ size: 1024 * 1024, result: { wasBound: true, released: true } });
      const esm = JSON.parse(execFileSync(binary, args('runtime.mjs'), { cwd: project, encoding: 'utf8', env: consumerEnv }));
      expect(esm).toMatchObject({ readOnly: true, result: { released: true }, code: 'ENOENT', typed: true });
    }, testTime(180_000));
  });

  it('a load failure says what was tried and how to fix it', () => {
    const installed = join(project, 'node_modules', 'loopdev');
    rmSync(join(installed, 'prebuilds'), { recursive: true });
    const result = (() => {
      try {
        execFileSync(process.execPath, ['-e', "require('loopdev')"], { cwd: project, encoding: 'utf8', stdio: 'pipe', env: consumerEnv });
        return '';
      } catch (error) {
        return String((error as { stderr: string }).stderr);
      }
    })();
    expect(result).toMatch(/ERR_LOOP_NATIVE_LOAD/);
    expect(result).toMatch(/prebuilds\/linux-/);
    expect(result).toMatch(/npm rebuild loopdev/);
  });
});
