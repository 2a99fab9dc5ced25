'use strict';
// The result rows: made when a contender starts, filled from its timings, then compared.

const { Aborted, log, state } = require('./state');
const { libraries, missingFrom } = require('./library');
const { summarize, retryNote } = require('./measure');

const rows = [];
/**
 * row -> { compareTo: [{ id, label }], lockCostOf?: id }: rows of its group this row is also
 * compared with, besides the reference (a second ratio), and the row that differs from it only
 * by the flock on /dev/loop-control (whose median minus this one's is the lock's cost).
 */
const comparisons = new Map();
/** --vs rows -> the id of the current library's row they are the old form of. */
const oldForms = new Map();

/**
 * spec: id, group, operation, contender, reference?, kind? ('time' | 'throughput'), needs?
 * (library functions; the row is skipped without them), library? (default: the current one),
 * unavailable? (a reason to skip the row), compareTo?, lockCostOf?, oldFormOf? (the row this
 * one measures with the --vs library).
 */
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
    mean_us: null,
    p95_us: null,
    ratio: null,
    notes: '',
    targets: [],
  };
  rows.push(row);
  if (spec.compareTo || spec.lockCostOf) comparisons.set(row, { compareTo: spec.compareTo || [], lockCostOf: spec.lockCostOf });
  if (spec.oldFormOf) oldForms.set(row, spec.oldFormOf);
  const missing = spec.unavailable || (spec.needs ? missingFrom(spec.library || libraries.current, spec.needs) : null);
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

/** acc: { timings_ns, retries?, attaches?, extra?, series?, throughput_per_s? }; notes(row, acc) -> string */
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
  log(`  ${row.contender}: median ${row.median_us.toFixed(1)} µs, mean ${row.mean_us.toFixed(1)} µs, p95 ${row.p95_us.toFixed(1)} µs (${row.iterations} iterations) ${row.notes}`);
}

const measured = (id) => rows.find((r) => r.id === id && r.median_us !== null);

/** Each row's ratio to its group's reference; then the second ratios and lock costs, first in the notes. */
function computeRatios() {
  for (const row of rows) {
    if (row.median_us === null) continue;
    const ref = rows.find((r) => r.group === row.group && r.reference && r.median_us !== null);
    if (!ref) continue;
    row.ratio = row.kind === 'throughput' ? row.throughput_per_s / ref.throughput_per_s : row.median_us / ref.median_us;
  }
  for (const [row, { compareTo, lockCostOf }] of comparisons) {
    if (row.median_us === null) continue;
    const extra = [];
    for (const { id, label } of compareTo) {
      const other = measured(id);
      if (!other) continue;
      const ratio = row.median_us / other.median_us;
      row.ratios_vs = { ...row.ratios_vs, [id]: ratio };
      extra.push(`${ratio.toFixed(2)}x vs ${label}`);
    }
    const locked = lockCostOf && measured(lockCostOf);
    if (locked) {
      row.control_lock_cost_us = locked.median_us - row.median_us;
      const sign = row.control_lock_cost_us >= 0 ? '+' : '';
      extra.push(`control lock by difference: ${sign}${row.control_lock_cost_us.toFixed(1)} µs ('${locked.contender}' median - this)`);
    }
    if (extra.length) row.notes = [...extra, row.notes].filter(Boolean).join('; ');
  }
}

/** Each current row against its --vs form: median and mean, new / old. */
function newOverOld() {
  const pairs = [];
  for (const [old, id] of oldForms) {
    const current = measured(id);
    if (!current || old.median_us === null) continue;
    pairs.push({ row: id, old: old.id, operation: current.operation, contender: current.contender, median_ratio: current.median_us / old.median_us, mean_ratio: current.mean_us / old.mean_us });
  }
  return pairs;
}

module.exports = { rows, newRow, failRow, finishRow, measured, computeRatios, newOverOld };
