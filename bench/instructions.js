'use strict';
// User-space instructions per sync attach+detach cycle, counted by valgrind --tool=callgrind in
// one process: the loop marks every --segment cycles (a call callgrind sees, --dump-before), so
// each segment's count is its own, without the process's start-up, whose count differs from one
// process to the next by millions of instructions (hash seeds, snapshot, OpenSSL). The first
// segment (start-up, loading, first JIT tiers) is reported apart. Load on the machine does not
// change a count. Writes bench/out/instructions.json; judges nothing.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const { execFileP, log, state, track } = require('./harness/state');
const { ROOT, addonMissing, libName, loadLibrary } = require('./harness/library');
const { compileFloors, floorPath } = require('./harness/floors');
const { cleanupLine, cleanupOnSignals, finalCleanup, makeImage, makeImageDir } = require('./harness/images');

const USAGE = `usage: node bench/instructions.js [--lib PATH] [--cycles N] [--segment N] [--tmpdir DIR] [--json]
  --lib      the library to count (default: dist/index.js)
  --cycles   cycles per process (default: 14000)
  --segment  cycles per counted segment (default: 2000); --cycles must be a multiple of it
  --tmpdir   directory in which to create the image directory (default: os.tmpdir())
  --json     print the JSON (always written to bench/out/instructions.json) instead of the table`;

const LOOP = path.join(__dirname, 'instructions-loop.js');

// What each contender runs: `n` cycles, marking every `segment` (before cycle 0, segment, ...,
// and after the last) with a call to `mark`, the function callgrind dumps its counts before.
const NODE_MARK = 'uv_os_getppid'; // process.ppid, which nothing else in the loop reads
const C_MARK = 'cycle_mark';
const node = (variant) => (lib, image, n, segment) => [process.execPath, LOOP, lib, image, n, segment, variant];
const floor = (...extra) => (lib, image, n, segment) => [floorPath('cycle'), image, '--iterations', n, '--warmup', 0, '--untimed', '--mark-every', segment, ...extra];
const CONTENDERS = [
  { key: 'loopdev-plain', label: 'loopdev detachSync(attachSync(image))', mark: NODE_MARK, command: node('plain') },
  { key: 'loopdev-hold', label: 'loopdev attachSync(image, { hold: true }).closeSync()', mark: NODE_MARK, command: node('hold') },
  { key: 'addon-direct', label: "loopdev's addon called directly (no TS layer)", needsAddon: true, mark: NODE_MARK, command: node('addon') },
  { key: 'c', label: 'C floor (raw ioctls)', mark: C_MARK, command: floor() },
  { key: 'c-same-steps', label: "C floor, loopdev's steps", mark: C_MARK, command: floor('--same-steps') },
];

function parseOptions() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        lib: { type: 'string' },
        cycles: { type: 'string', default: '14000' },
        segment: { type: 'string', default: '2000' },
        tmpdir: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    console.error(`${err.message}\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const cycles = Number(values.cycles);
  const segment = Number(values.segment);
  if (!Number.isInteger(segment) || segment <= 0 || !Number.isInteger(cycles) || cycles < 3 * segment || cycles % segment !== 0) {
    console.error(`--cycles must be a multiple of --segment, at least three segments\n${USAGE}`);
    process.exit(2);
  }
  return { ...values, lib: values.lib ? path.resolve(values.lib) : path.join(ROOT, 'dist', 'index.js'), cycles, segment };
}

/**
 * The instructions callgrind counted in each segment of one run of `command` (every thread of
 * the process): dump k holds what ran since dump k-1, so dump 1 is the start-up before the first
 * mark, dumps 2.. the segments, and the final one (exit) is left out.
 */
async function countSegments(command, mark, segments, outFile) {
  const promise = execFileP('valgrind', ['--tool=callgrind', `--dump-before=${mark}`, `--callgrind-out-file=${outFile}`, ...command.map(String)], { maxBuffer: 1 << 26 });
  track(promise.child);
  try {
    await promise;
  } catch (err) {
    throw new Error(`valgrind ${command.join(' ')}: ${String(err.stderr || err.message).trim().split('\n').slice(-5).join('\n')}`);
  }
  const files = Array.from({ length: segments + 1 }, (_, k) => `${outFile}.${k + 1}`);
  try {
    return files.map((file) => {
      const summary = /^(?:summary|totals): (\d+)/m.exec(fs.readFileSync(file, 'utf8'));
      if (!summary) throw new Error(`no instruction total in ${file}`);
      return Number(summary[1]);
    });
  } finally {
    for (const file of fs.readdirSync(path.dirname(outFile))) {
      if (file.startsWith(path.basename(outFile))) fs.rmSync(path.join(path.dirname(outFile), file), { force: true });
    }
  }
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

function renderTable(result) {
  const { segment, cycles } = result;
  const headers = ['first', `${segment}-${2 * segment}`, `median ${2 * segment}-${cycles}`];
  const width = 56;
  const cell = (text, w = 20) => String(text).padStart(w);
  const count = (v) => Math.round(v).toLocaleString('en-US');
  const lines = [
    `User-space instructions per sync attach+detach cycle - ${result.meta.date}`,
    `valgrind --tool=callgrind, segments of ${segment} cycles in one process of ${cycles} | kernel ${result.meta.kernel} | Node ${result.meta.node} | ${libName(result.meta.lib)}`,
    `"first": cycles 0-${segment}, with the JIT's first tiers; start-up before them is not counted`,
    '',
    `${'contender'.padEnd(width)}${headers.map((h) => cell(h)).join('')}`,
  ];
  for (const row of result.rows) {
    const cells = row.skipped ? `  skipped: ${row.skipped}` : [row.per_cycle[0], row.per_cycle[1], row.warm].map((v) => cell(count(v))).join('');
    lines.push(`${row.label.padEnd(width)}${cells}`);
  }
  lines.push('', `Per segment, instructions per cycle:`);
  for (const row of result.rows.filter((r) => !r.skipped)) lines.push(`${row.label.padEnd(width)}${row.per_cycle.map(count).join(' ')}`);
  return lines.join('\n');
}

async function main() {
  const options = parseOptions();
  state.quiet = options.json;
  cleanupOnSignals();
  compileFloors();
  const dir = makeImageDir(options.tmpdir && path.resolve(options.tmpdir));
  const image = makeImage('instructions');
  const segments = options.cycles / options.segment;
  const rows = [];
  // Another build may have no addon module of this shape: its row says so instead.
  const noAddon = addonMissing(loadLibrary(options.lib, { withAddon: true }));
  try {
    for (const c of CONTENDERS) {
      if (c.needsAddon && noAddon) {
        rows.push({ key: c.key, label: c.label, skipped: noAddon });
        continue;
      }
      log(`${c.label}: ${options.cycles} cycles under callgrind`);
      const dumps = await countSegments(c.command(options.lib, image, options.cycles, options.segment), c.mark, segments, path.join(dir, `callgrind.${c.key}`));
      const per_cycle = dumps.slice(1).map((total) => total / options.segment);
      rows.push({ key: c.key, label: c.label, startup: dumps[0], per_cycle, warm: median(per_cycle.slice(2)) });
    }
  } finally {
    const cleanup = finalCleanup();
    log(cleanupLine(cleanup));
    if (!cleanup.ok) process.exitCode = 1;
  }
  const result = { meta: { date: new Date().toISOString(), kernel: os.release(), node: process.version, lib: options.lib }, cycles: options.cycles, segment: options.segment, rows };
  const outDir = path.join(__dirname, 'out');
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'instructions.json'), `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${options.json ? JSON.stringify(result, null, 2) : renderTable(result)}\n`);
}

main().catch((err) => {
  process.stderr.write(`instructions: ${(err && err.stack) || err}\n`);
  const c = finalCleanup();
  process.stderr.write(`${cleanupLine(c)}\n`);
  process.exitCode = 1;
});
