// Disk images for dissect() and mountImage(), built the way image builders make them: the table
// with sfdisk, the file systems with mkfs (ext4 populated from a directory with mke2fs -d), their
// bytes copied to each partition's start. 4096-byte sectors need a loop device with that block
// size for sfdisk (util-linux 2.38 lays out image files in 512-byte sectors only).
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { attachSync } from '../../lib/index';
import { findTool } from './images';

export const sfdisk = findTool('sfdisk');
export const mkfsExt4 = findTool('mkfs.ext4');
export const mkfsVfat = findTool('mkfs.vfat');

/** Type GUIDs the tests use, spelled out here from the spec's table (the table test checks the generated one). */
export const GUID = {
  rootX86_64: '4f68bce3-e8cd-4db1-96e7-fbcaf984b709',
  rootX86: '44479540-f297-41b2-9af7-d131d5f0458a',
  rootArm64: 'b921b045-1df0-41c3-af44-4c6f280d3fae',
  rootVerityX86_64: '2c7357ed-ebd2-46d9-aec1-23d437ec2bf5',
  usrX86_64: '8484680c-9521-48c6-9c11-b0720656f69e',
  esp: 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b',
  xbootldr: 'bc13c2ff-59e6-4262-a352-b275fd6f7172',
  swap: '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f',
  home: '933ac7e1-2eb4-4f13-b844-0e14e2aef915',
  srv: '3b8f8425-20e0-4f3b-907f-1a25a76f98e8',
  var: '4d21b016-b534-45c2-a9fb-5c16e091fd2d',
  tmp: '7ec6f557-3bc5-4aca-b293-16ef5df639d1',
  generic: '0fc63daf-8483-4772-8e79-3d69d8477de4',
} as const;

export interface PartSpec {
  /** sfdisk size, e.g. "8M" */
  size: string;
  /** a GPT type GUID, or an MBR type in hex ("83") */
  type: string;
  name?: string;
  /** sfdisk attrs, e.g. "GUID:60,63" */
  attrs?: string;
  bootable?: boolean;
  /** ext4 with these files (path → text), "vfat", "luks" (only the LUKS magic), or nothing */
  fs?: Record<string, string> | 'vfat' | 'luks' | 'broken-ext4';
}

export interface ImageSpec {
  label: 'gpt' | 'dos';
  sizeMiB: number;
  sectorSize?: 512 | 4096;
  parts: PartSpec[];
}

/** An ext4 file system of `sizeMiB` holding `files` (directories named by a trailing /). */
export function ext4Image(work: string, files: Record<string, string>, sizeMiB: number, blockSize: number): Buffer {
  const source = mkdtempSync(join(work, 'src-'));
  for (const [path, text] of Object.entries(files)) {
    if (path.endsWith('/')) mkdirSync(join(source, path), { recursive: true });
    else {
      mkdirSync(dirname(join(source, path)), { recursive: true });
      writeFileSync(join(source, path), text);
    }
  }
  const file = join(work, `fs-${Date.now()}-${Math.random()}.img`);
  execFileSync(mkfsExt4!, ['-q', '-F', '-b', String(blockSize), '-d', source, file, `${sizeMiB}M`], { stdio: 'pipe' });
  const bytes = readFileSync(file);
  rmSync(file);
  rmSync(source, { recursive: true });
  return bytes;
}

const mib = (size: string): number => {
  const match = /^(\d+)M$/.exec(size);
  if (match === null) throw new Error(`sizes here are in M: ${size}`);
  return Number(match[1]);
};

/**
 * Builds the image at `file` (in a test temp dir) and answers each partition's start in bytes.
 * 4096-byte sectors attach the file to a loop device for sfdisk and detach it again.
 */
export function buildImage(file: string, spec: ImageSpec): number[] {
  const sectorSize = spec.sectorSize ?? 512;
  writeFileSync(file, '');
  truncateSync(file, spec.sizeMiB * 1024 * 1024);
  const lines = [`label: ${spec.label}`];
  for (const part of spec.parts) {
    const fields = [`size=${part.size}`, `type=${part.type}`];
    if (part.name !== undefined) fields.push(`name="${part.name}"`);
    if (part.attrs !== undefined) fields.push(`attrs="${part.attrs}"`);
    if (part.bootable) fields.push('bootable');
    lines.push(fields.join(', '));
  }
  const script = `${lines.join('\n')}\n`;
  let layout: string;
  if (sectorSize === 512) {
    execFileSync(sfdisk!, ['-q', file], { input: script, stdio: ['pipe', 'pipe', 'pipe'] });
    layout = execFileSync(sfdisk!, ['-J', file], { encoding: 'utf8' });
  } else {
    const device = attachSync(file, { sectorSize });
    try {
      execFileSync(sfdisk!, ['-q', device.path], { input: script, stdio: ['pipe', 'pipe', 'pipe'] });
      layout = execFileSync(sfdisk!, ['-J', device.path], { encoding: 'utf8' });
    } finally {
      device.detachSync();
    }
  }
  const table = (JSON.parse(layout) as { partitiontable: { partitions: { start: number }[] } }).partitiontable;
  const starts = table.partitions.map((p) => p.start * sectorSize);
  const work = dirname(file);
  const fd = openSync(file, 'r+');
  try {
    spec.parts.forEach((part, index) => {
      const start = starts[index]!;
      let bytes: Buffer | undefined;
      if (part.fs === 'luks') bytes = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe, 0, 2]);
      else if (part.fs === 'vfat') {
        const fat = join(work, `fat-${index}.img`);
        execFileSync(mkfsVfat!, ['-C', fat, String(mib(part.size) * 1024)], { stdio: 'pipe' });
        bytes = readFileSync(fat);
        rmSync(fat);
      } else if (part.fs === 'broken-ext4') {
        // A superblock that probes as ext4, and nothing behind it: mount(2) refuses it.
        bytes = ext4Image(work, {}, mib(part.size), sectorSize === 4096 ? 4096 : 1024).subarray(0, 2048);
      } else if (part.fs !== undefined) {
        bytes = ext4Image(work, part.fs, mib(part.size), sectorSize === 4096 ? 4096 : 1024);
      }
      if (bytes !== undefined) writeSync(fd, bytes, 0, bytes.length, start);
    });
  } finally {
    closeSync(fd);
  }
  return starts;
}
