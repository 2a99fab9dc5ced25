'use strict';
// What a user's script sees: a fresh node process looping detachSync(attachSync(image)) N
// times with no warm-up, against the C floor run the same way (its own process, the same N),
// one after the other rather than in interleaved blocks; and the same script timed only after
// a warm-up, which the interleaved cycle rows have.

const path = require('node:path');

const { log, spawnTracked, state } = require('../harness/state');
const { libraries } = require('../harness/library');
const { summarize } = require('../harness/measure');
const { contender } = require('../harness/blocks');
const { runC } = require('../harness/floors');
const { makeImage, cleanupImages } = require('../harness/images');

/** Medians of the first, second, third and last quarter of the cycles, in µs: warm-up shows in the first. */
function quarterMedians(timings) {
  const quarter = Math.floor(timings.length / 4);
  return [0, 1, 2, 3].map((q) => summarize(timings.slice(q * quarter, q === 3 ? timings.length : (q + 1) * quarter)).median_us);
}

/** The row's figures from the timings of each run (each a fresh process). */
function pooled(runTimings) {
  const runs = runTimings.length;
  const runMedians = runTimings.map((t) => summarize(t).median_us);
  const quarters = runTimings.map(quarterMedians);
  const quarter_medians_us = [0, 1, 2, 3].map((q) => summarize(quarters.map((run) => run[q] * 1e3)).median_us);
  const us = (values) => values.map((v) => v.toFixed(1)).join(', ');
  return {
    timings_ns: runTimings.flat(),
    extra: { runs, run_medians_us: runMedians, quarter_medians_us },
    notes: `${runs} fresh process${runs === 1 ? '' : 'es'} of ${runTimings[0].length} cycles; medians by run ${us(runMedians)} µs; by quarter of a run ${us(quarter_medians_us)} µs`,
  };
}

async function userScript(image, cycles, warmup) {
  const script = path.join(__dirname, '..', 'user-script.js');
  const { stdout } = await spawnTracked(process.execPath, [script, libraries.current.path, image, String(cycles), String(warmup)]);
  return JSON.parse(stdout).timings_ns;
}

async function sectionScript() {
  const image = makeImage('script');
  const { cycles, runs, warmup } = state.config.script;
  const operation = `a user's script: ${cycles} sync attach+detach cycles in a fresh process each run, not interleaved`;
  log(operation);
  const base = { group: 'script', operation, warmup: 0 };
  const contenders = [
    {
      spec: { ...base, id: 'script.c', contender: 'C floor (raw ioctls), fresh process', reference: true },
      once: async () => (await runC('cycle', [image, '--iterations', cycles, '--warmup', 0])).timings_ns,
    },
    {
      spec: { ...base, id: 'script.loopdev-sync', contender: 'node: detachSync(attachSync(image)) loop', needs: ['attachSync', 'detachSync'] },
      skip: !libraries.current.module,
      once: () => userScript(image, cycles, 0),
    },
    {
      spec: { ...base, warmup, id: 'script.loopdev-sync-warm', contender: `node: the same, timed after ${warmup} cycles`, needs: ['attachSync', 'detachSync'] },
      skip: !libraries.current.module,
      once: () => userScript(image, cycles, warmup),
    },
  ];
  try {
    // Run by run, C then node, so that a change in the machine's load reaches all three.
    for (let r = 0; r < runs; r++) {
      for (const c of contenders) {
        if (c.skip || c.error) continue;
        try {
          c.runs = [...(c.runs || []), await c.once()];
        } catch (err) {
          c.error = err;
        }
      }
    }
    for (const c of contenders) {
      await contender(c.spec, async () => {
        if (c.error) throw c.error;
        return pooled(c.runs);
      });
    }
  } finally {
    await cleanupImages([image]);
  }
}

module.exports = sectionScript;
