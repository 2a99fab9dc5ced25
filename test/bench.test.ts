// The benchmark harness works: `npm run bench -- --quick --json` compiles the C floors, runs
// every row, reports positive numbers and leaves nothing bound. Timings and targets are not
// asserted (they depend on the machine); only that each figure exists and makes sense.
// (Written for test/; the imports resolve from bench/ and from test/.)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { devicesBackedBy, privileged, tempDir, type TempDir } from './helpers/kernel';

const ROOT = resolve(__dirname, '..');

const VARIANTS = ['plain', 'hold', 'partscan', 'offset'];
const EXPECTED_ROWS = [
  ...VARIANTS.flatMap((v) => [
    `cycle.${v}.c`,
    `cycle.${v}.c-same-steps`,
    `cycle.${v}.c-threaded`,
    `cycle.${v}.loopdev-sync`,
    `cycle.${v}.loopdev-async`,
  ]),
  'cycle.plain.c-same-steps-no-lock',
  'cycle.plain.loopdev-sync-lock',
  'cycle.plain.loopdev-sync-no-lock',
  'cycle.plain.addon-direct',
  'cycle.plain.addon-direct-async',
  'cycle.plain.node-round-trips',
  ...['plain', 'partscan', 'offset'].map((v) => `cycle.${v}.losetup`),
  'script.c',
  'script.loopdev-sync',
  'script.loopdev-sync-warm',
  ...[16, 64].flatMap((n) => [`concurrent.${n}.c`, `concurrent.${n}.loopdev-async`, `concurrent.${n}.loopdev-sync`]),
  'contention.c-1proc',
  'contention.c-4proc',
  'contention.loopdev-sync-4proc',
  'list.c-ioctl',
  'list.c-sysfs',
  'list.loopdev-sync',
  'list.loopdev-async',
  'list.losetup',
  'find.c-floor',
  'find.loopdev-sync',
  'find.loopdev-async',
  'find.losetup',
  'eld.loopdev-async',
  'memory.loopdev-sync',
  'memory.loopdev-sync-pinned',
];

interface Row {
  id: string;
  group: string;
  reference: boolean;
  kind: 'time' | 'throughput';
  iterations: number;
  warmup: number;
  median_us: number | null;
  mean_us: number | null;
  p95_us: number | null;
  ratio: number | null;
  notes: string;
  ratios_vs?: Record<string, number>;
  control_lock_cost_us?: number;
  error?: string;
  skipped?: string;
  throughput_per_s?: number;
  failures?: number;
  eld_p99_ms?: number;
  eld_max_ms?: number;
  rss_before?: number;
  rss_after?: number;
  fds_before?: number;
  fds_after?: number;
}

interface BenchResult {
  meta: { date: string; kernel: string; cpu: string; cores: number; node: string; mode: string };
  rows: Row[];
  targets: { description: string; met: boolean; shown: string; versus?: { row: string; ratio: number } }[];
  section_errors: unknown[];
  cleanup: { ok: boolean; left_bound: unknown[]; images: string[] };
  interrupted: string | null;
  vs: { path: string; loaded: boolean; rows: { row: string; old: string; median_ratio: number; mean_ratio: number }[] } | null;
}

/** `npm run bench -- ARGS --json` with its images under `dir`. */
function runBench(args: string[], dir: TempDir): { status: number | null; stderr: string; result: BenchResult } {
  const run = spawnSync('npm', ['run', '--silent', 'bench', '--', ...args, '--json', '--tmpdir', dir.path], {
    cwd: ROOT,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    timeout: 170_000,
    killSignal: 'SIGINT', // lets the harness clean up if it overruns
  });
  return { status: run.status, stderr: run.stderr, result: JSON.parse(run.stdout) as BenchResult };
}

/** Whatever is still bound to an image under `dir` is the bench's: detach it (only those), then fail if there was any. */
function removeBenchDir(dir: TempDir): void {
  const leaked = devicesBackedBy(realpathSync(dir.path));
  for (const n of leaked) execFileSync('losetup', ['--detach', `/dev/loop${n}`]);
  dir.remove();
  expect(leaked).toEqual([]);
}

describe.skipIf(!privileged())('npm run bench -- --quick', () => {
  let dir: TempDir;
  let status: number | null = null;
  let stderr = '';
  let result: BenchResult;

  beforeAll(() => {
    dir = tempDir('loopdev-benchtest-');
    ({ status, stderr, result } = runBench(['--quick'], dir));
  }, 180_000);

  afterAll(() => removeBenchDir(dir));

  it('exits 0, uninterrupted, with no section or row errors', () => {
    expect(status, stderr).toBe(0);
    expect(result.interrupted).toBeNull();
    expect(result.section_errors).toEqual([]);
    expect(result.rows.filter((r) => r.error || r.skipped).map((r) => `${r.id}: ${r.error ?? r.skipped}`)).toEqual([]);
  });

  it('compiled the C floors into bench/bin', () => {
    expect(existsSync(resolve(ROOT, 'bench/bin/cycle'))).toBe(true);
    expect(existsSync(resolve(ROOT, 'bench/bin/list'))).toBe(true);
  });

  it('describes the machine', () => {
    expect(result.meta.mode).toBe('quick');
    expect(Number.isNaN(Date.parse(result.meta.date))).toBe(false);
    expect(result.meta.kernel.length).toBeGreaterThan(0);
    expect(result.meta.cpu.length).toBeGreaterThan(0);
    expect(result.meta.cores).toBeGreaterThan(0);
    expect(result.meta.node).toBe(process.version);
  });

  it('has every row, with positive figures', () => {
    expect(result.rows.map((r) => r.id).sort()).toEqual([...EXPECTED_ROWS].sort());
    const withReference = new Set(result.rows.filter((r) => r.reference).map((r) => r.group));
    for (const row of result.rows) {
      expect(row.iterations, row.id).toBeGreaterThan(0);
      expect(row.warmup, row.id).toBeGreaterThanOrEqual(0);
      expect(row.median_us, row.id).toBeGreaterThan(0);
      expect(row.mean_us, row.id).toBeGreaterThan(0);
      expect(row.p95_us!, row.id).toBeGreaterThanOrEqual(row.median_us!);
      if (withReference.has(row.group)) expect(row.ratio, row.id).toBeGreaterThan(0);
      else expect(['eld', 'memory', 'memory-pinned']).toContain(row.group);
      if (row.reference) expect(row.ratio, row.id).toBe(1);
      if (row.kind === 'throughput') {
        expect(row.throughput_per_s, row.id).toBeGreaterThan(0);
        expect(row.failures, row.id).toBeGreaterThanOrEqual(0);
      }
    }
    const eld = result.rows.find((r) => r.id === 'eld.loopdev-async')!;
    expect(eld.eld_p99_ms).toBeGreaterThan(0);
    expect(eld.eld_max_ms).toBeGreaterThanOrEqual(eld.eld_p99_ms!);
    for (const memory of result.rows.filter((r) => r.id.startsWith('memory.'))) {
      for (const key of ['rss_before', 'rss_after', 'fds_before', 'fds_after'] as const) expect(memory[key], `${memory.id} ${key}`).toBeGreaterThan(0);
    }
  });

  it('compares loopdev with the C floors that take its steps (sync) and use a worker thread (async)', () => {
    const second: [string, string][] = [
      ...VARIANTS.flatMap((v): [string, string][] => [
        [`cycle.${v}.loopdev-sync`, `cycle.${v}.c-same-steps`],
        [`cycle.${v}.loopdev-async`, `cycle.${v}.c-threaded`],
      ]),
      ['cycle.plain.loopdev-sync-lock', 'cycle.plain.c-same-steps'],
      ['cycle.plain.loopdev-sync-no-lock', 'cycle.plain.c-same-steps-no-lock'],
      ['cycle.plain.addon-direct', 'cycle.plain.c-same-steps'],
      ['cycle.plain.addon-direct-async', 'cycle.plain.c-threaded'],
      ['cycle.plain.loopdev-async', 'cycle.plain.addon-direct-async'],
    ];
    for (const [id, against] of second) {
      const row = result.rows.find((r) => r.id === id)!;
      expect(row.ratios_vs?.[against], `${id} vs ${against}`).toBeGreaterThan(0);
      expect(row.notes, id).toMatch(/\dx vs /);
    }
    for (const id of ['cycle.plain.loopdev-sync-no-lock', 'cycle.plain.c-same-steps-no-lock']) {
      expect(typeof result.rows.find((r) => r.id === id)!.control_lock_cost_us, id).toBe('number');
    }
    for (const t of result.targets.filter((t) => /^(sync|async) cycle/.test(t.description))) {
      expect(t.versus?.ratio, t.description).toBeGreaterThan(0);
      expect(t.shown, t.description).toMatch(/\(\d+\.\d\dx (loopdev's steps in C|C with each step on a worker thread)\)$/);
    }
  });

  it('evaluates the targets (without judging them)', () => {
    expect(result.targets.length).toBeGreaterThan(0);
    for (const t of result.targets) expect(typeof t.met).toBe('boolean');
  });

  it('leaves nothing bound to its images, by its own check and by sysfs', () => {
    expect(result.cleanup.ok).toBe(true);
    expect(result.cleanup.left_bound).toEqual([]);
    expect(result.cleanup.images.length).toBeGreaterThan(0);
    const base = realpathSync(dir.path); // sysfs and the harness use resolved paths
    for (const image of result.cleanup.images) {
      expect(image.startsWith(`${base}/`)).toBe(true);
      expect(existsSync(image)).toBe(false); // deleted by the harness
    }
    expect(devicesBackedBy(base)).toEqual([]);
  });
});

describe.skipIf(!privileged())('npm run bench -- --quick --only cycle --vs dist/index.js', () => {
  const VS_VARIANTS = ['plain', 'hold', 'partscan'];
  let dir: TempDir;
  let status: number | null = null;
  let stderr = '';
  let result: BenchResult;

  beforeAll(() => {
    dir = tempDir('loopdev-benchtest-vs-');
    ({ status, stderr, result } = runBench(['--quick', '--only', 'cycle', '--vs', resolve(ROOT, 'dist/index.js')], dir));
  }, 180_000);

  afterAll(() => removeBenchDir(dir));

  it('runs the second library in the same groups, and only for plain, hold and partscan', () => {
    expect(status, stderr).toBe(0);
    expect(result.rows.filter((r) => r.error || r.skipped).map((r) => `${r.id}: ${r.error ?? r.skipped}`)).toEqual([]);
    const vsRows = result.rows.filter((r) => r.id.includes('.vs-')).map((r) => r.id);
    expect(vsRows.sort()).toEqual(VS_VARIANTS.flatMap((v) => [`cycle.${v}.vs-loopdev-sync`, `cycle.${v}.vs-loopdev-async`]).sort());
    for (const id of vsRows) {
      const row = result.rows.find((r) => r.id === id)!;
      expect(row.group, id).toBe(id.split('.').slice(0, 2).join('.'));
      expect(row.median_us, id).toBeGreaterThan(0);
      expect(row.mean_us, id).toBeGreaterThan(0);
    }
  });

  it('gives new / old per row, in the notes and in the JSON', () => {
    for (const v of VS_VARIANTS) {
      for (const api of ['sync', 'async']) {
        const row = result.rows.find((r) => r.id === `cycle.${v}.loopdev-${api}`)!;
        expect(row.ratios_vs?.[`cycle.${v}.vs-loopdev-${api}`], row.id).toBeGreaterThan(0);
        expect(row.notes, row.id).toMatch(/\dx vs the --vs library/);
      }
    }
    expect(result.vs?.loaded).toBe(true);
    expect(result.vs?.rows.map((p) => p.row).sort()).toEqual(VS_VARIANTS.flatMap((v) => [`cycle.${v}.loopdev-sync`, `cycle.${v}.loopdev-async`]).sort());
    for (const pair of result.vs!.rows) {
      expect(pair.median_ratio, pair.row).toBeGreaterThan(0);
      expect(pair.mean_ratio, pair.row).toBeGreaterThan(0);
    }
  });

  it('leaves nothing bound to its images', () => {
    expect(result.cleanup.ok).toBe(true);
    expect(devicesBackedBy(realpathSync(dir.path))).toEqual([]);
  });
});
