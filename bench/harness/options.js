'use strict';
// The command line and the iteration counts it selects.

const { parseArgs } = require('node:util');

const SECTIONS = ['cycle', 'script', 'concurrent', 'contention', 'list', 'eld', 'memory'];

const USAGE = `usage: node bench/run.js [--quick] [--json] [--only ${SECTIONS.join(',')}] [--tmpdir DIR] [--lib PATH] [--vs PATH]
  --quick    small iteration counts (well under a minute)
  --json     print only the JSON result on stdout (it is always written to bench/out/latest.json)
  --only     comma-separated sections to run (default: all)
  --tmpdir   directory in which to create the bench's own image directory (default: os.tmpdir())
  --lib      the library to benchmark (default: dist/index.js)
  --vs       a second library (another build's dist/index.js): its sync and async cycles (plain,
             hold, partscan) run in the same blocks as --lib's, and the table shows new/old`;

const QUICK = {
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
  script: { cycles: 500, runs: 1, warmup: 1000 },
};

const FULL = {
  blocks: 5,
  // Cycle rows differ by a few µs and this machine drifts by more over seconds: 100
  // iterations a block spread the drift evenly over the contenders.
  cycle: { iterations: 2000, warmup: 200, blocks: 20 },
  losetupCycle: { iterations: 200, warmup: 10 },
  concurrent: { rounds: 30, warmup: 3, counts: [16, 64] },
  contention: { procs: 4, durationMs: 5000 },
  listBound: 256,
  list: { iterations: 200, warmup: 10 },
  losetupList: { iterations: 50, warmup: 5 },
  eld: { cycles: 1000, inFlight: 8, warmup: 16, idleMs: 300 },
  memory: { cycles: 10000, warmup: 2000 },
  script: { cycles: 2000, runs: 5, warmup: 5000 },
};

/** Parses argv; prints the usage and exits on --help or a bad option. */
function parseOptions(argv) {
  let flags;
  try {
    ({ values: flags } = parseArgs({
      args: argv,
      options: {
        quick: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        only: { type: 'string' },
        tmpdir: { type: 'string' },
        lib: { type: 'string' },
        vs: { type: 'string' },
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
  const sections = flags.only ? flags.only.split(',').map((s) => s.trim()) : SECTIONS;
  for (const s of sections) {
    if (!SECTIONS.includes(s)) {
      console.error(`unknown section '${s}'\n${USAGE}`);
      process.exit(2);
    }
  }
  return { flags, sections, config: flags.quick ? QUICK : FULL };
}

module.exports = { SECTIONS, parseOptions };
