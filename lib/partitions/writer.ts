/**
 * Writers for MBR and GPT partition tables on sparse image files: the counterpart of
 * table.ts, used by the `loopdev/testing` fixture and by the library's own tests.
 * Their RangeErrors mark a caller's mistake in the layout (callers validate user input first).
 */
import { randomUUID } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';

import { crc32 } from './table';

export interface PartitionSpec {
  /** Offset from the start of the image, in bytes; a multiple of the sector size. */
  startBytes: number;
  /** Length in bytes; a multiple of the sector size. */
  sizeBytes: number;
  /** MBR partition type, default 0x83 (Linux). Ignored by writeGpt. */
  type?: number;
}

export interface MbrOptions {
  /**
   * Logical partitions, in chain order, to put inside the (single) primary whose type is
   * extended (0x05, 0x0F or 0x85). The first EBR is at the start of the extended partition,
   * every later one in the sector just before its logical partition, so leave a gap of at
   * least one sector between logical partitions. They are numbered 5, 6, ... by the kernel.
   */
  logical?: PartitionSpec[];
}

/** One raw entry of an MBR or EBR sector; LBAs and counts are in sectors of the table. */
export interface RawMbrEntry {
  type: number;
  startLba: number;
  sectors: number;
  /** Boot indicator, default 0. */
  status?: number;
}

const MBR_SECTOR = 512;
const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);
const GPT_ENTRY_COUNT = 128;
const GPT_ENTRY_SIZE = 128;
const LINUX_FS_TYPE_GUID = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
const DISK_SIGNATURE = 0x4c4f4f50; // 'LOOP', fixed so images are reproducible

/**
 * Builds a 512-byte MBR/EBR sector with up to four entries and the 0x55AA signature.
 * CHS fields are filled with the "use LBA" marker, as modern partitioners do.
 */
export function buildMbrSector(entries: RawMbrEntry[], diskSignature = 0): Buffer {
  if (entries.length > 4) throw new RangeError(`an MBR holds 4 entries, got ${entries.length}`);
  const sector = Buffer.alloc(MBR_SECTOR);
  sector.writeUInt32LE(diskSignature >>> 0, 440);
  entries.forEach((e, i) => {
    const off = 446 + i * 16;
    sector[off] = e.status ?? 0;
    sector.fill(0xff, off + 1, off + 4);
    sector[off + 4] = e.type;
    sector.fill(0xff, off + 5, off + 8);
    sector.writeUInt32LE(u32(e.startLba, 'start LBA'), off + 8);
    sector.writeUInt32LE(u32(e.sectors, 'sector count'), off + 12);
  });
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

/**
 * Creates (or truncates) a sparse image of `sizeBytes` bytes with an MBR of up to four primary
 * partitions, plus an EBR chain when `options.logical` is given. Sectors are 512 bytes.
 */
export function writeMbr(file: string, sizeBytes: number, partitions: PartitionSpec[], options: MbrOptions = {}): void {
  writeLayout(file, mbrLayout(sizeBytes, partitions, options));
}

/** What an image with an MBR holds: its size and the sectors to write (see writeMbr). */
export function mbrLayout(sizeBytes: number, partitions: PartitionSpec[], options: MbrOptions = {}): ImageLayout {
  if (partitions.length > 4) throw new RangeError(`an MBR holds 4 primary partitions, got ${partitions.length}`);
  for (const p of partitions) checkExtent(p, MBR_SECTOR, MBR_SECTOR, sizeBytes);

  const writes: { position: number; data: Buffer }[] = [];
  writes.push({
    position: 0,
    data: buildMbrSector(
      partitions.map((p) => ({
        type: p.type ?? 0x83,
        startLba: p.startBytes / MBR_SECTOR,
        sectors: p.sizeBytes / MBR_SECTOR,
      })),
      DISK_SIGNATURE,
    ),
  });

  const logical = options.logical ?? [];
  if (logical.length > 0) {
    const extended = partitions.filter((p) => EXTENDED_TYPES.has(p.type ?? 0x83));
    if (extended.length !== 1) throw new RangeError('logical partitions need exactly one extended primary partition');
    writes.push(...buildEbrChain(extended[0]!, logical));
  }

  return { sizeBytes, writes };
}

function buildEbrChain(extended: PartitionSpec, logical: PartitionSpec[]): { position: number; data: Buffer }[] {
  const extStart = extended.startBytes;
  const extEnd = extStart + extended.sizeBytes;
  const ebrAt = (i: number): number => (i === 0 ? extStart : logical[i]!.startBytes - MBR_SECTOR);
  const writes: { position: number; data: Buffer }[] = [];
  let previousEnd = extStart;
  logical.forEach((p, i) => {
    const ebr = ebrAt(i);
    checkExtent(p, MBR_SECTOR, ebr + MBR_SECTOR, extEnd);
    if (ebr < previousEnd) throw new RangeError(`logical partition ${i + 5} leaves no room for its EBR`);
    previousEnd = p.startBytes + p.sizeBytes;

    const entries: RawMbrEntry[] = [
      { type: p.type ?? 0x83, startLba: (p.startBytes - ebr) / MBR_SECTOR, sectors: p.sizeBytes / MBR_SECTOR },
    ];
    const following = logical[i + 1];
    if (following !== undefined) {
      // The link covers the next EBR through the end of the next logical partition, and unlike
      // the logical entry it is relative to the start of the extended partition.
      const nextEbr = ebrAt(i + 1);
      entries.push({
        type: 0x05,
        startLba: (nextEbr - extStart) / MBR_SECTOR,
        sectors: (following.startBytes + following.sizeBytes - nextEbr) / MBR_SECTOR,
      });
    }
    writes.push({ position: ebr, data: buildMbrSector(entries) });
  });
  return writes;
}

/**
 * Creates (or truncates) a sparse image of `sizeBytes` bytes holding a protective MBR and a
 * GPT (primary and backup headers and entry arrays, 128 entries of 128 bytes) with every
 * partition typed as Linux filesystem data.
 * @param sectorSize logical sector size in bytes the table is laid out for (512 or 4096).
 */
export function writeGpt(file: string, sizeBytes: number, partitions: PartitionSpec[], sectorSize = 512): void {
  writeLayout(file, gptLayout(sizeBytes, partitions, sectorSize));
}

/** What an image with a GPT holds: its size and the sectors to write (see writeGpt). */
export function gptLayout(sizeBytes: number, partitions: PartitionSpec[], sectorSize = 512): ImageLayout {
  if (sectorSize !== 512 && sectorSize !== 4096) throw new RangeError(`unsupported sector size ${sectorSize}`);
  if (sizeBytes % sectorSize !== 0) throw new RangeError('image size must be a multiple of the sector size');
  if (partitions.length > GPT_ENTRY_COUNT) throw new RangeError(`a GPT here holds ${GPT_ENTRY_COUNT} entries`);

  const lastLba = sizeBytes / sectorSize - 1;
  const arraySectors = Math.ceil((GPT_ENTRY_COUNT * GPT_ENTRY_SIZE) / sectorSize);
  const firstUsable = 2 + arraySectors;
  const backupArrayLba = lastLba - arraySectors;
  const lastUsable = backupArrayLba - 1;
  if (lastUsable < firstUsable) throw new RangeError('image too small for a GPT');
  for (const p of partitions) {
    checkExtent(p, sectorSize, firstUsable * sectorSize, (lastUsable + 1) * sectorSize);
  }

  const array = Buffer.alloc(GPT_ENTRY_COUNT * GPT_ENTRY_SIZE);
  partitions.forEach((p, i) => {
    const entry = array.subarray(i * GPT_ENTRY_SIZE, (i + 1) * GPT_ENTRY_SIZE);
    encodeGuid(LINUX_FS_TYPE_GUID).copy(entry, 0);
    encodeGuid(randomUUID()).copy(entry, 16);
    entry.writeBigUInt64LE(BigInt(p.startBytes / sectorSize), 32);
    entry.writeBigUInt64LE(BigInt((p.startBytes + p.sizeBytes) / sectorSize - 1), 40);
    entry.write(`part${i + 1}`, 56, 'utf16le');
  });
  const arrayCrc = crc32(array);
  const diskGuid = encodeGuid(randomUUID());

  const header = (myLba: number, alternateLba: number, arrayLba: number): Buffer => {
    const h = Buffer.alloc(sectorSize);
    h.write('EFI PART', 0, 'latin1');
    h.writeUInt32LE(0x00010000, 8);
    h.writeUInt32LE(92, 12);
    h.writeBigUInt64LE(BigInt(myLba), 24);
    h.writeBigUInt64LE(BigInt(alternateLba), 32);
    h.writeBigUInt64LE(BigInt(firstUsable), 40);
    h.writeBigUInt64LE(BigInt(lastUsable), 48);
    diskGuid.copy(h, 56);
    h.writeBigUInt64LE(BigInt(arrayLba), 72);
    h.writeUInt32LE(GPT_ENTRY_COUNT, 80);
    h.writeUInt32LE(GPT_ENTRY_SIZE, 84);
    h.writeUInt32LE(arrayCrc, 88);
    h.writeUInt32LE(crc32(h.subarray(0, 92)), 16);
    return h;
  };

  // UEFI counts the protective entry in logical blocks of sectorSize, not in 512-byte units.
  const protective = buildMbrSector([{ type: 0xee, startLba: 1, sectors: Math.min(lastLba, 0xffffffff) }]);
  return {
    sizeBytes,
    writes: [
      { position: 0, data: protective },
      { position: sectorSize, data: header(1, lastLba, 2) },
      { position: 2 * sectorSize, data: array },
      { position: backupArrayLba * sectorSize, data: array },
      { position: lastLba * sectorSize, data: header(lastLba, 1, backupArrayLba) },
    ],
  };
}

/** A sparse image: its size (bytes) and the sectors to write into it. */
export interface ImageLayout {
  sizeBytes: number;
  writes: { position: number; data: Buffer }[];
}

/** Creates (or truncates) `file` as the layout says. */
export function writeLayout(file: string, layout: ImageLayout): void {
  withFile(file, 'w', (fd) => {
    ftruncateSync(fd, layout.sizeBytes);
    for (const write of layout.writes) writeAll(fd, write.data, write.position);
  });
}

/** Opens `file`, runs `body` with the fd, closes it whatever happens. */
export function withFile(file: string, flags: string, body: (fd: number) => void): void {
  const fd = openSync(file, flags);
  try {
    body(fd);
  } finally {
    closeSync(fd);
  }
}

/** pwrite until all of `data` is written at `position`. */
export function writeAll(fd: number, data: Buffer, position: number): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, data.length - done, position + done);
}

/** GUIDs are stored with their first three fields little-endian ("mixed-endian"). */
function encodeGuid(guid: string): Buffer {
  const hex = guid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new RangeError(`bad GUID ${guid}`);
  const raw = Buffer.from(hex, 'hex');
  raw.subarray(0, 4).reverse();
  raw.subarray(4, 6).reverse();
  raw.subarray(6, 8).reverse();
  return raw;
}

/** Throws unless the partition is in whole sectors and inside [min, max) bytes. */
function checkExtent(p: PartitionSpec, unit: number, min: number, max: number): void {
  const { startBytes, sizeBytes } = p;
  if (startBytes % unit !== 0 || sizeBytes % unit !== 0 || sizeBytes <= 0) {
    throw new RangeError(`partition at ${startBytes} (+${sizeBytes}) is not in whole ${unit}-byte sectors`);
  }
  if (startBytes < min || startBytes + sizeBytes > max) {
    throw new RangeError(`partition at ${startBytes} (+${sizeBytes}) is outside ${min}..${max}`);
  }
}

function u32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`${what} ${value} does not fit in 32 bits`);
  }
  return value;
}
