/**
 * Filesystem detection from superblock magic numbers, so that mount() can be given a type
 * without shelling out to blkid.
 */
import type { ReadAt } from '../partitions/table';

export type FsType = 'ext4' | 'ext3' | 'ext2' | 'xfs' | 'btrfs' | 'vfat' | 'squashfs' | 'erofs';

const EXT_SUPERBLOCK = 1024;
const EXT_MAGIC = 0xef53;
const EXT_COMPAT_HAS_JOURNAL = 0x4;
/** An external journal device has an ext superblock but cannot be mounted. */
const EXT_INCOMPAT_JOURNAL_DEV = 0x8;
// What the ext3 driver understood (FILETYPE, RECOVER, META_BG / SPARSE_SUPER, LARGE_FILE,
// BTREE_DIR): any other bit (EXTENTS, 64BIT, FLEX_BG, HUGE_FILE, GDT_CSUM, DIR_NLINK,
// EXTRA_ISIZE, METADATA_CSUM, ...) needs ext4. blkid draws the line at the same place.
const EXT3_INCOMPAT_SUPPORTED = 0x2 | 0x4 | 0x10;
const EXT3_RO_COMPAT_SUPPORTED = 0x1 | 0x2 | 0x4;

const EROFS_SUPERBLOCK = 1024;
const EROFS_MAGIC = 0xe0f5e1e2;
const BTRFS_MAGIC_OFFSET = 65536 + 64;

/**
 * Identifies the filesystem whose first byte is at position 0 of `read`.
 * @param read reads from the filesystem; positions are byte offsets from its start.
 * @returns the type to pass to mount(2), or null when no known superblock is found.
 */
export function detectFsType(read: ReadAt): FsType | null {
  const head = readUpTo(read, 0, 4096);

  if (matches(head, 0, 'XFSB')) return 'xfs';
  if (matches(head, 0, 'hsqs')) return 'squashfs';
  if (head.length >= EROFS_SUPERBLOCK + 4 && head.readUInt32LE(EROFS_SUPERBLOCK) === EROFS_MAGIC) return 'erofs';

  const ext = detectExt(head);
  if (ext !== null) return ext;

  if (matches(readUpTo(read, BTRFS_MAGIC_OFFSET, 8), 0, '_BHRfS_M')) return 'btrfs';

  // Last, because an MBR also ends in 0x55AA and would otherwise be taken for a FAT boot sector.
  if (isFatBootSector(head)) return 'vfat';
  return null;
}

function detectExt(head: Buffer): 'ext2' | 'ext3' | 'ext4' | null {
  if (head.length < EXT_SUPERBLOCK + 104 || head.readUInt16LE(EXT_SUPERBLOCK + 56) !== EXT_MAGIC) return null;
  const compat = head.readUInt32LE(EXT_SUPERBLOCK + 92);
  const incompat = head.readUInt32LE(EXT_SUPERBLOCK + 96);
  const roCompat = head.readUInt32LE(EXT_SUPERBLOCK + 100);
  if (incompat & EXT_INCOMPAT_JOURNAL_DEV) return null;
  if (incompat & ~EXT3_INCOMPAT_SUPPORTED || roCompat & ~EXT3_RO_COMPAT_SUPPORTED) return 'ext4';
  return compat & EXT_COMPAT_HAS_JOURNAL ? 'ext3' : 'ext2';
}

function isFatBootSector(sector: Buffer): boolean {
  if (sector.length < 512 || sector[510] !== 0x55 || sector[511] !== 0xaa) return false;
  if (matches(sector, 54, 'FAT12   ') || matches(sector, 54, 'FAT16   ') || matches(sector, 82, 'FAT32   ')) {
    return true;
  }
  // Some formatters leave the type label blank, so fall back to a plausible BPB. Requiring
  // reserved sectors and FAT copies rules out NTFS and exFAT, whose BPBs have zeros there.
  const jump = sector[0];
  const bytesPerSector = sector.readUInt16LE(11);
  const sectorsPerCluster = sector[13]!;
  const reservedSectors = sector.readUInt16LE(14);
  const fats = sector[16]!;
  const media = sector[21]!;
  return (
    (jump === 0xeb || jump === 0xe9) &&
    [512, 1024, 2048, 4096].includes(bytesPerSector) &&
    sectorsPerCluster !== 0 &&
    (sectorsPerCluster & (sectorsPerCluster - 1)) === 0 &&
    reservedSectors !== 0 &&
    fats !== 0 &&
    (media === 0xf0 || media >= 0xf8)
  );
}

function matches(buffer: Buffer, offset: number, text: string): boolean {
  return buffer.length >= offset + text.length && buffer.toString('latin1', offset, offset + text.length) === text;
}

/** Reads up to `length` bytes; fewer when the filesystem (or device) is shorter. */
function readUpTo(read: ReadAt, position: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = read(buffer.subarray(done), position + done);
    if (n <= 0) break;
    done += n;
  }
  return buffer.subarray(0, done);
}
