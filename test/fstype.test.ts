import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { detectFsType, type FsType } from '../lib/mount/fstype';
import { readPartitionTable, type ReadAt } from '../lib/partitions/table';
import { bufferReader, findTool, openImage, removeTempImage, sparseTempImage, tempImagePath, writeGpt } from './helpers/images';

const MiB = 1024 * 1024;

const made: string[] = [];
afterEach(() => {
  for (const file of made.splice(0)) removeTempImage(file);
});

function sparseImage(name: string, sizeBytes: number): string {
  const file = sparseTempImage(name, sizeBytes);
  made.push(file);
  return file;
}

/**
 * Detects the filesystem of a whole image, and checks on the way that the bare filesystem is
 * not mistaken for a partition table (FAT boot sectors end in 0x55AA just like an MBR).
 */
function detectFile(file: string): FsType | null {
  const img = openImage(file);
  try {
    expect(readPartitionTable(img.read, 512, img.size)).toBeNull();
    return detectFsType(img.read);
  } finally {
    img.close();
  }
}

function run(tool: string, args: string[]): void {
  execFileSync(tool, args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A small directory tree next to the image, for the tools that build from a directory. */
function sourceTree(image: string): string {
  const dir = join(dirname(image), 'src');
  mkdirSync(join(dir, 'sub'), { recursive: true });
  writeFileSync(join(dir, 'hello.txt'), 'hello\n');
  writeFileSync(join(dir, 'sub', 'data.bin'), Buffer.alloc(10_000, 7));
  return dir;
}

const tools = {
  mke2fs: findTool('mke2fs'),
  mkfsXfs: findTool('mkfs.xfs'),
  mkfsBtrfs: findTool('mkfs.btrfs'),
  mkfsFat: findTool('mkfs.fat') ?? findTool('mkfs.vfat'),
  mksquashfs: findTool('mksquashfs'),
  mkfsErofs: findTool('mkfs.erofs'),
};

describe('detectFsType on filesystems made by the real tools', () => {
  it.skipIf(tools.mke2fs === null).each([
    ['ext2', 'ext2'],
    ['ext3', 'ext3'],
    ['ext4', 'ext4'],
  ] as const)('tells %s apart (needs mke2fs from apt package e2fsprogs)', (type, want) => {
    const file = sparseImage(`${type}.img`, 16 * MiB);
    run(tools.mke2fs!, ['-q', '-F', '-t', type, file]);
    expect(detectFile(file)).toBe(want);
  });

  it.skipIf(tools.mke2fs === null)('reports ext4 without a journal as ext4 (needs mke2fs, e2fsprogs)', () => {
    const file = sparseImage('ext4-nojournal.img', 16 * MiB);
    run(tools.mke2fs!, ['-q', '-F', '-t', 'ext4', '-O', '^has_journal', file]);
    expect(detectFile(file)).toBe('ext4');
  });

  it.skipIf(tools.mkfsXfs === null)('finds xfs (needs mkfs.xfs from apt package xfsprogs)', () => {
    // Recent xfsprogs refuse filesystems under 300 MiB; the file stays sparse.
    const file = sparseImage('xfs.img', 512 * MiB);
    run(tools.mkfsXfs!, ['-q', '-f', file]);
    expect(detectFile(file)).toBe('xfs');
  });

  it.skipIf(tools.mkfsBtrfs === null)('finds btrfs (needs mkfs.btrfs from apt package btrfs-progs)', () => {
    const file = sparseImage('btrfs.img', 256 * MiB);
    run(tools.mkfsBtrfs!, ['-q', '-f', file]);
    expect(detectFile(file)).toBe('btrfs');
  });

  it.skipIf(tools.mkfsFat === null).each([12, 16, 32])(
    'finds vfat with FAT%i (needs mkfs.fat from apt package dosfstools)',
    (bits) => {
      const file = sparseImage(`fat${bits}.img`, (bits === 32 ? 64 : 16) * MiB);
      run(tools.mkfsFat!, ['-F', String(bits), file]);
      expect(detectFile(file)).toBe('vfat');
    },
  );

  it.skipIf(tools.mksquashfs === null)('finds squashfs (needs mksquashfs from apt package squashfs-tools)', () => {
    const file = tempImagePath('squash.img');
    made.push(file);
    run(tools.mksquashfs!, [sourceTree(file), file, '-noappend', '-quiet', '-no-progress']);
    expect(detectFile(file)).toBe('squashfs');
  });

  it.skipIf(tools.mkfsErofs === null)('finds erofs (needs mkfs.erofs from apt package erofs-utils)', () => {
    const file = tempImagePath('erofs.img');
    made.push(file);
    run(tools.mkfsErofs!, [file, sourceTree(file)]);
    expect(detectFile(file)).toBe('erofs');
  });

  it.skipIf(tools.mke2fs === null)('finds ext4 inside a GPT partition (needs mke2fs, e2fsprogs)', () => {
    const file = sparseImage('disk.img', 64 * MiB);
    writeGpt(file, 64 * MiB, [{ startBytes: 1 * MiB, sizeBytes: 32 * MiB }]);
    run(tools.mke2fs!, ['-q', '-F', '-t', 'ext4', '-E', `offset=${1 * MiB}`, file, String((32 * MiB) / 1024)]);
    const img = openImage(file);
    try {
      const table = readPartitionTable(img.read, 512, img.size);
      expect(table?.partitions).toEqual([{ number: 1, start: 1 * MiB, length: 32 * MiB }]);
      const start = table!.partitions[0]!.start;
      const inPartition: ReadAt = (buffer, position) => img.read(buffer, start + position);
      expect(detectFsType(inPartition)).toBe('ext4');
      // The whole disk starts with a protective MBR, which is not a filesystem.
      expect(detectFsType(img.read)).toBeNull();
    } finally {
      img.close();
    }
  });
});

/** Minimal superblocks: only the fields detectFsType looks at, so it is covered without tools. */
function extImage(compat: number, incompat: number, roCompat: number): Buffer {
  const data = Buffer.alloc(4096);
  const sb = 1024;
  data.writeUInt16LE(0xef53, sb + 56);
  data.writeUInt32LE(compat, sb + 92);
  data.writeUInt32LE(incompat, sb + 96);
  data.writeUInt32LE(roCompat, sb + 100);
  return data;
}

function fatBootSector(edit: (sector: Buffer) => void): Buffer {
  const data = Buffer.alloc(8192);
  data[0] = 0xeb;
  data[1] = 0x3c;
  data[2] = 0x90;
  data.write('MSWIN4.1', 3, 'latin1');
  data.writeUInt16LE(512, 11);
  data[13] = 4; // sectors per cluster
  data.writeUInt16LE(1, 14); // reserved sectors
  data[16] = 2; // FAT copies
  data[21] = 0xf8; // media: fixed disk
  data.write('FAT16   ', 54, 'latin1');
  data[510] = 0x55;
  data[511] = 0xaa;
  edit(data);
  return data;
}

describe('detectFsType on hand-made superblocks', () => {
  const FILETYPE = 0x2;
  const SPARSE_SUPER = 0x1;
  const LARGE_FILE = 0x2;
  const HAS_JOURNAL = 0x4;

  it.each([
    ['no features', 0, 0, 0, 'ext2'],
    ['ext2-compatible features', 0x38, FILETYPE, SPARSE_SUPER | LARGE_FILE, 'ext2'],
    ['a journal', HAS_JOURNAL, FILETYPE, SPARSE_SUPER, 'ext3'],
    ['a journal and a RECOVER flag', HAS_JOURNAL, FILETYPE | 0x4, SPARSE_SUPER, 'ext3'],
    ['extents', HAS_JOURNAL, FILETYPE | 0x40, SPARSE_SUPER, 'ext4'],
    ['64bit', HAS_JOURNAL, 0x80, 0, 'ext4'],
    ['flex_bg without a journal', 0, 0x200, 0, 'ext4'],
    ['huge_file', HAS_JOURNAL, 0, 0x8, 'ext4'],
    ['gdt_csum', 0, 0, 0x10, 'ext4'],
    ['dir_nlink', HAS_JOURNAL, 0, 0x20, 'ext4'],
    ['extra_isize', HAS_JOURNAL, 0, 0x40, 'ext4'],
    ['metadata_csum', 0, 0, 0x400, 'ext4'],
  ] as const)('reads ext with %s as %s', (_name, compat, incompat, roCompat, want) => {
    expect(detectFsType(bufferReader(extImage(compat, incompat, roCompat)))).toBe(want);
  });

  it('does not report an external ext journal device as mountable', () => {
    expect(detectFsType(bufferReader(extImage(0, 0x8, 0)))).toBeNull();
  });

  it('finds xfs, squashfs and erofs by their magic', () => {
    const xfs = Buffer.alloc(4096);
    xfs.write('XFSB', 0, 'latin1');
    expect(detectFsType(bufferReader(xfs))).toBe('xfs');

    const squash = Buffer.alloc(96);
    squash.writeUInt32LE(0x73717368, 0);
    expect(squash.toString('latin1', 0, 4)).toBe('hsqs');
    expect(detectFsType(bufferReader(squash))).toBe('squashfs');

    const erofs = Buffer.alloc(4096);
    erofs.writeUInt32LE(0xe0f5e1e2, 1024);
    expect(detectFsType(bufferReader(erofs))).toBe('erofs');
  });

  it('finds btrfs by the magic in its superblock at 64 KiB', () => {
    const btrfs = Buffer.alloc(65536 + 4096);
    btrfs.write('_BHRfS_M', 65536 + 64, 'latin1');
    expect(detectFsType(bufferReader(btrfs))).toBe('btrfs');
    // Same bytes, one off: not btrfs.
    expect(detectFsType(bufferReader(Buffer.concat([Buffer.alloc(1), btrfs])))).toBeNull();
  });

  it('finds vfat by its FAT12/FAT16/FAT32 label', () => {
    expect(detectFsType(bufferReader(fatBootSector(() => {})))).toBe('vfat');
    const fat12 = fatBootSector((s) => s.write('FAT12   ', 54, 'latin1'));
    expect(detectFsType(bufferReader(fat12))).toBe('vfat');
    const fat32 = fatBootSector((s) => {
      s.fill(0, 54, 62);
      s.write('FAT32   ', 82, 'latin1');
    });
    expect(detectFsType(bufferReader(fat32))).toBe('vfat');
  });

  it('finds vfat without a label when the BPB is plausible', () => {
    const unlabelled = fatBootSector((s) => s.fill(0x20, 54, 62));
    expect(detectFsType(bufferReader(unlabelled))).toBe('vfat');
    const e9Jump = fatBootSector((s) => {
      s.fill(0x20, 54, 62);
      s[0] = 0xe9;
      s.writeUInt16LE(4096, 11);
      s[13] = 1;
    });
    expect(detectFsType(bufferReader(e9Jump))).toBe('vfat');
  });

  it.each([
    ['the 0x55AA signature is missing', (s: Buffer) => s.fill(0, 510, 512)],
    ['the jump is not a jump', (s: Buffer) => (s[0] = 0x00)],
    ['bytes per sector is 500', (s: Buffer) => s.writeUInt16LE(500, 11)],
    ['sectors per cluster is 3', (s: Buffer) => (s[13] = 3)],
    ['sectors per cluster is 0', (s: Buffer) => (s[13] = 0)],
    ['there are no reserved sectors (as in NTFS)', (s: Buffer) => s.writeUInt16LE(0, 14)],
    ['there are no FATs (as in NTFS)', (s: Buffer) => (s[16] = 0)],
    ['the media byte is invalid', (s: Buffer) => (s[21] = 0x12)],
  ])('does not take an unlabelled boot sector for vfat when %s', (_name, edit) => {
    const sector = fatBootSector((s) => {
      s.fill(0, 54, 62);
      edit(s);
    });
    expect(detectFsType(bufferReader(sector))).toBeNull();
  });

  it('does not take an NTFS boot sector or a plain MBR for vfat', () => {
    const ntfs = fatBootSector((s) => {
      s.fill(0, 11, 62);
      s.write('NTFS    ', 3, 'latin1');
      s.writeUInt16LE(512, 11);
      s[13] = 8;
      s[21] = 0xf8;
    });
    expect(detectFsType(bufferReader(ntfs))).toBeNull();

    const mbr = Buffer.alloc(4096);
    mbr[0] = 0xeb; // boot loaders such as GRUB start with a short jump too
    mbr[1] = 0x63;
    mbr[446 + 4] = 0x83;
    mbr.writeUInt32LE(2048, 446 + 8);
    mbr.writeUInt32LE(4096, 446 + 12);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    expect(detectFsType(bufferReader(mbr))).toBeNull();
  });

  it('returns null for zeros, short data and noise', () => {
    expect(detectFsType(bufferReader(Buffer.alloc(0)))).toBeNull();
    expect(detectFsType(bufferReader(Buffer.alloc(100)))).toBeNull();
    expect(detectFsType(bufferReader(Buffer.alloc(128 * 1024)))).toBeNull();
    const noise = Buffer.alloc(128 * 1024);
    let x = 12345;
    for (let i = 0; i < noise.length; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      noise[i] = x >>> 24;
    }
    expect(detectFsType(bufferReader(noise))).toBeNull();
  });

  it('survives a reader that returns one byte at a time', () => {
    const ext = extImage(HAS_JOURNAL, 0x40, 0);
    const trickle: ReadAt = (buffer, position) =>
      position < ext.length && buffer.length > 0 ? ext.copy(buffer, 0, position, position + 1) : 0;
    expect(detectFsType(trickle)).toBe('ext4');
  });
});
