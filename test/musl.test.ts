// Each musl binary loaded and used by a musl runtime of its own architecture: Bun's musl builds
// (from npm) on Debian's musl loader. The library runs from a package root of its own holding
// only the musl binary, so the loader's own choice (its C library read from Bun's program
// interpreter) is what is tested. Both architectures run the same checks.
//
// x64 needs /lib/ld-musl-x86_64.so.1 (apt: musl), Bun's musl package (@oven/bun-linux-x64-musl)
// and a C++ runtime for Bun, which Debian does not ship for musl: its glibc libstdc++ and
// libgcc_s serve, beside a test-only shim for the few glibc symbols they ask for
// (test/fixtures/musl-shim.c, built with the zig that makes the prebuilt binaries, named
// ld-linux-x86-64.so.2, which libstdc++ lists as NEEDED).
//
// arm64 runs on this x64 host under qemu-user (apt: qemu-user; qemu-aarch64 7.2 in Debian 12):
// Bun's arm64 musl package (@oven/bun-linux-aarch64-musl) on a sysroot (qemu-aarch64 -L) of
// Debian's arm64 musl, libstdc++6 and libgcc-s1, fetched for arm64 without touching the host's
// dpkg and cached in ~/.cache/loopdev-vm (test/helpers/musl-sysroot.ts), with the same shim
// built for aarch64 musl and preloaded (arm64's libstdc++ lists no ld-linux). qemu-user passes
// ioctls through its own table: a test reads its log (-d strace,unimp) and checks that the loop
// ioctls the library makes reach the kernel. qemu 7.2 does not know BLKGETDISKSEQ and answers
// it ENOSYS, which the library reads as a kernel without disk sequence numbers (diskseq 0).
//
// Where a tool is missing the tests skip and name it; with LOOPDEV_REQUIRE_PRIVILEGED=1 (CI) a
// missing tool fails the run instead.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readOsRelease, sourceBuildCommand } from '../lib/core/source-build';
import { devicesBackedBy, privileged, tempDir, testTime, type TempDir } from './helpers/kernel';
import { arm64MuslSysroot } from './helpers/musl-sysroot';
import { runtimeBinary, type Runtime } from './helpers/runtimes';

const root = join(__dirname, '..');
// The zig that makes the prebuilt binaries (a CommonJS script, untyped).
const { zig, zigEnv } = createRequire(__filename)('../scripts/zig-build.js') as { zig: () => string; zigEnv: () => NodeJS.ProcessEnv };

/** A program on PATH (looked up without a shell). */
function onPath(name: string): string | undefined {
  return (process.env.PATH ?? '').split(delimiter).map((dir) => join(dir, name)).find((file) => file.startsWith('/') && existsSync(file));
}

/** A library of glibc's this process has mapped (its libstdc++ and libgcc_s are Debian's). */
function mappedLibrary(name: string): string {
  const found = new RegExp(`/\\S*/${name.replace(/[.+]/g, '\\$&')}$`, 'm').exec(readFileSync('/proc/self/maps', 'utf8'))?.[0];
  const fallback = ['/usr/lib/x86_64-linux-gnu', '/lib/x86_64-linux-gnu'].map((dir) => join(dir, name)).find((file) => existsSync(file));
  if (!found && !fallback) throw new Error(`${name} not found`);
  return found ?? fallback!;
}

/** How a script runs under Bun on musl: the command, its leading arguments and environment. */
interface Launcher {
  command: string;
  args: string[];
  env: Record<string, string>;
}

interface Target {
  arch: 'x64' | 'arm64';
  bun: Runtime;
  /** what this host lacks for it, if anything */
  missing: string | undefined;
  /** Makes the C++ runtime (in `dir`) and says how Bun is started. */
  prepare(dir: string, bun: string): Promise<Launcher>;
}

const binaryOf = (arch: string): string => join(root, 'prebuilds', `linux-${arch}`, 'loopdev.musl.node');
const shimSource = join(__dirname, 'fixtures', 'musl-shim.c');

function missingFor(arch: string, needs: [boolean, string][]): string | undefined {
  if (process.arch !== 'x64') return 'an x64 host (the zig that builds the shim runs there)';
  const absent = needs.filter(([present]) => !present).map(([, what]) => what);
  if (!existsSync(binaryOf(arch))) absent.push(`${binaryOf(arch)} (node scripts/zig-build.js --target ${arch}-musl)`);
  return absent.length ? absent.join(', ') : undefined;
}

const X64_LOADER = '/lib/ld-musl-x86_64.so.1';
const QEMU = onPath('qemu-aarch64');

const TARGETS: Target[] = [
  {
    arch: 'x64',
    bun: { name: 'bun', spec: '@oven/bun-linux-x64-musl@1.4', member: 'package/bin/bun' },
    missing: missingFor('x64', [[existsSync(X64_LOADER), `${X64_LOADER} (apt-get install musl)`]]),
    async prepare(dir, bun) {
      copyFileSync(mappedLibrary('libstdc++.so.6'), join(dir, 'libstdc++.so.6'));
      copyFileSync(mappedLibrary('libgcc_s.so.1'), join(dir, 'libgcc_s.so.1'));
      execFileSync(zig(), ['cc', '-target', 'x86_64-linux-musl', '-shared', '-fPIC', '-O2', '-Wl,-soname,ld-linux-x86-64.so.2', '-o', join(dir, 'ld-linux-x86-64.so.2'), shimSource], { env: zigEnv(), stdio: 'pipe' });
      // Bun's own program interpreter is musl's loader: started as Alpine starts it.
      return { command: bun, args: [], env: { LD_LIBRARY_PATH: dir } };
    },
  },
  {
    arch: 'arm64',
    bun: { name: 'bun', spec: '@oven/bun-linux-aarch64-musl@1.4', member: 'package/bin/bun' },
    missing: missingFor('arm64', [
      [QEMU !== undefined, 'qemu-aarch64 (apt-get install qemu-user)'],
      [onPath('apt-get') !== undefined && onPath('dpkg-deb') !== undefined, "apt-get and dpkg-deb (Debian's, to fetch arm64 packages)"],
    ]),
    async prepare(dir, bun) {
      const sysroot = join(await arm64MuslSysroot(), 'root');
      const shim = join(dir, 'libloopdev-musl-shim.so');
      execFileSync(zig(), ['cc', '-target', 'aarch64-linux-musl', '-shared', '-fPIC', '-O2', '-o', shim, shimSource], { env: zigEnv(), stdio: 'pipe' });
      // qemu-aarch64 runs Bun; -L makes the sysroot's files stand for the guest's absolute paths
      // where present (Bun's program interpreter /lib/ld-musl-aarch64.so.1 among them), and -E
      // sets the guest's environment alone (not qemu's own: it is an x64 program).
      const libraries = [join(sysroot, 'usr/lib/aarch64-linux-gnu'), join(sysroot, 'lib/aarch64-linux-gnu')].join(':');
      return { command: QEMU!, args: ['-L', sysroot, '-E', `LD_LIBRARY_PATH=${libraries}`, '-E', `LD_PRELOAD=${shim}`, bun], env: {} };
    },
  },
];

const required = process.env.LOOPDEV_REQUIRE_PRIVILEGED === '1';
const lacking = TARGETS.filter((target) => target.missing !== undefined).map((target) => `${target.arch}: ${target.missing}`);
if (required && lacking.length > 0) throw new Error(`the musl tests cannot run (needs ${lacking.join('; ')}) but LOOPDEV_REQUIRE_PRIVILEGED=1`);

/** The environment a run starts from: none of the loader's overrides, nor the host's library paths. */
const cleanEnv = (drop: RegExp): Record<string, string | undefined> => Object.fromEntries(Object.entries(process.env).filter(([name]) => !drop.test(name)));

/**
 * Attach, info, list and detach through the library, `rounds` times, printing what each saw
 * (a JSON array). `setupIoctl` says whether LOOP_CONFIGURE bound the device or the library fell
 * back to LOOP_SET_FD and LOOP_SET_STATUS64 (it does when LOOP_CONFIGURE fails as unknown).
 */
const cycleScript = (entry: string, image: string, rounds = 1): string => `const { attachSync, infoSync, listSync } = require(${JSON.stringify(entry)});
      const rounds = [];
      for (let round = 0; round < ${rounds}; round++) {
        const device = attachSync(${JSON.stringify(image)}, { readOnly: true });
        const { size, readOnly, backingFile } = infoSync(device);
        const listed = listSync().filter((info) => info.path === device.path).map((info) => info.backingFile);
        const bound = require('fs').existsSync('/sys/block/' + device.path.slice(5) + '/loop/backing_file');
        const setupIoctl = device.setupIoctl;
        const result = device.detachSync();
        const addon = require('fs').readFileSync('/proc/self/maps', 'utf8').match(/\\S*loopdev\\.\\w+\\.node/)[0];
        rounds.push({ size, readOnly, backingFile, listed, bound, setupIoctl, result, addon });
      }
      console.log(JSON.stringify(rounds));`;

/**
 * What qemu's log (-d strace,unimp) says of ioctls: the requests it passed to the kernel (by
 * name, with the kernel's success) and those it refused as not in its table ("Unsupported
 * ioctl", answered ENOSYS without the kernel; 32-bit request numbers in hex). Another thread's
 * unfinished entry may precede a line, so nothing is anchored to a line's start.
 */
function ioctlsOf(log: string): { succeeded: Set<string>; unsupported: Set<string> } {
  const succeeded = new Set<string>();
  for (const match of log.matchAll(/\d+ ioctl\(\d+,([A-Z][A-Z0-9_]*)\b[^\n]*?\) = (\d+)(?! errno)/g)) succeeded.add(match[1]!);
  const unsupported = new Set([...log.matchAll(/Unsupported ioctl: cmd=0x([0-9a-f]+)/g)].map((match) => `0x${(BigInt(`0x${match[1]}`) & 0xffffffffn).toString(16)}`));
  return { succeeded, unsupported };
}

/** BLKGETDISKSEQ (Linux 5.15), which qemu 7.2's ioctl table lacks. */
const BLKGETDISKSEQ = '0x80081280';

describe.skipIf(!privileged())('musl runtimes', () => {
  describe.each(TARGETS)('$arch', (target) => {
    const { arch } = target;

    describe.skipIf(target.missing !== undefined)(`Bun on musl (needs ${target.missing ?? 'nothing more'})`, () => {
      let dir: TempDir;
      let launcher: Launcher;
      let pkg: string;
      let image: string;

      beforeAll(async () => {
        dir = tempDir(`loopdev-musl-${arch}-`);
        const runtime = join(dir.path, 'runtime');
        mkdirSync(runtime);
        // The first run fetches Bun (and for arm64 the sysroot's packages) into the caches.
        launcher = await target.prepare(runtime, runtimeBinary(target.bun));
        pkg = join(dir.path, 'package');
        cpSync(join(root, 'dist'), join(pkg, 'dist'), { recursive: true });
        mkdirSync(join(pkg, 'prebuilds', `linux-${arch}`), { recursive: true });
        copyFileSync(binaryOf(arch), join(pkg, 'prebuilds', `linux-${arch}`, 'loopdev.musl.node'));
        image = dir.image('disk.img', 1024 * 1024);
      }, testTime(600_000));

      afterAll(() => {
        const leaked = image ? devicesBackedBy(image) : [];
        dir?.remove();
        expect(leaked).toEqual([]);
      });

      /**
       * Runs `script` (CommonJS, written to `cwd`) under Bun on musl; its stdout. `qemuOptions`
       * go to qemu-aarch64 (arm64 only).
       */
      function exec(script: string, cwd: string, qemuOptions: string[] = []): string {
        writeFileSync(join(cwd, 'run.cjs'), script);
        const env = { ...cleanEnv(/^(LOOPDEV_ADDON_PATH|npm_config_build_from_source|LD_LIBRARY_PATH|LD_PRELOAD)$/), ...launcher.env };
        return execFileSync(launcher.command, [...qemuOptions, ...launcher.args, join(cwd, 'run.cjs')], { cwd, encoding: 'utf8', env });
      }
      const run = (script: string): unknown => JSON.parse(exec(script, pkg));

      it(`Bun runs for ${arch} on musl: musl's libc is mapped, glibc's is not`, () => {
        const output = run(`const maps = require('fs').readFileSync('/proc/self/maps', 'utf8');
          console.log(JSON.stringify({ arch: process.arch, musl: /-linux-musl\\/libc\\.so|ld-musl-/.test(maps), glibc: /libc\\.so\\.6/.test(maps) }));`);
        expect(output).toEqual({ arch, musl: true, glibc: false });
      });

      it('the loader takes loopdev.musl.node, and attach, info, list and detach work through the library', () => {
        expect(run(cycleScript('./dist/index.js', image))).toMatchObject([
          {
            size: 1024 * 1024,
            readOnly: true,
            backingFile: image,
            listed: [image],
            bound: true,
            setupIoctl: 'LOOP_CONFIGURE',
            result: { wasBound: true, released: true },
            addon: join(pkg, 'prebuilds', `linux-${arch}`, 'loopdev.musl.node'),
          },
        ]);
        expect(devicesBackedBy(image)).toEqual([]);
      });

      // qemu-user passes an ioctl on only if its table knows the request (it converts the
      // argument's layout); it answers others with ENOSYS, unseen by the kernel, and logs them
      // with -d unimp. Three rounds, so that each request is logged whole at least once beside
      // the lines of Bun's other threads. (Registered for arm64 alone: x64 runs natively.)
      if (arch === 'arm64') {
        it("qemu-user passes the library's loop ioctls to the kernel (its log)", () => {
          const log = join(dir.path, 'qemu.log');
          const output = JSON.parse(exec(cycleScript('./dist/index.js', image, 3), pkg, ['-d', 'strace,unimp', '-D', log]));
          const { succeeded, unsupported } = ioctlsOf(readFileSync(log, 'utf8'));
          rmSync(log);
          expect(output).toMatchObject(Array(3).fill({ listed: [image], setupIoctl: 'LOOP_CONFIGURE', result: { wasBound: true, released: true } }));
          const passed = ['LOOP_CTL_GET_FREE', 'LOOP_CONFIGURE', 'LOOP_GET_STATUS64', 'BLKGETSIZE64', 'BLKSSZGET', 'LOOP_CLR_FD'];
          expect(passed.filter((request) => !succeeded.has(request))).toEqual([]);
          // Refused: BLKGETDISKSEQ alone, which the library reads as a kernel without it (its
          // diskseq 0, as before Linux 5.15).
          expect([...unsupported].filter((request) => request !== BLKGETDISKSEQ)).toEqual([]);
        });
      }

      it('with no binary: the message names musl and what was tried', () => {
        rmSync(join(pkg, 'prebuilds'), { recursive: true });
        const output = run(`try { require('./dist/index.js').listSync(); console.log('"loaded"'); }
          catch (error) { console.log(JSON.stringify({ code: error.code, message: error.message })); }`);
        expect(output).toEqual({
          code: 'ERR_LOOP_NATIVE_LOAD',
          message: [
            // Debian's musl has no /etc/alpine-release: the version is not known.
            `no loopdev addon binary loads here: linux ${arch} with musl.`,
            'Tried:',
            '  build/Release/loopdev.node: not there',
            '  build/Debug/loopdev.node: not there',
            `  prebuilds/linux-${arch}/loopdev.musl.node: not there`,
            `Build it from source: ${sourceBuildCommand(readOsRelease())}`,
          ].join('\n'),
        });
      });

      // A simulated Alpine: no python3, make or g++ on PATH, npm installing the packed tarball
      // (forced down the source-build path where scripts run, or with scripts blocked), then a
      // musl runtime loading the installed package.
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
          for (const [name, to] of [['node', process.execPath], ['npm', execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim()], ['sh', '/bin/sh']] as const) symlinkSync(to, join(bin, name));
          for (const tool of ['python3', 'make', 'g++', 'cc']) expect(spawnSync('sh', ['-c', `command -v ${tool}`], { env: { PATH: bin } }).status).not.toBe(0);
          execFileSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', work], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
          project = join(work, 'consumer');
          mkdirSync(project);
          writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
          const clean = cleanEnv(/^(LOOPDEV_ADDON_PATH|npm_config_build_from_source|PATH)$/);
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

        it(`Bun on musl loads the ${arch} musl binary and attaches, lists and detaches`, () => {
          const output = JSON.parse(
            exec(
              `const { attachSync, listSync } = require('loopdev');
               const device = attachSync(${JSON.stringify(image)});
               const listed = listSync().some((info) => info.path === device.path);
               const result = device.detachSync();
               const addon = require('fs').readFileSync('/proc/self/maps', 'utf8').match(/\\S*loopdev\\.\\w+\\.node/)[0];
               console.log(JSON.stringify({ listed, result, addon }));`,
              project,
            ),
          );
          expect(output).toEqual({
            listed: true,
            result: { path: expect.stringMatching(/^\/dev\/loop\d+$/), wasBound: true, released: true },
            addon: join(project, 'node_modules', 'loopdev', 'prebuilds', `linux-${arch}`, 'loopdev.musl.node'),
          });
          expect(devicesBackedBy(image)).toEqual([]);
        });
      });
    });
  });
});
