'use strict';
// Running contenders: once (duration-based or one-off measurements), or a group of them in
// interleaved blocks whose order is shuffled per block.

const { checkAbort } = require('./state');
const { newRow, failRow, finishRow } = require('./rows');

/**
 * Runs one contender once and records its row. spec: the fields of newRow(), plus warmup.
 * fn returns { timings_ns, retries?, attaches?, notes?, extra?, throughput_per_s? }.
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

/**
 * Runs the contenders of one group in alternating blocks (A B C, C A B, ...), so that a change
 * in machine load hits them all alike instead of skewing the ratios. Each spec: the fields of
 * newRow(), plus iterations and warmup (totals, split over the blocks; every block warms up
 * before it measures), run(iterations, warmup) -> { timings_ns, retries?, attaches?, extra?,
 * sums?, series? } (sums: counts added up over the blocks; series: { name_ns: [ns] }, pooled
 * into row.name_median_us), and notes?(row, acc).
 */
async function interleaved(specs, blocks) {
  const entries = specs.map((spec) => ({ spec, row: newRow(spec), acc: { timings_ns: [], attaches: 0 } }));
  const random = seededRandom(0x10007);
  for (let b = 0; b < blocks; b++) {
    // With a fixed order, the row after the threaded C floor paid for what it left in the caches.
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

module.exports = { contender, interleaved };
