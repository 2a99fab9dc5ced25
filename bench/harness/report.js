'use strict';
// The machine's description, the table on stdout and the JSON in bench/out/latest.json.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { cleanupLine, countLoopDevices } = require('./images');

const OUT_DIR = path.resolve(__dirname, '..', 'out');

function machineInfo({ mode, sections, config, library }) {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = (/^model name\s*:\s*(.*)$/m.exec(cpuinfo) || [])[1] || os.cpus()[0]?.model || 'unknown';
  const cores = (cpuinfo.match(/^processor\s*:/gm) || []).length || os.cpus().length;
  return {
    date: new Date().toISOString(),
    kernel: os.release(),
    cpu: model.trim(),
    cores,
    node: process.version,
    mode,
    sections,
    loopdev: library.module ? { loaded: true, path: library.path } : { loaded: false, path: library.path, error: library.error },
    config,
    loop_devices_before: countLoopDevices(),
  };
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

const HEADER = [
  'Each median / mean / p95 is per operation in microseconds over "iters" measured iterations (the mean: what a loop of them costs each);',
  '"+w" warm-up iterations ran first and are not counted.',
  'ratio = median / the reference (ref) median of the group; in the contention group, aggregate cycles/s / the reference\'s (higher is better).',
  'Cycle groups: "C floor, loopdev\'s steps" makes exactly the syscalls loopdev makes; "each step on a worker thread" runs them off the main thread',
  '(condvar-woken worker, eventfd + epoll back, twice per cycle), as an async API must; "loopdev\'s addon called directly" is Node calling the',
  'addon\'s two native steps with no TypeScript layer (", async": through their Promise forms); "2 Node thread-pool round trips" is what an',
  'async cycle pays to keep the event loop free with no loop work in the trips (a trip around real work costs more on a VM whose idle vCPUs',
  'halt). "Nx vs ..." in the notes = median / that row\'s median.',
];

function renderTable(result, libName) {
  const m = result.meta;
  const lines = [];
  lines.push(`loopdev benchmark - ${m.date} - ${m.mode} mode`);
  if (result.interrupted) lines.push(`INTERRUPTED (${result.interrupted}): partial results`);
  const lib = libName(m.loopdev.path);
  lines.push(`kernel ${m.kernel} | CPU ${m.cpu} | ${m.cores} cores | Node ${m.node} | loopdev: ${m.loopdev.loaded ? `${lib} loaded` : `${lib} NOT loaded (${m.loopdev.error})`}`);
  lines.push(...HEADER.slice(0, 2));
  lines.push(
    `Contenders of a group alternate in ${m.config.blocks} blocks (${m.config.cycle.blocks} in the attach+detach groups; each block warms up, then measures; the order is shuffled per block), except contention, event loop and memory.`,
  );
  lines.push(...HEADER.slice(2));
  lines.push('');
  const widths = [50, 14, 10, 10, 10, 8];
  const header = ['contender', 'iters (+w)', 'median µs', 'mean µs', 'p95 µs', 'ratio'].map((title, i) => pad(title, widths[i], i > 0));
  let group = null;
  for (const row of result.rows) {
    if (row.group !== group) {
      group = row.group;
      lines.push('');
      lines.push(`== ${row.operation}`);
      lines.push(`  ${header.join(' ')}   target / notes`);
    }
    const iters = row.iterations ? `${row.iterations} (+${row.warmup})` : '-';
    let status;
    if (row.skipped) status = `SKIPPED: ${row.skipped}`;
    else if (row.error) status = `ERROR: ${row.error}`;
    else if (row.interrupted) status = 'INTERRUPTED';
    else status = [row.reference ? 'ref' : null, ...row.targets, row.notes].filter(Boolean).join('; ');
    const ratio = row.ratio === null ? '-' : `${row.ratio.toFixed(2)}x`;
    const cells = [row.contender, iters, formatNumber(row.median_us), formatNumber(row.mean_us), formatNumber(row.p95_us), ratio];
    lines.push(`  ${cells.map((cell, i) => pad(cell, widths[i], i > 0)).join(' ')}  ${status}`);
  }
  lines.push('');
  lines.push('Targets (informational; a miss does not fail the bench):');
  if (!result.targets.length) lines.push('  (none evaluated: loopdev not loaded or its rows did not run)');
  for (const t of result.targets) {
    lines.push(`  ${pad(t.met ? 'MET' : 'MISSED', 7)} ${t.description}: ${t.shown}`);
  }
  if (result.vs) {
    lines.push('');
    const vs = result.vs;
    lines.push(`Against --vs ${libName(vs.path)}${vs.loaded ? '' : ` (NOT loaded: ${vs.error})`}, interleaved in the same blocks (new / old):`);
    for (const pair of vs.rows) {
      lines.push(`  ${pad(pair.row, 28)} median ${pair.median_ratio.toFixed(3)}x, mean ${pair.mean_ratio.toFixed(3)}x`);
    }
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

/** Writes bench/out/latest.json, and prints the JSON (--json) or the table. */
function writeResult(result, { json, libName }) {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  fs.writeFileSync(path.join(OUT_DIR, 'latest.json'), `${JSON.stringify(result, null, 2)}\n`);
  if (json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else process.stdout.write(`${renderTable(result, libName)}\n`);
}

module.exports = { machineInfo, writeResult };
