// The partition type table is generated from the specification's own text (vendored in
// docs/spec/), never copied from a port: this reads the text again, by other means than the
// generator, and checks the table against it row by row.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

import { ARCHITECTURES, DESIGNATORS, PARTITION_TYPES } from '../lib/dissect/partition-types';

const root = resolve(__dirname, '..');
const specText = readFileSync(join(root, 'docs', 'spec', 'discoverable-partitions.md'), 'utf8');
const generator = require('../scripts/generate-partition-types.js') as { generated(): string };

/** Every table row of the spec that carries a type UUID: [name, uuid], in order. */
function rowsOfSpec(): [string, string][] {
  const rows: [string, string][] = [];
  for (const line of specText.split('\n')) {
    const cells = line.split('|').map((cell) => cell.trim());
    if (cells.length < 4) continue;
    const uuid = /`([0-9a-fA-F-]{36})`/.exec(cells[2]!);
    if (uuid !== null) rows.push([cells[1]!.replace(/^_|_$/g, ''), uuid[1]!.toLowerCase()]);
  }
  return rows;
}

describe('partition types from the Discoverable Partitions Specification', () => {
  it('the vendored text names its source and licence', () => {
    expect(specText.split('\n')[0]).toMatch(/UAPI Group specifications project.*CC-BY-4\.0/);
    expect(specText).toContain('SPDX-License-Identifier: CC-BY-4.0');
  });

  it('the table has exactly the spec\'s rows: names and GUIDs, in its order', () => {
    const rows = rowsOfSpec();
    expect(rows.length).toBeGreaterThan(100);
    expect(PARTITION_TYPES.map((type) => [type.name, type.guid])).toEqual(rows);
  });

  it('every GUID is unique and well formed', () => {
    const guids = PARTITION_TYPES.map((type) => type.guid);
    expect(new Set(guids).size).toBe(guids.length);
    for (const guid of guids) expect(guid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });

  it('designators and architectures follow from the names', () => {
    for (const type of PARTITION_TYPES) {
      expect(DESIGNATORS).toContain(type.designator);
      const perArchitecture = /^(Root|`\/usr\/`) (Verity (Signature )?)?Partition \(/.test(type.name);
      expect(type.architecture === null, type.name).toBe(!perArchitecture);
      if (type.architecture !== null) expect(ARCHITECTURES).toContain(type.architecture);
      const kind = type.name.startsWith('Root') ? 'root' : type.name.startsWith('`/usr/`') ? 'usr' : null;
      if (kind !== null) {
        const suffix = type.name.includes('Verity Signature') ? '-verity-sig' : type.name.includes('Verity') ? '-verity' : '';
        expect(type.designator, type.name).toBe(`${kind}${suffix}`);
      }
    }
    // Each architecture has its six types.
    for (const architecture of ARCHITECTURES) expect(PARTITION_TYPES.filter((type) => type.architecture === architecture), architecture).toHaveLength(6);
    const single = Object.fromEntries(PARTITION_TYPES.filter((type) => type.architecture === null).map((type) => [type.designator, type.guid]));
    expect(Object.keys(single).sort()).toEqual(['esp', 'home', 'linux-generic', 'srv', 'swap', 'tmp', 'user-home', 'var', 'xbootldr']);
  });

  it('the generated file is what the generator makes of the text now', () => {
    expect(readFileSync(join(root, 'lib', 'dissect', 'partition-types.ts'), 'utf8')).toBe(generator.generated());
  });
});
