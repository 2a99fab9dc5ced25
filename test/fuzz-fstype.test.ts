// Fuzz target for the filesystem probe, detectFsType(): random bytes and mutations of real
// superblocks (made by mke2fs, mkfs.fat, mksquashfs, mkfs.erofs where installed, by hand for
// xfs and btrfs, whose tools want images of 100+ MiB) give a known type or null, after a
// bounded number of reads, and a type only when its magic number is really there.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { detectFsType, type FsType } from '../lib/mount/fstype';
import { fuzzParameters, guardedReader, resultOrLoopError } from './helpers/fuzz';
import { findTool, removeTempImage, sparseTempImage, tempImagePath } from './helpers/images';

const KiB = 1024;
/** The probe looks at the first 4 KiB and at btrfs's magic at 64 KiB + 64. */
const PROBED = 64 * KiB + 72;
const BTRFS_MAGIC_AT = 64 * KiB + 64;

interface Base {
  name: string;
  data: Buffer;
  type: FsType;
}

const bases: Base[] = [];
const made: string[] = [];

/** The first PROBED bytes of `file`. */
function head(file: string): Buffer {
  const fd = openSync(file, 'r');
  try {
    const data = Buffer.alloc(PROBED);
    return data.subarray(0, readSync(fd, data, 0, PROBED, 0));
  } finally {
    closeSync(fd);
  }
}

function sparse(name: string, sizeBytes: number): string {
  const file = sparseTempImage(name, sizeBytes);
  made.push(file);
  return file;
}

/** A tool run that adds a base, or nothing when the tool is not installed. */
function fromTool(type: FsType, tool: string, args: (file: string, source: string) => string[], sizeBytes = 0): void {
  const path = findTool(tool);
  if (path === null) return;
  const file = sizeBytes > 0 ? sparse(`${type}.img`, sizeBytes) : tempImagePath(`${type}.img`);
  if (sizeBytes === 0) made.push(file);
  const source = join(dirname(file), 'src');
  mkdirSync(source, { recursive: true });
  writeFileSync(join(source, 'hello.txt'), 'hello\n');
  execFileSync(path, args(file, source), { stdio: ['ignore', 'ignore', 'ignore'] });
  bases.push({ name: `${tool} (${type})`, data: head(file), type });
}

beforeAll(() => {
  fromTool('ext4', 'mke2fs', (file) => ['-q', '-F', '-t', 'ext4', file], 2 * 1024 * KiB);
  fromTool('ext2', 'mke2fs', (file) => ['-q', '-F', '-t', 'ext2', file], 1024 * KiB);
  fromTool('vfat', 'mkfs.fat', (file) => [file], 1024 * KiB);
  fromTool('squashfs', 'mksquashfs', (file, source) => [source, file, '-quiet', '-noappend']);
  fromTool('erofs', 'mkfs.erofs', (file, source) => [file, source]);
  const xfs = Buffer.alloc(PROBED);
  xfs.write('XFSB', 0, 'latin1');
  bases.push({ name: 'hand-made xfs', data: xfs, type: 'xfs' });
  const btrfs = Buffer.alloc(PROBED);
  btrfs.write('_BHRfS_M', BTRFS_MAGIC_AT, 'latin1');
  bases.push({ name: 'hand-made btrfs', data: btrfs, type: 'btrfs' });
});

afterAll(() => {
  for (const file of made.splice(0)) removeTempImage(file);
});

const TYPES: readonly (FsType | null)[] = ['ext4', 'ext3', 'ext2', 'xfs', 'btrfs', 'vfat', 'squashfs', 'erofs', null];

/** A type is named only when the bytes that name it are there. */
function checkType(type: FsType | null, data: Buffer): void {
  expect(TYPES).toContain(type);
  const text = (at: number, length: number): string => data.toString('latin1', at, at + length);
  switch (type) {
    case 'xfs':
      expect(text(0, 4)).toBe('XFSB');
      break;
    case 'squashfs':
      expect(text(0, 4)).toBe('hsqs');
      break;
    case 'erofs':
      expect(data.readUInt32LE(1024)).toBe(0xe0f5e1e2);
      break;
    case 'ext2':
    case 'ext3':
    case 'ext4':
      expect(data.readUInt16LE(1024 + 56)).toBe(0xef53);
      break;
    case 'btrfs':
      expect(text(BTRFS_MAGIC_AT, 8)).toBe('_BHRfS_M');
      break;
    case 'vfat':
      expect([data[510], data[511]]).toEqual([0x55, 0xaa]);
      break;
    case null:
      break;
  }
}

/** Probes `data` with whole and with short reads: the same answer, bounded reads, a sane type. */
function probeChecked(data: Buffer, chunk: number): void {
  const guard = guardedReader(data);
  const outcome = resultOrLoopError(() => detectFsType(guard.read));
  // Two regions (4 KiB, 8 bytes), each read until the data ends: at most two calls apiece.
  expect(guard.calls).toBeLessThanOrEqual(4);
  expect(guard.bytes).toBeLessThanOrEqual(4096 + 8);
  if ('value' in outcome) checkType(outcome.value, data);

  const trickle = guardedReader(data, { chunk });
  expect(resultOrLoopError(() => detectFsType(trickle.read))).toEqual(outcome);
  expect(trickle.bytes).toBeLessThanOrEqual(4096 + 8);
}

describe('detectFsType, fuzzed', () => {
  it('knows the real superblocks it mutates', () => {
    expect(bases.length).toBeGreaterThanOrEqual(2);
    for (const base of bases) expect(detectFsType(guardedReader(base.data).read), base.name).toBe(base.type);
  });

  it('gives a known type or null on random bytes, within its read budget', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 8 * KiB }), fc.integer({ min: 1, max: 5000 }), (bytes, chunk) => {
        probeChecked(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length), chunk);
      }),
      fuzzParameters(300),
    );
  });

  it('gives a known type or null on mutated and truncated superblocks, a type only with its magic', () => {
    const edit = fc.tuple(
      fc.oneof(fc.nat(4095), fc.integer({ min: BTRFS_MAGIC_AT - 8, max: PROBED - 1 }), fc.constantFrom(0, 1, 11, 13, 14, 16, 21, 54, 82, 510, 511, 1024, 1080, 1116, 1120, 1124)),
      fc.oneof(fc.nat(255), fc.constantFrom(0, 0xff, 0x55, 0xaa, 0x53, 0xef)),
    );
    fc.assert(
      fc.property(
        fc.nat(Math.max(0, bases.length - 1)),
        fc.array(edit, { minLength: 1, maxLength: 12 }),
        fc.nat(PROBED),
        fc.integer({ min: 1, max: 5000 }),
        (which, edits, length, chunk) => {
          const data = Buffer.from(bases[which]!.data.subarray(0, length));
          for (const [at, value] of edits) if (at < data.length) data[at] = value;
          probeChecked(data, chunk);
        },
      ),
      fuzzParameters(300),
    );
  });
});
