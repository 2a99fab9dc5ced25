/**
 * Userspace MBR/GPT parsing. The kernels this library targets may be built without partition
 * table parsers, so the library reads the table itself and adds the partitions with BLKPG.
 * The rules follow Linux's block/partitions/{msdos,efi}.c closely enough that partitions get
 * the numbers and extents the kernel would have given them.
 */
import type { ReadAt } from '../core/io';

/** One partition, as the kernel would number it. */
export interface PartitionEntry {
  /** Kernel partition number (1-based): the MBR slot, 5+ for logical partitions, GPT slot + 1. */
  number: number;
  /** Offset from the start of the device, in bytes. */
  start: number;
  /** Length in bytes, already clamped to the end of the device. */
  length: number;
}

/** How the parsers here read (see core/io.ts: parseReads runs them over reads made as steps). */
export type { ReadAt } from '../core/io';

export interface PartitionTable {
  type: 'mbr' | 'gpt';
  partitions: PartitionEntry[];
}

const MBR_SIZE = 512;
const MBR_SIGNATURE_OFFSET = 510;
const MBR_ENTRIES_OFFSET = 446;
const MBR_ENTRY_SIZE = 16;
const MBR_TYPE_GPT_PROTECTIVE = 0xee;
const MBR_EXTENDED_TYPES: ReadonlySet<number> = new Set([0x05, 0x0f, 0x85]);
/** Partition minors stop below DISK_MAX_PARTS (256): BLKPG rejects higher numbers, Linux ignores them. */
export const MAX_PARTITION_NUMBER = 255;
const FIRST_LOGICAL_NUMBER = 5;
/**
 * Counted over all extended entries: an MBR may hold up to four, even four pointing at one EBR
 * chain, and a cap per chain let their numbers run past MAX_PARTITION_NUMBER.
 */
const MAX_LOGICAL_PARTITIONS = 128;
/** EBRs that yield no partition still cost a read; Linux gives up after 100 of them in a row. */
const MAX_EBR_READS = 256;

const GPT_SIGNATURE = Buffer.from('EFI PART', 'latin1');
const GPT_HEADER_MIN_SIZE = 92;
const GPT_ENTRY_MIN_SIZE = 128;
const GPT_ENTRY_MAX_SIZE = 4096;
/** Bounds what a hostile header can make us allocate (256 entries of the largest size). */
const GPT_ENTRIES_MAX_BYTES = 256 * GPT_ENTRY_MAX_SIZE;

const CRC32_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * CRC-32 as used by zlib, PNG and the UEFI spec (reflected polynomial 0xEDB88320). Node 20's
 * zlib has no crc32(), and a table-driven loop is fast enough for the at most 1 MiB read here.
 * @returns the checksum as an unsigned 32-bit number.
 */
export function crc32(data: Buffer): number {
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = CRC32_TABLE[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * Reads a partition table from the start of a device.
 *
 * A GPT is used when the MBR holds a 0xEE (protective or hybrid) entry; the backup header at the
 * last LBA is used when the primary header or its entry array fails its checks (CRCs included).
 * If both are bad the result is null: the 0xEE entry says the MBR entries are not the real table.
 *
 * Partitions starting at or beyond `deviceSize` are dropped and the rest are clamped to it, as
 * the kernel does; their numbers are still consumed, so numbering matches the kernel's. GPT
 * slots past number 255 and logical partitions past the 128th are ignored. An MBR extended
 * container is returned, like the kernel does, as a stub of max(sectorSize, 1024) bytes so that
 * nothing can be written over the EBR chain through it.
 *
 * Errors thrown by `read` propagate; malformed tables never throw.
 *
 * @param read reads from the device; positions are absolute byte offsets.
 * @param sectorSize logical sector size in bytes (512 or 4096, the loop device's block size).
 * @param deviceSize size of the device in bytes.
 * @returns the table, or null when there is no recognisable table or it has no partitions
 *   (an MBR without usable entries is indistinguishable from some FAT boot sectors).
 */
export function readPartitionTable(read: ReadAt, sectorSize: number, deviceSize: number): PartitionTable | null {
  if (!Number.isSafeInteger(sectorSize) || sectorSize < 512 || (sectorSize & (sectorSize - 1)) !== 0) return null;
  if (!Number.isSafeInteger(deviceSize) || deviceSize < MBR_SIZE) return null;

  const mbr = readExact(read, 0, MBR_SIZE, deviceSize);
  if (mbr === null || mbr[MBR_SIGNATURE_OFFSET] !== 0x55 || mbr[MBR_SIGNATURE_OFFSET + 1] !== 0xaa) return null;

  const entries = parseMbrEntries(mbr);
  // A boot indicator other than 0/0x80 means this is a boot sector (FAT, NTFS...) rather than
  // an MBR; Linux rejects the table on the same test.
  if (entries.some((e) => e.status !== 0 && e.status !== 0x80)) return null;

  if (entries.some((e) => e.type === MBR_TYPE_GPT_PROTECTIVE)) {
    const partitions = readGpt(read, sectorSize, deviceSize);
    // A sound GPT with no entry inside the device is "no partitions", as for an MBR.
    return partitions === null || partitions.length === 0 ? null : { type: 'gpt', partitions };
  }

  const partitions: PartitionEntry[] = [];
  const add = (number: number, startLba: number, sectors: number): void => {
    const entry = toEntry(number, startLba * sectorSize, sectors * sectorSize, deviceSize);
    if (entry !== null) partitions.push(entry);
  };

  let nextLogical = FIRST_LOGICAL_NUMBER;
  entries.forEach((e, slot) => {
    if (e.type === 0 || e.sectors === 0) return;
    if (!MBR_EXTENDED_TYPES.has(e.type)) {
      add(slot + 1, e.startLba, e.sectors);
      return;
    }
    const stubBytes = Math.min(e.sectors * sectorSize, Math.max(sectorSize, 1024));
    const stub = toEntry(slot + 1, e.startLba * sectorSize, stubBytes, deviceSize);
    if (stub !== null) partitions.push(stub);
    nextLogical = readLogicalPartitions(read, sectorSize, deviceSize, e.startLba, nextLogical, add);
  });

  if (partitions.length === 0) return null;
  partitions.sort((a, b) => a.number - b.number);
  return { type: 'mbr', partitions };
}

/**
 * The logical sector size a GPT was written for: its header ("EFI PART") sits at LBA 1, so at
 * byte 512, 1024, 2048 or 4096 (systemd looks the same way for 4K-sector and CD images). 512
 * when there is no GPT.
 */
export function gptSectorSize(read: ReadAt): number {
  const signature = Buffer.alloc(GPT_SIGNATURE.length);
  for (const size of [512, 1024, 2048, 4096]) {
    signature.fill(0);
    if (read(signature, size) === signature.length && signature.equals(GPT_SIGNATURE)) return size;
  }
  return 512;
}

/**
 * Why readPartitionTable() found no table, in a user's words: nothing there, a damaged GPT,
 * a GPT without partitions, or a boot sector. For messages only.
 * @param sectorSize the device's logical sector size in bytes, the GPT's unit.
 */
export function whyNoTable(read: ReadAt, deviceSize: number, sectorSize = 512): string {
  const mbr = deviceSize >= MBR_SIZE ? readExact(read, 0, MBR_SIZE, deviceSize) : null;
  if (mbr === null || mbr[MBR_SIGNATURE_OFFSET] !== 0x55 || mbr[MBR_SIGNATURE_OFFSET + 1] !== 0xaa) return 'no MBR or GPT was found in the image';
  const entries = parseMbrEntries(mbr);
  if (entries.some((e) => e.status !== 0 && e.status !== 0x80)) return 'its first sector is a boot sector (a filesystem such as FAT), not a partition table';
  if (entries.some((e) => e.type === MBR_TYPE_GPT_PROTECTIVE)) {
    if (readGpt(read, sectorSize, deviceSize) !== null) return 'its GPT lists no partition inside the device';
    return 'it has a GPT, but neither its primary nor its backup header and entry array pass their checks (CRC, bounds): the table is damaged';
  }
  return 'its MBR lists no usable partition';
}

interface MbrEntry {
  status: number;
  type: number;
  startLba: number;
  sectors: number;
}

function parseMbrEntries(sector: Buffer): MbrEntry[] {
  const entries: MbrEntry[] = [];
  for (let i = 0; i < 4; i++) {
    const off = MBR_ENTRIES_OFFSET + i * MBR_ENTRY_SIZE;
    entries.push({
      status: sector[off]!,
      type: sector[off + 4]!,
      startLba: sector.readUInt32LE(off + 8),
      sectors: sector.readUInt32LE(off + 12),
    });
  }
  return entries;
}

/**
 * Walks the EBR chain of one extended partition. Logical entries are relative to their own EBR,
 * links to the next EBR are relative to the start of the extended container.
 * @returns the next free logical partition number.
 */
function readLogicalPartitions(
  read: ReadAt,
  sectorSize: number,
  deviceSize: number,
  extendedLba: number,
  firstNumber: number,
  add: (number: number, startLba: number, sectors: number) => void,
): number {
  const end = FIRST_LOGICAL_NUMBER + MAX_LOGICAL_PARTITIONS;
  let next = firstNumber;
  const seen = new Set<number>();
  let ebrLba = extendedLba;
  for (let reads = 0; reads < MAX_EBR_READS && next < end; reads++) {
    if (seen.has(ebrLba)) break;
    seen.add(ebrLba);
    const ebr = readExact(read, ebrLba * sectorSize, MBR_SIZE, deviceSize);
    if (ebr === null || ebr[MBR_SIGNATURE_OFFSET] !== 0x55 || ebr[MBR_SIGNATURE_OFFSET + 1] !== 0xaa) break;

    const entries = parseMbrEntries(ebr);
    for (const e of entries) {
      if (e.type === 0 || e.sectors === 0 || MBR_EXTENDED_TYPES.has(e.type)) continue;
      add(next, ebrLba + e.startLba, e.sectors);
      next++;
      if (next >= end) break;
    }

    // Only the first link is followed, as Linux does: the chain is a list, not a tree.
    const link = entries.find((e) => e.sectors !== 0 && MBR_EXTENDED_TYPES.has(e.type));
    if (link === undefined) break;
    ebrLba = extendedLba + link.startLba;
  }
  return next;
}

/** Reads a GPT, primary first, then the backup at the last LBA. */
function readGpt(read: ReadAt, sectorSize: number, deviceSize: number): PartitionEntry[] | null {
  return readGptTable(read, sectorSize, deviceSize)?.entries.map(({ number, start, length }) => ({ number, start, length })) ?? null;
}

/** One GPT entry with what the table says about it, beyond its extent. */
export interface GptEntry extends PartitionEntry {
  /** the partition type GUID, lowercase */
  type: string;
  /** the partition's own GUID, lowercase */
  uuid: string;
  /** the 64 attribute bits (bit 63 no-auto, 60 read-only, 59 grow-fs in the Discoverable Partitions Specification) */
  attributes: bigint;
  /** the partition name (UTF-16LE in the table, up to the first NUL) */
  name: string;
}

/** A GPT as read: which header was sound, the disk GUID, and the entries inside the device. */
export interface GptTable {
  header: 'primary' | 'backup';
  diskUuid: string;
  entries: GptEntry[];
}

/**
 * Reads a GPT with its entries' types, GUIDs, attributes and names: the primary header and
 * array, else the backup at the last LBA, each checked (signature, CRCs, bounds, own LBA).
 * @returns null when neither is sound.
 */
export function readGptTable(read: ReadAt, sectorSize: number, deviceSize: number): GptTable | null {
  const lastLba = Math.floor(deviceSize / sectorSize) - 1;
  if (lastLba < 2) return null;
  const primary = readGptAt(read, sectorSize, deviceSize, 1, lastLba);
  if (primary !== null) return { header: 'primary', ...primary };
  const backup = readGptAt(read, sectorSize, deviceSize, lastLba, lastLba);
  return backup === null ? null : { header: 'backup', ...backup };
}

/**
 * The offsets among 512, 1024, 2048 and 4096 that hold a sound GPT header for that sector
 * size (signature, size, CRC, its own LBA 1), as systemd probes an image's sector size: one
 * answer is the sector size; more than one means the image cannot say which it is.
 */
export function gptHeaderSectorSizes(read: ReadAt, deviceSize: number): number[] {
  const found: number[] = [];
  for (const size of [512, 1024, 2048, 4096]) {
    const header = readExact(read, size, size, deviceSize);
    if (header !== null && parseGptHeader(header, size, 1) !== null) found.push(size);
  }
  return found;
}

/** One entry of a primary MBR (the four slots), with its boot indicator. */
export interface MbrSlot {
  /** 1 to 4 */
  number: number;
  /** 0x80: bootable */
  status: number;
  type: number;
  /** bytes from the start of the device */
  start: number;
  length: number;
}

/**
 * The four primary slots of a plain MBR (not a GPT's protective one), clamped to the device
 * like readPartitionTable()'s; empty slots are left out. null when sector 0 is not an MBR.
 */
export function readMbrSlots(read: ReadAt, sectorSize: number, deviceSize: number): MbrSlot[] | null {
  const mbr = deviceSize >= MBR_SIZE ? readExact(read, 0, MBR_SIZE, deviceSize) : null;
  if (mbr === null || mbr[MBR_SIGNATURE_OFFSET] !== 0x55 || mbr[MBR_SIGNATURE_OFFSET + 1] !== 0xaa) return null;
  const entries = parseMbrEntries(mbr);
  if (entries.some((e) => e.status !== 0 && e.status !== 0x80) || entries.some((e) => e.type === MBR_TYPE_GPT_PROTECTIVE)) return null;
  const slots: MbrSlot[] = [];
  entries.forEach((e, index) => {
    if (e.type === 0 || e.sectors === 0) return;
    const entry = toEntry(index + 1, e.startLba * sectorSize, e.sectors * sectorSize, deviceSize);
    if (entry !== null) slots.push({ ...entry, status: e.status, type: e.type });
  });
  return slots;
}

/** Whether sector 0 is an MBR with a 0xEE (GPT protective or hybrid) entry: the disk has a GPT, sound or not. */
export function hasProtectiveMbr(read: ReadAt, deviceSize: number): boolean {
  const mbr = deviceSize >= MBR_SIZE ? readExact(read, 0, MBR_SIZE, deviceSize) : null;
  if (mbr === null || mbr[MBR_SIGNATURE_OFFSET] !== 0x55 || mbr[MBR_SIGNATURE_OFFSET + 1] !== 0xaa) return false;
  return parseMbrEntries(mbr).some((e) => e.type === MBR_TYPE_GPT_PROTECTIVE);
}

interface GptHeader {
  firstUsable: number;
  lastUsable: number;
  entriesLba: number;
  count: number;
  entrySize: number;
  arrayCrc: number;
  diskUuid: string;
}

/** A header's fields once its signature, size, CRC and own LBA check out; else null. */
function parseGptHeader(header: Buffer, sectorSize: number, headerLba: number): GptHeader | null {
  if (!header.subarray(0, 8).equals(GPT_SIGNATURE)) return null;
  const headerSize = header.readUInt32LE(12);
  if (headerSize < GPT_HEADER_MIN_SIZE || headerSize > sectorSize) return null;
  const storedHeaderCrc = header.readUInt32LE(16);
  const forCrc = Buffer.from(header.subarray(0, headerSize));
  forCrc.writeUInt32LE(0, 16);
  if (crc32(forCrc) !== storedHeaderCrc) return null;
  // A header copied to the wrong place (or found there by chance) must not be trusted.
  if (readU64(header, 24) !== headerLba) return null;
  const firstUsable = readU64(header, 40);
  const lastUsable = readU64(header, 48);
  const entriesLba = readU64(header, 72);
  if (firstUsable === null || lastUsable === null || entriesLba === null) return null;
  return {
    firstUsable,
    lastUsable,
    entriesLba,
    count: header.readUInt32LE(80),
    entrySize: header.readUInt32LE(84),
    arrayCrc: header.readUInt32LE(88),
    diskUuid: guidText(header, 56),
  };
}

function readGptAt(
  read: ReadAt,
  sectorSize: number,
  deviceSize: number,
  headerLba: number,
  lastLba: number,
): { diskUuid: string; entries: GptEntry[] } | null {
  const raw = readExact(read, headerLba * sectorSize, sectorSize, deviceSize);
  const header = raw === null ? null : parseGptHeader(raw, sectorSize, headerLba);
  if (header === null) return null;
  const { firstUsable, lastUsable, entriesLba, count, entrySize } = header;
  if (firstUsable > lastUsable || lastUsable > lastLba) return null;
  if (entriesLba < 2 || entriesLba > lastLba) return null;
  if (entrySize < GPT_ENTRY_MIN_SIZE || entrySize > GPT_ENTRY_MAX_SIZE || entrySize % 8 !== 0) return null;
  const arrayBytes = count * entrySize;
  if (arrayBytes > GPT_ENTRIES_MAX_BYTES) return null;

  const array = readExact(read, entriesLba * sectorSize, arrayBytes, deviceSize);
  if (array === null || crc32(array) !== header.arrayCrc) return null;

  const entries: GptEntry[] = [];
  for (let i = 0; i < Math.min(count, MAX_PARTITION_NUMBER); i++) {
    const entry = array.subarray(i * entrySize, (i + 1) * entrySize);
    if (entry.subarray(0, 16).every((b) => b === 0)) continue;
    const first = readU64(entry, 32);
    const last = readU64(entry, 40);
    if (first === null || last === null || last < first) continue;
    const start = first * sectorSize;
    const length = (last - first + 1) * sectorSize;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length)) continue;
    const p = toEntry(i + 1, start, length, deviceSize);
    if (p === null) continue;
    const nameBytes = entry.subarray(56, 128);
    let nameEnd = 0;
    while (nameEnd + 1 < nameBytes.length && (nameBytes[nameEnd] !== 0 || nameBytes[nameEnd + 1] !== 0)) nameEnd += 2;
    entries.push({
      ...p,
      type: guidText(entry, 0),
      uuid: guidText(entry, 16),
      attributes: entry.readBigUInt64LE(48),
      name: nameBytes.subarray(0, nameEnd).toString('utf16le'),
    });
  }
  return { diskUuid: header.diskUuid, entries };
}

/** A GUID as text: the first three fields are little-endian on disk, the last two big-endian. */
function guidText(buffer: Buffer, offset: number): string {
  const hex = (start: number, end: number, reverse: boolean): string => {
    const bytes = Buffer.from(buffer.subarray(offset + start, offset + end));
    return (reverse ? bytes.reverse() : bytes).toString('hex');
  };
  return `${hex(0, 4, true)}-${hex(4, 6, true)}-${hex(6, 8, true)}-${hex(8, 10, false)}-${hex(10, 16, false)}`;
}

/** A u64le as a Number, or null when it does not fit exactly. */
function readU64(buffer: Buffer, offset: number): number | null {
  const value = buffer.readBigUInt64LE(offset);
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? null : Number(value);
}

function toEntry(number: number, start: number, length: number, deviceSize: number): PartitionEntry | null {
  if (length <= 0 || start >= deviceSize) return null;
  return { number, start, length: Math.min(length, deviceSize - start) };
}

/** Reads exactly `length` bytes inside the device, or returns null if they are not all there. */
function readExact(read: ReadAt, position: number, length: number, deviceSize: number): Buffer | null {
  if (!Number.isSafeInteger(position) || position < 0 || position + length > deviceSize) return null;
  const buffer = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    // ReadAt has no offset argument, so short reads continue into a view of the rest.
    const n = read(buffer.subarray(done), position + done);
    if (n <= 0) return null;
    done += n;
  }
  return buffer;
}
