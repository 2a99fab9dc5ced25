'use strict';
// loopdev benchmark: `npm run bench [-- --quick] [-- --json]` (--help for every option).
//
// Compares loopdev (dist/index.js) with C floors (bench/c/*.c, raw ioctls, compiled here at
// start) and with spawning losetup, prints one table and writes bench/out/latest.json. Every
// figure is a median / p95 over the stated number of measured iterations, warm-ups not counted.
// Targets (bench/targets.js) are informational: a miss never fails the run.
//
// Images are sparse files in a fresh directory under os.tmpdir() (or --tmpdir); whatever is
// still bound to one of them at the end (also after a signal or an error) is detached, and only that.
//
// Exit code: 0 when every contender ran (or was skipped because dist/index.js is missing),
// 1 when the harness or a contender errored or a device was left bound, 130 on a signal.

const path = require('node:path');

const { parseOptions } = require('./harness/options');
const { Aborted, log, state } = require('./harness/state');
const { ROOT, libraries, libName, loadLibrary } = require('./harness/library');
const { compileFloors } = require('./harness/floors');
const { cleanupLine, cleanupOnSignals, countLoopDevices, finalCleanup, makeImageDir, removeCreatedDevices } = require('./harness/images');
const { rows, measured, computeRatios, newOverOld } = require('./harness/rows');
const { machineInfo, writeResult } = require('./harness/report');
const { evaluateTargets } = require('./targets');

const SECTIONS = {
  cycle: require('./sections/cycle'),
  script: require('./sections/script'),
  concurrent: require('./sections/concurrent'),
  contention: require('./sections/contention'),
  list: require('./sections/list'),
  eld: require('./sections/eld'),
  memory: require('./sections/memory'),
};

async function main() {
  const { flags, sections, config } = parseOptions(process.argv.slice(2));
  state.config = config;
  state.quiet = flags.json;
  cleanupOnSignals();
  compileFloors();
  libraries.current = loadLibrary(flags.lib ? path.resolve(flags.lib) : path.join(ROOT, 'dist', 'index.js'), { withAddon: true });
  if (flags.vs) libraries.vs = loadLibrary(path.resolve(flags.vs));
  const meta = machineInfo({ mode: flags.quick ? 'quick' : 'full', sections, config, library: libraries.current });
  makeImageDir(flags.tmpdir && path.resolve(flags.tmpdir));
  log(`loopdev bench (${meta.mode}): images in ${state.tmpdir}; loopdev ${libraries.current.module ? 'loaded' : `not loaded (${libraries.current.error})`}`);
  const sectionErrors = [];
  let aborted = null;
  try {
    for (const section of sections) {
      try {
        await SECTIONS[section]();
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
  meta.loop_devices_removed = removeCreatedDevices(libraries.current.module);
  meta.loop_devices_after = countLoopDevices();
  computeRatios();
  const targets = evaluateTargets(measured);
  const result = {
    meta,
    rows: rows.map((r) => ({ ...r })),
    targets,
    section_errors: sectionErrors,
    cleanup: state.cleanup,
    interrupted: aborted ? String(aborted.message) : null,
    vs: libraries.vs && { path: libraries.vs.path, loaded: Boolean(libraries.vs.module), error: libraries.vs.error, rows: newOverOld() },
  };
  writeResult(result, { json: flags.json, libName });
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
