/**
 * Builders for sparse disk images with known partition layouts and contents, for unit tests
 * and for integration tests on real loop devices.
 */
import { closeSync, fstatSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { ReadAt } from '../../lib/partitions/table';

// The table writers live in lib/ (the loopdev/testing fixture uses them too).
export {
  buildMbrSector,
  writeGpt,
  writeMbr,
  type MbrOptions,
  type PartitionSpec,
  type RawMbrEntry,
} from '../../lib/partitions/writer';
import { withFile, writeAll } from '../../lib/partitions/writer';
export { findTool } from '../../lib/testing/tools';

/**
 * Writes `length` bytes of deterministic text at byte `position` of an existing file without
 * truncating it. Every line names the seed and its own absolute offset ("seed@offset\n"), so
 * data read back from the wrong place or the wrong image is told apart from the right data.
 * @returns the bytes written, for comparison with what is read back.
 */
export function fillPattern(file: string, position: number, length: number, seed: string): Buffer {
  const data = Buffer.alloc(length);
  let filled = 0;
  while (filled < length) {
    filled += data.write(`${seed}@${position + filled}\n`, filled, 'latin1');
  }
  withFile(file, 'r+', (fd) => writeAll(fd, data, position));
  return data;
}

/** A fresh path named `name` inside a new private directory under os.tmpdir(). */
export function tempImagePath(name: string): string {
  return join(mkdtempSync(join(tmpdir(), 'loopdev-test-')), basename(name));
}

/** A sparse file of `sizeBytes` at a tempImagePath() path (delete it with removeTempImage()). */
export function sparseTempImage(name: string, sizeBytes: number): string {
  const file = tempImagePath(name);
  const fd = openSync(file, 'w');
  try {
    ftruncateSync(fd, sizeBytes);
  } finally {
    closeSync(fd);
  }
  return file;
}

/** Deletes an image made at a tempImagePath() path together with its private directory. */
export function removeTempImage(file: string): void {
  const dir = dirname(file);
  // Only ever remove a directory this module could have created, never a caller's own.
  if (dirname(dir) !== tmpdir() || !basename(dir).startsWith('loopdev-test-')) {
    throw new Error(`${file} was not made by tempImagePath()`);
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Opens an image read-only and exposes it as a ReadAt, the way the library reads a device. */
export function openImage(file: string): { read: ReadAt; size: number; close: () => void } {
  const fd = openSync(file, 'r');
  return {
    read: (buffer, position) => readSync(fd, buffer, 0, buffer.length, position),
    size: fstatSync(fd).size,
    close: () => closeSync(fd),
  };
}

/** A ReadAt over bytes in memory; reads past the end come back short, as at the end of a file. */
export function bufferReader(data: Buffer): ReadAt {
  return (buffer, position) => (position >= data.length ? 0 : data.copy(buffer, 0, position));
}



