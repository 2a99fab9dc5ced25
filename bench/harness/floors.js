'use strict';
// The C floors (bench/c/*.c): compiled into bench/bin at start, then run as child processes
// that time their own iterations and print one JSON object.

const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const { checkAbort, execFileP, track } = require('./state');

const BENCH_DIR = path.resolve(__dirname, '..');
const BIN_DIR = path.join(BENCH_DIR, 'bin');
const FLOORS = ['cycle', 'list'];

const floorPath = (name) => path.join(BIN_DIR, name);

function compileFloors() {
  fs.mkdirSync(BIN_DIR, { recursive: true });
  for (const name of FLOORS) {
    const extra = name === 'cycle' ? ['-pthread'] : []; // cycle --threaded
    try {
      execFileSync('cc', ['-O2', '-Wall', '-Werror', ...extra, '-o', floorPath(name), path.join(BENCH_DIR, 'c', `${name}.c`)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      throw new Error(`compiling bench/c/${name}.c failed:\n${err.stderr || err.message}`);
    }
  }
}

async function runC(name, args) {
  checkAbort();
  const promise = execFileP(floorPath(name), args.map(String), { maxBuffer: 1 << 30 });
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

/** run() of interleaved() for a C floor. */
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

module.exports = { BENCH_DIR, compileFloors, floorPath, runC, cRun };
