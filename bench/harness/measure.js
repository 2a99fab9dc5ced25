'use strict';
// Timing loops and the summary of their timings.

const { checkAbort, yieldToLoop } = require('./state');

function percentile(sorted, p) {
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** Median, p95, min, max and mean of per-iteration times in ns, in µs. */
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

function retryNote(retries, attaches) {
  return `${(attaches ? retries / attaches : 0).toFixed(2)} retries/attach`;
}

module.exports = { summarize, measureSync, measureAsync, retryCounter, retryNote };
