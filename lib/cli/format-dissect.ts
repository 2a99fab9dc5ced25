// `loopdev dissect IMAGE` without --json: the partitions as a table, then the mounts in order,
// then why mountImage() would refuse the image, if it would.
import type { DissectedImage } from '../dissect/analyse';
import { printable } from './columns';

const yes = (flag: boolean, word: string): string[] => (flag ? [word] : []);

export function formatDissect(image: string, dissected: DissectedImage): string {
  const table = dissected.table === null ? 'none (a bare file system)' : dissected.table === 'gpt' ? `GPT (${dissected.header} header), disk UUID ${dissected.diskUuid}` : 'MBR';
  const lines = [
    `Image:         ${printable(image)}`,
    `Table:         ${table}`,
    `Sector size:   ${dissected.sectorSize}`,
    `Architectures: ${dissected.architectures.join(', ') || '(none known for this machine)'}`,
    '',
  ];
  const rows = [['NR', 'DESIGNATOR', 'ARCH', 'FSTYPE', 'LABEL', 'UUID', 'FLAGS', 'USE']];
  for (const p of dissected.partitions) {
    const flags = [...yes(p.noAuto, 'no-auto'), ...yes(p.readOnly, 'read-only'), ...yes(p.growFs, 'grow-fs')].join(',') || '-';
    rows.push([
      p.number === null ? '-' : String(p.number),
      p.designator ?? `(${p.type})`,
      p.architecture ?? '-',
      p.fstype ?? '-',
      p.label === null || p.label === '' ? '-' : printable(p.label),
      p.uuid ?? '-',
      flags,
      p.used ? (p.mountPoint ?? 'yes') : '-',
    ]);
  }
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  for (const row of rows) lines.push(row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!))).join('  '));
  lines.push('');
  if (dissected.mounts.length > 0) {
    lines.push('Mounts, in order:');
    for (const mount of dissected.mounts) {
      const what = mount.designator === 'tmpfs' ? 'tmpfs' : mount.partition === null ? `the whole image` : `partition ${mount.partition}`;
      lines.push(`  ${mount.mountPoint.padEnd(9)} ${what} (${mount.fstype}) ${mount.options.join(',')}`);
    }
  }
  for (const refusal of dissected.refusals) lines.push(`Not mountable: ${refusal.message}`);
  return `${lines.join('\n')}\n`;
}
