'use strict';
// loopdev benchmark harness: `npm run bench [-- --quick] [-- --json]`.
//
// Compares loopdev (dist/index.js) with C floors (bench/c/*.c, raw ioctls, compiled here at
// start) and with spawning losetup, prints one table and writes bench/out/latest.json.
// Every figure is a median / p95 over the stated number of measured iterations; warm-ups
// are run first and not counted. Targets are informational: a miss never fails the run.
//
// Safety: images are sparse files in a fresh directory under os.tmpdir() (or --tmpdir);
// whatever is still bound to one of them at the end (also after SIGINT/SIGTERM or an error)
// is detached, and only that; the final check scans /sys/block/loop*/loop/backing_file.
//
// Exit code: 0 when every contender ran (or was skipped because dist/index.js is missing),
// 1 when the harness or a contender errored or a device was left bound, 130 on a signal.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFile, execFileSync, fork } = require('node:child_process');
const { promisify, parseArgs } = require('node:util');
const { monitorEventLoopDelay } = require('node:perf_hooks');

const execFileP = promisify(execFile);

const BENCH_DIR = __dirname;
const ROOT = path.resolve(BENCH_DIR, '..');
const BIN_DIR = path.join(BENCH_DIR, 'bin');
const OUT_DIR = path.join(BENCH_DIR, 'out');
const DEFAULT_LIB = path.join(ROOT, 'dist', 'index.js');
const MIB = 1024 * 1024;
const IMAGE_SIZE = 64 * MIB;
const OFFSET = 1 * MIB;
const SIZE_LIMIT = 32 * MIB;
const SECTIONS = ['cycle', 'concurrent', 'contention', 'list', 'eld', 'memory'];

const USAGE = `usage: node bench/run.js [--quick] [--json] [--only ${SECTIONS.join(',')}] [--tmpdir DIR] [--lib PATH]
  --quick    small iteration counts (well under a minute)
  --json     print only the JSON result on stdout (it is always written to bench/out/latest.json)
  --only     comma-separated sections to run (default: all)
  --tmpdir   directory in which to create the bench's own image directory (default: os.tmpdir())
  --lib      the library to benchmark (default: dist/index.js)`;

let flags;
try {
  ({ values: flags } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      only: { type: 'string' },
      tmpdir: { type: 'string' },
      lib: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }));
} catch (err) {
  console.error(`${err.message}\n${USAGE}`);
  process.exit(2);
}
if (flags.help) {
  console.log(USAGE);
  process.exit(0);
}
const selected = flags.only ? flags.only.split(',').map((s) => s.trim()) : SECTIONS;
for (const s of selected) {
  if (!SECTIONS.includes(s)) {
    console.error(`unknown section '${s}'\n${USAGE}`);
    process.exit(2);
  }
}

const CONFIG = flags.quick
  ? {
      blocks: 2, // contenders of a group alternate in this many blocks
      cycle: { iterations: 200, warmup: 20, blocks: 2 },
      losetupCycle: { iterations: 20, warmup: 3 },
      concurrent: { rounds: 5, warmup: 1, counts: [16, 64] },
      contention: { procs: 4, durationMs: 1000 },
      listBound: 256,
      list: { iterations: 20, warmup: 3 },
      losetupList: { iterations: 10, warmup: 2 },
      eld: { cycles: 1000, inFlight: 8, warmup: 16, idleMs: 300 },
      memory: { cycles: 1000, warmup: 1000 },
    }
  : {
      blocks: 5,
      // The cycle rows are compared with each other within a few µs (second ratios, the lock's
      // cost), and this machine's cycle time drifts by more than that over seconds: finer
      // alternation (100 iterations a block) spreads the drift evenly over the contenders.
      cycle: { iterations: 2000, warmup: 200, blocks: 20 },
      losetupCycle: { iterations: 200, warmup: 10 },
      concurrent: { rounds: 30, warmup: 3, counts: [16, 64] },
      contention: { procs: 4, durationMs: 5000 },
      listBound: 256,
      list: { iterations: 200, warmup: 10 },
      losetupList: { iterations: 50, warmup: 5 },
      eld: { cycles: 1000, inFlight: 8, warmup: 16, idleMs: 300 },
      memory: { cycles: 10000, warmup: 2000 },
    };

const VARIANTS = [
  { key: 'plain', label: 'plain', cFlags: [], libOptions: {}, losetupFlags: [] },
  { key: 'hold', label: 'hold (AUTOCLEAR, released by closing the fd)', cFlags: ['--hold'], libOptions: { hold: true }, losetupFlags: null },
  { key: 'partscan', label: 'partscan', cFlags: ['--partscan'], libOptions: { partscan: true }, losetupFlags: ['--partscan'] },
  {
    key: 'offset',
    label: 'offset 1 MiB + sizeLimit 32 MiB',
    cFlags: ['--offset', String(OFFSET), '--sizelimit', String(SIZE_LIMIT)],
    libOptions: { offset: OFFSET, sizeLimit: SIZE_LIMIT },
    losetupFlags: ['--offset', String(OFFSET), '--sizelimit', String(SIZE_LIMIT)],
  },
];

const state = {
  aborted: false,
  signal: null,
  children: new Set(), // every child process we started, until it exits
  held: new Set(), // loopdev hold-mode devices not yet closed
  tmpdir: null,
  images: [],
  libPath: flags.lib ? path.resolve(flags.lib) : DEFAULT_LIB,
  lib: null,
  libError: null,
  cleanup: null,
};
const rows = [];
const sectionErrors = [];
/**
 * row -> { compareTo: [{ id, label }], lockCostOf?: id }: rows of its group this row is also
 * compared with, besides the reference (a second ratio), and the row that differs from it only
 * by the flock on /dev/loop-control (whose median minus this one's is the lock's cost).
 */
const comparisons = new Map();

class Aborted extends Error {}

function log(message) {
  if (!flags.json) process.stderr.write(`${message}\n`);
}

function checkAbort() {
  if (state.aborted) throw new Aborted(`interrupted by ${state.signal}`);
}

function track(child) {
  state.children.add(child);
  child.once('exit', () => state.children.delete(child));
  return child;
}

function yieldToLoop() {
  return new Promise((resolve) => setImmediate(resolve));
}

function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

// ---------------------------------------------------------------- statistics

function percentile(sorted, p) {
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

function summarize(timingsNs) {
  const s = Float64Array.from(timingsNs).sort();
  const n = s.length;
  if (n === 0) throw new Error('no measured iterations');
  const median = n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  let sum = 0;
  for (const v of s) sum += v;
  return {
    median_us: median / 1e3,
    p95_us: percentile(s, 95) / 1e3,
    min_us: s[0] / 1e3,
    max_us: s[n - 1] / 1e3,
    mean_us: sum / n / 1e3,
  };
}

// ---------------------------------------------------------------- contenders

function libName(file) {
  const relative = path.relative(ROOT, file);
  return relative.startsWith('..') ? file : relative;
}

function libMissing(functions) {
  const name = libName(state.libPath);
  if (!state.lib) return `${name} not loadable: ${state.libError}`;
  const missing = functions.filter((f) => typeof state.lib[f] !== 'function');
  return missing.length ? `${name} does not export ${missing.join(', ')}` : null;
}

function newRow(spec) {
  const row = {
    id: spec.id,
    group: spec.group,
    operation: spec.operation,
    contender: spec.contender,
    reference: Boolean(spec.reference),
    kind: spec.kind || 'time',
    iterations: 0,
    warmup: 0,
    blocks: 0,
    median_us: null,
    p95_us: null,
    ratio: null,
    notes: '',
    targets: [],
  };
  rows.push(row);
  if (spec.compareTo || spec.lockCostOf) comparisons.set(row, { compareTo: spec.compareTo || [], lockCostOf: spec.lockCostOf });
  const missing = spec.needs ? libMissing(spec.needs) : null;
  if (missing) {
    row.skipped = missing;
    log(`  ${spec.contender}: skipped (${missing})`);
  }
  return row;
}

function failRow(row, err) {
  if (err instanceof Aborted || state.aborted) {
    row.interrupted = true;
    throw err instanceof Aborted ? err : new Aborted(`interrupted by ${state.signal}`);
  }
  row.error = String((err && err.message) || err);
  log(`  ${row.contender}: ERROR ${row.error}`);
}

/** acc: { timings_ns, retries?, attaches?, extra?, throughput_per_s? }; notes(row, acc) -> string */
function finishRow(row, acc, notes) {
  Object.assign(row, summarize(acc.timings_ns));
  row.iterations = acc.timings_ns.length;
  if (acc.retries !== undefined) {
    row.retries = acc.retries;
    const attaches = acc.attaches || row.iterations;
    row.retries_per_attach = attaches ? acc.retries / attaches : 0;
  }
  if (acc.throughput_per_s !== undefined) row.throughput_per_s = acc.throughput_per_s;
  if (acc.extra) Object.assign(row, acc.extra);
  for (const [key, values] of Object.entries(acc.series || {})) {
    if (values.length) row[`${key.replace(/_ns$/, '')}_median_us`] = summarize(values).median_us;
  }
  row.notes = notes ? notes(row, acc) : acc.retries !== undefined ? retryNote(acc.retries, acc.attaches || row.iterations) : '';
  log(`  ${row.contender}: median ${row.median_us.toFixed(1)} µs, p95 ${row.p95_us.toFixed(1)} µs (${row.iterations} iterations) ${row.notes}`);
}

/**
 * Runs one contender once and records its row (for duration-based or one-off measurements).
 * spec: id, group, operation, contender, reference, warmup, needs (library functions),
 * kind ('time' | 'throughput'). fn returns { timings_ns, retries?, attaches?, notes?, extra?,
 * throughput_per_s? }.
 */
async function contender(spec, fn) {
  checkAbort();
  const row = newRow(spec);
  if (row.skipped) return row;
  try {
    const result = await fn();
    row.warmup = spec.warmup || 0;
    row.blocks = 1;
    finishRow(row, result, () => result.notes || '');
  } catch (err) {
    failRow(row, err);
  }
  return row;
}

/** The share of `total` that block `b` of `blocks` gets. */
function share(total, blocks, b) {
  return Math.floor(total / blocks) + (b < total % blocks ? 1 : 0);
}

/**
 * Runs the contenders of one group in alternating blocks (A B C A B C ...), so that a
 * change in machine load (other processes share these cores) hits them all alike instead of
 * skewing the ratios. Each spec: the row fields of contender(), plus iterations, warmup
 * (totals, split over the blocks; every block warms up before it measures),
 * run(iterations, warmup) -> { timings_ns, retries?, attaches?, extra?, sums?, series? } (sums:
 * counts added up over the blocks into the row; series: { name_ns: [per-iteration ns] }, pooled
 * over the blocks into row.name_median_us), notes?(row, acc), compareTo? ([{ id, label }]: rows
 * whose medians this row is also divided by, shown in the notes and as ratios_vs).
 */
/** A small deterministic generator (LCG), so that every run shuffles the same way. */
function seededRandom(seed) {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

/** A copy of `items` in Fisher-Yates order. */
function shuffled(items, random) {
  const copy = items.slice();
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy;
}

async function interleaved(specs, blocks) {
  const entries = specs.map((spec) => ({ spec, row: newRow(spec), acc: { timings_ns: [], attaches: 0 } }));
  const random = seededRandom(0x10007);
  for (let b = 0; b < blocks; b++) {
    // Each block runs the contenders in a new order (shuffled, the same in every run), so
    // that none always follows the same one: with a fixed order, the row after the threaded
    // C floor paid for what that process left in the caches, several µs a cycle.
    for (const { spec, row, acc } of shuffled(entries, random)) {
      if (row.skipped || row.error) continue;
      const iterations = share(spec.iterations, blocks, b);
      const warmup = share(spec.warmup, blocks, b);
      if (iterations === 0) continue;
      checkAbort();
      try {
        const r = await spec.run(iterations, warmup);
        for (const t of r.timings_ns) acc.timings_ns.push(t);
        if (r.retries !== undefined) acc.retries = (acc.retries || 0) + r.retries;
        acc.attaches += r.attaches || r.timings_ns.length;
        if (r.extra) acc.extra = { ...acc.extra, ...r.extra };
        for (const [key, value] of Object.entries(r.sums || {})) acc.extra = { ...acc.extra, [key]: ((acc.extra && acc.extra[key]) || 0) + value };
        for (const [key, values] of Object.entries(r.series || {})) {
          acc.series = acc.series || {};
          acc.series[key] = (acc.series[key] || []).concat(values);
        }
        row.warmup += warmup;
        row.blocks++;
      } catch (err) {
        failRow(row, err);
      }
    }
  }
  for (const { spec, row, acc } of entries) {
    if (!row.skipped && !row.error) finishRow(row, acc, spec.notes);
  }
}

async function runC(name, args) {
  checkAbort();
  const promise = execFileP(path.join(BIN_DIR, name), args.map(String), { maxBuffer: 1 << 30 });
  track(promise.child);
  let stdout;
  try {
    ({ stdout } = await promise);
  } catch (err) {
    checkAbort();
    throw new Error(`${name} ${args.join(' ')}: ${(err.stderr || err.message).trim()}`);
  }
  return JSON.parse(stdout);
}

async function spawnTracked(file, args) {
  checkAbort();
  const promise = execFileP(file, args, { maxBuffer: 1 << 28 });
  track(promise.child);
  return promise;
}

/** Times fn() once per iteration (sync); yields to the event loop every 256 so signals get in. */
async function measureSync(iterations, warmup, fn, counters) {
  const timings = [];
  for (let i = 0; i < warmup + iterations; i++) {
    if (i % 256 === 0) {
      await yieldToLoop();
      checkAbort();
    }
    if (counters) counters.measuring = i >= warmup;
    const t0 = process.hrtime.bigint();
    fn();
    const t1 = process.hrtime.bigint();
    if (i >= warmup) timings.push(Number(t1 - t0));
  }
  return timings;
}

async function measureAsync(iterations, warmup, fn, counters) {
  const timings = [];
  for (let i = 0; i < warmup + iterations; i++) {
    checkAbort();
    if (counters) counters.measuring = i >= warmup;
    const t0 = process.hrtime.bigint();
    await fn();
    const t1 = process.hrtime.bigint();
    if (i >= warmup) timings.push(Number(t1 - t0));
  }
  return timings;
}

/** Counts onRetry calls made while measuring (warm-up retries are not counted). */
function retryCounter() {
  const counters = { measuring: false, retries: 0 };
  counters.onRetry = () => {
    if (counters.measuring) counters.retries++;
  };
  return counters;
}

// `options` is made once per block by the caller, as an application passes its options: the
// harness's own object spread is not part of loopdev's time.
function libCycleSync(image, options) {
  const device = state.lib.attachSync(image, options);
  if (options.hold) {
    state.held.add(device);
    device.closeSync();
    state.held.delete(device);
  } else {
    device.detachSync();
  }
}

/** The attach step's numbers, by attachArgs: controlFd, device -1 (GET_FREE), backingFd -1 (open the path), offset and size limit 0 (two halves each), flags 0, sector size 0, mode 4 (lock the control). */
function fillAddonAttach() {
  const addon = state.addon;
  state.addonControl ??= addon.openControl();
  const n = addon.stepNumbers;
  n[0] = state.addonControl;
  n[1] = -1;
  n[2] = -1;
  n[3] = n[4] = n[5] = n[6] = n[7] = n[8] = 0;
  n[9] = 4;
}

/** The detach step's numbers, by detachArgs: number, held fd -1, check identity, then diskseq, backing device and inode as attach read them (no path: the addon opens /dev/loopN). */
function fillAddonDetach(attached) {
  const n = state.addon.stepNumbers;
  n[0] = attached[0];
  n[1] = -1;
  n[2] = 1;
  n[3] = attached[10];
  n[4] = attached[3];
  n[5] = attached[4];
}

/** attach + detach through the addon's two native steps, as lib/steps.ts calls them (plain options). */
function addonCycle(image) {
  fillAddonAttach();
  fillAddonDetach(state.addon.attach(image, undefined, undefined));
  state.addon.detach(undefined, undefined);
}

/** The same through the addon's Promise forms: two trips through Node's thread pool. */
async function addonCycleAsync(image) {
  fillAddonAttach();
  fillAddonDetach(await state.addon.attachAsync(image, undefined, undefined));
  await state.addon.detachAsync(undefined, undefined);
}

async function libCycleAsync(image, options) {
  const device = await state.lib.attach(image, options);
  if (options.hold) {
    state.held.add(device);
    await device.close();
    state.held.delete(device);
  } else {
    await device.detach();
  }
}

/** Two trips through Node's thread pool (fs.promises.access('/'): one access() syscall each). */
async function twoRoundTrips() {
  await fs.promises.access('/');
  await fs.promises.access('/');
}

async function losetupCycle(image, extraFlags) {
  const { stdout } = await spawnTracked('losetup', ['--find', '--show', ...extraFlags, image]);
  const device = stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(device)) throw new Error(`losetup --find --show printed '${device}'`);
  await spawnTracked('losetup', ['--detach', device]);
}

function retryNote(retries, attaches) {
  return `${(attaches ? retries / attaches : 0).toFixed(2)} retries/attach`;
}

// ---------------------------------------------------------------- sections

/** run() for a C floor: the C program times its own iterations. */
function cRun(name, args) {
  return async (iterations, warmup) => {
    const r = await runC(name, [...args, '--iterations', iterations, '--warmup', warmup]);
    return {
      timings_ns: r.timings_ns,
      retries: r.retries,
      extra: r.devices !== undefined ? { devices_returned: r.devices } : undefined,
      sums: r.not_released !== undefined ? { not_released: r.not_released } : undefined,
      series: r.control_lock_ns !== undefined ? { control_lock_ns: r.control_lock_ns } : undefined,
    };
  };
}

/** Notes of the C floors that take loopdev's steps: the lock timed in place, retries, deferred releases. */
function sameStepsNotes(row) {
  const lock = row.control_lock_median_us !== undefined ? `flock(/dev/loop-control) EX+UN timed in place: ${row.control_lock_median_us.toFixed(1)} µs; ` : '';
  const deferred = row.not_released ? `; ${row.not_released} detaches not released at once (loopdev would wait for those)` : '';
  return `${lock}${retryNote(row.retries, row.iterations)}${deferred}`;
}

async function sectionCycle() {
  const image = makeImage('cycle');
  const { iterations, warmup } = CONFIG.cycle;
  const lw = CONFIG.losetupCycle;
  for (const v of VARIANTS) {
    const group = `cycle.${v.key}`;
    const operation = `attach+detach: ${v.label}`;
    log(operation);
    const base = { group, operation, iterations, warmup };
    const floorArgs = [image, ...v.cFlags];
    const sameSteps = { id: `${group}.c-same-steps`, label: "loopdev's steps in C" };
    const sameStepsNoLock = { id: `${group}.c-same-steps-no-lock`, label: "loopdev's steps in C without the control lock" };
    const threaded = { id: `${group}.c-threaded`, label: 'C with each step on a worker thread' };
    const syncSpec = (id, contender, libOptions, compareTo) => ({
      ...base,
      id,
      contender,
      needs: ['attachSync'],
      compareTo,
      run: async (n, w) => {
        const c = retryCounter();
        const options = { ...libOptions, onRetry: c.onRetry };
        const timings = await measureSync(n, w, () => libCycleSync(image, options), c);
        return { timings_ns: timings, retries: c.retries };
      },
    });
    const specs = [
      { ...base, id: `${group}.c`, contender: 'C floor (raw ioctls)', reference: true, run: cRun('cycle', floorArgs) },
      { ...base, id: sameSteps.id, contender: "C floor, loopdev's steps", notes: sameStepsNotes, run: cRun('cycle', [...floorArgs, '--same-steps']) },
    ];
    if (v.key === 'plain') {
      specs.push({
        ...base,
        id: sameStepsNoLock.id,
        contender: "C floor, loopdev's steps without the control lock",
        notes: sameStepsNotes,
        lockCostOf: sameSteps.id,
        run: cRun('cycle', [...floorArgs, '--same-steps', '--no-control-lock']),
      });
    }
    specs.push(
      { ...base, id: threaded.id, contender: 'C floor, each step on a worker thread', notes: sameStepsNotes, run: cRun('cycle', [...floorArgs, '--threaded']) },
      syncSpec(`${group}.loopdev-sync`, 'loopdev sync', v.libOptions, [sameSteps]),
    );
    if (v.key === 'plain' && state.addon) {
      // Where the library's time goes: the same native steps called from Node with no
      // TypeScript layer in between (no option checks, retry, handle or result checks).
      specs.push({
        ...base,
        id: `${group}.addon-direct`,
        contender: "loopdev's addon called directly (no TS layer)",
        needs: ['attachSync'],
        compareTo: [sameSteps],
        run: async (n, w) => ({ timings_ns: await measureSync(n, w, () => addonCycle(image)) }),
      });
    }
    if (v.key === 'plain') {
      // The lock's cost is the difference between these two, which pass the same option keys:
      // passing any explicit option (lockControl: true included) costs loopdev's JS some
      // microseconds, so 'loopdev sync' (no options) is not the row to subtract from.
      specs.push(
        syncSpec(`${group}.loopdev-sync-lock`, 'loopdev sync, lockControl: true (explicit)', { ...v.libOptions, lockControl: true }, [sameSteps]),
        {
          ...syncSpec(`${group}.loopdev-sync-no-lock`, 'loopdev sync, lockControl: false', { ...v.libOptions, lockControl: false }, [sameStepsNoLock]),
          lockCostOf: `${group}.loopdev-sync-lock`,
        },
      );
    }
    const addonAsync = { id: `${group}.addon-direct-async`, label: "loopdev's addon's Promise forms called directly" };
    specs.push({
      ...base,
      id: `${group}.loopdev-async`,
      contender: 'loopdev async',
      needs: ['attach'],
      compareTo: v.key === 'plain' && state.addon ? [threaded, addonAsync] : [threaded],
      run: async (n, w) => {
        const c = retryCounter();
        const options = { ...v.libOptions, onRetry: c.onRetry };
        const timings = await measureAsync(n, w, () => libCycleAsync(image, options), c);
        return { timings_ns: timings, retries: c.retries };
      },
    });
    if (v.key === 'plain' && state.addon) {
      // Where the async library's time goes: the addon's Promise forms with no TypeScript
      // layer, so the rest is the thread pool and the machine.
      specs.push({
        ...base,
        id: addonAsync.id,
        contender: "loopdev's addon called directly, async",
        needs: ['attach'],
        compareTo: [threaded],
        run: async (n, w) => ({ timings_ns: await measureAsync(n, w, () => addonCycleAsync(image)) }),
      });
    }
    if (v.key === 'plain') {
      // What keeping the event loop free costs on this machine before any loop work: the two
      // trips through Node's thread pool that an async attach + detach makes, with nothing in
      // them. A trip around ~30 us of kernel work costs more here (the waiting vCPU halts and
      // must be woken by the host): compare the addon's sync and async rows.
      specs.push({
        ...base,
        id: `${group}.node-round-trips`,
        contender: '2 Node thread-pool round trips, no loop work',
        run: async (n, w) => ({ timings_ns: await measureAsync(n, w, twoRoundTrips) }),
      });
    }
    if (v.losetupFlags) {
      specs.push({
        ...base,
        iterations: lw.iterations,
        warmup: lw.warmup,
        id: `${group}.losetup`,
        contender: 'losetup spawn (execFile)',
        run: async (n, w) => ({ timings_ns: await measureAsync(n, w, () => losetupCycle(image, v.losetupFlags)) }),
      });
    }
    try {
      await interleaved(specs, CONFIG.cycle.blocks);
    } finally {
      await cleanupImages([image]);
    }
  }
}

async function sectionConcurrent() {
  const image = makeImage('concurrent');
  const { rounds, warmup, counts } = CONFIG.concurrent;
  for (const n of counts) {
    const group = `concurrent.${n}`;
    const operation = `${n} attaches then ${n} detaches (time per round)`;
    log(operation);
    const base = { group, operation, iterations: rounds, warmup };
    const perDevice = (row, acc) =>
      `${(row.median_us / n).toFixed(1)} µs/device` + (acc.retries !== undefined ? `, ${retryNote(acc.retries, acc.attaches)}` : '');
    const specs = [
      {
        ...base,
        id: `${group}.c`,
        contender: `C floor, ${n} sequential`,
        reference: true,
        notes: perDevice,
        run: async (r, w) => {
          const out = await runC('cycle', [image, '--batch', n, '--iterations', r, '--warmup', w]);
          return { timings_ns: out.timings_ns, retries: out.retries, attaches: out.timings_ns.length * n };
        },
      },
      {
        ...base,
        id: `${group}.loopdev-async`,
        contender: `loopdev async, ${n} concurrent`,
        needs: ['attach'],
        notes: perDevice,
        run: async (r, w) => {
          const c = retryCounter();
          const timings = await measureAsync(r, w, async () => {
            const attached = await Promise.allSettled(Array.from({ length: n }, () => state.lib.attach(image, { onRetry: c.onRetry })));
            const devices = attached.filter((s) => s.status === 'fulfilled').map((s) => s.value);
            const detached = await Promise.allSettled(devices.map((d) => d.detach()));
            const failed = [...attached, ...detached].find((s) => s.status === 'rejected');
            if (failed) throw failed.reason;
          }, c);
          return { timings_ns: timings, retries: c.retries, attaches: timings.length * n };
        },
      },
      {
        ...base,
        id: `${group}.loopdev-sync`,
        contender: `loopdev sync, ${n} sequential`,
        needs: ['attachSync'],
        notes: perDevice,
        run: async (r, w) => {
          const c = retryCounter();
          const timings = await measureSync(r, w, () => {
            const devices = [];
            try {
              for (let i = 0; i < n; i++) devices.push(state.lib.attachSync(image, { onRetry: c.onRetry }));
            } finally {
              for (const d of devices) d.detachSync();
            }
          }, c);
          return { timings_ns: timings, retries: c.retries, attaches: timings.length * n };
        },
      },
    ];
    try {
      await interleaved(specs, CONFIG.blocks);
    } finally {
      await cleanupImages([image]);
    }
  }
}

function contentionResult(r) {
  const attaches = r.cycles + r.failures;
  const throughput = r.cycles / (r.elapsed_ns / 1e9);
  return {
    timings_ns: r.timings_ns,
    retries: r.retries,
    attaches,
    throughput_per_s: throughput,
    extra: {
      cycles: r.cycles,
      failures: r.failures,
      procs: r.procs,
      duration_ms: r.duration_ms,
      last_error: r.last_error || null,
      retry_errnos: r.retry_errnos || null,
    },
    notes:
      `${Math.round(throughput)} cycles/s, ${retryNote(r.retries, attaches)}` +
      (r.retry_errnos && r.retries ? ` (${Object.entries(r.retry_errnos).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(', ')})` : '') +
      `, ${r.failures} failures${r.last_error ? ` (${r.last_error})` : ''}`,
  };
}

function workerChannel(worker) {
  let resolveReady;
  let rejectReady;
  const ready = new Promise((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  const done = new Promise((resolve, reject) => {
    let result = null;
    let error = null;
    worker.on('message', (m) => {
      if (m.type === 'ready') resolveReady();
      else if (m.type === 'result') result = m;
      else if (m.type === 'error') error = m.error;
    });
    worker.on('error', (e) => {
      error = error || String(e);
    });
    worker.on('exit', (code, signal) => {
      const failure = new Error(`worker ${worker.pid} exited (code ${code}, signal ${signal})${error ? `: ${error}` : ''}`);
      rejectReady(failure);
      if (result && !error) resolve(result);
      else reject(failure);
    });
  });
  ready.catch(() => {});
  done.catch(() => {});
  return { worker, ready, done };
}

async function stopWorkers(channels) {
  for (const { worker } of channels) {
    if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGTERM');
  }
  await Promise.allSettled(channels.map((c) => c.done));
}

async function runContendWorkers(procs, image, durationMs) {
  const channels = [];
  try {
    for (let i = 0; i < procs; i++) {
      const worker = fork(path.join(BENCH_DIR, 'contend-worker.js'), [state.libPath, image, String(durationMs)], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      track(worker);
      channels.push(workerChannel(worker));
    }
    await Promise.all(channels.map((c) => c.ready));
    checkAbort();
    const startAt = Date.now() + 100; // everyone starts together, after the library has loaded
    for (const { worker } of channels) worker.send({ type: 'go', startAt });
    const settled = await Promise.allSettled(channels.map((c) => c.done));
    checkAbort();
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    const results = settled.map((s) => s.value);
    const sum = (k) => results.reduce((a, r) => a + r[k], 0);
    return {
      procs,
      duration_ms: durationMs,
      cycles: sum('cycles'),
      retries: sum('retries'),
      failures: sum('failures'),
      elapsed_ns: Math.max(...results.map((r) => r.elapsedNs)),
      timings_ns: results.flatMap((r) => r.timings),
      last_error: results.map((r) => r.lastError).find(Boolean),
    };
  } finally {
    await stopWorkers(channels);
  }
}

async function sectionContention() {
  const image = makeImage('contention');
  const { procs, durationMs } = CONFIG.contention;
  const group = 'contention';
  const operation = `attach+detach cycles for ${durationMs} ms (ratio = aggregate cycles/s vs reference)`;
  log(operation);
  const base = { group, operation, kind: 'throughput', warmup: 0 };
  const runFloor = async (k) => {
    const r = await runC('cycle', [image, '--procs', k, '--duration-ms', durationMs]);
    const lastErrno = r.per_proc.map((p) => p.last_errno).find(Boolean);
    return contentionResult({ ...r, last_error: lastErrno ? `errno ${lastErrno}` : null });
  };
  try {
    await contender({ ...base, id: `${group}.c-1proc`, contender: 'C floor, 1 process', reference: true }, () => runFloor(1));
    await contender({ ...base, id: `${group}.c-${procs}proc`, contender: `C floor, ${procs} processes` }, () => runFloor(procs));
    await contender({ ...base, id: `${group}.loopdev-sync-${procs}proc`, contender: `loopdev sync, ${procs} node processes`, needs: ['attachSync'] }, async () =>
      contentionResult(await runContendWorkers(procs, image, durationMs)),
    );
  } finally {
    await cleanupImages([image]);
  }
}

function countBound() {
  let bound = 0;
  for (const name of fs.readdirSync('/sys/block')) {
    if (name.startsWith('loop') && fs.existsSync(`/sys/block/${name}/loop/backing_file`)) bound++;
  }
  return bound;
}

async function sectionList() {
  const image = makeImage('list');
  const n = CONFIG.listBound;
  const { iterations, warmup } = CONFIG.list;
  const lw = CONFIG.losetupList;
  log(`binding ${n} devices to ${image}`);
  try {
    const t0 = process.hrtime.bigint();
    const bind = await runC('cycle', [image, '--bind', n]);
    const bindMs = Number(process.hrtime.bigint() - t0) / 1e6;
    if (bind.devices.length !== n) throw new Error(`bound only ${bind.devices.length} of ${n} devices: ${bind.error}`);
    const total = countBound();
    log(`  bound ${n} devices in ${bindMs.toFixed(0)} ms; ${total} loop devices bound on the machine`);

    const found = (row) => `${row.devices_returned} devices returned`;
    const counted = (fn) => async (iterationCount, warmupCount) => {
      let count = 0;
      const timings = await fn(iterationCount, warmupCount, (c) => {
        count = c;
      });
      return { timings_ns: timings, extra: { devices_returned: count } };
    };
    const losetupJson = async (args) => JSON.parse((await spawnTracked('losetup', args)).stdout).loopdevices.length;

    const group = 'list';
    const operation = `list all bound devices (${n} bound by the bench, ${total} in all)`;
    log(operation);
    const base = { group, operation, iterations, warmup, notes: found };
    const losetupBase = { ...base, iterations: lw.iterations, warmup: lw.warmup };
    await interleaved(
      [
        { ...base, id: 'list.c-ioctl', contender: 'C floor: backing_file + ioctls', reference: true, run: cRun('list', ['--mode', 'ioctl']) },
        { ...base, id: 'list.c-sysfs', contender: 'C floor: sysfs, 10 files/device', run: cRun('list', ['--mode', 'sysfs']) },
        {
          ...base,
          id: 'list.loopdev-sync',
          contender: 'loopdev listSync()',
          needs: ['listSync'],
          run: counted((r, w, set) => measureSync(r, w, () => set(state.lib.listSync().length))),
        },
        {
          ...base,
          id: 'list.loopdev-async',
          contender: 'loopdev list()',
          needs: ['list'],
          run: counted((r, w, set) => measureAsync(r, w, async () => set((await state.lib.list()).length))),
        },
        {
          ...losetupBase,
          id: 'list.losetup',
          contender: 'losetup --list --json, spawn+parse',
          run: counted((r, w, set) => measureAsync(r, w, async () => set(await losetupJson(['--list', '--json'])))),
        },
      ],
      CONFIG.blocks,
    );

    const findGroup = 'find';
    const findOperation = `find(file) with ${n} devices bound to that file (${total} bound in all)`;
    log(findOperation);
    const findBase = { ...base, group: findGroup, operation: findOperation };
    await interleaved(
      [
        {
          ...findBase,
          id: 'find.c-floor',
          contender: 'C floor: backing_file, ioctls per match',
          reference: true,
          run: cRun('list', ['--mode', 'find', '--file', image]),
        },
        {
          ...findBase,
          id: 'find.loopdev-sync',
          contender: 'loopdev findSync()',
          needs: ['findSync'],
          run: counted((r, w, set) => measureSync(r, w, () => set(state.lib.findSync(image).length))),
        },
        {
          ...findBase,
          id: 'find.loopdev-async',
          contender: 'loopdev find()',
          needs: ['find'],
          run: counted((r, w, set) => measureAsync(r, w, async () => set((await state.lib.find(image)).length))),
        },
        {
          ...findBase,
          iterations: lw.iterations,
          warmup: lw.warmup,
          id: 'find.losetup',
          contender: 'losetup --list --json --associated',
          run: counted((r, w, set) => measureAsync(r, w, async () => set(await losetupJson(['--list', '--json', '--associated', image])))),
        },
      ],
      CONFIG.blocks,
    );
  } finally {
    const detached = await cleanupImages([image]);
    log(`  detached ${detached.length} devices bound to ${path.basename(image)}`);
  }
}

async function sectionEld() {
  const image = makeImage('eld');
  const { cycles, inFlight, warmup } = CONFIG.eld;
  const group = 'eld';
  const operation = `event loop delay: ${cycles} async cycles, ${inFlight} in flight (median/p95 = cycle latency)`;
  log(operation);
  try {
    await contender({ group, operation, warmup, id: 'eld.loopdev-async', contender: 'loopdev async', needs: ['attach'] }, async () => {
      for (let i = 0; i < warmup; i++) await libCycleAsync(image, {});
      const c = retryCounter();
      c.measuring = true;
      const options = { onRetry: c.onRetry };
      const histogram = monitorEventLoopDelay({ resolution: 1 });
      const timings = [];
      let started = 0;
      const lane = async () => {
        while (started < cycles && !state.aborted) {
          started++;
          const t0 = process.hrtime.bigint();
          await libCycleAsync(image, options);
          timings.push(Number(process.hrtime.bigint() - t0));
        }
      };
      const idle = monitorEventLoopDelay({ resolution: 1 });
      idle.enable();
      await new Promise((resolve) => setTimeout(resolve, CONFIG.eld.idleMs));
      idle.disable();
      checkAbort();
      histogram.enable();
      const settled = await Promise.allSettled(Array.from({ length: inFlight }, lane));
      histogram.disable();
      checkAbort();
      const failed = settled.find((s) => s.status === 'rejected');
      if (failed) throw failed.reason;
      const p99 = histogram.percentile(99) / 1e6;
      const max = histogram.max / 1e6;
      return {
        timings_ns: timings,
        retries: c.retries,
        extra: {
          eld_p99_ms: p99,
          eld_max_ms: max,
          eld_mean_ms: histogram.mean / 1e6,
          eld_idle_p99_ms: idle.percentile(99) / 1e6,
          eld_idle_max_ms: idle.max / 1e6,
        },
        notes:
          `loop delay p99 ${p99.toFixed(2)} ms, max ${max.toFixed(2)} ms (idle ${CONFIG.eld.idleMs} ms before: p99 ${(idle.percentile(99) / 1e6).toFixed(2)}, ` +
          `max ${(idle.max / 1e6).toFixed(2)}; delays include the 1 ms sampling interval); ${retryNote(c.retries, timings.length)}`,
      };
    });
  } finally {
    await cleanupImages([image]);
  }
}

const MEMORY_VARIANTS = [
  { id: 'memory.loopdev-sync', group: 'memory', label: 'default V8 flags', execArgv: [] },
  // V8 grows its young generation (up to 2 x 16 MiB semi-spaces) under a steady allocation
  // rate, which raises RSS with no leak; pinning it at 1 MiB leaves what is really retained.
  { id: 'memory.loopdev-sync-pinned', group: 'memory-pinned', label: 'young generation pinned: --max-semi-space-size=1', execArgv: ['--max-semi-space-size=1'] },
];

async function sectionMemory() {
  const image = makeImage('memory');
  const { cycles, warmup } = CONFIG.memory;
  try {
    for (const variant of MEMORY_VARIANTS) {
      const operation = `memory: ${cycles} sync cycles in a fresh process, ${variant.label} (median/p95 = cycle time)`;
      log(operation);
      const spec = { group: variant.group, operation, warmup, id: variant.id, contender: 'loopdev sync', needs: ['attachSync'] };
      await contender(spec, async () => {
        const worker = fork(path.join(BENCH_DIR, 'mem-worker.js'), [state.libPath, image, String(cycles), String(warmup)], {
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
          execArgv: ['--expose-gc', ...variant.execArgv],
        });
        track(worker);
        const channel = workerChannel(worker);
        let r;
        try {
          r = await channel.done;
        } finally {
          await stopWorkers([channel]);
        }
        checkAbort();
        const mb = (bytes) => `${bytes >= 0 ? '+' : ''}${(bytes / MIB).toFixed(1)}`;
        const { before, middle, after } = r;
        const rssGrowth = after.rss - before.rss;
        const fdGrowth = after.fds - before.fds;
        // RSS minus V8's reserved heap: what native code (the addon, libuv, malloc) holds
        const nativeGrowth = after.rss - after.heapTotal - (before.rss - before.heapTotal);
        return {
          timings_ns: r.timings,
          retries: r.retries,
          extra: {
            cycles: r.cycles,
            v8_flags: variant.execArgv,
            rss_before: before.rss,
            rss_middle: middle.rss,
            rss_after: after.rss,
            rss_growth_bytes: rssGrowth,
            rss_growth_second_half_bytes: after.rss - middle.rss,
            heap_total_growth_bytes: after.heapTotal - before.heapTotal,
            heap_used_growth_bytes: after.heapUsed - before.heapUsed,
            rss_minus_heap_total_growth_bytes: nativeGrowth,
            fds_before: before.fds,
            fds_middle: middle.fds,
            fds_after: after.fds,
            fd_growth: fdGrowth,
            gc_exposed: r.gcExposed,
          },
          notes:
            `RSS ${(before.rss / MIB).toFixed(1)} -> ${(middle.rss / MIB).toFixed(1)} -> ${(after.rss / MIB).toFixed(1)} MB ` +
            `(${mb(rssGrowth)}; V8 heap used ${mb(after.heapUsed - before.heapUsed)}, reserved ${mb(after.heapTotal - before.heapTotal)}, ` +
            `RSS minus V8 reserved ${mb(nativeGrowth)}), fds ${before.fds} -> ${middle.fds} -> ${after.fds}`,
        };
      });
    }
  } finally {
    await cleanupImages([image]);
  }
}

const SECTION_FUNCTIONS = {
  cycle: sectionCycle,
  concurrent: sectionConcurrent,
  contention: sectionContention,
  list: sectionList,
  eld: sectionEld,
  memory: sectionMemory,
};

// ---------------------------------------------------------------- images and cleanup

function makeImage(name) {
  const file = path.join(state.tmpdir, `${name}.img`);
  const fd = fs.openSync(file, 'wx', 0o600);
  try {
    fs.ftruncateSync(fd, IMAGE_SIZE); // sparse
  } finally {
    fs.closeSync(fd);
  }
  state.images.push(file);
  return file;
}

/** Strips the newline and the " (deleted)" suffix the kernel adds once the file is unlinked. */
function normaliseBacking(text) {
  return text.replace(/\n+$/, '').replace(/ \(deleted\)$/, '');
}

/** Loop devices whose backing file is one of `images` or lies in the bench's directory. */
function scanBound(images) {
  const wanted = new Set(images);
  const prefix = state.tmpdir ? `${state.tmpdir}${path.sep}` : null;
  const found = [];
  let bound = 0;
  for (const name of fs.readdirSync('/sys/block')) {
    if (!name.startsWith('loop')) continue;
    let backing;
    try {
      backing = normaliseBacking(fs.readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8'));
    } catch {
      continue; // unbound
    }
    bound++;
    if (wanted.has(backing) || (prefix && backing.startsWith(prefix))) found.push({ device: `/dev/${name}`, backing });
  }
  return { bound, found };
}

/** Detaches the devices bound to these images (ours only). Returns the device paths. */
async function cleanupImages(images) {
  if (!images.length || !fs.existsSync(path.join(BIN_DIR, 'cycle'))) return [];
  const { stdout } = await execFileP(path.join(BIN_DIR, 'cycle'), ['--cleanup', ...images]);
  return JSON.parse(stdout).detached;
}

/** Synchronous, idempotent; runs at the end, after an error, and on a signal. */
function finalCleanup() {
  if (state.cleanup) return state.cleanup;
  const result = { images: [...state.images], detached_at_cleanup: [], left_bound: [], bound_devices_scanned: 0, errors: [] };
  for (const device of state.held) {
    try {
      device.closeSync();
    } catch (err) {
      result.errors.push(`closeSync ${device.path}: ${err.message}`);
    }
  }
  state.held.clear();
  if (state.images.length) {
    const cycleBin = path.join(BIN_DIR, 'cycle');
    for (let attempt = 0; attempt < 3; attempt++) {
      const { found } = scanBound(state.images);
      if (!found.length) break;
      if (attempt > 0) sleepSync(200); // a lazily released device (still open somewhere) needs its last close
      try {
        if (fs.existsSync(cycleBin)) {
          const out = JSON.parse(execFileSync(cycleBin, ['--cleanup', ...state.images], { encoding: 'utf8' }));
          result.detached_at_cleanup.push(...out.detached);
        } else {
          for (const { device } of found) {
            execFileSync('losetup', ['--detach', device]);
            result.detached_at_cleanup.push(device);
          }
        }
      } catch (err) {
        result.errors.push(String(err.message));
      }
    }
  }
  const scan = scanBound(state.images);
  result.left_bound = scan.found;
  result.bound_devices_scanned = scan.bound;
  result.ok = scan.found.length === 0 && result.errors.length === 0;
  if (state.tmpdir) {
    try {
      fs.rmSync(state.tmpdir, { recursive: true, force: true });
    } catch (err) {
      result.errors.push(`rm ${state.tmpdir}: ${err.message}`);
    }
  }
  state.cleanup = result;
  return result;
}

function cleanupLine(c) {
  const images = c.images.length;
  if (c.ok) {
    return `Cleanup check: scanned /sys/block/loop*/loop/backing_file (${c.bound_devices_scanned} bound on the machine): 0 bound to the bench's ${images} images - OK` +
      (c.detached_at_cleanup.length ? ` (${c.detached_at_cleanup.length} detached by the final cleanup)` : '');
  }
  return `Cleanup check: FAILED - still bound: ${c.left_bound.map((f) => `${f.device} (${f.backing})`).join(', ') || 'none'}; errors: ${c.errors.join('; ') || 'none'}`;
}

function onSignal(signal) {
  if (state.aborted) {
    process.stderr.write(`\n${signal} again: cleaning up now\n`);
    emergencyExit();
  }
  state.aborted = true;
  state.signal = signal;
  process.stderr.write(`\n${signal}: stopping the running step, then cleaning up (send again to force)\n`);
  for (const child of state.children) child.kill('SIGTERM');
  setTimeout(() => {
    process.stderr.write('timed out waiting for the running step; cleaning up now\n');
    emergencyExit();
  }, 15_000).unref();
}

function emergencyExit() {
  for (const child of state.children) child.kill('SIGKILL');
  sleepSync(300); // let them die before scanning
  const c = finalCleanup();
  process.stderr.write(`${cleanupLine(c)}\n`);
  process.exit(130);
}

// ---------------------------------------------------------------- environment

function compileFloors() {
  fs.mkdirSync(BIN_DIR, { recursive: true });
  for (const name of ['cycle', 'list']) {
    const extra = name === 'cycle' ? ['-pthread'] : []; // cycle --threaded
    try {
      execFileSync('cc', ['-O2', '-Wall', '-Werror', ...extra, '-o', path.join(BIN_DIR, name), path.join(BENCH_DIR, 'c', `${name}.c`)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      throw new Error(`compiling bench/c/${name}.c failed:\n${err.stderr || err.message}`);
    }
  }
}

function loadLibrary() {
  try {
    state.lib = require(state.libPath);
    // The addon the library loaded (dist/native.js), for the "called directly" row.
    state.addon = require(path.join(path.dirname(state.libPath), 'core', 'addon.js')).native;
  } catch (err) {
    state.libError = String(err.message).split('\n')[0];
  }
}

function loopDeviceNames() {
  return fs.readdirSync('/sys/block').filter((n) => /^loop\d+$/.test(n));
}

function countLoopDevices() {
  return loopDeviceNames().length;
}

const devicesBefore = new Set(loopDeviceNames());

/**
 * Leaves the machine as the bench found it: GET_FREE creates devices when none is free (the
 * 256-device list rows make ~250), so remove the ones that appeared during the run and are
 * unbound now (LOOP_CTL_REMOVE refuses a device that is bound or open: EBUSY).
 */
function removeCreatedDevices() {
  if (!state.lib?.removeDeviceSync) return 0;
  let removed = 0;
  for (const name of loopDeviceNames()) {
    if (devicesBefore.has(name) || fs.existsSync(`/sys/block/${name}/loop/backing_file`)) continue;
    try {
      state.lib.removeDeviceSync(Number(name.slice(4)), { retry: false });
      removed++;
    } catch {
      // in use by someone else right now: theirs to keep
    }
  }
  return removed;
}

function machineInfo() {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = (/^model name\s*:\s*(.*)$/m.exec(cpuinfo) || [])[1] || os.cpus()[0]?.model || 'unknown';
  const cores = (cpuinfo.match(/^processor\s*:/gm) || []).length || os.cpus().length;
  return {
    date: new Date().toISOString(),
    kernel: os.release(),
    cpu: model.trim(),
    cores,
    node: process.version,
    mode: flags.quick ? 'quick' : 'full',
    sections: selected,
    loopdev: state.lib ? { loaded: true, path: state.libPath } : { loaded: false, path: state.libPath, error: state.libError },
    config: CONFIG,
    loop_devices_before: countLoopDevices(),
  };
}

// ---------------------------------------------------------------- ratios, targets, output

function computeRatios() {
  for (const row of rows) {
    if (row.median_us === null) continue;
    const ref = rows.find((r) => r.group === row.group && r.reference && r.median_us !== null);
    if (!ref) continue;
    row.ratio = row.kind === 'throughput' ? row.throughput_per_s / ref.throughput_per_s : row.median_us / ref.median_us;
  }
  // Second ratios and lock costs go first in the notes: they are what these rows are for.
  for (const [row, { compareTo, lockCostOf }] of comparisons) {
    if (row.median_us === null) continue;
    const extra = [];
    for (const { id, label } of compareTo) {
      const other = rows.find((r) => r.id === id && r.median_us !== null);
      if (!other) continue;
      const ratio = row.median_us / other.median_us;
      row.ratios_vs = { ...row.ratios_vs, [id]: ratio };
      extra.push(`${ratio.toFixed(2)}x vs ${label}`);
    }
    const locked = lockCostOf && rows.find((r) => r.id === lockCostOf && r.median_us !== null);
    if (locked) {
      row.control_lock_cost_us = locked.median_us - row.median_us;
      const sign = row.control_lock_cost_us >= 0 ? '+' : '';
      extra.push(`control lock by difference: ${sign}${row.control_lock_cost_us.toFixed(1)} µs ('${locked.contender}' median - this)`);
    }
    if (extra.length) row.notes = [...extra, row.notes].filter(Boolean).join('; ');
  }
}

function evaluateTargets() {
  const targets = [];
  const byId = (id) => rows.find((r) => r.id === id && r.median_us !== null);
  const add = (rowId, description, value, met, display, shown) => {
    targets.push({ row: rowId, description, value, shown: shown ?? (Number.isInteger(value) ? String(value) : value.toFixed(2)), met });
    const row = rows.find((r) => r.id === rowId);
    if (row) row.targets.push(`${display} ${met ? 'MET' : 'MISSED'}`);
  };
  // The cycle targets are against the minimal floor; beside each, the ratio against the floor
  // that takes loopdev's own steps (sync) or runs them on a worker thread (async).
  const versus = (row, id, label) => {
    const ratio = row.ratios_vs?.[id];
    return ratio === undefined ? { shown: row.ratio.toFixed(2) } : { shown: `${row.ratio.toFixed(2)} (${ratio.toFixed(2)}x ${label})`, vs: { row: id, ratio } };
  };
  for (const v of VARIANTS) {
    const sync = byId(`cycle.${v.key}.loopdev-sync`);
    const async = byId(`cycle.${v.key}.loopdev-async`);
    if (sync && sync.ratio !== null) {
      const { shown, vs } = versus(sync, `cycle.${v.key}.c-same-steps`, "loopdev's steps in C");
      add(sync.id, `sync cycle (${v.key}) <= 1.15x C floor`, sync.ratio, sync.ratio <= 1.15, '<=1.15x', shown);
      if (vs) targets[targets.length - 1].versus = vs;
    }
    if (async && async.ratio !== null) {
      const { shown, vs } = versus(async, `cycle.${v.key}.c-threaded`, 'C with each step on a worker thread');
      add(async.id, `async cycle (${v.key}) <= 1.5x C floor`, async.ratio, async.ratio <= 1.5, '<=1.5x', shown);
      if (vs) targets[targets.length - 1].versus = vs;
    }
    const losetup = byId(`cycle.${v.key}.losetup`);
    for (const row of [sync, async]) {
      if (!row || !losetup) continue;
      const speedup = losetup.median_us / row.median_us;
      add(row.id, `${row.contender} cycle (${v.key}) >= 40x faster than losetup`, speedup, speedup >= 40, `>=40x vs losetup (${speedup.toFixed(0)}x)`);
    }
  }
  const losetupList = byId('list.losetup');
  for (const id of ['list.loopdev-sync', 'list.loopdev-async']) {
    const row = byId(id);
    if (!row) continue;
    if (losetupList) {
      const speedup = losetupList.median_us / row.median_us;
      add(id, `${row.contender} (256 bound) >= 5x faster than losetup --list --json`, speedup, speedup >= 5, `>=5x vs losetup (${speedup.toFixed(1)}x)`);
    }
    if (row.ratio !== null) add(id, `${row.contender} (256 bound) <= 1.3x the ioctl C floor`, row.ratio, row.ratio <= 1.3, '<=1.3x');
  }
  const contention = rows.find((r) => r.group === 'contention' && r.id.startsWith('contention.loopdev') && r.median_us !== null);
  if (contention && contention.ratio !== null) {
    add(contention.id, 'contention aggregate >= 0.8x single-process C floor', contention.ratio, contention.ratio >= 0.8, '>=0.8x');
    add(contention.id, 'contention: zero failures', contention.failures, contention.failures === 0, `0 failures (${contention.failures})`);
  }
  const eld = byId('eld.loopdev-async');
  if (eld) add(eld.id, 'event loop delay p99 < 5 ms', eld.eld_p99_ms, eld.eld_p99_ms < 5, `p99 <5 ms (${eld.eld_p99_ms.toFixed(2)})`);
  for (const variant of MEMORY_VARIANTS) {
    const mem = byId(variant.id);
    if (!mem) continue;
    const over = `over ${mem.cycles} cycles${mem.cycles < 10000 ? ' (target is stated for 10,000)' : ''}, ${variant.label}`;
    const growth = mem.rss_growth_bytes / MIB;
    add(mem.id, `RSS growth < 5 MB ${over}`, mem.rss_growth_bytes, mem.rss_growth_bytes < 5 * MIB, `RSS +<5 MB (${growth.toFixed(1)})`, `${growth.toFixed(2)} MB`);
    add(mem.id, `0 fd growth ${over}`, mem.fd_growth, mem.fd_growth === 0, `0 fds (${mem.fd_growth})`);
  }
  return targets;
}

function pad(text, width, right) {
  const s = String(text);
  if (s.length >= width) return s;
  return right ? s.padStart(width) : s.padEnd(width);
}

function formatNumber(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '-';
  if (v >= 10000) return Math.round(v).toLocaleString('en-US');
  if (v >= 100) return v.toFixed(0);
  return v.toFixed(1);
}

function renderTable(result) {
  const m = result.meta;
  const lines = [];
  lines.push(`loopdev benchmark - ${m.date} - ${m.mode} mode`);
  if (result.interrupted) lines.push(`INTERRUPTED (${result.interrupted}): partial results`);
  const lib = libName(m.loopdev.path);
  lines.push(`kernel ${m.kernel} | CPU ${m.cpu} | ${m.cores} cores | Node ${m.node} | loopdev: ${m.loopdev.loaded ? `${lib} loaded` : `${lib} NOT loaded (${m.loopdev.error})`}`);
  lines.push('Each median / p95 is per operation in microseconds over "iters" measured iterations; "+w" warm-up iterations ran first and are not counted.');
  lines.push(
    `Contenders of a group alternate in ${m.config.blocks} blocks (${m.config.cycle.blocks} in the attach+detach groups; each block warms up, then measures; the order is shuffled per block), except contention, event loop and memory.`,
  );
  lines.push('ratio = median / the reference (ref) median of the group; in the contention group, aggregate cycles/s / the reference\'s (higher is better).');
  lines.push('Cycle groups: "C floor, loopdev\'s steps" makes exactly the syscalls loopdev makes; "each step on a worker thread" runs them off the main thread');
  lines.push('(condvar-woken worker, eventfd + epoll back, twice per cycle), as an async API must; "loopdev\'s addon called directly" is Node calling the');
  lines.push('addon\'s two native steps with no TypeScript layer (", async": through their Promise forms); "2 Node thread-pool round trips" is what an');
  lines.push('async cycle pays to keep the event loop free with no loop work in the trips (a trip around real work costs more on a VM whose idle vCPUs');
  lines.push('halt). "Nx vs ..." in the notes = median / that row\'s median.');
  lines.push('');
  const widths = [50, 14, 10, 10, 8];
  const header = [pad('contender', widths[0]), pad('iters (+w)', widths[1], true), pad('median µs', widths[2], true), pad('p95 µs', widths[3], true), pad('ratio', widths[4], true), '  target / notes'];
  let group = null;
  for (const row of result.rows) {
    if (row.group !== group) {
      group = row.group;
      lines.push('');
      lines.push(`== ${row.operation}`);
      lines.push(`  ${header.join(' ')}`);
    }
    const iters = row.iterations ? `${row.iterations} (+${row.warmup})` : '-';
    let status;
    if (row.skipped) status = `SKIPPED: ${row.skipped}`;
    else if (row.error) status = `ERROR: ${row.error}`;
    else if (row.interrupted) status = 'INTERRUPTED';
    else status = [row.reference ? 'ref' : null, ...row.targets, row.notes].filter(Boolean).join('; ');
    const ratio = row.ratio === null ? '-' : `${row.ratio.toFixed(2)}x`;
    lines.push(`  ${[pad(row.contender, widths[0]), pad(iters, widths[1], true), pad(formatNumber(row.median_us), widths[2], true), pad(formatNumber(row.p95_us), widths[3], true), pad(ratio, widths[4], true)].join(' ')}  ${status}`);
  }
  lines.push('');
  lines.push('Targets (informational; a miss does not fail the bench):');
  if (!result.targets.length) lines.push('  (none evaluated: loopdev not loaded or its rows did not run)');
  for (const t of result.targets) {
    lines.push(`  ${pad(t.met ? 'MET' : 'MISSED', 7)} ${t.description}: ${t.shown}`);
  }
  if (result.section_errors.length) {
    lines.push('');
    for (const e of result.section_errors) lines.push(`Section ${e.section} ERROR: ${e.error}`);
  }
  lines.push('');
  lines.push(`Loop devices on the machine: ${m.loop_devices_before} before, ${m.loop_devices_after} after (GET_FREE created devices as needed; ${m.loop_devices_removed} unbound ones that appeared during the run were removed).`);
  lines.push(cleanupLine(result.cleanup));
  return lines.join('\n');
}

async function main() {
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, onSignal);
  compileFloors();
  loadLibrary();
  const meta = machineInfo();
  const base = flags.tmpdir ? path.resolve(flags.tmpdir) : os.tmpdir();
  // realpath: sysfs shows the resolved path of the backing file
  state.tmpdir = fs.mkdtempSync(path.join(fs.realpathSync(base), 'loopdev-bench-'));
  log(`loopdev bench (${meta.mode}): images in ${state.tmpdir}; loopdev ${state.lib ? 'loaded' : `not loaded (${state.libError})`}`);
  let aborted = null;
  try {
    for (const section of selected) {
      try {
        await SECTION_FUNCTIONS[section]();
      } catch (err) {
        if (err instanceof Aborted || state.aborted) {
          aborted = err;
          break;
        }
        sectionErrors.push({ section, error: String((err && err.stack) || err) });
        log(`section ${section} failed: ${err && err.message}`);
      }
    }
  } finally {
    finalCleanup();
  }
  meta.loop_devices_removed = removeCreatedDevices();
  meta.loop_devices_after = countLoopDevices();
  computeRatios();
  const targets = evaluateTargets();
  const result = {
    meta,
    rows: rows.map((r) => ({ ...r })),
    targets,
    section_errors: sectionErrors,
    cleanup: state.cleanup,
    interrupted: aborted ? String(aborted.message) : null,
  };
  fs.mkdirSync(OUT_DIR, { recursive: true });
  fs.writeFileSync(path.join(OUT_DIR, 'latest.json'), `${JSON.stringify(result, null, 2)}\n`);
  if (flags.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else process.stdout.write(`${renderTable(result)}\n`);
  if (aborted) return 130;
  const failed = sectionErrors.length > 0 || rows.some((r) => r.error) || !state.cleanup.ok;
  return failed ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`bench: ${(err && err.stack) || err}\n`);
    const c = finalCleanup();
    if (c.images.length) process.stderr.write(`${cleanupLine(c)}\n`);
    process.exitCode = 1;
  },
);
