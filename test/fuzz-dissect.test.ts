// Fuzz target for dissect()'s parser, analyseImage(), which reads untrusted image bytes: random
// bytes, and mutations of a real sfdisk table of Discoverable Partitions types (GPT CRCs
// recomputed when asked, so that a mutation gets past the checksums). It must answer, or
// refuse with a typed LoopError, read only inside the image, and make a plan that holds
// together. Run counts: fuzzParameters() (LOOPDEV_FUZZ_RUNS).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { analyseImage, type DissectedImage } from '../lib/dissect/analyse';
import { crc32 } from '../lib/partitions/table';
import { GUID, sfdisk } from './helpers/dps-images';
import { fuzzParameters, guardedReader, resultOrLoopError } from './helpers/fuzz';
import { removeTempImage, sparseTempImage } from './helpers/images';

const REFUSALS = ['ERR_LOOP_BAD_IMAGE', 'ERR_LOOP_AMBIGUOUS_IMAGE'];

/** What must hold of any plan. */
function checkPlan(image: DissectedImage): void {
  const points = image.mounts.map((mount) => mount.mountPoint);
  expect(new Set(points).size).toBe(points.length);
  if (image.mounts.length > 0) expect(points[0] === '/' || image.refusals.some((r) => r.code === 'ERR_LOOP_NOTHING_TO_MOUNT')).toBe(true);
  for (const mount of image.mounts) {
    expect(mount.options).toContain('nodev');
    if (mount.designator === 'tmpfs') continue;
    const partition = image.partitions.find((p) => p.number === mount.partition);
    expect(partition?.used).toBe(true);
    expect(partition?.mountPoint).toBe(mount.mountPoint);
  }
  for (const p of image.partitions) {
    expect(p.start + p.length).toBeLessThanOrEqual(Number.MAX_SAFE_INTEGER);
    expect(p.length).toBeGreaterThan(0);
  }
}

function analyse(data: Buffer): void {
  const size = data.length - (data.length % 512);
  const guard = guardedReader(data, { limit: size, chunk: 4096 });
  const outcome = resultOrLoopError(() => analyseImage(guard.read, size, ['x86-64', 'x86'], false));
  if ('error' in outcome) expect(REFUSALS).toContain(outcome.error.code);
  else checkPlan(outcome.value);
}

/** Recomputes both GPT headers' CRCs (entries array first) for 512-byte sectors. */
function fixCrcs(data: Buffer): void {
  const lastLba = data.length / 512 - 1;
  for (const lba of [1, lastLba]) {
    const header = lba * 512;
    if (data.toString('latin1', header, header + 8) !== 'EFI PART') continue;
    const entries = Number(data.readBigUInt64LE(header + 72));
    const count = data.readUInt32LE(header + 80);
    const size = data.readUInt32LE(header + 84);
    if (entries * 512 + count * size <= data.length && count * size <= 1 << 20) {
      data.writeUInt32LE(crc32(data.subarray(entries * 512, entries * 512 + count * size)), header + 88);
    }
    const headerSize = data.readUInt32LE(header + 12);
    if (headerSize >= 92 && headerSize <= 512) {
      data.writeUInt32LE(0, header + 16);
      data.writeUInt32LE(crc32(data.subarray(header, header + headerSize)), header + 16);
    }
  }
}

describe('analyseImage() on untrusted bytes', () => {
  it('random bytes: an answer or a typed refusal, reads inside the image', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 70_000 }), (bytes) => analyse(Buffer.from(bytes))),
      fuzzParameters(200),
    );
  });

  describe.skipIf(sfdisk === null)('mutations of an sfdisk table (needs sfdisk)', () => {
    let file = '';
    let base = Buffer.alloc(0);
    beforeAll(() => {
      file = sparseTempImage('fuzz.raw', 1024 * 1024);
      const types = [GUID.rootX86_64, GUID.rootX86_64, GUID.usrX86_64, GUID.rootVerityX86_64, GUID.home, GUID.esp, GUID.generic, GUID.generic];
      const script = `label: gpt\n${types.map((type, index) => `size=64K, type=${type}, name="os_${index}", attrs="GUID:${59 + (index % 5)}"`).join('\n')}\n`;
      execFileSync(sfdisk!, ['-q', file], { input: script, stdio: ['pipe', 'pipe', 'pipe'] });
      base = readFileSync(file);
    });
    afterAll(() => {
      if (file !== '') removeTempImage(file);
    });

    it('the table as made is read, and so are its mutations, or refused with a typed error', () => {
      analyse(base);
      const tableBytes = fc.oneof(fc.integer({ min: 0, max: 34 * 512 - 1 }), fc.integer({ min: base.length - 33 * 512, max: base.length - 1 }));
      fc.assert(
        fc.property(fc.array(fc.tuple(tableBytes, fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), fc.boolean(), (changes, fix) => {
          const data = Buffer.from(base);
          for (const [offset, value] of changes) data[offset] = value;
          if (fix) fixCrcs(data);
          analyse(data);
        }),
        fuzzParameters(300),
      );
    });
  });
});
