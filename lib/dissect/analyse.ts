// What a whole disk image holds and how it would be mounted, by the Discoverable Partitions
// Specification (docs/spec/discoverable-partitions.md), read through a synchronous ReadAt: a
// pure parser that dissect.ts runs over reads made as steps. The choices follow systemd's
// image dissection (systemd-dissect) where the spec leaves them open; README "dissect" lists
// the differences.
import { fail } from '../core/errors';
import { detectFsType } from '../mount/fstype';
import { gptHeaderSectorSizes, hasProtectiveMbr, readGptTable, readMbrSlots, whyNoTable, type ReadAt } from '../partitions/table';
import { PARTITION_TYPES, type Architecture, type Designator, type PartitionType } from './partition-types';
import { compareVersions } from './version';

/** The GPT attribute bits of the specification. */
const FLAG_NO_AUTO = 1n << 63n;
const FLAG_READ_ONLY = 1n << 60n;
const FLAG_GROW_FS = 1n << 59n;

const MBR_LINUX = 0x83;
const MBR_XBOOTLDR = 0xea;
const MBR_BOOTABLE = 0x80;

const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);
/** What dissect() calls a LUKS container (blkid's name). */
export const LUKS = 'crypto_LUKS';

const TYPES: ReadonlyMap<string, PartitionType> = new Map(PARTITION_TYPES.map((type) => [type.guid, type]));

/** One partition of the image (or the whole image, for a bare file system). */
export interface DissectedPartition {
  /** the kernel's partition number (/dev/loopNpM), or null for a bare file system */
  number: number | null;
  /** what the specification says it is for, or null when its type is not one of the specification's */
  designator: Designator | null;
  /** for root, /usr and their verity partitions */
  architecture: Architecture | null;
  /** the GPT type GUID (lowercase), or the MBR type as "0x83" */
  type: string;
  /** the GPT partition GUID, or null (MBR, bare file system) */
  uuid: string | null;
  /** the GPT partition name, or null */
  label: string | null;
  /** bytes from the start of the image */
  start: number;
  /** bytes */
  length: number;
  /** GPT attribute bit 63: not to be mounted automatically */
  noAuto: boolean;
  /** GPT attribute bit 60: to be mounted read-only */
  readOnly: boolean;
  /** GPT attribute bit 59: its file system may be grown to the partition (reported, never done) */
  growFs: boolean;
  /** the file system found in its superblock (ext4, xfs, btrfs, vfat, squashfs, erofs), "crypto_LUKS", or null */
  fstype: string | null;
  /** chosen for its designator (the plan mounts it when it has a mount point) */
  used: boolean;
  /** where the plan mounts it, relative to the image's root ("/", "/usr"...), or null */
  mountPoint: string | null;
}

/** One mount of the plan, in the order they are made. */
export interface PlannedMount {
  /** relative to the image's root: "/", "/usr", "/home", "/srv", "/var", "/var/tmp", "/boot", "/efi" */
  mountPoint: string;
  /** the partition's designator, or "tmpfs" for the root made when there is /usr but no root */
  designator: Designator | 'tmpfs';
  /** the partition number, or null (the whole device for a bare file system; the tmpfs root) */
  partition: number | null;
  fstype: string;
  /** mount options as mount(8) shows them: ro or rw, then the others */
  options: string[];
}

/** A reason mountImage() refuses an image, with the code of the error it throws. */
export interface Refusal {
  code: 'ERR_LOOP_UNSUPPORTED_IMAGE' | 'ERR_LOOP_UNKNOWN_FSTYPE' | 'ERR_LOOP_NOTHING_TO_MOUNT';
  message: string;
}

/** What dissect() found, and its plan. */
export interface DissectedImage {
  /** the logical sector size the table was written for (the loop device's block size): 512 to 4096 */
  sectorSize: number;
  /** the partition table, or null for a bare file system */
  table: 'gpt' | 'mbr' | null;
  /** which GPT header was sound: the primary, or the backup at the last sector */
  header: 'primary' | 'backup' | null;
  /** the GPT's disk GUID */
  diskUuid: string | null;
  /** the architectures whose root and /usr partitions were considered, best first */
  architectures: Architecture[];
  partitions: DissectedPartition[];
  /** the mounts, in order; empty when there is nothing to mount (no root, no /usr) */
  mounts: PlannedMount[];
  /** why mountImage() refuses this image (LUKS, verity, unknown file system, nothing to mount); empty when it can mount it */
  refusals: Refusal[];
}

/** The designators mounted, in the order of the mounts (systemd's order), with their mount points. */
const MOUNT_ORDER: readonly [Designator, string][] = [
  ['root', '/'],
  ['usr', '/usr'],
  ['home', '/home'],
  ['srv', '/srv'],
  ['var', '/var'],
  ['tmp', '/var/tmp'],
  ['xbootldr', '/boot'],
  ['esp', '/efi'],
];
/** Several of these: the newest label wins (A/B updates); of the others the first one does. */
const VERSIONED: ReadonlySet<Designator> = new Set(['root', 'usr', 'root-verity', 'usr-verity', 'root-verity-sig', 'usr-verity-sig']);
/** File systems whose journal replay `norecovery` turns off, so that a read-only mount writes nothing. */
const NORECOVERY: ReadonlySet<string> = new Set(['ext3', 'ext4', 'xfs']);

/** Reads confined to one partition. */
const within = (read: ReadAt, start: number, length: number): ReadAt => (buffer, position) => {
  if (position >= length) return 0;
  const room = Math.min(buffer.length, length - position);
  return read(room === buffer.length ? buffer : buffer.subarray(0, room), start + position);
};

function probeFs(read: ReadAt, start: number, length: number): string | null {
  const inside = within(read, start, length);
  const head = Buffer.alloc(LUKS_MAGIC.length);
  if (inside(head, 0) === head.length && head.equals(LUKS_MAGIC)) return LUKS;
  return detectFsType(inside);
}

function bare(start: number, length: number, fstype: string): DissectedPartition {
  return { number: null, designator: 'root', architecture: null, type: 'none', uuid: null, label: null, start, length, noAuto: false, readOnly: false, growFs: false, fstype, used: false, mountPoint: null };
}

/**
 * Reads the image's table and file systems and makes the plan.
 * @param deviceSize the image's size in bytes, rounded down to 512.
 * @param architectures the architectures to use root and /usr partitions of, best first.
 * @param readOnly every mount read-only.
 */
export function analyseImage(read: ReadAt, deviceSize: number, architectures: Architecture[], readOnly: boolean): DissectedImage {
  if (deviceSize < 512) fail('ERR_LOOP_BAD_IMAGE', `the image is ${deviceSize} bytes: too small for a partition table or a file system`);
  // systemd's probe: a sound header at LBA 1 for one sector size says which one the image has;
  // two say the image is ambiguous, and guessing could mount the wrong partitions.
  const sizes = gptHeaderSectorSizes(read, deviceSize);
  if (sizes.length > 1) {
    fail('ERR_LOOP_AMBIGUOUS_IMAGE', `the image has a valid GPT header for each of the sector sizes ${sizes.join(' and ')}: it cannot say which one it was written for`);
  }
  const sectorSize = sizes[0] ?? 512;
  const image: DissectedImage = { sectorSize, table: null, header: null, diskUuid: null, architectures, partitions: [], mounts: [], refusals: [] };

  // As blkid and the attach's own reader: a GPT counts behind a protective MBR only.
  const protective = hasProtectiveMbr(read, deviceSize);
  const gpt = protective ? readGptTable(read, sectorSize, deviceSize) : null;
  const mbr = gpt === null ? readMbrSlots(read, 512, deviceSize) : null;
  if (gpt !== null) {
    Object.assign(image, { table: 'gpt', header: gpt.header, diskUuid: gpt.diskUuid });
    image.partitions = gpt.entries.map((entry) => {
      const known = TYPES.get(entry.type);
      return {
        number: entry.number,
        designator: known?.designator ?? null,
        architecture: known?.architecture ?? null,
        type: entry.type,
        uuid: entry.uuid,
        label: entry.name,
        start: entry.start,
        length: entry.length,
        noAuto: (entry.attributes & FLAG_NO_AUTO) !== 0n,
        readOnly: (entry.attributes & FLAG_READ_ONLY) !== 0n,
        growFs: (entry.attributes & FLAG_GROW_FS) !== 0n,
        fstype: probeFs(read, entry.start, entry.length),
        used: false,
        mountPoint: null,
      };
    });
    chooseGpt(image.partitions, architectures);
  } else if (protective) {
    fail('ERR_LOOP_BAD_IMAGE', `the image's GPT is damaged: ${whyNoTable(read, deviceSize, sectorSize)}`);
  } else if (mbr !== null && mbr.length > 0) {
    image.table = 'mbr';
    image.partitions = mbr.map((slot) => ({
      number: slot.number,
      // A bootable Linux partition is the root; 0xEA is the Boot Loader Specification's $BOOT.
      designator: slot.type === MBR_LINUX && slot.status === MBR_BOOTABLE ? 'root' : slot.type === MBR_XBOOTLDR ? 'xbootldr' : null,
      architecture: null,
      type: `0x${slot.type.toString(16).padStart(2, '0')}`,
      uuid: null,
      label: null,
      start: slot.start,
      length: slot.length,
      noAuto: false,
      readOnly: false,
      growFs: false,
      fstype: probeFs(read, slot.start, slot.length),
      used: false,
      mountPoint: null,
    }));
    chooseFirst(image.partitions, 'root', true);
    chooseFirst(image.partitions, 'xbootldr', false);
  } else {
    const fstype = probeFs(read, 0, deviceSize);
    if (fstype === null) fail('ERR_LOOP_BAD_IMAGE', `no partition table or known file system in the image (${whyNoTable(read, deviceSize)})`);
    const whole = bare(0, deviceSize, fstype);
    whole.used = true;
    image.partitions = [whole];
  }
  planMounts(image, readOnly);
  return image;
}

/** Marks the first (or only, with `unique`) partition of `designator` as used. */
function chooseFirst(partitions: DissectedPartition[], designator: Designator, unique: boolean): void {
  const found = partitions.filter((p) => p.designator === designator);
  if (unique && found.length > 1) {
    fail('ERR_LOOP_AMBIGUOUS_IMAGE', `the image has ${found.length} bootable Linux (0x83) partitions (${found.map((p) => p.number).join(', ')}): which one is the root cannot be told`);
  }
  if (found[0] !== undefined) found[0].used = true;
}

/** Partitions named PRT#... or PND#... are half-written updates, which the spec says to leave alone. */
const isPending = (label: string | null): boolean => label !== null && (label.startsWith('PRT#') || label.startsWith('PND#'));

/** systemd's choice among the partitions of each designator (architecture, then label version, then order). */
function chooseGpt(partitions: DissectedPartition[], architectures: Architecture[]): void {
  const chosen = new Map<Designator, DissectedPartition>();
  const rank = (p: DissectedPartition): number => (p.architecture === null ? 0 : architectures.indexOf(p.architecture));
  for (const p of partitions) {
    if (p.designator === null || p.designator === 'linux-generic') continue;
    // The spec gives the ESP no no-auto flag; for the others it turns discovery off.
    if ((p.noAuto && p.designator !== 'esp') || isPending(p.label) || rank(p) < 0) continue;
    const best = chosen.get(p.designator);
    if (best !== undefined) {
      if (rank(p) > rank(best)) continue;
      if (rank(p) === rank(best)) {
        // Equal labels leave the earlier partition, as the spec asks when in doubt.
        if (!VERSIONED.has(p.designator) || compareVersions(p.label ?? '', best.label ?? '') <= 0) continue;
      }
    }
    chosen.set(p.designator, p);
  }
  // Verity data belongs to the root or /usr of its architecture only.
  for (const [verity, data] of [['root-verity', 'root'], ['root-verity-sig', 'root'], ['usr-verity', 'usr'], ['usr-verity-sig', 'usr']] as const) {
    const v = chosen.get(verity);
    if (v !== undefined && v.architecture !== chosen.get(data)?.architecture) chosen.delete(verity);
  }
  if (!chosen.has('root') && !chosen.has('usr')) {
    // No root or /usr: a single Linux data partition is the root, as in systemd (two: which?).
    const generic = partitions.filter((p) => p.designator === 'linux-generic' && !p.noAuto && !isPending(p.label));
    if (generic.length > 1) {
      fail('ERR_LOOP_AMBIGUOUS_IMAGE', `the image has no root or /usr partition and ${generic.length} Linux data partitions (${generic.map((p) => p.number).join(', ')}): which one is the root cannot be told`);
    }
    if (generic[0] !== undefined) chosen.set('root', generic[0]);
  }
  for (const p of chosen.values()) p.used = true;
}

/** The mounts of the used partitions, in order, with systemd's options; and why not, if they cannot be made. */
function planMounts(image: DissectedImage, readOnly: boolean): void {
  const used = (designator: Designator): DissectedPartition | undefined =>
    image.partitions.find((p) => p.used && (p.designator === designator || (designator === 'root' && p.designator === 'linux-generic')));
  const root = used('root');
  const usr = used('usr');
  const problems = image.refusals;
  if (root === undefined && usr !== undefined) {
    // A /usr-only image (the rest comes at boot): an empty root to hang it on, as systemd does.
    // Read-write even with readOnly: it holds nothing of the image, and /usr's mount point is
    // made in it.
    image.mounts.push({ mountPoint: '/', designator: 'tmpfs', partition: null, fstype: 'tmpfs', options: ['rw', 'nodev', 'mode=0755'] });
  }
  for (const [designator, defaultPoint] of MOUNT_ORDER) {
    const p = used(designator);
    if (p === undefined) continue;
    // The ESP goes to /efi when XBOOTLDR takes /boot, else to /boot; mountImage() decides again
    // once the rest is mounted, as systemd does, from the image's own /efi and /boot.
    const mountPoint = designator === 'esp' && used('xbootldr') === undefined ? '/boot' : defaultPoint;
    if (p.fstype === null) problems.push({ code: 'ERR_LOOP_UNKNOWN_FSTYPE', message: `partition ${p.number ?? '(the whole image)'} (${designator}) has no known file system` });
    if (p.fstype === LUKS) problems.push({ code: 'ERR_LOOP_UNSUPPORTED_IMAGE', message: `partition ${p.number ?? '(the whole image)'} (${designator}) is encrypted with LUKS, which mountImage() does not open` });
    const ro = readOnly || p.readOnly;
    const options = [ro ? 'ro' : 'rw', 'nodev'];
    if (designator === 'esp' || designator === 'xbootldr') options.push('nosuid', 'noexec', 'nosymfollow', 'umask=0077');
    if (designator === 'tmp') options.push('nosuid');
    if (ro && p.fstype !== null && NORECOVERY.has(p.fstype)) options.push('norecovery');
    p.mountPoint = mountPoint;
    image.mounts.push({ mountPoint, designator: p.designator === 'linux-generic' ? 'linux-generic' : designator, partition: p.number, fstype: p.fstype ?? 'unknown', options });
  }
  const verity = image.partitions.filter((p) => p.used && p.designator !== null && p.designator.includes('verity'));
  if (verity.length > 0) {
    const which = verity.map((p) => `partition ${p.number}, ${p.designator}`).join('; ');
    problems.push({ code: 'ERR_LOOP_UNSUPPORTED_IMAGE', message: `the image has dm-verity data (${which}), which mountImage() does not set up` });
  }
  // First: the reason that matters most.
  if (root === undefined && usr === undefined) problems.unshift({ code: 'ERR_LOOP_NOTHING_TO_MOUNT', message: 'the image has no root, /usr or single Linux data partition: nothing to mount' });
}
