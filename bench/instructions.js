'use strict';
// User-space instructions per sync attach+detach cycle, counted by valgrind --tool=callgrind as
// (I(N2) - I(N1)) / (N2 - N1) over two fresh processes making N1 and N2 cycles, so that what a
// process does once (start-up, loading, most JIT warm-up) cancels. Load on the machine does not
// change a count. Writes bench/out/instructions.json; judges nothing.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const { execFileP, log, state, track } = require('./harness/state');
const { ROOT, addonMissing, libName, loadLibrary } = require('./harness/library');
const { compileFloors, floorPath } = require('./harness/floors');
const { cleanupLine, cleanupOnSignals, finalCleanup, makeImage, makeImageDir } = require('./harness/images');

const USAGE = `usage: node bench/instructions.js [--lib PATH] [--pairs N1:N2,...] [--tmpdir DIR] [--json]
  --lib      the library to count (default: dist/index.js)
  --pairs    the cycle counts whose differences are taken (default: 2000:4000,4000:14000)
  --tmpdir   directory in which to create the image directory (default: os.tmpdir())
  --json     print the JSON (always written to bench/out/instructions.json) instead of the table`;

const LOOP = path.join(__dirname, 'instructions-loop.js');

/** What each contender runs for n cycles. */
const CONTENDERS = [
  { key: 'loopdev-plain', label: 'loopdev detachSync(attachSync(image))', command: (lib, image, n) => [process.execPath, LOOP, lib, image, n, 'plain'] },
  { key: 'loopdev-hold', label: 'loopdev attachSync(image, { hold: true }).closeSync()', command: (lib, image, n) => [process.execPath, LOOP, lib, image, n, 'hold'] },
  { key: 'addon-direct', label: "loopdev's addon called directly (no TS layer)", needsAddon: true, command: (lib, image, n) => [process.execPath, LOOP, lib, image, n, 'addon'] },
  { key: 'c', label: 'C floor (raw ioctls)', command: (lib, image, n) => [floorPath('cycle'), image, '--iterations', n, '--warmup', 0, '--untimed'] },
  { key: 'c-same-steps', label: "C floor, loopdev's steps", command: (lib, image, n) => [floorPath('cycle'), image, '--iterations', n, '--warmup', 0, '--untimed', '--same-steps'] },
];

function parseOptions() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        lib: { type: 'string' },
        pairs: { type: 'string', default: '2000:4000,4000:14000' },
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
  const pairs = values.pairs.split(',').map((pair) => pair.split(':').map(Number));
  if (!pairs.every((p) => p.length === 2 && p.every(Number.isInteger) && p[0] > 0 && p[1] > p[0])) {
    console.error(`--pairs must be N1:N2 with 0 < N1 < N2, comma-separated\n${USAGE}`);
    process.exit(2);
  }
  return { ...values, lib: values.lib ? path.resolve(values.lib) : path.join(ROOT, 'dist', 'index.js'), pairs };
}

/** The instructions callgrind counted in one run of `command` (every thread of the process). */
async function countInstructions(command, outFile) {
  const promise = execFileP('valgrind', ['--tool=callgrind', `--callgrind-out-file=${outFile}`, ...command.map(String)], { maxBuffer: 1 << 26 });
  track(promise.child);
  try {
    await promise;
  } catch (err) {
    throw new Error(`valgrind ${command.join(' ')}: ${String(err.stderr || err.message).trim().split('\n').slice(-5).join('\n')}`);
  }
  const text = fs.readFileSync(outFile, 'utf8');
  fs.rmSync(outFile, { force: true });
  const summary = /^(?:summary|totals): (\d+)/m.exec(text);
  if (!summary) throw new Error(`no instruction total in ${outFile}`);
  return Number(summary[1]);
}

function renderTable(result) {
  const pairs = result.pairs.map(([n1, n2]) => `${n1} -> ${n2}`);
  const counts = result.counts.map((n) => `N=${n}`);
  const width = 56;
  const cell = (text, w = 14) => String(text).padStart(w);
  const lines = [
    `User-space instructions per sync attach+detach cycle - ${result.meta.date}`,
    `valgrind --tool=callgrind, (I(N2) - I(N1)) / (N2 - N1) over two fresh processes | kernel ${result.meta.kernel} | Node ${result.meta.node} | ${libName(result.meta.lib)}`,
    '',
    `${'contender'.padEnd(width)}${pairs.map((p) => cell(p)).join('')}`,
  ];
  for (const row of result.rows) {
    const cells = row.skipped ? `  skipped: ${row.skipped}` : row.per_cycle.map((v) => cell(Math.round(v).toLocaleString('en-US'))).join('');
    lines.push(`${row.label.padEnd(width)}${cells}`);
  }
  lines.push('', `Whole runs, millions of instructions:`, `${''.padEnd(width)}${counts.map((c) => cell(c)).join('')}`);
  for (const row of result.rows.filter((r) => !r.skipped)) {
    lines.push(`${row.label.padEnd(width)}${result.counts.map((n) => cell((row.totals[n] / 1e6).toFixed(1))).join('')}`);
  }
  return lines.join('\n');
}

async function main() {
  const options = parseOptions();
  state.quiet = options.json;
  cleanupOnSignals();
  compileFloors();
  const dir = makeImageDir(options.tmpdir && path.resolve(options.tmpdir));
  const image = makeImage('instructions');
  const counts = [...new Set(options.pairs.flat())].sort((a, b) => a - b);
  const rows = [];
  // Another build may have no addon module of this shape: its row says so instead.
  const noAddon = addonMissing(loadLibrary(options.lib, { withAddon: true }));
  try {
    for (const c of CONTENDERS) {
      if (c.needsAddon && noAddon) {
        rows.push({ key: c.key, label: c.label, skipped: noAddon });
        continue;
      }
      const totals = {};
      for (const n of counts) {
        log(`${c.label}: ${n} cycles under callgrind`);
        totals[n] = await countInstructions(c.command(options.lib, image, n), path.join(dir, `callgrind.${c.key}.${n}`));
      }
      rows.push({ key: c.key, label: c.label, totals, per_cycle: options.pairs.map(([n1, n2]) => (totals[n2] - totals[n1]) / (n2 - n1)) });
    }
  } finally {
    const cleanup = finalCleanup();
    log(cleanupLine(cleanup));
    if (!cleanup.ok) process.exitCode = 1;
  }
  const result = { meta: { date: new Date().toISOString(), kernel: os.release(), node: process.version, lib: options.lib }, pairs: options.pairs, counts, rows };
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
