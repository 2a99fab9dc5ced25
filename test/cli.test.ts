// The `loopdev` command. Pure parts (parsing, formatting) are tested in-process; everything
// else runs the built CLI (dist/cli.js) as a child process and checks the kernel's state in
// sysfs and /proc/self/mountinfo, never only what the CLI printed. Each test attaches only
// images in its own temp dir and detaches exactly those.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { formatFailure, formatInfo, formatListJson, formatTable } from '../lib/cli/format';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main } from '../lib/cli/main';
import { loopNumberOf, parseCommand, parseDeviceArgument, splitMountOptions, type Command } from '../lib/cli/parse';
import { helpText } from '../lib/cli/spec';
import { LoopError } from '../lib/core/errors';
import { deviceNumber, planAttach } from '../lib/loop/options';
import { checkPartition } from '../lib/mount/options';
import type { LoopInfo } from '../lib/loop/inspect';
import { cli, fakeInfo, root, run, runWithoutAddon, usageError, type Run } from './helpers/cli';
import { devicesBackedBy, privileged, sysBound, sysBoundTo, sysRead, tempDir, until, type TempDir } from './helpers/kernel';

const MiB = 1024 * 1024;

describe('parseCommand', () => {
  it('reads attach and its options, sizes in bytes', () => {
    expect(
      parseCommand([
        'attach', '-r', '--offset', '1M', '--size-limit=4K', '-P', '--direct-io', '-b', '4096', '--device', 'loop7', '--label', 'x', '--json', 'a.img',
      ]),
    ).toEqual({
      name: 'attach',
      image: 'a.img',
      hold: false,
      json: true,
      options: { readOnly: true, offset: MiB, sizeLimit: 4096, partscan: true, directIO: true, sectorSize: 4096, device: 7, label: 'x' },
    });
    expect(parseCommand(['attach', 'a.img', '--sizelimit', '512'])).toMatchObject({ options: { sizeLimit: 512 } });
    expect(parseCommand(['attach', '--device', '/dev/loop12', 'a.img'])).toMatchObject({ options: { device: 12 } });
    expect(parseCommand(['attach', '-ro', '2G', 'a.img'])).toMatchObject({ options: { readOnly: true, offset: 2 * 1024 * MiB } });
  });

  it('makes --autoclear the same as --hold', () => {
    for (const flag of ['--hold', '--autoclear']) {
      expect(parseCommand(['attach', flag, 'a.img'])).toEqual({ name: 'attach', image: 'a.img', hold: true, json: false, options: { hold: true, owner: true } });
    }
  });

  it('reads the other commands', () => {
    const cases: [string[], Command][] = [
      [['detach', '/dev/loop3', '4', 'a.img'], { name: 'detach', targets: ['/dev/loop3', '4', 'a.img'], verbose: false }],
      [['detach', '-v', 'loop3'], { name: 'detach', targets: ['loop3'], verbose: true }],
      [['detach', '--', '-v', '--odd.img'], { name: 'detach', targets: ['-v', '--odd.img'], verbose: false }],
      [['list'], { name: 'list', json: false, columns: null, headings: true, raw: false }],
      [['ls', '--json'], { name: 'list', json: true, columns: null, headings: true, raw: false }],
      [['info', 'loop5'], { name: 'info', device: 5, json: false }],
      [['info', '--json', '/dev/loop5'], { name: 'info', device: '/dev/loop5', json: true }],
      [['find', 'a.img'], { name: 'find', image: 'a.img', json: false }],
      [['umount', '-l', '-f', '/mnt'], { name: 'umount', target: '/mnt', options: { lazy: true, force: true }, verbose: false }],
      [['unmount', '/mnt'], { name: 'umount', target: '/mnt', options: { lazy: false, force: false }, verbose: false }],
      [['--version'], { name: 'version' }],
      [['-V'], { name: 'version' }],
      [['--help'], { name: 'help', topic: null }],
      [['help', 'mount'], { name: 'help', topic: 'mount' }],
      [['attach', '--help'], { name: 'help', topic: 'attach' }],
      [['detach', '--bogus', '-h'], { name: 'help', topic: 'detach' }],
    ];
    for (const [argv, command] of cases) expect(parseCommand(argv), argv.join(' ')).toEqual(command);
  });

  it('reads mount, taking the loop words out of -o', () => {
    expect(parseCommand(['mount', '-t', 'ext4', '-o', 'loop,offset=1M,noatime,errors=remount-ro', '--partition', '2', '-r', '--mkdir', 'a.img', '/mnt'])).toEqual({
      name: 'mount',
      image: 'a.img',
      target: '/mnt',
      json: false,
      verbose: false,
      options: { fstype: 'ext4', offset: MiB, options: 'noatime,errors=remount-ro', partition: 2, readOnly: true, mkdir: true },
    });
    expect(parseCommand(['mount', '--offset', '4K', '-o', 'offset=1M', 'a.img', '/mnt'])).toMatchObject({ options: { offset: 4096 } });
  });

  it('refuses a wrong command line with a UsageError naming the command', () => {
    const cases: [string[], RegExp, string | null][] = [
      [[], /missing command/, null],
      [['frob'], /unknown command 'frob'/, null],
      [['--frob'], /unknown option '--frob'/, null],
      [['help', 'frob'], /unknown help topic/, null],
      [['attach'], /missing IMAGE/, 'attach'],
      [['attach', 'a', 'b'], /unexpected argument 'b'/, 'attach'],
      [['attach', '--offset', '12Q', 'a.img'], /option '--offset': not a size: "12Q"/, 'attach'],
      [['attach', '--offset', '--json', 'a.img'], /option '--offset' needs a value/, 'attach'],
      [['attach', 'a.img', '--offset'], /option '--offset' needs a value/, 'attach'],
      [['attach', '--json=yes', 'a.img'], /option '--json' takes no value/, 'attach'],
      [['attach', '--bogus', 'a.img'], /unknown option '--bogus'/, 'attach'],
      [['attach', '-x', 'a.img'], /unknown option '-x'/, 'attach'],
      [['attach', '--sector-size', '1000', 'a.img'], /^option '--sector-size' must be one of 512, 1024, 2048, 4096, got 1000$/, 'attach'],
      [['attach', '--device', 'sda', 'a.img'], /option '--device' must be N, loopN or \/dev\/loopN/, 'attach'],
      [['attach', '--device', '/dev/loop99999999', 'a.img'], /^option '--device' must be an integer from 0 to 1048575, got 99999999$/, 'attach'],
      [['attach', '--label', 'x'.repeat(64), 'a.img'], /^option '--label' must be at most 63 bytes/, 'attach'],
      [['attach', ''], /^IMAGE must not be empty$/, 'attach'],
      [['attach', '--offset', '-1', 'a.img'], /option '--offset': a size cannot be negative, got "-1"/, 'attach'],
      [['attach', '--size-limit=-4K', 'a.img'], /option '--size-limit': a size cannot be negative/, 'attach'],
      [['detach'], /missing DEV\|IMAGE/, 'detach'],
      [['detach', 'loop3', '99999999'], /^device number must be an integer from 0 to 1048575, got 99999999$/, 'detach'],
      [['attach', '--constructor', 'a.img'], /unknown option '--constructor'/, 'attach'],
      [['list', 'extra'], /unexpected argument/, 'list'],
      [['info', 'loop99999999'], /^device number must be an integer from 0 to 1048575, got 99999999$/, 'info'],
      [['mount', 'a.img'], /missing TARGET/, 'mount'],
      [['mount', '--partition', '0', 'a.img', '/mnt'], /^option '--partition' must be an integer from 1 to 255, got 0$/, 'mount'],
      [['mount', '--partition', 'two', 'a.img', '/mnt'], /^option '--partition' must be an integer from 1 to 255, got "two"$/, 'mount'],
      [['mount', '--sector-size', '1000', 'a.img', '/mnt'], /^option '--sector-size' must be one of 512, 1024, 2048, 4096, got 1000$/, 'mount'],
      [['mount', 'a.img', ''], /^TARGET must not be empty$/, 'mount'],
      [['mount', '-o', 'offset=x', 'a.img', '/mnt'], /option '-o': not a size/, 'mount'],
      [['umount', '--lazy'], /missing TARGET/, 'umount'],
    ];
    for (const [argv, message, command] of cases) {
      const error = usageError(argv);
      expect(error.message, argv.join(' ')).toMatch(message);
      expect(error.command, argv.join(' ')).toBe(command);
    }
  });
});

describe('argument helpers', () => {
  it('reads device numbers in their three spellings', () => {
    expect(loopNumberOf('3')).toBe(3);
    expect(loopNumberOf('loop3')).toBe(3);
    expect(loopNumberOf('/dev/loop3')).toBe(3);
    expect(loopNumberOf('/dev/loop3p1')).toBeUndefined();
    expect(loopNumberOf('sda')).toBeUndefined();
    // The range is the library's to check (deviceNumber), not the spelling's.
    expect(loopNumberOf(String(0x100000))).toBe(0x100000);
    expect(() => parseDeviceArgument(String(0x100000))).toThrow(expect.objectContaining({ code: 'ERR_LOOP_INVALID_ARGUMENT' }));
    expect(parseDeviceArgument('loop3')).toBe(3);
    expect(parseDeviceArgument('/dev/disk/by-id/x')).toBe('/dev/disk/by-id/x');
  });

  it('splits -o at commas outside quotes and keeps everything but the loop words', () => {
    expect(splitMountOptions('loop,sizelimit=8M,ro,context="a,b",noatime')).toEqual({ sizeLimit: 8 * MiB, rest: 'ro,context="a,b",noatime' });
    expect(splitMountOptions('')).toEqual({ rest: '' });
  });
});

describe('output formats', () => {
  it('aligns the list table like losetup --list, with a PARTS column', () => {
    const table = formatTable([
      fakeInfo(),
      fakeInfo({
        path: '/dev/loop12',
        backingFile: '/tmp/with space\n.img',
        offset: MiB,
        sizeLimit: 4 * MiB,
        autoclear: true,
        readOnly: true,
        directIO: true,
        sectorSize: 4096,
        partitions: [{ path: '/dev/loop12p1', number: 1, start: MiB, size: MiB }],
      }),
    ]);
    expect(table).toBe(
      [
        'NAME        SIZELIMIT  OFFSET AUTOCLEAR RO BACK-FILE               DIO LOG-SEC PARTS',
        '/dev/loop3          0       0         0  0 /tmp/a.img                0     512     0',
        '/dev/loop12   4194304 1048576         1  1 /tmp/with space\\x0a.img   1    4096     1',
        '',
      ].join('\n'),
    );
    expect(formatTable([])).toBe('');
  });

  it('prints { loopdevices: [...] } with the documented keys in a fixed order', () => {
    const parsed = JSON.parse(formatListJson([fakeInfo({ partitions: [{ path: '/dev/loop3p1', number: 1, start: 512, size: 1024 }] })]));
    expect(Object.keys(parsed)).toEqual(['loopdevices']);
    expect(Object.keys(parsed.loopdevices[0])).toEqual([
      'path', 'number', 'backingFile', 'backingDevice', 'backingInode', 'offset', 'sizeLimit', 'size', 'readOnly', 'autoclear',
      'partscan', 'directIO', 'sectorSize', 'major', 'minor', 'diskseq', 'label', 'partitions',
    ]);
    expect(parsed.loopdevices[0].partitions).toEqual([{ path: '/dev/loop3p1', number: 1, start: 512, size: 1024 }]);
  });

  it('prints info as key/value lines', () => {
    const text = formatInfo(fakeInfo({ partitions: [{ path: '/dev/loop3p1', number: 1, start: 512, size: 1024 }] }));
    expect(text).toMatch(/^path +\/dev\/loop3$/m);
    expect(text).toMatch(/^backingFile +\/tmp\/a\.img$/m);
    expect(text).toMatch(/^ {2}\/dev\/loop3p1 {2}start 512 {2}size 1024$/m);
  });

  it('formats a failure as one line, with the code of a library error and a hint', () => {
    const error = new LoopError('/dev/null is not a loop block device', { code: 'ERR_LOOP_NOT_LOOP_DEVICE', path: '/dev/null' });
    const text = formatFailure('info /dev/null', error, 'info');
    expect(text.split('\n')[0]).toBe('loopdev: info /dev/null: /dev/null is not a loop block device (ERR_LOOP_NOT_LOOP_DEVICE)');
    expect(text.split('\n')[1]).toMatch(/^hint: /);
    const system = LoopError.system(2, 'open', '/tmp/x.img');
    expect(formatFailure('attach /tmp/x.img', system, 'attach')).toBe(
      "loopdev: attach /tmp/x.img: ENOENT: no such file or directory, open '/tmp/x.img'\n",
    );
  });

  it('lists every command in the help, and each command has its own', () => {
    const top = helpText();
    for (const name of ['attach', 'detach', 'list', 'info', 'find', 'mount', 'umount']) {
      expect(top).toMatch(new RegExp(`^ {2}${name}\\b`, 'm'));
      expect(helpText(name as Parameters<typeof helpText>[0])).toMatch(new RegExp(`^Usage: loopdev ${name} `));
    }
    expect(helpText('attach')).toMatch(/--autoclear +same as --hold/);
  });

  it('points to where the JSON keys are documented, and every key printed is there', () => {
    for (const name of ['attach', 'list', 'info', 'find'] as const) expect(helpText(name)).toMatch(/--json +print JSON \(keys: "JSON output" in the README\)$/m);
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const start = readme.indexOf('\n### JSON output\n');
    expect(start).toBeGreaterThan(0);
    const section = readme.slice(start, readme.indexOf('\n### ', start + 1));
    const printed = JSON.parse(formatListJson([fakeInfo({ partitions: [{ path: '/dev/loop3p1', number: 1, start: 512, size: 1024 }] })]));
    for (const key of Object.keys(printed.loopdevices[0])) expect(section, key).toContain(`\`${key}\``);
  });
});

describe('main (in-process, no kernel)', () => {
  function capture(argv: string[]): Promise<Run> {
    const out = { stdout: '', stderr: '' };
    return main(argv, { stdout: (text) => (out.stdout += text), stderr: (text) => (out.stderr += text) }).then((status) => ({ status, ...out }));
  }

  it('prints help on stdout and exits 0', async () => {
    const result = await capture(['umount', '--help']);
    expect(result).toMatchObject({ status: EXIT_OK, stderr: '' });
    expect(result.stdout).toMatch(/^Usage: loopdev umount \[options\] TARGET/);
  });

  it('exits 2 with one message line and one usage line for a wrong command line', async () => {
    const result = await capture(['attach', '--offset', '12Q', 'a.img']);
    expect(result.status).toBe(EXIT_USAGE);
    expect(result.stdout).toBe('');
    expect(result.stderr.trimEnd().split('\n')).toEqual([
      'loopdev: attach: option \'--offset\': not a size: "12Q" (use bytes or a suffix: 512, 4K, 10M, 1G)',
      'Usage: loopdev attach [options] IMAGE (see `loopdev attach --help`)',
    ]);
  });

  it("exits 2 with the library's own message for what the library's checks refuse", async () => {
    const refusal = (check: () => unknown): string => {
      try {
        check();
      } catch (error) {
        expect(error).toBeInstanceOf(LoopError);
        return (error as LoopError).message;
      }
      throw new Error('the library accepted it');
    };
    const cases: [string[], string][] = [
      [['attach', '-b', '1000', 'a.img'], refusal(() => planAttach('a.img', { sectorSize: 1000 })).replace("option 'sectorSize'", "option '--sector-size'")],
      [['attach', '--label', 'é'.repeat(32), 'a.img'], refusal(() => planAttach('a.img', { label: 'é'.repeat(32) })).replace("option 'label'", "option '--label'")],
      [['attach', '--device', 'loop1048576', 'a.img'], refusal(() => planAttach('a.img', { device: 1048576 })).replace("option 'device'", "option '--device'")],
      [['info', '1048576'], refusal(() => deviceNumber(1048576))],
      [['detach', '/dev/loop1', '1048576'], refusal(() => deviceNumber(1048576))],
      [['mount', '--partition', '256', 'a.img', '/mnt'], refusal(() => checkPartition(256)).replace("option 'partition'", "option '--partition'")],
      [['mount', '--sector-size', '8K', 'a.img', '/mnt'], refusal(() => planAttach('a.img', { sectorSize: 8192 })).replace("option 'sectorSize'", "option '--sector-size'")],
    ];
    for (const [argv, message] of cases) {
      const result = await capture(argv);
      expect(result.status, argv.join(' ')).toBe(EXIT_USAGE);
      expect(result.stdout).toBe('');
      const [first, second, ...more] = result.stderr.split('\n');
      expect(first, argv.join(' ')).toBe(`loopdev: ${argv[0]}: ${message}`);
      expect(second, argv.join(' ')).toMatch(new RegExp(`^Usage: loopdev ${argv[0]} .*\\(see \`loopdev ${argv[0]} --help\`\\)$`));
      expect(more).toEqual(['']);
    }
  });
});

describe('the built CLI without a kernel', () => {
  beforeAll(() => {
    if (!existsSync(cli) || statSync(cli).mtimeMs < statSync(join(root, 'lib', 'cli.ts')).mtimeMs) {
      throw new Error('dist/cli.js is missing or older than lib/cli.ts: run `npm run build:ts` first');
    }
  });

  it('starts with a shebang, prints the version and the help', () => {
    expect(readFileSync(cli, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    const version = run(['--version']);
    expect(version).toEqual({ status: 0, stdout: `${JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version}\n`, stderr: '' });
    const help = run(['-h']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: loopdev COMMAND/);
    expect(run(['mount', '--help']).stdout).toMatch(/^Usage: loopdev mount \[options\] IMAGE TARGET/);
  });

  it.each([
    [['frob'], /^loopdev: unknown command 'frob'/],
    [['attach', '--bogus', 'a.img'], /^loopdev: attach: unknown option '--bogus'/],
    [['attach', '--size-limit', '12Q', 'a.img'], /^loopdev: attach: option '--size-limit': not a size: "12Q"/],
    [['info'], /^loopdev: info: missing DEV/],
    [[], /^loopdev: missing command/],
  ])('exits 2 for %j', (args, message) => {
    const result = run(args);
    expect(result.status).toBe(EXIT_USAGE);
    expect(result.stdout).toBe('');
    const lines = result.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(message);
    expect(lines[1]).toMatch(/^Usage: loopdev /);
  });

  it('answers help, version and a wrong command line where the addon cannot load', () => {
    expect(runWithoutAddon(['--version']).status).toBe(EXIT_OK);
    expect(runWithoutAddon(['--help']).stdout).toMatch(/^Usage: loopdev COMMAND/);
    expect(runWithoutAddon(['mount', '--help']).stdout).toMatch(/^Usage: loopdev mount /);
    for (const args of [
      ['attach', '--bogus', 'a.img'],
      ['attach', '--sector-size', '1000', 'a.img'],
      ['attach', '--label', 'x'.repeat(64), 'a.img'],
      ['attach', '--device', '99999999', 'a.img'],
      ['info', '99999999'],
      ['mount', '--partition', '0', 'a.img', '/mnt'],
      ['mount', '--sector-size', '1000', 'a.img', '/mnt'],
    ]) {
      const result = runWithoutAddon(args);
      expect(result.status, args.join(' ')).toBe(EXIT_USAGE);
      expect(result.stderr, args.join(' ')).toMatch(/^loopdev: \w+: .*\nUsage: /);
    }
    // The block works: a command that needs the library fails, in one line.
    const list = runWithoutAddon(['list']);
    expect(list.status).toBe(EXIT_FAILURE);
    expect(list.stderr).toBe('loopdev: list: the addon cannot load here\n');
  });
});

describe('messages a person reads', () => {
  it('every errno is described in words (ENOTDIR, ELOOP, ENAMETOOLONG, EBADF, and those libuv lacks)', () => {
    const cases: [number, string][] = [
      [20, 'ENOTDIR: not a directory'],
      [40, 'ELOOP: too many symbolic links encountered'],
      [36, 'ENAMETOOLONG: name too long'],
      [9, 'EBADF: bad file descriptor'],
      [15, 'ENOTBLK: block device required'],
      [37, 'ENOLCK: no locks available'],
    ];
    for (const [errno, text] of cases) {
      const error = LoopError.system(errno, 'open', '/x');
      expect(error.message).toBe(`${text}, open '/x'`);
      expect(error.code).toBe(text.split(':')[0]);
      expect(error.errno).toBe(-errno);
    }
  });

  it('a label that is not valid UTF-8 on the command line is refused, not stored as U+FFFD', () => {
    // Node's spawn takes only strings: bash passes the raw byte.
    const result = spawnSync('bash', ['-c', `exec "$0" "$1" attach --label "$(printf 'a\\377b')" /nonexistent.img`, process.execPath, cli], { encoding: 'utf8' });
    expect(result.status).toBe(EXIT_USAGE);
    expect(result.stderr).toMatch(/^loopdev: attach: option '--label' is not valid UTF-8/);
    // A real U+FFFD in the text is a character like any other.
    expect(() => parseCommand(['attach', '--label', 'a\uFFFDb', 'a.img'])).not.toThrow();
  });
});

describe.skipIf(!privileged())('the built CLI on the kernel', () => {
  let dir: TempDir;
  /** Devices this test attached and has not seen released (checked after each test). */
  const mine = (): number[] => devicesBackedBy(dir.path);

  beforeAll(() => {
    if (!existsSync(cli) || statSync(cli).mtimeMs < statSync(join(root, 'lib', 'cli.ts')).mtimeMs) {
      throw new Error('dist/cli.js is missing or older than lib/cli.ts: run `npm run build:ts` first');
    }
    dir = tempDir('loopdev-cli-');
  });

  afterEach(async () => {
    // A leak is a failure of the test that made it; clean it up (only ours) and say so.
    const left = mine();
    for (const number of left) run(['detach', String(number)]);
    expect(left, 'devices left bound by this test').toEqual([]);
  });

  afterAll(() => {
    const mounted = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((line) => dir && line.includes(dir.path));
    expect(mounted).toEqual([]);
    dir?.remove();
  });

  function attach(args: string[]): { path: string; number: number } {
    const result = run(['attach', ...args]);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    const path = result.stdout.trim();
    expect(path).toMatch(/^\/dev\/loop\d+$/);
    return { path, number: loopNumberOf(path)! };
  }

  it('detach and info of a device that does not exist say so in the same words', () => {
    const detach = run(['detach', '1048000']);
    const info = run(['info', '1048000']);
    expect(detach.status).toBe(1);
    expect(info.status).toBe(1);
    expect(detach.stderr).toMatch(/^loopdev: detach 1048000: \/dev\/loop1048000 does not exist \(no such loop device\) \(ENOENT\)\n/);
    expect(info.stderr).toMatch(/^loopdev: info 1048000: \/dev\/loop1048000 does not exist \(no such loop device\) \(ERR_LOOP_NOT_ATTACHED\)\n/);
  });

  it('attach prints the device path; sysfs agrees with the options; detach releases it', () => {
    const image = dir.image('attach.img', 8 * MiB);
    const { path, number } = attach(['--offset', '1M', '--size-limit', '2M', '-r', image]);
    expect(sysRead(number, 'loop/backing_file')).toBe(image);
    expect(sysRead(number, 'loop/offset')).toBe(String(MiB));
    expect(sysRead(number, 'loop/sizelimit')).toBe(String(2 * MiB));
    expect(sysRead(number, 'ro')).toBe('1');
    expect(sysRead(number, 'size')).toBe(String((2 * MiB) / 512));
    expect(sysRead(number, 'loop/autoclear')).toBe('0'); // it outlives the CLI
    expect(run(['detach', path])).toEqual({ status: 0, stdout: '', stderr: '' });
    expect(sysBoundTo(number, image)).toBe(false);
  });

  it('attach --json prints the device as sysfs sees it', () => {
    const image = dir.image('json.img', 8 * MiB);
    const result = run(['attach', '--json', '--offset', '4K', '--size-limit', '1M', '--sector-size', '4096', '--label', 'cli test', image]);
    expect(result.status).toBe(0);
    const info = JSON.parse(result.stdout);
    try {
      expect(info.backingFile).toBe(sysRead(info.number, 'loop/backing_file'));
      expect(info.backingFile).toBe(image);
      expect(info.offset).toBe(Number(sysRead(info.number, 'loop/offset')));
      expect(info.sizeLimit).toBe(Number(sysRead(info.number, 'loop/sizelimit')));
      expect(info.sizeLimit).toBe(MiB);
      expect(info.readOnly).toBe(sysRead(info.number, 'ro') === '1');
      expect(info.sectorSize).toBe(Number(sysRead(info.number, 'queue/logical_block_size')));
      expect(info.sectorSize).toBe(4096);
      expect(info.label).toBe('cli test');
      expect(info.path).toBe(`/dev/loop${info.number}`);
      expect(`${info.major}:${info.minor}`).toBe(sysRead(info.number, 'dev'));
      expect(info.backingInode).toBe(statSync(image).ino);
    } finally {
      expect(run(['detach', info.path]).status).toBe(0);
    }
  });

  it('list shows the device in aligned columns, and as JSON', () => {
    const image = dir.image('list.img', 4 * MiB);
    const { path, number } = attach(['--offset', '512', image]);
    try {
      const plain = run(['list']);
      expect(plain.status).toBe(0);
      const lines = plain.stdout.trimEnd().split('\n');
      expect(lines[0]).toMatch(/^NAME +SIZELIMIT +OFFSET +AUTOCLEAR +RO +BACK-FILE +DIO +LOG-SEC +PARTS$/);
      const row = lines.find((line) => line.startsWith(`${path} `));
      expect(row, plain.stdout).toBeDefined();
      expect(row!.length).toBe(lines[0]!.length); // PARTS is right-aligned to the header's end
      expect(row!.split(/ +/)).toEqual([path, '0', '512', '0', '0', image, '0', '512', '0']);
      // Each column starts (left-aligned) or ends (right-aligned) where its header does.
      expect(row!.indexOf(image)).toBe(lines[0]!.indexOf('BACK-FILE'));
      expect(row!.indexOf(' 512 ') + 4).toBe(lines[0]!.indexOf('OFFSET') + 'OFFSET'.length);

      const json = run(['list', '--json']);
      expect(json.status).toBe(0);
      const parsed = JSON.parse(json.stdout) as { loopdevices: LoopInfo[] };
      const entry = parsed.loopdevices.find((info) => info.number === number);
      expect(entry).toMatchObject({ path, backingFile: sysRead(number, 'loop/backing_file'), offset: 512, sizeLimit: 0, readOnly: false, autoclear: false });
    } finally {
      expect(run(['detach', path]).status).toBe(0);
    }
  });

  it('info and find show the device; find also matches a relative path', () => {
    const image = dir.image('info.img', 4 * MiB);
    const { path, number } = attach(['--partscan', image]);
    try {
      for (const spelling of [path, `loop${number}`, String(number)]) {
        const result = run(['info', '--json', spelling]);
        expect(result.status, spelling).toBe(0);
        expect(JSON.parse(result.stdout)).toMatchObject({ path, number, backingFile: image, partscan: sysRead(number, 'loop/partscan') === '1' });
      }
      const plain = run(['info', path]);
      expect(plain.stdout).toMatch(new RegExp(`^backingFile +${image.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'));

      const found = run(['find', image]);
      expect(found).toEqual({ status: 0, stdout: `${path}\n`, stderr: '' });
      const relative = spawnSync(process.execPath, [cli, 'find', '--json', 'info.img'], { cwd: dir.path, encoding: 'utf8' });
      expect(JSON.parse(relative.stdout).loopdevices.map((info: LoopInfo) => info.path)).toEqual([path]);
      const other = dir.image('unattached.img', MiB);
      expect(run(['find', other])).toEqual({ status: 0, stdout: '', stderr: '' });
    } finally {
      expect(run(['detach', path]).status).toBe(0);
    }
  });

  it('detach takes N, loopN, /dev/loopN and an image (all its devices)', () => {
    const image = dir.image('detach.img', 4 * MiB);
    const devices = [attach([image]), attach([image]), attach([image])];
    const [a, b, c] = devices as [(typeof devices)[0], (typeof devices)[0], (typeof devices)[0]];
    expect(run(['detach', String(a.number)])).toEqual({ status: 0, stdout: '', stderr: '' });
    expect(sysBoundTo(a.number, image)).toBe(false);
    expect(run(['detach', '-v', `loop${b.number}`])).toEqual({ status: 0, stdout: `${b.path}: detached\n`, stderr: '' });
    expect(sysBoundTo(b.number, image)).toBe(false);
    const d = attach([image]);
    const byImage = run(['detach', '--verbose', image]);
    expect(byImage.status).toBe(0);
    expect(byImage.stdout.trimEnd().split('\n').sort()).toEqual([`${c.path}: detached`, `${d.path}: detached`].sort());
    expect(devicesBackedBy(image)).toEqual([]);
    expect(run(['detach', '-v', image])).toEqual({ status: 0, stdout: `${image}: no loop device\n`, stderr: '' });
  });

  /**
   * A free device held open with O_EXCL: no other process can bind it meanwhile
   * (LOOP_CONFIGURE claims the device and gets EBUSY), so a test can never touch theirs.
   * Taken from the top, as LOOP_CTL_GET_FREE hands out the lowest free device first.
   */
  function holdFreeDevice(): { number: number; path: string; release(): void } {
    const free = readdirSync('/sys/block')
      .map((name) => /^loop(\d+)$/.exec(name))
      .filter((match) => match !== null)
      .map((match) => Number(match[1]))
      .filter((number) => !sysBound(number))
      .sort((x, y) => y - x);
    for (const number of free) {
      let fd: number;
      try {
        fd = openSync(`/dev/loop${number}`, constants.O_RDONLY | constants.O_EXCL);
      } catch {
        continue;
      }
      if (!sysBound(number)) return { number, path: `/dev/loop${number}`, release: () => closeSync(fd) };
      closeSync(fd);
    }
    throw new Error('no free loop device to hold');
  }

  it('detach of an unbound device succeeds; info of it fails with ERR_LOOP_NOT_ATTACHED', () => {
    const free = holdFreeDevice();
    try {
      expect(run(['detach', free.path])).toEqual({ status: 0, stdout: '', stderr: '' });
      expect(run(['detach', '-v', String(free.number)])).toEqual({ status: 0, stdout: `${free.path}: was not attached\n`, stderr: '' });
      const info = run(['info', String(free.number)]);
      expect(info.status).toBe(EXIT_FAILURE);
      expect(info.stderr.split('\n')[0]).toBe(`loopdev: info ${free.number}: ${free.path} is not attached to a file (ERR_LOOP_NOT_ATTACHED)`);
    } finally {
      free.release();
    }
  });

  it('fails with exit 1 and one error line: missing image, not a loop device', () => {
    const missing = join(dir.path, 'missing.img');
    const attachMissing = run(['attach', missing]);
    expect(attachMissing.status).toBe(EXIT_FAILURE);
    expect(attachMissing.stdout).toBe('');
    expect(attachMissing.stderr).toBe(`loopdev: attach ${missing}: ENOENT: no such file or directory, open '${missing}'\n`);

    const notLoop = run(['info', '/dev/null']);
    expect(notLoop.status).toBe(EXIT_FAILURE);
    expect(notLoop.stderr.split('\n')[0]).toBe('loopdev: info /dev/null: /dev/null is not a loop block device (ERR_LOOP_NOT_LOOP_DEVICE)');
    expect(notLoop.stderr).not.toMatch(/\n\s+at /); // no stack trace

    const detachNotLoop = run(['detach', '/dev/null']);
    expect(detachNotLoop.status).toBe(EXIT_FAILURE);
    expect(detachNotLoop.stderr).toMatch(/^loopdev: detach \/dev\/null: .*\(ERR_LOOP_NOT_LOOP_DEVICE\)$/m);

    const findMissing = run(['find', missing]);
    expect(findMissing.status).toBe(EXIT_FAILURE);
    expect(findMissing.stderr).toMatch(/^loopdev: find .*missing\.img: ENOENT/);
  });

  it('prints a stack trace only when NODE_DEBUG names loopdev', () => {
    const debug = run(['info', '/dev/null'], { NODE_DEBUG: 'fs,loopdev' });
    expect(debug.status).toBe(EXIT_FAILURE);
    expect(debug.stderr).toMatch(/^loopdev: info \/dev\/null: /);
    expect(debug.stderr).toMatch(/\n\s+at /);
  });

  it('detach of several arguments goes on after a failure, then exits 1', () => {
    const image = dir.image('several.img', MiB);
    const { path, number } = attach([image]);
    const result = run(['detach', join(dir.path, 'nope.img'), path]);
    expect(result.status).toBe(EXIT_FAILURE);
    expect(result.stderr).toMatch(/^loopdev: detach .*nope\.img: ENOENT/);
    expect(sysBoundTo(number, image)).toBe(false);
  });

  it('leaves nothing bound after a failed attach', () => {
    const image = dir.image('failed.img', 4 * MiB);
    const busy = holdFreeDevice();
    try {
      // The CLI opens the image and the device, then LOOP_CONFIGURE says EBUSY.
      const result = run(['attach', '--device', String(busy.number), image]);
      expect(result.status).toBe(EXIT_FAILURE);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(new RegExp(`^loopdev: attach .*failed\\.img: EBUSY: .*'${busy.path}'$`, 'm'));
      expect(result.stderr).toMatch(/^hint: .*--device/m);
      expect(sysBoundTo(busy.number, image)).toBe(false);
    } finally {
      busy.release();
    }
    const directory = join(dir.path, 'a-directory');
    mkdirSync(directory, { recursive: true });
    const notFile = run(['attach', directory]);
    expect(notFile.status).toBe(EXIT_FAILURE);
    expect(notFile.stderr.split('\n')[0]).toMatch(/^loopdev: attach .*a-directory: E[A-Z]+: /);
    expect(devicesBackedBy(dir.path)).toEqual([]);
  });

  /** Starts `loopdev attach --hold ...` and resolves once it printed the device path. */
  async function startHolder(args: string[]): Promise<{ child: ChildProcess; path: string; number: number; exit: Promise<number | null> }> {
    const child = spawn(process.execPath, [cli, 'attach', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    let stderr = '';
    child.stderr!.on('data', (chunk) => (stderr += chunk));
    const path = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (chunk) => {
        out += chunk;
        if (out.includes('\n')) resolve(out.split('\n')[0]!);
      });
      void exit.then((code) => reject(new Error(`loopdev exited (${code}) before printing a device: ${stderr}`)));
    });
    return { child, path, number: loopNumberOf(path)!, exit };
  }

  it('attach --hold keeps the device while it runs and releases it on SIGTERM', async () => {
    const image = dir.image('hold.img', 4 * MiB);
    const holder = await startHolder(['--hold', image]);
    try {
      expect(sysRead(holder.number, 'loop/backing_file')).toBe(image);
      expect(sysRead(holder.number, 'loop/autoclear')).toBe('1');
      // Still bound a while later: the CLI holds it, nothing released it.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(sysBound(holder.number)).toBe(true);
      expect(holder.child.exitCode).toBeNull();

      // A detach meanwhile cannot free it: loopdev says so and exits 0.
      const detach = run(['detach', holder.path]);
      expect(detach.status).toBe(0);
      expect(detach.stderr).toMatch(new RegExp(`^loopdev: warning: ${holder.path} is still open`));
      expect(sysBound(holder.number)).toBe(true);
    } finally {
      holder.child.kill('SIGTERM');
    }
    expect(await holder.exit).toBe(0);
    expect(await until(() => !sysBoundTo(holder.number, image), 5000)).toBe(true);
  });

  it('attach --autoclear is --hold, and the kernel frees the device even on SIGKILL', async () => {
    const image = dir.image('autoclear.img', 4 * MiB);
    const holder = await startHolder(['--autoclear', image]);
    expect(sysRead(holder.number, 'loop/autoclear')).toBe('1');
    holder.child.kill('SIGKILL');
    await holder.exit;
    expect(await until(() => !sysBoundTo(holder.number, image), 5000)).toBe(true);
  });

  describe('mount and umount', () => {
    const mountsUnder = (path: string): string[] =>
      readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .filter((line) => line.split(' ')[4]?.startsWith(path));

    afterEach(() => {
      // A failed test must not leave a mount in the temp dir (its removal would descend into it).
      for (const line of mountsUnder(dir.path).reverse()) run(['umount', '--lazy', line.split(' ')[4]!]);
    });

    it('mounts an ext4 image that outlives the CLI, writes through it, and releases the device at umount', () => {
      const image = dir.image('fs.img', 32 * MiB);
      execFileSync('mkfs.ext4', ['-q', '-F', image], { stdio: ['ignore', 'ignore', 'pipe'] });
      const target = join(dir.path, 'mnt', 'fs');

      const mounted = run(['mount', '--mkdir', '--json', image, target]);
      expect(mounted.stderr).toBe('');
      expect(mounted.status).toBe(0);
      const summary = JSON.parse(mounted.stdout);
      expect(summary).toMatchObject({ target, fstype: 'ext4', partitionPath: null });
      expect(summary.source).toBe(summary.device);
      const number = loopNumberOf(summary.device)!;
      // The CLI has exited; the mount holds the device, which goes away with it.
      expect(sysRead(number, 'loop/backing_file')).toBe(image);
      expect(sysRead(number, 'loop/autoclear')).toBe('1');
      const [line] = mountsUnder(target);
      expect(line).toMatch(new RegExp(` - ext4 ${summary.device} rw`));
      expect(line!.split(' ')[5]).toMatch(/nosuid,nodev/);

      writeFileSync(join(target, 'hello.txt'), 'written through the mount\n');
      const unmounted = run(['umount', '-v', target]);
      expect(unmounted).toEqual({ status: 0, stdout: `unmounted ${target}; released ${summary.device}\n`, stderr: '' });
      expect(mountsUnder(target)).toEqual([]);
      expect(sysBoundTo(number, image)).toBe(false);

      // The file reached the image: mount it again read-only (with mount(8)'s spelling) and read it.
      const again = run(['mount', '-o', 'loop,ro', '-t', 'ext4', image, target]);
      expect(again).toEqual({ status: 0, stdout: '', stderr: '' });
      try {
        expect(mountsUnder(target)[0]!.split(' ')[5]).toMatch(/^ro,/);
        expect(readFileSync(join(target, 'hello.txt'), 'utf8')).toBe('written through the mount\n');
      } finally {
        expect(run(['umount', target]).status).toBe(0);
      }
      expect(devicesBackedBy(image)).toEqual([]);
    });

    it('fails cleanly: no filesystem, wrong options, missing mount point, nothing mounted', () => {
      const blank = dir.image('blank.img', 4 * MiB);
      const target = join(dir.path, 'mnt', 'blank');
      mkdirSync(target, { recursive: true });

      const unknown = run(['mount', blank, target]);
      expect(unknown.status).toBe(EXIT_FAILURE);
      expect(unknown.stderr.split('\n')[0]).toMatch(/^loopdev: mount .*blank\.img on .*: no known filesystem .*\(ERR_LOOP_UNKNOWN_FSTYPE\)$/);
      expect(unknown.stderr.split('\n')[1]).toBe('hint: name the filesystem with -t TYPE');
      expect(devicesBackedBy(blank)).toEqual([]);
      expect(mountsUnder(target)).toEqual([]);

      const refused = run(['mount', '-o', 'bind', blank, target]);
      expect(refused.status).toBe(EXIT_USAGE);
      expect(refused.stderr).toMatch(/ERR_LOOP_INVALID_OPTION/);

      const noPoint = run(['mount', blank, join(dir.path, 'mnt', 'missing')]);
      expect(noPoint.status).toBe(EXIT_FAILURE);
      expect(noPoint.stderr).toMatch(/ENOENT/);
      expect(noPoint.stderr).toMatch(/^hint: add --mkdir/m);

      const notMounted = run(['umount', target]);
      expect(notMounted.status).toBe(EXIT_FAILURE);
      expect(notMounted.stderr.split('\n')[0]).toMatch(/^loopdev: umount .*: nothing is mounted at .*\(ERR_LOOP_NOT_MOUNTED\)$/);
      expect(devicesBackedBy(dir.path)).toEqual([]);
    });
  });
});
