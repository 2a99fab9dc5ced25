'use strict';
// Several processes cycling on one image at once: aggregate cycles/s, retries and failures,
// against one C process alone.

const { checkAbort, log, state } = require('../harness/state');
const { libraries } = require('../harness/library');
const { retryNote } = require('../harness/measure');
const { contender } = require('../harness/blocks');
const { runC } = require('../harness/floors');
const { makeImage, cleanupImages } = require('../harness/images');
const { forkWorker, stopWorkers } = require('../harness/workers');

function contentionResult(r) {
  const attaches = r.cycles + r.failures;
  const throughput = r.cycles / (r.elapsed_ns / 1e9);
  return {
    timings_ns: r.timings_ns,
    retries: r.retries,
    attaches,
    throughput_per_s: throughput,
    extra: {
      cycles: r.cycles,
      failures: r.failures,
      procs: r.procs,
      duration_ms: r.duration_ms,
      last_error: r.last_error || null,
      retry_errnos: r.retry_errnos || null,
    },
    notes:
      `${Math.round(throughput)} cycles/s, ${retryNote(r.retries, attaches)}` +
      (r.retry_errnos && r.retries ? ` (${Object.entries(r.retry_errnos).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(', ')})` : '') +
      `, ${r.failures} failures${r.last_error ? ` (${r.last_error})` : ''}`,
  };
}

/** `procs` node processes cycling loopdev sync on `image` for `durationMs`, started together. */
async function runContendWorkers(procs, image, durationMs) {
  const channels = [];
  try {
    for (let i = 0; i < procs; i++) channels.push(forkWorker('contend-worker.js', [libraries.current.path, image, durationMs]));
    await Promise.all(channels.map((c) => c.ready));
    checkAbort();
    const startAt = Date.now() + 100; // after every worker has loaded the library
    for (const { worker } of channels) worker.send({ type: 'go', startAt });
    const settled = await Promise.allSettled(channels.map((c) => c.done));
    checkAbort();
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    const results = settled.map((s) => s.value);
    const sum = (k) => results.reduce((a, r) => a + r[k], 0);
    return {
      procs,
      duration_ms: durationMs,
      cycles: sum('cycles'),
      retries: sum('retries'),
      failures: sum('failures'),
      elapsed_ns: Math.max(...results.map((r) => r.elapsedNs)),
      timings_ns: results.flatMap((r) => r.timings),
      last_error: results.map((r) => r.lastError).find(Boolean),
    };
  } finally {
    await stopWorkers(channels);
  }
}

async function sectionContention() {
  const image = makeImage('contention');
  const { procs, durationMs } = state.config.contention;
  const group = 'contention';
  const operation = `attach+detach cycles for ${durationMs} ms (ratio = aggregate cycles/s vs reference)`;
  log(operation);
  const base = { group, operation, kind: 'throughput', warmup: 0 };
  const runFloor = async (k) => {
    const r = await runC('cycle', [image, '--procs', k, '--duration-ms', durationMs]);
    const lastErrno = r.per_proc.map((p) => p.last_errno).find(Boolean);
    return contentionResult({ ...r, last_error: lastErrno ? `errno ${lastErrno}` : null });
  };
  try {
    await contender({ ...base, id: `${group}.c-1proc`, contender: 'C floor, 1 process', reference: true }, () => runFloor(1));
    await contender({ ...base, id: `${group}.c-${procs}proc`, contender: `C floor, ${procs} processes` }, () => runFloor(procs));
    await contender({ ...base, id: `${group}.loopdev-sync-${procs}proc`, contender: `loopdev sync, ${procs} node processes`, needs: ['attachSync'] }, async () =>
      contentionResult(await runContendWorkers(procs, image, durationMs)),
    );
  } finally {
    await cleanupImages([image]);
  }
}

module.exports = sectionContention;
