'use strict';
// RSS and open fds over many sync cycles, in a fresh process so that nothing else the harness
// did shows in them.

const { checkAbort, log, state } = require('../harness/state');
const { libraries } = require('../harness/library');
const { contender } = require('../harness/blocks');
const { MIB, makeImage, cleanupImages } = require('../harness/images');
const { runWorker } = require('../harness/workers');

const MEMORY_VARIANTS = [
  { id: 'memory.loopdev-sync', group: 'memory', label: 'default V8 flags', execArgv: [] },
  // V8 grows its young generation under a steady allocation rate, which raises RSS with no leak.
  { id: 'memory.loopdev-sync-pinned', group: 'memory-pinned', label: 'young generation pinned: --max-semi-space-size=1', execArgv: ['--max-semi-space-size=1'] },
];

const mb = (bytes) => `${bytes >= 0 ? '+' : ''}${(bytes / MIB).toFixed(1)}`;

async function measureMemory(variant, image) {
  const { cycles, warmup } = state.config.memory;
  const r = await runWorker('mem-worker.js', [libraries.current.path, image, cycles, warmup], ['--expose-gc', ...variant.execArgv]);
  checkAbort();
  const { before, middle, after } = r;
  const rssGrowth = after.rss - before.rss;
  // RSS minus V8's reserved heap: what native code (the addon, libuv, malloc) holds
  const nativeGrowth = after.rss - after.heapTotal - (before.rss - before.heapTotal);
  return {
    timings_ns: r.timings,
    retries: r.retries,
    extra: {
      cycles: r.cycles,
      v8_flags: variant.execArgv,
      rss_before: before.rss,
      rss_middle: middle.rss,
      rss_after: after.rss,
      rss_growth_bytes: rssGrowth,
      rss_growth_second_half_bytes: after.rss - middle.rss,
      heap_total_growth_bytes: after.heapTotal - before.heapTotal,
      heap_used_growth_bytes: after.heapUsed - before.heapUsed,
      rss_minus_heap_total_growth_bytes: nativeGrowth,
      fds_before: before.fds,
      fds_middle: middle.fds,
      fds_after: after.fds,
      fd_growth: after.fds - before.fds,
      gc_exposed: r.gcExposed,
    },
    notes:
      `RSS ${(before.rss / MIB).toFixed(1)} -> ${(middle.rss / MIB).toFixed(1)} -> ${(after.rss / MIB).toFixed(1)} MB ` +
      `(${mb(rssGrowth)}; V8 heap used ${mb(after.heapUsed - before.heapUsed)}, reserved ${mb(after.heapTotal - before.heapTotal)}, ` +
      `RSS minus V8 reserved ${mb(nativeGrowth)}), fds ${before.fds} -> ${middle.fds} -> ${after.fds}`,
  };
}

async function sectionMemory() {
  const image = makeImage('memory');
  const { cycles, warmup } = state.config.memory;
  try {
    for (const variant of MEMORY_VARIANTS) {
      const operation = `memory: ${cycles} sync cycles in a fresh process, ${variant.label} (median/p95 = cycle time)`;
      log(operation);
      const spec = { group: variant.group, operation, warmup, id: variant.id, contender: 'loopdev sync', needs: ['attachSync'] };
      await contender(spec, () => measureMemory(variant, image));
    }
  } finally {
    await cleanupImages([image]);
  }
}

module.exports = sectionMemory;
