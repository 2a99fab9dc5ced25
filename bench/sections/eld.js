'use strict';
// The event loop's delay while async cycles run several at a time, against the same loop idle.

const { monitorEventLoopDelay } = require('node:perf_hooks');

const { checkAbort, log, state } = require('../harness/state');
const { libraries, cycleAsync } = require('../harness/library');
const { retryCounter, retryNote } = require('../harness/measure');
const { contender } = require('../harness/blocks');
const { makeImage, cleanupImages } = require('../harness/images');

async function measureDelay(image) {
  const { cycles, inFlight, warmup, idleMs } = state.config.eld;
  const lib = libraries.current.module;
  for (let i = 0; i < warmup; i++) await cycleAsync(lib, image, {});
  const c = retryCounter();
  c.measuring = true;
  const options = { onRetry: c.onRetry };
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  const timings = [];
  let started = 0;
  const lane = async () => {
    while (started < cycles && !state.aborted) {
      started++;
      const t0 = process.hrtime.bigint();
      await cycleAsync(lib, image, options);
      timings.push(Number(process.hrtime.bigint() - t0));
    }
  };
  const idle = monitorEventLoopDelay({ resolution: 1 });
  idle.enable();
  await new Promise((resolve) => setTimeout(resolve, idleMs));
  idle.disable();
  checkAbort();
  histogram.enable();
  const settled = await Promise.allSettled(Array.from({ length: inFlight }, lane));
  histogram.disable();
  checkAbort();
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) throw failed.reason;
  const p99 = histogram.percentile(99) / 1e6;
  const max = histogram.max / 1e6;
  return {
    timings_ns: timings,
    retries: c.retries,
    extra: {
      eld_p99_ms: p99,
      eld_max_ms: max,
      eld_mean_ms: histogram.mean / 1e6,
      eld_idle_p99_ms: idle.percentile(99) / 1e6,
      eld_idle_max_ms: idle.max / 1e6,
    },
    notes:
      `loop delay p99 ${p99.toFixed(2)} ms, max ${max.toFixed(2)} ms (idle ${idleMs} ms before: p99 ${(idle.percentile(99) / 1e6).toFixed(2)}, ` +
      `max ${(idle.max / 1e6).toFixed(2)}; delays include the 1 ms sampling interval); ${retryNote(c.retries, timings.length)}`,
  };
}

async function sectionEld() {
  const image = makeImage('eld');
  const { cycles, inFlight, warmup } = state.config.eld;
  const operation = `event loop delay: ${cycles} async cycles, ${inFlight} in flight (median/p95 = cycle latency)`;
  log(operation);
  try {
    await contender({ group: 'eld', operation, warmup, id: 'eld.loopdev-async', contender: 'loopdev async', needs: ['attach'] }, () => measureDelay(image));
  } finally {
    await cleanupImages([image]);
  }
}

module.exports = sectionEld;
