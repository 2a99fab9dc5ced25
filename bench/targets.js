'use strict';
// What the bench aims at, one record per target, evaluated by evaluateTargets(). Informational:
// a miss never fails the run.

const MIB = 1024 * 1024;

/**
 * row: the row judged; versus: the row it is measured against; limit; kind, which figure and
 * which way:
 *   'slower'     row's median / versus's median, at most limit (its cost over a floor)
 *   'faster'     versus's median / row's median, at least limit
 *   'throughput' row's cycles/s / versus's, at least limit
 *   'below'      row[figure] (in units of `scale`), less than limit
 *   'zero'       row[figure] is 0
 * beside: a row whose ratio to this one is shown next to the figure (in the JSON as `versus`);
 * name: what the table's mark calls the comparison; stated: the cycles the target is stated for.
 */
const TARGETS = [
  ...['plain', 'hold', 'partscan', 'offset'].flatMap((v) => [
    { row: `cycle.${v}.loopdev-sync`, versus: `cycle.${v}.c`, limit: 1.15, kind: 'slower', description: `sync cycle (${v}) <= 1.15x C floor`, beside: { row: `cycle.${v}.c-same-steps`, label: "loopdev's steps in C" } },
    { row: `cycle.${v}.loopdev-async`, versus: `cycle.${v}.c`, limit: 1.5, kind: 'slower', description: `async cycle (${v}) <= 1.5x C floor`, beside: { row: `cycle.${v}.c-threaded`, label: 'C with each step on a worker thread' } },
    ...(v === 'hold' ? [] : ['sync', 'async']).map((api) => ({
      row: `cycle.${v}.loopdev-${api}`,
      versus: `cycle.${v}.losetup`,
      limit: 40,
      kind: 'faster',
      name: 'losetup',
      description: `loopdev ${api} cycle (${v}) >= 40x faster than losetup`,
    })),
  ]),
  ...[['sync', 'listSync()'], ['async', 'list()']].flatMap(([api, call]) => [
    { row: `list.loopdev-${api}`, versus: 'list.losetup', limit: 5, kind: 'faster', name: 'losetup', description: `loopdev ${call} (256 bound) >= 5x faster than losetup --list --json` },
    { row: `list.loopdev-${api}`, versus: 'list.c-ioctl', limit: 1.3, kind: 'slower', description: `loopdev ${call} (256 bound) <= 1.3x the ioctl C floor` },
  ]),
  { row: 'contention.loopdev-sync-4proc', versus: 'contention.c-1proc', limit: 0.8, kind: 'throughput', description: 'contention aggregate >= 0.8x single-process C floor' },
  { row: 'contention.loopdev-sync-4proc', figure: 'failures', kind: 'zero', name: 'failures', description: 'contention: zero failures' },
  { row: 'eld.loopdev-async', figure: 'eld_p99_ms', limit: 5, kind: 'below', name: 'p99 ', unit: ' ms', description: 'event loop delay p99 < 5 ms' },
  ...[['memory.loopdev-sync', 'default V8 flags'], ['memory.loopdev-sync-pinned', 'young generation pinned: --max-semi-space-size=1']].flatMap(([row, flags]) => [
    { row, figure: 'rss_growth_bytes', limit: 5, scale: MIB, kind: 'below', name: 'RSS +', unit: ' MB', stated: 10000, description: `RSS growth < 5 MB over 10,000 cycles, ${flags}` },
    { row, figure: 'fd_growth', kind: 'zero', name: 'fds', stated: 10000, description: `0 fd growth over 10,000 cycles, ${flags}` },
  ]),
];

/** kind -> how its value is read, judged, marked in the row and shown in the list. */
const KINDS = {
  slower: { value: (t, row, versus) => row.median_us / versus.median_us, met: (t, v) => v <= t.limit, mark: (t) => `<=${t.limit}x` },
  faster: {
    value: (t, row, versus) => versus.median_us / row.median_us,
    met: (t, v) => v >= t.limit,
    mark: (t, v) => `>=${t.limit}x vs ${t.name} (${v.toFixed(v >= 10 ? 0 : 1)}x)`,
  },
  throughput: { value: (t, row, versus) => row.throughput_per_s / versus.throughput_per_s, met: (t, v) => v >= t.limit, mark: (t) => `>=${t.limit}x` },
  below: {
    value: (t, row) => row[t.figure],
    met: (t, v) => v / (t.scale || 1) < t.limit,
    mark: (t, v) => `${t.name}<${t.limit}${t.unit} (${(v / (t.scale || 1)).toFixed(2)})`,
    shown: (t, v) => `${(v / (t.scale || 1)).toFixed(2)}${t.scale ? t.unit : ''}`,
  },
  zero: { value: (t, row) => row[t.figure], met: (t, v) => v === 0, mark: (t, v) => `0 ${t.name} (${v})`, shown: (t, v) => String(v) },
};

/** Judges every target whose rows were measured; marks each row; returns the list for the JSON. */
function evaluateTargets(measured) {
  const results = [];
  for (const t of TARGETS) {
    const row = measured(t.row);
    const versus = t.versus ? measured(t.versus) : null;
    if (!row || (t.versus && !versus)) continue;
    const kind = KINDS[t.kind];
    const value = kind.value(t, row, versus);
    const met = kind.met(t, value);
    const result = { row: t.row, description: t.description, value, shown: kind.shown ? kind.shown(t, value) : value.toFixed(2), met };
    if (t.stated && row.cycles !== t.stated) result.description += ` (this run: ${row.cycles} cycles)`;
    const beside = t.beside && row.ratios_vs?.[t.beside.row];
    if (beside !== undefined && beside !== null) {
      result.shown += ` (${beside.toFixed(2)}x ${t.beside.label})`;
      result.versus = { row: t.beside.row, ratio: beside };
    }
    row.targets.push(`${kind.mark(t, value)} ${met ? 'MET' : 'MISSED'}`);
    results.push(result);
  }
  return results;
}

module.exports = { TARGETS, evaluateTargets };
