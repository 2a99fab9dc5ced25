'use strict';
// attach+detach cycles, one group per variant: the C floors, loopdev's sync and async APIs,
// its addon called directly, bare thread-pool trips and losetup, in interleaved blocks.

const fs = require('node:fs');

const { log, spawnTracked, state } = require('../harness/state');
const { libraries, addonCycles, addonMissing, cycleSync, cycleAsync } = require('../harness/library');
const { measureSync, measureAsync, retryCounter, retryNote } = require('../harness/measure');
const { interleaved } = require('../harness/blocks');
const { cRun } = require('../harness/floors');
const { MIB, makeImage, cleanupImages } = require('../harness/images');

const OFFSET = 1 * MIB;
const SIZE_LIMIT = 32 * MIB;

// vs: also measured with the --vs library
const VARIANTS = [
  { key: 'plain', label: 'plain', cFlags: [], libOptions: {}, losetupFlags: [], vs: true },
  { key: 'hold', label: 'hold (AUTOCLEAR, released by closing the fd)', cFlags: ['--hold'], libOptions: { hold: true }, losetupFlags: null, vs: true },
  { key: 'partscan', label: 'partscan', cFlags: ['--partscan'], libOptions: { partscan: true }, losetupFlags: ['--partscan'], vs: true },
  {
    key: 'offset',
    label: 'offset 1 MiB + sizeLimit 32 MiB',
    cFlags: ['--offset', String(OFFSET), '--sizelimit', String(SIZE_LIMIT)],
    libOptions: { offset: OFFSET, sizeLimit: SIZE_LIMIT },
    losetupFlags: ['--offset', String(OFFSET), '--sizelimit', String(SIZE_LIMIT)],
  },
];

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

/** Notes of the C floors that take loopdev's steps: the lock timed in place, retries, deferred releases. */
function sameStepsNotes(row) {
  const lock = row.control_lock_median_us !== undefined ? `flock(/dev/loop-control) EX+UN timed in place: ${row.control_lock_median_us.toFixed(1)} µs; ` : '';
  const deferred = row.not_released ? `; ${row.not_released} detaches not released at once (loopdev would wait for those)` : '';
  return `${lock}${retryNote(row.retries, row.iterations)}${deferred}`;
}

/** The rows of one variant's group. */
function variantSpecs(v, image) {
  const { iterations, warmup } = state.config.cycle;
  const lw = state.config.losetupCycle;
  const direct = v.key === 'plain' && !addonMissing(libraries.current) ? addonCycles(libraries.current.addon, image) : null;
  const group = `cycle.${v.key}`;
  const base = { group, operation: `attach+detach: ${v.label}`, iterations, warmup };
  const floorArgs = [image, ...v.cFlags];
  const sameSteps = { id: `${group}.c-same-steps`, label: "loopdev's steps in C" };
  const sameStepsNoLock = { id: `${group}.c-same-steps-no-lock`, label: "loopdev's steps in C without the control lock" };
  const threaded = { id: `${group}.c-threaded`, label: 'C with each step on a worker thread' };
  const syncSpec = (id, contender, libOptions, compareTo, library = libraries.current) => ({
    ...base,
    id,
    contender,
    needs: ['attachSync'],
    library,
    compareTo,
    run: async (n, w) => {
      const c = retryCounter();
      const options = { ...libOptions, onRetry: c.onRetry };
      const timings = await measureSync(n, w, () => cycleSync(library.module, image, options), c);
      return { timings_ns: timings, retries: c.retries };
    },
  });
  const asyncSpec = (id, contender, compareTo, library = libraries.current) => ({
    ...base,
    id,
    contender,
    needs: ['attach'],
    library,
    compareTo,
    run: async (n, w) => {
      const c = retryCounter();
      const options = { ...v.libOptions, onRetry: c.onRetry };
      const timings = await measureAsync(n, w, () => cycleAsync(library.module, image, options), c);
      return { timings_ns: timings, retries: c.retries };
    },
  });
  const vs = libraries.vs && v.vs ? libraries.vs : null;
  const vsSync = { id: `${group}.vs-loopdev-sync`, label: 'the --vs library (new/old)' };
  const vsAsync = { id: `${group}.vs-loopdev-async`, label: 'the --vs library (new/old)' };
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
    syncSpec(`${group}.loopdev-sync`, 'loopdev sync', v.libOptions, vs ? [sameSteps, vsSync] : [sameSteps]),
  );
  if (vs) specs.push({ ...syncSpec(vsSync.id, '--vs library: loopdev sync', v.libOptions, [sameSteps], vs), oldFormOf: `${group}.loopdev-sync` });
  if (v.key === 'plain') {
    // Where the library's time goes: the same native steps with no TypeScript layer between.
    specs.push({
      ...base,
      id: `${group}.addon-direct`,
      contender: "loopdev's addon called directly (no TS layer)",
      unavailable: addonMissing(libraries.current),
      compareTo: [sameSteps],
      run: async (n, w) => ({ timings_ns: await measureSync(n, w, direct.sync) }),
    });
  }
  if (v.key === 'plain') {
    // Passing any explicit option costs loopdev's JS some µs, so the lock's cost is the
    // difference of two rows that pass the same keys, not one against 'loopdev sync'.
    specs.push(
      syncSpec(`${group}.loopdev-sync-lock`, 'loopdev sync, lockControl: true (explicit)', { ...v.libOptions, lockControl: true }, [sameSteps]),
      {
        ...syncSpec(`${group}.loopdev-sync-no-lock`, 'loopdev sync, lockControl: false', { ...v.libOptions, lockControl: false }, [sameStepsNoLock]),
        lockCostOf: `${group}.loopdev-sync-lock`,
      },
    );
  }
  const addonAsync = { id: `${group}.addon-direct-async`, label: "loopdev's addon's Promise forms called directly" };
  const asyncCompared = v.key === 'plain' ? [threaded, addonAsync] : [threaded];
  specs.push(asyncSpec(`${group}.loopdev-async`, 'loopdev async', vs ? [...asyncCompared, vsAsync] : asyncCompared));
  if (vs) specs.push({ ...asyncSpec(vsAsync.id, '--vs library: loopdev async', [threaded], vs), oldFormOf: `${group}.loopdev-async` });
  if (v.key === 'plain') {
    // Where the async library's time goes: what is left is the thread pool and the machine.
    specs.push({
      ...base,
      id: addonAsync.id,
      contender: "loopdev's addon called directly, async",
      unavailable: addonMissing(libraries.current),
      compareTo: [threaded],
      run: async (n, w) => ({ timings_ns: await measureAsync(n, w, direct.async) }),
    });
  }
  if (v.key === 'plain') {
    // What keeping the event loop free costs before any loop work: two empty thread-pool trips.
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
  return specs;
}

async function sectionCycle() {
  const image = makeImage('cycle');
  for (const v of VARIANTS) {
    log(`attach+detach: ${v.label}`);
    try {
      await interleaved(variantSpecs(v, image), state.config.cycle.blocks);
    } finally {
      await cleanupImages([image]);
    }
  }
}

module.exports = sectionCycle;
