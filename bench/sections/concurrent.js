'use strict';
// N attaches then N detaches per round: the C floor one after another, loopdev's async API all
// at once and its sync API one after another.

const { log, state } = require('../harness/state');
const { libraries } = require('../harness/library');
const { measureSync, measureAsync, retryCounter, retryNote } = require('../harness/measure');
const { interleaved } = require('../harness/blocks');
const { runC } = require('../harness/floors');
const { makeImage, cleanupImages } = require('../harness/images');

function roundSpecs(n, image) {
  const { rounds, warmup } = state.config.concurrent;
  const lib = libraries.current.module;
  const group = `concurrent.${n}`;
  const base = { group, operation: `${n} attaches then ${n} detaches (time per round)`, iterations: rounds, warmup };
  const perDevice = (row, acc) => `${(row.median_us / n).toFixed(1)} µs/device` + (acc.retries !== undefined ? `, ${retryNote(acc.retries, acc.attaches)}` : '');
  return [
    {
      ...base,
      id: `${group}.c`,
      contender: `C floor, ${n} sequential`,
      reference: true,
      notes: perDevice,
      run: async (r, w) => {
        const out = await runC('cycle', [image, '--batch', n, '--iterations', r, '--warmup', w]);
        return { timings_ns: out.timings_ns, retries: out.retries, attaches: out.timings_ns.length * n };
      },
    },
    {
      ...base,
      id: `${group}.loopdev-async`,
      contender: `loopdev async, ${n} concurrent`,
      needs: ['attach'],
      notes: perDevice,
      run: async (r, w) => {
        const c = retryCounter();
        const timings = await measureAsync(r, w, async () => {
          const attached = await Promise.allSettled(Array.from({ length: n }, () => lib.attach(image, { onRetry: c.onRetry })));
          const devices = attached.filter((s) => s.status === 'fulfilled').map((s) => s.value);
          const detached = await Promise.allSettled(devices.map((d) => d.detach()));
          const failed = [...attached, ...detached].find((s) => s.status === 'rejected');
          if (failed) throw failed.reason;
        }, c);
        return { timings_ns: timings, retries: c.retries, attaches: timings.length * n };
      },
    },
    {
      ...base,
      id: `${group}.loopdev-sync`,
      contender: `loopdev sync, ${n} sequential`,
      needs: ['attachSync'],
      notes: perDevice,
      run: async (r, w) => {
        const c = retryCounter();
        const timings = await measureSync(r, w, () => {
          const devices = [];
          try {
            for (let i = 0; i < n; i++) devices.push(lib.attachSync(image, { onRetry: c.onRetry }));
          } finally {
            for (const d of devices) d.detachSync();
          }
        }, c);
        return { timings_ns: timings, retries: c.retries, attaches: timings.length * n };
      },
    },
  ];
}

async function sectionConcurrent() {
  const image = makeImage('concurrent');
  for (const n of state.config.concurrent.counts) {
    log(`${n} attaches then ${n} detaches (time per round)`);
    try {
      await interleaved(roundSpecs(n, image), state.config.blocks);
    } finally {
      await cleanupImages([image]);
    }
  }
}

module.exports = sectionConcurrent;
