// The loader: which files it tries and in what order, how it knows its C library, and the
// message a user reads when no binary fits, read in full.
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readElf } from '../lib/core/elf';
import { describeLibc, familyOfInterpreter, glibcVersion, libcFamily } from '../lib/core/libc';
import { candidates, noBinaryMessage } from '../lib/core/load';
import { readOsRelease, sourceBuildCommand } from '../lib/core/source-build';
import { tempDir, type TempDir } from './helpers/kernel';

const root = join(__dirname, '..');
const built = join(root, 'build', 'Release', 'loopdev.node');

describe('the candidates', () => {
  const settings = { root: '/pkg', arch: 'x64', libc: 'musl' as const };

  it('a source build first, then the prebuilt binary of this C library', () => {
    expect(candidates(settings)).toEqual([
      { label: 'build/Release/loopdev.node', file: '/pkg/build/Release/loopdev.node' },
      { label: 'build/Debug/loopdev.node', file: '/pkg/build/Debug/loopdev.node' },
      { label: 'prebuilds/linux-x64/loopdev.musl.node', file: '/pkg/prebuilds/linux-x64/loopdev.musl.node' },
    ]);
  });

  it('an unknown C library: both prebuilt binaries, glibc first', () => {
    expect(candidates({ ...settings, libc: undefined }).map((candidate) => candidate.label).slice(2)).toEqual([
      'prebuilds/linux-x64/loopdev.glibc.node',
      'prebuilds/linux-x64/loopdev.musl.node',
    ]);
  });

  it('LOOPDEV_ADDON_PATH: that file and nothing else', () => {
    expect(candidates({ ...settings, addonPath: '/opt/loopdev.node' })).toEqual([{ label: 'LOOPDEV_ADDON_PATH=/opt/loopdev.node', file: '/opt/loopdev.node' }]);
  });

  it.each(['true', 'loopdev', 'sharp,loopdev'])('npm_config_build_from_source=%s leaves the prebuilt binary out', (value) => {
    expect(candidates({ ...settings, buildFromSource: value })[2]).toMatchObject({ skip: 'skipped: npm_config_build_from_source is set' });
  });

  it.each(['', 'false', 'sharp'])('npm_config_build_from_source=%j does not', (value) => {
    expect(candidates({ ...settings, buildFromSource: value })[2]!.skip).toBeUndefined();
  });
});

describe('the C library', () => {
  it.each([
    ['/lib/ld-musl-x86_64.so.1', 'musl'],
    ['/lib/ld-musl-aarch64.so.1', 'musl'],
    ['/lib64/ld-linux-x86-64.so.2', 'glibc'],
    ['/lib/ld-linux-aarch64.so.1', 'glibc'],
    ['/lib/ld-linux-armhf.so.3', 'glibc'],
    ['/lib64/ld64.so.2', 'glibc'],
    ['/lib/ld64.so.1', 'glibc'],
    ['/usr/bin/something-else', undefined],
    [undefined, undefined],
  ])('the interpreter %s says %s', (interpreter, family) => {
    expect(familyOfInterpreter(interpreter)).toBe(family);
  });

  it("this process's: its interpreter and Node's report agree", () => {
    const { interpreter, machine } = readElf(process.execPath);
    expect(machine).toBe(process.arch === 'x64' ? 62 : 183);
    const reported = glibcVersion();
    expect(libcFamily()).toBe(reported === undefined ? 'musl' : 'glibc');
    expect(familyOfInterpreter(interpreter)).toBe(libcFamily());
    if (reported !== undefined) expect(describeLibc()).toBe(`glibc ${reported}`);
  });

  it('the built addon is a shared object: a machine, no interpreter', () => {
    expect(readElf(built)).toEqual({ machine: process.arch === 'x64' ? 62 : 183, interpreter: undefined });
  });
});

describe('the command that builds from source', () => {
  it.each([
    ['ID=alpine\nVERSION_ID=3.21.0\n', 'apk add python3 make g++ linux-headers && npm rebuild loopdev'],
    ['ID=debian\nVERSION_ID="12"\n', 'apt-get install -y python3 make g++ && npm rebuild loopdev'],
    ['NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n', 'apt-get install -y python3 make g++ && npm rebuild loopdev'],
    ['ID="rocky"\nID_LIKE="rhel centos fedora"\n', 'dnf install -y python3 make gcc-c++ && npm rebuild loopdev'],
    ['ID=nixos\n', 'install python3, make and a C++ compiler, then run npm rebuild loopdev'],
    [undefined, 'install python3, make and a C++ compiler, then run npm rebuild loopdev'],
  ])('%j: %s', (osRelease, command) => {
    expect(sourceBuildCommand(osRelease)).toBe(command);
  });
});

it('the message when nothing fits, in full', () => {
  const message = noBinaryMessage({
    arch: 'arm64',
    libc: 'musl (Alpine 3.21.0)',
    tried: [
      ['build/Release/loopdev.node', 'not there'],
      ['prebuilds/linux-arm64/loopdev.musl.node', 'built for x64, this is arm64'],
    ],
    command: 'apk add python3 make g++ linux-headers && npm rebuild loopdev',
  });
  expect(message).toBe(
    [
      'no loopdev addon binary loads here: linux arm64 with musl (Alpine 3.21.0).',
      'Tried:',
      '  build/Release/loopdev.node: not there',
      '  prebuilds/linux-arm64/loopdev.musl.node: built for x64, this is arm64',
      'Build it from source: apk add python3 make g++ linux-headers && npm rebuild loopdev',
    ].join('\n'),
  );
});

// The compiled library in a package root of its own, with only the binaries a test puts there.
describe('loading from a package', () => {
  let dir: TempDir;
  let pkg: string;
  const here = `linux ${process.arch} with ${describeLibc()}`;
  const command = sourceBuildCommand(readOsRelease());
  const prebuilt = (libc: string): string => join(pkg, 'prebuilds', `linux-${process.arch}`, `loopdev.${libc}.node`);

  beforeAll(() => {
    dir = tempDir('loopdev-load-');
    pkg = join(dir.path, 'package');
    cpSync(join(root, 'dist'), join(pkg, 'dist'), { recursive: true });
    mkdirSync(join(pkg, 'prebuilds', `linux-${process.arch}`), { recursive: true });
  });
  afterAll(() => dir.remove());

  /** Loads the package in a child with `env` added; its error's code and message, or 'loaded'. */
  function load(env: Record<string, string> = {}): { code?: string; message?: string } | 'loaded' {
    const script = `try { require(${JSON.stringify(join(pkg, 'dist', 'index.js'))}).listSync(); console.log('"loaded"'); }
      catch (error) { console.log(JSON.stringify({ code: error.code, message: error.message })); }`;
    const clean = { ...process.env };
    delete clean.LOOPDEV_ADDON_PATH;
    delete clean.npm_config_build_from_source;
    return JSON.parse(execFileSync(process.execPath, ['-e', script], { env: { ...clean, ...env }, encoding: 'utf8' }));
  }

  it('nothing there: the whole message', () => {
    expect(load()).toEqual({
      code: 'ERR_LOOP_NATIVE_LOAD',
      message: [
        `no loopdev addon binary loads here: ${here}.`,
        'Tried:',
        '  build/Release/loopdev.node: not there',
        '  build/Debug/loopdev.node: not there',
        `  prebuilds/linux-${process.arch}/loopdev.glibc.node: not there`,
        `Build it from source: ${command}`,
      ].join('\n'),
    });
  });

  it("the prebuilt binary of this process's C library loads", () => {
    copyFileSync(built, prebuilt('glibc'));
    try {
      expect(load()).toBe('loaded');
      expect(load({ npm_config_build_from_source: 'true' })).toMatchObject({
        message: expect.stringContaining(`prebuilds/linux-${process.arch}/loopdev.glibc.node: skipped: npm_config_build_from_source is set\n`),
      });
    } finally {
      rmSync(prebuilt('glibc'));
    }
  });

  it('a binary of another architecture is not loaded, and the message says why', () => {
    // Any ELF file of another machine will do: the loader reads its header before loading.
    const foreign = Buffer.from(elfStart(built));
    foreign.writeUInt16LE(process.arch === 'x64' ? 183 : 62, 18);
    writeFileSync(prebuilt('glibc'), foreign);
    try {
      const otherName = process.arch === 'x64' ? 'arm64' : 'x64';
      expect(load()).toMatchObject({ message: expect.stringContaining(`loopdev.glibc.node: built for ${otherName}, this is ${process.arch}\n`) });
    } finally {
      rmSync(prebuilt('glibc'));
    }
  });

  it('LOOPDEV_ADDON_PATH: loads that file, or says why not and tries nothing else', () => {
    expect(load({ LOOPDEV_ADDON_PATH: built })).toBe('loaded');
    const missing = join(dir.path, 'nowhere', 'loopdev.node');
    expect(load({ LOOPDEV_ADDON_PATH: missing })).toEqual({
      code: 'ERR_LOOP_NATIVE_LOAD',
      message: [`no loopdev addon binary loads here: ${here}.`, 'Tried:', `  LOOPDEV_ADDON_PATH=${missing}: not there`, `Build it from source: ${command}`].join('\n'),
    });
  });

  it('a shared object that is no addon: the loader says what loading it said', () => {
    // A library this process has loaded: an ELF file of this machine that registers no module.
    const library = /\/\S*\/libm\.so\.6/.exec(readFileSync('/proc/self/maps', 'utf8'))![0];
    expect(load({ LOOPDEV_ADDON_PATH: library })).toMatchObject({ message: expect.stringContaining(`\n  LOOPDEV_ADDON_PATH=${library}: did not load (Module did not self-register: '${library}'.)\n`) });
  });
});

/** The first 4 KiB of an ELF file: its header, and too little of it to load. */
function elfStart(file: string): Buffer {
  return readFileSync(file).subarray(0, 4096);
}
