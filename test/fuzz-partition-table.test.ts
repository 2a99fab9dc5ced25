// Fuzz targets for the readers of untrusted partition-table bytes: readPartitionTable() (MBR,
// EBR chains, GPT), gptSectorSize() and whyNoTable(). Inputs are random bytes, random but
// well-formed-looking MBRs with EBR chains, and mutations of real tables (this library's writer
// and sfdisk's), with the GPT CRCs recomputed after a mutation when asked so that it gets past
// the checksum into the parsing behind it. Run counts: fuzzParameters() (LOOPDEV_FUZZ_RUNS).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { crc32, gptSectorSize, MAX_PARTITION_NUMBER, readPartitionTable, whyNoTable, type PartitionTable } from '../lib/partitions/table';
import { fuzzParameters, fuzzRuns, guardedReader, resultOrLoopError } from './helpers/fuzz';
import { buildMbrSector, findTool, removeTempImage, tempImagePath, writeGpt, writeMbr, type RawMbrEntry } from './helpers/images';

const KiB = 1024;
const MiB = 1024 * KiB;
const SECTOR_SIZES = [512, 1024, 2048, 4096] as const;

// What one parse may cost with a reader that returns whole buffers: the MBR, an EBR chain of
// at most 256 reads for each of 4 extended entries, and for a GPT two headers and two entry
// arrays of at most 1 MiB each. A GPT entry count of 2^32 must not change that.
const MAX_READ_CALLS = 1 + 4 * 256 + 4;
const MAX_READ_BYTES = 512 + 4 * 256 * 512 + 2 * (4096 + MiB);
const MUTATION_RUNS = 300;

/** A real table to mutate: its bytes and the offsets of the fields worth aiming at. */
interface Base {
  name: string;
  data: Buffer;
  sectorSize: number;
  kind: 'mbr' | 'gpt';
  /** offsets of u32/u64 fields (MBR entries, GPT header and entry fields) */
  fields: number[];
}

const bases: Base[] = [];
const made: string[] = [];

function mbrFieldOffsets(sectorAt: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < 4; i++) for (const field of [0, 4, 8, 12]) out.push(sectorAt + 446 + i * 16 + field);
  return out;
}

function gptFieldOffsets(data: Buffer, sectorSize: number): number[] {
  const out = mbrFieldOffsets(0);
  const lastLba = data.length / sectorSize - 1;
  for (const lba of [1, lastLba]) {
    const header = lba * sectorSize;
    for (const field of [12, 16, 24, 32, 40, 48, 72, 80, 84, 88]) out.push(header + field);
    const array = Number(data.readBigUInt64LE(header + 72)) * sectorSize;
    for (let i = 0; i < 4; i++) for (const field of [0, 32, 40]) out.push(array + i * 128 + field);
  }
  return out;
}

function addBase(name: string, file: string, sectorSize: number, kind: 'mbr' | 'gpt', ebrs: number[] = []): void {
  const data = readFileSync(file);
  const fields = kind === 'gpt' ? gptFieldOffsets(data, sectorSize) : [0, ...ebrs].flatMap(mbrFieldOffsets);
  bases.push({ name, data, sectorSize, kind, fields });
}

function image(name: string): string {
  const file = tempImagePath(name);
  made.push(file);
  return file;
}

beforeAll(() => {
  const gpt512 = image('gpt512.img');
  writeGpt(gpt512, 1 * MiB, [
    { startBytes: 64 * KiB, sizeBytes: 128 * KiB },
    { startBytes: 192 * KiB, sizeBytes: 512 * KiB },
    { startBytes: 704 * KiB, sizeBytes: 256 * KiB },
  ]);
  addBase('writeGpt, 512-byte sectors', gpt512, 512, 'gpt');

  const gpt4k = image('gpt4k.img');
  writeGpt(gpt4k, 1 * MiB, [
    { startBytes: 64 * KiB, sizeBytes: 256 * KiB },
    { startBytes: 512 * KiB, sizeBytes: 256 * KiB },
  ], 4096);
  addBase('writeGpt, 4096-byte sectors', gpt4k, 4096, 'gpt');

  const mbr = image('mbr.img');
  writeMbr(
    mbr,
    1 * MiB,
    [
      { startBytes: 4 * KiB, sizeBytes: 60 * KiB },
      { startBytes: 128 * KiB, sizeBytes: 512 * KiB, type: 0x05 },
      { startBytes: 640 * KiB, sizeBytes: 128 * KiB, type: 0x0c },
    ],
    {
      logical: [
        { startBytes: 132 * KiB, sizeBytes: 64 * KiB },
        { startBytes: 260 * KiB, sizeBytes: 64 * KiB },
        { startBytes: 388 * KiB, sizeBytes: 100 * KiB },
      ],
    },
  );
  // writeMbr's EBRs: at the start of the extended partition, then one sector before each logical.
  addBase('writeMbr with an EBR chain', mbr, 512, 'mbr', [256, 519, 775]);

  const sfdisk = findTool('sfdisk');
  if (sfdisk === null) return;
  // Sectors, not MiB: sfdisk aligns to 1 MiB by default, and these images are 1 MiB.
  const sfdiskImage = (name: string, script: string): string => {
    const file = image(name);
    writeMbr(file, 1 * MiB, []);
    execFileSync(sfdisk, ['--quiet', '--no-reread', '--no-tell-kernel', file], { input: script, stdio: ['pipe', 'ignore', 'ignore'] });
    return file;
  };
  const sgpt = sfdiskImage('sfdisk-gpt.img', 'label: gpt\nstart=40, size=200\nstart=240, size=600\nstart=840, size=1000\n');
  addBase('sfdisk GPT', sgpt, 512, 'gpt');
  const sdos = sfdiskImage('sfdisk-dos.img', 'label: dos\nstart=8, size=100\nstart=200, size=1600, type=5\nstart=210, size=100\nstart=400, size=300\n');
  const dosData = readFileSync(sdos);
  const ebrs = [];
  for (let lba = 200; lba < 1800; lba++) if (dosData.readUInt16LE(lba * 512 + 510) === 0xaa55) ebrs.push(lba);
  addBase('sfdisk MBR with logical partitions', sdos, 512, 'mbr', ebrs);
});

afterAll(() => {
  for (const file of made.splice(0)) removeTempImage(file);
});

/** Everything readPartitionTable() promises about a result, for any input. */
function checkTable(table: PartitionTable | null, sectorSize: number, deviceSize: number): void {
  if (table === null) return;
  // Plain checks gathered into one assertion: expect() per field of 200 partitions per run is slow.
  const wrong: string[] = [];
  if (table.type !== 'mbr' && table.type !== 'gpt') wrong.push(`type ${String(table.type)}`);
  if (table.partitions.length === 0) wrong.push('a table without partitions (null is the answer then)');
  let previous = 0;
  for (const p of table.partitions) {
    const at = `partition ${p.number} (${p.start} +${p.length})`;
    if (!Number.isInteger(p.number) || p.number < 1 || p.number > MAX_PARTITION_NUMBER) wrong.push(`${at}: number out of 1..${MAX_PARTITION_NUMBER}`);
    if (!(p.number > previous)) wrong.push(`${at}: numbers must ascend without repeats`);
    previous = p.number;
    if (!Number.isSafeInteger(p.start) || !Number.isSafeInteger(p.length)) wrong.push(`${at}: not exact integers`);
    if (p.start < 0 || p.length <= 0) wrong.push(`${at}: empty or before the start`);
    if (p.start + p.length > deviceSize) wrong.push(`${at}: ends past the device (${deviceSize})`);
    if (table.type === 'gpt' && p.start % sectorSize !== 0) wrong.push(`${at}: not on a ${sectorSize}-byte sector`);
  }
  expect(wrong).toEqual([]);
}

/**
 * Parses `data` as a device of `deviceSize` bytes with a guarded reader and checks the result,
 * the reads' bounds and cost; then again with short reads, which must not change the answer.
 */
function parseChecked(data: Uint8Array, sectorSize: number, deviceSize: number, chunk: number): PartitionTable | null | undefined {
  const guard = guardedReader(data, { limit: deviceSize });
  const outcome = resultOrLoopError(() => readPartitionTable(guard.read, sectorSize, deviceSize));
  expect(guard.calls).toBeLessThanOrEqual(MAX_READ_CALLS);
  expect(guard.bytes).toBeLessThanOrEqual(MAX_READ_BYTES);
  if ('value' in outcome) checkTable(outcome.value, sectorSize, deviceSize);

  const trickle = guardedReader(data, { limit: deviceSize, chunk });
  const again = resultOrLoopError(() => readPartitionTable(trickle.read, sectorSize, deviceSize));
  expect(trickle.bytes).toBeLessThanOrEqual(MAX_READ_BYTES);
  expect(again).toEqual(outcome);

  const why = guardedReader(data, { limit: deviceSize });
  const reason = resultOrLoopError(() => whyNoTable(why.read, deviceSize, sectorSize));
  if ('value' in reason) expect(typeof reason.value).toBe('string');
  expect(why.calls).toBeLessThanOrEqual(MAX_READ_CALLS);
  return 'value' in outcome ? outcome.value : undefined;
}

/** What one read() call returns at most: byte by byte now and then (slow on a 16 KiB array), mostly more. */
const chunkSize = fc.oneof({ weight: 1, arbitrary: fc.integer({ min: 1, max: 16 }) }, { weight: 4, arbitrary: fc.integer({ min: 17, max: 8192 }) });

const anySectorSize = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...SECTOR_SIZES) },
  { weight: 1, arbitrary: fc.constantFrom(0, -512, 511, 513, 3000, 8192, 2 ** 31, NaN, Infinity, 2 ** 53) },
);

const u32 = fc.oneof(
  fc.constantFrom(0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 127, 128, 129, 255, 256, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff),
  fc.nat(4096),
  fc.integer({ min: 0, max: 0xffffffff }),
);

describe('readPartitionTable and whyNoTable on random bytes', () => {
  it('give a result or null, read only inside the device, and stay within their read budget', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 20 * KiB }),
        fc.boolean(),
        anySectorSize,
        chunkSize,
        (bytes, signed, sectorSize, chunk) => {
          // Without 0x55AA at 510 the parse stops at once; set it in half the runs.
          if (signed && bytes.length >= 512) {
            bytes[510] = 0x55;
            bytes[511] = 0xaa;
          }
          const deviceSize = bytes.length - (bytes.length % 512);
          parseChecked(bytes, sectorSize, deviceSize, chunk);
        },
      ),
      fuzzParameters(300),
    );
  });

  it('refuse a device size that is not a plain byte count without reading past it', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(-1, 0, 511, 513, 1e6 + 0.5, NaN, Infinity, -Infinity, 2 ** 53, 2 ** 60),
        anySectorSize,
        (deviceSize, sectorSize) => {
          const data = bases[0]!.data;
          const guard = guardedReader(data, Number.isSafeInteger(deviceSize) && deviceSize >= 0 ? { limit: deviceSize } : {});
          const outcome = resultOrLoopError(() => readPartitionTable(guard.read, sectorSize, deviceSize));
          if (!Number.isSafeInteger(deviceSize) || deviceSize < 512) expect(outcome).toEqual({ value: null });
          expect(guard.calls).toBeLessThanOrEqual(MAX_READ_CALLS);
        },
      ),
      fuzzParameters(50),
    );
  });
});

const mbrEntry: fc.Arbitrary<RawMbrEntry> = fc.record({
  status: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(0, 0x80) }, { weight: 1, arbitrary: fc.nat(255) }),
  type: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(0, 0x83, 0x05, 0x0f, 0x85, 0xee, 0x0c) }, { weight: 1, arbitrary: fc.nat(255) }),
  startLba: fc.oneof({ weight: 4, arbitrary: fc.nat(600) }, { weight: 1, arbitrary: u32 }),
  sectors: fc.oneof({ weight: 4, arbitrary: fc.nat(600) }, { weight: 1, arbitrary: u32 }),
});

/**
 * An MBR whose entries and EBRs are random but shaped like the real thing, so that random runs
 * reach the EBR walk: scattered EBRs, and a ladder (EBR k links to EBR k+1, each naming one
 * logical partition) long enough to hit every cap, which several extended entries may share.
 */
const mbrImage = fc.record({
  primary: fc.array(mbrEntry, { minLength: 1, maxLength: 4 }),
  extendedAt: fc.nat(40),
  extendedCount: fc.integer({ min: 0, max: 4 }),
  ladder: fc.nat(300),
  scattered: fc.array(fc.record({ lba: fc.nat(511), entries: fc.array(mbrEntry, { maxLength: 4 }) }), { maxLength: 20 }),
});

describe('readPartitionTable on random MBRs with EBR chains', () => {
  it('numbers partitions 1..255 without repeats, inside the device, within the read budget', () => {
    fc.assert(
      fc.property(mbrImage, fc.constantFrom(...SECTOR_SIZES), chunkSize, (shape, sectorSize, chunk) => {
        const data = Buffer.alloc(512 * 512);
        const extended = Array.from({ length: shape.extendedCount }, (): RawMbrEntry => ({ type: 0x05, startLba: shape.extendedAt, sectors: 400 }));
        const primary = [...extended, ...shape.primary].slice(0, 4);
        for (const ebr of shape.scattered) if (ebr.lba > 0) buildMbrSector(ebr.entries).copy(data, ebr.lba * 512);
        for (let k = 0; k < shape.ladder && shape.extendedAt + k < 511; k++) {
          buildMbrSector([
            { type: 0x83, startLba: 1, sectors: 1 },
            { type: 0x05, startLba: k + 1, sectors: 2 },
          ]).copy(data, (shape.extendedAt + k) * 512);
        }
        buildMbrSector(primary).copy(data, 0);
        // LBAs here count 512-byte sectors; a larger sector size reads the same bytes elsewhere.
        parseChecked(data, sectorSize, data.length, chunk);
      }),
      fuzzParameters(150),
    );
  });
});

describe('counterexamples the properties found, kept as examples', () => {
  it('gives null for a sound GPT without partitions, and whyNoTable says so rather than "damaged"', () => {
    // A CRC-consistent header whose entry array LBA points at empty entries gave { type: 'gpt', partitions: [] }.
    const base = bases.find((b) => b.kind === 'gpt' && b.sectorSize === 4096)!;
    const data = Buffer.from(base.data);
    data[4096 + 72] = 3;
    fixGptCrcs(data, 4096);
    expect(readPartitionTable(guardedReader(data).read, 4096, data.length)).toBeNull();
    expect(whyNoTable(guardedReader(data).read, data.length, 4096)).toBe('its GPT lists no partition inside the device');
    expect(whyNoTable(guardedReader(base.data).read, 4096 * 3, 4096)).toMatch(/^it has a GPT, but .* damaged$/);
  });

  it('caps logical partitions at 128 over all extended entries, so numbers stay within 255', () => {
    // Two extended entries sharing one chain of 126 EBRs numbered logicals 5..256.
    const data = Buffer.alloc(512 * 512);
    buildMbrSector([
      { type: 0x05, startLba: 1, sectors: 400 },
      { type: 0x05, startLba: 1, sectors: 400 },
    ]).copy(data, 0);
    for (let k = 0; k < 126; k++) {
      buildMbrSector([
        { type: 0x83, startLba: 1, sectors: 1 },
        { type: 0x05, startLba: k + 1, sectors: 2 },
      ]).copy(data, (1 + k) * 512);
    }
    const numbers = readPartitionTable(guardedReader(data).read, 512, data.length)!.partitions.map((p) => p.number);
    expect(numbers.filter((n) => n >= 5)).toHaveLength(128);
    expect(Math.max(...numbers)).toBe(4 + 128);
  });
});

type Mutation =
  | { kind: 'bit'; at: number }
  | { kind: 'byte'; at: number; value: number }
  | { kind: 'u32'; at: number; value: number }
  | { kind: 'u64'; at: number; value: bigint };

/** At a field of the base in most runs, anywhere in the rest. */
function offset(base: Base): fc.Arbitrary<number> {
  return fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...base.fields) }, { weight: 1, arbitrary: fc.nat(base.data.length - 1) });
}

function mutation(base: Base): fc.Arbitrary<Mutation> {
  const lastLba = base.data.length / base.sectorSize - 1;
  const u64 = fc.oneof(
    fc.constantFrom(0n, 1n, 2n, 33n, 34n, BigInt(lastLba - 1), BigInt(lastLba), BigInt(lastLba + 1), 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n),
    fc.bigInt({ min: 0n, max: BigInt(lastLba) * 2n }),
    fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  );
  return fc.oneof(
    fc.record({ kind: fc.constant('bit' as const), at: fc.nat(base.data.length * 8 - 1) }),
    fc.record({ kind: fc.constant('byte' as const), at: offset(base), value: fc.nat(255) }),
    fc.record({ kind: fc.constant('u32' as const), at: offset(base), value: u32 }),
    fc.record({ kind: fc.constant('u64' as const), at: offset(base), value: u64 }),
  );
}

function apply(data: Buffer, m: Mutation): void {
  switch (m.kind) {
    case 'bit':
      data[m.at >> 3]! ^= 1 << (m.at & 7);
      break;
    case 'byte':
      data[m.at] = m.value;
      break;
    case 'u32':
      if (m.at + 4 <= data.length) data.writeUInt32LE(m.value, m.at);
      break;
    case 'u64':
      if (m.at + 8 <= data.length) data.writeBigUInt64LE(m.value, m.at);
      break;
  }
}

/**
 * Makes both GPT headers' CRCs match what a mutation left, as far as the header's own fields
 * allow (a header size or entry array that does not fit stays as it is): the parse then judges
 * the fields themselves.
 */
function fixGptCrcs(data: Buffer, sectorSize: number): void {
  const lastLba = Math.floor(data.length / sectorSize) - 1;
  for (const lba of [1, lastLba]) {
    const at = lba * sectorSize;
    if (lba < 1 || at + sectorSize > data.length) continue;
    const header = data.subarray(at, at + sectorSize);
    const arrayLba = header.readBigUInt64LE(72);
    const arrayBytes = header.readUInt32LE(80) * header.readUInt32LE(84);
    const arrayAt = Number(arrayLba) * sectorSize;
    if (arrayLba < BigInt(lastLba) && arrayBytes <= MiB && arrayAt + arrayBytes <= data.length) {
      header.writeUInt32LE(crc32(data.subarray(arrayAt, arrayAt + arrayBytes)), 88);
    }
    const headerSize = header.readUInt32LE(12);
    if (headerSize >= 20 && headerSize <= sectorSize) {
      header.writeUInt32LE(0, 16);
      header.writeUInt32LE(crc32(header.subarray(0, headerSize)), 16);
    }
  }
}

describe('readPartitionTable on mutated real tables', () => {
  it('has real tables to mutate (sfdisk ones too when sfdisk is installed)', () => {
    expect(bases.length).toBeGreaterThanOrEqual(3);
    for (const base of bases) {
      const table = readPartitionTable(guardedReader(base.data).read, base.sectorSize, base.data.length);
      expect(table, base.name).not.toBeNull();
    }
  });

  it('gives a sane table or null after bit flips, overwrites and truncation, CRCs fixed or not', () => {
    // The base travels as its index: a counterexample then prints the edits, not 1 MiB of bytes.
    const shaped = fc.nat(bases.length - 1).chain((which) => {
      const base = bases[which]!;
      return fc.record({
        which: fc.constant(which),
        mutations: fc.array(mutation(base), { minLength: 1, maxLength: 8 }),
        fixCrcs: fc.boolean(),
        // a device shorter than the image: the backup GPT is then not at the last LBA
        deviceSize: fc.oneof({ weight: 3, arbitrary: fc.constant(base.data.length) }, { weight: 1, arbitrary: fc.nat(base.data.length) }),
        sectorSize: fc.oneof({ weight: 5, arbitrary: fc.constant(base.sectorSize) }, { weight: 1, arbitrary: fc.constantFrom(...SECTOR_SIZES) }),
        chunk: chunkSize,
      });
    });
    let tables = 0;
    let gptsPastCrc = 0;
    fc.assert(
      fc.property(shaped, ({ which, mutations, fixCrcs, deviceSize, sectorSize, chunk }) => {
        const base = bases[which]!;
        const data = Buffer.from(base.data);
        for (const m of mutations) apply(data, m);
        if (fixCrcs) fixGptCrcs(data, base.sectorSize);
        const table = parseChecked(data.subarray(0, deviceSize), sectorSize, deviceSize, chunk);
        if (table) {
          tables++;
          if (fixCrcs && table.type === 'gpt') gptsPastCrc++;
        }
      }),
      fuzzParameters(MUTATION_RUNS),
    );
    // Enough mutants still parse for the checks behind the signature and CRCs to be reached.
    expect(tables).toBeGreaterThan(fuzzRuns(MUTATION_RUNS) / 5);
    expect(gptsPastCrc).toBeGreaterThan(fuzzRuns(MUTATION_RUNS) / 20);
  });

  it('rejects a CRC-consistent GPT whose entry count is 2^32-1 without reading the array', () => {
    for (const base of bases.filter((b) => b.kind === 'gpt')) {
      const data = Buffer.from(base.data);
      for (const lba of [1, data.length / base.sectorSize - 1]) data.writeUInt32LE(0xffffffff, lba * base.sectorSize + 80);
      fixGptCrcs(data, base.sectorSize);
      const guard = guardedReader(data, { limit: data.length });
      expect(readPartitionTable(guard.read, base.sectorSize, data.length), base.name).toBeNull();
      // the MBR and the two headers: neither 2^32-entry array is read
      expect(guard.calls).toBe(3);
    }
  });
});

describe('gptSectorSize on random and mutated bytes', () => {
  it('answers 512, 1024, 2048 or 4096 after at most four reads at non-negative positions', () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 8 * KiB }),
      fc.tuple(fc.nat(bases.length - 1), fc.array(fc.tuple(fc.nat(4200), fc.nat(255)), { maxLength: 8 }), fc.nat(8 * KiB)).map(([which, edits, length]) => {
        const data = Buffer.from(bases[which]!.data.subarray(0, length));
        for (const [at, value] of edits) if (at < data.length) data[at] = value;
        return data;
      }),
      // the signature at one of the four places, the rest random
      fc.tuple(fc.uint8Array({ minLength: 4200, maxLength: 4200 }), fc.constantFrom(...SECTOR_SIZES)).map(([data, at]) => {
        Buffer.from(data.buffer, data.byteOffset, data.length).write('EFI PART', at, 'latin1');
        return data;
      }),
    );
    fc.assert(
      fc.property(bytes, (data) => {
        const guard = guardedReader(data);
        const outcome = resultOrLoopError(() => gptSectorSize(guard.read));
        if ('value' in outcome) expect(SECTOR_SIZES).toContain(outcome.value);
        expect(guard.calls).toBeLessThanOrEqual(4);
      }),
      fuzzParameters(300),
    );
  });
});
